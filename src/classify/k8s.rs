//! Risk tags, severity and witnesses for Kubernetes permission changes.
//!
//! Gained perms come in (with the aggregation facts of the change); the tags
//! of docs/diff-format.md, a severity, and a concrete witness request come out. A tag
//! applies when a gained perm allows the risky request, whatever its
//! spelling: `*` on `*` allows reading secrets as much as `get secrets` does.

use crate::diff::k8s::{Dangling, K8sEffect, K8sGrant, RoleGrant};
use crate::grants::k8s_perm::{Perm, resource_matches};
use crate::model::k8s::{RBAC_GROUP, RbacKey, RbacKind, Subject};
use crate::report::{Risk, Severity, Witness};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeSet;

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

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
            // An ephemeral container runs a command in a live pod, as exec does.
            ("", "pods/ephemeralcontainers", &["patch", "update"]),
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
    s.is_system()
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
    gained: &'g [K8sGrant<'m>],
    mut visit: impl FnMut(Facet<'m>, &'g K8sGrant<'m>),
) {
    let mut previous_run: Option<(&[K8sGrant<'m>], bool, bool)> = None;
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
pub fn grant_risks(grant: &K8sGrant<'_>) -> BTreeSet<Risk> {
    let facet = Facet {
        perm: grant.perm,
        cluster_wide: grant.namespace.is_none(),
        system_subject: is_system_subject(grant.subject),
    };
    Risk::from_mask(facet_info(&facet).risks).collect()
}

/// The facts of a change beyond its gained perms.
pub struct K8sContext<'a> {
    pub aggregated_into: &'a BTreeSet<String>,
    pub aggregation_label: bool,
    /// The name of the changed object.
    pub changed: &'a str,
}

const NO_AGGREGATION: K8sContext<'static> = K8sContext {
    aggregated_into: &BTreeSet::new(),
    aggregation_label: false,
    changed: "",
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
    cx: &K8sContext<'_>,
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

/// Risk bits and the facts severity needs, summed over facets.
#[derive(Default)]
struct Tally<'a> {
    risks: u64,
    any_write: bool,
    system_beyond_discovery: bool,
    deleted: FxHashSet<(&'a str, &'a str)>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, f: &Facet<'a>, info: FacetInfo) {
        self.risks |= info.risks;
        self.any_write |= info.write;
        self.system_beyond_discovery |= info.system_beyond_discovery;
        if let Perm::Resource {
            group,
            resource,
            verb: "delete" | "deletecollection" | "*",
            ..
        } = f.perm
        {
            self.deleted.insert((group, resource));
        }
    }

    fn finish(mut self, aggregation_label: bool, cx: &K8sContext<'_>) -> (u64, Severity) {
        // Deleting many kinds of things at once is as broad as `*`.
        if self.deleted.len() >= 5 {
            self.risks |= Risk::DeleteBroad.bit();
        }
        if aggregation_label {
            self.risks |= Risk::AggregationLabel.bit();
        }
        let severity = severity(self.risks, self.any_write, self.system_beyond_discovery, cx);
        (self.risks, severity)
    }
}

/// The highest severity a widening nobody holds today can have: it needs a
/// second change (a binding, or the missing role) before anyone can act.
pub const LATENT_CAP: Severity = Severity::Medium;

