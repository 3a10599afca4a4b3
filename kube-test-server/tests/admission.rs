//! Validating admission webhooks (src/admission.rs): the server calls a
//! real HTTPS webhook (served here with the crate's own TLS certificate)
//! for the writes its ValidatingWebhookConfiguration matches, and the real
//! kubectl sees the denials, the warnings and the failures.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use hyper_util::rt::TokioIo;
use kube_test_server::harness::{KubeTestServer, Options};
use serde_json::{Value, json};

type Handler = dyn Fn(&Value) -> (Value, Duration) + Send + Sync;

/// An HTTPS admission webhook on 127.0.0.1: every AdmissionReview it
/// receives is kept; `answer` gives the response (allowed, status,
/// warnings) and how long to wait before sending it.
struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Webhook {
    fn start(answer: impl Fn(&Value) -> (Value, Duration) + Send + Sync + 'static) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Handler> = Arc::new(answer);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = kube_test_server::tls_acceptor().unwrap();
        let seen = received.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, seen, answer) = (tls.clone(), seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, answer) = (seen.clone(), answer.clone());
                            async move {
                                let body =
                                    axum::body::to_bytes(Body::new(req.into_body()), 1 << 24)
                                        .await
                                        .unwrap();
                                let review: Value = serde_json::from_slice(&body).unwrap();
                                seen.lock().unwrap().push(review.clone());
                                let (mut response, delay) = answer(&review);
                                tokio::time::sleep(delay).await;
                                response["uid"] = review["request"]["uid"].clone();
                                let out = json!({"apiVersion": "admission.k8s.io/v1",
                                "kind": "AdmissionReview", "response": response});
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Body::from(serde_json::to_vec(&out).unwrap()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Webhook {
            port,
            received,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn reviews(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

fn ca_bundle() -> String {
    base64::engine::general_purpose::STANDARD.encode(kube_test_server::CA_PEM)
}

/// A configuration with one webhook `name` at `client_config`, for RBAC
/// bindings (all operations) unless `rules` says otherwise; `extra` is
/// merged into the webhook.
fn vwc(name: &str, client_config: Value, extra: Value) -> String {
    let mut hook = json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"],
                   "apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"],
                   "resources": ["clusterrolebindings", "rolebindings"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
    });
    for (k, v) in extra.as_object().unwrap() {
        hook[k] = v.clone();
    }
    serde_json::to_string(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": format!("cfg-{name}")},
        "webhooks": [hook],
    }))
    .unwrap()
}

fn install(kts: &KubeTestServer, config: &str) {
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn url_config(w: &Webhook) -> Value {
    json!({"url": w.url("/validate"), "caBundle": ca_bundle()})
}

fn deny_bindings_to(group: &'static str) -> impl Fn(&Value) -> (Value, Duration) {
    move |review| {
        let subjects = &review["request"]["object"]["subjects"];
        let hit = subjects
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == group));
        let response = if hit {
            json!({"allowed": false, "status": {"code": 403, "message": format!("bindings to {group} need approval")}})
        } else {
            json!({"allowed": true})
        };
        (response, Duration::ZERO)
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A metric sample's value from the server's /metrics, 0 when absent.
fn metric(kts: &KubeTestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = kts.request("GET", "/metrics", None).text();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_denial_reaches_kubectl_with_the_webhooks_message_and_nothing_is_stored() {
    let hook = Webhook::start(deny_bindings_to("engineering"));
    let kts = KubeTestServer::start();
    install(&kts, &vwc("gate.example.com", url_config(&hook), json!({})));

    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "eng-admin",
        "--clusterrole=cluster-admin",
        "--group=engineering",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    // kubectl's typed generators word the failure themselves ...
    assert!(
        err.contains("failed to create clusterrolebinding: admission webhook \"gate.example.com\" denied the request: bindings to engineering need approval"),
        "{err}"
    );
    // ... `create -f` shows the API server's status as it came.
    let manifest = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "eng-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "engineering", "apiGroup": "rbac.authorization.k8s.io"}]});
    let out = kts.kubectl_stdin(&["create", "-f", "-"], &manifest.to_string());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"gate.example.com\" denied the request: bindings to engineering need approval"),
        "{err}"
    );
    let get = kts.kubectl(&["get", "clusterrolebinding", "eng-admin"]);
    assert!(stderr(&get).contains("NotFound"), "{}", stderr(&get));

    // The review kube-apiserver would have sent.
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 2);
    let r = &reviews[0];
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    let q = &r["request"];
    assert_eq!(q["uid"].as_str().unwrap().len(), 36);
    assert_eq!(
        q["kind"],
        json!({"group": "rbac.authorization.k8s.io", "version": "v1", "kind": "ClusterRoleBinding"})
    );
    assert_eq!(
        q["resource"],
        json!({"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterrolebindings"})
    );
    assert_eq!(q["requestKind"], q["kind"]);
    assert_eq!(q["requestResource"], q["resource"]);
    assert_eq!(q["name"], "eng-admin");
    assert!(q.get("namespace").is_none());
    assert_eq!(q["operation"], "CREATE");
    assert_eq!(q["userInfo"]["username"], "tester");
    assert!(
        q["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:authenticated"))
    );
    assert_eq!(q["object"]["kind"], "ClusterRoleBinding");
    assert_eq!(q["object"]["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(q["object"]["roleRef"]["name"], "cluster-admin");
    assert!(q["object"]["metadata"]["uid"].is_string());
    assert_eq!(q["oldObject"], Value::Null);
    assert_eq!(q["dryRun"], false);
    assert_eq!(q["options"]["kind"], "CreateOptions");
    assert_eq!(q["options"]["apiVersion"], "meta.k8s.io/v1");

    // Other content goes through, and is stored.
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "ops-view",
        "--clusterrole=view",
        "--group=ops",
    ]);
    kts.kubectl_ok(&["get", "clusterrolebinding", "ops-view"]);

    let denied = metric(
        &kts,
        "apiserver_admission_webhook_rejection_count",
        &[
            ("name", "gate.example.com"),
            ("type", "validating"),
            ("operation", "CREATE"),
            ("error_type", "no_error"),
            ("rejection_code", "403"),
        ],
    );
    assert_eq!(denied, 2.0);
    let calls = metric(
        &kts,
        "apiserver_admission_webhook_request_total",
        &[("name", "gate.example.com"), ("code", "200")],
    );
    assert_eq!(calls, 3.0);
}

