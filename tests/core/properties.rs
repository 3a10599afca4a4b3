//! Property tests of the diff's invariants over random RBAC and IAM states.

use permdrift::diff::{DiffOptions, diff};
use permdrift::grants::catalog::Catalog;
use permdrift::index::aws::{AwsModel, AwsObject};
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::model::aws::AwsKind;
use permdrift::report::{ChangeKind, Direction, Report};
use permdrift::snapshot::format::{self, Format};
use permdrift::snapshot::{Snapshot, SourceSnapshot};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Value, json};

const GROUPS: &[&str] = &["", "apps", "*"];
const RESOURCES: &[&str] = &[
    "pods",
    "secrets",
    "deployments",
    "pods/exec",
    "*",
    "*/scale",
    "deployments/scale",
];
const VERBS: &[&str] = &["get", "list", "create", "delete", "*", "escalate"];
const SUBJECTS: &[(&str, &str)] = &[
    ("User", "u1"),
    ("User", "u2"),
    ("Group", "g1"),
    ("Group", "system:authenticated"),
    ("ServiceAccount", "s1"),
];
const ROLES: &[&str] = &["r0", "r1", "r2", "r3"];
const NAMESPACES: &[&str] = &["a", "b"];

fn non_empty(items: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    subsequence(items, 1..=items.len().min(3))
}

fn rule() -> impl Strategy<Value = Value> {
    (
        non_empty(GROUPS),
        non_empty(RESOURCES),
        non_empty(VERBS),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(g, r, v, named)| {
            let mut rule = json!({"apiGroups": g, "resources": r, "verbs": v});
            if named {
                rule["resourceNames"] = json!(["n1"]);
            }
            rule
        })
}

fn cluster_role(name: &'static str) -> impl Strategy<Value = Value> {
    (proptest::collection::vec(rule(), 0..3), proptest::bool::weighted(0.3)).prop_map(move |(rules, labelled)| {
        let mut labels = json!({});
        if labelled {
            labels["agg"] = json!("true");
        }
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":name,"labels":labels},"rules":rules})
    })
}

fn subjects() -> impl Strategy<Value = Value> {
    subsequence(SUBJECTS, 1..=3).prop_map(|list| {
        Value::Array(
            list.into_iter()
                .map(|(kind, name)| {
                    if kind == "ServiceAccount" {
                        json!({"kind": kind, "name": name, "namespace": "a"})
                    } else {
                        json!({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"})
                    }
                })
                .collect(),
        )
    })
}

fn binding(index: usize) -> impl Strategy<Value = Value> {
    (select(ROLES), proptest::option::of(select(NAMESPACES)), subjects()).prop_map(move |(role, ns, subjects)| match ns {
        Some(ns) => json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding",
            "metadata":{"name":format!("b{index}"),"namespace":ns},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},"subjects":subjects}),
        None => json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
            "metadata":{"name":format!("b{index}")},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},"subjects":subjects}),
    })
}

/// A small random cluster: up to four roles, an optional aggregated role, up to four bindings.
fn cluster() -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.8), ROLES.len()),
        (cluster_role("r0"), cluster_role("r1"), cluster_role("r2"), cluster_role("r3")),
        proptest::bool::ANY,
        proptest::collection::vec(proptest::bool::weighted(0.6), 4),
        (binding(0), binding(1), binding(2), binding(3)),
    )
        .prop_map(|(present, (a, b, c, d), aggregated, bound, (w, x, y, z))| {
            let mut objects: Vec<Value> = [a, b, c, d].into_iter().zip(present).filter(|(_, p)| *p).map(|(o, _)| o).collect();
            if aggregated {
                objects.push(json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"r3"},
                    "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"agg":"true"}}]}}));
                // The aggregated role replaces any random r3.
                let mut seen = false;
                objects.retain(|o| {
                    if o["metadata"]["name"] == "r3" {
                        let keep = o.get("aggregationRule").is_some() && !seen;
                        seen |= keep;
                        keep
                    } else {
                        true
                    }
                });
            }
            objects.extend([w, x, y, z].into_iter().zip(bound).filter(|(_, b)| *b).map(|(o, _)| o));
            objects
        })
}

fn kube_snapshot(objects: &[Value]) -> Snapshot {
    let mut model = K8sModel::new();
    for o in objects {
        model.insert(K8sObject::from_raw(o.clone()).expect("valid object"));
    }
    let mut s = Snapshot::new();
    s.sources
        .insert("c".into(), SourceSnapshot::kubernetes("c", model));
    s
}

