//! The permission effect of one changed Kubernetes object.
//!
//! Two indexed states and a changed key come in; the perms each subject
//! gained and lost through that object come out. Only what the object reaches
//! is examined: a binding's subjects, or a role's bindings (and, through
//! aggregation, the bindings of every ClusterRole that aggregates it). A perm
//! counts as gained only if the subject's whole old state did not already
//! allow it in that scope, so re-granting something already held is neutral.
//!
//! A role change also carries the role's own (latent) delta: what the role,
//! and every aggregated role it reaches, allows after and did not cover
//! before, whoever is bound. A binding whose role does not exist carries its
//! newly bound subjects as dangling: they get whatever the role will grant.

use crate::grants::k8s::PermCache;
use crate::grants::k8s_perm::{ByAddressFirst, Perm, Scope, covers, rules_cover};
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::k8s::{RbacKey, RbacKind, Subject};
use rustc_hash::FxHashMap;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

/// One subject allowed one perm in one scope (`None` = cluster-wide). Borrows
/// from the models, so millions of them stay cheap. Ordered by subject,
/// scope and perm, by value (strings compared by address first).
#[derive(Clone, Copy, Debug)]
pub struct K8sGrant<'m> {
    pub subject: &'m Subject,
    pub namespace: Option<&'m str>,
    pub perm: Perm<'m>,
}

impl<'m> K8sGrant<'m> {
    fn fields(&self) -> (&'m Subject, Option<ByAddressFirst<'m>>, Perm<'m>) {
        (self.subject, self.namespace.map(ByAddressFirst), self.perm)
    }

    /// Same subject and scope as `other`.
    pub fn same_subject_and_scope(&self, other: &Self) -> bool {
        self.subject == other.subject
            && self.namespace.map(ByAddressFirst) == other.namespace.map(ByAddressFirst)
    }
}

impl PartialEq for K8sGrant<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for K8sGrant<'_> {}

impl std::hash::Hash for K8sGrant<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fields().hash(state);
    }
}

impl Ord for K8sGrant<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

impl PartialOrd for K8sGrant<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A perm a role itself allows, held by whoever is (or will be) bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleGrant<'m> {
    pub role: &'m RbacKey,
    pub perm: Perm<'m>,
}

/// A subject a binding names in a scope, bound to a role that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dangling<'m> {
    pub subject: &'m Subject,
    pub namespace: Option<&'m str>,
    pub role: &'m RbacKey,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sEffect<'m> {
    /// Sorted, without duplicates.
    pub gained: Vec<K8sGrant<'m>>,
    /// Sorted, without duplicates.
    pub lost: Vec<K8sGrant<'m>>,
    /// The changed role's own new perms, and those of the aggregated roles
    /// it reaches (only what it carries); by role, then perm.
    pub latent_gained: Vec<RoleGrant<'m>>,
    /// The reverse of `latent_gained`.
    pub latent_lost: Vec<RoleGrant<'m>>,
    /// Subjects a changed binding newly binds to a role missing from NEW.
    pub dangling: Vec<Dangling<'m>>,
    /// Subjects OLD bound to a role missing from OLD that NEW no longer binds to it.
    pub dangling_lost: Vec<Dangling<'m>>,
    /// The changed binding, as it is in NEW, names a system group or `system:anonymous`.
    pub names_system_subject: bool,
    /// Aggregated ClusterRoles through which the change reached subjects.
    pub aggregated_into: BTreeSet<String>,
    /// Whether the object's own labels made it join or leave an aggregation.
    pub aggregation_label: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// Perms of the new state that the old one lacks.
    Gained,
    /// Perms of the old state that the new one lacks.
    Lost,
}

/// Computes effects for many changed keys between the same two states,
/// sharing caches across them.
pub struct K8sDiffer<'m> {
    old: PermCache<'m>,
    new: PermCache<'m>,
    deltas: HashMap<(bool, RbacKey), Rc<Vec<Perm<'m>>>>,
    reaches: FxHashMap<(bool, RbacKey), Rc<Reach<'m>>>,
}

