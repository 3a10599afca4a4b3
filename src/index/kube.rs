//! The indexed state of one cluster's RBAC.
//!
//! Raw objects go in (insert, replace, remove, one at a time, as a watch
//! delivers them); reverse maps are kept up to date so that questions about a
//! change touch only what the change touches: role -> bindings,
//! subject -> scope -> bindings, label -> ClusterRoles, aggregated ClusterRoles.

use crate::grants::kube_perm::Scope;
use crate::model::k8s::{
    self, BindingDef, LabelSelector, RbacBody, RbacKey, RbacKind, RbacObject, RbacParseError,
    RoleDef, RoleRefKind, Subject,
};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// An object as stored: the raw document (kept for snapshots, text diffs and
/// reverts) and its parsed form.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeObject {
    pub raw: Value,
    pub parsed: RbacObject,
}

impl KubeObject {
    pub fn from_raw(raw: Value) -> Result<Self, RbacParseError> {
        let parsed = k8s::parse_object(&raw)?;
        Ok(Self { raw, parsed })
    }

    pub fn role(&self) -> Option<&RoleDef> {
        match &self.parsed.body {
            RbacBody::Role(r) => Some(r),
            _ => None,
        }
    }

    pub fn binding(&self) -> Option<&BindingDef> {
        match &self.parsed.body {
            RbacBody::Binding(b) => Some(b),
            _ => None,
        }
    }
}

/// The key of the role a binding refers to.
pub fn bound_role(binding_key: &RbacKey, binding: &BindingDef) -> RbacKey {
    match binding.role_ref.kind {
        RoleRefKind::ClusterRole => RbacKey::cluster_role(&binding.role_ref.name),
        RoleRefKind::Role => RbacKey {
            kind: RbacKind::Role,
            namespace: binding_key.namespace.clone(),
            name: binding.role_ref.name.clone(),
        },
    }
}

/// The bindings that name one subject: cluster-wide, and per namespace.
#[derive(Clone, Debug, Default)]
pub struct SubjectBindings {
    pub cluster: BTreeSet<RbacKey>,
    pub namespaced: BTreeMap<String, BTreeSet<RbacKey>>,
}

impl SubjectBindings {
    fn is_empty(&self) -> bool {
        self.cluster.is_empty() && self.namespaced.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct KubeModel {
    objects: BTreeMap<RbacKey, KubeObject>,
    bindings_by_role: FxHashMap<RbacKey, BTreeSet<RbacKey>>,
    bindings_by_subject: FxHashMap<Subject, SubjectBindings>,
    cluster_roles_by_label: FxHashMap<(String, String), BTreeSet<String>>,
    aggregators: BTreeMap<String, Vec<LabelSelector>>,
}

impl KubeModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &RbacKey) -> Option<&KubeObject> {
        self.objects.get(key)
    }

    /// The model's own copy of `key` with its object.
    pub fn get_key_value(&self, key: &RbacKey) -> Option<(&RbacKey, &KubeObject)> {
        self.objects.get_key_value(key)
    }

