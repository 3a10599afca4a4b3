//! The kind table. Built-in kinds are one declarative [`BUILTINS`] entry each;
//! CustomResourceDefinitions add [`KindDef`]s at run time. Request routing,
//! discovery, table printing and the write paths all look kinds up here by
//! (group, plural) or (group, kind).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// How the server-side table printer renders a kind (see `table.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    /// NAME, CREATED AT (what the real server prints for roles and CRDs)
    CreatedAt,
    /// NAME, ROLE, AGE (+ USERS, GROUPS, SERVICEACCOUNTS wide)
    Binding,
    Namespace,
    ServiceAccount,
    ConfigMap,
    Secret,
    Lease,
    CoreEvent,
    Event,
    /// NAME, AGE plus a CRD's additionalPrinterColumns
    Custom,
}

/// A static description of a built-in kind.
struct Builtin {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    namespaced: bool,
    status: bool,
    /// PUT on a missing object creates it (RBAC, leases, events do this)
    create_on_update: bool,
    /// DELETE answers with the object instead of a success Status
    return_deleted: bool,
    deletecollection: bool,
    printer: Printer,
}

const RBAC: &str = "rbac.authorization.k8s.io";
/// v1beta1 RBAC paths are still answered (kubectl never asks, old tools might).
const RBAC_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The built-in kinds; adding one is one entry.
const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: false,
        printer: Printer::Namespace,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::ServiceAccount,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: false,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::ConfigMap,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: false,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::Secret,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::CoreEvent,
    },
    // Served so that RBAC rules naming them resolve in kubectl (`create role
    // --resource=pods`); stored like any other kind, no controllers.
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::Custom,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: false,
        printer: Printer::Custom,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::Custom,
    },
    Builtin {
        group: "apps",
        versions: &["v1"],
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        categories: &["all"],
        namespaced: true,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::Custom,
    },
    Builtin {
        group: RBAC,
        versions: RBAC_VERSIONS,
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        categories: &[],
        namespaced: false,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::CreatedAt,
    },
    Builtin {
        group: RBAC,
        versions: RBAC_VERSIONS,
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        categories: &[],
        namespaced: false,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::Binding,
    },
    Builtin {
        group: RBAC,
        versions: RBAC_VERSIONS,
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::CreatedAt,
    },
    Builtin {
        group: RBAC,
        versions: RBAC_VERSIONS,
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::Binding,
    },
    Builtin {
        group: "events.k8s.io",
        versions: &["v1"],
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::Event,
    },
    Builtin {
        group: "coordination.k8s.io",
        versions: &["v1"],
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        create_on_update: true,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::Lease,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        versions: &["v1"],
        kind: "ValidatingWebhookConfiguration",
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        short_names: &[],
        categories: &["api-extensions"],
        namespaced: false,
        status: false,
        create_on_update: false,
        return_deleted: false,
        deletecollection: true,
        printer: Printer::CreatedAt,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        versions: &["v1"],
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        namespaced: false,
        status: true,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::CreatedAt,
    },
];

/// An additionalPrinterColumn of a CRD version.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Everything the server knows about one resource.
#[derive(Debug, Clone)]
pub struct KindDef {
    pub group: String,
    /// served versions, preferred first
    pub versions: Vec<String>,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub create_on_update: bool,
    pub return_deleted: bool,
    pub deletecollection: bool,
    pub printer: Printer,
    pub printer_columns: Vec<PrinterColumn>,
    /// set for kinds registered by a CRD
    pub from_crd: bool,
    /// an access or token review: create-only, answered, never stored
    pub review: bool,
}

impl KindDef {
    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.review {
            return vec!["create"];
        }
        let mut v = vec!["create", "delete"];
        if self.deletecollection {
            v.push("deletecollection");
        }
        v.extend(["get", "list", "patch", "update", "watch"]);
        v
    }
}

/// Key of a resource: (group, plural).
pub type ResKey = (String, String);

