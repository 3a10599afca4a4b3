//! Approvals end to end: `permdrift keygen`, `permdrift approve` (by object
//! and digest, and by content before it is applied) and `permdrift plan`
//! weighing the signed files against the approver keys of a config, on the
//! incident in examples/incident; and the approval rules on the digests of
//! real widenings (self, agent, critical, forged, expired, other digest).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use permdrift::approval::content::{self, ProposedWidening};
use permdrift::approval::{self, Approval, Rules, SignedApproval, Widening};
use permdrift::config::ApprovalConfig;
use permdrift::grants::catalog::Catalog;
use permdrift::index::k8s::K8sObject;
use permdrift::input::{InputOptions, load};
use permdrift::signature::SecretKey;
use permdrift::snapshot::{SourceData, SourceSnapshot};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        .env_remove("PERMDRIFT_TOKEN")
        .output()
        .expect("run permdrift")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const K8S: &str = "kubernetes";
const AWS: &str = "111122223333";
const ROLE: &str = "Role arn:aws:iam::111122223333:role/customer-data-analytics";

/// A key made by `permdrift keygen`, and the public key it printed.
fn keygen(dir: &Path, id: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{id}.key"));
    let o = permdrift(&["keygen", "-q", "-o", file.to_str().unwrap(), "--id", id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public = stdout(&o)
        .lines()
        .find_map(|l| l.trim().strip_prefix("publicKey: ").map(str::to_owned))
        .unwrap();
    (file, public)
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    keys: Vec<PathBuf>,
}

/// Keys for alice, bob and the ci-bot agent, and a config listing them.
fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let mut listed = String::new();
    for id in ["alice", "bob", "ci-bot"] {
        let (file, public) = keygen(dir.path(), id);
        listed.push_str(&format!("  - id: {id}\n    publicKey: {public}\n"));
        keys.push(file);
    }
    let config = dir.path().join("permdrift.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nsources:\n- name: {K8S}\n  \
             kubernetes: {{context: prod}}\n- name: '{AWS}'\n  aws: {{}}\napprovals:\n  agents: \
             [ci-*]\n  keys:\n{listed}{extra}"
        ),
    )
    .unwrap();
    Setup { dir, config, keys }
}

impl Setup {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn approve(&self, who: usize, args: &[&str], out: &str) -> Output {
        let ids = ["alice", "bob", "ci-bot"];
        let key = self.keys[who].display().to_string();
        let out = self.path(out);
        let mut all = vec![
            "approve", "--key", &key, "--key-id", ids[who], "--reason", "reviewed", "-o", &out,
        ];
        all.extend_from_slice(args);
        permdrift(&all)
    }

    fn plan(&self, source: &str, approvals: &[&str]) -> Output {
        let config = self.config.display().to_string();
        let (before, after) = (incident("before"), incident("after"));
        let files: Vec<String> = approvals.iter().map(|a| self.path(a)).collect();
        let mut args = vec![
            "plan",
            "--source",
            source,
            "--baseline",
            &before,
            "--current",
            &after,
            "--config",
            &config,
        ];
        for f in &files {
            args.extend(["--approvals", f.as_str()]);
        }
        permdrift(&args)
    }
}

/// The digest `permdrift plan --format json` gives an object.
fn planned_digest(source: &str, object: &str) -> String {
    let o = permdrift(&[
        "plan",
        "-q",
        "--source",
        source,
        "--baseline",
        &incident("before"),
        "--current",
        &incident("after"),
        "--format",
        "json",
    ]);
    let plan: Value = serde_json::from_str(&stdout(&o)).unwrap();
    plan.as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"] == object)
        .map(|p| p["digest"].as_str().unwrap().to_owned())
        .unwrap()
}

