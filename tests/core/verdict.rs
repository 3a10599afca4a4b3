//! Verdicts a reviewer relies on, end to end through `permdrift diff`:
//! latent (role-level) widening, bindings waiting for their role, system
//! groups, and risk tags that must not miss real exposure.

use crate::support::*;
use serde_json::{Value, json};

/// Kubernetes' bootstrap `cluster-roles.yaml`, vendored from upstream.
fn bootstrap() -> String {
    std::fs::read_to_string(data("k8s-bootstrap/cluster-roles.yaml")).expect("vendored file")
}

/// The next release, changed the way upstream releases change it: the
/// long-deprecated `extensions` group leaves `system:aggregate-to-edit` (so
/// `edit` and `admin`, which aggregate it, lose it) and `system:node` gains
/// rules for a new API (cluster trust bundles, dynamic resource slices).
fn next_release(text: &str) -> String {
    let extensions = "  - apiGroups:
    - extensions
    resources:
    - daemonsets
    - deployments
    - deployments/rollback
    - deployments/scale
    - ingresses
    - networkpolicies
    - replicasets
    - replicasets/scale
    - replicationcontrollers/scale
    verbs:
    - create
    - delete
    - deletecollection
    - patch
    - update
";
    assert_eq!(
        text.matches(extensions).count(),
        1,
        "the rule upstream dropped"
    );
    let text = text.replacen(extensions, "", 1);
    let node = "    name: system:node
  rules:
";
    assert_eq!(text.matches(node).count(), 1);
    text.replacen(
        node,
        &format!(
            "{node}  - apiGroups:
    - certificates.k8s.io
    resources:
    - clustertrustbundles
    verbs:
    - get
    - list
    - watch
  - apiGroups:
    - resource.k8s.io
    resources:
    - resourceslices
    verbs:
    - create
    - delete
    - get
    - list
    - update
    - watch
"
        ),
        1,
    )
}