/// Everyone a role's bindings reach on one side, sorted by subject and
/// scope, each with the roles that already apply to it there on the other
/// side (`covering[ends[i - 1]..ends[i]]`). Shared by every change that
/// reaches the role (each member of an aggregated role).
struct Reach<'m> {
    pairs: Vec<(&'m Subject, Option<&'m str>)>,
    ends: Vec<usize>,
    covering: Vec<&'m RbacKey>,
}

impl<'m> K8sDiffer<'m> {
    pub fn new(old: &'m K8sModel, new: &'m K8sModel) -> Self {
        Self {
            old: PermCache::new(old),
            new: PermCache::new(new),
            deltas: HashMap::new(),
            reaches: FxHashMap::default(),
        }
    }

    pub fn old_cache(&mut self) -> &mut PermCache<'m> {
        &mut self.old
    }

    pub fn new_cache(&mut self) -> &mut PermCache<'m> {
        &mut self.new
    }

    /// (state holding the perms, state checked for coverage)
    fn sides(&mut self, side: Side) -> (&mut PermCache<'m>, &mut PermCache<'m>) {
        match side {
            Side::Gained => (&mut self.new, &mut self.old),
            Side::Lost => (&mut self.old, &mut self.new),
        }
    }

    /// Perms of `role` on one side that the other side's `role` lacks literally.
    fn role_delta(&mut self, side: Side, role: &RbacKey) -> Rc<Vec<Perm<'m>>> {
        let cache_key = (side == Side::Gained, role.clone());
        if let Some(d) = self.deltas.get(&cache_key) {
            return d.clone();
        }
        let (src, dst) = self.sides(side);
        let from = src.role(role);
        let other = dst.role(role);
        let mut delta: Vec<Perm<'m>> = from
            .iter()
            .filter(|p| !other.contains(p))
            .copied()
            .collect();
        delta.sort();
        let delta = Rc::new(delta);
        self.deltas.insert(cache_key, delta.clone());
        delta
    }

    pub fn effect(&mut self, key: &RbacKey) -> K8sEffect<'m> {
        let mut effect = K8sEffect::default();
        match key.kind {
            RbacKind::RoleBinding | RbacKind::ClusterRoleBinding => {
                self.binding_side(key, Side::Gained, &mut effect.gained);
                self.binding_side(key, Side::Lost, &mut effect.lost);
                effect.dangling = self.dangling(key, Side::Gained);
                effect.dangling_lost = self.dangling(key, Side::Lost);
                effect.names_system_subject = self
                    .new
                    .model()
                    .get(key)
                    .and_then(K8sObject::binding)
                    .is_some_and(|b| b.subjects.iter().any(Subject::is_system));
            }
            RbacKind::Role | RbacKind::ClusterRole => {
                let mut roles: BTreeSet<RbacKey> = BTreeSet::new();
                roles.insert(key.clone());
                let mut aggregators = BTreeSet::new();
                if key.kind == RbacKind::ClusterRole {
                    aggregators.extend(self.old.model().aggregators_of(&key.name));
                    aggregators.extend(self.new.model().aggregators_of(&key.name));
                    let direct_old: BTreeSet<&str> = self
                        .old
                        .model()
                        .direct_aggregators_of(&key.name)
                        .into_iter()
                        .collect();
                    let direct_new: BTreeSet<&str> = self
                        .new
                        .model()
                        .direct_aggregators_of(&key.name)
                        .into_iter()
                        .collect();
                    effect.aggregation_label = direct_old != direct_new;
                }
                roles.extend(aggregators.iter().map(|a| RbacKey::cluster_role(a)));
                let mut reached = vec![false; roles.len()];
                for (side, out) in [
                    (Side::Gained, &mut effect.gained),
                    (Side::Lost, &mut effect.lost),
                ] {
                    let parts: Vec<(usize, Part<'m>)> = roles
                        .iter()
                        .enumerate()
                        .filter_map(|(i, role)| Some((i, self.part(key, role, side)?)))
                        .collect();
                    let spread = self.spread(side, &parts, out);
                    for ((i, _), reached_any) in parts.iter().zip(spread) {
                        reached[*i] |= reached_any;
                    }
                }
                for (role, reached) in roles.iter().zip(reached) {
                    if reached && role != key {
                        effect.aggregated_into.insert(role.name.clone());
                    }
                }
                for (side, out) in [
                    (Side::Gained, &mut effect.latent_gained),
                    (Side::Lost, &mut effect.latent_lost),
                ] {
                    for role in &roles {
                        self.latent(key, role, side, out);
                    }
                }
            }
            RbacKind::ServiceAccount => {}
        }
        debug_assert!(effect.gained.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(effect.lost.windows(2).all(|w| w[0] < w[1]));
        effect
    }

    /// What `role` allows on `side` that the other side's `role` does not
    /// cover, limited (for an aggregating role) to what `changed` carries.
    fn latent(
        &mut self,
        changed: &RbacKey,
        role: &RbacKey,
        side: Side,
        out: &mut Vec<RoleGrant<'m>>,
    ) {
        let (src, dst) = self.sides(side);
        let Some((role_key, _)) = src.model().get_key_value(role) else {
            return;
        };
        let own = src.role_sorted(changed);
        let theirs = src.role(role);
        let before = dst.role(role);
        let start = out.len();
        for perm in own.iter() {
            if (role == changed || theirs.contains(perm)) && !covers(&before, perm) {
                out.push(RoleGrant {
                    role: role_key,
                    perm: *perm,
                });
            }
        }
        // `own` is sorted, so one role's grants come out in order.
        debug_assert!(out[start..].windows(2).all(|w| w[0] < w[1]));
    }

    /// Subjects the binding `key` names on `side`, bound to a role that side
    /// lacks, which the other side did not already bind to that same
    /// missing role: on NEW, who now waits for a role; on OLD, who no longer does.
    fn dangling(&mut self, key: &RbacKey, side: Side) -> Vec<Dangling<'m>> {
        let (src, dst) = self.sides(side);
        let (model, other) = (src.model(), dst.model());
        let Some((key, binding)) = model
            .get_key_value(key)
            .and_then(|(k, o)| Some((k, o.binding()?)))
        else {
            return Vec::new();
        };
        if model.get(&binding.role).is_some() {
            return Vec::new();
        }
        let before = other
            .get(key)
            .and_then(K8sObject::binding)
            .filter(|b| b.role == binding.role && other.get(&b.role).is_none());
        let mut subjects: Vec<&'m Subject> = binding
            .subjects
            .iter()
            .filter(|s| !before.is_some_and(|b| b.subjects.contains(s)))
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        subjects
            .into_iter()
            .map(|subject| Dangling {
                subject,
                namespace: key.namespace.as_deref(),
                role: &binding.role,
            })
            .collect()
    }

    fn binding_side(&mut self, key: &RbacKey, side: Side, out: &mut Vec<K8sGrant<'m>>) {
        let (src, dst) = self.sides(side);
        let model = src.model();
        let Some((key, binding)) = model
            .get_key_value(key)
            .and_then(|(k, o)| Some((k, o.binding()?)))
        else {
            return;
        };
        let counterpart = dst.model().get(key).and_then(K8sObject::binding);
        let scope = Scope::from_namespace(key.namespace.as_deref());
        let all = src.role_sorted(&binding.role);
        let (_, dst) = self.sides(side);
        // A subject already bound to the same role gains nothing from this
        // binding; what its role gained is the role's change.
        let mut subjects: Vec<&'m Subject> = binding
            .subjects
            .iter()
            .filter(|subject| {
                !counterpart.is_some_and(|c| c.role == binding.role && c.subjects.contains(subject))
            })
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        out.reserve(reserve_for(subjects.len(), all.len()));
        for subject in subjects {
            let nothing_else = dst.subject_sets(subject, scope).is_empty();
            for perm in all.iter() {
                if nothing_else || !dst.subject_covers(subject, scope, perm) {
                    out.push(K8sGrant {
                        subject,
                        namespace: key.namespace.as_deref(),
                        perm: *perm,
                    });
                }
            }
        }
    }

    /// Who `role`'s bindings reach on `side`, with what covers them on the other.
    fn reach(&mut self, side: Side, role: &RbacKey) -> Rc<Reach<'m>> {
        let cache_key = (side == Side::Gained, role.clone());
        if let Some(r) = self.reaches.get(&cache_key) {
            return r.clone();
        }
        let (src, dst) = self.sides(side);
        let (model, dst_model) = (src.model(), dst.model());
        let mut pairs: Vec<(&'m Subject, Option<&'m str>)> = Vec::new();
        for (binding_key, object) in model.bindings_of_role(role) {
            if let Some(binding) = object.binding() {
                let namespace = binding_key.namespace.as_deref();
                pairs.extend(binding.subjects.iter().map(|s| (s, namespace)));
            }
        }
        // In order, so the grants come out sorted.
        pairs.sort_unstable();
        pairs.dedup();
        let mut ends = Vec::with_capacity(pairs.len());
        let mut covering = Vec::new();
        for &(subject, namespace) in &pairs {
            if let Some((_, bindings)) = dst_model.subject_bindings(subject) {
                let namespaced = namespace.and_then(|ns| bindings.namespaced.get(ns));
                covering.extend(
                    bindings
                        .cluster
                        .values()
                        .chain(namespaced.into_iter().flat_map(|m| m.values())),
                );
            }
            ends.push(covering.len());
        }
        let reach = Rc::new(Reach {
            pairs,
            ends,
            covering,
        });
        self.reaches.insert(cache_key, reach.clone());
        reach
    }

    /// What `role` gained (or lost) through the change of `changed` (the
    /// role itself, or one it aggregates), with whom its bindings reach;
    /// `None` when it gained (or lost) nothing.
    fn part(&mut self, changed: &RbacKey, role: &RbacKey, side: Side) -> Option<Part<'m>> {
        let mut delta = self.role_delta(side, role);
        if role != changed {
            // An aggregated role's delta may hold other members' changes too;
            // this change accounts only for the perms its own role carries.
            let (src, _) = self.sides(side);
            let own = src.role(changed);
            delta = Rc::new(delta.iter().filter(|p| own.contains(p)).copied().collect());
        }
        if delta.is_empty() {
            return None;
        }
        let reach = self.reach(side, role);
        Some(Part { delta, reach })
    }

    /// Applies the parts (one role's change, and the same change seen
    /// through each role aggregating it) to the subjects they reach: a perm
    /// a subject's other roles do not already cover is a grant. The parts'
    /// subjects are walked together in order, so each subject and scope is
    /// checked once and the grants come out sorted and without duplicates,
    /// with no sort over them. Returns, per part, whether it reached anyone.
    fn spread(
        &mut self,
        side: Side,
        parts: &[(usize, Part<'m>)],
        out: &mut Vec<K8sGrant<'m>>,
    ) -> Vec<bool> {
        let mut reached = vec![false; parts.len()];
        // Every perm any part carries, and each part's share of them.
        let mut perms: Vec<Perm<'m>> = parts
            .iter()
            .flat_map(|(_, p)| p.delta.iter().copied())
            .collect();
        if parts.len() > 1 {
            perms.sort_unstable();
            perms.dedup();
        }
        let words = perms.len().div_ceil(64);
        let carries: Vec<Vec<u64>> = parts
            .iter()
            .map(|(_, p)| {
                let mut mask = vec![0u64; words];
                for perm in p.delta.iter() {
                    if let Ok(i) = perms.binary_search(perm) {
                        mask[i / 64] |= 1 << (i % 64);
                    }
                }
                mask
            })
            .collect();
        let most: usize = parts.iter().map(|(_, p)| p.reach.pairs.len()).sum();
        out.reserve(reserve_for(most, perms.len()));
        let (_, dst) = self.sides(side);
        // The same perms are checked for thousands of subjects; which of them
        // a role covers is worked out once per covering role.
        let mut memo: FxHashMap<&RbacKey, Vec<u64>> = FxHashMap::default();
        let mut cursors = vec![0usize; parts.len()];
        let mut carried = vec![0u64; words];
        let mut covered = vec![0u64; words];
        let mut here: Vec<usize> = Vec::with_capacity(parts.len());
        loop {
            let mut next: Option<(&'m Subject, Option<&'m str>)> = None;
            for ((_, part), &at) in parts.iter().zip(&cursors) {
                if let Some(&pair) = part.reach.pairs.get(at)
                    && next.is_none_or(|n| pair < n)
                {
                    next = Some(pair);
                }
            }
            let Some((subject, namespace)) = next else {
                break;
            };
            here.clear();
            carried.iter_mut().for_each(|w| *w = 0);
            let mut covering: &[&'m RbacKey] = &[];
            for (i, (_, part)) in parts.iter().enumerate() {
                let at = cursors[i];
                if part.reach.pairs.get(at) == Some(&(subject, namespace)) {
                    here.push(i);
                    cursors[i] += 1;
                    for (w, c) in carried.iter_mut().zip(&carries[i]) {
                        *w |= c;
                    }
                    // Who covers a subject in a scope does not depend on the
                    // role that reached it.
                    covering = part.reach.covering_of(at);
                }
            }
            covered.iter_mut().for_each(|w| *w = 0);
            for other in covering {
                let mask = memo.entry(*other).or_insert_with(|| {
                    let mut mask = vec![0u64; words];
                    let mut mark = |covered: &dyn Fn(&Perm<'_>) -> bool| {
                        for (i, perm) in perms.iter().enumerate() {
                            if covered(perm) {
                                mask[i / 64] |= 1 << (i % 64);
                            }
                        }
                    };
                    // A role that aggregates nothing is asked through its
                    // rules; expanding thousands of them would cost more.
                    match dst.model().get(other).and_then(K8sObject::role) {
                        Some(def) if def.aggregation.is_none() || other.kind == RbacKind::Role => {
                            mark(&|perm| rules_cover(&def.rules, perm));
                        }
                        _ => {
                            let set = dst.role(other);
                            mark(&|perm| covers(&set, perm));
                        }
                    }
                    mask
                });
                for (w, m) in covered.iter_mut().zip(mask.iter()) {
                    *w |= m;
                }
            }
            for &i in &here {
                reached[i] |= carries[i].iter().zip(&covered).any(|(c, v)| c & !v != 0);
            }
            for (i, perm) in perms.iter().enumerate() {
                if carried[i / 64] & !covered[i / 64] & (1 << (i % 64)) != 0 {
                    out.push(K8sGrant {
                        subject,
                        namespace,
                        perm: *perm,
                    });
                }
            }
        }
        reached
    }
}

/// One role's share of a change on one side: the perms it gained (or lost)
/// through the change, sorted, and everyone its bindings reach.
struct Part<'m> {
    delta: Rc<Vec<Perm<'m>>>,
    reach: Rc<Reach<'m>>,
}

impl<'m> Reach<'m> {
    /// The roles covering the subject and scope at `pairs[at]`.
    fn covering_of(&self, at: usize) -> &[&'m RbacKey] {
        let start = if at == 0 { 0 } else { self.ends[at - 1] };
        &self.covering[start..self.ends[at]]
    }
}

/// Room for the grants `subjects` subjects can gain of `perms` perms: the
/// most there can be (regrowing a vector of hundreds of thousands copies it
/// over and over), capped so a widely bound role does not reserve gigabytes.
fn reserve_for(subjects: usize, perms: usize) -> usize {
    const MOST: usize = 1 << 20;
    subjects.saturating_mul(perms).min(MOST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::k8s::K8sObject;
    use serde_json::{Value, json};

    fn role(name: &str, labels: Value, rules: Value) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":name,"labels":labels},"rules":rules})
    }

    fn crb(name: &str, role: &str, group: &str) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
            "metadata":{"name":name},"roleRef":{"kind":"ClusterRole","name":role,"apiGroup":"rbac.authorization.k8s.io"},
            "subjects":[{"kind":"Group","name":group,"apiGroup":"rbac.authorization.k8s.io"}]})
    }

    fn secrets_get() -> Value {
        json!([{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}])
    }

    #[test]
    fn new_binding_gains_role_perms() {
        let old = K8sModel::of(&[role("reader", json!({}), secrets_get())]);
        let new = K8sModel::of(&[
            role("reader", json!({}), secrets_get()),
            crb("b", "reader", "eng"),
        ]);
        let mut d = K8sDiffer::new(&old, &new);
        let e = d.effect(&RbacKey::new(RbacKind::ClusterRoleBinding, None, "b"));
        assert_eq!(e.gained.len(), 1);
        assert!(e.lost.is_empty());
        let g = e.gained[0];
        assert_eq!(*g.subject, Subject::group("eng"));
        assert_eq!(g.namespace, None);
    }

    #[test]
    fn regrant_of_held_perm_is_neutral() {
        let old = K8sModel::of(&[
            role("reader", json!({}), secrets_get()),
            role(
                "admin2",
                json!({}),
                json!([{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]),
            ),
            crb("a", "admin2", "eng"),
        ]);
        let mut new = old.clone();
        new.insert(K8sObject::from_raw(crb("b", "reader", "eng")).unwrap());
        let mut d = K8sDiffer::new(&old, &new);
        let e = d.effect(&RbacKey::new(RbacKind::ClusterRoleBinding, None, "b"));
        assert!(e.gained.is_empty() && e.lost.is_empty());
    }

    #[test]
    fn labelled_role_widens_aggregated_bindings() {
        let admin = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"admin"},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"rbac.authorization.k8s.io/aggregate-to-admin":"true"}}]}});
        let binding = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"b","namespace":"team"},
            "roleRef":{"kind":"ClusterRole","name":"admin","apiGroup":"rbac.authorization.k8s.io"},
            "subjects":[{"kind":"User","name":"alice","apiGroup":"rbac.authorization.k8s.io"}]});
        let old = K8sModel::of(&[
            admin.clone(),
            binding.clone(),
            role("extra", json!({}), secrets_get()),
        ]);
        let new = K8sModel::of(&[
            admin,
            binding,
            role(
                "extra",
                json!({"rbac.authorization.k8s.io/aggregate-to-admin":"true"}),
                secrets_get(),
            ),
        ]);
        let mut d = K8sDiffer::new(&old, &new);
        let e = d.effect(&RbacKey::cluster_role("extra"));
        assert!(e.aggregation_label);
        assert_eq!(
            e.aggregated_into,
            ["admin".to_string()].into_iter().collect()
        );
        let g = e.gained[0];
        assert_eq!(
            (g.subject.clone(), g.namespace),
            (Subject::user("alice"), Some("team"))
        );
        // And the reverse is a loss.
        let mut d = K8sDiffer::new(&new, &old);
        let e = d.effect(&RbacKey::cluster_role("extra"));
        assert!(e.gained.is_empty());
        assert_eq!(e.lost.len(), 1);
    }

    #[test]
    fn role_change_reaches_only_uncovered_subjects() {
        let wide = json!([{"apiGroups":[""],"resources":["*"],"verbs":["get"]}]);
        let old = K8sModel::of(&[
            role("r", json!({}), json!([])),
            crb("b1", "r", "g1"),
            crb("b2", "r", "g2"),
            role("w", json!({}), wide),
            crb("b3", "w", "g2"),
        ]);
        let mut new = old.clone();
        new.insert(K8sObject::from_raw(role("r", json!({}), secrets_get())).unwrap());
        let mut d = K8sDiffer::new(&old, &new);
        let e = d.effect(&RbacKey::cluster_role("r"));
        let subjects: Vec<_> = e.gained.iter().map(|g| g.subject.name.clone()).collect();
        assert_eq!(subjects, ["g1"]);
    }

    #[test]
    fn each_aggregated_member_accounts_only_for_its_own_perms() {
        let admin = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"admin"},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"agg":"true"}}]}});
        let bind = crb("b", "admin", "eng");
        let a0 = role("a", json!({"agg":"true"}), json!([]));
        let b0 = role("b", json!({"agg":"true"}), json!([]));
        let a1 = role("a", json!({"agg":"true"}), secrets_get());
        let b1 = role(
            "b",
            json!({"agg":"true"}),
            json!([{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]),
        );
        let old = K8sModel::of(&[admin.clone(), bind.clone(), a0, b0]);
        let new = K8sModel::of(&[admin, bind, a1, b1]);
        let mut d = K8sDiffer::new(&old, &new);
        for (name, resource) in [("a", "secrets"), ("b", "pods")] {
            let e = d.effect(&RbacKey::cluster_role(name));
            let resources: Vec<String> = e
                .gained
                .iter()
                .map(|g| match g.perm {
                    Perm::Resource { resource, .. } => resource.to_owned(),
                    Perm::NonResource { url, .. } => url.to_owned(),
                })
                .collect();
            assert_eq!(resources, [resource], "change of {name}");
        }
    }

    #[test]
    fn a_change_seen_through_several_aggregators_lists_each_grant_once_in_order() {
        // member -> view -> edit: a subject bound to both view and edit in
        // one namespace is reached by three parts but gains each perm once;
        // one covered by another role gains nothing and is not counted.
        let view = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"view","labels":{"to-edit":"true"}},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"to-view":"true"}}]}});
        let edit = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"edit"},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"to-edit":"true"}}]}});
        let rb = |name: &str, role: &str, user: &str| {
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding",
                "metadata":{"name":name,"namespace":"team"},
                "roleRef":{"kind":"ClusterRole","name":role,"apiGroup":"rbac.authorization.k8s.io"},
                "subjects":[{"kind":"User","name":user,"apiGroup":"rbac.authorization.k8s.io"}]})
        };
        let wide = json!([{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]);
        let pods_and_secrets = json!([
            {"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]},
            {"apiGroups":[""],"resources":["pods"],"verbs":["get"]}
        ]);
        let common = [
            view,
            edit,
            role("wide", json!({}), wide),
            rb("b1", "view", "bob"),
            rb("b2", "edit", "bob"),
            rb("b3", "edit", "alice"),
            rb("b4", "view", "carol"),
            rb("b5", "wide", "carol"),
        ];
        let with_member = |rules: Value| {
            let mut objects = common.to_vec();
            objects.push(role("member", json!({"to-view":"true"}), rules));
            K8sModel::of(&objects)
        };
        let old = with_member(json!([]));
        let new = with_member(pods_and_secrets);
        let mut d = K8sDiffer::new(&old, &new);
        let e = d.effect(&RbacKey::cluster_role("member"));
        let got: Vec<(String, Option<&str>, String)> = e
            .gained
            .iter()
            .map(|g| {
                let perm = match g.perm {
                    Perm::Resource { verb, resource, .. } => format!("{verb} {resource}"),
                    Perm::NonResource { verb, url } => format!("{verb} {url}"),
                };
                (g.subject.name.clone(), g.namespace, perm)
            })
            .collect();
        let mut want = Vec::new();
        for user in ["alice", "bob"] {
            for perm in ["get pods", "get secrets", "list secrets"] {
                want.push((user.to_owned(), Some("team"), perm.to_owned()));
            }
        }
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want);
        assert!(e.gained.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        assert!(e.lost.is_empty());
        assert_eq!(
            e.aggregated_into,
            ["edit".to_string(), "view".to_string()]
                .into_iter()
                .collect()
        );
        // Reversed, the same grants are lost.
        let mut d = K8sDiffer::new(&new, &old);
        let e = d.effect(&RbacKey::cluster_role("member"));
        assert!(e.gained.is_empty());
        assert_eq!(e.lost.len(), want.len());
    }
}
