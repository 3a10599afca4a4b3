//! Attribution in the operator, end to end: a real `permdrift run` process,
//! the in-process Kubernetes API test server with RBAC and its audit
//! webhook pointed at the operator's TLS API, real kubectl acting as
//! different users, and `permdrift suggest` posting an agent's answer.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::TestPki;
use support::kube_server::{KubeTestServer, Options};
use support::operator::{Operator, journal, scratch};

const WAIT: Duration = Duration::from_secs(30);

/// The forum answer an agent posted: prose, a caveat, an alternative, and
/// the command a person then ran.
const ANSWER: &str = "---
id: eng-help-2026-12-03-0912
agent: devhelper
url: https://forum.example/t/90211/3
---
The payments team cannot read the rotation secrets because nobody bound
`secret-reader` to them. Bind it cluster-wide:

```sh
kubectl create clusterrolebinding payments-read-secrets \\
  --clusterrole=secret-reader --group=payments-devs
```

A RoleBinding in the `payments` namespace would be narrower, but the
rotation job reads from several namespaces.
";

const POSTER: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: permdrift-attribution-writer}
rules:
- {apiGroups: [permdrift.dev], resources: [suggestions, audits], verbs: [create]}
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A test server whose audit webhook posts to `https://127.0.0.1:PORT`
/// with `audit-token`, trusting the test CA; RBAC for the posting users.
fn cluster(pki: &TestPki, api_port: u16) -> KubeTestServer {
    let server = KubeTestServer::start_with(Options::default().authorizer_rbac().args([
        "--audit-webhook".to_owned(),
        format!("https://127.0.0.1:{api_port}/api/v1/audit"),
        "--audit-webhook-token".to_owned(),
        "audit-token".to_owned(),
        "--audit-webhook-ca".to_owned(),
        pki.ca.display().to_string(),
    ]));
    let out = server.kubectl_stdin(&["apply", "-f", "-"], POSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for user in ["devhelper-poster", "kube-apiserver-audit"] {
        server.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            &format!("{user}-writes"),
            "--clusterrole=permdrift-attribution-writer",
            &format!("--user={user}"),
        ]);
    }
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    server.add_token("poster-token", "devhelper-poster", &[], None);
    server.add_token("audit-token", "kube-apiserver-audit", &[], None);
    server.add_token("nobody-token", "nobody", &[], None);
    server.add_token("priya-token", "priya", &["system:masters"], None);
    server.add_token(
        "agent-token",
        "system:serviceaccount:agents:devhelper",
        &["system:serviceaccounts", "system:masters"],
        None,
    );
    server
}

