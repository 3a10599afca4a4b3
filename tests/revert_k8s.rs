//! Kubernetes reverts end to end: widenings made with the real kubectl
//! against the in-process API test server, planned from the state kubectl
//! reads back, run by the reverter with the real kube client, and checked
//! with kubectl again. Also the planning invariants as a property over
//! random clusters: a plan never leaves a widening behind and never touches
//! a narrowing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use permdrift::approval::{self, Approval, Rules, Widening, content};
use permdrift::config::{ApprovalConfig, ApproverKey, RevertConfig};
use permdrift::diff::{DiffOptions, diff};
use permdrift::grants::catalog::Catalog;
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::input::{InputOptions, load};
use permdrift::report::Report;
use permdrift::revert::Retry;
use permdrift::revert::k8s::{K8sRevertError, execute_all};
use permdrift::revert::plan::{
    K8sOp, Ops, Outcome, PlanRules, Planned, Skip, apply_k8s, plan_source,
};
use permdrift::signature::SecretKey;
use permdrift::snapshot::{Snapshot, SourceData, SourceSnapshot};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::kube_server::{KubeTestServer, Options};

const SOURCE: &str = "prod";

/// The cluster's RBAC as kubectl lists it, read the way `permdrift snapshot --from -` reads it.
fn state(srv: &KubeTestServer) -> SourceSnapshot {
    let list = srv.kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings,roles,rolebindings",
        "-A",
        "-o",
        "json",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, list).unwrap();
    let options = InputOptions {
        kube_source: SOURCE.into(),
        ..InputOptions::default()
    };
    let (snapshot, _) = load(&[file], options).unwrap();
    snapshot.sources.get(SOURCE).unwrap().clone()
}

fn one(s: &SourceSnapshot) -> Snapshot {
    let mut snapshot = Snapshot::new();
    snapshot.sources.insert(s.name.clone(), s.clone());
    snapshot
}

fn report(baseline: &SourceSnapshot, current: &SourceSnapshot) -> Report {
    let options = DiffOptions {
        max_grants: 0,
        ..DiffOptions::default()
    };
    diff(&one(baseline), &one(current), Catalog::embedded(), &options)
}

fn plan(baseline: &SourceSnapshot, current: &SourceSnapshot, rules: &PlanRules) -> Vec<Planned> {
    plan_source(baseline, current, rules, Catalog::embedded())
}

fn outcome<'a>(planned: &'a [Planned], object: &str) -> &'a Outcome {
    &planned
        .iter()
        .find(|p| p.object == object)
        .unwrap_or_else(|| panic!("{object} not planned: {planned:#?}"))
        .outcome
}

fn k8s_ops(o: &Outcome) -> &[K8sOp] {
    match o {
        Outcome::Revert(Ops::K8s(ops)) => ops,
        other => panic!("expected Kubernetes ops, got {other:?}"),
    }
}

async fn run_plan(client: &kube::Client, planned: &[Planned]) {
    for p in planned {
        if let Outcome::Revert(Ops::K8s(ops)) = &p.outcome {
            execute_all(client, ops)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", p.object));
        }
    }
}

const BASELINE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cluster-admin}
rules:
- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
- {nonResourceURLs: ["*"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: devs}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: team-admin}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {rbac.example.com/aggregate-to-team-admin: "true"}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: team-admins}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: team-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: lead}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: secret-tools
  labels: {team: platform}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, list]}
"#;

const ONCALL: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: oncall-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: oncall}
"#;

