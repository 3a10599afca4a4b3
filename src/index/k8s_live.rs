//! The live index of one cluster: per-kind watch events go in
//! ([`KindEvent`], mirroring kube-runtime's watcher events), object-level
//! changes come out ([`ObjectChange`]: previous and current raw object), and
//! a [`K8sModel`] with its reverse maps is kept current in between.
//!
//! Pure and synchronous: no I/O, no clock, no kube or tokio types, so the
//! operator can drive it from any event source and tests can feed it by hand.
//!
//! Two rules make the change stream exact:
//! - A re-list (first sync, dropped stream, `410 Gone`) is buffered from
//!   `Init` to `InitDone`, then compared with what the index held for that
//!   kind: objects added, modified or gone since are emitted once each, with
//!   [`ChangeOrigin::Relist`]. A re-list that is interrupted and restarted
//!   (another `Init`) discards its buffer, so nothing is half-applied.
//! - An event that does not change an object emits nothing: the same
//!   resourceVersion (a replayed event, an unchanged object in a re-list), a
//!   version older than the one held, or a delete of an object not held.
//!
//! Work per `Apply`/`Delete` is one model insert or remove; a re-list costs
//! time proportional to that kind's objects.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::k8s::{RbacKey, RbacKind, resource_version, with_type};
use crate::snapshot::{MissingPart, SourceMeta, SourceSnapshot};

/// One watch event for one kind. Objects are raw JSON with `apiVersion`
/// and `kind` set.
#[derive(Clone, Debug, PartialEq)]
pub enum KindEvent {
    /// A (re-)list of the kind starts; `InitApply`s follow until `InitDone`.
    Init { kind: RbacKind },
    /// One object of the list in progress.
    InitApply { kind: RbacKind, object: Value },
    /// The list is complete: what the index held but the list lacked is gone.
    InitDone { kind: RbacKind },
    /// An object was added or modified.
    Apply { kind: RbacKind, object: Value },
    /// An object was deleted (its last state, with the delete's resourceVersion).
    Delete { kind: RbacKind, object: Value },
    /// The caller may not list or watch the kind (403); the watcher retries
    /// with backoff, and the kind counts as missing until a list succeeds.
    Forbidden { kind: RbacKind, reason: String },
    /// Any other failure (5xx, dropped stream, 410, bad response); the
    /// watcher recovers by itself, re-listing when it has to.
    Failed { kind: RbacKind, reason: String },
}

impl KindEvent {
    pub fn kind(&self) -> RbacKind {
        match self {
            KindEvent::Init { kind }
            | KindEvent::InitApply { kind, .. }
            | KindEvent::InitDone { kind }
            | KindEvent::Apply { kind, .. }
            | KindEvent::Delete { kind, .. }
            | KindEvent::Forbidden { kind, .. }
            | KindEvent::Failed { kind, .. } => *kind,
        }
    }
}

/// How a change was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOrigin {
    /// A watch event: exactly one write on the server.
    Watch,
    /// A re-list: the net effect of every write since the index last saw
    /// the object (intermediate versions are not visible).
    Relist,
}

/// One object that changed: added (`previous` is `None`), deleted
/// (`current` is `None`) or modified. Both sides are the full raw objects,
/// with `resourceVersion` and `managedFields`, so the change can be judged
/// and attributed later.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectChange {
    pub key: RbacKey,
    pub previous: Option<K8sObject>,
    pub current: Option<K8sObject>,
    pub origin: ChangeOrigin,
    /// The resourceVersion the change happened at: the current object's, or
    /// the delete event's. `None` for a deletion found by a re-list (it
    /// happened at some point before the list).
    pub resource_version: Option<String>,
}

impl ObjectChange {
    pub fn is_added(&self) -> bool {
        self.previous.is_none() && self.current.is_some()
    }

    pub fn is_deleted(&self) -> bool {
        self.current.is_none()
    }
}

/// An object the index could not read as RBAC (kept out of the model; a
/// previous readable version, if any, stays). Its resource counts as
/// missing in that namespace until the object is readable or gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedObject {
    pub kind: RbacKind,
    pub namespace: Option<String>,
    pub name: String,
    pub reason: String,
}

