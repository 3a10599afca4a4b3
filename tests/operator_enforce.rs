//! Approvals through a running operator: a real `permdrift run` process and
//! its TLS API, posted signed approvals (as `permdrift approve -o` writes
//! them) and Kubernetes users' approvals (bearer token, TokenReview,
//! SubjectAccessReview on `widenings.permdrift.dev`). Every refusal must be
//! refused, counted and journaled as an `approval` record with its label;
//! a counted approval makes the widening approved in the gauges.

mod support;

use std::path::Path;
use std::time::Duration;

use permdrift::approval::{Approval, SignedApproval};
use permdrift::signature::SecretKey;
use serde_json::{Value, json};
use support::api::TestPki;
use support::moto::{self, Moto};
use support::operator::{Operator, journal, metric_value, scratch};

const WAIT: Duration = Duration::from_secs(30);
const APPROVALS: &str = "/api/v1/approvals";

fn approval_records(store: &Path) -> Vec<Value> {
    journal(store)
        .into_iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["body"].clone())
        .collect()
}

fn approved(op: &Operator, source: &str) -> Option<f64> {
    op.metric(&format!(
        "permdrift_approved_widenings{{source=\"{source}\"}}"
    ))
}

fn signed(
    key: &SecretKey,
    approver: &str,
    object: &str,
    digest: &str,
    issued: jiff::Timestamp,
    valid_s: i64,
) -> Vec<u8> {
    let approval = Approval {
        source: "acct".into(),
        object: object.into(),
        digest: digest.into(),
        approver: approver.into(),
        reason: "INC-42".into(),
        issued,
        expires: issued + jiff::SignedDuration::from_secs(valid_s),
    };
    let signed: SignedApproval = approval.sign(key);
    serde_json::to_vec(&signed).expect("json")
}