fn apply(srv: &KubeTestServer, yaml: &str) {
    let o = srv.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Two approvers' keys (a cluster-admin binding is critical: it needs both).
fn approvers() -> (Vec<(&'static str, SecretKey)>, Rules) {
    let keys = vec![
        ("alice", SecretKey::from_seed([4; 32])),
        ("bob", SecretKey::from_seed([5; 32])),
    ];
    let config = ApprovalConfig {
        keys: keys
            .iter()
            .map(|(id, key)| ApproverKey {
                id: (*id).into(),
                public_key: key.public().to_base64(),
                identity: None,
            })
            .collect(),
        ..ApprovalConfig::default()
    };
    let rules = Rules::from_config(&config).unwrap();
    (keys, rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_widening_is_reverted_and_approved_or_protected_is_kept() {
    let srv = KubeTestServer::start();
    apply(&srv, BASELINE);
    let baseline = state(&srv);

    // Review first: alice and bob approve the on-call binding's content
    // before it is applied, for 8 hours.
    let SourceData::Kubernetes(_) = &baseline.data else {
        panic!()
    };
    let oncall = serde_yaml::from_str::<Value>(ONCALL).unwrap();
    let proposed =
        content::with_k8s_objects(&baseline, &[K8sObject::from_raw(oncall).unwrap()]).unwrap();
    let [pre] = &content::widenings(&baseline, &proposed, Catalog::embedded()).unwrap()[..] else {
        panic!()
    };
    let (keys, approval_rules) = approvers();
    let issued = jiff::Timestamp::now();
    let approvals: Vec<_> = keys
        .iter()
        .map(|(id, key)| {
            Approval {
                source: SOURCE.into(),
                object: pre.object.clone(),
                digest: pre.digest.clone(),
                approver: (*id).into(),
                reason: "on-call rotation".into(),
                issued,
                expires: issued + jiff::SignedDuration::from_hours(8),
            }
            .sign(key)
        })
        .collect();

    // The widenings, made with kubectl.
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "mallory-admin",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    apply(
        &srv,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [secrets, pods/exec], verbs: [get, create]}
"#,
    );
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "secret-tools",
        "rbac.example.com/aggregate-to-team-admin=true",
    ]);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "system:sneaky",
        "--clusterrole=cluster-admin",
        "--user=eve",
    ]);
    apply(&srv, ONCALL);
    let current = state(&srv);

    // What is approved now, from the signed approval.
    let approved_at = |now: jiff::Timestamp| {
        let mut rules = PlanRules::from_config(&RevertConfig::default(), &[]);
        for change in &report(&baseline, &current).changes {
            let object = change.object.display();
            let digest = approval::digest::digest_of(&change.gained);
            let w = Widening {
                source: SOURCE,
                object: &object,
                digest: &digest,
                severity: change.severity,
                actor: Some("tester"),
            };
            if approval::decide(&approval_rules, &w, &approvals, now).approved {
                rules.approved.insert((object, digest));
            }
        }
        rules
    };
    let planned = plan(&baseline, &current, &approved_at(issued));
    assert!(matches!(
        k8s_ops(outcome(&planned, "ClusterRoleBinding/mallory-admin")),
        [K8sOp::Delete {
            resource_version: Some(_),
            ..
        }]
    ));
    assert!(matches!(
        k8s_ops(outcome(&planned, "ClusterRole/reader")),
        [K8sOp::Replace {
            resource_version: Some(_),
            ..
        }]
    ));
    assert!(matches!(
        k8s_ops(outcome(&planned, "ClusterRole/secret-tools")),
        [K8sOp::RemoveLabels { labels, .. }] if labels == &["rbac.example.com/aggregate-to-team-admin".to_owned()]
    ));
    assert_eq!(
        outcome(&planned, "ClusterRoleBinding/system:sneaky"),
        &Outcome::Skip(Skip::Protected("*/system:*".into()))
    );
    assert_eq!(
        outcome(&planned, "ClusterRoleBinding/oncall-admin"),
        &Outcome::Skip(Skip::Approved)
    );
    // The role the label aggregates into is the controller's to recompute.
    assert_eq!(
        outcome(&planned, "ClusterRole/team-admin"),
        &Outcome::Skip(Skip::Aggregated)
    );

    let client = srv.client().await;
    run_plan(&client, &planned).await;

    // kubectl sees the baseline again where it reverted, and the rest untouched.
    let gone = srv.kubectl(&["get", "clusterrolebinding", "mallory-admin"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    let reader: Value =
        serde_json::from_str(&srv.kubectl_ok(&["get", "clusterrole", "reader", "-o", "json"]))
            .unwrap();
    assert_eq!(
        reader["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    );
    let tools: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "secret-tools",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(tools["metadata"]["labels"], json!({"team": "platform"}));
    srv.kubectl_ok(&["get", "clusterrolebinding", "system:sneaky"]);
    srv.kubectl_ok(&["get", "clusterrolebinding", "oncall-admin"]);
    let after = state(&srv);
    let left: Vec<String> = report(&baseline, &after)
        .changes
        .iter()
        .map(|c| c.object.display())
        .collect();
    assert_eq!(
        left,
        [
            "ClusterRoleBinding/oncall-admin",
            "ClusterRoleBinding/system:sneaky"
        ]
    );

    // Eight hours and a minute later the approval has lapsed: the on-call
    // binding is an unapproved widening again, and goes.
    let later = issued + jiff::SignedDuration::from_mins(8 * 60 + 2);
    let planned = plan(&baseline, &after, &approved_at(later));
    assert!(matches!(
        k8s_ops(outcome(&planned, "ClusterRoleBinding/oncall-admin")),
        [K8sOp::Delete { .. }]
    ));
    run_plan(&client, &planned).await;
    let gone = srv.kubectl(&["get", "clusterrolebinding", "oncall-admin"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    let left = report(&baseline, &state(&srv)).changes;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].object.display(), "ClusterRoleBinding/system:sneaky");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_edited_after_planning_is_not_overwritten() {
    let srv = KubeTestServer::start();
    apply(&srv, BASELINE);
    let baseline = state(&srv);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "mallory-admin",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "secret-tools",
        "rbac.example.com/aggregate-to-team-admin=true",
    ]);
    let current = state(&srv);
    let planned = plan(&baseline, &current, &PlanRules::default());
    // Someone edits both objects between planning and running.
    srv.kubectl_ok(&["label", "clusterrolebinding", "mallory-admin", "edited=yes"]);
    srv.kubectl_ok(&["label", "clusterrole", "secret-tools", "edited=yes"]);
    let client = srv.client().await;
    for object in [
        "ClusterRoleBinding/mallory-admin",
        "ClusterRole/secret-tools",
    ] {
        let err = execute_all(&client, k8s_ops(outcome(&planned, object)))
            .await
            .unwrap_err();
        assert!(matches!(err, K8sRevertError::Conflict { .. }), "{err:?}");
        assert_eq!(err.metric_label(), "conflict");
        assert_eq!(err.retry(), Retry::Replan);
    }
    // Neither write went through.
    srv.kubectl_ok(&["get", "clusterrolebinding", "mallory-admin"]);
    let tools: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "secret-tools",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        tools["metadata"]["labels"]["rbac.example.com/aggregate-to-team-admin"],
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverter_without_rights_gets_a_permanent_forbidden() {
    let srv = KubeTestServer::start_with(Options::default().authorizer_rbac());
    apply(&srv, BASELINE);
    let baseline = state(&srv);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "mallory-admin",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    let planned = plan(&baseline, &state(&srv), &PlanRules::default());
    srv.add_token("weak-token", "weak", &[], None);
    permdrift::source::k8s::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(srv.kubeconfig_for("weak-token")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let weak = kube::Client::try_from(config).unwrap();
    let err = execute_all(
        &weak,
        k8s_ops(outcome(&planned, "ClusterRoleBinding/mallory-admin")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, K8sRevertError::Forbidden { .. }), "{err:?}");
    assert_eq!(err.metric_label(), "forbidden");
    assert_eq!(err.retry(), Retry::Permanent);
    srv.kubectl_ok(&["get", "clusterrolebinding", "mallory-admin"]);
}

// ---------------------------------------------------------------------------
// Planning invariants over random clusters.

const VERBS: &[&str] = &["get", "list", "create", "delete", "*"];
const RESOURCES: &[&str] = &["pods", "secrets", "pods/exec", "*"];
const USERS: &[&str] = &["u1", "u2", "u3"];

fn role(name: &'static str) -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(
        0.8,
        (
            proptest::sample::subsequence(VERBS, 1..=2),
            proptest::sample::subsequence(RESOURCES, 1..=2),
            proptest::bool::weighted(0.3),
        )
            .prop_map(move |(verbs, resources, labelled)| {
                let labels = if labelled {
                    json!({"agg": "true"})
                } else {
                    json!({})
                };
                json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
                    "metadata":{"name":name,"labels":labels,"resourceVersion":"7"},
                    "rules":[{"apiGroups":[""],"resources":resources,"verbs":verbs}]})
            }),
    )
}

fn binding(name: &'static str) -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(
        0.7,
        (
            proptest::sample::select(&["r1", "r2", "agg"][..]),
            proptest::sample::subsequence(USERS, 1..=2),
        )
            .prop_map(move |(role, users)| {
                let subjects: Vec<Value> = users
                    .into_iter()
                    .map(|u| json!({"kind":"User","name":u,"apiGroup":"rbac.authorization.k8s.io"}))
                    .collect();
                json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
                    "metadata":{"name":name,"resourceVersion":"9"},
                    "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},
                    "subjects":subjects})
            }),
    )
}

