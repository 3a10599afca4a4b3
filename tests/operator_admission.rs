//! The operator as the cluster's admission webhook: a real `permdrift run`
//! process serves `POST /api/v1/admission/SOURCE` over TLS, the Kubernetes
//! API test server calls it (a ValidatingWebhookConfiguration with the
//! operator's CA as caBundle, failurePolicy Ignore), and the real kubectl
//! writes: denied in enforce mode with the witness and the approve command,
//! warned in detect mode, a reordered Role let through, the aggregation
//! controller never blocked, writes through with the operator stopped, and
//! callers other than the API server refused (malformed, oversized,
//! unknown source) and journaled.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::api::TestPki;
use support::kube_server::KubeTestServer;
use support::operator::{Operator, journal, metric_value, scratch};

const WAIT: Duration = Duration::from_secs(30);

/// A ValidatingWebhookConfiguration for the RBAC kinds, pointing at `url`.
fn webhook_config(url: &str, ca_pem: &[u8]) -> String {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "permdrift"},
        "webhooks": [{
            "name": "rbac.permdrift.dev",
            "clientConfig": {"url": url,
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)},
            "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"],
                       "apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"],
                       "resources": ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        }]
    })
    .to_string()
}

fn admissions(store: &Path) -> Vec<Value> {
    journal(store)
        .into_iter()
        .filter(|r| r["kind"] == "admission")
        .map(|r| json!({"source": r["source"], "body": r["body"]}))
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn reviews(op: &Operator, source: &str, decision: &str) -> f64 {
    metric_value(
        &op.metrics(),
        &format!(
            "permdrift_admission_reviews_total{{decision=\"{decision}\",source=\"{source}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[test]
fn the_operator_gates_rbac_writes_that_kubectl_sends() {
    let kts = KubeTestServer::start();
    for args in [
        &[
            "create",
            "clusterrole",
            "cluster-admin",
            "--verb=*",
            "--resource=*.*",
        ][..],
        &[
            "create",
            "clusterrole",
            "view",
            "--verb=get,list",
            "--resource=pods",
        ],
        &[
            "create",
            "clusterrolebinding",
            "eng-view",
            "--clusterrole=view",
            "--group=engineering",
        ],
        &[
            "create",
            "clusterrolebinding",
            "contractors-view",
            "--clusterrole=view",
            "--group=contractors",
        ],
    ] {
        kts.kubectl_ok(args);
    }
    let pod_reader = |verbs: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "pod-reader", "namespace": "default"},
               "rules": [{"apiGroups": [""], "resources": ["pods", "configmaps"],
                          "verbs": serde_json::from_str::<Value>(verbs).unwrap()}]})
        .to_string()
    };
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], &pod_reader(r#"["get", "list"]"#));
    assert!(out.status.success(), "{}", stderr(&out));

    let dir = scratch("operator-admission");
    let store = dir.join("store");
    let pki = TestPki::create(&dir);
    // Two sources on the same cluster: `gate` enforces, `watch` detects.
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n{api}leaderElection: {{enabled: false}}\n\
         sources:\n\
         \x20 - name: gate\n    kubernetes: {{kubeconfig: \"{kc}\"}}\n\
         \x20   admission: {{mode: enforce, minSeverity: high, exempt: [{{group: \"release-bots\"}}]}}\n\
         \x20 - name: watch\n    kubernetes: {{kubeconfig: \"{kc}\"}}\n\
         \x20   admission: {{mode: detect}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        api = pki.api_config("  authentication: {tokenReview: off}\n"),
        kc = kts.kubeconfig.display(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("both sources recording", WAIT, |op| {
        op.is_ready() && {
            let page = op.metrics();
            ["gate", "watch"].iter().all(|s| {
                metric_value(
                    &page,
                    &format!("permdrift_source_recording{{source=\"{s}\"}}"),
                ) == Some(1.0)
            })
        }
    });
    let ca = std::fs::read(&pki.ca).unwrap();
    let url = |source: &str| {
        format!(
            "https://127.0.0.1:{}/api/v1/admission/{source}",
            op.api_port
        )
    };
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], &webhook_config(&url("gate"), &ca));
    assert!(out.status.success(), "{}", stderr(&out));

    // Enforce: an unapproved cluster-admin binding for a new group is denied,
    // with the risk tags, the witness and the command that approves it.
    let create = [
        "create",
        "clusterrolebinding",
        "eng-admin",
        "--clusterrole=cluster-admin",
        "--group=engineering",
    ];
    let started = std::time::Instant::now();
    let out = kts.kubectl(&create);
    let denied_in = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("admission webhook \"rbac.permdrift.dev\" denied the request: permdrift: unapproved critical widening of ClusterRoleBinding/eng-admin (risks: cluster-admin"),
        "{err}"
    );
    assert!(err.contains("Group:engineering can now"), "{err}");
    assert!(
        err.contains("To approve this exact content: permdrift approve --source gate --manifest clusterrolebinding-eng-admin.yaml (sha256:"),
        "{err}"
    );
    assert!(stderr(&kts.kubectl(&["get", "clusterrolebinding", "eng-admin"])).contains("NotFound"));
    let records = admissions(&store);
    let denial = records
        .iter()
        .find(|r| r["body"]["outcome"] == "denied")
        .unwrap_or_else(|| panic!("no denial journaled: {records:?}"));
    assert_eq!(denial["source"], "gate");
    let body = &denial["body"];
    assert_eq!(body["object"], "ClusterRoleBinding/eng-admin");
    assert_eq!(body["allowed"], false);
    assert_eq!(body["mode"], "enforce");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["operation"], "CREATE");
    assert_eq!(body["actor"]["username"], "tester", "{body}");
    assert!(
        body["risks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "cluster-admin"),
        "{body}"
    );
    assert!(
        body["witness"]
            .as_str()
            .unwrap()
            .contains("Group:engineering can now"),
        "{body}"
    );
    assert!(
        err.contains(body["digest"].as_str().unwrap()),
        "{err}\n{body}"
    );
    assert_eq!(reviews(&op, "gate", "denied"), 1.0);
    // `permdrift history` reads the record back like any other.
    let out = support::operator::permdrift(&[
        "history",
        "--store",
        &store.display().to_string(),
        "list",
        "--kind",
        "admission",
    ]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.lines().any(|l| l.contains("admission")
            && l.contains("object=ClusterRoleBinding/eng-admin")
            && l.contains("severity=critical")),
        "{listed}"
    );

    // A reordered Role widens nothing: allowed, counted, not journaled.
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], &pod_reader(r#"["list", "get"]"#));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));
    assert_eq!(reviews(&op, "gate", "not-widening"), 1.0);

    // The aggregation controller widening a bound role (contractors could
    // then read secrets) is let through; anyone else is not.
    let widen = r#"[{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}}]"#;
    let out = kts.kubectl(&["patch", "clusterrole", "view", "--type=json", "-p", widen]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Group:contractors can now get secrets"),
        "{}",
        stderr(&out)
    );
    kts.kubectl_ok(&[
        "--as=system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        "patch",
        "clusterrole",
        "view",
        "--type=json",
        "-p",
        widen,
    ]);
    assert!(
        kts.kubectl_ok(&["get", "clusterrole", "view", "-o", "json"])
            .contains("secrets")
    );
    // Once the watch has applied that write, the gate judges against it:
    // the same rule again grants nothing new (a gate still judging against
    // the old role would deny it).
    op.wait_for("the watch to apply the widened view", WAIT, |_| {
        journal(&store).iter().any(|r| {
            r["kind"] == "change"
                && r["source"] == "gate"
                && r["body"]["object"] == "ClusterRole/view"
        })
    });
    let out = kts.kubectl(&["patch", "clusterrole", "view", "--type=json", "-p", widen]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reviews(&op, "gate", "not-widening"), 2.0);
    // So is a configured exemption (a group).
    kts.kubectl_ok(&[
        "--as=release-bot",
        "--as-group=release-bots",
        "--as-group=system:authenticated",
        "create",
        "clusterrolebinding",
        "bots-admin",
        "--clusterrole=cluster-admin",
        "--group=bots",
    ]);
    assert_eq!(reviews(&op, "gate", "exempt"), 2.0);

    // Detect: the same kind of write is allowed, with a warning kubectl prints.
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], &webhook_config(&url("watch"), &ca));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kts.kubectl(&create);
    assert!(out.status.success(), "{}", stderr(&out));
    let warn = stderr(&out);
    assert!(
        warn.contains(
            "Warning: permdrift: unapproved critical widening of ClusterRoleBinding/eng-admin"
        ) && warn.contains("Group:engineering can now")
            && warn.contains("Approve: permdrift approve --source watch"),
        "{warn}"
    );
    let warned = admissions(&store)
        .into_iter()
        .find(|r| r["body"]["outcome"] == "warned")
        .unwrap();
    assert_eq!(warned["source"], "watch");
    assert_eq!(warned["body"]["allowed"], true);
    assert_eq!(warned["body"]["mode"], "detect");
    assert_eq!(reviews(&op, "watch", "warned"), 1.0);

    // Callers other than the API server: each refused, counted and journaled.
    let post = |path: &str, body: &[u8]| {
        pki.request(
            op.api_port,
            "POST",
            path,
            &["content-type: application/json"],
            body,
        )
    };
    let (status, text) = post("/api/v1/admission/gate", b"{\"kind\": \"AdmissionReview\"}");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("AdmissionReview"), "{text}");
    let forged = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": "ClusterRoleBinding"},
                    "resource": {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterrolebindings"},
                    "operation": "CREATE", "userInfo": {"username": "mallory"}}});
    let (status, text) = post("/api/v1/admission/gate", forged.to_string().as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("v1beta1"), "{text}");
    let (status, _) = post("/api/v1/admission/nosuch", b"{}");
    assert_eq!(status, 404);
    let huge = vec![b' '; permdrift::operator::admission::MAX_REVIEW_BYTES + 1];
    let (status, _) = post("/api/v1/admission/gate", &huge);
    assert_eq!(status, 413);
    // The rest of the API is as it was: an unknown path is still refused
    // and journaled by the API's own layer.
    let (status, _) = post("/api/v1/admission", b"{}");
    assert_eq!(status, 404);
    assert!(
        journal(&store)
            .iter()
            .any(|r| r["kind"] == "api-request" && r["body"]["reason"] == "not-found"),
        "an unknown path is journaled as an api-request"
    );
    let refused: Vec<String> = admissions(&store)
        .iter()
        .filter(|r| r["body"]["allowed"] == false && r["body"]["outcome"] != "denied")
        .map(|r| r["body"]["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        refused,
        ["malformed", "malformed", "unknown-source", "oversized"]
    );
    assert_eq!(reviews(&op, "gate", "malformed"), 2.0);

    let p = metric_value(
        &op.metrics(),
        "permdrift_admission_review_duration_seconds_count{source=\"gate\"}",
    );
    assert!(p.unwrap_or(0.0) >= 5.0, "{p:?}");
    let sum = metric_value(
        &op.metrics(),
        "permdrift_admission_review_duration_seconds_sum{source=\"gate\"}",
    )
    .unwrap_or(0.0);
    eprintln!(
        "kubectl create denied at admission in {denied_in:?}; {} reviews of `gate`, {:.2} ms each on average in the operator",
        p.unwrap_or(0.0),
        1000.0 * sum / p.unwrap_or(1.0)
    );

    // The operator stopped: failurePolicy Ignore lets writes through, and
    // the API server's fail-open counter (what the alert watches) moves.
    op.terminate();
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "ops-admin",
        "--clusterrole=cluster-admin",
        "--group=ops",
    ]);
    let metrics = kts.request("GET", "/metrics", None).text();
    assert!(
        metrics.lines().any(|l| l
            == "apiserver_admission_webhook_fail_open_count{name=\"rbac.permdrift.dev\",type=\"validating\"} 1"),
        "{metrics}"
    );
}
