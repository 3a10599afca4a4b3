//! Deterministic synthetic clusters and accounts for benchmarks.
//!
//! `cluster` builds an RBAC state shaped like a real cluster's: Kubernetes'
//! own bootstrap policy (vendored in tests/data, with `admin`/`edit`/`view`
//! aggregation), operators that aggregate their CRD permissions into those
//! roles by label, thousands of namespaces each with service accounts, local
//! Roles and tens of RoleBindings (mostly to `admin`/`edit`/`view`), and
//! cluster-wide bindings. `mutate` changes a fraction of it the way a busy
//! cluster changes: rules edited, subjects added and removed, bindings
//! created and deleted, an operator role widened. `account` builds an IAM
//! account of roles over AWS's own managed policies.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::PathBuf;

/// splitmix64: a tiny deterministic generator, so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

pub struct ClusterShape {
    pub namespaces: usize,
    pub roles_per_namespace: usize,
    pub bindings_per_namespace: usize,
    pub service_accounts_per_namespace: usize,
    pub operators: usize,
    pub cluster_bindings: usize,
}

impl ClusterShape {
    /// About 100,000 objects, aggregation as in a typical cluster: the
    /// bootstrap roles plus 40 operators aggregating into admin/edit/view.
    pub fn large() -> Self {
        ClusterShape {
            namespaces: 2_550,
            roles_per_namespace: 8,
            bindings_per_namespace: 26,
            service_accounts_per_namespace: 3,
            operators: 40,
            cluster_bindings: 4_000,
        }
    }

    /// About 100,000 objects with heavy aggregation: 300 operators, so
    /// `admin` holds thousands of perms and an operator role reaches every
    /// admin/edit/view binding. A stress case.
    pub fn large_heavy_aggregation() -> Self {
        ClusterShape {
            namespaces: 2_500,
            roles_per_namespace: 8,
            bindings_per_namespace: 26,
            service_accounts_per_namespace: 3,
            operators: 300,
            cluster_bindings: 4_000,
        }
    }

    /// About 10,000 objects.
    pub fn medium() -> Self {
        ClusterShape {
            namespaces: 250,
            roles_per_namespace: 8,
            bindings_per_namespace: 26,
            service_accounts_per_namespace: 3,
            operators: 30,
            cluster_bindings: 400,
        }
    }
}

/// The real upstream data vendored for tests and benchmarks
/// (tests/data/PROVENANCE.md).
fn vendored_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The bootstrap ClusterRoles and bindings Kubernetes ships.
pub fn bootstrap() -> Vec<Value> {
    let mut out = Vec::new();
    for file in [
        "cluster-roles.yaml",
        "cluster-role-bindings.yaml",
        "controller-roles.yaml",
        "controller-role-bindings.yaml",
    ] {
        let path = vendored_data().join("k8s/bootstrap").join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let list: Value = serde_yaml::from_str(&text).expect("bootstrap yaml");
        out.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    out
}

const CORE_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "endpoints",
    "persistentvolumeclaims",
    "events",
    "pods/log",
];
const APPS_RESOURCES: &[&str] = &[
    "deployments",
    "statefulsets",
    "replicasets",
    "daemonsets",
    "deployments/scale",
];
const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

fn rule(rng: &mut Rng) -> Value {
    let (group, pool) = if rng.chance(60) {
        ("", CORE_RESOURCES)
    } else {
        ("apps", APPS_RESOURCES)
    };
    let mut resources: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(pool)).collect();
    resources.sort();
    resources.dedup();
    let mut verbs: Vec<&str> = (0..1 + rng.below(4)).map(|_| *rng.pick(VERBS)).collect();
    verbs.sort();
    verbs.dedup();
    let mut r = json!({"apiGroups": [group], "resources": resources, "verbs": verbs});
    if rng.chance(10) {
        r["resourceNames"] = json!([format!("item-{}", rng.below(50))]);
    }
    r
}