fn cluster() -> impl Strategy<Value = Vec<Value>> {
    (
        role("r1"),
        role("r2"),
        binding("b1"),
        binding("b2"),
        binding("b3"),
    )
        .prop_map(|(r1, r2, b1, b2, b3)| {
            let mut objects: Vec<Value> = [r1, r2, b1, b2, b3].into_iter().flatten().collect();
            objects.push(
                json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
                "metadata":{"name":"agg","resourceVersion":"3"},
                "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"agg":"true"}}]}}),
            );
            objects
        })
}

fn source(objects: &[Value]) -> SourceSnapshot {
    let mut model = K8sModel::new();
    for o in objects {
        model.insert(K8sObject::from_raw(o.clone()).unwrap());
    }
    SourceSnapshot::kubernetes(SOURCE, model)
}

fn applied(current: &SourceSnapshot, planned: &[Planned]) -> SourceSnapshot {
    let mut out = current.clone();
    apply_k8s(&mut out, planned);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_never_leaves_a_widening_and_never_reverts_a_narrowing(
        before in cluster(),
        after in cluster(),
    ) {
        let (baseline, current) = (source(&before), source(&after));
        let rules = PlanRules { latent: true, ..PlanRules::default() };
        let planned = plan(&baseline, &current, &rules);
        for c in &report(&baseline, &current).changes {
            let object = c.object.display();
            let p = planned.iter().find(|p| p.object == object);
            if !c.direction.widens() {
                // Never reverted for itself; only as a fix-up, when restoring
                // another object would widen through it (a binding added since).
                if let Some(p) = p.filter(|p| matches!(p.outcome, Outcome::Revert(_))) {
                    prop_assert!(p.fixup, "{} is {} and reverted", p.object, c.direction.as_str());
                }
            }
        }
        // After the plan runs, nobody holds a grant the baseline did not
        // give: the plan granted nothing new and left no held widening.
        // (Deleting an added role may leave a binding to it dangling: a
        // latent grant, held by nobody, which review sees.)
        let result = applied(&current, &planned);
        let left = report(&baseline, &result);
        for c in &left.changes {
            let held: Vec<_> = c.gained.iter().filter(|g| !g.latent).collect();
            prop_assert!(
                held.is_empty(),
                "{} still widens after the plan: {:?}",
                c.object.display(),
                held
            );
        }
        // Every object the plan reverted is exactly at baseline again.
        let (SourceData::Kubernetes(b), SourceData::Kubernetes(r)) = (&baseline.data, &result.data) else {
            panic!()
        };
        for p in planned.iter().filter(|p| matches!(p.outcome, Outcome::Revert(_))) {
            let norm = |m: &K8sModel| {
                m.objects()
                    .find(|(k, _)| k.to_string() == p.object)
                    .map(|(_, o)| permdrift::model::k8s::normalize(&o.value()))
            };
            prop_assert_eq!(norm(b), norm(r), "{}", p.object);
        }
    }
}

