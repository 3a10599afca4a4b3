//! Risk tags, severity and witnesses for Kubernetes permission changes.
//!
//! Gained perms come in (with the aggregation facts of the change); the tags
//! of DESIGN.md, a severity, and a concrete witness request come out. A tag
//! applies when a gained perm allows the risky request, whatever its
//! spelling: `*` on `*` allows reading secrets as much as `get secrets` does.

use crate::diff::kube::{KubeGrant, OwnedPerm};
use crate::grants::kube_perm::Perm;
use crate::model::k8s::{RBAC_GROUP, Subject, SubjectKind};
use crate::report::{Risk, Severity, Witness};
use std::collections::{BTreeSet, HashSet};

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Groups (and the anonymous user) that stand for "everyone" or "everything".
const SYSTEM_GROUPS: [&str; 4] = [
    "system:authenticated",
    "system:unauthenticated",
    "system:masters",
    "system:serviceaccounts",
];

/// Requests that only discover the API or ask about oneself; the default
/// cluster grants these to everyone.
const DISCOVERY_URLS: [&str; 10] = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/openapi/*",
];
const SELF_REVIEWS: [(&str, &str); 3] = [
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];

type Request = (&'static str, &'static str, &'static [&'static str]);

/// Tag -> requests any of which, if newly allowed, earns the tag.
const REQUEST_TAGS: &[(Risk, &[Request])] = &[
    (
        Risk::Escalate,
        &[
            (RBAC_GROUP, "roles", &["escalate"]),
            (RBAC_GROUP, "clusterroles", &["escalate"]),
        ],
    ),
    (
        Risk::Bind,
        &[
            (RBAC_GROUP, "roles", &["bind"]),
            (RBAC_GROUP, "clusterroles", &["bind"]),
        ],
    ),
    (
        Risk::Impersonate,
        &[
            ("", "users", &["impersonate"]),
            ("", "groups", &["impersonate"]),
            ("", "serviceaccounts", &["impersonate"]),
            ("authentication.k8s.io", "uids", &["impersonate"]),
            (
                "authentication.k8s.io",
                "userextras/scopes",
                &["impersonate"],
            ),
        ],
    ),
    (
        Risk::SecretsRead,
        &[("", "secrets", &["get", "list", "watch"])],
    ),
    (
        Risk::PodCreate,
        &[
            ("", "pods", &["create"]),
            ("", "replicationcontrollers", &["create", "update", "patch"]),
            ("apps", "deployments", &["create", "update", "patch"]),
            ("apps", "replicasets", &["create", "update", "patch"]),
            ("apps", "statefulsets", &["create", "update", "patch"]),
            ("apps", "daemonsets", &["create", "update", "patch"]),
            ("batch", "jobs", &["create", "update", "patch"]),
            ("batch", "cronjobs", &["create", "update", "patch"]),
        ],
    ),
    (
        Risk::PodExec,
        &[
            ("", "pods/exec", &["create", "get"]),
            ("", "pods/attach", &["create", "get"]),
        ],
    ),
    (
        Risk::PodPortforward,
        &[("", "pods/portforward", &["create", "get"])],
    ),
    (
        Risk::NodesProxy,
        &[(
            "",
            "nodes/proxy",
            &["get", "create", "update", "patch", "delete"],
        )],
    ),
    (
        Risk::CsrApprove,
        &[
            (
                "certificates.k8s.io",
                "certificatesigningrequests/approval",
                &["update", "patch"],
            ),
            ("certificates.k8s.io", "signers", &["approve"]),
        ],
    ),
    (
        Risk::AdmissionWebhookWrite,
        &[
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                &["create", "update", "patch", "delete"],
            ),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                &["create", "update", "patch", "delete"],
            ),
        ],
    ),
    (
        Risk::ServiceaccountTokenCreate,
        &[("", "serviceaccounts/token", &["create"])],
    ),
    (Risk::PvCreate, &[("", "persistentvolumes", &["create"])]),
    (
        Risk::RbacWrite,
        &[
            (
                RBAC_GROUP,
                "roles",
                &["create", "update", "patch", "delete"],
            ),
            (
                RBAC_GROUP,
                "clusterroles",
                &["create", "update", "patch", "delete"],
            ),
            (
                RBAC_GROUP,
                "rolebindings",
                &["create", "update", "patch", "delete"],
            ),
            (
                RBAC_GROUP,
                "clusterrolebindings",
                &["create", "update", "patch", "delete"],
            ),
        ],
    ),
    (
        Risk::EventsDelete,
        &[
            ("", "events", &["delete", "deletecollection"]),
            ("events.k8s.io", "events", &["delete", "deletecollection"]),
        ],
    ),
    (
        Risk::ConfigmapWrite,
        &[("", "configmaps", &["create", "update", "patch", "delete"])],
    ),
];

/// Whether a perm allows `verb` on `group`/`resource`, for any object name.
fn allows(perm: &Perm<'_>, group: &str, resource: &str, verb: &str) -> bool {
    let Perm::Resource {
        group: g,
        resource: r,
        verb: v,
        ..
    } = perm
    else {
        return false;
    };
    let resource_ok = *r == "*"
        || *r == resource
        || r.strip_prefix("*/")
            .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, rs)| rs == sub));
    (*g == "*" || *g == group) && (*v == "*" || *v == verb) && resource_ok
}

