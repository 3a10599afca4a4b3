//! The review gate at admission (src/admission/): AdmissionReview v1 shapes
//! against the upstream examples (tests/data/admission/), decisions on RBAC
//! writes against a live model, and the same review served as an HTTPS
//! webhook that the Kubernetes API test server calls while the real kubectl
//! writes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use permdrift::admission::review::{AdmissionResponse, AdmissionReview, Operation};
use permdrift::admission::{
    self, AGGREGATION_CONTROLLER, Approvals, Gate, NoApprovals, Outcome, ReviewError,
};
use permdrift::config::{AllowRule, Mode};
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::model::k8s::{RbacKey, RbacKind};
use permdrift::report::Severity;
use serde_json::{Value, json};

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/admission/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name}, "rules": rules})
}

fn crb(name: &str, role: &str, group: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]})
}

/// A small live cluster: cluster-admin, a view role bound to engineering.
fn live() -> K8sModel {
    let mut m = K8sModel::new();
    for o in [
        cluster_role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        cluster_role(
            "view",
            json!([{"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}]),
        ),
        crb("eng-view", "view", "engineering"),
    ] {
        m.insert(K8sObject::from_raw(o).unwrap());
    }
    m
}

fn request(op: &str, user: &str, object: Option<Value>, old: Option<Value>) -> Value {
    let src = object.as_ref().or(old.as_ref()).unwrap();
    let kind = src["kind"].as_str().unwrap();
    let plural = format!("{}s", kind.to_lowercase());
    let mut r = json!({
        "uid": "c0ffee00-0000-4000-8000-000000000001",
        "kind": {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": kind},
        "resource": {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": plural},
        "name": src["metadata"]["name"],
        "operation": op,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "dryRun": false,
    });
    if let Some(ns) = src["metadata"].get("namespace") {
        r["namespace"] = ns.clone();
    }
    if let Some(o) = object {
        r["object"] = o;
    }
    if let Some(o) = old {
        r["oldObject"] = o;
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

fn enforce() -> Gate<'static> {
    Gate {
        source: "prod",
        mode: Mode::Enforce,
        deny_at: Severity::High,
        allow: &[],
        operator: Some("system:serviceaccount:permdrift:permdrift"),
        exempt_users: &[],
        exempt_groups: &[],
    }
}

fn run(gate: &Gate<'_>, approvals: &dyn Approvals, review: &Value) -> admission::Decision {
    let req = admission::parse_review(&serde_json::to_vec(review).unwrap()).unwrap();
    admission::review(&live(), gate, approvals, &req)
}

#[test]
fn upstream_request_parses_and_a_non_rbac_write_is_allowed_with_its_uid() {
    let req = admission::parse_review(data("request-scale-update.json").as_bytes()).unwrap();
    assert_eq!(req.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(req.operation, Operation::Update);
    assert_eq!(req.sub_resource.as_deref(), Some("scale"));
    assert_eq!(req.request_sub_resource.as_deref(), Some("scale"));
    assert_eq!(req.user_info.username, "admin");
    assert_eq!(
        req.user_info.extra["some-key"],
        ["some-value1", "some-value2"]
    );
    assert_eq!(req.options.as_ref().unwrap()["kind"], "UpdateOptions");
    assert_eq!(req.dry_run, Some(false));

    let d = admission::review(&live(), &enforce(), &NoApprovals, &req);
    assert_eq!(d.outcome, Outcome::NotJudged);
    // The answer has exactly the shape of the upstream minimal "allowed" response.
    let mut expected: Value = serde_json::from_str(&data("response-allowed.json")).unwrap();
    expected["response"]["uid"] = json!(req.uid);
    assert_eq!(serde_json::to_value(d.to_review()).unwrap(), expected);
}

#[test]
fn upstream_request_round_trips_without_loss() {
    let text = data("request-scale-update.json");
    let review: AdmissionReview = serde_json::from_str(&text).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&review).unwrap(), original);
}

#[test]
fn upstream_responses_read_and_write_back_identically() {
    for file in [
        "response-allowed.json",
        "response-denied.json",
        "response-denied-status.json",
        "response-warnings.json",
    ] {
        let original: Value = serde_json::from_str(&data(file)).unwrap();
        let review: AdmissionReview = serde_json::from_value(original.clone()).unwrap();
        assert!(review.request.is_none(), "{file}");
        assert_eq!(serde_json::to_value(&review).unwrap(), original, "{file}");
    }
    let denied: AdmissionReview =
        serde_json::from_str(&data("response-denied-status.json")).unwrap();
    let status = denied.response.unwrap().status.unwrap();
    assert_eq!(status.code, Some(403));
    let warned: AdmissionReview = serde_json::from_str(&data("response-warnings.json")).unwrap();
    assert_eq!(warned.response.unwrap().warnings.len(), 2);
}

#[test]
fn our_denial_has_the_upstream_denial_shape() {
    let d = run(
        &enforce(),
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "engineering")),
            None,
        ),
    );
    let ours = serde_json::to_value(d.to_review()).unwrap();
    let upstream: Value = serde_json::from_str(&data("response-denied-status.json")).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&upstream));
    assert_eq!(keys(&ours["response"]), keys(&upstream["response"]));
    assert_eq!(ours["response"]["status"]["code"], 403);
    assert_eq!(ours["response"]["allowed"], false);
    assert_eq!(
        ours["response"]["uid"],
        "c0ffee00-0000-4000-8000-000000000001"
    );
}