#[test]
fn signed_approvals_are_checked_counted_and_journaled_by_the_running_operator() {
    moto::aws_env();
    let moto = Moto::start(&[]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    rt.block_on(async {
        iam.create_role()
            .role_name("app")
            .assume_role_policy_document(trust)
            .send()
            .await
            .expect("create role");
    });
    let dir = scratch("operator-enforce-approvals");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let alice = SecretKey::from_seed([1; 32]);
    let bob = SecretKey::from_seed([3; 32]);
    let bot = SecretKey::from_seed([4; 32]);
    let mallory = SecretKey::from_seed([2; 32]);
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    aws: {{profile: {profile}, endpointUrl: \"{endpoint}\", pollInterval: 1s}}\n\
         approvals:\n  keys:\n  - {{id: alice, publicKey: \"{alice}\"}}\n  - {{id: bob, publicKey: \"{bob}\"}}\n\
         \x20 - {{id: ci-bot, publicKey: \"{bot}\"}}\n  agents: [\"ci-*\"]\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        api = pki.api_config(
            "  authentication: {tokenReview: \"off\"}\n  limits: {maxBodyBytes: 4096}\n"
        ),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
        alice = alice.public().to_base64(),
        bob = bob.public().to_base64(),
        bot = bot.public().to_base64(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    rt.block_on(async {
        iam.put_role_policy()
            .role_name("app")
            .policy_name("wide")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("widen");
    });
    op.wait_for("the open widening", WAIT, |op| {
        op.metrics().lines().any(|l| {
            l.starts_with("permdrift_open_widening{")
                && l.contains("source=\"acct\"")
                && l.ends_with(" 1")
        })
    });
    let object = journal(&store)
        .iter()
        .find(|r| r["kind"] == "change")
        .and_then(|r| r["body"]["object"].as_str().map(str::to_owned))
        .expect("a change record");
    assert_eq!(approved(&op, "acct"), Some(0.0));

    let now = jiff::Timestamp::now();
    let post =
        |headers: &[&str], body: &[u8]| pki.request(op.api_port, "POST", APPROVALS, headers, body);
    let json_ct = ["content-type: application/json"];
    // The operator names the widening's exact digest when refusing another:
    // that is how an approver who guessed wrong learns it (and `permdrift plan`).
    let (status, text) = post(
        &json_ct,
        &signed(&alice, "alice", &object, &"0".repeat(64), now, 3600),
    );
    assert_eq!(status, 403, "{text}");
    let digest = text
        .rsplit("the widening is ")
        .next()
        .map(|d| d.trim().to_owned())
        .expect("the digest");
    assert_eq!(digest.len(), 64, "{text}");
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{text}");

    let attacks: Vec<(&str, u16, (u16, String))> = vec![
        ("unauthenticated", 401, post(&[], b"")),
        ("malformed", 400, post(&json_ct, b"{\"approval\": 1}")),
        ("oversized", 413, post(&json_ct, &vec![b' '; 64 * 1024])),
        (
            "forged",
            401,
            post(
                &json_ct,
                &signed(&mallory, "alice", &object, &digest, now, 3600),
            ),
        ),
        (
            "unknown-key",
            401,
            post(
                &json_ct,
                &signed(&mallory, "mallory", &object, &digest, now, 3600),
            ),
        ),
        (
            "expired",
            403,
            post(
                &json_ct,
                &signed(
                    &alice,
                    "alice",
                    &object,
                    &digest,
                    now - jiff::SignedDuration::from_hours(3),
                    3600,
                ),
            ),
        ),
        (
            "agent",
            403,
            post(
                &json_ct,
                &signed(&bot, "ci-bot", &object, &digest, now, 3600),
            ),
        ),
        (
            "no-widening",
            404,
            post(
                &json_ct,
                &signed(
                    &alice,
                    "alice",
                    "Role arn:aws:iam::123456789012:role/none",
                    &digest,
                    now,
                    3600,
                ),
            ),
        ),
    ];
    for (label, status, (got, text)) in &attacks {
        assert_eq!(got, status, "{label}: {text}");
    }
    assert_eq!(approved(&op, "acct"), Some(0.0), "nothing refused counted");

    // A critical widening needs two distinct approvers (criticalApprovals).
    let from_alice = signed(&alice, "alice", &object, &digest, now, 3600);
    let (status, text) = post(&json_ct, &from_alice);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("1 of 2 approvals"), "{text}");
    assert_eq!(approved(&op, "acct"), Some(0.0));
    // The same bytes again are a replay, not a second approver.
    let (status, text) = post(&json_ct, &from_alice);
    assert_eq!(status, 409, "{text}");
    let (status, text) = post(&json_ct, &signed(&bob, "bob", &object, &digest, now, 1800));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("approved until"), "{text}");
    assert_eq!(approved(&op, "acct"), Some(1.0));
    assert_eq!(
        op.metric("permdrift_approvals_active{source=\"acct\"}"),
        Some(2.0)
    );

    let records = approval_records(&store);
    let labels: Vec<&str> = records
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    let mut expected = vec!["other-digest"];
    expected.extend(attacks.iter().map(|(l, _, _)| *l));
    expected.extend(["counted", "replayed", "counted"]);
    assert_eq!(labels, expected, "{records:#?}");
    for r in &records {
        assert!(
            r["remote"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{r}"
        );
    }
    let last = records.last().expect("records");
    assert_eq!(last["caller"]["by"], "key");
    assert_eq!(last["caller"]["key_id"], "bob");
    assert_eq!(last["approved"], true);
    assert_eq!(last["approvers"], json!(["alice", "bob"]));
    assert_eq!(last["digest"], digest.as_str());
    let agent = &records[expected.iter().position(|l| *l == "agent").expect("agent")];
    assert_eq!(agent["approver"], "ci-bot");

    let before = op.metrics();
    // After a restart the journal still holds the approvals: the widening
    // stays approved, and the used approval is still a replay.
    op.terminate();
    let op = Operator::start(&dir, "op-restarted", &config);
    op.wait_for("approved after the restart", WAIT, |op| {
        approved(op, "acct") == Some(1.0)
    });
    let (status, text) = pki.request(op.api_port, "POST", APPROVALS, &json_ct, &from_alice);
    assert_eq!(status, 409, "{text}");
    assert_eq!(
        approval_records(&store).last().map(|r| r["reason"].clone()),
        Some(json!("replayed"))
    );

    let page = op.metrics();
    assert_eq!(
        metric_value(
            &page,
            "permdrift_approvals_total{outcome=\"rejected\",reason=\"replayed\",source=\"acct\"}"
        ),
        Some(1.0),
        "the replay after the restart, counted by the new process:\n{page}"
    );
    let page = before;
    for (label, _, _) in attacks
        .iter()
        .filter(|(l, _, _)| !["oversized", "unauthenticated", "malformed"].contains(l))
    {
        assert_eq!(
            metric_value(
                &page,
                &format!(
                    "permdrift_approvals_total{{outcome=\"rejected\",reason=\"{label}\",source=\"acct\"}}"
                )
            ),
            Some(1.0),
            "{label}:\n{page}"
        );
    }
    assert_eq!(
        metric_value(
            &page,
            "permdrift_approvals_total{outcome=\"counted\",reason=\"counted\",source=\"acct\"}"
        ),
        Some(2.0),
        "{page}"
    );
    op.terminate();
}

#[test]
fn kubernetes_users_approve_with_rbac_on_widenings_and_agents_never_do() {
    use support::kube_server::{KubeTestServer, Options};
    let server = KubeTestServer::start_with(Options::default().authorizer_rbac());
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    // Who may approve is ordinary RBAC (the chart's permdrift-approver role).
    let approver = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: approver}\n\
                    rules:\n- {apiGroups: [permdrift.dev], resources: [widenings], verbs: [approve], resourceNames: [kind]}\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], approver);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "approvers",
        "--clusterrole=approver",
        "--user=alice",
        "--user=ci-deployer",
    ]);
    server.add_token("alice-token", "alice", &["ops"], None);
    server.add_token("bob-token", "bob", &["ops"], None);
    server.add_token("ci-token", "ci-deployer", &[], None);

    let dir = scratch("operator-enforce-kube-approvals");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
         approvals: {{agents: [\"ci-*\"], maxExpiry: 24h}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        api = pki.api_config(&format!(
            "  authentication: {{kubernetes: {{kubeconfig: \"{}\"}}}}\n",
            server.kubeconfig.display()
        )),
        kubeconfig = server.kubeconfig.display(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "agent-reads-secrets",
        "--clusterrole=secret-reader",
        "--serviceaccount=default:agent",
    ]);
    op.wait_for("the open widening", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "change")
    });
    let object = "ClusterRoleBinding/agent-reads-secrets";
    let post = |token: &str, digest: &str, valid: u64| {
        let body = json!({"source": "kind", "object": object, "digest": digest,
                          "reason": "INC-7", "validForSeconds": valid})
        .to_string();
        pki.request(
            op.api_port,
            "POST",
            APPROVALS,
            &[
                &format!("authorization: Bearer {token}"),
                "content-type: application/json",
            ],
            body.as_bytes(),
        )
    };
    let (status, text) = post("alice-token", &"0".repeat(64), 3600);
    assert_eq!(status, 403, "{text}");
    let digest = text
        .rsplit("the widening is ")
        .next()
        .map(|d| d.trim().to_owned())
        .expect("the digest");
    assert_eq!(digest.len(), 64, "{text}");

    let refused = [
        ("unauthenticated", 401, post("made-up-token", &digest, 3600)),
        ("forbidden", 403, post("bob-token", &digest, 3600)),
        ("agent", 403, post("ci-token", &digest, 3600)),
        ("too-long", 403, post("alice-token", &digest, 48 * 3600)),
    ];
    for (label, status, (got, text)) in &refused {
        assert_eq!(got, status, "{label}: {text}");
    }
    assert_eq!(approved(&op, "kind"), Some(0.0));

    // alice, through the CLI with her kubeconfig's token, trusting the CA.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args([
            "approve", "--source", "kind", "--object", object, "--digest",
        ])
        .arg(&digest)
        .args(["--for", "2h", "--reason", "INC-7", "--server"])
        .arg(format!("https://127.0.0.1:{}", op.api_port))
        .arg("--ca-cert")
        .arg(&pki.ca)
        .arg("--kubeconfig")
        .arg(server.kubeconfig_for("alice-token"))
        .output()
        .expect("run permdrift");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        approved(&op, "kind"),
        Some(1.0),
        "one approver suffices below critical"
    );

    let records = approval_records(&store);
    let summary: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or_default().to_owned(),
                r["caller"]["username"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("other-digest", "alice"),
        ("unauthenticated", "-"),
        ("forbidden", "bob"),
        ("agent", "ci-deployer"),
        ("too-long", "alice"),
        ("counted", "alice"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(summary, expected, "{records:#?}");
    let counted = records.last().expect("records");
    assert_eq!(counted["approved"], true);
    assert_eq!(counted["approver"], "alice");
    let expires: jiff::Timestamp = counted["expires"]
        .as_str()
        .expect("expires")
        .parse()
        .expect("a time");
    let left = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!(
        (7000..=7200).contains(&left),
        "expires in {left} s, --for 2h"
    );

    // Time-boxed access: a second widening approved for 3 s is unapproved
    // again when that lapses, and the lapse is counted (the alert's metric).
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "short-lived",
        "--clusterrole=secret-reader",
        "--user=carol",
    ]);
    let short = "ClusterRoleBinding/short-lived";
    op.wait_for("the second widening", WAIT, |_| {
        journal(&store)
            .iter()
            .any(|r| r["kind"] == "change" && r["body"]["object"] == short)
    });
    let body = json!({"source": "kind", "object": short, "digest": "0".repeat(64),
                      "reason": "INC-8", "validForSeconds": 3})
    .to_string();
    let send = |body: &str| {
        pki.request(
            op.api_port,
            "POST",
            APPROVALS,
            &[
                "authorization: Bearer alice-token",
                "content-type: application/json",
            ],
            body.as_bytes(),
        )
    };
    let (_, text) = send(&body);
    let short_digest = text
        .rsplit("the widening is ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let body = body.replace(&"0".repeat(64), &short_digest);
    let (status, text) = send(&body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(approved(&op, "kind"), Some(2.0));
    op.wait_for("the approval to lapse", WAIT, |op| {
        approved(op, "kind") == Some(1.0)
    });
    assert_eq!(
        op.metric("permdrift_approvals_expired_total{source=\"kind\"}"),
        Some(1.0)
    );
    op.terminate();
}

#[test]
fn dry_run_journals_the_exact_revert_plan_and_touches_nothing() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    // The bootstrap role a real cluster has (the test server starts empty).
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-dry-run");
    let store = dir.join("store");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    mode: dry-run\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
         revert: {{protected: [\"ClusterRoleBinding/break-glass\"]}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        kubeconfig = server.kubeconfig.display(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    for name in ["intruder", "break-glass"] {
        server.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            name,
            "--clusterrole=cluster-admin",
            "--user=mallory",
        ]);
    }
    let plans = || -> Vec<Value> {
        journal(&store)
            .into_iter()
            .filter(|r| r["kind"] == "revert-plan")
            .map(|r| r["body"].clone())
            .collect()
    };
    op.wait_for("both plans", WAIT, |_| plans().len() == 2);
    let plans = plans();
    let by_object = |o: &str| {
        plans
            .iter()
            .find(|p| p["object"] == o)
            .unwrap_or_else(|| panic!("no plan for {o}: {plans:#?}"))
            .clone()
    };
    let intruder = by_object("ClusterRoleBinding/intruder");
    assert_eq!(intruder["mode"], "dry-run");
    assert_eq!(intruder["outcome"], "revert", "{intruder:#}");
    let live_rv = server.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "intruder",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    // One delete, conditioned on the version judged (which is still live).
    assert_eq!(
        intruder["plan"]["revert"],
        json!([{"key": "ClusterRoleBinding/intruder", "op": "delete",
                "resourceVersion": live_rv.trim()}]),
        "{intruder:#}"
    );
    assert_eq!(intruder["plan"]["severity"], "critical");
    let protected = by_object("ClusterRoleBinding/break-glass");
    assert_eq!(protected["outcome"], "skip");
    assert_eq!(protected["reason"], "protected");
    // Each plan follows its change record, and nothing was reverted.
    let kinds: Vec<String> = journal(&store)
        .iter()
        .filter(|r| r["body"]["object"] == "ClusterRoleBinding/intruder")
        .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["change", "revert-plan"]);
    std::thread::sleep(Duration::from_secs(1));
    for name in ["intruder", "break-glass"] {
        server.kubectl_ok(&["get", "clusterrolebinding", name]);
    }
    op.terminate();
}