fn meta(name: &str, namespace: Option<&str>, rv: u64) -> Value {
    let mut m = json!({"name": name, "resourceVersion": rv.to_string(), "uid": format!("00000000-0000-4000-8000-{rv:012}"),
        "creationTimestamp": "2026-06-01T00:00:00Z"});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn subject(rng: &mut Rng, namespace: &str, sas: usize) -> Value {
    match rng.below(10) {
        0..=4 => {
            json!({"kind": "User", "name": format!("user-{}@example.com", rng.below(20_000)), "apiGroup": "rbac.authorization.k8s.io"})
        }
        5..=7 => {
            json!({"kind": "Group", "name": format!("team-{}", rng.below(500)), "apiGroup": "rbac.authorization.k8s.io"})
        }
        _ => {
            json!({"kind": "ServiceAccount", "name": format!("sa-{}", rng.below(sas.max(1))), "namespace": namespace})
        }
    }
}

/// A deterministic cluster of the given shape.
pub fn cluster(shape: &ClusterShape, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut rv = 1000u64;
    let mut next_rv = || {
        rv += 1;
        rv
    };
    let mut out = bootstrap();
    for op in 0..shape.operators {
        let group = format!("op{op}.example.com");
        for (level, verbs) in [
            ("view", vec!["get", "list", "watch"]),
            ("edit", vec!["create", "update", "patch", "delete"]),
            ("admin", vec!["deletecollection"]),
        ] {
            out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"labels": {format!("rbac.authorization.k8s.io/aggregate-to-{level}"): "true"}, "name": format!("op{op}-aggregate-to-{level}"),
                    "resourceVersion": next_rv().to_string()},
                "rules": [{"apiGroups": [group.clone()], "resources": ["widgets", "gadgets"], "verbs": verbs}]}));
        }
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(&format!("op{op}-controller"), None, next_rv()),
            "rules": [{"apiGroups": [group.clone()], "resources": ["*"], "verbs": ["*"]}, {"apiGroups": [""], "resources": ["configmaps", "events"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}]}));
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(&format!("op{op}-controller"), None, next_rv()),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("op{op}-controller")},
            "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": format!("op{op}-system")}]}));
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("controller", Some(&format!("op{op}-system")), next_rv())}));
    }
    for n in 0..shape.namespaces {
        let ns = format!("team-{n}");
        for s in 0..shape.service_accounts_per_namespace {
            out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&format!("sa-{s}"), Some(&ns), next_rv())}));
        }
        for r in 0..shape.roles_per_namespace {
            let rules: Vec<Value> = (0..2 + rng.below(3)).map(|_| rule(&mut rng)).collect();
            out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(&format!("role-{r}"), Some(&ns), next_rv()), "rules": rules}));
        }
        for b in 0..shape.bindings_per_namespace {
            let role_ref = if rng.chance(35) {
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("role-{}", rng.below(shape.roles_per_namespace))})
            } else {
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": *rng.pick(&["view", "view", "edit", "edit", "admin"])})
            };
            let subjects: Vec<Value> = (0..1 + rng.below(3))
                .map(|_| subject(&mut rng, &ns, shape.service_accounts_per_namespace))
                .collect();
            out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(&format!("binding-{b}"), Some(&ns), next_rv()),
                "roleRef": role_ref, "subjects": subjects}));
        }
    }
    for c in 0..shape.cluster_bindings {
        let role = if rng.chance(80) {
            "view".to_owned()
        } else {
            format!("op{}-aggregate-to-view", rng.below(shape.operators.max(1)))
        };
        let subjects: Vec<Value> = (0..1 + rng.below(2))
            .map(|_| subject(&mut rng, "default", 1))
            .collect();
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(&format!("readers-{c}"), None, next_rv()),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": subjects}));
    }
    out
}

/// Writes `cluster(shape, seed)` as a `List` (the test server's `--load`
/// format), each object given one managedFields entry as real objects have.
/// Returns the number of objects.
pub fn write_cluster_list(shape: &ClusterShape, seed: u64, path: &std::path::Path) -> usize {
    let mut objects = cluster(shape, seed);
    for o in &mut objects {
        let api_version = o["apiVersion"].clone();
        o["metadata"]["managedFields"] = json!([{
            "apiVersion": api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:rules": {}, "f:roleRef": {}, "f:subjects": {}},
            "manager": "helm",
            "operation": "Update",
            "time": "2026-11-01T09:00:00Z"
        }]);
    }
    let n = objects.len();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(path, serde_json::to_vec(&list).expect("cluster JSON")).expect("write cluster");
    n
}

/// Changes `per_mille` thousandths of the objects: edits, additions, deletions.
pub fn mutate(objects: &[Value], per_mille: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut out = objects.to_vec();
    let changes = objects.len() * per_mille / 1000;
    let mut deleted = std::collections::BTreeSet::new();
    for i in 0..changes {
        let index = rng.below(out.len());
        let kind = out[index]["kind"].as_str().unwrap_or_default().to_owned();
        match (i % 10, kind.as_str()) {
            // A new binding in an existing namespace.
            (0, _) => {
                let ns = format!("team-{}", rng.below(1000));
                let role = *rng.pick(&["view", "edit", "admin"]);
                let subj = subject(&mut rng, &ns, 3);
                out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("added-{i}"), "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": [subj]}));
            }
            // A deletion.
            (1, _) => {
                deleted.insert(index);
            }
            (_, "Role" | "ClusterRole") => {
                let r = rule(&mut rng);
                match out[index]["rules"].as_array_mut() {
                    Some(rules) => rules.push(r),
                    None => out[index]["rules"] = json!([r]),
                }
            }
            (_, "RoleBinding" | "ClusterRoleBinding") => {
                let ns = out[index]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                let subj = subject(&mut rng, &ns, 3);
                if let Some(subjects) = out[index]["subjects"].as_array_mut() {
                    if subjects.len() > 1 && rng.chance(40) {
                        subjects.pop();
                    } else {
                        subjects.push(subj);
                    }
                }
            }
            _ => {
                out[index]["metadata"]["labels"] = json!({"touched": "true"});
            }
        }
    }
    // Widen one operator's aggregated role: reaches every admin/edit/view binding.
    if let Some(op) = out
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "op0-aggregate-to-view")
        && let Some(rules) = op["rules"].as_array_mut()
    {
        rules.push(json!({"apiGroups": ["op0.example.com"], "resources": ["secrets-mirror"], "verbs": ["get", "list"]}));
    }
    out.into_iter()
        .enumerate()
        .filter(|(i, _)| !deleted.contains(i))
        .map(|(_, o)| o)
        .collect()
}