#[test]
fn unapproved_cluster_admin_binding_is_denied_in_enforce_mode_with_an_actionable_message() {
    let d = run(
        &enforce(),
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "engineering")),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::Denied);
    assert!(!d.response.allowed);
    assert_eq!(d.actor, "alice");
    let change = d.change.as_ref().unwrap();
    assert_eq!(change.severity, Severity::Critical);
    let message = d.response.status.as_ref().unwrap().message.clone().unwrap();
    assert!(message.contains("cluster-admin"), "{message}");
    assert!(message.contains("Group:engineering"), "{message}");
    assert!(
        message.contains(
            "permdrift approve --source prod --manifest clusterrolebinding-eng-admin.yaml"
        ),
        "{message}"
    );
    assert!(message.contains(d.digest.as_deref().unwrap()), "{message}");
    insta::assert_snapshot!(message);
}

#[test]
fn the_gate_names_the_digest_that_content_approval_computes() {
    // `permdrift approve --manifest` (src/approval/content.rs) and the
    // operator's approvals name this digest; the gate must ask for the same.
    use permdrift::approval::content;
    use permdrift::snapshot::SourceSnapshot;
    let object = crb("eng-admin", "cluster-admin", "engineering");
    let denied = run(
        &enforce(),
        &NoApprovals,
        &request("CREATE", "alice", Some(object.clone()), None),
    );
    let current = SourceSnapshot::kubernetes("prod", live());
    let proposed =
        content::with_k8s_objects(&current, &[K8sObject::from_raw(object).unwrap()]).unwrap();
    let catalog = permdrift::grants::catalog::Catalog::embedded();
    let widenings = content::widenings(&current, &proposed, catalog).unwrap();
    assert_eq!(widenings.len(), 1, "{widenings:?}");
    assert_eq!(
        denied.digest.as_deref(),
        Some(format!("sha256:{}", widenings[0].digest).as_str())
    );
}

#[test]
fn the_same_content_pre_approved_is_allowed() {
    let object = crb("eng-admin", "cluster-admin", "engineering");
    let denied = run(
        &enforce(),
        &NoApprovals,
        &request("CREATE", "alice", Some(object.clone()), None),
    );
    let digest = denied.digest.clone().unwrap();
    let key = RbacKey::new(RbacKind::ClusterRoleBinding, None, "eng-admin");
    let approved =
        |source: &str, object: &RbacKey, d: &str| source == "prod" && *object == key && d == digest;
    let d = run(
        &enforce(),
        &approved,
        &request("CREATE", "alice", Some(object.clone()), None),
    );
    assert_eq!(d.outcome, Outcome::Approved);
    assert!(d.response.allowed);
    assert!(d.response.warnings.is_empty());

    // Other content under the same name is not covered by that approval.
    let mut other = crb("eng-admin", "cluster-admin", "contractors");
    other["metadata"]["labels"] = json!({"team": "x"});
    let d = run(
        &enforce(),
        &approved,
        &request("CREATE", "alice", Some(other), None),
    );
    assert_eq!(d.outcome, Outcome::Denied);
}