#[test]
fn dry_run_on_an_aws_account_journals_the_iam_revert_and_calls_nothing() {
    moto::aws_env();
    let moto = Moto::start(&[]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    rt.block_on(async {
        iam.create_role()
            .role_name("app")
            .assume_role_policy_document(trust)
            .send()
            .await
            .expect("create role");
    });
    let dir = scratch("operator-enforce-dry-run-aws");
    let store = dir.join("store");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    mode: dry-run\n    aws: {{profile: {profile}, endpointUrl: \"{endpoint}\", pollInterval: 1s}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    rt.block_on(async {
        iam.put_role_policy()
            .role_name("app")
            .policy_name("wide")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("widen");
    });
    let plan = || {
        journal(&store)
            .into_iter()
            .find(|r| r["kind"] == "revert-plan")
            .map(|r| r["body"].clone())
    };
    op.wait_for("the plan", WAIT, |_| plan().is_some());
    let plan = plan().expect("a plan");
    assert_eq!(plan["mode"], "dry-run");
    assert_eq!(plan["outcome"], "revert", "{plan:#}");
    // The one IAM call enforce would make: delete the added inline policy.
    assert_eq!(
        plan["plan"]["revert"],
        json!([{"name": "wide", "op": "delete-inline-policy",
                "principal": {"kind": "Role", "name": "app"}}]),
        "{plan:#}"
    );
    // Several polls later the policy is still there: nothing was run.
    std::thread::sleep(Duration::from_secs(3));
    let still = rt.block_on(async {
        iam.get_role_policy()
            .role_name("app")
            .policy_name("wide")
            .send()
            .await
    });
    assert!(still.is_ok(), "{still:?}");
    let plans = journal(&store)
        .iter()
        .filter(|r| r["kind"] == "revert-plan")
        .count();
    assert_eq!(plans, 1, "planned once, when judged");
    op.terminate();
}

/// An enforce-mode operator config for the test server, with `revert` settings.
fn enforce_config(store: &Path, kubeconfig: &Path, revert: &str) -> String {
    format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    mode: enforce\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
         revert: {revert}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        kubeconfig = kubeconfig.display(),
    )
}

