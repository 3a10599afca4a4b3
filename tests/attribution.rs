//! Attribution end to end through the `permdrift` binary: the corpus in
//! tests/fixtures/attribution (every case's expected attribution, and the
//! corpus's precision and recall), the incident replay, and bad input.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> PathBuf {
    root().join("tests/fixtures/attribution")
}

fn permdrift<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run permdrift")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The display name of a change's object, as case.yaml keys it.
fn object_key(c: &Value) -> String {
    let o = &c["object"];
    let kind = o["kind"].as_str().unwrap();
    match (o["namespace"].as_str(), o["arn"].as_str()) {
        (Some(ns), _) => format!("{kind}/{ns}/{}", o["name"].as_str().unwrap()),
        (None, Some(arn)) => format!("{kind} {arn}"),
        (None, None) => format!("{kind}/{}", o["name"].as_str().unwrap()),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Runs one case: OLD is the base, NEW the base with the case's `new/`
/// files laid over it. Returns the report's changes.
fn run_case(dir: &Path, case: &Value) -> Vec<Value> {
    let new = tempfile::tempdir().unwrap();
    copy_dir(&corpus().join("base"), new.path());
    copy_dir(&dir.join("new"), new.path());
    let mut args: Vec<String> = vec![
        "diff".into(),
        corpus().join("base").display().to_string(),
        new.path().display().to_string(),
        "--format".into(),
        "json".into(),
        "--fail-on".into(),
        "never".into(),
        "-q".into(),
        "--agents".into(),
        corpus().join("agents.yaml").display().to_string(),
    ];
    // A case without suggestions (the agent acted itself) has no directory:
    // git keeps no empty ones.
    let suggestions = dir.join("suggestions");
    if suggestions.is_dir() {
        args.push("--suggestions".into());
        args.push(suggestions.display().to_string());
    }
    let extra = case["args"].as_array().cloned().unwrap_or_default();
    for (i, a) in extra.iter().enumerate() {
        let a = a.as_str().unwrap();
        // Flags' values are paths relative to the case.
        args.push(if i % 2 == 1 {
            dir.join(a).display().to_string()
        } else {
            a.to_owned()
        });
    }
    let o = permdrift(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}: {}",
        dir.display(),
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    report["changes"].as_array().unwrap().clone()
}

/// What differs between the expected and the actual attribution, if anything.
fn mismatch(expected: &Value, actual: &Value) -> Option<String> {
    if expected.is_null() {
        return (!actual.is_null()).then(|| format!("expected null, got {actual}"));
    }
    if actual.is_null() {
        return Some(format!("expected {expected}, got null"));
    }
    let mut wrong = Vec::new();
    for (field, want) in expected.as_object().unwrap() {
        let got = match field.as_str() {
            "beyond" => Value::from(actual["beyond"].as_array().unwrap().len()),
            "actor" => {
                let a = &actual["actor"];
                a.get("username")
                    .or_else(|| a.get("arn"))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
            f => actual[f].clone(),
        };
        if &got != want {
            wrong.push(format!("{field}: expected {want}, got {got}"));
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[test]
fn corpus_attributions_match_and_precision_and_recall_are_reported() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "the corpus has {} cases", dirs.len());
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    let mut changes_seen = 0;
    for dir in &dirs {
        let case: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("case.yaml")).unwrap()).unwrap();
        let expect: BTreeMap<String, Value> =
            serde_json::from_value(case["expect"].clone()).unwrap();
        let changes = run_case(dir, &case);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut keys: Vec<String> = Vec::new();
        for c in &changes {
            changes_seen += 1;
            let key = object_key(c);
            keys.push(key.clone());
            let Some(want) = expect.get(&key) else {
                failures.push(format!("{name}: unexpected change {key}"));
                continue;
            };
            let got = &c["attribution"];
            let want_s = want.get("suggestion").and_then(Value::as_str);
            let got_s = got.get("suggestion").and_then(Value::as_str);
            match (want_s, got_s) {
                (Some(w), Some(g)) if w == g => tp += 1,
                (_, Some(_)) => {
                    fp += 1;
                    if want_s.is_some() {
                        fn_ += 1;
                    }
                }
                (Some(_), None) => fn_ += 1,
                (None, None) => {}
            }
            if let Some(m) = mismatch(want, got) {
                failures.push(format!("{name}: {key}: {m}"));
            }
        }
        for key in expect.keys() {
            if !keys.contains(key) {
                failures.push(format!("{name}: expected change {key} not in the diff"));
            }
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    println!(
        "attribution corpus: {} cases, {changes_seen} changes; suggestion precision {precision:.3} ({tp}/{}), recall {recall:.3} ({tp}/{})",
        dirs.len(),
        tp + fp,
        tp + fn_
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn incident(part: &str) -> String {
    root()
        .join("examples/incident")
        .join(part)
        .display()
        .to_string()
}

#[test]
fn incident_replay_attributes_both_changes_to_the_forum_post() {
    let o = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--suggestions",
        &incident("suggestions"),
        "--agents",
        &incident("agents.yaml"),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let changes = report["changes"].as_array().unwrap();
    let mut platforms = Vec::new();
    for c in changes {
        let a = &c["attribution"];
        assert_eq!(a["kind"], "agent-suggested", "{}", object_key(c));
        assert_eq!(a["suggestion"], "eng-help-2026-11-19-1131");
        assert_eq!(a["agent"], "devhelper");
        assert!(a["beyond"].as_array().unwrap().is_empty(), "{a}");
        let evidence = a["evidence"][0]["location"].as_str().unwrap();
        assert!(evidence.contains("forum-answer.md:"), "{evidence}");
        platforms.push(c["platform"].as_str().unwrap().to_owned());
    }
    // The trust policy (AWS) and the ClusterRole with its binding (Kubernetes).
    platforms.sort();
    platforms.dedup();
    assert_eq!(platforms, ["aws", "kubernetes"]);
    let trust = changes.iter().find(|c| c["platform"] == "aws").unwrap();
    assert_eq!(trust["attribution"]["confidence"], "exact");
    assert!(
        trust["attribution"]["evidence"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("aws iam update-assume-role-policy")
    );

    let text = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--suggestions",
        &incident("suggestions"),
        "-q",
    ]);
    let out = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  by ")).collect();
    assert_eq!(lines.len(), changes.len(), "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("agent-suggested · suggestion eng-help-2026-11-19-1131"))
    );
    let md = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--suggestions",
        &incident("suggestions"),
        "--format",
        "markdown",
        "-q",
    ]);
    let md = String::from_utf8_lossy(&md.stdout);
    assert_eq!(
        md.matches("**Attribution:** agent-suggested").count(),
        changes.len()
    );
}

#[test]
fn without_attribution_flags_there_is_no_attribution_field() {
    let o = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--format",
        "json",
        "-q",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("attribution"), "{text}");
    // With a flag but nothing that explains a change, the field is null, or
    // (Kubernetes objects whose managedFields name a manager) `unknown` with
    // the manager as a weak hint.
    let empty = tempfile::tempdir().unwrap();
    let o = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--suggestions",
        &empty.path().display().to_string(),
        "--format",
        "json",
        "-q",
    ]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    for c in report["changes"].as_array().unwrap() {
        assert!(c.as_object().unwrap().contains_key("attribution"));
        let a = &c["attribution"];
        if c["platform"] == "aws" {
            assert!(a.is_null(), "{a}");
        } else {
            assert_eq!(a["kind"], "unknown", "{a}");
            assert_eq!(a["actor"]["weak"], true, "{a}");
            assert_eq!(a["actor"]["manager"], "kubectl-create", "{a}");
            assert!(a["suggestion"].is_null(), "{a}");
        }
    }
}

/// Runs a diff of the incident with extra flags, expecting exit 2, and
/// returns stderr.
fn refused(extra: &[&str]) -> String {
    let mut args = vec![
        "diff".to_owned(),
        incident("before"),
        incident("after"),
        "-q".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let o = permdrift(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "nothing is reported on bad input");
    err
}

#[test]
fn oversized_and_binary_suggestions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.md");
    std::fs::write(&big, "a".repeat(300 * 1024)).unwrap();
    let err = refused(&["--suggestions", &big.display().to_string()]);
    assert!(err.contains("big.md"), "{err}");
    assert!(err.contains("over the 262144-byte limit"), "{err}");

    let bin = dir.path().join("screenshot.md");
    std::fs::write(&bin, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap();
    let err = refused(&["--suggestions", &bin.display().to_string()]);
    assert!(err.contains("screenshot.md: binary content"), "{err}");

    let fm = dir.path().join("fm.md");
    std::fs::write(&fm, "---\nid: x\nat: yesterday\n---\nhi\n").unwrap();
    let err = refused(&["--suggestions", &fm.display().to_string()]);
    assert!(err.contains("fm.md: front matter line 3"), "{err}");
}

#[test]
fn a_malformed_audit_line_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let good = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"create","user":{"username":"priya"},"objectRef":{"resource":"clusterrolebindings","name":"engineering-debug","apiGroup":"rbac.authorization.k8s.io"}}"#;
    std::fs::write(&log, format!("{good}\n\n{good}\n{{\"kind\":\"Event\",\n")).unwrap();
    let err = refused(&["--audit-log", &log.display().to_string()]);
    assert!(
        err.contains("audit.log:4: not an audit.k8s.io/v1 Event"),
        "{err}"
    );

    std::fs::write(
        &log,
        r#"{"kind":"Policy","apiVersion":"audit.k8s.io/v1","verb":"get","user":{}}"#,
    )
    .unwrap();
    let err = refused(&["--audit-log", &log.display().to_string()]);
    assert!(err.contains("audit.log:1:"), "{err}");
}