#[test]
fn the_digest_names_what_is_granted_not_how_it_is_spelled() {
    let a = crb("eng-admin", "cluster-admin", "engineering");
    let mut b = a.clone();
    b["metadata"]["labels"] = json!({"owner": "platform"});
    b["metadata"]["annotations"] = json!({"note": "same grants"});
    let da = run(
        &enforce(),
        &NoApprovals,
        &request("CREATE", "alice", Some(a), None),
    );
    let db = run(
        &enforce(),
        &NoApprovals,
        &request("CREATE", "alice", Some(b), None),
    );
    assert_eq!(da.digest, db.digest);
    assert!(da.digest.as_deref().unwrap().starts_with("sha256:"));
    let dc = run(
        &enforce(),
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "ops")),
            None,
        ),
    );
    assert_ne!(da.digest, dc.digest);
}

#[test]
fn the_aggregation_controller_the_operator_and_exemptions_are_never_denied() {
    // The aggregation controller widening an aggregated role it manages.
    let wider = cluster_role(
        "view",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]),
    );
    let d = run(
        &enforce(),
        &NoApprovals,
        &request(
            "UPDATE",
            AGGREGATION_CONTROLLER,
            Some(wider.clone()),
            Some(wider.clone()),
        ),
    );
    assert_eq!(d.outcome, Outcome::Exempt);
    assert!(d.response.allowed);
    // Anyone else making the same write is denied.
    let d = run(
        &enforce(),
        &NoApprovals,
        &request("UPDATE", "mallory", Some(wider.clone()), None),
    );
    assert_eq!(d.outcome, Outcome::Denied, "{:?}", d.change);

    let admin = crb("eng-admin", "cluster-admin", "engineering");
    let d = run(
        &enforce(),
        &NoApprovals,
        &request(
            "CREATE",
            "system:serviceaccount:permdrift:permdrift",
            Some(admin.clone()),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::Exempt);

    let users = vec!["system:serviceaccount:argocd:*".to_string()];
    let groups = vec!["platform-admins".to_string()];
    let gate = Gate {
        exempt_users: &users,
        exempt_groups: &groups,
        ..enforce()
    };
    let d = run(
        &gate,
        &NoApprovals,
        &request(
            "CREATE",
            "system:serviceaccount:argocd:controller",
            Some(admin.clone()),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::Exempt);
    let mut by_group = request("CREATE", "bob", Some(admin.clone()), None);
    by_group["request"]["userInfo"]["groups"] = json!(["platform-admins"]);
    assert_eq!(run(&gate, &NoApprovals, &by_group).outcome, Outcome::Exempt);
    let d = run(
        &gate,
        &NoApprovals,
        &request("CREATE", "bob", Some(admin), None),
    );
    assert_eq!(d.outcome, Outcome::Denied);
}

#[test]
fn detect_mode_allows_with_a_warning() {
    let gate = Gate {
        mode: Mode::Detect,
        ..enforce()
    };
    let d = run(
        &gate,
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "engineering")),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::Warned);
    assert!(d.response.allowed);
    assert!(d.response.status.is_none());
    assert_eq!(d.response.warnings.len(), 1);
    assert!(
        d.response.warnings[0].contains("cluster-admin"),
        "{:?}",
        d.response.warnings
    );
    assert!(d.response.warnings[0].contains("permdrift approve --source prod"));
}

