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

/// A set of perms that remembers which kinds of wildcard it holds, so a
/// coverage check only tries the generalisations that can be present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermSet<'m> {
    perms: FxHashSet<Perm<'m>>,
    any_group: bool,
    any_verb: bool,
    any_resource: bool,
    any_subresource: bool,
    url_prefix: bool,
    any_url_verb: bool,
}

impl<'m> PermSet<'m> {
    pub fn insert(&mut self, p: Perm<'m>) -> bool {
        match p {
            Perm::Resource {
                group,
                resource,
                verb,
                ..
            } => {
                self.any_group |= group == "*";
                self.any_verb |= verb == "*";
                self.any_resource |= resource == "*";
                self.any_subresource |= resource.starts_with("*/");
            }
            Perm::NonResource { url, verb } => {
                self.url_prefix |= url.ends_with('*');
                self.any_url_verb |= verb == "*";
            }
        }
        self.perms.insert(p)
    }

    pub fn contains(&self, p: &Perm<'_>) -> bool {
        // Perm<'m> is covariant, so a shorter-lived key can be looked up.
        let set: &FxHashSet<Perm<'_>> = &self.perms;
        set.contains(p)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Perm<'m>> {
        self.perms.iter()
    }

    pub fn len(&self) -> usize {
        self.perms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.perms.is_empty()
    }
}

impl<'m> FromIterator<Perm<'m>> for PermSet<'m> {
    fn from_iter<I: IntoIterator<Item = Perm<'m>>>(iter: I) -> Self {
        let mut set = PermSet::default();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl<'m> Extend<Perm<'m>> for PermSet<'m> {
    fn extend<I: IntoIterator<Item = Perm<'m>>>(&mut self, iter: I) {
        for p in iter {
            self.insert(p);
        }
    }
}

/// Ordered by variant (resource perms first), then field by field.
#[derive(Clone, Copy, Debug)]
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

/// A string compared by address first: perms compared during a diff mostly
/// borrow the very same strings from the model, so most comparisons then
/// need no byte compared. Otherwise by value, like `&str`.
#[derive(Clone, Copy, Debug, Hash)]
pub(crate) struct ByAddressFirst<'a>(pub(crate) &'a str);

impl ByAddressFirst<'_> {
    fn same_place(&self, other: &Self) -> bool {
        std::ptr::eq(self.0.as_ptr(), other.0.as_ptr()) && self.0.len() == other.0.len()
    }
}

impl PartialEq for ByAddressFirst<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.same_place(other) || self.0 == other.0
    }
}

impl Eq for ByAddressFirst<'_> {}

impl Ord for ByAddressFirst<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.same_place(other) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(other.0)
        }
    }
}

impl PartialOrd for ByAddressFirst<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type PermFields<'a> = (
    u8,
    ByAddressFirst<'a>,
    ByAddressFirst<'a>,
    ByAddressFirst<'a>,
    Option<ByAddressFirst<'a>>,
);

impl<'a> Perm<'a> {
    /// What equality, order and hash go by: the variant (resource perms
    /// first), then the fields in declaration order.
    fn fields(&self) -> PermFields<'a> {
        match *self {
            Perm::Resource {
                group,
                resource,
                verb,
                name,
            } => (
                0,
                ByAddressFirst(group),
                ByAddressFirst(resource),
                ByAddressFirst(verb),
                name.map(ByAddressFirst),
            ),
            Perm::NonResource { url, verb } => (
                1,
                ByAddressFirst(url),
                ByAddressFirst(verb),
                ByAddressFirst(""),
                None,
            ),
        }
    }
}

impl PartialEq for Perm<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for Perm<'_> {}

impl std::hash::Hash for Perm<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fields().hash(state);
    }
}

impl Ord for Perm<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

impl PartialOrd for Perm<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
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

