//! The object store. Objects live, pre-serialized and immutable behind `Arc`,
//! in one sorted map per resource, keyed by (namespace, name). Every write
//! takes the next value of one global resourceVersion counter, is appended to
//! a bounded history, and is fanned out to registered watchers while the
//! caller still holds the store's write lock, so list snapshots, history and
//! watch streams all agree on a single order of events.
//!
//! Paged lists are served from a consistent snapshot: the current map with
//! the history since the snapshot's resourceVersion rolled back on top of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::kinds::{Registry, ResKey};
use crate::selector::Filter;

/// (namespace or "", name)
pub type ObjKey = (String, String);

/// One stored object version; never mutated once built. Only the JSON and
/// the few fields every list, selector and watch needs are kept (a parsed
/// `serde_json::Value` costs ~10x the bytes); [`Obj::value`] parses on demand.
#[derive(Debug)]
pub struct Obj {
    /// the object serialized once, so lists and watches only copy bytes
    pub json: Bytes,
    pub rv: u64,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    api_version: String,
    labels: Vec<(String, String)>,
}

fn meta_string(value: &Value, field: &str) -> String {
    value
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Obj {
    /// Stamps `rv` into `metadata.resourceVersion` and serializes.
    pub fn build(value: Value, rv: u64) -> Arc<Obj> {
        Self::assemble(value, rv, true)
    }

    /// An object that was never stored (a dry-run create): no resourceVersion.
    pub fn unversioned(value: Value) -> Arc<Obj> {
        Self::assemble(value, 0, false)
    }

    fn assemble(mut value: Value, rv: u64, stamp: bool) -> Arc<Obj> {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            if stamp {
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
            } else {
                meta.remove("resourceVersion");
            }
        }
        // Serializing a Value cannot fail (all map keys are strings).
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let labels = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(Obj {
            json,
            rv,
            name: meta_string(&value, "name"),
            namespace: meta_string(&value, "namespace"),
            uid: meta_string(&value, "uid"),
            api_version: value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels,
        })
    }

    /// A marker carrying only a resourceVersion (watch channel signals).
    pub fn marker(rv: u64) -> Arc<Obj> {
        Arc::new(Obj {
            json: Bytes::new(),
            rv,
            name: String::new(),
            namespace: String::new(),
            uid: String::new(),
            api_version: String::new(),
            labels: Vec::new(),
        })
    }

    /// The object as JSON value (parsed from the stored bytes).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON for a client that asked for `api_version` (objects are
    /// stored at their kind's preferred version; other served versions
    /// differ only in apiVersion here).
    pub fn render(&self, api_version: &str) -> Bytes {
        if self.api_version == api_version {
            return self.json.clone();
        }
        let mut v = self.value();
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), json!(api_version));
        }
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// only in watch channels: the end of a streaming list's initial events
    InitialEnd,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::InitialEnd => "BOOKMARK",
        }
    }
}