/// All kinds currently served.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<ResKey, Arc<KindDef>>,
    /// group order for /apis: built-ins in table order, CRD groups after
    group_order: Vec<String>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for b in BUILTINS {
            let kd = KindDef {
                group: b.group.into(),
                versions: b.versions.iter().map(|s| s.to_string()).collect(),
                kind: b.kind.into(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.into(),
                singular: b.singular.into(),
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                namespaced: b.namespaced,
                status_subresource: b.status,
                create_on_update: b.create_on_update,
                return_deleted: b.return_deleted,
                deletecollection: b.deletecollection,
                printer: b.printer,
                printer_columns: Vec::new(),
                from_crd: false,
                review: false,
            };
            r.insert(kd);
        }
        // Access reviews (`kubectl auth can-i`), answered by the authorizer,
        // and token reviews, answered from the token table.
        for (group, kind, plural) in [
            (
                "authorization.k8s.io",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
            ),
            (
                "authorization.k8s.io",
                "SubjectAccessReview",
                "subjectaccessreviews",
            ),
            ("authentication.k8s.io", "TokenReview", "tokenreviews"),
        ] {
            r.insert(KindDef {
                group: group.into(),
                versions: vec!["v1".into()],
                kind: kind.into(),
                list_kind: format!("{kind}List"),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                short_names: Vec::new(),
                categories: Vec::new(),
                namespaced: false,
                status_subresource: false,
                create_on_update: false,
                return_deleted: false,
                deletecollection: false,
                printer: Printer::Custom,
                printer_columns: Vec::new(),
                from_crd: false,
                review: true,
            });
        }
        r
    }

    fn insert(&mut self, kd: KindDef) {
        if !self.group_order.contains(&kd.group) {
            self.group_order.push(kd.group.clone());
        }
        self.kinds
            .insert((kd.group.clone(), kd.plural.clone()), Arc::new(kd));
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<KindDef>> {
        self.kinds
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    /// Looks up a kind served at group/version.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<KindDef>> {
        self.get(group, plural).filter(|k| k.serves(version))
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<KindDef>> {
        self.kinds
            .values()
            .find(|k| k.group == group && k.kind == kind)
            .cloned()
    }

    /// Groups (core "" first) with their served versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for g in &self.group_order {
            let mut versions: Vec<String> = Vec::new();
            for k in self.kinds.values().filter(|k| &k.group == g) {
                for v in &k.versions {
                    if !versions.contains(v) {
                        versions.push(v.clone());
                    }
                }
            }
            if versions.is_empty() {
                continue;
            }
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
            out.push((g.clone(), versions));
        }
        out
    }

    pub fn kinds_in(&self, group: &str, version: &str) -> Vec<Arc<KindDef>> {
        self.kinds
            .values()
            .filter(|k| k.group == group && k.serves(version))
            .cloned()
            .collect()
    }

    /// Registers (or re-registers) the kind a CRD object defines.
    pub fn upsert_crd(&mut self, kd: KindDef) {
        self.insert(kd);
    }

    pub fn remove_crd(&mut self, group: &str, plural: &str) {
        let key = (group.to_string(), plural.to_string());
        if self.kinds.get(&key).is_some_and(|k| k.from_crd) {
            self.kinds.remove(&key);
        }
        if !self.kinds.values().any(|k| k.group == group) {
            self.group_order.retain(|g| g != group);
        }
    }
}

/// Kubernetes version ordering: GA > beta > alpha, then higher numbers first;
/// strings that are not kube-like versions sort last.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (word, level) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(word)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (level, major, minor);
        }
    }
    (0, 0, 0)
}

/// Errors in a CustomResourceDefinition that stop it from being served.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("{0}: Required value")]
    Missing(&'static str),
    #[error("metadata.name: Invalid value: {0:?}: must be spec.names.plural+\".\"+spec.group")]
    BadName(String),
    #[error(
        "spec.versions: Invalid value: must have exactly one version marked as storage version"
    )]
    NoVersion,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the kind a CRD object serves.
pub fn kind_from_crd(crd: &Value) -> Result<KindDef, CrdError> {
    let group = str_at(crd, &["spec", "group"]).ok_or(CrdError::Missing("spec.group"))?;
    let plural =
        str_at(crd, &["spec", "names", "plural"]).ok_or(CrdError::Missing("spec.names.plural"))?;
    let kind =
        str_at(crd, &["spec", "names", "kind"]).ok_or(CrdError::Missing("spec.names.kind"))?;
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(CrdError::BadName(name.to_string()));
    }
    let singular = str_at(crd, &["spec", "names", "singular"])
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(crd, &["spec", "names", "listKind"])
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let namespaced = str_at(crd, &["spec", "scope"]) != Some("Cluster");
    let versions_v = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut served: Vec<&Value> = versions_v
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .collect();
    if served.is_empty() {
        return Err(CrdError::NoVersion);
    }
    served.sort_by(|a, b| {
        let va = a.get("name").and_then(Value::as_str).unwrap_or_default();
        let vb = b.get("name").and_then(Value::as_str).unwrap_or_default();
        version_priority(vb)
            .cmp(&version_priority(va))
            .then_with(|| va.cmp(vb))
    });
    let preferred = served[0];
    let status_subresource = preferred.pointer("/subresources/status").is_some();
    let printer_columns = preferred
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    Some(PrinterColumn {
                        name: c.get("name")?.as_str()?.to_string(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_string(),
                        format: c
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: c.get("jsonPath")?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(KindDef {
        group: group.into(),
        versions: served
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
        kind: kind.into(),
        list_kind,
        plural: plural.into(),
        singular,
        short_names: strings_at(crd, &["spec", "names", "shortNames"]),
        categories: strings_at(crd, &["spec", "names", "categories"]),
        namespaced,
        status_subresource,
        create_on_update: false,
        return_deleted: true,
        deletecollection: true,
        printer: Printer::Custom,
        printer_columns,
        from_crd: true,
        review: false,
    })
}