#[test]
fn widening_below_the_configured_severity_is_allowed_with_a_warning() {
    let reader = cluster_role(
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    );
    let mut live_plus = live();
    live_plus.insert(K8sObject::from_raw(reader).unwrap());
    let review = request(
        "CREATE",
        "alice",
        Some(crb("eng-pods", "pod-reader", "contractors")),
        None,
    );
    let req = admission::parse_review(&serde_json::to_vec(&review).unwrap()).unwrap();
    let d = admission::review(&live_plus, &enforce(), &NoApprovals, &req);
    let change = d.change.as_ref().unwrap();
    assert!(change.severity < Severity::High, "{:?}", change.severity);
    assert_eq!(d.outcome, Outcome::Warned);
    assert!(d.response.allowed);
    // With the bar lowered to that severity, the same write is denied.
    let gate = Gate {
        deny_at: change.severity,
        ..enforce()
    };
    assert_eq!(
        admission::review(&live_plus, &gate, &NoApprovals, &req).outcome,
        Outcome::Denied
    );
}

#[test]
fn allow_listed_widening_is_allowed() {
    let rules = vec![AllowRule {
        name: "break-glass".into(),
        reason: Some("on-call".into()),
        source: Some("prod".into()),
        subject: Some("Group:sre".into()),
        object: None,
        risks: None,
    }];
    let gate = Gate {
        allow: &rules,
        ..enforce()
    };
    let d = run(
        &gate,
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("sre-admin", "cluster-admin", "sre")),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::AllowListed);
    assert!(d.response.allowed);
    let d = run(
        &gate,
        &NoApprovals,
        &request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "engineering")),
            None,
        ),
    );
    assert_eq!(d.outcome, Outcome::Denied);
}

#[test]
fn narrowing_and_reordering_are_not_widening() {
    let binding = crb("eng-view", "view", "engineering");
    let d = run(
        &enforce(),
        &NoApprovals,
        &request("DELETE", "alice", None, Some(binding)),
    );
    assert_eq!(d.outcome, Outcome::NotWidening);
    assert!(d.response.allowed);

    // The same grants, rules reordered and spelled differently.
    let view = cluster_role(
        "view",
        json!([{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["watch", "list", "get"]}]),
    );
    let d = run(
        &enforce(),
        &NoApprovals,
        &request("UPDATE", "alice", Some(view), None),
    );
    assert_eq!(d.outcome, Outcome::NotWidening, "{:?}", d.change);
    assert!(d.response.allowed && d.response.warnings.is_empty());
}

#[test]
fn bad_reviews_are_errors_naming_the_field() {
    let mut bad = request("CREATE", "alice", Some(crb("x", "view", "g")), None);
    bad["request"]["operation"] = json!("EXPLODE");
    let e = admission::parse_review(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(e.to_string().contains("request.operation"), "{e}");

    let mut bad = request("CREATE", "alice", Some(crb("x", "view", "g")), None);
    bad["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let e = admission::parse_review(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(matches!(e, ReviewError::ApiVersion(_)), "{e}");

    let e = admission::parse_review(
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
    )
    .unwrap_err();
    assert!(matches!(e, ReviewError::NoRequest), "{e}");
    let e = admission::parse_review(b"not json").unwrap_err();
    assert!(matches!(e, ReviewError::Json { .. }), "{e}");
}

#[test]
fn an_unreadable_rbac_object_is_let_through_with_a_warning_naming_the_field() {
    let mut broken = crb("eng-admin", "cluster-admin", "engineering");
    broken["roleRef"] = json!("cluster-admin");
    let d = run(
        &enforce(),
        &NoApprovals,
        &request("CREATE", "alice", Some(broken), None),
    );
    assert_eq!(d.outcome, Outcome::Unreadable);
    assert!(d.response.allowed);
    assert!(
        d.response.warnings[0].contains("roleRef"),
        "{:?}",
        d.response.warnings
    );
}

#[test]
fn denial_response_serializes_with_status_and_no_warnings() {
    let r = AdmissionResponse::deny("u", 403, "Forbidden", "no".into());
    let v = serde_json::to_value(AdmissionReview::answer(r)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "u", "allowed": false,
                            "status": {"code": 403, "message": "no", "reason": "Forbidden"}}})
    );
}