/// Polls the API server directly (an independent watcher, not the
/// operator) until `done` holds for the object at `path`; the time it took.
fn watch_until(
    server: &support::kube_server::KubeTestServer,
    path: &str,
    what: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let r = server.request("GET", path, None);
        let body: Value = serde_json::from_str(&r.text()).unwrap_or(Value::Null);
        if done(r.status, &body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {body:#}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The kinds of the journal records about `object`, in order.
fn story(store: &Path, object: &str) -> Vec<String> {
    journal(store)
        .iter()
        .filter(|r| r["body"]["object"] == object)
        .map(|r| {
            let kind = r["kind"].as_str().unwrap_or_default();
            match kind {
                "close" | "revert-result" => {
                    format!(
                        "{kind}:{}",
                        r["body"]["reason"].as_str().unwrap_or_default()
                    )
                }
                _ => kind.to_owned(),
            }
        })
        .collect()
}

const CRB: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
const CR: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";

#[test]
fn enforce_reverts_unapproved_widening_and_leaves_protected_objects() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    let kubectl = |args: &[&str]| server.kubectl_ok(args);
    // The baseline: the bootstrap admin role, a bound reader role, and an
    // aggregated role (bound) that picks up roles by label.
    kubectl(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    kubectl(&[
        "create",
        "clusterrole",
        "reader",
        "--verb=get",
        "--resource=pods",
    ]);
    kubectl(&[
        "create",
        "clusterrolebinding",
        "readers",
        "--clusterrole=reader",
        "--user=bob",
    ]);
    kubectl(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    let aggregated = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "team"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-team": "true"}}]},
        "rules": []});
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &aggregated.to_string());
    assert!(out.status.success(), "{out:?}");
    kubectl(&[
        "create",
        "clusterrolebinding",
        "team",
        "--clusterrole=team",
        "--group=devs",
    ]);

    let dir = scratch("operator-enforce-k8s");
    let store = dir.join("store");
    let config = enforce_config(
        &store,
        &server.kubeconfig,
        "{protected: [\"ClusterRoleBinding/break-glass\"], rateLimit: 100}",
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    op.wait_for("recording", WAIT, |op| op.is_ready());
    let mut windows: Vec<(&str, Duration)> = Vec::new();

    // 1. An unapproved cluster-admin binding is deleted.
    kubectl(&[
        "create",
        "clusterrolebinding",
        "intruder",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    let took = watch_until(
        &server,
        &format!("{CRB}/intruder"),
        "intruder deleted",
        |s, _| s == 404,
    );
    windows.push(("added ClusterRoleBinding deleted", took));

    // 2. A protected object is not touched.
    kubectl(&[
        "create",
        "clusterrolebinding",
        "break-glass",
        "--clusterrole=cluster-admin",
        "--user=oncall",
    ]);

    // 3. A modified ClusterRole comes back to its baseline rules.
    let baseline_rules =
        server.request("GET", &format!("{CR}/reader"), None).json()["rules"].clone();
    kubectl(&[
        "patch",
        "clusterrole",
        "reader",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["secrets"],"verbs":["*"]}}]"#,
    ]);
    let took = watch_until(
        &server,
        &format!("{CR}/reader"),
        "reader restored",
        |s, o| s == 200 && o["rules"] == baseline_rules,
    );
    windows.push(("modified ClusterRole restored", took));

    // 4. An added aggregation label is removed (and the aggregated role
    //    follows, by the test server's aggregation controller).
    kubectl(&[
        "label",
        "clusterrole",
        "secret-reader",
        "example.com/aggregate-to-team=true",
    ]);
    let took = watch_until(
        &server,
        &format!("{CR}/secret-reader"),
        "label removed",
        |s, o| {
            s == 200
                && o["metadata"]["labels"]
                    .get("example.com/aggregate-to-team")
                    .is_none()
        },
    );
    windows.push(("aggregation label removed", took));

    // The journal tells each story, closed as reverted once seen at baseline.
    let reverted = [
        "change",
        "revert-intent",
        "revert-result:reverted",
        "close:reverted",
    ];
    for object in [
        "ClusterRoleBinding/intruder",
        "ClusterRole/reader",
        "ClusterRole/secret-reader",
    ] {
        op.wait_for(&format!("{object} closed"), WAIT, |_| {
            story(&store, object).last().map(String::as_str) == Some("close:reverted")
        });
        assert_eq!(story(&store, object), reverted, "{object}");
    }
    let intent = journal(&store)
        .into_iter()
        .find(|r| {
            r["kind"] == "revert-intent" && r["body"]["object"] == "ClusterRoleBinding/intruder"
        })
        .expect("intent");
    assert_eq!(intent["body"]["ops"][0]["op"], "delete", "{intent:#}");
    // The protected binding: planned as a skip, still there.
    assert_eq!(
        story(&store, "ClusterRoleBinding/break-glass"),
        ["change", "revert-plan"]
    );
    let plan = journal(&store)
        .into_iter()
        .find(|r| r["kind"] == "revert-plan")
        .expect("plan");
    assert_eq!(plan["body"]["mode"], "enforce");
    assert_eq!(plan["body"]["reason"], "protected");
    kubectl(&["get", "clusterrolebinding", "break-glass"]);
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"reverted\",source=\"kind\"}"),
        Some(3.0)
    );
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"failed\",source=\"kind\"}"),
        Some(0.0)
    );
    op.terminate();
    support::operator::assert_store_verifies(&store);
    let mut ms: Vec<f64> = windows.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    for (what, d) in &windows {
        println!("exposure window: {what}: {:.1} ms", d.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "exposure window (write acknowledged to restored, seen by polling the API): p50 {:.1} ms, max {:.1} ms over {} cases",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}

#[test]
fn a_binding_a_writer_keeps_putting_back_stops_being_reverted_and_is_flagged() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-flapping");
    let store = dir.join("store");
    let config = enforce_config(
        &store,
        &server.kubeconfig,
        "{flappingCount: 3, flappingWindow: 10m, rateLimit: 100}",
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("recording", WAIT, |op| op.is_ready());
    // A GitOps-like writer: whenever the binding is missing, create it again,
    // until it has stood for 3 s.
    let start = std::time::Instant::now();
    let mut created = 0;
    let mut present_since: Option<std::time::Instant> = None;
    loop {
        let present = server.request("GET", &format!("{CRB}/tug"), None).status == 200;
        if present {
            let since = *present_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            present_since = None;
            server.kubectl_ok(&[
                "create",
                "clusterrolebinding",
                "tug",
                "--clusterrole=cluster-admin",
                "--user=ci",
            ]);
            created += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the tug-of-war did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three reverts, then the rail: the fourth copy stays.
    assert_eq!(created, 4, "{}", op.log_text());
    let results: Vec<String> = story(&store, "ClusterRoleBinding/tug")
        .into_iter()
        .filter(|k| k.starts_with("revert-result"))
        .collect();
    assert_eq!(
        results,
        [
            "revert-result:reverted",
            "revert-result:reverted",
            "revert-result:reverted",
            "revert-result:flapping"
        ]
    );
    op.wait_for("the flapping gauge", WAIT, |op| {
        op.metric("permdrift_revert_flapping{source=\"kind\"}") == Some(1.0)
    });
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"skipped\",source=\"kind\"}"),
        Some(1.0)
    );
    op.terminate();
    support::operator::assert_store_verifies(&store);
}

#[test]
fn an_approved_widening_is_kept_until_its_approval_lapses_and_then_reverted() {
    use support::kube_server::{KubeTestServer, Options};
    let server = KubeTestServer::start_with(Options::default().authorizer_rbac());
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    let approver = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: approver}\n\
                    rules:\n- {apiGroups: [permdrift.dev], resources: [widenings], verbs: [approve], resourceNames: [kind]}\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], approver);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "approvers",
        "--clusterrole=approver",
        "--user=alice",
    ]);
    server.add_token("alice-token", "alice", &["ops"], None);
    let dir = scratch("operator-enforce-approval-lapses");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let config = |mode: &str| {
        format!(
            "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
             http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
             sources:\n  - name: kind\n    mode: {mode}\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
             logging: {{format: json, level: debug}}\n",
            store = store.display(),
            api = pki.api_config(&format!(
                "  authentication: {{kubernetes: {{kubeconfig: \"{}\"}}}}\n",
                server.kubeconfig.display()
            )),
            kubeconfig = server.kubeconfig.display(),
        )
    };
    // Approved while the source only plans (dry-run), for 20 s.
    let op = Operator::start(&dir, "dry", &config("dry-run"));
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "oncall",
        "--clusterrole=secret-reader",
        "--user=carol",
    ]);
    let object = "ClusterRoleBinding/oncall";
    op.wait_for("the widening", WAIT, |_| {
        journal(&store)
            .iter()
            .any(|r| r["kind"] == "change" && r["body"]["object"] == object)
    });
    let send = |op: &Operator, digest: &str| {
        let body = json!({"source": "kind", "object": object, "digest": digest,
                          "reason": "on-call", "validForSeconds": 20})
        .to_string();
        pki.request(
            op.api_port,
            "POST",
            APPROVALS,
            &[
                "authorization: Bearer alice-token",
                "content-type: application/json",
            ],
            body.as_bytes(),
        )
    };
    let (_, text) = send(&op, &"0".repeat(64));
    let digest = text
        .rsplit("the widening is ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (status, text) = send(&op, &digest);
    assert_eq!(status, 200, "{text}");
    op.terminate();

    // Enforce mode takes over: the approved binding is kept...
    let op = Operator::start(&dir, "enforce", &config("enforce"));
    op.wait_for("the approved plan", WAIT, |_| {
        journal(&store).iter().any(|r| {
            r["kind"] == "revert-plan"
                && r["body"]["mode"] == "enforce"
                && r["body"]["object"] == object
        })
    });
    let plan = journal(&store)
        .into_iter()
        .find(|r| r["kind"] == "revert-plan" && r["body"]["mode"] == "enforce")
        .expect("plan");
    assert_eq!(plan["body"]["reason"], "approved", "{plan:#}");
    assert_eq!(approved(&op, "kind"), Some(1.0));
    server.kubectl_ok(&["get", "clusterrolebinding", "oncall"]);
    assert_eq!(records_of("revert-intent", &store), 0);
    // ...until the approval lapses: then it is reverted.
    watch_until(
        &server,
        &format!("{CRB}/oncall"),
        "the lapsed binding deleted",
        |s, _| s == 404,
    );
    op.wait_for("the close", WAIT, |_| {
        story(&store, object).last().map(String::as_str) == Some("close:reverted")
    });
    let story = story(&store, object);
    let tail = &story[story.len() - 4..];
    assert_eq!(
        tail,
        [
            "revert-plan",
            "revert-intent",
            "revert-result:reverted",
            "close:reverted"
        ],
        "{story:?}"
    );
    assert_eq!(
        op.metric("permdrift_approvals_expired_total{source=\"kind\"}"),
        Some(1.0)
    );
    op.terminate();
    support::operator::assert_store_verifies(&store);
}

