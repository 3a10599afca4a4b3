//! Effective Kubernetes perms computed from the index.
//!
//! A role's perms are its rules expanded, plus (for an aggregated ClusterRole)
//! the perms of every ClusterRole its selectors pick, transitively. A
//! [`PermCache`] memoises role perms and the perm sets that apply to a subject
//! in a scope for the length of one computation; perms borrow from the model.

use super::k8s_perm::{Perm, PermSet, Scope, covers, expand_rules};
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::k8s::{RbacKey, RbacKind, Subject};
use rustc_hash::{FxHashMap, FxHashSet};
use std::rc::Rc;

/// The effective perms of a role: its rules, plus for an aggregated
/// ClusterRole the rules of every ClusterRole its selectors pick, transitively.
pub fn role_perms<'m>(model: &'m K8sModel, role: &RbacKey) -> PermSet<'m> {
    let mut out = PermSet::default();
    let mut visited = FxHashSet::default();
    collect_role_perms(model, role, &mut out, &mut visited);
    out
}

fn collect_role_perms<'m>(
    model: &'m K8sModel,
    role: &RbacKey,
    out: &mut PermSet<'m>,
    visited: &mut FxHashSet<RbacKey>,
) {
    if !visited.insert(role.clone()) {
        return;
    }
    let Some(def) = model.get(role).and_then(K8sObject::role) else {
        return;
    };
    expand_rules(&def.rules, out);
    if let (RbacKind::ClusterRole, Some(selectors)) = (role.kind, &def.aggregation) {
        for selector in selectors {
            for member in model.cluster_roles_matching(selector) {
                collect_role_perms(model, &RbacKey::cluster_role(member), out, visited);
            }
        }
    }
}

/// The perm sets that apply to one subject in one scope.
pub type SubjectSets<'m> = Rc<Vec<Rc<PermSet<'m>>>>;

/// Per-computation caches over one model: role perm sets and, per subject and
/// scope, the perm sets that apply there. Keys borrow from the model, so a
/// lookup never allocates. Dropped after each diff.
pub struct PermCache<'m> {
    model: &'m K8sModel,
    roles: FxHashMap<RbacKey, Rc<PermSet<'m>>>,
    sorted: FxHashMap<RbacKey, Rc<[Perm<'m>]>>,
    /// (subject, namespace it has bindings in, or none for cluster-only) -> sets.
    subjects: FxHashMap<(&'m Subject, Option<&'m str>), SubjectSets<'m>>,
    empty: SubjectSets<'m>,
}

impl<'m> PermCache<'m> {
    pub fn new(model: &'m K8sModel) -> Self {
        Self {
            model,
            roles: FxHashMap::default(),
            sorted: FxHashMap::default(),
            subjects: FxHashMap::default(),
            empty: Rc::new(Vec::new()),
        }
    }

    pub fn model(&self) -> &'m K8sModel {
        self.model
    }

    pub fn role(&mut self, role: &RbacKey) -> Rc<PermSet<'m>> {
        if let Some(p) = self.roles.get(role) {
            return p.clone();
        }
        let perms = Rc::new(role_perms(self.model, role));
        self.roles.insert(role.clone(), perms.clone());
        perms
    }

    /// A role's perms in sorted order, so grants come out sorted.
    pub fn role_sorted(&mut self, role: &RbacKey) -> Rc<[Perm<'m>]> {
        if let Some(p) = self.sorted.get(role) {
            return p.clone();
        }
        let mut perms: Vec<Perm<'m>> = self.role(role).iter().copied().collect();
        perms.sort_unstable();
        let perms: Rc<[Perm<'m>]> = perms.into();
        self.sorted.insert(role.clone(), perms.clone());
        perms
    }

    /// The perm sets that apply to `subject` in `scope`.
    pub fn subject_sets(&mut self, subject: &Subject, scope: Scope<'_>) -> SubjectSets<'m> {
        let model = self.model;
        let Some((subject, bindings)) = model.subject_bindings(subject) else {
            return self.empty.clone();
        };
        // A namespace the subject has no bindings in shares the cluster-only entry.
        let namespaced = match scope {
            Scope::Cluster => None,
            Scope::Namespace(ns) => bindings.namespaced.get_key_value(ns),
        };
        let cache_key = (subject, namespaced.map(|(ns, _)| ns.as_str()));
        if let Some(s) = self.subjects.get(&cache_key) {
            return s.clone();
        }
        let roles = bindings
            .cluster
            .values()
            .chain(namespaced.into_iter().flat_map(|(_, keys)| keys.values()));
        let mut sets = Vec::new();
        for role in roles {
            sets.push(self.role(role));
        }
        let sets = Rc::new(sets);
        self.subjects.insert(cache_key, sets.clone());
        sets
    }

    /// Whether `subject` is allowed `perm` in `scope` by this model.
    pub fn subject_covers(&mut self, subject: &Subject, scope: Scope<'_>, perm: &Perm<'_>) -> bool {
        let sets = self.subject_sets(subject, scope);
        sets.iter().any(|set| covers(set, perm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn obj(v: Value) -> K8sObject {
        K8sObject::from_raw(v).unwrap()
    }

    fn model() -> K8sModel {
        let mut m = K8sModel::new();
        m.insert(obj(
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"admin"},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"agg-admin":"true"}}]}}),
        ));
        m.insert(obj(
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"edit","labels":{"agg-admin":"true"}},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"agg-edit":"true"}}]}}),
        ));
        m.insert(obj(
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"to-edit","labels":{"agg-edit":"true"}},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]}),
        ));
        m.insert(obj(
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding",
            "metadata":{"name":"b","namespace":"team"},
            "roleRef":{"kind":"ClusterRole","name":"admin","apiGroup":"rbac.authorization.k8s.io"},
            "subjects":[{"kind":"User","name":"alice"}]}),
        ));
        m
    }

    #[test]
    fn aggregation_is_transitive() {
        let m = model();
        let admin = role_perms(&m, &RbacKey::cluster_role("admin"));
        assert!(admin.contains(&Perm::Resource {
            group: "",
            resource: "secrets",
            verb: "get",
            name: None
        }));
        assert_eq!(
            m.aggregators_of("to-edit"),
            ["admin", "edit"].iter().map(|s| s.to_string()).collect()
        );
    }

    #[test]
    fn subject_scope_lookup() {
        let m = model();
        let mut cache = PermCache::new(&m);
        let alice = Subject::user("alice");
        let p = Perm::Resource {
            group: "",
            resource: "secrets",
            verb: "get",
            name: Some("x"),
        };
        assert!(cache.subject_covers(&alice, Scope::Namespace("team"), &p));
        assert!(!cache.subject_covers(&alice, Scope::Namespace("other"), &p));
        assert!(!cache.subject_covers(&alice, Scope::Cluster, &p));
    }

    #[test]
    fn remove_unindexes() {
        let mut m = model();
        let key = RbacKey::new(RbacKind::RoleBinding, Some("team"), "b");
        assert!(m.remove(&key).is_some());
        assert_eq!(m.subjects().count(), 0);
        assert_eq!(
            m.bindings_of_role(&RbacKey::cluster_role("admin")).count(),
            0
        );
        let key = RbacKey::cluster_role("edit");
        m.remove(&key);
        assert!(m.aggregators_of("to-edit").is_empty());
        assert!(role_perms(&m, &RbacKey::cluster_role("admin")).is_empty());
    }
}