fn is_write(perm: &Perm<'_>) -> bool {
    let verb = perm.verb();
    match perm {
        Perm::Resource { .. } => !READ_VERBS.contains(&verb),
        Perm::NonResource { .. } => !matches!(verb, "get" | "head" | "options"),
    }
}

fn is_system_subject(s: &Subject) -> bool {
    match s.kind {
        SubjectKind::Group => SYSTEM_GROUPS.contains(&s.name.as_str()),
        SubjectKind::User => s.name == "system:anonymous",
        SubjectKind::ServiceAccount => false,
    }
}

fn is_discovery(perm: &Perm<'_>) -> bool {
    match perm {
        Perm::NonResource { url, verb } => {
            matches!(*verb, "get" | "head") && DISCOVERY_URLS.contains(url)
        }
        Perm::Resource {
            group,
            resource,
            verb,
            ..
        } => *verb == "create" && SELF_REVIEWS.contains(&(*group, *resource)),
    }
}

/// Tags of one gained perm held by one subject in one scope.
pub fn grant_risks(grant: &KubeGrant) -> BTreeSet<Risk> {
    let perm = grant.perm.as_perm();
    let mut risks = BTreeSet::new();
    for (risk, requests) in REQUEST_TAGS {
        if requests
            .iter()
            .any(|(g, r, verbs)| verbs.iter().any(|v| allows(&perm, g, r, v)))
        {
            risks.insert(*risk);
        }
    }
    match perm {
        Perm::Resource {
            group,
            resource,
            verb,
            name,
        } => {
            if grant.namespace.is_none()
                && group == "*"
                && resource == "*"
                && verb == "*"
                && name.is_none()
            {
                risks.insert(Risk::ClusterAdmin);
            }
            if verb == "*" {
                risks.insert(Risk::WildcardVerb);
            }
            if resource.starts_with('*') {
                risks.insert(Risk::WildcardResource);
            }
            if group == "*" {
                risks.insert(Risk::WildcardApigroup);
            }
            if resource == "*" && matches!(verb, "*" | "delete" | "deletecollection") {
                risks.insert(Risk::DeleteBroad);
            }
        }
        Perm::NonResource { url, verb } => {
            if url.ends_with('*') && (url.len() <= 2 || !DISCOVERY_URLS.contains(&url)) {
                risks.insert(Risk::NonresourceWildcard);
            }
            if verb == "*" {
                risks.insert(Risk::WildcardVerb);
            }
        }
    }
    if is_system_subject(&grant.subject) {
        risks.insert(Risk::SystemGroupBinding);
    }
    risks
}