#[test]
fn updates_patches_and_deletes_carry_the_old_object() {
    let hook = Webhook::start(|_| (json!({"allowed": true}), Duration::ZERO));
    let kts = KubeTestServer::start();
    kts.kubectl_ok(&[
        "create",
        "rolebinding",
        "rb",
        "-n",
        "default",
        "--clusterrole=view",
        "--user=bob",
    ]);
    install(
        &kts,
        &vwc("audit.example.com", url_config(&hook), json!({})),
    );

    kts.kubectl_ok(&["label", "rolebinding", "rb", "-n", "default", "team=a"]);
    kts.kubectl_ok(&["delete", "rolebinding", "rb", "-n", "default"]);
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 2, "{reviews:#?}");
    let patch = &reviews[0]["request"];
    assert_eq!(patch["operation"], "UPDATE");
    assert_eq!(patch["namespace"], "default");
    assert_eq!(patch["options"]["kind"], "UpdateOptions");
    assert_eq!(patch["object"]["metadata"]["labels"]["team"], "a");
    assert!(patch["oldObject"]["metadata"].get("labels").is_none());
    let delete = &reviews[1]["request"];
    assert_eq!(delete["operation"], "DELETE");
    assert_eq!(delete["object"], Value::Null);
    assert_eq!(delete["oldObject"]["metadata"]["labels"]["team"], "a");
    assert_eq!(delete["options"]["kind"], "DeleteOptions");
}

#[test]
fn warnings_are_printed_by_kubectl_and_the_write_goes_through() {
    let hook = Webhook::start(|_| {
        (
            json!({"allowed": true, "warnings": ["permdrift: widening of ClusterRoleBinding/x \"detect\" mode"]}),
            Duration::ZERO,
        )
    });
    let kts = KubeTestServer::start();
    install(&kts, &vwc("warn.example.com", url_config(&hook), json!({})));
    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "x",
        "--clusterrole=view",
        "--group=g",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("Warning: permdrift: widening of ClusterRoleBinding/x \"detect\" mode"),
        "{}",
        stderr(&out)
    );
    kts.kubectl_ok(&["get", "clusterrolebinding", "x"]);
}