/// The facet of a role's own perm: a ClusterRole's is cluster-wide, as a
/// ClusterRoleBinding would make it; no subject is a system group.
fn latent_facet<'m>(g: &RoleGrant<'m>) -> Facet<'m> {
    Facet {
        perm: g.perm,
        cluster_wide: g.role.kind == RbacKind::ClusterRole,
        system_subject: false,
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
        gained: &[K8sGrant<'m>],
        cx: &K8sContext<'_>,
    ) -> (BTreeSet<Risk>, Severity) {
        if gained.is_empty() {
            return (BTreeSet::new(), Severity::Info);
        }
        let mut tally = Tally::default();
        for_each_facet(gained, |f, _| {
            let info = self.info(f);
            tally.add(&f, info);
        });
        let label = cx.aggregation_label && !cx.aggregated_into.is_empty();
        let (risks, severity) = tally.finish(label, cx);
        (Risk::from_mask(risks).collect(), severity)
    }

    /// Tags and severity of a whole change: its subjects' gains as
    /// [`Classifier::classify`] judges them, joined by the tags of its
    /// latent gains at a severity of at most [`LATENT_CAP`], `dangling-role-ref`
    /// (at that cap) for subjects bound to a missing role, and
    /// `system-group-binding` for a binding that names a system group.
    pub fn classify_effect(
        &mut self,
        effect: &K8sEffect<'m>,
        cx: &K8sContext<'_>,
    ) -> (BTreeSet<Risk>, Severity) {
        let (mut risks, mut severity) = self.classify(&effect.gained, cx);
        if !effect.latent_gained.is_empty() {
            let mut tally = Tally::default();
            let mut previous = None;
            let mut into_others = BTreeSet::new();
            for g in &effect.latent_gained {
                let f = latent_facet(g);
                if previous != Some(f) {
                    previous = Some(f);
                    let info = self.info(f);
                    tally.add(&f, info);
                }
                // Only ClusterRoles aggregate, so another name is another role.
                if g.role.name != cx.changed {
                    into_others.insert(g.role.name.clone());
                }
            }
            let latent_cx = K8sContext {
                aggregated_into: &into_others,
                aggregation_label: cx.aggregation_label,
                changed: cx.changed,
            };
            let label = cx.aggregation_label && !into_others.is_empty();
            let (latent_risks, latent_severity) = tally.finish(label, &latent_cx);
            risks.extend(Risk::from_mask(latent_risks));
            severity = severity.max(latent_severity.min(LATENT_CAP));
        }
        if !effect.dangling.is_empty() {
            risks.insert(Risk::DanglingRoleRef);
            severity = severity.max(LATENT_CAP);
        }
        if effect.names_system_subject {
            risks.insert(Risk::SystemGroupBinding);
        }
        (risks, severity)
    }

    /// Picks the most severe gained perm and makes it a concrete request the old
    /// state did not allow. `allowed_before` answers for the old state.
    pub fn witness(
        &mut self,
        gained: &[K8sGrant<'m>],
        mut allowed_before: impl FnMut(&Subject, Option<&str>, &Perm<'_>) -> bool,
    ) -> Option<Witness> {
        // Score each distinct facet once; the witness is the first grant with the best one.
        let mut best: Option<((Severity, usize), &K8sGrant<'m>)> = None;
        for_each_facet(gained, |f, g| {
            let score = self.score(f);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, g));
            }
        });
        best.map(|(_, g)| {
            let holder = Holder {
                label: g.subject.to_string(),
                now: format!("{} can now", g.subject),
                tail: "before, it could not",
                namespace: g.namespace,
            };
            concrete_witness(&holder, g.perm, |p| {
                allowed_before(g.subject, g.namespace, p)
            })
        })
    }

    /// The witness of a widening nobody holds today: the most telling perm a
    /// role gained, as a request anyone bound to it could now make.
    /// `allowed_before` answers for the role's old perms, `bound` says
    /// whether anyone is bound to a role now.
    pub fn latent_witness(
        &mut self,
        latent: &[RoleGrant<'m>],
        mut allowed_before: impl FnMut(&RbacKey, &Perm<'_>) -> bool,
        bound: impl Fn(&RbacKey) -> bool,
    ) -> Option<Witness> {
        let mut best: Option<((Severity, usize), &RoleGrant<'m>)> = None;
        for g in latent {
            let score = self.score(latent_facet(g));
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, g));
            }
        }
        let (_, g) = best?;
        let holder = Holder {
            label: role_label(g.role),
            now: format!("anyone bound to {} could now", role_path(g.role)),
            tail: if bound(g.role) {
                "nobody bound today gains it"
            } else {
                "nobody is bound today"
            },
            namespace: g.role.namespace.as_deref(),
        };
        Some(concrete_witness(&holder, g.perm, |p| {
            allowed_before(g.role, p)
        }))
    }

    /// How telling a facet is: its severity, then its most telling risk.
    fn score(&mut self, f: Facet<'m>) -> (Severity, usize) {
        let info = self.info(f);
        let telling = Risk::from_mask(info.risks)
            .filter_map(|r| WITNESS_PRIORITY.iter().position(|p| *p == r))
            .min()
            .map_or(0, |i| WITNESS_PRIORITY.len() - i);
        (
            severity(
                info.risks,
                info.write,
                info.system_beyond_discovery,
                &NO_AGGREGATION,
            ),
            telling,
        )
    }
}