/// What the index knows about one kind.
#[derive(Clone, Debug, Default)]
struct KindState {
    /// Keys of this kind held in the model, with their resourceVersion
    /// (empty when the object had none).
    held: FxHashMap<RbacKey, Box<str>>,
    /// The re-list in progress, if any.
    relist: Option<Relist>,
    synced: bool,
    forbidden: Option<String>,
    /// The newest resourceVersion seen for this kind.
    resource_version: Option<String>,
    /// Unreadable objects by (namespace, name).
    rejected: BTreeMap<(Option<String>, String), String>,
    relists: u64,
    failures: u64,
    last_failure: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Relist {
    objects: BTreeMap<RbacKey, (K8sObject, Option<String>)>,
    rejected: BTreeMap<(Option<String>, String), String>,
}

/// Per-kind counters, for metrics and readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindStatus {
    pub objects: usize,
    pub synced: bool,
    pub relisting: bool,
    pub forbidden: Option<String>,
    pub resource_version: Option<String>,
    /// Completed lists (the first sync included).
    pub relists: u64,
    /// `Failed` and `Forbidden` events seen.
    pub failures: u64,
    pub last_failure: Option<String>,
}

/// The index itself. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct LiveIndex {
    model: K8sModel,
    kinds: [KindState; 5],
}

fn slot(kind: RbacKind) -> usize {
    match kind {
        RbacKind::ClusterRole => 0,
        RbacKind::ClusterRoleBinding => 1,
        RbacKind::Role => 2,
        RbacKind::RoleBinding => 3,
        RbacKind::ServiceAccount => 4,
    }
}

/// Orders two resourceVersions when both are integers (they are etcd
/// revisions on every real API server); `None` when they cannot be compared.
fn compare_rv(a: &str, b: &str) -> Option<Ordering> {
    Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?))
}

/// The newer of two resourceVersions (the second when they cannot be compared).
fn newer(held: Option<String>, seen: &str) -> Option<String> {
    match held {
        Some(h) if compare_rv(&h, seen) == Some(Ordering::Greater) => Some(h),
        _ => Some(seen.to_owned()),
    }
}

