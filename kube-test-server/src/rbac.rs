//! RBAC evaluated over the server's own stored objects, for
//! `--authorizer rbac` and access reviews. A user and a request's
//! [`Attributes`] go in; the ClusterRoleBindings (and, for a namespaced
//! request, the RoleBindings of its namespace) whose subjects include the
//! user are visited, and the rules of the roles they name (ClusterRoles'
//! aggregated rules as stored) are matched the way the API server matches
//! them. Out comes an [`Outcome`]: allowed or not, the real authorizer's
//! reason text naming the binding and role that allowed it, and the errors
//! met on the way (a binding naming a missing role). The stored objects are
//! parsed into an [`Index`] once per RBAC change, not per request.
//!
//! Written here rather than borrowed from permdrift's own RBAC code, so
//! that tests of permdrift are checked against an independent evaluator.

use std::collections::HashMap;

use serde::Deserialize;

use crate::auth::UserInfo;
use crate::store::{Obj, Store};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Attributes<'a> {
    Resource {
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        /// empty: cluster scope (or all namespaces)
        namespace: &'a str,
        name: &'a str,
    },
    NonResource {
        verb: &'a str,
        path: &'a str,
    },
}

/// The RBAC authorizer's answer. It never denies outright: without a
/// matching rule it has no opinion, which the API server treats as a refusal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub reason: String,
    /// what went wrong while looking (only reported when not allowed)
    pub errors: Vec<String>,
}

// Only the fields the authorizer reads, so parsing a stored object skips
// the rest (managedFields, annotations, ...).
#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    metadata: Meta,
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    verbs: Option<Vec<String>>,
    #[serde(default)]
    api_groups: Option<Vec<String>>,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    resource_names: Option<Vec<String>>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Role {
    #[serde(default)]
    rules: Option<Vec<Rule>>,
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

impl Rule {
    fn allows(&self, a: &Attributes) -> bool {
        match *a {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                has(list(&self.verbs), verb)
                    && has(list(&self.api_groups), group)
                    && resource_matches(list(&self.resources), resource, subresource)
                    && (list(&self.resource_names).is_empty()
                        || list(&self.resource_names).iter().any(|n| n == name))
            }
            Attributes::NonResource { verb, path } => {
                has(list(&self.verbs), verb)
                    && list(&self.non_resource_urls).iter().any(|u| {
                        u == "*"
                            || u == path
                            || u.strip_suffix('*')
                                .is_some_and(|prefix| path.starts_with(prefix))
                    })
            }
        }
    }
}

/// `*` matches any resource and subresource; `pods/log` matches only that
/// subresource (plain `pods` does not cover it); `*/scale` matches the
/// `scale` subresource of any resource.
fn resource_matches(rule: &[String], resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// Whether a binding subject is the user. A service-account subject without
/// a namespace takes the binding's (none for a ClusterRoleBinding).
fn applies(s: &Subject, u: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == u.username,
        "Group" => u.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            !ns.is_empty() && u.service_account() == Some((ns, s.name.as_str()))
        }
        _ => false,
    }
}

/// How the real authorizer names a subject in its reason text.
fn describe_subject(s: &Subject, binding_ns: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            format!("{} \"{}/{ns}\"", s.kind, s.name)
        }
        _ => format!("{} \"{}\"", s.kind, s.name),
    }
}

fn res(plural: &str) -> (String, String) {
    (RBAC_GROUP.to_string(), plural.to_string())
}

/// A stored binding, or why it could not be read.
type Parsed<T> = Result<T, String>;

/// The RBAC objects of one store version, parsed once: every request the
/// authorizer sees would otherwise parse every ClusterRoleBinding again.
pub struct Index {
    version: u64,
    cluster_role_bindings: Vec<Parsed<Binding>>,
    /// by namespace
    role_bindings: HashMap<String, Vec<Parsed<Binding>>>,
    cluster_roles: HashMap<String, Parsed<Vec<Rule>>>,
    /// by (namespace, name)
    roles: HashMap<(String, String), Parsed<Vec<Rule>>>,
}