fn records_of(kind: &str, store: &Path) -> usize {
    journal(store).iter().filter(|r| r["kind"] == kind).count()
}

#[test]
fn a_revert_the_cluster_forbids_is_journaled_as_failed_and_counted_by_reason() {
    use support::kube_server::{KubeTestServer, Options};
    let server = KubeTestServer::start_with(Options::default().authorizer_rbac());
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    // The operator may read RBAC and write Events, as in detect mode, but
    // not write RBAC: every revert is refused with 403.
    let read_only = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n\
                     rules:\n- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, clusterroles, rolebindings, clusterrolebindings], verbs: [get, list, watch]}\n\
                     - {apiGroups: [\"\"], resources: [serviceaccounts], verbs: [get, list, watch]}\n\
                     - {apiGroups: [\"\", events.k8s.io], resources: [events], verbs: [create, patch]}\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], read_only);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "op-reads",
        "--clusterrole=reader",
        "--user=permdrift-op",
    ]);
    server.add_token("op-token", "permdrift-op", &[], None);
    let dir = scratch("operator-enforce-forbidden");
    let store = dir.join("store");
    let config = enforce_config(&store, &server.kubeconfig_for("op-token"), "{}");
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("recording", WAIT, |op| op.is_ready());
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "intruder",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    let object = "ClusterRoleBinding/intruder";
    op.wait_for("the failed revert", WAIT, |_| {
        story(&store, object)
            .iter()
            .any(|k| k.starts_with("revert-result"))
    });
    assert_eq!(
        story(&store, object),
        ["change", "revert-intent", "revert-result:forbidden"]
    );
    let result = journal(&store)
        .into_iter()
        .find(|r| r["kind"] == "revert-result")
        .expect("result");
    assert_eq!(result["body"]["outcome"], "failed", "{result:#}");
    // A 403 never fixes itself: tried once, not retried.
    assert_eq!(result["body"]["tries"], 1, "{result:#}");
    assert_eq!(
        op.metric("permdrift_revert_failures_total{reason=\"forbidden\",source=\"kind\"}"),
        Some(1.0)
    );
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"failed\",source=\"kind\"}"),
        Some(1.0)
    );
    // The widening stands, still open and alerted.
    server.kubectl_ok(&["get", "clusterrolebinding", "intruder"]);
    assert_eq!(
        op.metric("permdrift_open_widening{severity=\"critical\",source=\"kind\"}"),
        Some(1.0)
    );
    op.terminate();
    support::operator::assert_store_verifies(&store);
}

