//! Risk tags, severity and witnesses for Kubernetes permission changes.
//!
//! Gained perms come in (with the aggregation facts of the change); the tags
//! of DESIGN.md, a severity, and a concrete witness request come out. A tag
//! applies when a gained perm allows the risky request, whatever its
//! spelling: `*` on `*` allows reading secrets as much as `get secrets` does.

use crate::diff::kube::KubeGrant;
use crate::grants::kube_perm::{Perm, resource_matches};
use crate::model::k8s::{RBAC_GROUP, Subject, SubjectKind};
use crate::report::{Risk, Severity, Witness};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeSet;

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

/// Whether `perm` allows any verb of the request. Group and resource are
/// checked once, before the verbs: this runs for every distinct gained perm.
fn allows_any(perm: &Perm<'_>, (group, resource, verbs): &Request) -> bool {
    allows_where(perm, group, resource, |v| verbs.contains(&v))
}

/// Whether a perm allows `verb` on `group`/`resource`, for any object name.
fn allows(perm: &Perm<'_>, group: &str, resource: &str, verb: &str) -> bool {
    allows_where(perm, group, resource, |v| v == verb)
}

/// Whether a resource perm covers `group`/`resource` and a verb `verb_ok`
/// accepts (`*` covers every verb).
fn allows_where(
    perm: &Perm<'_>,
    group: &str,
    resource: &str,
    verb_ok: impl Fn(&str) -> bool,
) -> bool {
    let Perm::Resource {
        group: g,
        resource: r,
        verb: v,
        ..
    } = perm
    else {
        return false;
    };
    (*g == "*" || *g == group) && resource_matches(r, resource) && (*v == "*" || verb_ok(v))
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

/// What classification looks at in one grant. Many grants share a facet, so
/// rules run once per distinct facet, not once per grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Facet<'a> {
    perm: Perm<'a>,
    cluster_wide: bool,
    system_subject: bool,
}

/// Calls `visit` with each grant's facet, in order, skipping what cannot
/// be new: a facet repeating the one before, and a subject and scope whose
/// perms and flags repeat the previous one's (a role change reaching
/// thousands of subjects gives each the same list).
fn for_each_facet<'g, 'm>(
    gained: &'g [KubeGrant<'m>],
    mut visit: impl FnMut(Facet<'m>, &'g KubeGrant<'m>),
) {
    let mut previous_run: Option<(&[KubeGrant<'m>], bool, bool)> = None;
    for run in gained.chunk_by(|a, b| a.same_subject_and_scope(b)) {
        let cluster_wide = run[0].namespace.is_none();
        let system_subject = is_system_subject(run[0].subject);
        if let Some((previous, c, s)) = previous_run
            && (c, s) == (cluster_wide, system_subject)
            && previous.len() == run.len()
            && previous.iter().zip(run).all(|(a, b)| a.perm == b.perm)
        {
            continue;
        }
        previous_run = Some((run, cluster_wide, system_subject));
        let mut previous: Option<Facet<'m>> = None;
        for g in run {
            let f = Facet {
                perm: g.perm,
                cluster_wide,
                system_subject,
            };
            if previous != Some(f) {
                previous = Some(f);
                visit(f, g);
            }
        }
    }
}

/// The verdict of the rules on one facet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FacetInfo {
    /// Risk tags as bits (`Risk::bit`).
    risks: u64,
    write: bool,
    system_beyond_discovery: bool,
}

fn facet_info(f: &Facet<'_>) -> FacetInfo {
    let perm = f.perm;
    let mut risks = 0u64;
    for (risk, requests) in REQUEST_TAGS {
        if requests.iter().any(|req| allows_any(&perm, req)) {
            risks |= risk.bit();
        }
    }
    match perm {
        Perm::Resource {
            group,
            resource,
            verb,
            name,
        } => {
            if f.cluster_wide && group == "*" && resource == "*" && verb == "*" && name.is_none() {
                risks |= Risk::ClusterAdmin.bit();
            }
            if verb == "*" {
                risks |= Risk::WildcardVerb.bit();
            }
            if resource.starts_with('*') {
                risks |= Risk::WildcardResource.bit();
            }
            if group == "*" {
                risks |= Risk::WildcardApigroup.bit();
            }
            if resource == "*" && matches!(verb, "*" | "delete" | "deletecollection") {
                risks |= Risk::DeleteBroad.bit();
            }
        }
        Perm::NonResource { url, verb } => {
            if url.ends_with('*') && !DISCOVERY_URLS.contains(&url) {
                risks |= Risk::NonresourceWildcard.bit();
            }
            if verb == "*" {
                risks |= Risk::WildcardVerb.bit();
            }
        }
    }
    if f.system_subject {
        risks |= Risk::SystemGroupBinding.bit();
    }
    FacetInfo {
        risks,
        write: is_write(&perm),
        system_beyond_discovery: f.system_subject && !is_discovery(&perm),
    }
}

/// Tags of one gained perm held by one subject in one scope.
pub fn grant_risks(grant: &KubeGrant<'_>) -> BTreeSet<Risk> {
    let facet = Facet {
        perm: grant.perm,
        cluster_wide: grant.namespace.is_none(),
        system_subject: is_system_subject(grant.subject),
    };
    Risk::from_mask(facet_info(&facet).risks).collect()
}

/// The facts of a change beyond its gained perms.
pub struct KubeContext<'a> {
    pub aggregated_into: &'a BTreeSet<String>,
    pub aggregation_label: bool,
}