fn run(old: &Snapshot, new: &Snapshot) -> Report {
    diff(old, new, Catalog::embedded(), &DiffOptions::default())
}

fn flipped(d: Direction) -> Direction {
    match d {
        Direction::Widening => Direction::Narrowing,
        Direction::Narrowing => Direction::Widening,
        other => other,
    }
}

fn flipped_kind(k: ChangeKind) -> ChangeKind {
    match k {
        ChangeKind::Added => ChangeKind::Removed,
        ChangeKind::Removed => ChangeKind::Added,
        ChangeKind::Modified => ChangeKind::Modified,
    }
}

fn assert_swapped(ab: &Report, ba: &Report) -> Result<(), TestCaseError> {
    prop_assert_eq!(ab.changes.len(), ba.changes.len());
    for c in &ab.changes {
        let r = ba
            .changes
            .iter()
            .find(|r| r.object == c.object && r.source == c.source)
            .ok_or_else(|| TestCaseError::fail(format!("{:?} missing when swapped", c.object)))?;
        prop_assert_eq!(&r.gained, &c.lost);
        prop_assert_eq!(&r.lost, &c.gained);
        prop_assert_eq!(r.direction, flipped(c.direction));
        prop_assert_eq!(r.change, flipped_kind(c.change));
        if c.direction.widens() {
            prop_assert!(
                c.witness.is_some(),
                "widening without a witness: {:?}",
                c.object
            );
        }
    }
    Ok(())
}