#[test]
fn throttled_reverts_are_retried_and_a_kill_mid_revert_is_settled_at_restart() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-restart");
    let store = dir.join("store");
    let config = enforce_config(&store, &server.kubeconfig, "{rateLimit: 100}");
    let op = Operator::start(&dir, "first", &config);
    op.wait_for("recording", WAIT, |op| op.is_ready());

    // Two 429s on the delete: retried, then reverted.
    server.control(
        "PUT",
        "/_testserver/faults",
        r#"{"rules": [{"verbs": ["delete"], "resources": ["clusterrolebindings"], "throttle_rate": 1.0, "retry_after_seconds": 0, "times": 2}]}"#,
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "throttled",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    watch_until(
        &server,
        &format!("{CRB}/throttled"),
        "throttled deleted",
        |s, _| s == 404,
    );
    op.wait_for("the result", WAIT, |_| {
        story(&store, "ClusterRoleBinding/throttled")
            .iter()
            .any(|k| k == "revert-result:reverted")
    });
    // Both 429s were answered; the kube client's own retry layer takes them
    // before src/revert/retry.rs would (it sees what outlasts those).
    let faults = server.control("GET", "/_testserver/faults", "");
    assert_eq!(faults["injected"]["throttle"], 2, "{faults:#}");

    // A delete that takes 3 s; the operator is killed while it waits.
    server.control(
        "PUT",
        "/_testserver/faults",
        r#"{"rules": [{"verbs": ["delete"], "resources": ["clusterrolebindings"], "latency_ms": 3000}]}"#,
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "cut-short",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    let object = "ClusterRoleBinding/cut-short";
    op.wait_for("the intent", WAIT, |_| {
        story(&store, object).iter().any(|k| k == "revert-intent")
    });
    op.kill();
    assert_eq!(story(&store, object), ["change", "revert-intent"]);
    server.control("DELETE", "/_testserver/faults", "");

    // The next leader settles the intent from the live state, once, and
    // the binding ends up deleted either way.
    let op = Operator::start(&dir, "second", &config);
    op.wait_for("the settled intent", WAIT, |_| {
        story(&store, object)
            .iter()
            .any(|k| k.starts_with("revert-result"))
    });
    watch_until(
        &server,
        &format!("{CRB}/cut-short"),
        "cut-short deleted",
        |s, _| s == 404,
    );
    let results: Vec<Value> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "revert-result" && r["body"]["object"] == object)
        .map(|r| r["body"].clone())
        .collect();
    let first = &results[0];
    let intent_seq = first["intent"].as_u64().expect("settles an intent");
    match first["reason"].as_str() {
        // The delete landed before the kill: nothing runs again.
        Some("already-restored") => assert_eq!(results.len(), 1, "{results:#?}"),
        // It did not: planned afresh from the live state and run once.
        Some("interrupted") => {
            op.wait_for("the fresh revert", WAIT, |_| {
                story(&store, object)
                    .iter()
                    .any(|k| k == "revert-result:reverted")
            });
        }
        other => panic!("unexpected settlement {other:?}: {results:#?}"),
    }
    println!("intent {intent_seq} settled as {}", first["reason"]);
    op.terminate();
    support::operator::assert_store_verifies(&store);
}