const NO_AGGREGATION: KubeContext<'static> = KubeContext {
    aggregated_into: &BTreeSet::new(),
    aggregation_label: false,
};

const HIGH: [Risk; 7] = [
    Risk::SecretsRead,
    Risk::PodCreate,
    Risk::PodExec,
    Risk::NodesProxy,
    Risk::CsrApprove,
    Risk::AdmissionWebhookWrite,
    Risk::ServiceaccountTokenCreate,
];

fn severity(
    risks: u64,
    any_write: bool,
    system_beyond_discovery: bool,
    cx: &KubeContext<'_>,
) -> Severity {
    let has = |r: Risk| risks & r.bit() != 0;
    let into_powerful = cx
        .aggregated_into
        .iter()
        .any(|r| matches!(r.as_str(), "admin" | "edit" | "cluster-admin"));
    let critical = has(Risk::ClusterAdmin)
        || has(Risk::Escalate)
        || has(Risk::Bind)
        || has(Risk::Impersonate)
        || (has(Risk::SystemGroupBinding) && system_beyond_discovery)
        || (has(Risk::AggregationLabel) && into_powerful);
    if critical {
        Severity::Critical
    } else if HIGH.iter().any(|r| has(*r)) {
        Severity::High
    } else if any_write {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// Classifies the changes of one diff, remembering each facet's verdict
/// across changes (the same perms recur in thousands of bindings).
#[derive(Default)]
pub struct Classifier<'m> {
    facets: FxHashMap<Facet<'m>, FacetInfo>,
}

impl<'m> Classifier<'m> {
    pub fn new() -> Self {
        Self::default()
    }

    fn info(&mut self, f: Facet<'m>) -> FacetInfo {
        *self.facets.entry(f).or_insert_with(|| facet_info(&f))
    }

    /// Tags and severity of a change from its gained perms (lost perms never raise severity).
    pub fn classify(
        &mut self,
        gained: &[KubeGrant<'m>],
        cx: &KubeContext<'_>,
    ) -> (BTreeSet<Risk>, Severity) {
        if gained.is_empty() {
            return (BTreeSet::new(), Severity::Info);
        }
        let mut risks = 0u64;
        let mut any_write = false;
        let mut system_beyond_discovery = false;
        let mut deleted: FxHashSet<(&str, &str)> = FxHashSet::default();
        for_each_facet(gained, |f, _| {
            let info = self.info(f);
            risks |= info.risks;
            any_write |= info.write;
            system_beyond_discovery |= info.system_beyond_discovery;
            if let Perm::Resource {
                group,
                resource,
                verb: "delete" | "deletecollection" | "*",
                ..
            } = f.perm
            {
                deleted.insert((group, resource));
            }
        });
        // Deleting many kinds of things at once is as broad as `*`.
        if deleted.len() >= 5 {
            risks |= Risk::DeleteBroad.bit();
        }
        if cx.aggregation_label && !cx.aggregated_into.is_empty() {
            risks |= Risk::AggregationLabel.bit();
        }
        (
            Risk::from_mask(risks).collect(),
            severity(risks, any_write, system_beyond_discovery, cx),
        )
    }

    /// Picks the most severe gained perm and makes it a concrete request the old
    /// state did not allow. `allowed_before` answers for the old state.
    pub fn witness(
        &mut self,
        gained: &[KubeGrant<'m>],
        allowed_before: impl FnMut(&Subject, Option<&str>, &Perm<'_>) -> bool,
    ) -> Option<Witness> {
        // Score each distinct facet once; the witness is the first grant with the best one.
        let mut best: Option<((Severity, usize), &KubeGrant<'m>)> = None;
        for_each_facet(gained, |f, g| {
            let info = self.info(f);
            let telling = Risk::from_mask(info.risks)
                .filter_map(|r| WITNESS_PRIORITY.iter().position(|p| *p == r))
                .min()
                .map_or(0, |i| WITNESS_PRIORITY.len() - i);
            let score = (
                severity(
                    info.risks,
                    info.write,
                    info.system_beyond_discovery,
                    &NO_AGGREGATION,
                ),
                telling,
            );
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, g));
            }
        });
        best.map(|(_, g)| concrete_witness(g, allowed_before))
    }
}

/// Tags and severity of a change from its gained perms (lost perms never raise severity).
pub fn classify(gained: &[KubeGrant<'_>], cx: &KubeContext<'_>) -> (BTreeSet<Risk>, Severity) {
    Classifier::new().classify(gained, cx)
}

/// Picks the most severe gained perm and makes it a concrete request the old
/// state did not allow. `allowed_before` answers for the old state.
pub fn witness(
    gained: &[KubeGrant<'_>],
    allowed_before: impl FnMut(&Subject, Option<&str>, &Perm<'_>) -> bool,
) -> Option<Witness> {
    Classifier::new().witness(gained, allowed_before)
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

/// Makes one gained grant a concrete request the old state did not allow.
fn concrete_witness(
    best: &KubeGrant<'_>,
    mut allowed_before: impl FnMut(&Subject, Option<&str>, &Perm<'_>) -> bool,
) -> Witness {
    let perm = best.perm;
    let ns = best.namespace;
    let concrete = if perm.is_wildcard() {
        WITNESS_REQUESTS.iter().find_map(|(g, r, v)| {
            let request = Perm::Resource {
                group: g,
                resource: r,
                verb: v,
                name: None,
            };
            (allows(&perm, g, r, v) && !allowed_before(best.subject, ns, &request))
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
                    best.subject,
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
    match (concrete, perm) {
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
            Perm::Resource {
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
            let verb = concrete_verb.unwrap_or(verb).to_owned();
            Witness {
                explanation: format!(
                    "{subject} can now {verb} {target} {}; before, it could not",
                    scope_words(ns)
                ),
                subject,
                action: verb,
                resource: name.map_or_else(|| resource.to_owned(), |n| format!("{resource}/{n}")),
                scope,
                api_group: Some(group.to_owned()),
            }
        }
        (None, Perm::NonResource { url, verb }) => Witness {
            explanation: format!(
                "{subject} can now {verb} {url} cluster-wide; before, it could not"
            ),
            subject,
            action: verb.to_owned(),
            resource: url.to_owned(),
            scope,
            api_group: None,
        },
    }
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

    fn res<'a>(group: &'a str, resource: &'a str, verb: &'a str) -> Perm<'a> {
        Perm::Resource {
            group,
            resource,
            verb,
            name: None,
        }
    }

    fn one(subject: &Subject, ns: Option<&str>, perm: Perm<'_>) -> (BTreeSet<Risk>, Severity) {
        let g = KubeGrant {
            subject,
            namespace: ns,
            perm,
        };
        classify(&[g], &NO_AGGREGATION)
    }

    #[test]
    fn full_wildcard_is_cluster_admin() {
        let eng = Subject::group("eng");
        let (risks, sev) = one(&eng, None, res("*", "*", "*"));
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
        assert!(
            !one(&eng, Some("a"), res("*", "*", "*"))
                .0
                .contains(&Risk::ClusterAdmin)
        );
    }

    #[test]
    fn severities() {
        let a = Subject::user("a");
        assert_eq!(
            one(&a, Some("n"), res("", "secrets", "list")).1,
            Severity::High
        );
        assert_eq!(
            one(&a, Some("n"), res("", "configmaps", "get")).1,
            Severity::Low
        );
        assert_eq!(
            one(&a, Some("n"), res("", "configmaps", "patch")).1,
            Severity::Medium
        );
        assert_eq!(
            one(&a, Some("n"), res("apps", "deployments", "patch")).1,
            Severity::High
        );
        let everyone = Subject::group("system:authenticated");
        let (risks, sev) = one(
            &everyone,
            None,
            Perm::NonResource {
                url: "/version",
                verb: "get",
            },
        );
        assert!(risks.contains(&Risk::SystemGroupBinding));
        assert_eq!(sev, Severity::Low);
        assert_eq!(
            one(&everyone, None, res("", "pods", "list")).1,
            Severity::Critical
        );
        assert_eq!(classify(&[], &NO_AGGREGATION).1, Severity::Info);
    }

    #[test]
    fn witness_is_concrete_and_new() {
        let eng = Subject::group("eng");
        let g = KubeGrant {
            subject: &eng,
            namespace: Some("prod"),
            perm: res("", "*", "*"),
        };
        let w = witness(&[g], |_, _, p| {
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

    #[test]
    fn witness_prefers_the_most_telling_risk() {
        let eng = Subject::group("eng");
        let grants = [
            KubeGrant {
                subject: &eng,
                namespace: None,
                perm: res("", "pods/exec", "create"),
            },
            KubeGrant {
                subject: &eng,
                namespace: None,
                perm: res("", "secrets", "get"),
            },
        ];
        let w = witness(&grants, |_, _, _| false).unwrap();
        assert_eq!(w.resource, "secrets");
    }

    proptest::proptest! {
        #[test]
        fn skipping_repeats_visits_every_distinct_facet(
            grants in proptest::collection::vec((0usize..3, 0usize..2, 0usize..4), 0..40)
        ) {
            let subjects = [Subject::user("a"), Subject::group("system:masters"), Subject::user("c")];
            let namespaces = [None, Some("team")];
            let verbs = ["get", "list", "delete", "*"];
            let mut grants: Vec<KubeGrant<'_>> = grants
                .iter()
                .map(|&(s, n, v)| KubeGrant {
                    subject: &subjects[s],
                    namespace: namespaces[n],
                    perm: res("", "secrets", verbs[v]),
                })
                .collect();
            grants.sort();
            grants.dedup();
            let every: BTreeSet<(bool, bool, &str)> = grants
                .iter()
                .map(|g| match g.perm {
                    Perm::Resource { verb, .. } => {
                        (g.namespace.is_none(), is_system_subject(g.subject), verb)
                    }
                    Perm::NonResource { verb, .. } => (false, false, verb),
                })
                .collect();
            let mut visited = BTreeSet::new();
            for_each_facet(&grants, |f, g| {
                assert_eq!(f.perm, g.perm);
                if let Perm::Resource { verb, .. } = f.perm {
                    visited.insert((f.cluster_wide, f.system_subject, verb));
                }
            });
            proptest::prop_assert_eq!(visited, every);
        }
    }
}