/// Whether a verb, API group or resource can match a request at all: the
/// API server compares them case-sensitively and every request spells
/// them in lower case, so `GET` or `Secrets` matches nothing.
pub fn can_match(word: &str) -> bool {
    !word.bytes().any(|b| b.is_ascii_uppercase())
}

/// The words of a role's rules that match nothing ([`can_match`]), as
/// `(rule index, field, word)`: a role that seems to grant what it does not.
pub fn unmatchable(rules: &[PolicyRule]) -> Vec<(usize, &'static str, &str)> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for (field, words) in [
            ("verbs", &rule.verbs),
            ("apiGroups", &rule.api_groups),
            ("resources", &rule.resources),
        ] {
            out.extend(
                words
                    .iter()
                    .filter(|w| !can_match(w))
                    .map(|w| (i, field, w.as_str())),
            );
        }
    }
    out
}

/// Expands rules into atomic perms. A rule naming both resources and
/// nonResourceURLs is invalid in Kubernetes; both halves are read anyway.
/// Words that match nothing ([`can_match`]) grant nothing and are left out.
pub fn expand_rules<'a>(rules: &'a [PolicyRule], out: &mut PermSet<'a>) {
    for rule in rules {
        for verb in rule.verbs.iter().filter(|v| can_match(v)) {
            for group in rule.api_groups.iter().filter(|g| can_match(g)) {
                for resource in rule.resources.iter().filter(|r| can_match(r)) {
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
pub fn covers(set: &PermSet<'_>, p: &Perm<'_>) -> bool {
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
            let sub = if set.any_subresource {
                resource
                    .split_once('/')
                    .filter(|(base, _)| *base != "*")
                    .map(|(_, sub)| format!("*/{sub}"))
            } else {
                None
            };
            let mut groups: [&str; 2] = [group, ""];
            let ng = if set.any_group && group != "*" {
                groups[1] = "*";
                2
            } else {
                1
            };
            let mut verbs: [&str; 2] = [verb, ""];
            let nv = if set.any_verb && verb != "*" {
                verbs[1] = "*";
                2
            } else {
                1
            };
            let mut resources: [&str; 3] = [resource, "", ""];
            let mut nr = 1;
            if let Some(sub) = &sub {
                resources[nr] = sub;
                nr += 1;
            }
            if set.any_resource && resource != "*" {
                resources[nr] = "*";
                nr += 1;
            }
            let names: &[Option<&str>] = match name {
                Some(n) => &[Some(n), None],
                None => &[None],
            };
            for g in &groups[..ng] {
                for r in &resources[..nr] {
                    for v in &verbs[..nv] {
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
            let verbs: &[&str] = if verb == "*" || !set.any_url_verb {
                &[verb][..]
            } else {
                &[verb, "*"][..]
            };
            if set.url_prefix {
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
            }
            verbs
                .iter()
                .any(|v| set.contains(&Perm::NonResource { url, verb: v }))
        }
    }
}

/// Whether `rules` allow everything `p` allows: [`covers`] over the rules'
/// expansion, answered from the rules themselves. Expanding a role costs far
/// more than asking it about a few perms, which is what a diff does for each
/// role that might already grant what a change adds.
pub fn rules_cover(rules: &[PolicyRule], p: &Perm<'_>) -> bool {
    let has = |list: &[String], item: &str| list.iter().any(|x| x == item);
    rules.iter().any(|rule| match *p {
        Perm::Resource {
            group,
            resource,
            verb,
            name,
        } => {
            (has(&rule.verbs, verb) || has(&rule.verbs, "*"))
                && (has(&rule.api_groups, group) || has(&rule.api_groups, "*"))
                && rule.resources.iter().any(|r| resource_matches(r, resource))
                && (rule.resource_names.is_empty()
                    || name.is_some_and(|n| has(&rule.resource_names, n)))
        }
        Perm::NonResource { url, verb } => {
            let base = url.strip_suffix('*').unwrap_or(url);
            (has(&rule.verbs, verb) || has(&rule.verbs, "*"))
                && rule.non_resource_urls.iter().any(|u| {
                    u == url
                        || u.strip_suffix('*')
                            .is_some_and(|prefix| base.starts_with(prefix))
                })
        }
    })
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

pub(crate) fn resource_matches(rule: &str, request: &str) -> bool {
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
    use proptest::prelude::*;

    /// What the comparisons must agree with: the fields as a tuple, by value.
    fn tuple<'a>(p: &Perm<'a>) -> (u8, &'a str, &'a str, &'a str, Option<&'a str>) {
        match *p {
            Perm::Resource {
                group,
                resource,
                verb,
                name,
            } => (0, group, resource, verb, name),
            Perm::NonResource { url, verb } => (1, url, verb, "", None),
        }
    }

    fn rule_strategy() -> impl Strategy<Value = PolicyRule> {
        let list = |items: &'static [&'static str]| {
            proptest::sample::subsequence(items, 0..=items.len())
                .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<String>>())
        };
        (
            list(&["", "apps", "*"]),
            list(&[
                "pods",
                "pods/log",
                "*",
                "*/log",
                "*/scale",
                "deployments/scale",
            ]),
            list(&["get", "list", "*"]),
            list(&["a", "b"]),
            list(&["/healthz", "/api/*", "/a*", "*", "/api/v1"]),
        )
            .prop_map(
                |(api_groups, resources, verbs, resource_names, non_resource_urls)| PolicyRule {
                    api_groups,
                    resources,
                    verbs,
                    resource_names,
                    non_resource_urls,
                },
            )
    }

    proptest! {
        #[test]
        fn rules_cover_agrees_with_covers_over_the_expansion(
            rules in proptest::collection::vec(rule_strategy(), 0..4),
            resource in (0usize..3, 0usize..7, 0usize..3, 0usize..3),
            url in (0usize..6, 0usize..3),
        ) {
            let groups = ["", "apps", "*"];
            let resources = ["pods", "pods/log", "*", "*/log", "deployments/scale", "nodes"];
            let resources = [resources.as_slice(), &["secrets"]].concat();
            let verbs = ["get", "list", "*"];
            let names = [None, Some("a"), Some("c")];
            let urls = ["/healthz", "/api/v1", "/api/*", "/apis", "*", "/a"];
            let mut set = PermSet::default();
            expand_rules(&rules, &mut set);
            let perms = [
                res(groups[resource.0], resources[resource.1], verbs[resource.2], names[resource.3]),
                Perm::NonResource { url: urls[url.0], verb: verbs[url.1] },
            ];
            for p in perms {
                prop_assert_eq!(rules_cover(&rules, &p), covers(&set, &p), "{:?}", p);
            }
        }

        #[test]
        fn order_and_equality_are_by_value_whatever_the_addresses(
            a in (any::<bool>(), "[a*]{0,2}", "[ab/]{0,2}", "[gl]{0,1}", proptest::option::of("[xy]{0,1}")),
            b in (any::<bool>(), "[a*]{0,2}", "[ab/]{0,2}", "[gl]{0,1}", proptest::option::of("[xy]{0,1}")),
        ) {
            fn perm(t: &(bool, String, String, String, Option<String>)) -> Perm<'_> {
                if t.0 {
                    Perm::NonResource { url: &t.1, verb: &t.3 }
                } else {
                    res(&t.1, &t.2, &t.3, t.4.as_deref())
                }
            }
            // Equal text at other addresses, and the very same strings.
            let copy = a.clone();
            for (x, y) in [(perm(&a), perm(&b)), (perm(&a), perm(&copy)), (perm(&a), perm(&a))] {
                prop_assert_eq!(x.cmp(&y), tuple(&x).cmp(&tuple(&y)));
                prop_assert_eq!(x == y, tuple(&x) == tuple(&y));
            }
        }
    }

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