#[test]
fn a_revert_the_rate_limit_holds_back_runs_when_the_window_allows() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-rate-limit");
    let store = dir.join("store");
    let config = enforce_config(&store, &server.kubeconfig, "{rateLimit: 1, rateWindow: 3s}");
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("recording", WAIT, |op| op.is_ready());
    for name in ["first", "second"] {
        server.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            name,
            "--clusterrole=cluster-admin",
            "--user=mallory",
        ]);
    }
    let start = std::time::Instant::now();
    for name in ["first", "second"] {
        watch_until(&server, &format!("{CRB}/{name}"), name, |s, _| s == 404);
    }
    // The second waited for the window: held back once, then reverted.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    op.wait_for("the second closed", WAIT, |_| {
        story(&store, "ClusterRoleBinding/second")
            .last()
            .map(String::as_str)
            == Some("close:reverted")
    });
    assert_eq!(
        story(&store, "ClusterRoleBinding/second"),
        [
            "change",
            "revert-result:rate-limited",
            "revert-intent",
            "revert-result:reverted",
            "close:reverted"
        ]
    );
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"skipped\",source=\"kind\"}"),
        Some(1.0)
    );
    op.terminate();
}

#[test]
fn only_the_leader_reverts() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-leader");
    let store = dir.join("store");
    let le = format!(
        "{{enabled: true, namespace: default, leaseName: permdrift, leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 500ms, kubernetes: {{kubeconfig: \"{}\"}}}}",
        server.kubeconfig.display()
    );
    let config = enforce_config(&store, &server.kubeconfig, "{}").replace(
        "leaderElection: {enabled: false}",
        &format!("leaderElection: {le}"),
    );
    let a = Operator::start(&dir, "replica-a", &config);
    a.wait_for("replica-a to record", WAIT, |op| {
        op.metric("permdrift_recording") == Some(1.0)
    });
    let b = Operator::start(&dir, "replica-b", &config);
    b.wait_for("replica-b to sync", WAIT, Operator::is_ready);
    assert_eq!(b.metric("permdrift_recording"), Some(0.0));
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "intruder",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    watch_until(
        &server,
        &format!("{CRB}/intruder"),
        "intruder deleted",
        |s, _| s == 404,
    );
    a.wait_for("the close", WAIT, |_| {
        story(&store, "ClusterRoleBinding/intruder")
            .last()
            .map(String::as_str)
            == Some("close:reverted")
    });
    // The follower saw the same events and reverted nothing.
    std::thread::sleep(Duration::from_secs(1));
    let reverted = "permdrift_reverts_total{outcome=\"reverted\",source=\"kind\"}";
    assert_eq!(a.metric(reverted), Some(1.0));
    assert_eq!(b.metric(reverted), Some(0.0));
    assert_eq!(
        story(&store, "ClusterRoleBinding/intruder"),
        [
            "change",
            "revert-intent",
            "revert-result:reverted",
            "close:reverted"
        ]
    );
    b.terminate();
    a.terminate();
    support::operator::assert_store_verifies(&store);
}