#[test]
fn an_unreachable_webhook_fails_closed_or_open_by_failure_policy() {
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "https://127.0.0.1:{}/validate",
        free.local_addr().unwrap().port()
    );
    drop(free);
    let kts = KubeTestServer::start();
    let cc = json!({"url": dead, "caBundle": ca_bundle()});
    install(
        &kts,
        &vwc(
            "closed.example.com",
            cc.clone(),
            json!({"failurePolicy": "Fail"}),
        ),
    );

    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Internal error occurred: failed calling webhook \"closed.example.com\": failed to call webhook: Post"),
        "{err}"
    );
    assert!(err.contains("?timeout=10s"), "{err}");
    assert!(stderr(&kts.kubectl(&["get", "clusterrolebinding", "a"])).contains("NotFound"));
    assert_eq!(
        metric(
            &kts,
            "apiserver_admission_webhook_rejection_count",
            &[
                ("name", "closed.example.com"),
                ("error_type", "calling_webhook_error"),
                ("rejection_code", "0")
            ]
        ),
        1.0
    );

    // Webhook configurations are never sent to webhooks: the broken one can be removed.
    kts.kubectl_ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "cfg-closed.example.com",
    ]);
    install(
        &kts,
        &vwc("open.example.com", cc, json!({"failurePolicy": "Ignore"})),
    );
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
    ]);
    kts.kubectl_ok(&["get", "clusterrolebinding", "a"]);
    assert_eq!(
        metric(
            &kts,
            "apiserver_admission_webhook_fail_open_count",
            &[("name", "open.example.com"), ("type", "validating")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &kts,
            "apiserver_admission_webhook_request_total",
            &[
                ("name", "open.example.com"),
                ("code", "0"),
                ("rejected", "false")
            ]
        ),
        1.0
    );
}

#[test]
fn a_slow_webhook_times_out_at_its_timeout_seconds() {
    let hook = Webhook::start(|_| (json!({"allowed": true}), Duration::from_secs(4)));
    let kts = KubeTestServer::start();
    install(
        &kts,
        &vwc(
            "slow.example.com",
            url_config(&hook),
            json!({"timeoutSeconds": 1}),
        ),
    );
    let t = Instant::now();
    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
    ]);
    let took = t.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("failed calling webhook \"slow.example.com\""),
        "{err}"
    );
    assert!(err.contains("context deadline exceeded"), "{err}");
    assert!(err.contains("?timeout=1s"), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The latency is recorded: the call sits in the 2.5 s bucket, not the 0.5 s one.
    let text = kts.request("GET", "/metrics", None).text();
    let bucket = |le: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket")
                    && l.contains("name=\"slow.example.com\"")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(bucket("0.5"), Some(0.0), "{text}");
    assert_eq!(bucket("2.5"), Some(1.0), "{text}");

    // Ignore lets the same write through after the timeout.
    install(
        &kts,
        &vwc(
            "slow.example.com",
            url_config(&hook),
            json!({"timeoutSeconds": 1, "failurePolicy": "Ignore"}),
        ),
    );
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
    ]);
}