fn latent_subjects(grants: &Value) -> Vec<String> {
    let mut out: Vec<String> = grants
        .as_array()
        .expect("grants")
        .iter()
        .filter(|g| g["latent"] == true)
        .map(|g| g["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.dedup();
    out
}

#[test]
fn bootstrap_releases_move_admin_edit_and_node_the_right_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_text = bootstrap();
    let old = write(dir.path(), "old.yaml", &old_text);
    let new = write(dir.path(), "new.yaml", &next_release(&old_text));
    // The same release against itself: nothing.
    assert_eq!(diff(&old, &old)["summary"]["changes"], 0);

    let forward = diff(&old, &new);
    assert_eq!(forward["summary"]["changes"], 2, "{forward:#}");
    // Nobody is bound in this file: every move is latent, and no subject appears.
    assert_eq!(forward["subjects"], json!([]));

    let edit = change(&forward, "ClusterRole", "system:aggregate-to-edit");
    assert_eq!(verdict(edit), ("narrowing".into(), "info".into()));
    assert_eq!(
        latent_subjects(&edit["lost"]),
        [
            "ClusterRole:admin",
            "ClusterRole:edit",
            "ClusterRole:system:aggregate-to-edit"
        ]
    );
    for g in edit["lost"].as_array().unwrap() {
        assert_eq!(g["api_group"], "extensions", "{g}");
    }
    assert_eq!(
        edit["lost_count"],
        3 * 9 * 5,
        "9 resources, 5 verbs, lost by 3 roles"
    );

    let node = change(&forward, "ClusterRole", "system:node");
    assert_eq!(verdict(node), ("widening".into(), "medium".into()));
    assert_eq!(
        latent_subjects(&node["gained"]),
        ["ClusterRole:system:node"]
    );
    assert_eq!(node["gained_count"], 9);
    let witness = node["witness"]["explanation"].as_str().unwrap();
    assert!(
        witness.starts_with("anyone bound to ClusterRole/system:node could now")
            && witness.ends_with("; nobody is bound today"),
        "{witness}"
    );
    assert_eq!(node["witness"]["subject"], "ClusterRole:system:node");

    // Back again: the same moves, reversed.
    let back = diff(&new, &old);
    let edit = change(&back, "ClusterRole", "system:aggregate-to-edit");
    assert_eq!(verdict(edit), ("widening".into(), "medium".into()));
    let node = change(&back, "ClusterRole", "system:node");
    assert_eq!(verdict(node), ("narrowing".into(), "info".into()));
}

#[test]
fn a_new_role_granting_node_proxy_or_exec_is_flagged_before_anyone_is_bound() {
    for (resource, verb, tag) in [
        ("nodes/proxy", "get", "nodes-proxy"),
        ("pods/exec", "create", "pod-exec"),
    ] {
        let role = cluster_role(
            "debugger",
            json!([{"apiGroups":[""],"resources":[resource],"verbs":[verb]}]),
        );
        let report = diff_kube(&[], std::slice::from_ref(&role));
        let c = change(&report, "ClusterRole", "debugger");
        // High if anyone held it; nobody does, so it waits at medium.
        assert_eq!(verdict(c), ("widening".into(), "medium".into()), "{c:#}");
        assert!(risks(c).contains(&tag.to_owned()), "{c:#}");
        assert_eq!(
            gained_lines(c),
            [format!("ClusterRole:debugger {verb} {resource}")]
        );
        assert_eq!(report["subjects"], json!([]));
        let witness = c["witness"]["explanation"].as_str().unwrap();
        assert!(
            witness.starts_with(&format!(
                "anyone bound to ClusterRole/debugger could now {verb} {resource} cluster-wide"
            )),
            "{witness}"
        );

        // Once someone is bound, the binding carries today's per-subject verdict.
        let binding = cluster_role_binding("debuggers", "debugger", json!([group("eng")]));
        let report = diff_kube(std::slice::from_ref(&role), &[role.clone(), binding]);
        let c = change(&report, "ClusterRoleBinding", "debuggers");
        assert_eq!(verdict(c), ("widening".into(), "high".into()));
        assert_eq!(gained_lines(c), [format!("Group:eng {verb} {resource}")]);
    }
}

#[test]
fn a_role_change_that_reaches_subjects_keeps_their_verdict() {
    let before = cluster_role(
        "reader",
        json!([{"apiGroups":[""],"resources":["configmaps"],"verbs":["get"]}]),
    );
    let after = cluster_role(
        "reader",
        json!([{"apiGroups":[""],"resources":["configmaps","secrets"],"verbs":["get"]}]),
    );
    let binding = cluster_role_binding("readers", "reader", json!([group("eng")]));
    let report = diff_kube(&[before, binding.clone()], &[after, binding]);
    let c = change(&report, "ClusterRole", "reader");
    assert_eq!(verdict(c), ("widening".into(), "high".into()));
    assert_eq!(
        gained_lines(c),
        ["Group:eng get secrets", "ClusterRole:reader get secrets"]
    );
    assert!(
        c["witness"]["explanation"]
            .as_str()
            .unwrap()
            .starts_with("Group:eng can now get secrets")
    );
    // The role's own line is not a subject's.
    let subjects: Vec<&str> = report["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["Group:eng"]);
}

#[test]
fn system_groups_bound_to_a_role_that_does_not_exist_yet() {
    for subject in [
        user("system:anonymous"),
        group("system:authenticated"),
        group("system:unauthenticated"),
    ] {
        let name = subject["name"].as_str().unwrap().to_owned();
        let binding = cluster_role_binding("everyone", "not-yet", json!([subject]));
        let report = diff_kube(&[], std::slice::from_ref(&binding));
        let c = change(&report, "ClusterRoleBinding", "everyone");
        assert_eq!(verdict(c), ("widening".into(), "medium".into()), "{c:#}");
        assert_eq!(risks(c), ["system-group-binding", "dangling-role-ref"]);
        let g = &c["gained"][0];
        assert_eq!(
            (&g["action"], &g["resource"], &g["latent"]),
            (&json!("*"), &json!("ClusterRole/not-yet"), &json!(true))
        );
        assert!(g["subject"].as_str().unwrap().ends_with(&name));
        assert!(
            c["witness"]["explanation"]
                .as_str()
                .unwrap()
                .contains("ClusterRole/not-yet, which does not exist"),
            "{c:#}"
        );
        assert_eq!(report["subjects"], json!([]), "nobody holds anything yet");

        // The role appears: today's per-subject logic reports the real gain.
        let role = cluster_role(
            "not-yet",
            json!([{"apiGroups":[""],"resources":["pods"],"verbs":["list"]}]),
        );
        let report = diff_kube(std::slice::from_ref(&binding), &[binding.clone(), role]);
        let c = change(&report, "ClusterRole", "not-yet");
        assert_eq!(verdict(c), ("widening".into(), "critical".into()));
        assert!(risks(c).contains(&"system-group-binding".to_owned()));
    }
}

#[test]
fn a_system_group_binding_is_tagged_even_when_it_grants_nothing_new() {
    let empty = cluster_role("nothing", json!([]));
    let binding = cluster_role_binding("masters", "nothing", json!([group("system:masters")]));
    let report = diff_kube(std::slice::from_ref(&empty), &[empty.clone(), binding]);
    let c = change(&report, "ClusterRoleBinding", "masters");
    assert_eq!(verdict(c), ("neutral".into(), "info".into()));
    assert_eq!(risks(c), ["system-group-binding"]);
}

#[test]
fn a_role_binding_to_a_missing_role_named_like_a_cluster_role() {
    let admin = cluster_role(
        "cluster-admin",
        json!([{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]),
    );
    let binding = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding",
        "metadata":{"name":"foo-admin","namespace":"payments"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"cluster-admin"},
        "subjects":[user("foo")]});
    let report = diff_kube(
        std::slice::from_ref(&admin),
        &[admin.clone(), binding.clone()],
    );
    let c = change(&report, "RoleBinding", "foo-admin");
    assert_eq!(verdict(c), ("widening".into(), "medium".into()));
    assert_eq!(risks(c), ["dangling-role-ref"]);
    assert_eq!(gained_lines(c), ["User:foo * Role/payments/cluster-admin"]);
    let witness = c["witness"]["explanation"].as_str().unwrap();
    assert!(
        witness.contains("a ClusterRole named \"cluster-admin\" exists"),
        "{witness}"
    );
    assert_eq!(c["witness"]["scope"], "namespace:payments");
    // Editing the binding's labels while it still dangles is no new widening.
    let mut relabelled = binding.clone();
    relabelled["metadata"]["labels"] = json!({"team": "payments"});
    let report = diff_kube(&[admin.clone(), binding], &[admin, relabelled]);
    let c = change(&report, "RoleBinding", "foo-admin");
    assert_eq!(verdict(c), ("neutral".into(), "info".into()));
}

#[test]
fn patching_ephemeral_containers_is_pod_exec() {
    let role = cluster_role(
        "debug",
        json!([{"apiGroups":[""],"resources":["pods/ephemeralcontainers"],"verbs":["patch"]}]),
    );
    let binding = cluster_role_binding("debug", "debug", json!([group("eng")]));
    let report = diff_kube(std::slice::from_ref(&role), &[role.clone(), binding]);
    let c = change(&report, "ClusterRoleBinding", "debug");
    assert_eq!(verdict(c), ("widening".into(), "high".into()));
    assert_eq!(risks(c), ["pod-exec"]);
}

#[test]
fn rbac_words_in_the_wrong_case_grant_nothing_and_say_so() {
    let before = cluster_role("reader", json!([]));
    let after = cluster_role(
        "reader",
        json!([{"apiGroups":[""],"resources":["Secrets"],"verbs":["GET"]}]),
    );
    let binding = cluster_role_binding("readers", "reader", json!([group("eng")]));
    let report = diff_kube(&[before, binding.clone()], &[after, binding]);
    let c = change(&report, "ClusterRole", "reader");
    assert_eq!(verdict(c), ("neutral".into(), "info".into()));
    assert_eq!(c["gained_count"], 0);
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("ClusterRole/reader rules[0].verbs: \"GET\"")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("ClusterRole/reader rules[0].resources: \"Secrets\"")),
        "{warnings:?}"
    );
}

