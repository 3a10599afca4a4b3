//! End-to-end tests of the `permdrift` binary: exit codes, output formats,
//! bad input, atomic output files.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn incident(side: &str) -> String {
    root()
        .join("examples/incident")
        .join(side)
        .display()
        .to_string()
}

fn permdrift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run permdrift")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

/// Runs a command expected to fail with exit 2 and returns its stderr,
/// checking that it failed cleanly.
fn trouble(args: &[&str]) -> String {
    let o = permdrift(args);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "expected exit 2 for {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("permdrift: error:"), "{err}");
    err
}

#[test]
fn incident_diff_reports_widening_and_exits_1() {
    let o = permdrift(&[
        "diff",
        &incident("before"),
        &incident("after"),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["schema"], "permdrift.dev/diff/v1");
    assert_eq!(report["summary"]["max_severity"], "critical");
    let changes = report["changes"].as_array().unwrap();
    let trust = changes
        .iter()
        .find(|c| c["object"]["kind"] == "Role")
        .unwrap();
    assert_eq!(trust["platform"], "aws");
    assert_eq!(
        trust["object"]["arn"],
        "arn:aws:iam::111122223333:role/customer-data-analytics"
    );
    assert!(
        trust["risks"]
            .as_array()
            .unwrap()
            .contains(&Value::from("trust-public"))
    );
    assert_eq!(trust["witness"]["subject"], "*");
    assert_eq!(trust["witness"]["action"], "sts:AssumeRole");
    let binding = changes
        .iter()
        .find(|c| c["object"]["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["change"], "added");
    assert_eq!(binding["direction"], "widening");
    assert_eq!(binding["severity"], "high");
    assert_eq!(binding["witness"]["subject"], "Group:engineering");
    assert_eq!(binding["witness"]["resource"], "secrets");
    let gained = binding["gained"].as_array().unwrap();
    assert!(gained.iter().any(|g| g["action"] == "list"
        && g["resource"] == "secrets"
        && g["scope"] == "cluster"
        && g["api_group"] == ""));
    let subjects = report["subjects"].as_array().unwrap();
    assert!(subjects.iter().any(
        |s| s["subject"] == "Group:engineering" && !s["gained"].as_array().unwrap().is_empty()
    ));
}

#[test]
fn rendered_outputs_are_stable() {
    for (format, name) in [
        ("text", "incident_text"),
        ("markdown", "incident_markdown"),
        ("json", "incident_json"),
    ] {
        let o = permdrift(&[
            "diff",
            &incident("before"),
            &incident("after"),
            "--format",
            format,
            "-q",
        ]);
        assert_eq!(code(&o), 1);
        insta::assert_snapshot!(name, stdout(&o));
    }
}

#[test]
fn exit_codes_follow_fail_on() {
    let (b, a) = (incident("before"), incident("after"));
    assert_eq!(code(&permdrift(&["diff", &b, &b, "-q"])), 0);
    assert_eq!(
        code(&permdrift(&["diff", &b, &a, "-q", "--fail-on", "never"])),
        0
    );
    assert_eq!(
        code(&permdrift(&["diff", &b, &a, "-q", "--fail-on", "critical"])),
        1
    );
    // Narrowing only: the reverse diff is not a widening (the trust change is mixed, though).
    let o = permdrift(&[
        "diff",
        &a,
        &b,
        "-q",
        "--format",
        "json",
        "--fail-on",
        "high",
    ]);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let worst_widening = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["direction"] == "widening" || c["direction"] == "mixed")
        .count();
    assert_eq!(
        worst_widening, 1,
        "only the trust change still widens: {report}"
    );
    assert_eq!(code(&o), 0, "a medium mixed change is below --fail-on high");
}

#[test]
fn neutral_changes_count_only_for_fail_on_any() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.yaml");
    let after = dir.path().join("after.yaml");
    std::fs::write(&before, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- {apiGroups: [''], resources: [pods], verbs: [get]}\n").unwrap();
    std::fs::write(&after, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, labels: {team: a}}\nrules:\n- {apiGroups: [''], resources: [pods], verbs: [get]}\n").unwrap();
    let (b, a) = (before.display().to_string(), after.display().to_string());
    assert_eq!(code(&permdrift(&["diff", &b, &a, "-q"])), 0);
    assert_eq!(
        code(&permdrift(&["diff", &b, &a, "-q", "--fail-on", "any"])),
        1
    );
}

#[test]
fn snapshot_round_trip_is_byte_identical_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["yaml", "json"] {
        let first = dir.path().join(format!("first.{ext}"));
        let second = dir.path().join(format!("second.{ext}"));
        let o = permdrift(&[
            "snapshot",
            "--from",
            &incident("after"),
            "-o",
            first.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(stderr(&o).contains("wrote"), "{}", stderr(&o));
        let o = permdrift(&[
            "snapshot",
            "--from",
            first.to_str().unwrap(),
            "-o",
            second.to_str().unwrap(),
            "-q",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&first).unwrap(),
            std::fs::read(&second).unwrap()
        );
        // And a snapshot diffs against its source files as "no change".
        let o = permdrift(&[
            "diff",
            first.to_str().unwrap(),
            &incident("after"),
            "-q",
            "--fail-on",
            "any",
        ]);
        assert_eq!(code(&o), 0, "{}", stdout(&o));
    }
}

#[test]
fn stdin_is_an_input() {
    let cluster = std::fs::read(root().join("examples/incident/after/cluster.yaml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(["snapshot", "--from", "-", "--format", "json", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&cluster).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let snap: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(snap["kind"], "Snapshot");
    assert_eq!(snap["sources"][0]["objects"].as_array().unwrap().len(), 10);
}

#[test]
fn who_can_answers_from_a_snapshot() {
    let o = permdrift(&[
        "who-can",
        "list",
        "secrets",
        "-n",
        "customer-api",
        &incident("after"),
        "-q",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Group:engineering"), "{out}");
    let o = permdrift(&[
        "who-can",
        "list",
        "secrets",
        "-n",
        "customer-api",
        &incident("before"),
        "-q",
    ]);
    assert!(!stdout(&o).contains("Group:engineering"));
    let o = permdrift(&[
        "who-can",
        "sts:AssumeRole",
        "--resource",
        "arn:aws:iam::111122223333:role/customer-data-analytics",
        &incident("after"),
        "--format",
        "json",
        "-q",
    ]);
    let answers: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        answers
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["subject"] == "*" && a["condition"].is_string())
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

#[test]
fn bad_input_exits_2_naming_file_and_line_or_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = incident("before");

    let f = write(d, "broken.yaml", b"apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: Role\n  metadata: {name: [\n");
    let err = trouble(&["diff", &good, &f]);
    assert!(
        err.contains("broken.yaml:7:1: did not find expected node content"),
        "{err}"
    );

    let f = write(
        d,
        "broken.json",
        b"{\"apiVersion\": \"v1\",\n \"kind\": \"List\",\n \"items\": [}\n",
    );
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(err.contains("broken.json:3:12: expected value"), "{err}");

    let f = write(d, "types.yaml", b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- verbs: get\n");
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("types.yaml")
            && err.contains("ClusterRole/r")
            && err.contains("rules[0].verbs"),
        "{err}"
    );

    let f = write(d, "missing.yaml", b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects: []\n");
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("missing.yaml") && err.contains("roleRef"),
        "{err}"
    );

    let f = write(
        d,
        "noname.yaml",
        b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {}\n",
    );
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("noname.yaml") && err.contains("metadata.name"),
        "{err}"
    );

    let f = write(d, "iam.json", br#"{"RoleDetailList":[{"RoleName":"r","Arn":"arn:aws:iam::1:role/r","RolePolicyList":[{"PolicyName":"p","PolicyDocument":{"Statement":[{"Effect":"Perhaps","Action":"*"}]}}]}]}"#);
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("iam.json")
            && err.contains("RoleDetailList[0]")
            && err.contains("Statement[0].Effect"),
        "{err}"
    );

    let f = write(
        d,
        "binary.yaml",
        b"apiVersion: v1\nkind: List\nitems: []\n# \xff\xfe\n",
    );
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("binary.yaml:4:") && err.contains("UTF-8"),
        "{err}"
    );

    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let f = write(d, "deep.json", deep.as_bytes());
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("deep.json:1:") && err.contains("recursion limit"),
        "{err}"
    );
    let f = write(
        d,
        "deep.yaml",
        format!("items: {}\n", "[".repeat(200_000)).as_bytes(),
    );
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("deep.yaml:1:") && err.contains("nesting"),
        "{err}"
    );

    let f = write(d, "unknown.json", br#"{"hello": "world"}"#);
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("unknown.json") && err.contains("not a Kubernetes object"),
        "{err}"
    );

    let f = write(
        d,
        "future.yaml",
        b"apiVersion: permdrift.dev/v9\nkind: Snapshot\nsources: []\n",
    );
    let err = trouble(&["snapshot", "--from", &f]);
    assert!(
        err.contains("future.yaml") && err.contains("permdrift.dev/v9"),
        "{err}"
    );

    let err = trouble(&["diff", &good, &d.join("absent.yaml").display().to_string()]);
    assert!(err.contains("absent.yaml: no such file"), "{err}");

    let empty = d.join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    let err = trouble(&["diff", &good, &empty.display().to_string()]);
    assert!(err.contains("no .yaml, .yml or .json files"), "{err}");
}

#[test]
fn a_100_mb_file_fails_fast_and_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let item = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"y"},"data":{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}},"#;
    let mut text = String::with_capacity(101 * 1024 * 1024);
    text.push_str("{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n");
    let mut lines = 1;
    while text.len() < 100 * 1024 * 1024 {
        text.push_str(item);
        text.push('\n');
        lines += 1;
    }
    // Truncated at the very end, as after a failed download.
    text.push_str("{\"apiVersion\":");
    std::fs::write(&path, &text).unwrap();
    let p = path.display().to_string();
    let err = trouble(&["snapshot", "--from", &p]);
    assert!(err.contains(&format!("huge.json:{}:", lines + 1)), "{err}");
    let err = trouble(&["snapshot", "--from", &p, "--max-input-size", "1000000"]);
    assert!(
        err.contains("huge.json") && err.contains("over the 1000000-byte limit"),
        "{err}"
    );
}