/// The facts of a change beyond its gained perms.
pub struct KubeContext<'a> {
    pub aggregated_into: &'a BTreeSet<String>,
    pub aggregation_label: bool,
}

/// Tags and severity of a change from its gained perms (lost perms never raise severity).
pub fn classify(gained: &BTreeSet<KubeGrant>, cx: &KubeContext<'_>) -> (BTreeSet<Risk>, Severity) {
    if gained.is_empty() {
        return (BTreeSet::new(), Severity::Info);
    }
    let mut risks = BTreeSet::new();
    let mut any_write = false;
    let mut system_beyond_discovery = false;
    let mut deleted: HashSet<(&str, &str)> = HashSet::new();
    for g in gained {
        let perm = g.perm.as_perm();
        risks.extend(grant_risks(g));
        any_write |= is_write(&perm);
        if is_system_subject(&g.subject) && !is_discovery(&perm) {
            system_beyond_discovery = true;
        }
        if let OwnedPerm::Resource {
            group,
            resource,
            verb,
            ..
        } = &g.perm
            && matches!(verb.as_str(), "delete" | "deletecollection" | "*")
        {
            deleted.insert((group, resource));
        }
    }
    // Deleting many kinds of things at once is as broad as `*`.
    if deleted.len() >= 5 {
        risks.insert(Risk::DeleteBroad);
    }
    if cx.aggregation_label && !cx.aggregated_into.is_empty() {
        risks.insert(Risk::AggregationLabel);
    }
    let into_powerful = cx
        .aggregated_into
        .iter()
        .any(|r| matches!(r.as_str(), "admin" | "edit" | "cluster-admin"));
    let critical = risks.contains(&Risk::ClusterAdmin)
        || risks.contains(&Risk::Escalate)
        || risks.contains(&Risk::Bind)
        || risks.contains(&Risk::Impersonate)
        || (risks.contains(&Risk::SystemGroupBinding) && system_beyond_discovery)
        || (risks.contains(&Risk::AggregationLabel) && into_powerful);
    let high = [
        Risk::SecretsRead,
        Risk::PodCreate,
        Risk::PodExec,
        Risk::NodesProxy,
        Risk::CsrApprove,
        Risk::AdmissionWebhookWrite,
        Risk::ServiceaccountTokenCreate,
    ]
    .iter()
    .any(|r| risks.contains(r));
    let severity = if critical {
        Severity::Critical
    } else if high {
        Severity::High
    } else if any_write {
        Severity::Medium
    } else {
        Severity::Low
    };
    (risks, severity)
}

/// Risks in the order a reader most needs to hear about them.
const WITNESS_PRIORITY: [Risk; 12] = [
    Risk::ClusterAdmin,
    Risk::Escalate,
    Risk::Bind,
    Risk::Impersonate,
    Risk::SecretsRead,
    Risk::PodExec,
    Risk::PodCreate,
    Risk::NodesProxy,
    Risk::ServiceaccountTokenCreate,
    Risk::CsrApprove,
    Risk::AdmissionWebhookWrite,
    Risk::RbacWrite,
];

/// Concrete requests tried, most telling first, when a gained perm is a wildcard.
const WITNESS_REQUESTS: [(&str, &str, &str); 14] = [
    ("", "secrets", "get"),
    ("", "pods/exec", "create"),
    (RBAC_GROUP, "clusterroles", "escalate"),
    (RBAC_GROUP, "clusterroles", "bind"),
    ("", "users", "impersonate"),
    ("", "pods", "create"),
    ("apps", "deployments", "create"),
    ("", "nodes/proxy", "get"),
    ("", "serviceaccounts/token", "create"),
    ("", "configmaps", "update"),
    ("", "pods", "delete"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "configmaps", "get"),
];

/// Verbs tried, most damaging first, to make a `*` verb concrete.
const CONCRETE_VERBS: [&str; 7] = [
    "delete", "update", "patch", "create", "get", "list", "watch",
];

