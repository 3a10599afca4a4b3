//! The guard never goes blind while it looks healthy: a real `permdrift run`
//! against the project's Kubernetes API test server, driven with kubectl,
//! with its store damaged, an object it cannot parse, and a widening undone
//! while it was down. Each time the health it reports (`/readyz`,
//! `permdrift_recording`, `permdrift_source_recording`) must match what it
//! really judges and records.

mod support;

use std::path::Path;
use std::time::Duration;

use support::kube_server::KubeTestServer;
use support::operator::{Operator, events, journal, metric_sum, records_of_kind, scratch};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, server: &KubeTestServer) -> String {
    format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\n\
         leaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    kubernetes: {{kubeconfig: \"{}\"}}\n\
         events: {{enabled: true}}\nlogging: {{format: json, level: debug}}\n",
        dir.join("store").display(),
        server.kubeconfig.display()
    )
}

fn recording(op: &Operator) -> (f64, f64) {
    let page = op.metrics();
    (
        support::operator::metric_value(&page, "permdrift_recording").unwrap_or(-1.0),
        support::operator::metric_value(&page, r#"permdrift_source_recording{source="kind"}"#)
            .unwrap_or(-1.0),
    )
}

fn unapproved(op: &Operator) -> f64 {
    metric_sum(
        &op.metrics(),
        "permdrift_unapproved_widening_total",
        r#"source="kind""#,
    )
}

fn secret_reader(server: &KubeTestServer) {
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
}

fn widen(server: &KubeTestServer, name: &str) {
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        name,
        "--clusterrole=secret-reader",
        "--serviceaccount=default:agent",
    ]);
}

#[test]
fn a_baseline_that_cannot_be_read_back_turns_recording_off_with_its_reason_until_repaired() {
    let server = KubeTestServer::start();
    secret_reader(&server);
    let dir = scratch("operator-health-corrupt");
    let store = dir.join("store");
    let op = Operator::start(&dir, "op", &config(&dir, &server));
    op.wait_for("recording", WAIT, |op| recording(op) == (1.0, 1.0));
    op.terminate();

    // One byte appended to the stored baseline snapshot.
    let snapshot = std::fs::read_dir(store.join("snapshots"))
        .expect("snapshots dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a baseline snapshot");
    let good = std::fs::read(&snapshot).expect("read snapshot");
    let mut bad = good.clone();
    bad.push(b'x');
    std::fs::write(&snapshot, &bad).expect("damage snapshot");

    let op = Operator::start(&dir, "op-damaged", &config(&dir, &server));
    // Once synced (before that, nobody records anything anyway).
    op.wait_for("the reason on /readyz", WAIT, |op| {
        op.get("/readyz").1.contains("not recording")
    });
    assert_eq!(recording(&op), (0.0, 0.0));
    let (status, body) = op.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("kind: not recording") && body.contains("cannot be read"),
        "{body}"
    );
    assert!(
        op.log_lines().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not recording"))
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot be read"))),
        "{}",
        op.log_text()
    );
    // A widening now is not judged against a baseline that does not read.
    widen(&server, "agent-reads-secrets");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unapproved(&op), 0.0);
    assert_eq!(records_of_kind(&store, "change"), 0);

    // Repaired, it recovers by itself (retry with backoff) and judges what it missed.
    std::fs::write(&snapshot, &good).expect("repair snapshot");
    op.wait_for("recording again", Duration::from_secs(90), |op| {
        recording(op) == (1.0, 1.0)
    });
    op.wait_for("the missed widening judged", WAIT, |op| {
        unapproved(op) == 1.0
    });
    assert_eq!(op.get("/readyz").0, 200);
    op.terminate();
}