fn role_trusting(name: &str, statement: Value) -> Value {
    json!({"RoleName": name, "Arn": format!("arn:aws:iam::111122223333:role/{name}"),
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "RolePolicyList": [], "AttachedManagedPolicies": []})
}

#[test]
fn federated_trust_without_a_narrowing_condition_is_public() {
    let github = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com";
    let cases = [
        (
            json!({"Effect":"Allow","Principal":{"Federated":github},"Action":"sts:AssumeRoleWithWebIdentity",
                "Condition":{"StringEquals":{"token.actions.githubusercontent.com:aud":"sts.amazonaws.com"}}}),
            true,
            "any GitHub repository",
        ),
        (
            json!({"Effect":"Allow","Principal":{"Federated":github},"Action":"sts:AssumeRoleWithWebIdentity",
                "Condition":{"StringLike":{"token.actions.githubusercontent.com:sub":"repo:*"}}}),
            true,
            "any GitHub repository",
        ),
        (
            json!({"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com"},
                "Action":"sts:AssumeRoleWithWebIdentity"}),
            true,
            "any Cognito identity pool",
        ),
        (
            json!({"Effect":"Allow","Principal":{"Federated":github},"Action":"sts:AssumeRoleWithWebIdentity",
                "Condition":{"StringLike":{"token.actions.githubusercontent.com:sub":"repo:acme/deploy:ref:refs/heads/main"}}}),
            false,
            "",
        ),
        (
            json!({"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com"},
                "Action":"sts:AssumeRoleWithWebIdentity",
                "Condition":{"StringEquals":{"cognito-identity.amazonaws.com:aud":"eu-west-1:0c4b1a5e-1111-2222-3333-444455556666"}}}),
            false,
            "",
        ),
    ];
    for (statement, public, who) in cases {
        let old = account(vec![], vec![], vec![]);
        let new = account(
            vec![role_trusting("deploy", statement.clone())],
            vec![],
            vec![],
        );
        let report = diff_iam(&old, &new);
        let c = change(&report, "Role", "deploy");
        let tags = risks(c);
        let explanation = c["witness"]["explanation"].as_str().unwrap();
        if public {
            assert_eq!(
                verdict(c),
                ("widening".into(), "critical".into()),
                "{statement}"
            );
            assert!(
                tags.contains(&"trust-public".to_owned()),
                "{statement}: {tags:?}"
            );
            assert!(explanation.starts_with(who), "{explanation}");
        } else {
            assert_eq!(
                verdict(c),
                ("widening".into(), "medium".into()),
                "{statement}"
            );
            assert_eq!(tags, ["trust-widened"], "{statement}");
        }
    }
}

