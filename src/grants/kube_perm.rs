//! Atomic Kubernetes permissions and their coverage rules.
//!
//! A rule expands into atomic [`Perm`]s (one group, resource, verb and optional
//! name each). Whether a set of perms allows a perm follows the API server's
//! RBAC matching: `*` matches anything, `*/sub` matches that subresource of any
//! resource, an absent name means every name, a trailing `*` in a
//! nonResourceURL is a prefix match. A wildcard is only ever covered by a
//! wildcard: the world is open and new resources and verbs appear with CRDs.
//! Coverage is answered by looking up the few generalisations of a perm.

use crate::model::k8s::PolicyRule;
use rustc_hash::FxHashSet;
use std::fmt;

/// Where a perm applies: cluster-wide (a ClusterRoleBinding) or one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope<'a> {
    Cluster,
    Namespace(&'a str),
}

impl Scope<'_> {
    pub fn from_namespace(ns: Option<&str>) -> Scope<'_> {
        match ns {
            Some(ns) => Scope::Namespace(ns),
            None => Scope::Cluster,
        }
    }
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::Cluster => None,
            Scope::Namespace(ns) => Some(ns),
        }
    }
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("cluster"),
            Scope::Namespace(ns) => write!(f, "namespace:{ns}"),
        }
    }
}

pub type PermSet<'m> = FxHashSet<Perm<'m>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Perm<'a> {
    Resource {
        group: &'a str,
        resource: &'a str,
        verb: &'a str,
        name: Option<&'a str>,
    },
    NonResource {
        url: &'a str,
        verb: &'a str,
    },
}

impl<'a> Perm<'a> {
    pub fn verb(&self) -> &'a str {
        match self {
            Perm::Resource { verb, .. } | Perm::NonResource { verb, .. } => verb,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        match self {
            Perm::Resource {
                group,
                resource,
                verb,
                ..
            } => *group == "*" || resource.starts_with('*') || *verb == "*",
            Perm::NonResource { url, verb } => url.ends_with('*') || *verb == "*",
        }
    }
}

/// Expands rules into atomic perms. A rule naming both resources and
/// nonResourceURLs is invalid in Kubernetes; both halves are read anyway.
pub fn expand_rules<'a>(rules: &'a [PolicyRule], out: &mut PermSet<'a>) {
    for rule in rules {
        for verb in &rule.verbs {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    if rule.resource_names.is_empty() {
                        out.insert(Perm::Resource {
                            group,
                            resource,
                            verb,
                            name: None,
                        });
                    } else {
                        for name in &rule.resource_names {
                            out.insert(Perm::Resource {
                                group,
                                resource,
                                verb,
                                name: Some(name),
                            });
                        }
                    }
                }
            }
            for url in &rule.non_resource_urls {
                out.insert(Perm::NonResource { url, verb });
            }
        }
    }
}

/// Whether `set` allows everything `p` allows.
pub fn covers<'a>(set: &PermSet<'a>, p: &Perm<'a>) -> bool {
    if set.contains(p) {
        return true;
    }
    match *p {
        Perm::Resource {
            group,
            resource,
            verb,
            name,
        } => {
            let sub = resource
                .split_once('/')
                .filter(|(base, _)| *base != "*")
                .map(|(_, sub)| format!("*/{sub}"));
            let groups: &[&str] = if group == "*" { &["*"] } else { &[group, "*"] };
            let verbs: &[&str] = if verb == "*" { &["*"] } else { &[verb, "*"] };
            let names: &[Option<&str>] = match name {
                Some(n) => &[Some(n), None],
                None => &[None],
            };
            let mut resources: Vec<&str> = vec![resource];
            if let Some(sub) = &sub {
                resources.push(sub);
            }
            if resource != "*" {
                resources.push("*");
            }
            for g in groups {
                for r in &resources {
                    for v in verbs {
                        for n in names {
                            let candidate = Perm::Resource {
                                group: g,
                                resource: r,
                                verb: v,
                                name: *n,
                            };
                            if set.contains(&candidate) {
                                return true;
                            }
                        }
                    }
                }
            }
            false
        }
        Perm::NonResource { url, verb } => {
            let verbs: &[&str] = if verb == "*" { &["*"] } else { &[verb, "*"] };
            let base = url.strip_suffix('*').unwrap_or(url);
            // Every prefix pattern `base[..k]*` matches what `url` matches.
            let mut pattern = String::with_capacity(base.len() + 1);
            for k in (0..=base.len()).filter(|k| base.is_char_boundary(*k)) {
                pattern.clear();
                pattern.push_str(&base[..k]);
                pattern.push('*');
                for v in verbs {
                    if set.contains(&Perm::NonResource {
                        url: &pattern,
                        verb: v,
                    }) {
                        return true;
                    }
                }
            }
            verbs
                .iter()
                .any(|v| set.contains(&Perm::NonResource { url, verb: v }))
        }
    }
}