    pub fn objects(&self) -> impl Iterator<Item = (&RbacKey, &KubeObject)> {
        self.objects.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &RbacKey> {
        self.objects.keys()
    }

    /// Inserts or replaces an object, returning the previous version.
    pub fn insert(&mut self, object: KubeObject) -> Option<KubeObject> {
        let key = object.parsed.key.clone();
        let previous = self.remove(&key);
        self.index(&object);
        self.objects.insert(key, object);
        previous
    }

    pub fn remove(&mut self, key: &RbacKey) -> Option<KubeObject> {
        let object = self.objects.remove(key)?;
        self.unindex(&object);
        Some(object)
    }

    fn index(&mut self, object: &KubeObject) {
        let key = &object.parsed.key;
        match &object.parsed.body {
            RbacBody::Binding(b) => {
                self.bindings_by_role
                    .entry(bound_role(key, b))
                    .or_default()
                    .insert(key.clone());
                for s in &b.subjects {
                    let entry = self.bindings_by_subject.entry(s.clone()).or_default();
                    match &key.namespace {
                        Some(ns) => entry
                            .namespaced
                            .entry(ns.clone())
                            .or_default()
                            .insert(key.clone()),
                        None => entry.cluster.insert(key.clone()),
                    };
                }
            }
            RbacBody::Role(r) if key.kind == RbacKind::ClusterRole => {
                for (k, v) in &r.labels {
                    self.cluster_roles_by_label
                        .entry((k.clone(), v.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
                if let Some(selectors) = &r.aggregation {
                    self.aggregators.insert(key.name.clone(), selectors.clone());
                }
            }
            _ => {}
        }
    }

    fn unindex(&mut self, object: &KubeObject) {
        let key = &object.parsed.key;
        match &object.parsed.body {
            RbacBody::Binding(b) => {
                let role = bound_role(key, b);
                if let Some(set) = self.bindings_by_role.get_mut(&role) {
                    set.remove(key);
                    if set.is_empty() {
                        self.bindings_by_role.remove(&role);
                    }
                }
                for s in &b.subjects {
                    if let Some(entry) = self.bindings_by_subject.get_mut(s) {
                        match &key.namespace {
                            Some(ns) => {
                                if let Some(set) = entry.namespaced.get_mut(ns) {
                                    set.remove(key);
                                    if set.is_empty() {
                                        entry.namespaced.remove(ns);
                                    }
                                }
                            }
                            None => {
                                entry.cluster.remove(key);
                            }
                        }
                        if entry.is_empty() {
                            self.bindings_by_subject.remove(s);
                        }
                    }
                }
            }
            RbacBody::Role(r) if key.kind == RbacKind::ClusterRole => {
                for (k, v) in &r.labels {
                    let label = (k.clone(), v.clone());
                    if let Some(set) = self.cluster_roles_by_label.get_mut(&label) {
                        set.remove(&key.name);
                        if set.is_empty() {
                            self.cluster_roles_by_label.remove(&label);
                        }
                    }
                }
                self.aggregators.remove(&key.name);
            }
            _ => {}
        }
    }

    /// Bindings that reference `role` (which need not exist).
    pub fn bindings_of_role(&self, role: &RbacKey) -> impl Iterator<Item = &RbacKey> {
        self.bindings_by_role.get(role).into_iter().flatten()
    }

    /// The model's own copy of `subject` and the bindings naming it.
    pub fn subject_bindings(&self, subject: &Subject) -> Option<(&Subject, &SubjectBindings)> {
        self.bindings_by_subject.get_key_value(subject)
    }

    /// Bindings naming `subject`, with their scope (`None` = cluster).
    pub fn bindings_of_subject(
        &self,
        subject: &Subject,
    ) -> impl Iterator<Item = (Option<&str>, &RbacKey)> {
        self.bindings_by_subject
            .get(subject)
            .into_iter()
            .flat_map(|b| {
                b.cluster.iter().map(|k| (None, k)).chain(
                    b.namespaced
                        .iter()
                        .flat_map(|(ns, keys)| keys.iter().map(move |k| (Some(ns.as_str()), k))),
                )
            })
    }

    /// Bindings of `subject` that apply in `scope`: its own namespace's and the cluster's.
    pub fn bindings_of_subject_in(
        &self,
        subject: &Subject,
        scope: Scope<'_>,
    ) -> impl Iterator<Item = &RbacKey> {
        let entry = self.bindings_by_subject.get(subject);
        let cluster = entry.map(|b| &b.cluster);
        let namespaced = match scope {
            Scope::Cluster => None,
            Scope::Namespace(ns) => entry.and_then(|b| b.namespaced.get(ns)),
        };
        cluster.into_iter().chain(namespaced).flatten()
    }

    /// Every subject named by any binding.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.bindings_by_subject.keys()
    }

    /// Aggregated ClusterRoles (name -> selectors).
    pub fn aggregators(&self) -> &BTreeMap<String, Vec<LabelSelector>> {
        &self.aggregators
    }

    /// ClusterRoles whose labels match `selector`.
    pub fn cluster_roles_matching(&self, selector: &LabelSelector) -> Vec<&str> {
        let candidates: Box<dyn Iterator<Item = &str>> = match selector.match_labels.iter().next() {
            Some((k, v)) => Box::new(
                self.cluster_roles_by_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            ),
            None => Box::new(
                self.objects
                    .keys()
                    .filter(|k| k.kind == RbacKind::ClusterRole)
                    .map(|k| k.name.as_str()),
            ),
        };
        candidates
            .filter(|name| {
                self.objects
                    .get(&RbacKey::cluster_role(name))
                    .and_then(KubeObject::role)
                    .is_some_and(|r| selector.matches(&r.labels))
            })
            .collect()
    }

    /// Aggregated ClusterRoles that select `name` directly.
    pub fn direct_aggregators_of(&self, name: &str) -> Vec<&str> {
        let Some(role) = self
            .objects
            .get(&RbacKey::cluster_role(name))
            .and_then(KubeObject::role)
        else {
            return Vec::new();
        };
        self.aggregators
            .iter()
            .filter(|(agg, selectors)| {
                agg.as_str() != name && selectors.iter().any(|s| s.matches(&role.labels))
            })
            .map(|(agg, _)| agg.as_str())
            .collect()
    }

    /// Every ClusterRole whose perms depend on `name` through aggregation, transitively.
    pub fn aggregators_of(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = vec![name.to_owned()];
        while let Some(current) = queue.pop() {
            for agg in self.direct_aggregators_of(&current) {
                if seen.insert(agg.to_owned()) {
                    queue.push(agg.to_owned());
                }
            }
        }
        seen.remove(name);
        seen
    }
}
