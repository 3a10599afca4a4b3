//! The indexed state of one cluster's RBAC.
//!
//! Raw objects go in (insert, replace, remove, one at a time, as a watch
//! delivers them); reverse maps are kept up to date so that questions about a
//! change touch only what the change touches: role -> bindings,
//! subject -> scope -> bindings, label -> ClusterRoles, aggregated ClusterRoles.

use crate::model::k8s::{
    self, BindingDef, LabelSelector, RbacBody, RbacKey, RbacKind, RbacObject, RbacParseError,
    RoleDef, Subject,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An object as stored: its raw JSON text (kept for snapshots, text diffs
/// and reverts; compact, and cheaper than a value tree for 100,000 objects)
/// and its parsed form. Cheap to clone: a baseline and the current state
/// share every object that did not change.
#[derive(Clone, Debug)]
pub struct K8sObject(Arc<K8sObjectData>);

#[derive(Debug)]
pub struct K8sObjectData {
    /// Valid JSON: checked by the parse that produced `parsed`.
    raw: Box<str>,
    pub parsed: RbacObject,
}

impl std::ops::Deref for K8sObject {
    type Target = K8sObjectData;
    fn deref(&self) -> &K8sObjectData {
        &self.0
    }
}

impl PartialEq for K8sObject {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.raw == other.raw
    }
}

impl K8sObject {
    /// From a parsed document; stored as compact JSON with sorted keys.
    pub fn from_raw(raw: Value) -> Result<Self, RbacParseError> {
        let parsed = k8s::parse_object(&raw)?;
        let raw = serde_json::to_string(&raw)
            .map_err(|e| RbacParseError::Invalid(e.to_string()))?
            .into_boxed_str();
        Ok(Self(Arc::new(K8sObjectData { raw, parsed })))
    }

    /// From an object's JSON text, kept as it is (parsing it checks that it
    /// is one JSON object and nothing else).
    pub fn from_json(raw: &str) -> Result<Self, RbacParseError> {
        let parsed = k8s::parse_object_json(raw)?;
        Ok(Self(Arc::new(K8sObjectData {
            raw: raw.into(),
            parsed,
        })))
    }

    /// The object's JSON text.
    pub fn json(&self) -> &str {
        &self.raw
    }

    /// The object as a value tree (parsed on demand).
    pub fn value(&self) -> Value {
        // The text was valid JSON when stored, so this cannot fail.
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
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

impl Index {
    fn index(&mut self, object: &K8sObject) {
        let key = &object.parsed.key;
        match &object.parsed.body {
            RbacBody::Binding(b) => {
                for s in &b.subjects {
                    // Copy-on-write: a clone of the model shares every
                    // subject's entry until it changes.
                    let entry = match self.bindings_by_subject.get_mut(s) {
                        Some(entry) => Arc::make_mut(entry),
                        None => {
                            Arc::make_mut(self.bindings_by_subject.entry(s.clone()).or_default())
                        }
                    };
                    let bindings = match &key.namespace {
                        None => &mut entry.cluster,
                        Some(ns) => match entry.namespaced.get_mut(ns.as_str()) {
                            Some(bindings) => bindings,
                            None => entry.namespaced.entry(ns.clone()).or_default(),
                        },
                    };
                    bindings.push(object);
                }
                let bindings = match self.bindings_by_role.get_mut(&b.role) {
                    Some(bindings) => bindings,
                    None => self.bindings_by_role.entry(b.role.clone()).or_default(),
                };
                Arc::make_mut(bindings).replace(ByKey(object.clone()));
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

    fn unindex(&mut self, object: &K8sObject) {
        let key = &object.parsed.key;
        match &object.parsed.body {
            RbacBody::Binding(b) => {
                if let Some(set) = self.bindings_by_role.get_mut(&b.role) {
                    let set = Arc::make_mut(set);
                    set.remove(key);
                    if set.is_empty() {
                        self.bindings_by_role.remove(&b.role);
                    }
                }
                for s in &b.subjects {
                    if let Some(entry) = self.bindings_by_subject.get_mut(s) {
                        let entry = Arc::make_mut(entry);
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
}

/// An object in a set keyed (hashed, ordered) by its own key, so the set
/// needs no copy of the key and is found by a borrowed one.
#[derive(Clone, Debug)]
struct ByKey(K8sObject);

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.parsed.key.cmp(&other.0.parsed.key)
    }
}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.parsed.key == other.0.parsed.key
    }
}

impl Eq for ByKey {}

impl std::hash::Hash for ByKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.parsed.key.hash(state);
    }
}

impl std::borrow::Borrow<RbacKey> for ByKey {
    fn borrow(&self) -> &RbacKey {
        &self.0.parsed.key
    }
}

/// The bindings that name one subject, cluster-wide and per namespace, each
/// with the key of the role it binds (so lookups need not fetch the binding).
#[derive(Clone, Debug, Default)]
pub struct SubjectBindings {
    pub cluster: ScopeBindings,
    pub namespaced: FxHashMap<String, ScopeBindings>,
}

impl SubjectBindings {
    fn is_empty(&self) -> bool {
        self.cluster.is_empty() && self.namespaced.is_empty()
    }
}

/// One subject's bindings in one scope. A subject has few bindings per
/// scope, so a list of the (shared) binding objects: cheaper to build and
/// to copy than a map, and removal scans only that subject's bindings.
#[derive(Clone, Debug, Default)]
pub struct ScopeBindings(Vec<K8sObject>);

impl ScopeBindings {
    /// The keys of the roles they bind.
    pub fn values(&self) -> impl Iterator<Item = &RbacKey> {
        self.0
            .iter()
            .filter_map(|binding| binding.binding().map(|b| &b.role))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a binding. The index adds each binding once (a replaced object
    /// is unindexed first), except for a subject it names twice, which
    /// comes right after itself.
    fn push(&mut self, binding: &K8sObject) {
        if self
            .0
            .last()
            .is_none_or(|last| last.parsed.key != binding.parsed.key)
        {
            self.0.push(binding.clone());
        }
    }

    fn remove(&mut self, binding: &RbacKey) {
        if let Some(i) = self.0.iter().position(|b| b.parsed.key == *binding) {
            self.0.swap_remove(i);
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct K8sModel {
    /// In key order. Each object is its own key, so cloning the model (a
    /// baseline, NEW read over OLD) copies no key.
    objects: BTreeSet<ByKey>,
    index: Index,
}

/// The reverse maps, kept apart from the objects so both can be updated in one
/// pass. Per-role and per-subject entries sit behind `Arc`s, so cloning the
/// model (a baseline, the NEW side of a diff) copies pointers, not entries.
#[derive(Clone, Debug, Default)]
struct Index {
    bindings_by_role: FxHashMap<RbacKey, Arc<FxHashSet<ByKey>>>,
    bindings_by_subject: FxHashMap<Subject, Arc<SubjectBindings>>,
    cluster_roles_by_label: FxHashMap<(String, String), BTreeSet<String>>,
    aggregators: BTreeMap<String, Vec<LabelSelector>>,
}

impl K8sModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &RbacKey) -> Option<&K8sObject> {
        self.objects.get(key).map(|ByKey(object)| object)
    }

    /// The model's own copy of `key` with its object.
    pub fn get_key_value(&self, key: &RbacKey) -> Option<(&RbacKey, &K8sObject)> {
        self.objects
            .get(key)
            .map(|ByKey(object)| (&object.parsed.key, object))
    }

    pub fn objects(&self) -> impl Iterator<Item = (&RbacKey, &K8sObject)> {
        self.objects
            .iter()
            .map(|ByKey(object)| (&object.parsed.key, object))
    }

    pub fn keys(&self) -> impl Iterator<Item = &RbacKey> {
        self.objects.iter().map(|ByKey(object)| &object.parsed.key)
    }

    /// A model of `objects`, built in one go: in key order (as snapshots store
    /// them) the object map is laid out without a search per object. Fails
    /// with the position and key of the first object whose key an earlier
    /// one already has.
    pub fn from_objects(mut objects: Vec<K8sObject>) -> Result<Self, (usize, RbacKey)> {
        let in_order = objects
            .windows(2)
            .all(|w| w[0].parsed.key < w[1].parsed.key);
        if !in_order {
            // Stable: of two objects with one key, the later one is reported.
            let mut order: Vec<usize> = (0..objects.len()).collect();
            order.sort_by(|a, b| objects[*a].parsed.key.cmp(&objects[*b].parsed.key));
            let duplicate = order
                .windows(2)
                .filter(|w| objects[w[0]].parsed.key == objects[w[1]].parsed.key)
                .map(|w| w[1])
                .min();
            if let Some(j) = duplicate {
                return Err((j, objects[j].parsed.key.clone()));
            }
            objects.sort_by(|a, b| a.parsed.key.cmp(&b.parsed.key));
        }
        let mut index = Index::default();
        for object in &objects {
            index.index(object);
        }
        let objects = objects.into_iter().map(ByKey).collect();
        Ok(Self { objects, index })
    }

    /// Inserts or replaces an object, returning the previous version.
    pub fn insert(&mut self, object: K8sObject) -> Option<K8sObject> {
        let previous = self
            .objects
            .replace(ByKey(object.clone()))
            .map(|ByKey(o)| o);
        if let Some(previous) = &previous {
            self.index.unindex(previous);
        }
        self.index.index(&object);
        previous
    }

    pub fn remove(&mut self, key: &RbacKey) -> Option<K8sObject> {
        let ByKey(object) = self.objects.take(key)?;
        self.index.unindex(&object);
        Some(object)
    }

    /// Bindings that reference `role` (which need not exist), with their objects.
    pub fn bindings_of_role(&self, role: &RbacKey) -> impl Iterator<Item = (&RbacKey, &K8sObject)> {
        self.index
            .bindings_by_role
            .get(role)
            .into_iter()
            .flat_map(|bindings| bindings.iter())
            .map(|ByKey(object)| (&object.parsed.key, object))
    }

    /// The model's own copy of `subject` and the bindings naming it.
    pub fn subject_bindings(&self, subject: &Subject) -> Option<(&Subject, &SubjectBindings)> {
        self.index
            .bindings_by_subject
            .get_key_value(subject)
            .map(|(s, b)| (s, &**b))
    }

    /// Every subject named by any binding.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.index.bindings_by_subject.keys()
    }

    /// Aggregated ClusterRoles (name -> selectors).
    pub fn aggregators(&self) -> &BTreeMap<String, Vec<LabelSelector>> {
        &self.index.aggregators
    }

    /// ClusterRoles whose labels match `selector`.
    pub fn cluster_roles_matching(&self, selector: &LabelSelector) -> Vec<&str> {
        let candidates: Box<dyn Iterator<Item = &str>> = match selector.match_labels.iter().next() {
            Some((k, v)) => Box::new(
                self.index
                    .cluster_roles_by_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            ),
            None => Box::new(
                self.keys()
                    .filter(|k| k.kind == RbacKind::ClusterRole)
                    .map(|k| k.name.as_str()),
            ),
        };
        candidates
            .filter(|name| {
                self.get(&RbacKey::cluster_role(name))
                    .and_then(K8sObject::role)
                    .is_some_and(|r| selector.matches(&r.labels))
            })
            .collect()
    }

    /// Aggregated ClusterRoles that select `name` directly.
    pub fn direct_aggregators_of(&self, name: &str) -> Vec<&str> {
        let Some(role) = self
            .get(&RbacKey::cluster_role(name))
            .and_then(K8sObject::role)
        else {
            return Vec::new();
        };
        self.index
            .aggregators
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

#[cfg(test)]
impl K8sModel {
    /// A model of raw objects, for tests; panics on an object that does not parse.
    pub(crate) fn of(objects: &[Value]) -> Self {
        let mut model = Self::new();
        for o in objects {
            model.insert(K8sObject::from_raw(o.clone()).unwrap());
        }
        model
    }
}