#[test]
fn an_object_that_cannot_be_parsed_is_a_missing_part_and_everything_else_is_still_judged() {
    let server = KubeTestServer::start();
    secret_reader(&server);
    let dir = scratch("operator-health-unparseable");
    let store = dir.join("store");
    let op = Operator::start(&dir, "op", &config(&dir, &server));
    op.wait_for("recording", WAIT, |op| recording(op) == (1.0, 1.0));

    // The test server stores what a real API server might accept and
    // permdrift's parser does not (here an unknown selector operator): any
    // such mismatch must not blind detection.
    let odd = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: odd-aggregate\n\
               aggregationRule:\n  clusterRoleSelectors:\n  - matchExpressions:\n    - {key: team, operator: Gt, values: [\"1\"]}\n\
               rules: []\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], odd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    op.wait_for("the unreadable object counted", WAIT, |op| {
        op.metric(r#"permdrift_unreadable_objects{source="kind"}"#) == Some(1.0)
    });
    op.wait_for("the Warning Event on it", WAIT, |_| {
        events(&server)
            .iter()
            .any(|e| e["reason"] == "UnreadableObject" && e["regarding"]["name"] == "odd-aggregate")
    });

    // Still judged and recorded: a widening after it is alerted at once.
    widen(&server, "agent-reads-secrets");
    op.wait_for("the widening alerted", WAIT, |op| unapproved(op) == 1.0);
    assert_eq!(recording(&op), (1.0, 1.0));
    assert_eq!(op.get("/readyz").0, 200);
    assert!(
        journal(&store).iter().any(|r| r["kind"] == "change"
            && r["body"]["object"] == "ClusterRoleBinding/agent-reads-secrets"),
        "the widening is journaled"
    );

    // Deleting the odd object clears the gauge.
    server.kubectl_ok(&["delete", "clusterrole", "odd-aggregate"]);
    op.wait_for("the gauge back to 0", WAIT, |op| {
        op.metric(r#"permdrift_unreadable_objects{source="kind"}"#) == Some(0.0)
    });
    op.terminate();
}

#[test]
fn a_widening_undone_while_the_operator_was_down_closes_on_restart() {
    let server = KubeTestServer::start();
    secret_reader(&server);
    let dir = scratch("operator-health-restored");
    let store = dir.join("store");
    let op = Operator::start(&dir, "op", &config(&dir, &server));
    op.wait_for("recording", WAIT, |op| recording(op) == (1.0, 1.0));
    widen(&server, "agent-reads-secrets");
    let open =
        |op: &Operator| metric_sum(&op.metrics(), "permdrift_open_widening", r#"source="kind""#);
    op.wait_for("the open widening", WAIT, |op| open(op) == 1.0);
    op.terminate();

    server.kubectl_ok(&["delete", "clusterrolebinding", "agent-reads-secrets"]);

    let op = Operator::start(&dir, "op-restarted", &config(&dir, &server));
    op.wait_for("recording after restart", WAIT, |op| {
        recording(op) == (1.0, 1.0)
    });
    assert_eq!(open(&op), 0.0, "the undone widening is not open");
    let closes: Vec<_> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "close")
        .collect();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["body"]["reason"], "restored-while-down");
    assert_eq!(
        metric_sum(
            &op.metrics(),
            "permdrift_exposure_window_seconds_count",
            r#"source="kind""#,
        ),
        1.0,
        "the exposure stops counting"
    );
    op.terminate();
}

#[test]
fn a_store_that_cannot_be_opened_is_not_ready_and_says_why() {
    let server = KubeTestServer::start();
    let dir = scratch("operator-health-store");
    // A journal the store cannot open (here: a directory in its place).
    std::fs::create_dir_all(dir.join("store").join("journal.jsonl")).expect("mkdir");
    let op = Operator::start(&dir, "op", &config(&dir, &server));
    op.wait_for("the reason on /readyz", WAIT, |op| {
        op.get("/readyz").1.contains("store: not recording")
    });
    assert_eq!(op.get("/readyz").0, 503);
    assert_eq!(recording(&op), (0.0, 0.0));
    op.terminate();
}

#[test]
fn an_emptied_journal_is_refused_and_only_an_authenticated_reset_starts_over() {
    use permdrift::signature::{Action, SecretKey, Statement};
    let server = KubeTestServer::start();
    secret_reader(&server);
    let dir = scratch("operator-health-emptied");
    let store = dir.join("store");
    let pki = support::api::TestPki::create(&dir);
    let ops = SecretKey::from_seed([5; 32]);
    let config = config(&dir, &server).replace(
        "api: {listen: \"127.0.0.1:0\"}\n",
        &pki.api_config(&format!(
            "  authentication: {{tokenReview: \"off\", keys: [{{id: ops, publicKey: \"{}\"}}]}}\n",
            ops.public().to_base64()
        )),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("recording", WAIT, |op| recording(op) == (1.0, 1.0));
    widen(&server, "agent-reads-secrets");
    op.wait_for("the widening alerted", WAIT, |op| unapproved(op) == 1.0);
    op.terminate();

    // Emptied: never a fresh start that would absorb the open widening.
    std::fs::write(store.join("journal.jsonl"), b"").expect("empty the journal");
    let op = Operator::start(&dir, "op-emptied", &config);
    op.wait_for("the refusal on /readyz", WAIT, |op| {
        op.get("/readyz").1.contains("store: not recording")
    });
    assert_eq!(recording(&op), (0.0, 0.0));

    let reset = "/api/v1/baseline/reset?reason=journal%20emptied%2C%20INC-7";
    let (status, text) = pki.request(op.api_port, "POST", reset, &[], b"");
    assert_eq!(status, 401, "{text}");
    let now = jiff::Timestamp::now();
    let statement = Statement {
        action: Action::BaselineReset,
        source: None,
        key_id: "ops".into(),
        issued_at: now,
        expires_at: now + jiff::SignedDuration::from_secs(60),
        nonce: "reset-nonce-00001".into(),
    };
    // A statement for another action does not reset.
    let accept = Statement {
        action: Action::BaselineAccept,
        nonce: "accept-nonce-0001".into(),
        ..statement.clone()
    };
    let body = |s: Statement| serde_json::to_vec(&ops.sign(s)).expect("json");
    let json_ct = ["content-type: application/json"];
    let (status, text) = pki.request(op.api_port, "POST", reset, &json_ct, &body(accept));
    assert_eq!(status, 401, "{text}");
    let (status, text) = pki.request(op.api_port, "POST", reset, &json_ct, &body(statement));
    assert_eq!(status, 200, "{text}");

    op.wait_for("recording on the new chain", WAIT, |op| {
        recording(op) == (1.0, 1.0)
    });
    let records = journal(&store);
    assert_eq!(records[0]["kind"], "reset", "{records:?}");
    assert_eq!(records[0]["body"]["actor"], "key:ops");
    assert_eq!(records[0]["body"]["reason"], "journal emptied, INC-7");
    assert!(
        std::fs::read_dir(&store)
            .expect("store dir")
            .filter_map(Result::ok)
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("journal.reset-")),
        "the old journal is kept aside"
    );
    op.terminate();
}