#[test]
fn output_file_is_written_atomically_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.yaml");
    std::fs::write(&out, "previous content\n").unwrap();
    let bad = write(dir.path(), "bad.yaml", b"kind: Role\n");
    trouble(&["snapshot", "--from", &bad, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous content\n");
    let report = dir.path().join("report.json");
    trouble(&[
        "diff",
        &incident("before"),
        &bad,
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(!report.exists());
    // A directory in the way: the write fails cleanly and leaves no temp file behind.
    let blocked = dir.path().join("blocked.yaml");
    std::fs::create_dir(&blocked).unwrap();
    let err = trouble(&[
        "snapshot",
        "--from",
        &incident("before"),
        "-o",
        blocked.to_str().unwrap(),
    ]);
    assert!(err.contains("blocked.yaml"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // And success replaces the old content completely.
    let o = permdrift(&[
        "snapshot",
        "--from",
        &incident("before"),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code(&o), 0);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("apiVersion: permdrift.dev/v1alpha1\n")
    );
}

#[test]
fn incomplete_snapshots_never_turn_missing_objects_into_removals() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.json");
    let o = permdrift(&[
        "snapshot",
        "--from",
        &incident("after"),
        "-o",
        full.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code(&o), 0);
    // The same cluster read by someone forbidden to list rolebindings.
    let mut snap: Value = serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap();
    let sources = snap["sources"].as_array_mut().unwrap();
    let kube = sources
        .iter_mut()
        .find(|s| s["platform"] == "kubernetes")
        .unwrap();
    kube["complete"] = Value::Bool(false);
    kube["missing"] = serde_json::json!([{"resource": "rolebindings", "reason": "forbidden: User \"viewer\" cannot list resource \"rolebindings\""}]);
    let objects = kube["objects"].as_array_mut().unwrap();
    let before = objects.len();
    objects.retain(|o| o["kind"] != "RoleBinding");
    assert!(objects.len() < before);
    let partial = dir.path().join("partial.json");
    std::fs::write(&partial, serde_json::to_string(&snap).unwrap()).unwrap();
    let (f, p) = (full.to_str().unwrap(), partial.to_str().unwrap());

    let o = permdrift(&["diff", f, p, "--format", "json", "-q"]);
    assert_eq!(code(&o), 2, "incomplete input is trouble by default");
    assert!(stderr(&o).contains("incomplete"), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(report["changes"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["incomplete"][0]["objects_not_compared"], 2);
    assert!(
        report["incomplete"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("rolebindings")
    );

    let o = permdrift(&["diff", f, p, "-q", "--allow-incomplete"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    let o = permdrift(&[
        "diff",
        f,
        p,
        "--format",
        "json",
        "-q",
        "--missing-as-removed",
    ]);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let removed = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "removed")
        .count();
    assert_eq!(removed, 2);
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let o = permdrift(&["--help"]);
    let out = stdout(&o);
    for word in ["snapshot", "diff", "who-can", "Exit status"] {
        assert!(out.contains(word), "{out}");
    }
    let o = permdrift(&["diff", "--help"]);
    assert!(stdout(&o).contains("--fail-on"));
}

#[test]
fn baseline_accept_speaks_only_tls_and_says_how_to_trust_the_operator() {
    // Nothing listens there: each refusal must come before any connection.
    let err = trouble(&[
        "baseline",
        "accept",
        "--server",
        "http://127.0.0.1:9",
        "--source",
        "acct",
        "--token",
        "t",
        "--fingerprint",
        &format!("sha256:{}", "ab".repeat(32)),
    ]);
    assert!(err.contains("over TLS only"), "{err}");
    assert!(err.contains("--server https://"), "{err}");
    let err = trouble(&[
        "baseline",
        "accept",
        "--server",
        "https://127.0.0.1:9",
        "--token",
        "t",
    ]);
    assert!(
        err.contains("--ca-cert") && err.contains("--fingerprint"),
        "{err}"
    );
    let err = trouble(&[
        "baseline",
        "accept",
        "--server",
        "https://127.0.0.1:9",
        "--token",
        "t",
        "--fingerprint",
        "sha256:nothex",
    ]);
    assert!(err.contains("64 hex digits"), "{err}");
}