/// Whether one perm allows `request` (a concrete or wildcard perm). Used for
/// ad-hoc questions such as risk tags and who-can.
pub fn perm_allows(rule: &Perm<'_>, request: &Perm<'_>) -> bool {
    match (rule, request) {
        (
            Perm::Resource {
                group,
                resource,
                verb,
                name,
            },
            Perm::Resource {
                group: rg,
                resource: rr,
                verb: rv,
                name: rn,
            },
        ) => {
            (*group == "*" || group == rg)
                && (*verb == "*" || verb == rv)
                && (name.is_none() || name == rn)
                && resource_matches(resource, rr)
        }
        (Perm::NonResource { url, verb }, Perm::NonResource { url: ru, verb: rv }) => {
            (*verb == "*" || verb == rv)
                && match url.strip_suffix('*') {
                    Some(prefix) => ru.starts_with(prefix),
                    None => url == ru,
                }
        }
        _ => false,
    }
}

fn resource_matches(rule: &str, request: &str) -> bool {
    if rule == "*" || rule == request {
        return true;
    }
    match (rule.strip_prefix("*/"), request.split_once('/')) {
        (Some(sub), Some((_, rsub))) => sub == rsub,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res<'a>(g: &'a str, r: &'a str, v: &'a str, n: Option<&'a str>) -> Perm<'a> {
        Perm::Resource {
            group: g,
            resource: r,
            verb: v,
            name: n,
        }
    }

    #[test]
    fn wildcards_cover_concrete_but_not_the_reverse() {
        let set: PermSet = [res("*", "*", "*", None)].into_iter().collect();
        assert!(covers(
            &set,
            &res("apps", "deployments/scale", "update", Some("x"))
        ));
        assert!(covers(&set, &res("", "pods", "escalate", None)));
        let explicit: PermSet = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ]
        .into_iter()
        .map(|v| res("", "pods", v, None))
        .collect();
        assert!(!covers(&explicit, &res("", "pods", "*", None)));
        assert!(!covers(&explicit, &res("", "pods/exec", "create", None)));
    }

    #[test]
    fn subresource_wildcard_and_names() {
        let set: PermSet = [
            res("apps", "*/scale", "update", None),
            res("", "secrets", "get", Some("a")),
        ]
        .into_iter()
        .collect();
        assert!(covers(
            &set,
            &res("apps", "deployments/scale", "update", None)
        ));
        assert!(!covers(&set, &res("apps", "deployments", "update", None)));
        assert!(covers(&set, &res("", "secrets", "get", Some("a"))));
        assert!(!covers(&set, &res("", "secrets", "get", Some("b"))));
        assert!(!covers(&set, &res("", "secrets", "get", None)));
    }

    #[test]
    fn non_resource_prefixes() {
        let set: PermSet = [Perm::NonResource {
            url: "/apis/*",
            verb: "get",
        }]
        .into_iter()
        .collect();
        assert!(covers(
            &set,
            &Perm::NonResource {
                url: "/apis/apps",
                verb: "get"
            }
        ));
        assert!(covers(
            &set,
            &Perm::NonResource {
                url: "/apis/apps*",
                verb: "get"
            }
        ));
        assert!(!covers(
            &set,
            &Perm::NonResource {
                url: "/api",
                verb: "get"
            }
        ));
        assert!(!covers(
            &set,
            &Perm::NonResource {
                url: "/apis/*",
                verb: "post"
            }
        ));
        assert!(!covers(
            &set,
            &Perm::NonResource {
                url: "*",
                verb: "get"
            }
        ));
    }

    #[test]
    fn allows_matches_covers_on_concrete_requests() {
        let rule = res("apps", "*/status", "*", None);
        assert!(perm_allows(
            &rule,
            &res("apps", "deployments/status", "patch", Some("x"))
        ));
        assert!(!perm_allows(&rule, &res("", "pods/status", "patch", None)));
    }
}