/// An IAM account: `roles` roles over AWS's managed policies, each attaching
/// one to four of them plus an inline policy, as GetAccountAuthorizationDetails output.
pub fn account(roles: usize, seed: u64) -> Value {
    let mut rng = Rng::new(seed);
    let file = std::fs::File::open(vendored_data().join("aws/managed-policies.json.gz"))
        .expect("managed policies");
    let managed: Vec<Value> =
        serde_json::from_reader(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
            .expect("managed policies json");
    let policies: Vec<Value> = managed
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default();
            let arn = p["arn"].as_str().map(str::to_owned).unwrap_or_else(|| format!("arn:aws:iam::aws:policy/{name}"));
            json!({"PolicyName": name, "Arn": arn, "Path": "/", "DefaultVersionId": p["version_id"], "IsAttachable": true,
                "PolicyVersionList": [{"VersionId": p["version_id"], "IsDefaultVersion": true, "Document": p["document"]}]})
        })
        .collect();
    let arns: Vec<String> = policies
        .iter()
        .map(|p| p["Arn"].as_str().unwrap_or_default().to_owned())
        .collect();
    let account = "444455556666";
    let role_list: Vec<Value> = (0..roles)
        .map(|i| {
            let attached: Vec<Value> = (0..1 + rng.below(4)).map(|_| json!({"PolicyArn": rng.pick(&arns)})).collect();
            let trust = match i % 3 {
                0 => json!({"Service": "lambda.amazonaws.com"}),
                1 => json!({"AWS": format!("arn:aws:iam::{account}:root")}),
                _ => json!({"AWS": "arn:aws:iam::777788889999:role/ci"}),
            };
            json!({"RoleName": format!("app-{i}"), "Arn": format!("arn:aws:iam::{account}:role/app-{i}"), "Path": "/",
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": trust, "Action": "sts:AssumeRole"}]},
                "AttachedManagedPolicies": attached,
                "RolePolicyList": [{"PolicyName": "inline", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": format!("arn:aws:s3:::bucket-{}/*", i % 97)}]}}]})
        })
        .collect();
    json!({"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": role_list, "Policies": policies})
}

/// Changes `per_mille` thousandths of the roles: attachments added and removed, inline policies widened.
pub fn mutate_account(doc: &Value, per_mille: usize, seed: u64) -> Value {
    let mut rng = Rng::new(seed);
    let mut out = doc.clone();
    let arns: Vec<Value> = out["Policies"]
        .as_array()
        .map(|p| p.iter().map(|p| p["Arn"].clone()).collect())
        .unwrap_or_default();
    let roles = out["RoleDetailList"].as_array_mut().expect("roles");
    let changes = roles.len() * per_mille / 1000;
    for i in 0..changes {
        let index = rng.below(roles.len());
        let role = &mut roles[index];
        match i % 3 {
            0 => {
                if let Some(list) = role["AttachedManagedPolicies"].as_array_mut() {
                    list.push(json!({"PolicyArn": rng.pick(&arns)}));
                }
            }
            1 => {
                if let Some(list) = role["AttachedManagedPolicies"].as_array_mut() {
                    list.pop();
                }
            }
            _ => {
                role["RolePolicyList"][0]["PolicyDocument"]["Statement"][0]["Action"] =
                    json!("s3:*");
            }
        }
    }
    out
}

/// Wall seconds and peak RSS (KiB) from the last line of GNU time's
/// `-f '%e %M'` output (the line after everything the program printed).
pub fn gnu_time(output: &str) -> (Option<f64>, Option<u64>) {
    let mut fields = output.lines().last().unwrap_or_default().split_whitespace();
    let seconds = fields.next().and_then(|s| s.parse().ok());
    let peak_kib = fields.next().and_then(|s| s.parse().ok());
    (seconds, peak_kib)
}