#[test]
fn the_plan_for_the_incident_is_stable() {
    for source in [K8S, AWS] {
        let o = permdrift(&[
            "plan",
            "-q",
            "--source",
            source,
            "--baseline",
            &incident("before"),
            "--current",
            &incident("after"),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        insta::assert_snapshot!(format!("incident_plan_{source}"), stdout(&o));
        let o = permdrift(&[
            "plan",
            "-q",
            "--source",
            source,
            "--baseline",
            &incident("before"),
            "--current",
            &incident("after"),
            "--format",
            "json",
        ]);
        let json: Value = serde_json::from_str(&stdout(&o)).unwrap();
        insta::assert_json_snapshot!(format!("incident_plan_{source}_json"), json);
    }
}

#[test]
fn a_manifest_pre_approved_before_it_is_applied_is_kept() {
    let s = setup("");
    // Review first: alice approves the content of the incident's cluster.yaml
    // against the state before it was applied.
    let manifest = format!("{}/cluster.yaml", incident("after"));
    let before = format!("{}/cluster.yaml", incident("before"));
    let o = s.approve(
        0,
        &[
            "--source",
            K8S,
            "--snapshot",
            &before,
            "--manifest",
            &manifest,
        ],
        "pre.json",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("pre.json")).unwrap()).unwrap();
    let objects: Vec<&str> = file
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approval"]["object"].as_str().unwrap())
        .collect();
    assert_eq!(
        objects,
        [
            "ClusterRole/engineering-debug",
            "ClusterRoleBinding/engineering-debug"
        ]
    );
    // The digests are those of the widening once applied.
    for a in file.as_array().unwrap() {
        let object = a["approval"]["object"].as_str().unwrap();
        assert_eq!(a["approval"]["digest"], planned_digest(K8S, object));
    }
    let o = s.plan(K8S, &["pre.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).matches(": approved").count(),
        2,
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_critical_widening_needs_two_people_and_an_agent_is_not_one() {
    let s = setup("");
    let digest = planned_digest(AWS, ROLE);
    let by_object = ["--source", AWS, "--object", ROLE, "--digest", &digest];
    for (who, file) in [(0, "alice.json"), (1, "bob.json"), (2, "bot.json")] {
        let o = s.approve(who, &by_object, file);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = s.plan(AWS, &["alice.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 of 2 approvals needed"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains(&format!("revert {ROLE}")));
    // The agent's approval is refused and does not make up the second.
    let o = s.plan(AWS, &["alice.json", "bot.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not counted (agent)"), "{}", stderr(&o));
    let o = s.plan(AWS, &["alice.json", "bob.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("keep   {ROLE}: approved")));
}

#[test]
fn forged_expired_and_wrong_digest_approvals_are_refused_by_name() {
    let s = setup("  clockSkew: 0s\n");
    let object = "ClusterRoleBinding/engineering-debug";
    let digest = planned_digest(K8S, object);
    let args = ["--source", K8S, "--object", object, "--digest", &digest];
    assert!(s.approve(0, &args, "good.json").status.success());
    // Forged: the reason edited after signing.
    let text = std::fs::read_to_string(s.path("good.json")).unwrap();
    std::fs::write(
        s.path("forged.json"),
        text.replace("\"reviewed\"", "\"reviewed and extended\""),
    )
    .unwrap();
    // Another digest: approving something else does not approve this.
    let other = "0".repeat(64);
    let wrong = ["--source", K8S, "--object", object, "--digest", &other];
    assert!(s.approve(0, &wrong, "wrong.json").status.success());
    let mut short = args.to_vec();
    short.extend(["--for", "1s"]);
    assert!(s.approve(1, &short, "short.json").status.success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for (file, label) in [
        ("forged.json", "forged"),
        ("wrong.json", "other-digest"),
        ("short.json", "expired"),
    ] {
        let o = s.plan(K8S, &[file]);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("not counted ({label})")),
            "{file}: {}",
            stderr(&o)
        );
        assert!(stdout(&o).contains(&format!("revert {object}")));
    }
    // The good one still holds.
    let o = s.plan(K8S, &["good.json"]);
    assert!(
        stdout(&o).contains(&format!("keep   {object}: approved")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_approval_input_is_named_and_nothing_is_written() {
    let s = setup("");
    std::fs::write(s.path("bad.json"), "{\"approval\": {\"source\": 1}}").unwrap();
    let o = s.plan(K8S, &["bad.json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.json") && err.contains("approval.source"),
        "{err}"
    );
    let o = s.approve(
        0,
        &[
            "--source",
            K8S,
            "--object",
            "ClusterRole/x",
            "--digest",
            "abc",
        ],
        "never.json",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--digest"), "{}", stderr(&o));
    assert!(!Path::new(&s.path("never.json")).exists());
    let o = s.approve(
        0,
        &[
            "--source",
            "nope",
            "--snapshot",
            &incident("before"),
            "--manifest",
            &incident("after"),
        ],
        "never.json",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no source \"nope\""), "{}", stderr(&o));
    assert!(!Path::new(&s.path("never.json")).exists());
}

// ---------------------------------------------------------------------------
// The rules on real digests (library level: the actor comes from audit
// events, which files do not carry).

fn incident_source(side: &str, name: &str) -> SourceSnapshot {
    let options = InputOptions {
        kube_source: K8S.into(),
        ..InputOptions::default()
    };
    let (snapshot, _) = load(&[PathBuf::from(incident(side))], options).unwrap();
    snapshot.sources.get(name).unwrap().clone()
}

fn k8s_widenings() -> Vec<ProposedWidening> {
    let before = incident_source("before", K8S);
    let after = incident_source("after", K8S);
    let SourceData::Kubernetes(model) = &after.data else {
        panic!()
    };
    let objects: Vec<K8sObject> = model.objects().map(|(_, o)| o.clone()).collect();
    let proposed = content::with_k8s_objects(&before, &objects).unwrap();
    content::widenings(&before, &proposed, Catalog::embedded()).unwrap()
}

fn rules(keys: &[(&str, &SecretKey)]) -> Rules {
    let config = ApprovalConfig {
        keys: keys
            .iter()
            .map(|(id, k)| permdrift::config::ApproverKey {
                id: (*id).into(),
                public_key: k.public().to_base64(),
                identity: Some(format!("{id}@example.com")),
            })
            .collect(),
        agents: vec!["system:serviceaccount:*".into()],
        ..ApprovalConfig::default()
    };
    Rules::from_config(&config).unwrap()
}

#[test]
fn the_author_of_a_change_cannot_approve_it_nor_can_an_agent() {
    let widenings = k8s_widenings();
    let w = &widenings[1];
    let alice = SecretKey::from_seed([1; 32]);
    let bot = SecretKey::from_seed([2; 32]);
    let rules = rules(&[("alice", &alice), ("system:serviceaccount:ci:bot", &bot)]);
    let now = jiff::Timestamp::now();
    let sign = |id: &str, key: &SecretKey| -> SignedApproval {
        Approval {
            source: K8S.into(),
            object: w.object.clone(),
            digest: w.digest.clone(),
            approver: id.into(),
            reason: "r".into(),
            issued: now,
            expires: now + jiff::SignedDuration::from_hours(1),
        }
        .sign(key)
    };
    let widening = |actor| Widening {
        source: K8S,
        object: &w.object,
        digest: &w.digest,
        severity: w.severity,
        actor,
    };
    let by_alice = sign("alice", &alice);
    let d = approval::decide(
        &rules,
        &widening(Some("bob@example.com")),
        std::slice::from_ref(&by_alice),
        now,
    );
    assert!(d.approved);
    let d = approval::decide(
        &rules,
        &widening(Some("alice@example.com")),
        &[by_alice],
        now,
    );
    assert!(!d.approved);
    assert_eq!(d.rejected[0].1.label(), "self-approval");
    let by_bot = sign("system:serviceaccount:ci:bot", &bot);
    let d = approval::decide(&rules, &widening(None), &[by_bot], now);
    assert_eq!(d.rejected[0].1.label(), "agent");
}

#[test]
fn a_wider_edit_has_another_digest_and_a_neutral_one_keeps_it() {
    let before = incident_source("before", K8S);
    let after = incident_source("after", K8S);
    let SourceData::Kubernetes(model) = &after.data else {
        panic!()
    };
    let binding = model
        .objects()
        .find(|(k, _)| k.to_string() == "ClusterRoleBinding/engineering-debug")
        .map(|(_, o)| o.value())
        .unwrap();
    let objects = |b: Value| -> Vec<K8sObject> {
        model
            .objects()
            .filter(|(k, _)| k.to_string() != "ClusterRoleBinding/engineering-debug")
            .map(|(_, o)| o.clone())
            .chain([K8sObject::from_raw(b).unwrap()])
            .collect()
    };
    let digest_of = |b: Value| {
        let proposed = content::with_k8s_objects(&before, &objects(b)).unwrap();
        content::widenings(&before, &proposed, Catalog::embedded())
            .unwrap()
            .into_iter()
            .find(|w| w.object == "ClusterRoleBinding/engineering-debug")
            .unwrap()
            .digest
    };
    let original = digest_of(binding.clone());
    let mut labelled = binding.clone();
    labelled["metadata"]["labels"] = serde_json::json!({"team": "eng"});
    assert_eq!(digest_of(labelled), original);
    let mut wider = binding;
    wider["subjects"].as_array_mut().unwrap().push(
        serde_json::json!({"kind":"User","name":"mallory","apiGroup":"rbac.authorization.k8s.io"}),
    );
    assert_ne!(digest_of(wider), original);
}

/// One HTTPS request received by a stand-in for the operator's API (its
/// approvals endpoint is not there yet): the request's head and body.
fn serve_once(pki: &support::api::TestPki) -> (u16, std::thread::JoinHandle<String>) {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&pki.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Head, then as many body bytes as content-length says.
        loop {
            let n = tls.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        let reply = "approved";
        write!(
            tls,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        tls.flush().unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        String::from_utf8_lossy(&got).to_string()
    });
    (port, handle)
}

#[test]
fn approve_with_server_posts_the_widening_with_the_bearer_token_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::api::TestPki::create(dir.path());
    let (port, request) = serve_once(&pki);
    let digest = "ab".repeat(32);
    let o = permdrift(&[
        "approve",
        "--server",
        &format!("https://127.0.0.1:{port}"),
        "--ca-cert",
        pki.ca.to_str().unwrap(),
        "--token",
        "s3cret-token",
        "--source",
        K8S,
        "--object",
        "ClusterRoleBinding/x",
        "--digest",
        &digest,
        "--for",
        "30m",
        "--reason",
        "INC-7",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("approved"), "{}", stderr(&o));
    let request = request.join().unwrap();
    assert!(
        request.starts_with("POST /api/v1/approvals HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.contains("authorization: Bearer s3cret-token"),
        "{request}"
    );
    let body: Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"source": K8S, "object": "ClusterRoleBinding/x", "digest": digest,
            "reason": "INC-7", "validForSeconds": 1800})
    );
    // Never in the clear.
    let o = permdrift(&[
        "approve",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--source",
        K8S,
        "--object",
        "ClusterRoleBinding/x",
        "--digest",
        &digest,
        "--reason",
        "r",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("over TLS only"), "{}", stderr(&o));
}

#[test]
fn an_iam_policy_document_is_pre_approved_on_its_target() {
    let s = setup("");
    let aws = format!("{}/aws.json", incident("before"));
    std::fs::write(
        s.path("admin.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    )
    .unwrap();
    let doc = s.path("admin.json");
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(s.path(file)).unwrap()).unwrap()
    };
    // As an inline policy on a group: the group widens, and so does each member.
    let group = "arn:aws:iam::111122223333:group/engineering";
    let o = s.approve(
        0,
        &[
            "--source",
            AWS,
            "--snapshot",
            &aws,
            "--policy-document",
            &doc,
            "--target",
            group,
        ],
        "group.json",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let approvals = read("group.json");
    let approvals: Vec<Value> = match approvals {
        Value::Array(list) => list,
        one => vec![one],
    };
    let objects: Vec<&str> = approvals
        .iter()
        .map(|a| a["approval"]["object"].as_str().unwrap())
        .collect();
    assert!(
        objects.contains(&format!("Group {group}").as_str()),
        "{objects:?}"
    );
    // As the new default version of a managed policy.
    let policy = "arn:aws:iam::111122223333:policy/CustomerDataRead";
    let o = s.approve(
        0,
        &[
            "--source",
            AWS,
            "--snapshot",
            &aws,
            "--policy-document",
            &doc,
            "--target",
            policy,
        ],
        "policy.json",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(s.path("policy.json")).unwrap();
    assert!(text.contains(&format!("\"Policy {policy}\"")), "{text}");
    // A target that is not there is named.
    let o = s.approve(
        0,
        &[
            "--source",
            AWS,
            "--snapshot",
            &aws,
            "--policy-document",
            &doc,
            "--target",
            "arn:aws:iam::111122223333:role/nope",
        ],
        "never.json",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("role/nope"), "{}", stderr(&o));
}