/// Reorders every list whose order means nothing: objects, rules, subjects, list items.
fn shuffle(objects: &[Value], seed: u64) -> Vec<Value> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    fn shuffle_vec(v: &mut [Value], next: &mut dyn FnMut() -> u64) {
        for i in (1..v.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    let mut out = objects.to_vec();
    shuffle_vec(&mut out, &mut next);
    for o in &mut out {
        for list in ["rules", "subjects", "Statement"] {
            if let Some(Value::Array(items)) = o.get_mut(list) {
                shuffle_vec(items, &mut next);
                for item in items.iter_mut() {
                    if let Value::Object(map) = item {
                        for (_, v) in map.iter_mut() {
                            if let Value::Array(inner) = v {
                                shuffle_vec(inner, &mut next);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn diff_of_a_state_with_itself_is_empty(a in cluster()) {
        let s = kube_snapshot(&a);
        let report = run(&s, &s);
        prop_assert!(report.changes.is_empty());
        prop_assert!(report.subjects.is_empty());
    }

    #[test]
    fn swapping_old_and_new_swaps_gained_and_lost(a in cluster(), b in cluster()) {
        let (sa, sb) = (kube_snapshot(&a), kube_snapshot(&b));
        assert_swapped(&run(&sa, &sb), &run(&sb, &sa))?;
    }

    #[test]
    fn shuffling_changes_nothing(a in cluster(), seed in any::<u64>()) {
        let shuffled = shuffle(&a, seed);
        let (sa, ss) = (kube_snapshot(&a), kube_snapshot(&shuffled));
        prop_assert!(run(&sa, &ss).changes.is_empty());
        // Object order never reaches the snapshot file.
        let mut reordered = a.clone();
        reordered.reverse();
        let sr = kube_snapshot(&reordered);
        prop_assert_eq!(format::to_string(&sa, Format::Yaml).unwrap(), format::to_string(&sr, Format::Yaml).unwrap());
    }

    #[test]
    fn snapshot_output_is_idempotent(a in cluster()) {
        let s = kube_snapshot(&a);
        for f in [Format::Yaml, Format::Json] {
            let text = format::to_string(&s, f).unwrap();
            let value: Value = serde_yaml::from_str(&text).unwrap();
            let again = format::to_string(&format::from_value(value).unwrap(), f).unwrap();
            prop_assert_eq!(&again, &text);
        }
    }

    #[test]
    fn loading_over_a_base_gives_the_same_snapshot(a in cluster(), b in cluster()) {
        // NEW read over OLD (objects shared, index patched) must equal NEW read alone.
        let (sa, sb) = (kube_snapshot(&a), kube_snapshot(&b));
        let text = format::to_string(&sb, Format::Json).unwrap();
        let alone = format::from_json(&text).expect("fast path reads our own JSON");
        let over = format::from_json_over(&text, Some(&sa)).expect("fast path over a base");
        prop_assert_eq!(format::to_string(&over, Format::Json).unwrap(), text.clone());
        prop_assert_eq!(format::to_string(&alone, Format::Json).unwrap(), text);
        let (ra, ro) = (run(&sa, &alone), run(&sa, &over));
        prop_assert_eq!(serde_json::to_string(&ra).unwrap(), serde_json::to_string(&ro).unwrap());
        // And the patched index answers like a fresh one.
        let (ma, mo) = (alone.sources["c"].kube().unwrap(), over.sources["c"].kube().unwrap());
        for role in ["r0", "r1", "r2", "r3", "view"] {
            let key = permdrift::model::k8s::RbacKey::cluster_role(role);
            let mut x: Vec<_> = ma.bindings_of_role(&key).map(|(k, _)| k.clone()).collect();
            let mut y: Vec<_> = mo.bindings_of_role(&key).map(|(k, _)| k.clone()).collect();
            x.sort();
            y.sort();
            prop_assert_eq!(x, y);
        }
    }

    #[test]
    fn a_widening_is_never_already_allowed(a in cluster(), b in cluster()) {
        // Every gained grant is a perm the subject did not have anywhere in
        // OLD; every latent one, a perm its role did not cover in OLD or a
        // subject bound to a role NEW lacks.
        let (sa, sb) = (kube_snapshot(&a), kube_snapshot(&b));
        let old = sa.sources["c"].kube().unwrap();
        let new = sb.sources["c"].kube().unwrap();
        let report = run(&sa, &sb);
        let mut cache = permdrift::grants::k8s::PermCache::new(old);
        for c in &report.changes {
            for g in &c.gained {
                if g.latent {
                    let group = g.api_group.clone().unwrap_or_default();
                    match g.subject.strip_prefix("ClusterRole:") {
                        Some(role) => {
                            let before = cache.role(&permdrift::model::k8s::RbacKey::cluster_role(role));
                            let names: Vec<Option<&str>> = if g.resource_names.is_empty() { vec![None] } else { g.resource_names.iter().map(|n| Some(n.as_str())).collect() };
                            for name in names {
                                let perm = permdrift::grants::k8s_perm::Perm::Resource { group: &group, resource: &g.resource, verb: &g.action, name };
                                prop_assert!(!permdrift::grants::k8s_perm::covers(&before, &perm), "{:?} was already the role's", g);
                            }
                        }
                        None => {
                            let role = g.resource.strip_prefix("ClusterRole/").expect("a dangling ClusterRole");
                            prop_assert!(new.get(&permdrift::model::k8s::RbacKey::cluster_role(role)).is_none(), "{:?}: the role exists", g);
                        }
                    }
                    continue;
                }
                let subject = parse_subject(&g.subject);
                let scope = match g.scope.strip_prefix("namespace:") {
                    Some(ns) => permdrift::grants::k8s_perm::Scope::Namespace(ns),
                    None => permdrift::grants::k8s_perm::Scope::Cluster,
                };
                let group = g.api_group.clone().unwrap_or_default();
                let names: Vec<Option<&str>> = if g.resource_names.is_empty() { vec![None] } else { g.resource_names.iter().map(|n| Some(n.as_str())).collect() };
                for name in names {
                    let perm = permdrift::grants::k8s_perm::Perm::Resource { group: &group, resource: &g.resource, verb: &g.action, name };
                    prop_assert!(!cache.subject_covers(&subject, scope, &perm), "{:?} was already allowed", g);
                }
            }
        }
    }
}

fn parse_subject(s: &str) -> permdrift::model::k8s::Subject {
    let parts: Vec<&str> = s.splitn(3, ':').collect();
    match parts.as_slice() {
        ["ServiceAccount", ns, name] => permdrift::model::k8s::Subject::service_account(ns, name),
        ["Group", rest @ ..] => permdrift::model::k8s::Subject::group(&rest.join(":")),
        [_, rest @ ..] => permdrift::model::k8s::Subject::user(&rest.join(":")),
        _ => permdrift::model::k8s::Subject::user(s),
    }
}

const ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:*",
    "iam:PassRole",
    "iam:Get*",
    "ec2:Describe*",
    "sts:AssumeRole",
    "newsvc:Thing",
];
const ARNS: &[&str] = &[
    "*",
    "arn:aws:s3:::data/*",
    "arn:aws:s3:::data/private/*",
    "arn:aws:iam::1:role/app",
];

fn statement() -> impl Strategy<Value = Value> {
    (
        non_empty(ACTIONS),
        non_empty(ARNS),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(a, r, deny, cond)| {
            let mut s =
                json!({"Effect": if deny { "Deny" } else { "Allow" }, "Action": a, "Resource": r});
            if cond {
                s["Condition"] = json!({"Bool": {"aws:SecureTransport": "true"}});
            }
            s
        })
}

fn account() -> impl Strategy<Value = Vec<(AwsKind, Value)>> {
    (
        proptest::collection::vec(statement(), 1..4),
        proptest::collection::vec(statement(), 0..3),
        proptest::bool::ANY,
        proptest::bool::ANY,
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(managed, inline, in_group, attach, bounded)| {
            let mut user = json!({"UserName":"u","Arn":"arn:aws:iam::1:user/u",
                "UserPolicyList":[{"PolicyName":"i","PolicyDocument":{"Statement":inline}}]});
            if in_group {
                user["GroupList"] = json!(["g"]);
            }
            if bounded {
                user["PermissionsBoundary"] = json!({"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":"arn:aws:iam::1:policy/p"});
            }
            let mut group = json!({"GroupName":"g","Arn":"arn:aws:iam::1:group/g"});
            if attach {
                group["AttachedManagedPolicies"] = json!([{"PolicyArn":"arn:aws:iam::1:policy/p"}]);
            }
            let policy = json!({"PolicyName":"p","Arn":"arn:aws:iam::1:policy/p","DefaultVersionId":"v1",
                "PolicyVersionList":[{"VersionId":"v1","IsDefaultVersion":true,"Document":{"Statement":managed}}]});
            vec![(AwsKind::User, user), (AwsKind::Group, group), (AwsKind::Policy, policy)]
        })
}

fn iam_snapshot(entities: &[(AwsKind, Value)]) -> Snapshot {
    let mut model = AwsModel::new();
    for (kind, raw) in entities {
        let (key, object) = AwsObject::canonical(*kind, raw.clone()).expect("valid entity");
        model.insert(key, object);
    }
    let mut s = Snapshot::new();
    s.sources
        .insert("acct".into(), SourceSnapshot::aws("acct", model));
    s
}

/// Splits every multi-action statement into one statement per action, renaming Sids.
fn split_statements(entities: &[(AwsKind, Value)]) -> Vec<(AwsKind, Value)> {
    fn split(doc: &mut Value) {
        let Some(Value::Array(statements)) = doc.get_mut("Statement") else {
            return;
        };
        let mut out = Vec::new();
        for (i, s) in statements.iter().enumerate() {
            for (j, action) in s["Action"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let mut one = s.clone();
                one["Action"] = action;
                one["Sid"] = json!(format!("S{i}x{j}"));
                out.push(one);
            }
        }
        *statements = out;
    }
    entities
        .iter()
        .map(|(kind, v)| {
            let mut v = v.clone();
            if let Some(Value::Array(list)) = v.get_mut("UserPolicyList") {
                for p in list {
                    split(&mut p["PolicyDocument"]);
                }
            }
            if let Some(Value::Array(list)) = v.get_mut("PolicyVersionList") {
                for p in list {
                    split(&mut p["Document"]);
                }
            }
            (*kind, v)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn iam_swap_and_identity(a in account(), b in account()) {
        let (sa, sb) = (iam_snapshot(&a), iam_snapshot(&b));
        prop_assert!(run(&sa, &sa).changes.is_empty());
        assert_swapped(&run(&sa, &sb), &run(&sb, &sa))?;
    }

    #[test]
    fn iam_reformatting_is_neutral(a in account(), seed in any::<u64>()) {
        let sa = iam_snapshot(&a);
        // Reordered statements and lists are no change at all.
        let shuffled: Vec<(AwsKind, Value)> = a.iter().map(|(k, v)| {
            let mut v = v.clone();
            if let Some(Value::Array(list)) = v.get_mut("UserPolicyList") {
                for p in list.iter_mut() {
                    p["PolicyDocument"] = shuffle(&[p["PolicyDocument"].clone()], seed).remove(0);
                }
            }
            (*k, v)
        }).collect();
        prop_assert!(run(&sa, &iam_snapshot(&shuffled)).changes.is_empty());
        // Split statements and renamed Sids change the text but no permission.
        let report = run(&sa, &iam_snapshot(&split_statements(&a)));
        for c in &report.changes {
            prop_assert_eq!(c.direction, Direction::Neutral, "{:?}: {:?} {:?}", c.object, c.gained, c.lost);
        }
    }
}
