//! End to end through `permdrift run`: a real operator process against a
//! real moto_server (AWS) and the project's Kubernetes API test server,
//! changed through the real AWS SDK, kubectl and HTTP; judged outcomes read
//! back from its /metrics, its journal (`permdrift history`), Kubernetes
//! Events and its logs.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kube_server::{KubeContext, KubeTestServer, write_kubeconfig};
use support::moto::{self, Moto};
use support::operator::{
    Operator, assert_store_verifies, changes_by_object, events, journal, metric_sum, metric_value,
    permdrift, records_of_kind, scratch,
};

const WAIT: Duration = Duration::from_secs(30);

/// A signing key for the API (what `permdrift keygen` writes), saved under
/// `dir`; returns its file and the public key the config lists.
fn api_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = permdrift::signature::SecretKey::from_seed([42; 32]);
    let file = dir.join("ops.key");
    std::fs::write(&file, key.to_pem().expect("pem")).expect("write key");
    (file, key.public().to_base64())
}

fn aws_config(dir: &Path, moto: &Moto) -> String {
    let (_, public) = api_key(dir);
    format!(
        r#"apiVersion: permdrift.dev/v1alpha1
kind: Config
store: {{path: "{store}"}}
http: {{listen: "127.0.0.1:0"}}
api:
  listen: "127.0.0.1:0"
  authentication: {{tokenReview: "off", keys: [{{id: ops, publicKey: "{public}"}}]}}
leaderElection: {{enabled: false}}
sources:
  - name: acct
    aws: {{profile: {profile}, endpointUrl: "{endpoint}", pollInterval: 1s}}
logging: {{format: json, level: debug}}
"#,
        store = dir.join("store").display(),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
    )
}