#[test]
fn rules_and_selectors_decide_which_writes_are_sent() {
    let hook = Webhook::start(|_| (json!({"allowed": true}), Duration::ZERO));
    let kts = KubeTestServer::start();
    install(
        &kts,
        &vwc(
            "scoped.example.com",
            url_config(&hook),
            json!({
                "rules": [{"operations": ["CREATE"], "apiGroups": ["rbac.authorization.k8s.io"],
                           "apiVersions": ["*"], "resources": ["rolebindings"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
                "objectSelector": {"matchExpressions": [{"key": "skip-gate", "operator": "DoesNotExist"}]},
            }),
        ),
    );
    kts.kubectl_ok(&["create", "namespace", "prod"]);
    kts.kubectl_ok(&["label", "namespace", "prod", "env=prod"]);
    kts.kubectl_ok(&["create", "namespace", "dev"]);
    // not matched: another namespace, another resource, another operation
    kts.kubectl_ok(&[
        "create",
        "rolebinding",
        "r1",
        "-n",
        "dev",
        "--clusterrole=view",
        "--user=u",
    ]);
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "c1",
        "--clusterrole=view",
        "--user=u",
    ]);
    kts.kubectl_ok(&["create", "configmap", "cm", "-n", "prod"]);
    assert!(hook.reviews().is_empty(), "{:#?}", hook.reviews());
    // matched
    kts.kubectl_ok(&[
        "create",
        "rolebinding",
        "r2",
        "-n",
        "prod",
        "--clusterrole=view",
        "--user=u",
    ]);
    assert_eq!(hook.reviews().len(), 1);
    kts.kubectl_ok(&["label", "rolebinding", "r2", "-n", "prod", "x=y"]);
    assert_eq!(hook.reviews().len(), 1, "UPDATE is not in the rule");
    // excluded by the object selector
    let labelled = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "r3", "namespace": "prod", "labels": {"skip-gate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]});
    let out = kts.kubectl_stdin(&["create", "-f", "-"], &labelled.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hook.reviews().len(), 1);
}

#[test]
fn match_policy_equivalent_sends_the_version_the_rule_names() {
    let hook = Webhook::start(|_| (json!({"allowed": true}), Duration::ZERO));
    let kts = KubeTestServer::start();
    let rule = json!([{"operations": ["CREATE"], "apiGroups": ["rbac.authorization.k8s.io"],
                       "apiVersions": ["v1beta1"], "resources": ["clusterrolebindings"]}]);
    install(
        &kts,
        &vwc(
            "exact.example.com",
            url_config(&hook),
            json!({"rules": rule, "matchPolicy": "Exact"}),
        ),
    );
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
    ]);
    assert!(
        hook.reviews().is_empty(),
        "Exact does not match v1 requests"
    );

    install(
        &kts,
        &vwc(
            "exact.example.com",
            url_config(&hook),
            json!({"rules": rule, "matchPolicy": "Equivalent"}),
        ),
    );
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "b",
        "--clusterrole=view",
        "--group=g",
    ]);
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 1);
    let q = &reviews[0]["request"];
    assert_eq!(q["kind"]["version"], "v1beta1");
    assert_eq!(q["resource"]["version"], "v1beta1");
    assert_eq!(q["requestKind"]["version"], "v1");
    assert_eq!(q["requestResource"]["version"], "v1");
    assert_eq!(
        q["object"]["apiVersion"],
        "rbac.authorization.k8s.io/v1beta1"
    );
}

#[test]
fn server_side_dry_run_respects_side_effects() {
    let hook = Webhook::start(deny_bindings_to("nobody"));
    let kts = KubeTestServer::start();
    install(
        &kts,
        &vwc(
            "fx.example.com",
            url_config(&hook),
            json!({"sideEffects": "Unknown"}),
        ),
    );
    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
        "--dry-run=server",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("admission webhook \"fx.example.com\" does not support dry run"),
        "{}",
        stderr(&out)
    );
    assert!(hook.reviews().is_empty());

    install(
        &kts,
        &vwc(
            "fx.example.com",
            url_config(&hook),
            json!({"sideEffects": "None"}),
        ),
    );
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=g",
        "--dry-run=server",
    ]);
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["request"]["dryRun"], true);
    assert_eq!(reviews[0]["request"]["options"]["dryRun"], json!(["All"]));
    assert!(stderr(&kts.kubectl(&["get", "clusterrolebinding", "a"])).contains("NotFound"));
}

#[test]
fn a_service_reference_is_called_through_the_webhook_service_hook() {
    let hook = Webhook::start(deny_bindings_to("engineering"));
    let kts = KubeTestServer::start_with(Options::default().args([
        "--webhook-service".to_string(),
        format!(
            "permdrift/permdrift-webhook=https://127.0.0.1:{}",
            hook.port
        ),
    ]));
    let cc = json!({"service": {"namespace": "permdrift", "name": "permdrift-webhook", "path": "/admit", "port": 443},
                    "caBundle": ca_bundle()});
    install(&kts, &vwc("svc.example.com", cc, json!({})));
    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "a",
        "--clusterrole=view",
        "--group=engineering",
    ]);
    assert!(
        stderr(&out).contains("admission webhook \"svc.example.com\" denied the request"),
        "{}",
        stderr(&out)
    );
    assert_eq!(hook.reviews().len(), 1);

    // A service with no --webhook-service target is a failed call.
    let cc = json!({"service": {"namespace": "other", "name": "nowhere"}, "caBundle": ca_bundle()});
    install(&kts, &vwc("svc.example.com", cc, json!({})));
    let out = kts.kubectl(&[
        "create",
        "clusterrolebinding",
        "b",
        "--clusterrole=view",
        "--group=g",
    ]);
    assert!(
        stderr(&out).contains("failed calling webhook \"svc.example.com\""),
        "{}",
        stderr(&out)
    );
}