#[test]
fn a_reviewer_decides_as_review_does_and_restores_its_copy() {
    let requests = [
        request(
            "CREATE",
            "alice",
            Some(crb("eng-admin", "cluster-admin", "engineering")),
            None,
        ),
        request(
            "DELETE",
            "alice",
            None,
            Some(crb("eng-view", "view", "engineering")),
        ),
        request(
            "UPDATE",
            "mallory",
            Some(cluster_role(
                "view",
                json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
            )),
            None,
        ),
        request(
            "CREATE",
            "alice",
            Some(crb("new-view", "view", "contractors")),
            None,
        ),
        request(
            "DELETE",
            "alice",
            None,
            Some(crb("ghost", "view", "nobody")),
        ),
    ];
    let mut reviewer = admission::Reviewer::new(live());
    // Twice through: a copy left changed by one review would change the next.
    for _ in 0..2 {
        for r in &requests {
            let req = admission::parse_review(&serde_json::to_vec(r).unwrap()).unwrap();
            let once = admission::review(&live(), &enforce(), &NoApprovals, &req);
            let kept = reviewer.review(&enforce(), &NoApprovals, &req);
            assert_eq!(kept.outcome, once.outcome, "{r}");
            assert_eq!(kept.response, once.response, "{r}");
            assert_eq!(kept.digest, once.digest, "{r}");
            assert_eq!(kept.change, once.change, "{r}");
        }
    }
    assert_eq!(reviewer.live().len(), live().len());
    // The reviewer follows the cluster: once engineering is cluster-admin,
    // widening view gives nobody anything new; only the role's own (latent)
    // widening is left, below the bar.
    reviewer.insert(K8sObject::from_raw(crb("eng-admin", "cluster-admin", "engineering")).unwrap());
    let req = admission::parse_review(&serde_json::to_vec(&requests[2]).unwrap()).unwrap();
    let d = reviewer.review(&enforce(), &NoApprovals, &req);
    assert_eq!(d.outcome, Outcome::Warned);
    assert!(d.change.unwrap().gained.iter().all(|g| g.latent));
    reviewer.remove(&RbacKey::new(
        RbacKind::ClusterRoleBinding,
        None,
        "eng-admin",
    ));
    assert_eq!(
        reviewer.review(&enforce(), &NoApprovals, &req).outcome,
        Outcome::Denied
    );
}

// ---- end to end: the test server calls the review as a webhook ----

mod webhook {
    use super::*;
    use axum::body::Body;
    use hyper_util::rt::TokioIo;
    use std::collections::BTreeSet;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    /// Approved (object, digest) pairs.
    pub type Approved = Arc<Mutex<BTreeSet<(String, String)>>>;