fn user_with(name: &str, inline: Value) -> Value {
    json!({"UserName": name, "Arn": format!("arn:aws:iam::111122223333:user/{name}"),
        "UserPolicyList": [{"PolicyName": "own", "PolicyDocument": {"Version": "2012-10-17", "Statement": inline}}],
        "AttachedManagedPolicies": [], "GroupList": []})
}

#[test]
fn star_on_star_stays_admin_for_a_principal_that_held_a_broad_grant() {
    let s3 = json!({"Effect":"Allow","Action":"s3:*","Resource":"*"});
    let all = json!({"Effect":"Allow","Action":"*","Resource":"*"});
    let old = account(vec![], vec![user_with("ops", json!([s3]))], vec![]);
    let new = account(vec![], vec![user_with("ops", json!([s3, all]))], vec![]);
    let report = diff_iam(&old, &new);
    let c = change(&report, "User", "ops");
    assert_eq!(verdict(c), ("widening".into(), "critical".into()));
    assert!(risks(c).contains(&"admin".to_owned()), "{:?}", risks(c));
    // A broad grant short of everything is not admin.
    let most = json!({"Effect":"Allow","NotAction":"iam:*","Resource":"*"});
    let new = account(vec![], vec![user_with("ops", json!([s3, most]))], vec![]);
    let c = change(&diff_iam(&old, &new), "User", "ops").clone();
    assert!(!risks(&c).contains(&"admin".to_owned()), "{:?}", risks(&c));
}

#[test]
fn a_policy_attached_and_listed_in_new_raises_no_missing_warning() {
    let arn = "arn:aws:iam::111122223333:policy/reader";
    let doc = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]});
    let mut role = role_trusting(
        "app",
        json!({"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}),
    );
    let old = account(vec![role.clone()], vec![], vec![]);
    role["AttachedManagedPolicies"] = json!([{"PolicyName":"reader","PolicyArn":arn}]);
    let new = account(vec![role], vec![], vec![managed_policy(arn, doc)]);
    let report = diff_iam(&old, &new);
    assert_eq!(report.get("warnings"), None, "{report:#}");
    let c = change(&report, "Role", "app");
    assert_eq!(verdict(c), ("widening".into(), "low".into()));
    // Attached but truly absent still warns.
    let mut role = role_trusting(
        "app",
        json!({"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}),
    );
    role["AttachedManagedPolicies"] = json!([{"PolicyName":"reader","PolicyArn":arn}]);
    let report = diff_iam(&old, &account(vec![role], vec![], vec![]));
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("is attached but not in the snapshot")
    );
}