#[test]
fn an_object_written_again_mid_revert_is_planned_afresh_not_failed() {
    use support::kube_server::KubeTestServer;
    let server = KubeTestServer::start();
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    let dir = scratch("operator-enforce-conflict");
    let store = dir.join("store");
    let config = enforce_config(&store, &server.kubeconfig, "{rateLimit: 100}");
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("recording", WAIT, |op| op.is_ready());
    // Deletes take 1.5 s; meanwhile the binding is edited, so the delete's
    // resourceVersion precondition no longer holds (409).
    server.control(
        "PUT",
        "/_testserver/faults",
        r#"{"rules": [{"verbs": ["delete"], "resources": ["clusterrolebindings"], "latency_ms": 1500}]}"#,
    );
    server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "moving",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    let object = "ClusterRoleBinding/moving";
    op.wait_for("the intent", WAIT, |_| {
        story(&store, object).iter().any(|k| k == "revert-intent")
    });
    server.kubectl_ok(&["label", "clusterrolebinding", "moving", "edited=yes"]);
    watch_until(
        &server,
        &format!("{CRB}/moving"),
        "moving deleted",
        |s, _| s == 404,
    );
    op.wait_for("the close", WAIT, |_| {
        story(&store, object).last().map(String::as_str) == Some("close:reverted")
    });
    assert_eq!(
        story(&store, object),
        [
            "change",
            "revert-intent",
            "revert-result:conflict",
            "revert-intent",
            "revert-result:reverted",
            "close:reverted"
        ]
    );
    let intents: Vec<Value> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "revert-intent")
        .map(|r| r["body"]["resource_version"].clone())
        .collect();
    assert!(intents[0].is_string(), "{intents:?}");
    assert_ne!(
        intents[0], intents[1],
        "the second delete is conditioned on the edited version"
    );
    // Not a failure: PermdriftRevertFailed stays silent.
    assert_eq!(
        op.metric("permdrift_revert_failures_total{reason=\"conflict\",source=\"kind\"}"),
        Some(0.0)
    );
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"failed\",source=\"kind\"}"),
        Some(0.0)
    );
    op.terminate();
}