    /// The review gate behind HTTPS on 127.0.0.1 (the test server's own
    /// certificate), judging against `live` in enforce mode for source `prod`.
    pub struct Gatekeeper {
        pub port: u16,
        pub live: Arc<Mutex<K8sModel>>,
        pub approved: Approved,
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl Gatekeeper {
        pub fn start(live: K8sModel) -> Self {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let tls = kube_test_server::tls_acceptor().unwrap();
            let live = Arc::new(Mutex::new(live));
            let approved: Approved = Arc::default();
            let (l, a) = (live.clone(), approved.clone());
            runtime.spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (tls, l, a) = (tls.clone(), l.clone(), a.clone());
                    tokio::spawn(async move {
                        let Ok(stream) = tls.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (l, a) = (l.clone(), a.clone());
                                async move {
                                    let body =
                                        axum::body::to_bytes(Body::new(req.into_body()), 1 << 24)
                                            .await
                                            .unwrap();
                                    let request = admission::parse_review(&body).unwrap();
                                    let approvals = |_: &str, object: &RbacKey, digest: &str| {
                                        a.lock()
                                            .unwrap()
                                            .contains(&(object.to_string(), digest.to_string()))
                                    };
                                    let decision = admission::review(
                                        &l.lock().unwrap(),
                                        &enforce(),
                                        &approvals,
                                        &request,
                                    );
                                    let out = serde_json::to_vec(&decision.to_review()).unwrap();
                                    Ok::<_, Infallible>(
                                        hyper::Response::builder()
                                            .header("content-type", "application/json")
                                            .body(Body::from(out))
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
            Gatekeeper {
                port,
                live,
                approved,
                runtime: Some(runtime),
            }
        }

        /// Takes the webhook down: its port stops answering.
        pub fn stop(&mut self) {
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }
}

fn rbac_model_of(kts: &support::kube_server::KubeTestServer) -> K8sModel {
    let list: Value = serde_json::from_str(&kts.kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings,roles,rolebindings",
        "-A",
        "-o",
        "json",
    ]))
    .unwrap();
    let mut m = K8sModel::new();
    for item in list["items"].as_array().unwrap() {
        m.insert(K8sObject::from_raw(item.clone()).unwrap());
    }
    m
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kubectl_meets_the_gate_denied_approved_aggregation_and_webhook_down() {
    use base64::Engine;
    let kts = support::kube_server::KubeTestServer::start();
    kts.kubectl_ok(&[
        "create",
        "clusterrole",
        "cluster-admin",
        "--verb=*",
        "--resource=*.*",
    ]);
    kts.kubectl_ok(&[
        "create",
        "clusterrole",
        "view",
        "--verb=get,list",
        "--resource=pods",
    ]);
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "eng-view",
        "--clusterrole=view",
        "--group=engineering",
    ]);
    kts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "contractors-view",
        "--clusterrole=view",
        "--group=contractors",
    ]);
    let mut gate = webhook::Gatekeeper::start(rbac_model_of(&kts));
    let vwc = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "permdrift"},
        "webhooks": [{
            "name": "rbac.permdrift.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{}/admit", gate.port),
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(kube_test_server::CA_PEM)},
            "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": ["rbac.authorization.k8s.io"],
                       "apiVersions": ["v1"], "resources": ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        }]
    });
    let out = kts.kubectl_stdin(&["apply", "-f", "-"], &vwc.to_string());
    assert!(out.status.success(), "{}", stderr(&out));

    // An unapproved cluster-admin binding: denied, with what to do about it.
    let create = [
        "create",
        "clusterrolebinding",
        "eng-admin",
        "--clusterrole=cluster-admin",
        "--group=engineering",
    ];
    let out = kts.kubectl(&create);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("admission webhook \"rbac.permdrift.dev\" denied the request: permdrift: unapproved critical widening of ClusterRoleBinding/eng-admin (risks: cluster-admin"), "{err}");
    assert!(err.contains("Group:engineering can now"), "{err}");
    assert!(
        err.contains(
            "permdrift approve --source prod --manifest clusterrolebinding-eng-admin.yaml"
        ),
        "{err}"
    );
    assert!(stderr(&kts.kubectl(&["get", "clusterrolebinding", "eng-admin"])).contains("NotFound"));

    // The same content, approved by its digest: allowed.
    let digest = err
        .split("(sha256:")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(|hex| format!("sha256:{hex}"))
        .unwrap();
    gate.approved
        .lock()
        .unwrap()
        .insert(("ClusterRoleBinding/eng-admin".into(), digest));
    kts.kubectl_ok(&create);
    *gate.live.lock().unwrap() = rbac_model_of(&kts);

    // The aggregation controller widening a bound role (contractors could
    // then read secrets) is let through; anyone else is not.
    let widen = r#"[{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}}]"#;
    let out = kts.kubectl(&["patch", "clusterrole", "view", "--type=json", "-p", widen]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("denied the request: permdrift: unapproved"),
        "{}",
        stderr(&out)
    );
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

    // Webhook down: failurePolicy Ignore lets writes through, and the API
    // server's fail-open counter (what the unavailability alert watches) moves.
    gate.stop();
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