/// One committed write.
#[derive(Debug)]
struct HistEvent {
    rv: u64,
    res: ResKey,
    key: ObjKey,
    typ: EventType,
    /// the new version (for deletes: the last version, stamped with the delete's rv)
    obj: Arc<Obj>,
    /// the version before this write
    old: Option<Arc<Obj>>,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub struct WatchMsg {
    pub typ: EventType,
    pub obj: Arc<Obj>,
}

struct Watcher {
    res: ResKey,
    filter: Filter,
    tx: UnboundedSender<WatchMsg>,
}

/// Where a new watch starts.
#[derive(Debug, Clone, Copy)]
pub enum WatchStart {
    /// synthetic ADDED events for the current state, then changes
    Initial,
    /// like Initial, then a marker for the initial-events-end bookmark
    StreamingList,
    /// changes strictly after this resourceVersion
    After(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: u64, oldest: u64 },
}

/// A page of a list.
pub struct Page {
    pub items: Vec<Arc<Obj>>,
    /// key of the last item when more items follow
    pub next: Option<ObjKey>,
}

pub struct Store {
    rv: u64,
    /// every event with rv <= compacted has been dropped from history
    compacted: u64,
    history: VecDeque<HistEvent>,
    history_cap: usize,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Obj>>>,
    watchers: Vec<Watcher>,
    pub kinds: Registry,
    rng: StdRng,
    /// ClusterRoles with an aggregationRule: name -> clusterRoleSelectors
    pub aggregators: BTreeMap<String, Vec<Value>>,
    /// set while aggregation writes, so they do not re-trigger it
    pub reconciling: bool,
    /// resourceVersion of the last RBAC write, so the RBAC authorizer's
    /// parsed view is rebuilt only when roles or bindings change
    rbac_rv: u64,
}

/// Decides what a filtered watcher sees of one write: objects moving into
/// the selection appear as ADDED, moving out as DELETED, like the real cacher.
fn route(filter: &Filter, typ: EventType, obj: &Obj, old: Option<&Arc<Obj>>) -> Option<EventType> {
    match typ {
        EventType::Added => filter.matches(obj).then_some(EventType::Added),
        EventType::Deleted => filter.matches(obj).then_some(EventType::Deleted),
        EventType::InitialEnd => None,
        EventType::Modified => {
            let now = filter.matches(obj);
            let before = old.is_some_and(|o| filter.matches(o));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

impl Store {
    pub fn new(history_cap: usize, seed: u64) -> Self {
        Store {
            rv: 0,
            compacted: 0,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            objects: HashMap::new(),
            watchers: Vec::new(),
            kinds: Registry::with_builtins(),
            rng: StdRng::seed_from_u64(seed),
            aggregators: BTreeMap::new(),
            reconciling: false,
            rbac_rv: 0,
        }
    }

    /// Changes whenever a Role, ClusterRole or binding is written.
    pub fn rbac_version(&self) -> u64 {
        self.rbac_rv
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, res: &ResKey, key: &ObjKey) -> Option<Arc<Obj>> {
        self.objects.get(res).and_then(|m| m.get(key)).cloned()
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get(
            &(String::new(), "namespaces".into()),
            &(String::new(), ns.to_string()),
        )
        .is_some()
    }

    pub fn total_objects(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// A random RFC 4122 version-4 UID.
    pub fn new_uid(&mut self) -> String {
        let mut b: [u8; 16] = self.rng.random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The 5-character suffix used for `generateName`.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    /// Stores `value` (whose metadata names it) as the next version and
    /// returns what was stored.
    pub fn put(&mut self, res: &ResKey, value: Value) -> Arc<Obj> {
        self.rv += 1;
        let obj = Obj::build(value, self.rv);
        let key = (obj.namespace.clone(), obj.name.clone());
        let old = self
            .objects
            .entry(res.clone())
            .or_default()
            .insert(key.clone(), obj.clone());
        let typ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(res, key, typ, obj.clone(), old);
        obj
    }

    /// Removes an object; the returned copy carries the delete's resourceVersion,
    /// as DELETED watch events do on the real server.
    pub fn remove(&mut self, res: &ResKey, key: &ObjKey) -> Option<Arc<Obj>> {
        let old = self.objects.get_mut(res)?.remove(key)?;
        self.rv += 1;
        let gone = Obj::build(old.value(), self.rv);
        self.record(
            res,
            key.clone(),
            EventType::Deleted,
            gone.clone(),
            Some(old),
        );
        Some(gone)
    }

    /// Keys of every namespaced object in `ns`, across all resources.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<(ResKey, ObjKey)> {
        let mut out = Vec::new();
        for (res, map) in &self.objects {
            let lo = (ns.to_string(), String::new());
            for (k, _) in map.range(lo..) {
                if k.0 != ns {
                    break;
                }
                out.push((res.clone(), k.clone()));
            }
        }
        out
    }

    /// Visits every current object of `res` in key order.
    pub fn each(&self, res: &ResKey, mut f: impl FnMut(&Arc<Obj>)) {
        if let Some(m) = self.objects.get(res) {
            m.values().for_each(&mut f);
        }
    }

    /// How many objects of `res` are stored.
    pub fn count_of(&self, res: &ResKey) -> usize {
        self.objects.get(res).map_or(0, BTreeMap::len)
    }

    pub fn keys_of(&self, res: &ResKey) -> Vec<ObjKey> {
        self.objects
            .get(res)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn record(
        &mut self,
        res: &ResKey,
        key: ObjKey,
        typ: EventType,
        obj: Arc<Obj>,
        old: Option<Arc<Obj>>,
    ) {
        if res.0 == "rbac.authorization.k8s.io" {
            self.rbac_rv = obj.rv;
        }
        self.watchers.retain(|w| {
            if w.res != *res {
                return !w.tx.is_closed();
            }
            match route(&w.filter, typ, &obj, old.as_ref()) {
                Some(t) => {
                    w.tx.send(WatchMsg {
                        typ: t,
                        obj: obj.clone(),
                    })
                    .is_ok()
                }
                None => !w.tx.is_closed(),
            }
        });
        self.history.push_back(HistEvent {
            rv: obj.rv,
            res: res.clone(),
            key,
            typ,
            obj,
            old,
        });
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Oldest resourceVersion a watch or snapshot can still start from.
    pub fn oldest_rv(&self) -> u64 {
        self.compacted
    }

    /// Index of the first history event with rv > `rv`.
    fn history_after(&self, rv: u64) -> usize {
        self.history.partition_point(|e| e.rv <= rv)
    }

    /// One page of the list of `res` as it was at resourceVersion `at`,
    /// starting after `after`. The caller checked `at >= oldest_rv()`.
    pub fn page(
        &self,
        res: &ResKey,
        filter: &Filter,
        at: u64,
        after: Option<&ObjKey>,
        limit: Option<usize>,
    ) -> Page {
        // Roll history back: the first event per key after `at` holds the
        // version that was current at `at`.
        let mut overlay: BTreeMap<&ObjKey, Option<&Arc<Obj>>> = BTreeMap::new();
        if at < self.rv {
            for e in self.history.range(self.history_after(at)..) {
                if e.res == *res {
                    overlay.entry(&e.key).or_insert(e.old.as_ref());
                }
            }
        }
        let start_ns = filter.namespace.as_deref();
        let lower: Bound<ObjKey> = match (after, start_ns) {
            (Some(a), Some(ns)) if a.0.as_str() < ns => Bound::Included((ns.into(), String::new())),
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(ns)) => Bound::Included((ns.into(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let empty = BTreeMap::new();
        let map = self.objects.get(res).unwrap_or(&empty);
        let mut cur = map.range((lower.clone(), Bound::Unbounded)).peekable();
        let lower_ref = match &lower {
            Bound::Included(k) => Bound::Included(k),
            Bound::Excluded(k) => Bound::Excluded(k),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut ov = overlay
            .range::<&ObjKey, _>((lower_ref, Bound::Unbounded))
            .peekable();
        let mut items = Vec::new();
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut next = None;
        loop {
            let take_cur = match (cur.peek(), ov.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ka, _)), Some((kb, _))) => **ka < ***kb,
            };
            let (key, obj): (&ObjKey, Option<&Arc<Obj>>) = if take_cur {
                match cur.next() {
                    Some((k, v)) => (k, Some(v)),
                    None => break,
                }
            } else {
                match ov.next() {
                    Some((k, v)) => {
                        // the overlay's version replaces the current one
                        if cur.peek().is_some_and(|(ka, _)| *ka == *k) {
                            cur.next();
                        }
                        (*k, *v)
                    }
                    None => break,
                }
            };
            if let Some(ns) = start_ns
                && key.0 != ns
            {
                break;
            }
            let Some(obj) = obj else { continue };
            if !filter.matches(obj) {
                continue;
            }
            if items.len() == limit {
                next = items
                    .last()
                    .map(|o: &Arc<Obj>| (o.namespace.clone(), o.name.clone()));
                break;
            }
            items.push(obj.clone());
        }
        Page { items, next }
    }

    /// Registers a watcher. Its first events (the initial state or the
    /// replayed history) are queued before it is registered, under the same
    /// lock as every write, so nothing is missed or reordered.
    pub fn watch(
        &mut self,
        res: &ResKey,
        filter: Filter,
        start: WatchStart,
        tx: UnboundedSender<WatchMsg>,
    ) -> Result<(), StoreError> {
        match start {
            WatchStart::Initial | WatchStart::StreamingList => {
                let page = self.page(res, &filter, self.rv, None, None);
                for obj in page.items {
                    let _ = tx.send(WatchMsg {
                        typ: EventType::Added,
                        obj,
                    });
                }
                if matches!(start, WatchStart::StreamingList) {
                    let _ = tx.send(WatchMsg {
                        typ: EventType::InitialEnd,
                        obj: Obj::marker(self.rv),
                    });
                }
            }
            WatchStart::After(rv) => {
                if rv < self.compacted {
                    return Err(StoreError::TooOld {
                        requested: rv,
                        oldest: self.compacted + 1,
                    });
                }
                for e in self.history.range(self.history_after(rv)..) {
                    if e.res != *res {
                        continue;
                    }
                    if let Some(t) = route(&filter, e.typ, &e.obj, e.old.as_ref()) {
                        let _ = tx.send(WatchMsg {
                            typ: t,
                            obj: e.obj.clone(),
                        });
                    }
                }
            }
        }
        self.watchers.push(Watcher {
            res: res.clone(),
            filter,
            tx,
        });
        Ok(())
    }
}