/// Reads a raw object of `kind`, or says why it cannot be used.
fn read(kind: RbacKind, value: Value) -> Result<(K8sObject, Option<String>), RejectedObject> {
    let rv = resource_version(&value).map(str::to_owned);
    let value = with_type(kind, value);
    let (namespace, name) = identity(&value);
    let reject = |reason: String| RejectedObject {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    let object = K8sObject::from_raw(value).map_err(|e| reject(e.to_string()))?;
    if object.parsed.key.kind != kind {
        return Err(reject(format!(
            "a {} arrived on the {} stream",
            object.parsed.key.kind,
            kind.resource()
        )));
    }
    Ok((object, rv))
}

/// Namespace and name from raw metadata (for objects that may not parse).
fn identity(value: &Value) -> (Option<String>, String) {
    let meta = value.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    (field("namespace"), field("name").unwrap_or_default())
}

impl LiveIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state, reverse maps included.
    pub fn model(&self) -> &K8sModel {
        &self.model
    }

    /// Applies one event and returns the object changes it makes (none for
    /// markers, failures, duplicates and the inside of a re-list).
    pub fn apply(&mut self, event: KindEvent) -> Vec<ObjectChange> {
        match event {
            KindEvent::Init { kind } => {
                self.kinds[slot(kind)].relist = Some(Relist::default());
                Vec::new()
            }
            KindEvent::InitApply { kind, object } => {
                let relist = self.kinds[slot(kind)]
                    .relist
                    .get_or_insert_with(Relist::default);
                match read(kind, object) {
                    Ok((object, rv)) => {
                        relist
                            .objects
                            .insert(object.parsed.key.clone(), (object, rv));
                    }
                    Err(r) => {
                        relist.rejected.insert((r.namespace, r.name), r.reason);
                    }
                }
                Vec::new()
            }
            KindEvent::InitDone { kind } => self.finish_relist(kind),
            KindEvent::Apply { kind, object } => self.apply_object(kind, object),
            KindEvent::Delete { kind, object } => self.delete_object(kind, object),
            KindEvent::Forbidden { kind, reason } => {
                let st = &mut self.kinds[slot(kind)];
                st.failures += 1;
                st.last_failure = Some(reason.clone());
                st.forbidden = Some(reason);
                Vec::new()
            }
            KindEvent::Failed { kind, reason } => {
                let st = &mut self.kinds[slot(kind)];
                st.failures += 1;
                st.last_failure = Some(reason);
                Vec::new()
            }
        }
    }

    /// Inserts `object` unless the index already holds that version (or a
    /// newer one); returns the change it makes.
    fn upsert(
        &mut self,
        object: K8sObject,
        rv: Option<String>,
        origin: ChangeOrigin,
    ) -> Option<ObjectChange> {
        let key = object.parsed.key.clone();
        let st = &mut self.kinds[slot(key.kind)];
        if let Some(held_rv) = st.held.get(&key) {
            let unchanged = match rv.as_deref() {
                Some(rv) if !held_rv.is_empty() => {
                    // Same version, or an older one arriving late.
                    compare_rv(rv, held_rv).map_or(rv == &**held_rv, |o| o != Ordering::Greater)
                }
                _ => self.model.get(&key) == Some(&object),
            };
            if unchanged {
                return None;
            }
        }
        st.held
            .insert(key.clone(), rv.clone().unwrap_or_default().into_boxed_str());
        if let Some(rv) = rv.as_deref() {
            st.resource_version = newer(st.resource_version.take(), rv);
        }
        let previous = self.model.insert(object.clone());
        Some(ObjectChange {
            key,
            previous,
            current: Some(object),
            origin,
            resource_version: rv,
        })
    }

    fn remove(
        &mut self,
        key: &RbacKey,
        rv: Option<String>,
        origin: ChangeOrigin,
    ) -> Option<ObjectChange> {
        let st = &mut self.kinds[slot(key.kind)];
        st.held.remove(key)?;
        if let Some(rv) = rv.as_deref() {
            st.resource_version = newer(st.resource_version.take(), rv);
        }
        let previous = self.model.remove(key)?;
        Some(ObjectChange {
            key: key.clone(),
            previous: Some(previous),
            current: None,
            origin,
            resource_version: rv,
        })
    }

    fn apply_object(&mut self, kind: RbacKind, value: Value) -> Vec<ObjectChange> {
        let st = &mut self.kinds[slot(kind)];
        let (object, rv) = match read(kind, value) {
            Ok(read) => read,
            Err(r) => {
                st.rejected.insert((r.namespace, r.name), r.reason);
                return Vec::new();
            }
        };
        let key = &object.parsed.key;
        st.rejected
            .remove(&(key.namespace.clone(), key.name.clone()));
        // A watch event during a re-list is newer than anything listed.
        if let Some(relist) = &mut st.relist {
            relist
                .objects
                .insert(key.clone(), (object.clone(), rv.clone()));
        }
        self.upsert(object, rv, ChangeOrigin::Watch)
            .into_iter()
            .collect()
    }

    fn delete_object(&mut self, kind: RbacKind, value: Value) -> Vec<ObjectChange> {
        let rv = resource_version(&value).map(str::to_owned);
        let (namespace, name) = identity(&value);
        let key = RbacKey {
            kind,
            namespace: if kind.is_namespaced() {
                namespace
            } else {
                None
            },
            name,
        };
        let st = &mut self.kinds[slot(kind)];
        st.rejected
            .remove(&(key.namespace.clone(), key.name.clone()));
        if let Some(relist) = &mut st.relist {
            relist.objects.remove(&key);
        }
        // A delete older than the version held is a late duplicate.
        if let (Some(rv), Some(held)) = (rv.as_deref(), st.held.get(&key))
            && compare_rv(rv, held) == Some(Ordering::Less)
        {
            return Vec::new();
        }
        self.remove(&key, rv, ChangeOrigin::Watch)
            .into_iter()
            .collect()
    }

    fn finish_relist(&mut self, kind: RbacKind) -> Vec<ObjectChange> {
        let st = &mut self.kinds[slot(kind)];
        // An `InitDone` with no list begun is out of order; it proves nothing
        // gone, so it changes nothing.
        let Some(relist) = st.relist.take() else {
            return Vec::new();
        };
        // Held objects the list lacks are gone, unless the list had them in
        // an unreadable form (then they are unknown, not deleted).
        let mut gone: Vec<RbacKey> = st
            .held
            .keys()
            .filter(|k| {
                !relist.objects.contains_key(*k)
                    && !relist
                        .rejected
                        .contains_key(&(k.namespace.clone(), k.name.clone()))
            })
            .cloned()
            .collect();
        gone.sort();
        st.rejected = relist.rejected;
        st.synced = true;
        st.forbidden = None;
        st.relists += 1;

        let mut changes = Vec::new();
        for (_, (object, rv)) in relist.objects {
            changes.extend(self.upsert(object, rv, ChangeOrigin::Relist));
        }
        for key in gone {
            changes.extend(self.remove(&key, None, ChangeOrigin::Relist));
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        changes
    }

    /// Whether `kind` has completed a list.
    pub fn is_synced_kind(&self, kind: RbacKind) -> bool {
        self.kinds[slot(kind)].synced
    }

    /// Whether every kind has completed a list (the model is whole).
    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(|k| k.synced)
    }

    /// Whether the model holds everything: every kind listed, none refused,
    /// no object unreadable. What `missing_parts` is empty for, without
    /// building the list (the operator asks on every event).
    pub fn is_whole(&self) -> bool {
        self.kinds
            .iter()
            .all(|k| k.synced && k.forbidden.is_none() && k.rejected.is_empty())
    }

    /// Whether every kind is listed and none refused: the model holds every
    /// readable object. Unparseable objects are missing parts of it
    /// ([`Self::rejected`]) that do not stop the rest from being judged.
    pub fn is_complete(&self) -> bool {
        self.kinds.iter().all(|k| k.synced && k.forbidden.is_none())
    }

    /// How many objects could not be read (cheap: asked on every event).
    pub fn rejected_count(&self) -> usize {
        self.kinds.iter().map(|k| k.rejected.len()).sum()
    }

    /// Whether the object at `key` is currently unreadable: its effect is
    /// unknown, so it is neither added, changed nor removed.
    pub fn is_rejected(&self, key: &RbacKey) -> bool {
        let namespace = if key.kind.is_namespaced() {
            key.namespace.clone()
        } else {
            None
        };
        self.kinds[slot(key.kind)]
            .rejected
            .contains_key(&(namespace, key.name.clone()))
    }

    /// Whether every kind has either synced or been refused: nothing more
    /// will arrive without a change on the server (permissions granted).
    pub fn is_settled(&self) -> bool {
        // A refused kind keeps retrying (each attempt opens a re-list), so
        // it counts as settled whatever its re-list state.
        self.kinds
            .iter()
            .all(|k| k.forbidden.is_some() || (k.synced && k.relist.is_none()))
    }

    /// Kinds currently refused, with the reason.
    pub fn forbidden(&self) -> impl Iterator<Item = (RbacKind, &str)> {
        RbacKind::ALL
            .into_iter()
            .filter_map(|k| Some((k, self.kinds[slot(k)].forbidden.as_deref()?)))
    }

    /// Objects that could not be read.
    pub fn rejected(&self) -> Vec<RejectedObject> {
        RbacKind::ALL
            .into_iter()
            .flat_map(|kind| {
                self.kinds[slot(kind)]
                    .rejected
                    .iter()
                    .map(move |((ns, name), reason)| RejectedObject {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                        reason: reason.clone(),
                    })
            })
            .collect()
    }

    /// The newest resourceVersion seen per resource (`clusterroles` ->
    /// `"1234"`): the highest in the last list, then each watch event's.
    /// kube-runtime does not pass on a list's own resourceVersion or
    /// bookmarks, so this is a lower bound of how current the kind is.
    pub fn resource_versions(&self) -> BTreeMap<String, String> {
        RbacKind::ALL
            .into_iter()
            .filter_map(|k| {
                let rv = self.kinds[slot(k)].resource_version.clone()?;
                Some((k.resource().to_owned(), rv))
            })
            .collect()
    }

    pub fn status(&self, kind: RbacKind) -> KindStatus {
        let st = &self.kinds[slot(kind)];
        KindStatus {
            objects: st.held.len(),
            synced: st.synced,
            relisting: st.relist.is_some(),
            forbidden: st.forbidden.clone(),
            resource_version: st.resource_version.clone(),
            relists: st.relists,
            failures: st.failures,
            last_failure: st.last_failure.clone(),
        }
    }

    /// What the model cannot vouch for: forbidden kinds, kinds not listed
    /// yet, and resources (per namespace) holding unreadable objects.
    pub fn missing_parts(&self) -> Vec<MissingPart> {
        let mut out = Vec::new();
        for kind in RbacKind::ALL {
            let st = &self.kinds[slot(kind)];
            let resource = kind.resource().to_owned();
            if let Some(reason) = &st.forbidden {
                out.push(MissingPart {
                    resource,
                    namespace: None,
                    reason: reason.clone(),
                });
                continue;
            }
            if !st.synced {
                out.push(MissingPart {
                    resource,
                    namespace: None,
                    reason: "not listed yet".into(),
                });
                continue;
            }
            let mut by_namespace: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
            for ((ns, name), reason) in &st.rejected {
                by_namespace
                    .entry(if kind.is_namespaced() {
                        ns.as_deref()
                    } else {
                        None
                    })
                    .or_default()
                    .push(format!("{name}: {reason}"));
            }
            for (ns, problems) in by_namespace {
                out.push(MissingPart {
                    resource: resource.clone(),
                    namespace: ns.map(str::to_owned),
                    reason: format!("unreadable objects ({})", problems.join("; ")),
                });
            }
        }
        out
    }

    /// The current state as a snapshot source (a copy of the model), with
    /// the index's resourceVersions and missing parts.
    pub fn to_source_snapshot(&self, name: &str, mut meta: SourceMeta) -> SourceSnapshot {
        meta.resource_versions = self.resource_versions();
        meta.missing = self.missing_parts();
        let mut source = SourceSnapshot::kubernetes(name, self.model.clone());
        source.meta = meta;
        source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(ns: &str, name: &str, rv: u64, verbs: &[&str]) -> Value {
        json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string(),
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": verbs}],
        })
    }

    fn crb(name: &str, rv: u64, group: &str) -> Value {
        json!({
            "metadata": {"name": name, "resourceVersion": rv.to_string()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
        })
    }

    fn relist(idx: &mut LiveIndex, kind: RbacKind, objects: Vec<Value>) -> Vec<ObjectChange> {
        let mut out = idx.apply(KindEvent::Init { kind });
        for object in objects {
            out.extend(idx.apply(KindEvent::InitApply { kind, object }));
        }
        assert!(out.is_empty(), "nothing is emitted before InitDone");
        idx.apply(KindEvent::InitDone { kind })
    }

    fn summary(changes: &[ObjectChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let what = match (&c.previous, &c.current) {
                    (None, Some(_)) => "added",
                    (Some(_), None) => "deleted",
                    _ => "modified",
                };
                format!(
                    "{what} {} {:?} {}",
                    c.key,
                    c.origin,
                    c.resource_version.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    fn sync_all(idx: &mut LiveIndex) {
        for kind in RbacKind::ALL {
            relist(idx, kind, vec![]);
        }
    }

    #[test]
    fn first_list_emits_every_object_once() {
        let mut idx = LiveIndex::new();
        assert!(!idx.is_synced());
        let changes = relist(
            &mut idx,
            RbacKind::Role,
            vec![role("a", "r1", 5, &["get"]), role("b", "r2", 6, &["list"])],
        );
        assert_eq!(
            summary(&changes),
            ["added Role/a/r1 Relist 5", "added Role/b/r2 Relist 6"]
        );
        assert!(idx.is_synced_kind(RbacKind::Role));
        assert!(!idx.is_synced());
        let current = changes[0].current.as_ref().unwrap().value();
        assert_eq!(current["kind"], "Role");
        assert_eq!(
            current["metadata"]["managedFields"][0]["manager"],
            "kubectl"
        );
        assert_eq!(idx.resource_versions()["roles"], "6");
        assert_eq!(idx.model().len(), 2);
    }

    #[test]
    fn relist_emits_exactly_the_differences() {
        let mut idx = LiveIndex::new();
        sync_all(&mut idx);
        let kind = RbacKind::Role;
        relist(
            &mut idx,
            kind,
            vec![
                role("a", "same", 5, &["get"]),
                role("a", "changed", 6, &["get"]),
                role("a", "gone", 7, &["get"]),
            ],
        );
        let changes = relist(
            &mut idx,
            kind,
            vec![
                role("a", "same", 5, &["get"]),
                role("a", "changed", 9, &["get", "list"]),
                role("a", "new", 10, &["*"]),
            ],
        );
        assert_eq!(
            summary(&changes),
            [
                "modified Role/a/changed Relist 9",
                "deleted Role/a/gone Relist -",
                "added Role/a/new Relist 10",
            ]
        );
        let modified = &changes[0];
        assert_eq!(
            modified.previous.as_ref().unwrap().value()["metadata"]["resourceVersion"],
            "6"
        );
        // the same list again changes nothing
        let again = relist(
            &mut idx,
            kind,
            vec![
                role("a", "same", 5, &["get"]),
                role("a", "changed", 9, &["get", "list"]),
                role("a", "new", 10, &["*"]),
            ],
        );
        assert!(again.is_empty(), "{:?}", summary(&again));
        assert_eq!(idx.status(kind).relists, 4);
    }

    #[test]
    fn duplicates_and_late_events_are_suppressed() {
        let mut idx = LiveIndex::new();
        sync_all(&mut idx);
        let kind = RbacKind::ClusterRoleBinding;
        let apply = |object| KindEvent::Apply { kind, object };
        assert_eq!(
            summary(&idx.apply(apply(crb("b", 3, "eng")))),
            ["added ClusterRoleBinding/b Watch 3"]
        );
        assert!(idx.apply(apply(crb("b", 3, "eng"))).is_empty(), "same rv");
        assert_eq!(idx.apply(apply(crb("b", 4, "all"))).len(), 1);
        assert!(idx.apply(apply(crb("b", 3, "eng"))).is_empty(), "older rv");
        // delete older than held: ignored; delete at a newer rv: emitted once
        let stale = KindEvent::Delete {
            kind,
            object: crb("b", 2, "eng"),
        };
        assert!(idx.apply(stale).is_empty());
        let delete = KindEvent::Delete {
            kind,
            object: crb("b", 5, "all"),
        };
        let changes = idx.apply(delete.clone());
        assert_eq!(summary(&changes), ["deleted ClusterRoleBinding/b Watch 5"]);
        assert_eq!(
            changes[0].previous.as_ref().unwrap().value()["subjects"][0]["name"],
            "all"
        );
        assert!(idx.apply(delete).is_empty(), "already gone");
        assert!(idx.model().is_empty());
        assert_eq!(idx.resource_versions()["clusterrolebindings"], "5");
    }

    #[test]
    fn deletes_during_a_gap_are_found_by_the_relist() {
        let mut idx = LiveIndex::new();
        sync_all(&mut idx);
        let kind = RbacKind::ClusterRoleBinding;
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            idx.apply(KindEvent::Apply {
                kind,
                object: crb(name, i as u64 + 1, "eng"),
            });
        }
        // the stream drops; meanwhile b is deleted, c is deleted and re-created,
        // d is created and deleted; then 410 and a re-list
        idx.apply(KindEvent::Failed {
            kind,
            reason: "410 Gone".into(),
        });
        let changes = relist(&mut idx, kind, vec![crb("a", 1, "eng"), crb("c", 9, "eng")]);
        assert_eq!(
            summary(&changes),
            [
                "deleted ClusterRoleBinding/b Relist -",
                "modified ClusterRoleBinding/c Relist 9",
            ]
        );
        assert_eq!(idx.model().len(), 2);
        assert_eq!(idx.status(kind).failures, 1);
    }

    #[test]
    fn an_interrupted_relist_is_discarded() {
        let mut idx = LiveIndex::new();
        let kind = RbacKind::ClusterRoleBinding;
        relist(&mut idx, kind, vec![crb("a", 1, "eng"), crb("b", 2, "eng")]);
        idx.apply(KindEvent::Init { kind });
        idx.apply(KindEvent::InitApply {
            kind,
            object: crb("a", 1, "eng"),
        });
        idx.apply(KindEvent::Failed {
            kind,
            reason: "500".into(),
        });
        // the list starts over: b must not be read as deleted
        let changes = relist(&mut idx, kind, vec![crb("a", 1, "eng"), crb("b", 2, "eng")]);
        assert!(changes.is_empty(), "{:?}", summary(&changes));
        assert_eq!(idx.model().len(), 2);
    }

    #[test]
    fn forbidden_kinds_are_missing_until_listed() {
        let mut idx = LiveIndex::new();
        for kind in RbacKind::ALL {
            if kind != RbacKind::RoleBinding {
                relist(&mut idx, kind, vec![]);
            }
        }
        assert!(!idx.is_settled());
        idx.apply(KindEvent::Init {
            kind: RbacKind::RoleBinding,
        });
        let reason = "forbidden to list rolebindings.rbac.authorization.k8s.io at cluster scope (user \"viewer\")";
        idx.apply(KindEvent::Forbidden {
            kind: RbacKind::RoleBinding,
            reason: reason.into(),
        });
        assert!(!idx.is_synced());
        assert_eq!(
            idx.forbidden().collect::<Vec<_>>(),
            [(RbacKind::RoleBinding, reason)]
        );
        let missing = idx.missing_parts();
        assert!(!idx.is_whole());
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].resource, "rolebindings");
        assert_eq!(missing[0].reason, reason);
        let snap = idx.to_source_snapshot("prod", SourceMeta::default());
        assert!(!snap.is_complete());
        // permission granted: the next list succeeds and clears it
        let rb = json!({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "3"},
            "roleRef": {"kind": "ClusterRole", "name": "edit", "apiGroup": "rbac.authorization.k8s.io"},
            "subjects": [{"kind": "User", "name": "bob"}]});
        let changes = relist(&mut idx, RbacKind::RoleBinding, vec![rb]);
        assert_eq!(changes.len(), 1);
        assert!(idx.is_synced() && idx.is_settled());
        assert!(idx.missing_parts().is_empty() && idx.is_whole());
        assert!(idx.forbidden().next().is_none());
    }

    #[test]
    fn unreadable_objects_are_reported_not_deleted() {
        let mut idx = LiveIndex::new();
        sync_all(&mut idx);
        let kind = RbacKind::RoleBinding;
        let good = json!({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "3"},
            "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": []});
        assert_eq!(idx.apply(KindEvent::Apply { kind, object: good }).len(), 1);
        let bad = json!({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "4"},
            "roleRef": {"kind": "Nonsense", "name": "edit"}});
        assert!(
            idx.apply(KindEvent::Apply {
                kind,
                object: bad.clone()
            })
            .is_empty()
        );
        assert_eq!(idx.rejected().len(), 1);
        assert_eq!(idx.missing_parts()[0].namespace.as_deref(), Some("a"));
        assert!(!idx.is_whole());
        // a re-list holding the unreadable version does not delete the old one
        assert!(relist(&mut idx, kind, vec![bad]).is_empty());
        assert_eq!(idx.model().len(), 1);
        // once deleted, nothing is missing any more
        let del = json!({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "5"}});
        assert_eq!(idx.apply(KindEvent::Delete { kind, object: del }).len(), 1);
        assert!(idx.missing_parts().is_empty());
    }

    #[test]
    fn watch_events_during_a_relist_win_over_the_list() {
        let mut idx = LiveIndex::new();
        let kind = RbacKind::ClusterRoleBinding;
        idx.apply(KindEvent::Init { kind });
        idx.apply(KindEvent::InitApply {
            kind,
            object: crb("a", 1, "eng"),
        });
        let w = idx.apply(KindEvent::Apply {
            kind,
            object: crb("a", 2, "all"),
        });
        assert_eq!(summary(&w), ["added ClusterRoleBinding/a Watch 2"]);
        assert!(idx.apply(KindEvent::InitDone { kind }).is_empty());
        // A stray InitDone (no list begun) deletes nothing.
        assert!(idx.apply(KindEvent::InitDone { kind }).is_empty());
        assert!(idx.model().get(&RbacKey::new(kind, None, "a")).is_some());
        let held = idx.model().get(&RbacKey::new(kind, None, "a")).unwrap();
        assert_eq!(held.value()["subjects"][0]["name"], "all");
    }

    #[test]
    fn an_object_on_the_wrong_stream_is_rejected() {
        let mut idx = LiveIndex::new();
        let object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "x", "resourceVersion": "1"}, "rules": []});
        let changes = idx.apply(KindEvent::Apply {
            kind: RbacKind::ClusterRoleBinding,
            object,
        });
        assert!(changes.is_empty());
        assert!(
            idx.rejected()[0]
                .reason
                .contains("clusterrolebindings stream")
        );
    }
}