fn start_operator(
    dir: &Path,
    pki: &TestPki,
    server: &KubeTestServer,
    api_port: u16,
    extra: &str,
) -> Operator {
    let store = dir.join("store");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n\
         api:\n  listen: \"127.0.0.1:{api_port}\"\n  tls: {{certFile: \"{cert}\", keyFile: \"{key}\"}}\n\
         \x20 authentication: {{kubernetes: {{kubeconfig: \"{kubeconfig}\"}}}}\n\
         \x20 limits: {{maxBodyBytes: 300000}}\n\
         leaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
         agents:\n  - name: devhelper\n    kubernetes: {{serviceAccounts: [agents/*]}}\n\
         {extra}logging: {{format: json, level: debug}}\n",
        store = store.display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
        kubeconfig = server.kubeconfig.display(),
    );
    let op = Operator::start(dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    op
}

fn post(pki: &TestPki, port: u16, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = token.map(|t| format!("authorization: Bearer {t}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    pki.request(port, "POST", path, &headers, body)
}

fn records(store: &Path, kind: &str) -> Vec<Value> {
    journal(store)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["body"].clone())
        .collect()
}

/// The latest attribution of `object`: an `attribution` record written
/// after the change, else what the `change` record holds.
fn attribution_of(store: &Path, object: &str) -> Option<Value> {
    let mut latest = None;
    for r in journal(store) {
        if r["body"]["object"] != object {
            continue;
        }
        match r["kind"].as_str() {
            Some("change") => latest = r["body"].get("attribution").cloned(),
            Some("attribution") => latest = Some(r["body"]["attribution"].clone()),
            _ => {}
        }
    }
    latest
}

#[test]
fn suggestions_and_audit_batches_are_authenticated_bounded_and_journaled() {
    let dir = scratch("operator-attribution-api");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let api_port = free_port();
    let server = cluster(&pki, api_port);
    let op = start_operator(
        &dir,
        &pki,
        &server,
        api_port,
        "suggestions: {perCallerPerMinute: 3}\n",
    );
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2)).to_string();
    server.add_token("expired-token", "devhelper-poster", &[], Some(&soon));
    let path = "/api/v1/suggestions?name=answer.md";
    let answer = ANSWER.as_bytes();
    // Nobody, a token the cluster does not know, a valid token without RBAC.
    assert_eq!(post(&pki, api_port, path, None, answer).0, 401);
    assert_eq!(
        post(&pki, api_port, path, Some("forged-token"), answer).0,
        401
    );
    let (status, text) = post(&pki, api_port, path, Some("nobody-token"), answer);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("suggestions.permdrift.dev"), "{text}");
    // Too large, and not text.
    let (status, text) = post(
        &pki,
        api_port,
        path,
        Some("poster-token"),
        &vec![b'a'; 400_000],
    );
    assert_eq!(status, 413, "{text}");
    let (status, text) = post(
        &pki,
        api_port,
        path,
        Some("poster-token"),
        b"kubectl\0\x01\x02",
    );
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("binary"), "{text}");
    assert!(
        records(&store, "suggestion").is_empty(),
        "nothing refused is kept"
    );
    // An expired token, though its user may post.
    std::thread::sleep(Duration::from_secs(3));
    let (status, text) = post(&pki, api_port, path, Some("expired-token"), answer);
    assert_eq!(status, 401, "{text}");
    // A valid one.
    let (status, text) = post(&pki, api_port, path, Some("poster-token"), answer);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("suggestion eng-help-2026-12-03-0912: 1 action(s) understood"),
        "{text}"
    );
    // The same again: refused, it would replace what changes are matched to.
    let (status, text) = post(&pki, api_port, path, Some("poster-token"), answer);
    assert_eq!(status, 409, "{text}");
    // The budget is per caller and minute (the binary and replayed posts
    // counted too); a minute boundary in between may give one more.
    let over = (0..4)
        .map(|i| {
            let other = ANSWER.replace("eng-help-2026-12-03-0912", &format!("other-{i}"));
            post(&pki, api_port, path, Some("poster-token"), other.as_bytes()).0
        })
        .find(|s| *s != 200);
    assert_eq!(over, Some(429));

    let kept = records(&store, "suggestion");
    assert!((1..=3).contains(&kept.len()), "{kept:#?}");
    assert_eq!(kept[0]["id"], "eng-help-2026-12-03-0912");
    assert_eq!(kept[0]["agent"], "devhelper");
    assert_eq!(kept[0]["caller"]["username"], "devhelper-poster");
    assert_eq!(kept[0]["text"], ANSWER);

    // The audit webhook: unauthenticated and malformed batches are refused,
    // and the operator goes on.
    let audit = "/api/v1/audit";
    assert_eq!(post(&pki, api_port, audit, None, b"{}").0, 401);
    let bad =
        json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{"kind": "Pod"}]});
    let (status, text) = post(
        &pki,
        api_port,
        audit,
        Some("audit-token"),
        bad.to_string().as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("not an audit.k8s.io/v1 EventList") && text.contains("items[0]"),
        "{text}"
    );
    assert_eq!(
        post(&pki, api_port, audit, Some("forged-token"), b"{}").0,
        401
    );
    assert_eq!(
        post(&pki, api_port, audit, Some("nobody-token"), b"{}").0,
        403
    );
    let huge = vec![b' '; 400_000];
    let (status, text) = post(&pki, api_port, audit, Some("audit-token"), &huge);
    assert_eq!(status, 413, "{text}");
    let (status, text) = post(
        &pki,
        api_port,
        audit,
        Some("audit-token"),
        b"\xff\xfe not json",
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        op.is_ready(),
        "a malformed batch does not stop the operator"
    );

    let requests: Vec<(String, String)> = records(&store, "api-request")
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("suggest", "unauthenticated"),
        ("suggest", "forbidden"),
        ("suggest", "oversized"),
        ("suggest", "binary"),
        ("suggest", "replayed"),
        ("suggest", "over-rate"),
        ("audit", "unauthenticated"),
        ("audit", "forbidden"),
        ("audit", "oversized"),
        ("audit", "malformed"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            requests.contains(&expected),
            "{expected:?} not journaled: {requests:?}"
        );
    }
    let unauthenticated = requests
        .iter()
        .filter(|r| r.0 == "suggest" && r.1 == "unauthenticated")
        .count();
    assert_eq!(
        unauthenticated, 3,
        "no credentials, a forged token, an expired one"
    );

    // Held across a restart: read back from the journal.
    let held = kept.len();
    op.terminate();
    let op = start_operator(&dir, &pki, &server, api_port, "");
    op.wait_for("the suggestions restored", WAIT, |op| {
        op.log_lines()
            .iter()
            .any(|l| l["message"] == "suggestions held for attribution" && l["suggestions"] == held)
    });
    op.terminate();
}

#[test]
fn a_person_applying_an_agents_answer_is_agent_suggested_and_the_agents_own_change_is_agent() {
    let dir = scratch("operator-attribution-e2e");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let api_port = free_port();
    let server = cluster(&pki, api_port);
    let op = start_operator(&dir, &pki, &server, api_port, "");
    let answer = dir.join("forum-answer.md");
    std::fs::write(&answer, ANSWER).expect("write the answer");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .arg("suggest")
        .arg(&answer)
        .arg("--server")
        .arg(format!("https://127.0.0.1:{api_port}"))
        .arg("--ca-cert")
        .arg(&pki.ca)
        .arg("--kubeconfig")
        .arg(server.kubeconfig_for("poster-token"))
        .output()
        .expect("run permdrift suggest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A person runs the agent's command, as themselves.
    let out = server.kubectl_as(
        "priya-token",
        &[
            "create",
            "clusterrolebinding",
            "payments-read-secrets",
            "--clusterrole=secret-reader",
            "--group=payments-devs",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let object = "ClusterRoleBinding/payments-read-secrets";
    op.wait_for("the change attributed to the person", WAIT, |_| {
        attribution_of(&store, object).is_some_and(|a| a["actor"]["username"] == "priya")
    });
    let a = attribution_of(&store, object).expect("attributed");
    assert_eq!(a["kind"], "agent-suggested", "{a:#}");
    assert_eq!(a["suggestion"], "eng-help-2026-12-03-0912", "{a:#}");
    assert_eq!(a["agent"], "devhelper", "{a:#}");
    assert_eq!(a["confidence"], "exact", "{a:#}");
    assert_eq!(a["actor"]["via"], "audit-log", "{a:#}");
    assert!(
        a["evidence"][0]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("forum-answer.md:")),
        "{a:#}"
    );

    // The Event on the binding says it in one line (what was known when it
    // was judged: the suggestion, and the actor if its audit event was in).
    op.wait_for("the Warning Event", WAIT, |_| {
        support::operator::events(&server).iter().any(|e| {
            e["reason"] == "PermissionWidening" && e["regarding"]["name"] == "payments-read-secrets"
        })
    });
    let event = support::operator::events(&server)
        .into_iter()
        .find(|e| e["regarding"]["name"] == "payments-read-secrets")
        .expect("the Event");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(
            " · by agent-suggested · suggestion eng-help-2026-12-03-0912 · agent devhelper · exact"
        ),
        "{note}"
    );

    // The chain, from the journal.
    let fingerprint = journal(&store)
        .into_iter()
        .find(|r| r["kind"] == "change" && r["body"]["object"] == object)
        .and_then(|r| r["body"]["fingerprint"].as_str().map(str::to_owned))
        .expect("the change record");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(["explain", &fingerprint[..8], "--store"])
        .arg(&store)
        .output()
        .expect("run permdrift explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("suggestion  eng-help-2026-12-03-0912 by agent devhelper"),
        "{text}"
    );
    assert!(
        text.contains("> kubectl create clusterrolebinding payments-read-secrets \\\n            >   --clusterrole=secret-reader --group=payments-devs\n"),
        "{text}"
    );
    assert!(
        text.contains("\nactor       priya (agent-suggested"),
        "{text}"
    );
    assert!(
        text.contains("ClusterRoleBinding/payments-read-secrets added widening"),
        "{text}"
    );
    assert!(text.contains("\nverdict     alert: "), "{text}");

    // The agent's service account acts itself.
    let out = server.kubectl_as(
        "agent-token",
        &[
            "create",
            "clusterrolebinding",
            "devhelper-reads-secrets",
            "--clusterrole=secret-reader",
            "--serviceaccount=agents:devhelper",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let object = "ClusterRoleBinding/devhelper-reads-secrets";
    op.wait_for("the agent's own change attributed", WAIT, |_| {
        attribution_of(&store, object).is_some_and(|a| a["actor"].is_object())
    });
    let a = attribution_of(&store, object).expect("attributed");
    assert_eq!(a["kind"], "agent", "{a:#}");
    assert_eq!(a["agent"], "devhelper", "{a:#}");
    assert_eq!(
        a["actor"]["username"], "system:serviceaccount:agents:devhelper",
        "{a:#}"
    );

    let series = |kind: &str| {
        format!(
            "permdrift_attributed_changes_total{{agent=\"devhelper\",kind=\"{kind}\",source=\"kind\"}}"
        )
    };
    op.wait_for("the attribution counted", WAIT, |op| {
        op.metric(&series("agent-suggested")) == Some(1.0)
            && op.metric(&series("agent")) == Some(1.0)
    });

    // Applied while no operator ran: judged at the next start, and still
    // tied to the suggestion kept in the journal.
    let oncall = ANSWER
        .replace("eng-help-2026-12-03-0912", "eng-help-2026-12-03-1000")
        .replace("payments-read-secrets", "oncall-read-secrets")
        .replace("payments-devs", "oncall");
    let (status, text) = post(
        &pki,
        api_port,
        "/api/v1/suggestions",
        Some("poster-token"),
        oncall.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    op.terminate();
    let out = server.kubectl_as(
        "priya-token",
        &[
            "create",
            "clusterrolebinding",
            "oncall-read-secrets",
            "--clusterrole=secret-reader",
            "--group=oncall",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let op = start_operator(&dir, &pki, &server, api_port, "");
    let object = "ClusterRoleBinding/oncall-read-secrets";
    op.wait_for("the change made while down, attributed", WAIT, |_| {
        attribution_of(&store, object).is_some()
    });
    let a = attribution_of(&store, object).expect("attributed");
    assert_eq!(a["kind"], "agent-suggested", "{a:#}");
    assert_eq!(a["suggestion"], "eng-help-2026-12-03-1000", "{a:#}");
    support::operator::assert_store_verifies(&store);
    op.terminate();
}
