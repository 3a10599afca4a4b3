//! The operator's write path as an attacker sees it: a real `permdrift run`
//! process, its TLS API and its plain port, attacked with raw requests.
//! Every refusal must leave the open widening open, be counted, and be
//! journaled with who asked (if anyone was authenticated) and from where.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use permdrift::signature::{Action, SecretKey, Signed, Statement};
use serde_json::{Value, json};
use support::api::TestPki;
use support::moto::{self, Moto};
use support::operator::{Operator, journal, metric_value, scratch};

const WAIT: Duration = Duration::from_secs(30);

fn api_requests(store: &Path) -> Vec<Value> {
    journal(store)
        .into_iter()
        .filter(|r| r["kind"] == "api-request")
        .map(|r| r["body"].clone())
        .collect()
}

fn open_widenings(op: &Operator) -> f64 {
    op.metrics()
        .lines()
        .filter(|l| l.starts_with("permdrift_open_widening{") && l.contains("source=\"acct\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn statement(key_id: &str, issued: jiff::Timestamp, lifetime_s: i64, nonce: &str) -> Statement {
    Statement {
        action: Action::BaselineAccept,
        source: Some("acct".into()),
        key_id: key_id.into(),
        issued_at: issued,
        expires_at: issued + jiff::SignedDuration::from_secs(lifetime_s),
        nonce: nonce.into(),
    }
}

fn body(signed: &Signed) -> Vec<u8> {
    serde_json::to_vec(signed).expect("json")
}

const ACCEPT: &str = "/api/v1/baseline/accept?source=acct";

#[test]
fn the_write_api_refuses_and_journals_every_request_without_a_valid_signature() {
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
    let dir = scratch("operator-api-signed");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let alice = SecretKey::from_seed([1; 32]);
    let mallory = SecretKey::from_seed([2; 32]);
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    aws: {{profile: {profile}, endpointUrl: \"{endpoint}\", pollInterval: 1s}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        api = pki.api_config(&format!(
            "  authentication: {{tokenReview: \"off\", keys: [{{id: alice, publicKey: \"{}\"}}]}}\n  limits: {{maxBodyBytes: 4096}}\n",
            alice.public().to_base64()
        )),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
    );
    let op = Operator::start(&dir, "op", &config);
    assert_ne!(op.api_port, 0);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    rt.block_on(async {
        iam.put_role_policy()
            .role_name("app")
            .policy_name("wide")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("widen");
    });
    op.wait_for("the open widening", WAIT, |op| open_widenings(op) == 1.0);

    // The plain port (the one Prometheus scrapes) has no write endpoint at all.
    let plain = support::kube_server::http_request(op.port, "POST", ACCEPT, &[], None);
    assert_eq!(plain.status, 404, "{}", plain.text());

    let now = jiff::Timestamp::now();
    let post =
        |headers: &[&str], body: &[u8]| pki.request(op.api_port, "POST", ACCEPT, headers, body);
    let json_ct = ["content-type: application/json"];
    let attacks: Vec<(&str, u16, (u16, String))> = vec![
        ("unauthenticated", 401, post(&[], b"")),
        // What a web page can send cross-origin without a preflight.
        (
            "malformed",
            400,
            post(&["content-type: text/plain"], b"accept=all"),
        ),
        (
            "forged",
            401,
            post(
                &json_ct,
                &body(&mallory.sign(statement("alice", now, 60, "forged-nonce-0001"))),
            ),
        ),
        (
            "unknown-key",
            401,
            post(
                &json_ct,
                &body(&mallory.sign(statement("mallory", now, 60, "unknown-nonce-001"))),
            ),
        ),
        (
            "expired",
            401,
            post(
                &json_ct,
                &body(&alice.sign(statement(
                    "alice",
                    now - jiff::SignedDuration::from_secs(600),
                    300,
                    "expired-nonce-001",
                ))),
            ),
        ),
        ("oversized", 413, post(&json_ct, &vec![b' '; 64 * 1024])),
        (
            "no-authenticator",
            401,
            post(&["authorization: Bearer some-stolen-token"], b""),
        ),
    ];
    for (reason, status, (got, text)) in &attacks {
        assert_eq!(got, status, "{reason}: {text}");
    }
    assert_eq!(
        open_widenings(&op),
        1.0,
        "no refused request accepted anything"
    );

    // A good statement works once; the same bytes again are a replay.
    let good = body(&alice.sign(statement("alice", now, 120, "good-nonce-00001")));
    let (status, text) = post(&json_ct, &good);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("accepted 1"), "{text}");
    assert_eq!(open_widenings(&op), 0.0);
    let (status, text) = post(&json_ct, &good);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("already used"), "{text}");

    let page = op.metrics();
    for (reason, _, _) in &attacks {
        let action = "baseline-accept";
        assert_eq!(
            metric_value(
                &page,
                &format!(
                    "permdrift_api_requests_total{{action=\"{action}\",outcome=\"refused\",reason=\"{reason}\"}}"
                )
            ),
            Some(1.0),
            "{reason} counted:\n{page}"
        );
    }
    // Nor after a restart: the journal remembers which statements were used.
    op.terminate();
    let op = Operator::start(&dir, "op-restarted", &config);
    op.wait_for("recording after the restart", WAIT, |op| {
        op.metric("permdrift_recording") == Some(1.0)
    });
    let (status, text) = pki.request(op.api_port, "POST", ACCEPT, &json_ct, &good);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("already used"), "{text}");
    // Every request is in the journal, refusals with their reason and peer.
    let records = api_requests(&store);
    let mut expected: Vec<&str> = attacks.iter().map(|(r, _, _)| *r).collect();
    expected.push("accepted");
    expected.push("replayed");
    expected.push("replayed");
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, expected, "{records:#?}");
    for r in &records {
        assert!(
            r["remote"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{r}"
        );
    }
    let accepted = &records[attacks.len()];
    assert_eq!(accepted["outcome"], "accepted");
    assert_eq!(accepted["caller"]["by"], "key");
    assert_eq!(accepted["caller"]["key_id"], "alice");
    assert_eq!(accepted["accepted"], 1);
    op.terminate();
}