/// An incident file (`kubectl get … -o yaml`) as something kubectl can apply:
/// the server-set metadata dropped.
fn applicable(side: &str) -> String {
    let path = format!(
        "{}/examples/incident/{side}/cluster.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut list: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for item in list["items"].as_array_mut().unwrap() {
        let meta = item["metadata"].as_object_mut().unwrap();
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(f);
        }
    }
    list.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_replayed_in_enforce_mode_is_undone() {
    let srv = KubeTestServer::start();
    // The test server publishes OpenAPI for RBAC only; the files also hold ServiceAccounts.
    let apply_unvalidated = |yaml: &str| {
        let o = srv.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], yaml);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let namespaces: std::collections::BTreeSet<String> = ["before", "after"]
        .iter()
        .flat_map(|side| {
            let list: Value = serde_json::from_str(&applicable(side)).unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["metadata"]["namespace"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    for ns in &namespaces {
        srv.kubectl_ok(&["create", "namespace", ns]);
    }
    apply_unvalidated(&applicable("before"));
    let baseline = state(&srv);
    // The engineer follows the forum answer (examples/incident/forum-post.md).
    apply_unvalidated(&applicable("after"));
    let current = state(&srv);
    let planned = plan(
        &baseline,
        &current,
        &PlanRules::from_config(&RevertConfig::default(), &[]),
    );
    let reverted: Vec<&str> = planned
        .iter()
        .filter(|p| matches!(p.outcome, Outcome::Revert(_)))
        .map(|p| p.object.as_str())
        .collect();
    assert_eq!(
        reverted,
        [
            "ClusterRole/engineering-debug",
            "ClusterRoleBinding/engineering-debug"
        ]
    );
    run_plan(&srv.client().await, &planned).await;
    assert!(report(&baseline, &state(&srv)).changes.is_empty());
}