/// The witness of a binding to a role that does not exist: its first subject
/// gets whatever that role will grant once it is created.
pub fn dangling_witness(d: &Dangling<'_>, same_name_cluster_role: bool) -> Witness {
    let role = role_path(d.role);
    let hint = if same_name_cluster_role {
        format!(
            " (a ClusterRole named {:?} exists, but a RoleBinding's Role must be in its own namespace)",
            d.role.name
        )
    } else {
        String::new()
    };
    Witness {
        subject: d.subject.to_string(),
        action: "*".into(),
        resource: role.clone(),
        scope: scope_label(d.namespace),
        api_group: None,
        explanation: format!(
            "{} is bound {} to {role}, which does not exist{hint}; it will get whatever that role grants once someone creates it",
            d.subject,
            scope_words(d.namespace)
        ),
    }
}

/// A role as a grant's subject: `ClusterRole:edit`, `Role:payments:deployer`.
pub fn role_label(role: &RbacKey) -> String {
    match &role.namespace {
        Some(ns) => format!("{}:{ns}:{}", role.kind, role.name),
        None => format!("{}:{}", role.kind, role.name),
    }
}

/// A role as kubectl names it: `ClusterRole/edit`, `Role/payments/deployer`.
pub fn role_path(role: &RbacKey) -> String {
    match &role.namespace {
        Some(ns) => format!("{}/{ns}/{}", role.kind, role.name),
        None => format!("{}/{}", role.kind, role.name),
    }
}

/// Tags and severity of a change from its gained perms (lost perms never raise severity).
pub fn classify(gained: &[K8sGrant<'_>], cx: &K8sContext<'_>) -> (BTreeSet<Risk>, Severity) {
    Classifier::new().classify(gained, cx)
}

/// Picks the most severe gained perm and makes it a concrete request the old
/// state did not allow. `allowed_before` answers for the old state.
pub fn witness(
    gained: &[K8sGrant<'_>],
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

/// Who a witness is about, and how its sentence reads.
struct Holder<'a> {
    /// The witness's `subject`.
    label: String,
    /// The sentence's start: `Group:eng can now`.
    now: String,
    /// After the semicolon: `before, it could not`.
    tail: &'static str,
    namespace: Option<&'a str>,
}

/// Makes one gained perm a concrete request the old state did not allow.
fn concrete_witness(
    holder: &Holder<'_>,
    perm: Perm<'_>,
    mut allowed_before: impl FnMut(&Perm<'_>) -> bool,
) -> Witness {
    let ns = holder.namespace;
    let concrete = if perm.is_wildcard() {
        WITNESS_REQUESTS.iter().find_map(|(g, r, v)| {
            let request = Perm::Resource {
                group: g,
                resource: r,
                verb: v,
                name: None,
            };
            (allows(&perm, g, r, v) && !allowed_before(&request)).then_some((*g, *r, *v))
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
                !allowed_before(&Perm::Resource {
                    group,
                    resource,
                    verb: v,
                    name,
                })
            })
        }
        _ => None,
    };
    let subject = holder.label.clone();
    let (now, tail) = (&holder.now, holder.tail);
    let scope = scope_label(ns);
    match (concrete, perm) {
        (Some((g, r, v)), _) => Witness {
            explanation: format!(
                "{now} {v} {} {} (through `{}`); {tail}",
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
                explanation: format!("{now} {verb} {target} {}; {tail}", scope_words(ns)),
                subject,
                action: verb,
                resource: name.map_or_else(|| resource.to_owned(), |n| format!("{resource}/{n}")),
                scope,
                api_group: Some(group.to_owned()),
            }
        }
        (None, Perm::NonResource { url, verb }) => Witness {
            explanation: format!("{now} {verb} {url} cluster-wide; {tail}"),
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
        let g = K8sGrant {
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
        let g = K8sGrant {
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
            K8sGrant {
                subject: &eng,
                namespace: None,
                perm: res("", "pods/exec", "create"),
            },
            K8sGrant {
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
            let mut grants: Vec<K8sGrant<'_>> = grants
                .iter()
                .map(|&(s, n, v)| K8sGrant {
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