fn parse<T: serde::de::DeserializeOwned>(obj: &Obj, kind: &str) -> Parsed<T> {
    serde_json::from_slice(&obj.json).map_err(|e| format!("{kind} \"{}\": {e}", obj.name))
}

fn rules_of(obj: &Obj, kind: &str) -> Parsed<Vec<Rule>> {
    parse::<Role>(obj, kind).map(|r| r.rules.unwrap_or_default())
}

impl Index {
    /// Parses the RBAC objects of `st` (at [`Store::rbac_version`]).
    pub fn build(st: &Store) -> Index {
        let mut ix = Index {
            version: st.rbac_version(),
            cluster_role_bindings: Vec::new(),
            role_bindings: HashMap::new(),
            cluster_roles: HashMap::new(),
            roles: HashMap::new(),
        };
        st.each(&res("clusterrolebindings"), |o| {
            ix.cluster_role_bindings
                .push(parse(o, "ClusterRoleBinding"));
        });
        st.each(&res("rolebindings"), |o| {
            ix.role_bindings
                .entry(o.namespace.clone())
                .or_default()
                .push(parse(o, "RoleBinding"));
        });
        st.each(&res("clusterroles"), |o| {
            ix.cluster_roles
                .insert(o.name.clone(), rules_of(o, "ClusterRole"));
        });
        st.each(&res("roles"), |o| {
            ix.roles
                .insert((o.namespace.clone(), o.name.clone()), rules_of(o, "Role"));
        });
        ix
    }

    /// The [`Store::rbac_version`] this index was built at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The rules of the role a binding in `binding_ns` names.
    fn role_rules(&self, r: &RoleRef, binding_ns: &str) -> Result<&[Rule], String> {
        let (found, singular) = match r.kind.as_str() {
            "ClusterRole" => (self.cluster_roles.get(&r.name), "clusterrole"),
            "Role" => (
                self.roles.get(&(binding_ns.to_string(), r.name.clone())),
                "role",
            ),
            other => return Err(format!("unknown roleRef kind {other:?}")),
        };
        match found {
            Some(Ok(rules)) => Ok(rules),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("{singular}.{RBAC_GROUP} \"{}\" not found", r.name)),
        }
    }

    /// Visits one binding; `Some(reason)` if it allows the request.
    fn visit(
        &self,
        b: &Parsed<Binding>,
        kind: &str,
        u: &UserInfo,
        a: &Attributes,
        errors: &mut Vec<String>,
    ) -> Option<String> {
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                errors.push(e.clone());
                return None;
            }
        };
        let ns = b.metadata.namespace.as_str();
        // the real authorizer looks at the first subject that is the user
        let subject = b.subjects.as_ref()?.iter().find(|s| applies(s, u, ns))?;
        let rules = match self.role_rules(&b.role_ref, ns) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
        if !rules.iter().any(|r| r.allows(a)) {
            return None;
        }
        let binding_name = if ns.is_empty() {
            b.metadata.name.clone()
        } else {
            format!("{}/{ns}", b.metadata.name)
        };
        Some(format!(
            "RBAC: allowed by {kind} \"{binding_name}\" of {} \"{}\" to {}",
            b.role_ref.kind,
            b.role_ref.name,
            describe_subject(subject, ns)
        ))
    }

    /// Whether RBAC allows `u` to do `a`: ClusterRoleBindings first, then
    /// the RoleBindings of the request's namespace.
    pub fn evaluate(&self, u: &UserInfo, a: &Attributes) -> Outcome {
        let mut errors = Vec::new();
        let namespaced = match a {
            Attributes::Resource { namespace, .. } if !namespace.is_empty() => {
                self.role_bindings.get(*namespace)
            }
            _ => None,
        };
        let found = self
            .cluster_role_bindings
            .iter()
            .map(|b| (b, "ClusterRoleBinding"))
            .chain(namespaced.into_iter().flatten().map(|b| (b, "RoleBinding")))
            .find_map(|(b, kind)| self.visit(b, kind, u, a, &mut errors));
        match found {
            Some(reason) => Outcome {
                allowed: true,
                reason,
                errors: Vec::new(),
            },
            None => Outcome {
                allowed: false,
                reason: String::new(),
                errors,
            },
        }
    }
}