/// Opens `n` TCP connections to `port` and keeps them idle.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("open an idle connection"))
        .collect()
}

fn healthz_takes(port: u16) -> Duration {
    let started = Instant::now();
    let r = support::kube_server::http_request(port, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    started.elapsed()
}

/// An operator whose one source is never reachable: these tests are about
/// its listeners.
fn listener_operator(dir: &Path, name: &str, http_limits: &str, api_limits: &str) -> Operator {
    moto::aws_env();
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{}\"}}\n\
         http: {{listen: \"127.0.0.1:0\", limits: {http_limits}}}\n\
         api: {{listen: \"127.0.0.1:0\", limits: {api_limits}}}\n\
         leaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    aws: {{profile: {}, endpointUrl: \"http://127.0.0.1:9\", pollInterval: 60s}}\n\
         logging: {{format: json, level: info}}\n",
        dir.join(name).display(),
        moto::PROFILE
    );
    Operator::start(dir, name, &config)
}

fn connections(op: &Operator, listener: &str) -> f64 {
    op.metric(&format!(
        "permdrift_http_connections{{listener=\"{listener}\"}}"
    ))
    .unwrap_or(f64::NAN)
}

#[test]
fn slow_clients_are_cut_off_and_a_full_listener_turns_new_ones_away() {
    let dir = scratch("operator-api-slow");
    let op = listener_operator(
        &dir,
        "op",
        "{headerTimeout: 2s}",
        "{headerTimeout: 2s, maxConnections: 3}",
    );
    // A client that trickles its headers one byte at a time is cut off.
    let mut slow = TcpStream::connect(("127.0.0.1", op.port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut buf = [0u8; 256];
    // Closed (0 bytes or a reset), or a 408 and then closed.
    let answer = match slow.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a trickling client held its connection for {:?} ({answer})",
        started.elapsed()
    );
    assert!(!answer.contains(" 200 "), "{answer}");
    // Idle connections are closed after the header timeout too.
    let idle = idle_connections(op.port, 100);
    op.wait_for("idle connections counted", WAIT, |op| {
        connections(op, "http") >= 100.0
    });
    op.wait_for("idle connections closed", WAIT, |op| {
        connections(op, "http") <= 2.0
    });
    drop(idle);

    // Beyond the API's connection limit, connections are closed on arrival.
    let held = idle_connections(op.api_port, 10);
    op.wait_for("refused API connections counted", WAIT, |op| {
        op.metric(r#"permdrift_http_connections_refused_total{listener="api"}"#)
            .unwrap_or(0.0)
            >= 7.0
    });
    drop(held);
    assert!(healthz_takes(op.port) < Duration::from_secs(1));
    op.terminate();
}

#[test]
fn ten_thousand_idle_connections_do_not_starve_the_probes() {
    let dir = scratch("operator-api-idle");
    let op = listener_operator(
        &dir,
        "op",
        "{headerTimeout: 300s, maxConnections: 12000}",
        "{}",
    );
    let idle = idle_connections(op.port, 10_000);
    op.wait_for("10,000 connections held", Duration::from_secs(120), |op| {
        connections(op, "http") >= 10_000.0
    });
    for _ in 0..5 {
        let took = healthz_takes(op.port);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    drop(idle);
    op.wait_for("closed connections let go", WAIT, |op| {
        connections(op, "http") <= 2.0
    });
    op.terminate();
}

#[test]
fn kubernetes_callers_need_a_valid_token_and_rbac_for_the_source() {
    use support::kube_server::{KubeTestServer, Options};
    let server = KubeTestServer::start_with(Options::default().authorizer_rbac());
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    // Who may accept is ordinary RBAC: alice may, for this source only.
    let acceptor = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: baseline-acceptor}\n\
                    rules:\n- {apiGroups: [permdrift.dev], resources: [baselines], verbs: [accept], resourceNames: [kind]}\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], acceptor);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for user in ["alice", "carol"] {
        server.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            &format!("{user}-accepts"),
            "--clusterrole=baseline-acceptor",
            &format!("--user={user}"),
        ]);
    }
    server.add_token("alice-token", "alice", &["ops"], None);
    server.add_token("bob-token", "bob", &["ops"], None);
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3)).to_string();
    server.add_token("carol-token", "carol", &[], Some(&soon));

    let dir = scratch("operator-api-kube");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
         sources:\n  - name: kind\n    kubernetes: {{kubeconfig: \"{kubeconfig}\"}}\n\
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
    let open = |op: &Operator| {
        op.metrics()
            .lines()
            .filter(|l| l.starts_with("permdrift_open_widening{") && l.contains("source=\"kind\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    op.wait_for("the open widening", WAIT, |op| open(op) == 1.0);

    let path = "/api/v1/baseline/accept?source=kind";
    let bearer = |token: &str| {
        pki.request(
            op.api_port,
            "POST",
            path,
            &[&format!("authorization: Bearer {token}")],
            b"",
        )
    };
    // Someone who is not bound may not, however valid the token.
    let (status, text) = bearer("bob-token");
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("may not accept") && text.contains("kubernetes:bob"),
        "{text}"
    );
    // A token the cluster does not know (forged, or stolen and revoked).
    let (status, text) = bearer("made-up-token");
    assert_eq!(status, 401, "{text}");
    server.add_token("revoked-token", "alice", &[], None);
    server.delete_token("revoked-token");
    assert_eq!(bearer("revoked-token").0, 401);
    // An expired token, though its user is bound.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(bearer("carol-token").0, 401);
    assert_eq!(open(&op), 1.0, "nothing refused was accepted");

    // alice, through the CLI with her kubeconfig's token, trusting the CA.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(["baseline", "accept", "--source", "kind", "--server"])
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
    assert_eq!(open(&op), 0.0);

    let records = api_requests(&store);
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
        ("forbidden", "bob"),
        ("unauthenticated", "-"),
        ("unauthenticated", "-"),
        ("unauthenticated", "-"),
        ("accepted", "alice"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(summary, expected, "{records:#?}");
    let by: Vec<Value> = journal(&store)
        .into_iter()
        .filter(|r| r["kind"] == "baseline-patch" && r["body"]["reason"] == "accepted")
        .map(|r| r["body"]["by"].clone())
        .collect();
    assert_eq!(by, [json!("kubernetes:alice")]);
    op.terminate();
}