#[test]
fn malformed_cloudtrail_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("trail.json");
    std::fs::write(&json, r#"{"records": []}"#).unwrap();
    let err = refused(&["--cloudtrail", &json.display().to_string()]);
    assert!(
        err.contains("trail.json: not a CloudTrail log file: no `Records` list"),
        "{err}"
    );

    let gz = dir.path().join("broken.json.gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00garbage").unwrap();
    let err = refused(&["--cloudtrail", &dir.path().display().to_string()]);
    assert!(
        err.contains("broken.json.gz: not a CloudTrail log file"),
        "{err}"
    );
}

#[test]
fn a_bad_agents_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        "agents:\n- name: bot\n  aws:\n    principalArn: [x]\n",
    )
    .unwrap();
    let err = refused(&["--agents", &agents.display().to_string()]);
    assert!(err.contains("agents.yaml"), "{err}");
    assert!(err.contains("agents[0].aws"), "{err}");
}

#[test]
fn unparsed_commands_are_reported_never_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("tf.md");
    std::fs::write(
        &s,
        "Try:\n\n```hcl\nresource \"aws_iam_role_policy_attachment\" \"x\" {}\n```\n\n```sh\nkubectl patch clusterrole edit --type json -p '[]'\n```\n",
    )
    .unwrap();
    let o = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--suggestions",
        &s.display().to_string(),
        "--format",
        "json",
    ]);
    let err = stderr(&o);
    assert!(err.contains("suggestion tf: not parsed:"), "{err}");
    assert!(err.contains("tf.md:4: Terraform block"), "{err}");
    assert!(
        err.contains("tf.md:8: JSON patches are not parsed"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    for c in report["changes"].as_array().unwrap() {
        let a = &c["attribution"];
        assert!(a.is_null() || a["suggestion"].is_null(), "{a}");
    }
}

/// Every RBAC object of the test server, as `kubectl get -o yaml` prints it.
fn cluster_state(server: &support::kube_server::KubeTestServer, path: &Path) {
    let out = server.kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts",
        "-A",
        "-o",
        "yaml",
    ]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn kubectl_as_a_person_and_as_the_agent_through_the_audit_log() {
    use support::kube_server::{KubeTestServer, Options};
    let server = KubeTestServer::start_with(Options::default().audit());
    server.add_token("priya-token", "priya@acme.io", &["engineering"], None);
    server.add_token(
        "devhelper-token",
        "system:serviceaccount:agents:devhelper",
        &["system:serviceaccounts"],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.yaml"), dir.path().join("new.yaml"));
    // The cluster before: `view`, which the agent will bind.
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "view",
        "--verb=get,list,watch",
        "--resource=pods,services",
    ]);
    cluster_state(&server, &old);

    let answer = dir.path().join("debug-access.md");
    std::fs::write(
        &answer,
        "---\nagent: devhelper\n---\nGive engineering read access to secrets:\n\n```sh\n\
         kubectl create clusterrole secret-reader --verb=get,list --resource=secrets\n\
         kubectl create clusterrolebinding engineering-secrets --clusterrole=secret-reader --group=engineering\n```\n",
    )
    .unwrap();
    // A person follows the answer with real kubectl, under another name.
    for args in [
        &[
            "create",
            "clusterrole",
            "secret-reader",
            "--verb=get,list",
            "--resource=secrets",
        ][..],
        &[
            "create",
            "clusterrolebinding",
            "eng-secrets",
            "--clusterrole=secret-reader",
            "--group=engineering",
        ][..],
    ] {
        let o = server.kubectl_as("priya-token", args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The agent's own service account makes a change nobody suggested.
    let o = server.kubectl_as(
        "devhelper-token",
        &[
            "create",
            "rolebinding",
            "helper-view",
            "-n",
            "default",
            "--clusterrole=view",
            "--group=interns",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cluster_state(&server, &new);

    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        "agents:\n- name: devhelper\n  kubernetes:\n    serviceAccounts: [agents/devhelper]\n",
    )
    .unwrap();
    let audit = server.audit_log.clone().unwrap();
    let o = permdrift(&[
        "diff".to_owned(),
        old.display().to_string(),
        new.display().to_string(),
        "--suggestions".into(),
        answer.display().to_string(),
        "--agents".into(),
        agents.display().to_string(),
        "--audit-log".into(),
        audit.display().to_string(),
        "--format".into(),
        "json".into(),
        "-q".into(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let by_key: BTreeMap<String, Value> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (object_key(c), c["attribution"].clone()))
        .collect();
    for key in [
        "ClusterRole/secret-reader",
        "ClusterRoleBinding/eng-secrets",
    ] {
        let a = &by_key[key];
        assert_eq!(a["kind"], "agent-suggested", "{key}: {a}");
        assert_eq!(a["suggestion"], "debug-access", "{key}: {a}");
        assert_eq!(a["agent"], "devhelper", "{key}: {a}");
        assert_eq!(a["actor"]["username"], "priya@acme.io", "{key}: {a}");
        assert_eq!(a["actor"]["via"], "audit-log", "{key}: {a}");
        assert!(
            a["actor"]["user_agent"]
                .as_str()
                .unwrap()
                .starts_with("kubectl/"),
            "{a}"
        );
    }
    let a = &by_key["RoleBinding/default/helper-view"];
    assert_eq!(a["kind"], "agent", "{a}");
    assert_eq!(a["agent"], "devhelper", "{a}");
    assert_eq!(
        a["actor"]["username"], "system:serviceaccount:agents:devhelper",
        "{a}"
    );
    assert!(a["suggestion"].is_null(), "{a}");
}