fn policy(actions: &[&str]) -> String {
    json!({"Version": "2012-10-17",
           "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
    .to_string()
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

#[test]
fn aws_widening_and_narrowing_are_judged_journaled_counted_and_survive_a_restart() {
    moto::aws_env();
    let moto = Moto::start(&[]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        iam.create_role()
            .role_name("app")
            .assume_role_policy_document(TRUST)
            .send()
            .await
            .expect("create role");
        iam.put_role_policy()
            .role_name("app")
            .policy_name("read")
            .policy_document(policy(&["s3:GetObject"]))
            .send()
            .await
            .expect("put narrow policy");
    });
    let dir = scratch("operator-aws");
    let store = dir.join("store");
    let config = aws_config(&dir, &moto);
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("readiness", WAIT, Operator::is_ready);
    op.wait_for("the first baseline", WAIT, |_| {
        store.exists() && records_of_kind(&store, "baseline") == 1
    });

    // Someone follows an agent's advice and gives the role iam:*.
    rt.block_on(async {
        iam.put_role_policy()
            .role_name("app")
            .policy_name("admin")
            .policy_document(policy(&["iam:*"]))
            .send()
            .await
            .expect("put wide policy");
    });
    let unapproved = r#"permdrift_unapproved_widening_total{severity="critical",source="acct"}"#;
    op.wait_for("the widening alert", WAIT, |op| {
        op.metric(unapproved) == Some(1.0)
    });
    let page = op.metrics();
    assert_eq!(
        metric_value(
            &page,
            r#"permdrift_open_widening{severity="critical",source="acct"}"#
        ),
        Some(1.0)
    );
    assert!(
        metric_value(
            &page,
            r#"permdrift_open_widening_since_timestamp_seconds{severity="critical",source="acct"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    let changes = changes_by_object(&store);
    let role = "Role arn:aws:iam::123456789012:role/app";
    let recorded = &changes[role];
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let change = &recorded[0];
    assert_eq!(change["verdict"], "alert");
    assert_eq!(change["direction"], "widening");
    assert_eq!(change["severity"], "critical");
    assert!(
        change["witness"]["explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("iam:"),
        "{change}"
    );
    assert!(
        change["risks"].as_array().is_some_and(|r| !r.is_empty()),
        "{change}"
    );
    let judged: Vec<Value> = op
        .log_lines()
        .into_iter()
        .filter(|l| l["message"] == "judged" && l["verdict"] == "alert")
        .collect();
    assert_eq!(judged.len(), 1, "one alert in the log: {judged:?}");

    // A restart rebuilds the open widening from the journal and records nothing twice.
    op.terminate();
    let before = journal(&store).len();
    let op = Operator::start(&dir, "op-restarted", &config);
    op.wait_for("readiness after restart", WAIT, Operator::is_ready);
    op.wait_for("three polls after restart", WAIT, |op| {
        op.metric(r#"permdrift_snapshot_duration_seconds_count{platform="aws",source="acct"}"#)
            .unwrap_or(0.0)
            >= 3.0
    });
    assert_eq!(journal(&store).len(), before, "a restart recorded again");
    let page = op.metrics();
    assert_eq!(
        metric_value(
            &page,
            r#"permdrift_open_widening{severity="critical",source="acct"}"#
        ),
        Some(1.0),
        "the open widening is known after the restart"
    );
    assert_eq!(
        metric_value(&page, unapproved),
        Some(0.0),
        "not alerted twice"
    );

    // Taking the permission away closes the widening and advances the baseline.
    rt.block_on(async {
        iam.delete_role_policy()
            .role_name("app")
            .policy_name("admin")
            .send()
            .await
            .expect("delete wide policy");
    });
    op.wait_for("the widening to close", WAIT, |op| {
        op.metric(r#"permdrift_open_widening{severity="critical",source="acct"}"#) == Some(0.0)
    });
    let closes: Vec<Value> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "close")
        .collect();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["body"]["reason"], "restored", "{closes:?}");

    // A widening someone decides to keep is accepted through the API.
    rt.block_on(async {
        iam.put_role_policy()
            .role_name("app")
            .policy_name("write")
            .policy_document(policy(&["s3:PutObject"]))
            .send()
            .await
            .expect("put write policy");
    });
    op.wait_for("the second widening", WAIT, |op| {
        metric_sum(&op.metrics(), "permdrift_open_widening", r#"source="acct""#) == 1.0
    });
    // Through the authenticated API only: a signed request, over TLS,
    // trusting the certificate the operator generated by its fingerprint.
    let server = format!("https://127.0.0.1:{}", op.api_port);
    let (key, _) = api_key(&dir);
    let key = key.display().to_string();
    let signed = [
        "--fingerprint",
        op.fingerprint.as_str(),
        "--key",
        key.as_str(),
        "--key-id",
        "ops",
    ];
    let accept = |source: &str| {
        let mut args = vec![
            "baseline", "accept", "--server", &server, "--source", source,
        ];
        args.extend(signed);
        permdrift(&args)
    };
    let out = accept("acct");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accepted 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        metric_sum(&op.metrics(), "permdrift_open_widening", r#"source="acct""#),
        0.0
    );
    let reasons: Vec<String> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "close")
        .map(|r| r["body"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons, ["restored", "accepted"]);
    let by: Vec<Value> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "baseline-patch" && r["body"]["reason"] == "accepted")
        .map(|r| r["body"]["by"].clone())
        .collect();
    assert_eq!(by, [json!("key:ops")], "the accept names who asked");
    // An unknown source is refused (after authentication), naming the ones there are.
    let out = accept("nope");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("acct"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    op.terminate();
    assert_store_verifies(&store);
}

fn kube_config(dir: &Path, server: &KubeTestServer, leader_election: &str) -> String {
    format!(
        r#"apiVersion: permdrift.dev/v1alpha1
kind: Config
store: {{path: "{store}"}}
http: {{listen: "127.0.0.1:0"}}
api: {{listen: "127.0.0.1:0"}}
leaderElection: {leader_election}
sources:
  - name: kind
    kubernetes: {{kubeconfig: "{kubeconfig}"}}
events: {{enabled: true}}
logging: {{format: json, level: debug}}
"#,
        store = dir.join("store").display(),
        kubeconfig = server.kubeconfig.display(),
    )
}

#[test]
fn kube_widening_and_narrowing_are_judged_evented_journaled_and_counted() {
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "auditors-read-secrets",
        "--clusterrole=secret-reader",
        "--group=auditors",
    ]);
    let dir = scratch("operator-kube");
    let store = dir.join("store");
    let op = Operator::start(&dir, "op", &kube_config(&dir, &server, "{enabled: false}"));
    op.wait_for("readiness", WAIT, Operator::is_ready);
    op.wait_for("the first baseline", WAIT, |_| {
        store.exists() && records_of_kind(&store, "baseline") == 1
    });

    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "agent-reads-secrets",
        "--clusterrole=secret-reader",
        "--serviceaccount=default:agent",
    ]);
    op.wait_for("the widening alert", WAIT, |op| {
        metric_sum(
            &op.metrics(),
            "permdrift_unapproved_widening_total",
            r#"source="kind""#,
        ) == 1.0
    });
    let recorded = &changes_by_object(&store)["ClusterRoleBinding/agent-reads-secrets"];
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["verdict"], "alert");
    assert!(
        recorded[0]["risks"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("secrets-read"))),
        "{}",
        recorded[0]
    );
    op.wait_for("the Warning Event", WAIT, |_| {
        events(&server)
            .iter()
            .any(|e| e["reason"] == "PermissionWidening")
    });
    let warning = events(&server)
        .into_iter()
        .find(|e| e["reason"] == "PermissionWidening")
        .expect("event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["kind"], "ClusterRoleBinding");
    assert_eq!(warning["regarding"]["name"], "agent-reads-secrets");
    assert_eq!(warning["reportingController"], "permdrift");
    assert!(
        warning["note"]
            .as_str()
            .unwrap_or_default()
            .contains("ServiceAccount:default:agent"),
        "{warning}"
    );
    // Published by the Event writer, none dropped: every reason's series
    // exists from the start at 0 (what an alert's increase() needs).
    assert_eq!(
        metric_sum(&op.metrics(), "permdrift_events_dropped_total", ""),
        0.0
    );
    let page = op.metrics();
    for reason in ["queue-full", "timeout", "failed"] {
        assert!(
            page.lines()
                .any(|l| l.starts_with("permdrift_events_dropped_total{")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason}: {page}"
        );
    }

    // A label on the open binding changes what it says, not what it grants:
    // the widening stays open and is not alerted again.
    let applied = |op: &Operator| {
        metric_sum(
            &op.metrics(),
            "permdrift_watch_events_total",
            r#"type="apply""#,
        )
    };
    let before = applied(&op);
    server.kubectl_ok(&[
        "label",
        "clusterrolebinding",
        "agent-reads-secrets",
        "team=platform",
    ]);
    op.wait_for("the label's watch event", WAIT, |op| applied(op) > before);
    // A change elsewhere that widens nothing is judged and recorded, not alerted.
    server.kubectl_ok(&["label", "clusterrole", "secret-reader", "team=platform"]);
    op.wait_for("the neutral change", WAIT, |op| {
        metric_sum(
            &op.metrics(),
            "permdrift_changes_total",
            r#"direction="neutral""#,
        ) == 1.0
    });
    assert_eq!(
        metric_sum(
            &op.metrics(),
            "permdrift_unapproved_widening_total",
            r#"source="kind""#
        ),
        1.0,
        "a cosmetic edit of an open widening was alerted again"
    );
    assert_eq!(
        changes_by_object(&store)["ClusterRoleBinding/agent-reads-secrets"].len(),
        1
    );

    server.kubectl_ok(&["delete", "clusterrolebinding", "agent-reads-secrets"]);
    op.wait_for("the widening to close", WAIT, |op| {
        metric_sum(&op.metrics(), "permdrift_open_widening", r#"source="kind""#) == 0.0
    });
    op.wait_for("the Normal Event", WAIT, |_| {
        events(&server).iter().any(|e| {
            e["reason"] == "PermissionWideningClosed"
                && e["type"] == "Normal"
                && e["regarding"]["name"] == "agent-reads-secrets"
        })
    });
    // Taking access away from the baseline is a narrowing: allowed, and the
    // baseline advances (a later re-grant is a widening again).
    let patches = records_of_kind(&store, "baseline-patch");
    server.kubectl_ok(&["delete", "clusterrolebinding", "auditors-read-secrets"]);
    op.wait_for("the PermissionNarrowing Event", WAIT, |_| {
        events(&server).iter().any(|e| {
            e["reason"] == "PermissionNarrowing"
                && e["type"] == "Normal"
                && e["regarding"]["name"] == "auditors-read-secrets"
        })
    });
    let narrowed = &changes_by_object(&store)["ClusterRoleBinding/auditors-read-secrets"];
    assert_eq!(narrowed.len(), 1);
    assert_eq!(
        (
            narrowed[0]["direction"].as_str(),
            narrowed[0]["verdict"].as_str()
        ),
        (Some("narrowing"), Some("allow"))
    );
    assert_eq!(records_of_kind(&store, "baseline-patch"), patches + 1);
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "auditors-read-secrets",
        "--clusterrole=secret-reader",
        "--group=auditors",
    ]);
    op.wait_for("the re-grant to be alerted", WAIT, |op| {
        metric_sum(
            &op.metrics(),
            "permdrift_unapproved_widening_total",
            r#"source="kind""#,
        ) == 2.0
    });

    let page = op.metrics();
    assert_eq!(
        metric_value(
            &page,
            r#"permdrift_source_up{platform="kubernetes",source="kind"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&page, "permdrift_recording"), Some(1.0));
    assert!(metric_sum(&page, "permdrift_watch_events_total", r#"type="apply""#) >= 2.0);
    // The live page goes through `promtool check metrics` in CI (.ci/run).
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-metrics.prom"),
        &page,
    )
    .expect("save the scrape");
    op.terminate();
    assert_store_verifies(&store);
}

/// A binding of `role` for user `user`, as the API takes it.
fn binding(name: &str, role: &str, user: &str) -> String {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })
    .to_string()
}

fn create_binding(server: &KubeTestServer, name: &str) {
    let r = server.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(&binding(name, "secret-reader", name)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn two_replicas_record_once_and_the_follower_takes_over_a_killed_leader() {
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    let dir = scratch("operator-ha");
    let store = dir.join("store");
    let le = format!(
        r#"{{enabled: true, namespace: default, leaseName: permdrift, leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 500ms, kubernetes: {{kubeconfig: "{}"}}}}"#,
        server.kubeconfig.display()
    );
    let config = kube_config(&dir, &server, &le);
    let a = Operator::start(&dir, "replica-a", &config);
    a.wait_for("replica-a to record", WAIT, |op| {
        op.metric("permdrift_recording") == Some(1.0)
    });
    let b = Operator::start(&dir, "replica-b", &config);
    b.wait_for("replica-b to sync", WAIT, Operator::is_ready);
    assert_eq!(b.metric("permdrift_leader"), Some(0.0));
    assert_eq!(b.metric("permdrift_recording"), Some(0.0));

    create_binding(&server, "before-failover");
    a.wait_for("the leader to record", WAIT, |_| {
        changes_by_object(&store).contains_key("ClusterRoleBinding/before-failover")
    });
    // The follower saw it too (its index is warm) but judged nothing.
    b.wait_for("the follower's index", WAIT, |op| {
        metric_sum(
            &op.metrics(),
            "permdrift_watch_events_total",
            r#"type="apply""#,
        ) >= 1.0
    });
    assert_eq!(metric_sum(&b.metrics(), "permdrift_changes_total", ""), 0.0);

    // Writes keep coming while the leader is killed mid-stream.
    let writer = {
        let port = server.port;
        std::thread::spawn(move || {
            for i in 0..40 {
                let r = support::kube_server::http_request(
                    port,
                    "POST",
                    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                    &[(
                        "Authorization",
                        &format!("Bearer {}", support::kube_server::TOKEN),
                    )],
                    Some(
                        binding(&format!("churn-{i:02}"), "secret-reader", &format!("u{i}"))
                            .as_bytes(),
                    ),
                );
                assert_eq!(r.status, 201, "{}", r.text());
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    a.kill();
    b.wait_for("the follower to take over", WAIT, |op| {
        op.metric("permdrift_recording") == Some(1.0)
    });
    let takeover = killed_at.elapsed();
    writer.join().expect("writer");
    create_binding(&server, "after-failover");
    b.wait_for("every write to be judged", WAIT, |_| {
        changes_by_object(&store).len() == 42
    });
    // Give a late duplicate the chance to show up before counting.
    std::thread::sleep(Duration::from_secs(2));
    let changes = changes_by_object(&store);
    assert_eq!(
        changes.len(),
        42,
        "{:?}",
        changes.keys().collect::<Vec<_>>()
    );
    for (object, records) in &changes {
        assert_eq!(
            records.len(),
            1,
            "{object} recorded {} times",
            records.len()
        );
        assert_eq!(records[0]["verdict"], "alert", "{object}");
    }
    assert!(
        takeover < Duration::from_secs(3) + Duration::from_secs(3),
        "takeover took {takeover:?}, lease duration is 3s"
    );
    eprintln!("takeover after SIGKILL of the leader: {takeover:?}");
    b.terminate();
    assert_store_verifies(&store);
}

#[test]
fn an_invalid_config_exits_2_naming_the_field_and_starts_nothing() {
    let dir = scratch("operator-bad-config");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {path: store}\n\
         sources:\n  - name: acct\n    aws: {pollInterval: 10}\n",
    )
    .expect("write config");
    let out = permdrift(&["run", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sources[0].aws.pollInterval"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(
        !dir.join("store").exists(),
        "nothing may start on a bad config"
    );

    let out = permdrift(&["run", "--check", "--config", "examples/permdrift.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rejected_credentials_are_logged_naming_the_source_and_the_operator_stays_unready() {
    let server = KubeTestServer::start();
    let dir = scratch("operator-rejected-credentials");
    let kubeconfig = dir.join("expired.kubeconfig");
    let url = format!("https://127.0.0.1:{}", server.port);
    write_kubeconfig(
        &kubeconfig,
        &[KubeContext {
            name: "expired",
            server: &url,
            user: "bob",
            token: "expired-token",
        }],
    );
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: prod-eu\n    kubernetes: {{kubeconfig: \"{}\"}}\n\
         logging: {{format: json, level: info}}\n",
        dir.join("store").display(),
        kubeconfig.display()
    );
    let op = Operator::start(&dir, "operator", &config);
    op.wait_for(
        "a warning about the credentials",
        Duration::from_secs(30),
        |op| {
            op.log_lines().iter().any(|l| {
                l["level"] == "WARN"
                    // The source loop's span names the source.
                    && l["span"]["source"] == "prod-eu"
                    && l["span"]["platform"] == "kubernetes"
                    && l["error"].as_str().is_some_and(|e| e.contains("401"))
            })
        },
    );
    assert!(
        !op.is_ready(),
        "a source it cannot read must keep /readyz failing"
    );
    let page = op.metrics();
    assert_eq!(
        metric_value(
            &page,
            "permdrift_source_up{platform=\"kubernetes\",source=\"prod-eu\"}"
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        records_of_kind(&dir.join("store"), "baseline"),
        0,
        "no baseline from nothing"
    );
}