fn scope_label(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("namespace:{ns}"),
        None => "cluster".into(),
    }
}

fn scope_words(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "cluster-wide".into(),
    }
}

/// Picks the most severe gained perm and makes it a concrete request the old
/// state did not allow. `allowed_before` answers for the old state.
pub fn witness(
    gained: &BTreeSet<KubeGrant>,
    mut allowed_before: impl FnMut(&Subject, Option<&str>, &Perm<'_>) -> bool,
) -> Option<Witness> {
    let best = gained.iter().max_by_key(|g| {
        let risks = grant_risks(g);
        let mut single = BTreeSet::new();
        single.insert((*g).clone());
        let (_, severity) = classify(
            &single,
            &KubeContext {
                aggregated_into: &BTreeSet::new(),
                aggregation_label: false,
            },
        );
        // Prefer severity, then the most telling risk; ties go to the first in order.
        let telling = risks
            .iter()
            .filter_map(|r| WITNESS_PRIORITY.iter().position(|p| p == r))
            .min()
            .map_or(0, |i| WITNESS_PRIORITY.len() - i);
        (severity, telling, std::cmp::Reverse(*g))
    })?;
    let perm = best.perm.as_perm();
    let ns = best.namespace.as_deref();
    let concrete = if perm.is_wildcard() {
        WITNESS_REQUESTS.iter().find_map(|(g, r, v)| {
            let request = Perm::Resource {
                group: g,
                resource: r,
                verb: v,
                name: None,
            };
            (allows(&perm, g, r, v) && !allowed_before(&best.subject, ns, &request))
                .then_some((*g, *r, *v))
        })
    } else {
        None
    };
    // A wildcard verb on a named resource: name a concrete verb that is new.
    let concrete_verb = match (concrete, perm) {
        (
            None,
            Perm::Resource {
                group,
                resource,
                verb: "*",
                name,
            },
        ) if group != "*" && !resource.starts_with('*') => {
            CONCRETE_VERBS.iter().copied().find(|v| {
                !allowed_before(
                    &best.subject,
                    ns,
                    &Perm::Resource {
                        group,
                        resource,
                        verb: v,
                        name,
                    },
                )
            })
        }
        _ => None,
    };
    let subject = best.subject.to_string();
    let scope = scope_label(ns);
    Some(match (concrete, &best.perm) {
        (Some((g, r, v)), _) => Witness {
            explanation: format!(
                "{subject} can now {v} {} {} (through `{}`); before, it could not",
                qualified_resource(r, g),
                scope_words(ns),
                describe(&perm)
            ),
            subject,
            action: v.into(),
            resource: r.into(),
            scope,
            api_group: Some(g.into()),
        },
        (
            None,
            OwnedPerm::Resource {
                group,
                resource,
                verb,
                name,
            },
        ) => {
            let qualified = qualified_resource(resource, group);
            let target = match name {
                Some(n) => format!("{qualified} named {n:?}"),
                None => qualified,
            };
            let verb = concrete_verb.map_or_else(|| verb.clone(), str::to_owned);
            Witness {
                explanation: format!(
                    "{subject} can now {verb} {target} {}; before, it could not",
                    scope_words(ns)
                ),
                subject,
                action: verb,
                resource: name
                    .as_ref()
                    .map_or_else(|| resource.clone(), |n| format!("{resource}/{n}")),
                scope,
                api_group: Some(group.clone()),
            }
        }
        (None, OwnedPerm::NonResource { url, verb }) => Witness {
            explanation: format!(
                "{subject} can now {verb} {url} cluster-wide; before, it could not"
            ),
            subject,
            action: verb.clone(),
            resource: url.clone(),
            scope,
            api_group: None,
        },
    })
}

/// A resource as kubectl spells it: `deployments.apps/scale`, `pods/exec`.
pub fn qualified_resource(resource: &str, group: &str) -> String {
    if group.is_empty() {
        return resource.to_owned();
    }
    match resource.split_once('/') {
        Some((base, sub)) => format!("{base}.{group}/{sub}"),
        None => format!("{resource}.{group}"),
    }
}

/// `verb resource` as RBAC spells it, with the group when not core.
pub fn describe(perm: &Perm<'_>) -> String {
    match perm {
        Perm::Resource {
            group,
            resource,
            verb,
            name,
        } => {
            let res = qualified_resource(resource, group);
            match name {
                Some(n) => format!("{verb} {res} named {n:?}"),
                None => format!("{verb} {res}"),
            }
        }
        Perm::NonResource { url, verb } => format!("{verb} {url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(
        subject: Subject,
        ns: Option<&str>,
        group: &str,
        resource: &str,
        verb: &str,
    ) -> KubeGrant {
        KubeGrant {
            subject,
            namespace: ns.map(str::to_owned),
            perm: OwnedPerm::Resource {
                group: group.into(),
                resource: resource.into(),
                verb: verb.into(),
                name: None,
            },
        }
    }

    fn cx() -> KubeContext<'static> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        KubeContext {
            aggregated_into: &EMPTY,
            aggregation_label: false,
        }
    }

    #[test]
    fn full_wildcard_is_cluster_admin() {
        let g: BTreeSet<_> = [grant(Subject::group("eng"), None, "*", "*", "*")]
            .into_iter()
            .collect();
        let (risks, sev) = classify(&g, &cx());
        assert_eq!(sev, Severity::Critical);
        for r in [
            Risk::ClusterAdmin,
            Risk::WildcardVerb,
            Risk::WildcardResource,
            Risk::WildcardApigroup,
            Risk::SecretsRead,
            Risk::Escalate,
        ] {
            assert!(risks.contains(&r), "{r:?}");
        }
        let ns: BTreeSet<_> = [grant(Subject::group("eng"), Some("a"), "*", "*", "*")]
            .into_iter()
            .collect();
        assert!(!classify(&ns, &cx()).0.contains(&Risk::ClusterAdmin));
    }

    #[test]
    fn severities() {
        let one = |g: KubeGrant| classify(&[g].into_iter().collect(), &cx());
        assert_eq!(
            one(grant(Subject::user("a"), Some("n"), "", "secrets", "list")).1,
            Severity::High
        );
        assert_eq!(
            one(grant(
                Subject::user("a"),
                Some("n"),
                "",
                "configmaps",
                "get"
            ))
            .1,
            Severity::Low
        );
        assert_eq!(
            one(grant(
                Subject::user("a"),
                Some("n"),
                "",
                "configmaps",
                "patch"
            ))
            .1,
            Severity::Medium
        );
        assert_eq!(
            one(grant(
                Subject::user("a"),
                Some("n"),
                "apps",
                "deployments",
                "patch"
            ))
            .1,
            Severity::High
        );
        let discovery = KubeGrant {
            subject: Subject::group("system:authenticated"),
            namespace: None,
            perm: OwnedPerm::NonResource {
                url: "/version".into(),
                verb: "get".into(),
            },
        };
        let (risks, sev) = one(discovery);
        assert!(risks.contains(&Risk::SystemGroupBinding));
        assert_eq!(sev, Severity::Low);
        assert_eq!(
            one(grant(
                Subject::group("system:authenticated"),
                None,
                "",
                "pods",
                "list"
            ))
            .1,
            Severity::Critical
        );
    }

    #[test]
    fn witness_is_concrete_and_new() {
        let g: BTreeSet<_> = [grant(Subject::group("eng"), Some("prod"), "", "*", "*")]
            .into_iter()
            .collect();
        let w = witness(&g, |_, _, p| {
            matches!(
                p,
                Perm::Resource {
                    resource: "secrets",
                    ..
                }
            )
        })
        .unwrap();
        // Secrets were already readable, so the witness moves on to the next request.
        assert_eq!(
            (w.action.as_str(), w.resource.as_str()),
            ("create", "pods/exec")
        );
        assert_eq!(w.scope, "namespace:prod");
    }
}
