//! Watch resilience: the live index, fed by `watch_cluster` (kube-runtime
//! watchers through the real `kube` client), must follow at least 1,000
//! random RBAC writes while the test server drops watch streams, forces
//! `410 Gone` and answers lists and watches with 5xx and garbage.
//!
//! What is checked, per object, against the log of writes (each write's
//! resulting object, as the server answered it):
//! - the index ends equal to a fresh list of the server;
//! - replaying the emitted changes in order reproduces every object's final
//!   state, each change's `previous` being exactly the state before it (so
//!   no change is reported twice or skipped silently);
//! - every emitted state is one the server really had (same
//!   resourceVersion, same content), in write order;
//! - no write is lost: every write is either emitted with its
//!   resourceVersion, or superseded by a later write to the same object
//!   that is emitted (or, for a create-then-delete, by nothing at all), and
//!   then a re-list coalesced it: the change that skips it came from a
//!   re-list (`ChangeOrigin::Relist`), or a re-list of that kind that
//!   started after the skipped write was acknowledged finished before the
//!   change (a create and delete inside a gap net to nothing, so that
//!   re-list rightly emitted nothing for the object). A watch never
//!   coalesces; only a re-list after a gap may.
//!
//! The checker was validated by breaking the index on purpose: dropping one
//! watch event in 97, re-lists that never delete, and unsuppressed
//! duplicates all fail it.
//!
//! Seeded: `PERMDRIFT_WATCH_SEED=N` replays the same writes and fault
//! configurations (the interleaving with the watchers still depends on
//! timing). `PERMDRIFT_WATCH_WRITES` changes the number of writes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use permdrift::index::k8s_live::{ChangeOrigin, KindEvent, LiveIndex, ObjectChange};
use permdrift::model::k8s::RbacKind;
use permdrift::model::k8s::with_type;
use permdrift::source::k8s::{
    SourceInfo, WatchBackoff, WatchOptions, snapshot_cluster, watch_cluster,
};
use serde_json::{Value, json};
use support::kube_server::{KubeTestServer, Options, TOKEN, http_request};

const DEFAULT_SEED: u64 = 20_261_121;
const DEFAULT_WRITES: usize = 1_040;
const NAMESPACES: usize = 3;
const NAMES_PER_KIND: usize = 12;
const NAMES_PER_NAMESPACE: usize = 6;

/// splitmix64, so the writes are the same for a seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn subset<'a>(&mut self, items: &[&'a str], min: usize) -> Vec<&'a str> {
        let mut out: Vec<&str> = items.iter().copied().filter(|_| self.chance(35)).collect();
        while out.len() < min {
            let pick = items[self.below(items.len())];
            if !out.contains(&pick) {
                out.push(pick);
            }
        }
        out
    }
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- objects

const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const RESOURCES: &[&str] = &[
    "pods",
    "pods/exec",
    "secrets",
    "configmaps",
    "services",
    "serviceaccounts",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: RbacKind,
    namespace: Option<String>,
    name: String,
}

impl Key {
    fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    fn collection(&self) -> String {
        let base = match self.kind {
            RbacKind::ServiceAccount => "/api/v1".to_owned(),
            _ => "/apis/rbac.authorization.k8s.io/v1".to_owned(),
        };
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.kind.resource()),
            None => format!("{base}/{}", self.kind.resource()),
        }
    }

    fn path(&self) -> String {
        format!("{}/{}", self.collection(), self.name)
    }

    /// The role a binding of this name refers to (roleRef is immutable, so
    /// it is fixed per name).
    fn role_ref(&self) -> Value {
        let index: usize = self
            .name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let (kind, name) = match (self.kind, index % 2) {
            (RbacKind::RoleBinding, 0) => ("Role", format!("role-{index}")),
            _ => ("ClusterRole", format!("cr-{index:02}")),
        };
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
    }
}

fn all_keys() -> Vec<Key> {
    let mut keys = Vec::new();
    for kind in RbacKind::ALL {
        if kind.is_namespaced() {
            for ns in 0..NAMESPACES {
                for i in 0..NAMES_PER_NAMESPACE {
                    let prefix = match kind {
                        RbacKind::Role => "role",
                        RbacKind::RoleBinding => "rb",
                        _ => "sa",
                    };
                    keys.push(Key {
                        kind,
                        namespace: Some(format!("ns-{ns}")),
                        name: format!("{prefix}-{i}"),
                    });
                }
            }
        } else {
            for i in 0..NAMES_PER_KIND {
                let prefix = if kind == RbacKind::ClusterRole {
                    "cr"
                } else {
                    "crb"
                };
                keys.push(Key {
                    kind,
                    namespace: None,
                    name: format!("{prefix}-{i:02}"),
                });
            }
        }
    }
    keys
}

fn rule(rng: &mut Rng) -> Value {
    json!({"apiGroups": [""], "resources": rng.subset(RESOURCES, 1), "verbs": rng.subset(VERBS, 1)})
}

fn rules(rng: &mut Rng) -> Vec<Value> {
    (0..1 + rng.below(3)).map(|_| rule(rng)).collect()
}

fn subject(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                    "name": (["alice", "bob", "carol", "dave"][rng.below(4)])}),
        1 => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                    "name": (["engineering", "ops", "system:authenticated"][rng.below(3)])}),
        _ => {
            json!({"kind": "ServiceAccount", "name": format!("sa-{}", rng.below(NAMES_PER_NAMESPACE)),
                    "namespace": format!("ns-{}", rng.below(NAMESPACES))})
        }
    }
}

fn subjects(rng: &mut Rng) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let s = subject(rng);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The content fields of a new version of `key`'s object.
fn content(key: &Key, rng: &mut Rng) -> Value {
    match key.kind {
        RbacKind::ClusterRole | RbacKind::Role => json!({"rules": rules(rng)}),
        RbacKind::ClusterRoleBinding | RbacKind::RoleBinding => {
            json!({"roleRef": key.role_ref(), "subjects": subjects(rng)})
        }
        RbacKind::ServiceAccount => json!({
            "automountServiceAccountToken": rng.chance(50),
            "metadata": {"labels": {"team": (["a", "b", "c"][rng.below(3)])}},
        }),
    }
}

/// A whole object for create / replace / server-side apply.
fn full_object(key: &Key, rng: &mut Rng) -> Value {
    let mut object = with_type(key.kind, json!({"metadata": {"name": key.name}}));
    if let Some(ns) = &key.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    let extra = content(key, rng);
    for (k, v) in extra.as_object().into_iter().flatten() {
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                object["metadata"][mk] = mv.clone();
            }
        } else {
            object[k] = v.clone();
        }
    }
    object
}

/// Grants of a role or binding content, to tell widening writes apart.
fn grants(object: Option<&Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(o) = object else { return out };
    for r in o["rules"].as_array().into_iter().flatten() {
        for res in r["resources"].as_array().into_iter().flatten() {
            for verb in r["verbs"].as_array().into_iter().flatten() {
                out.insert(format!("{res} {verb}"));
            }
        }
    }
    for s in o["subjects"].as_array().into_iter().flatten() {
        out.insert(format!("{}:{}", s["kind"], s["name"]));
    }
    out
}

// ---------------------------------------------------------------- writes

/// One write that changed the server: the object's state after it.
#[derive(Clone, Debug)]
struct Write {
    rv: u64,
    state: Option<Value>,
    widening: bool,
    op: &'static str,
    /// When the server acknowledged it.
    at: Instant,
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

struct Writer {
    port: u16,
    rng: Rng,
    /// Current state per key, as the server answered.
    state: BTreeMap<Key, Value>,
    /// The server's resourceVersion counter: every write bumps it by one,
    /// and this writer is the only one.
    last_rv: u64,
    log: BTreeMap<String, Vec<Write>>,
    rejected: usize,
    ops: BTreeMap<&'static str, usize>,
}

impl Writer {
    fn request(&self, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        let body = body.to_string();
        let r = http_request(
            self.port,
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", content_type)],
            Some(body.as_bytes()),
        );
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    /// One random write; returns whether it changed the server.
    fn step(&mut self, keys: &[Key]) -> bool {
        let key = keys[self.rng.below(keys.len())].clone();
        let current = self.state.get(&key).cloned();
        let (op, status, answer) = match &current {
            None => {
                let body = full_object(&key, &mut self.rng);
                let (s, a) = self.request("POST", &key.collection(), "application/json", &body);
                ("create", s, a)
            }
            Some(cur) => match self.rng.below(10) {
                0 | 1 => {
                    let (s, a) =
                        self.request("DELETE", &key.path(), "application/json", &json!({}));
                    ("delete", s, a)
                }
                2 | 3 => {
                    let body = full_object(&key, &mut self.rng);
                    let (s, a) = self.request("PUT", &key.path(), "application/json", &body);
                    ("update", s, a)
                }
                4 | 5 => {
                    let patch = content(&key, &mut self.rng);
                    let (s, a) =
                        self.request("PATCH", &key.path(), "application/merge-patch+json", &patch);
                    ("merge-patch", s, a)
                }
                6 => {
                    let patch = content(&key, &mut self.rng);
                    let (s, a) = self.request(
                        "PATCH",
                        &key.path(),
                        "application/strategic-merge-patch+json",
                        &patch,
                    );
                    ("strategic-merge-patch", s, a)
                }
                7 | 8 => {
                    let patch = self.json_patch(&key, cur);
                    let (s, a) =
                        self.request("PATCH", &key.path(), "application/json-patch+json", &patch);
                    ("json-patch", s, a)
                }
                _ => {
                    let body = full_object(&key, &mut self.rng);
                    let (s, a) = self.request(
                        "PATCH",
                        &format!("{}?fieldManager=resilience&force=true", key.path()),
                        "application/apply-patch+yaml",
                        &body,
                    );
                    ("apply", s, a)
                }
            },
        };
        if !(200..300).contains(&status) {
            self.rejected += 1;
            return false;
        }
        let at = Instant::now();
        let before = current.as_ref();
        let (rv, state) = if op == "delete" {
            self.state.remove(&key);
            (self.last_rv + 1, None)
        } else {
            let rv = rv_of(&answer);
            if before.is_some_and(|b| rv_of(b) == rv) {
                return false; // a write that changed nothing: no new version
            }
            self.state.insert(key.clone(), answer.clone());
            (rv, Some(with_type(key.kind, answer)))
        };
        assert_eq!(
            rv,
            self.last_rv + 1,
            "someone else wrote to the server, or a write went unrecorded ({op} {})",
            key.id()
        );
        self.last_rv = rv;
        let widening = match (&before, &state) {
            (None, Some(_)) => key.kind != RbacKind::ServiceAccount,
            (Some(b), Some(a)) => !grants(Some(a)).is_subset(&grants(Some(b))),
            _ => false,
        };
        *self.ops.entry(op).or_default() += 1;
        self.log.entry(key.id()).or_default().push(Write {
            rv,
            state,
            widening,
            op,
            at,
        });
        true
    }

    /// Adds a rule or subject (widening), or removes the first one (narrowing).
    fn json_patch(&mut self, key: &Key, current: &Value) -> Value {
        match key.kind {
            RbacKind::ServiceAccount => json!([
                {"op": "add", "path": "/metadata/labels", "value": {"team": (["a", "b", "c", "d"][self.rng.below(4)])}}
            ]),
            kind => {
                let field = if matches!(kind, RbacKind::ClusterRole | RbacKind::Role) {
                    "rules"
                } else {
                    "subjects"
                };
                let len = current[field].as_array().map_or(0, Vec::len);
                if len > 1 && self.rng.chance(50) {
                    json!([{"op": "remove", "path": format!("/{field}/0")}])
                } else {
                    let value = if field == "rules" {
                        rule(&mut self.rng)
                    } else {
                        subject(&mut self.rng)
                    };
                    if len == 0 {
                        json!([{"op": "add", "path": format!("/{field}"), "value": [value]}])
                    } else {
                        json!([{"op": "add", "path": format!("/{field}/-"), "value": value}])
                    }
                }
            }
        }
    }
}

/// The fault configuration of each phase (watch and list requests only: the
/// writer's own requests are never faulted).
fn phase_faults(phase: usize, seed: u64) -> (String, Value) {
    let seed = seed.wrapping_add(phase as u64);
    match phase {
        0 => (
            "dropped streams".into(),
            json!({"seed": seed, "rules": [{"verbs": ["watch"], "drop_watch_after": 3}]}),
        ),
        1 => (
            "forced 410s".into(),
            json!({"seed": seed, "rules": [
                {"verbs": ["watch"], "drop_watch_after": 8},
                {"verbs": ["watch", "list"], "expire_next": 4}
            ]}),
        ),
        2 => (
            "5xx and garbage".into(),
            json!({"seed": seed, "rules": [
                {"verbs": ["list", "watch"], "error_rate": 0.3, "error_codes": [500, 503]},
                {"verbs": ["list"], "garbage_rate": 0.15},
                {"verbs": ["watch"], "drop_watch_after": 6}
            ]}),
        ),
        _ => (
            "everything".into(),
            json!({"seed": seed, "rules": [
                {"verbs": ["list", "watch"], "error_rate": 0.2, "error_codes": [500, 503]},
                {"verbs": ["list"], "garbage_rate": 0.1},
                {"verbs": ["watch"], "drop_watch_after": 5},
                {"verbs": ["watch", "list"], "expire_next": 3},
                {"verbs": ["watch", "list"], "latency_ms": [0, 15]}
            ]}),
        ),
    }
}

fn control(port: u16, method: &str, path: &str, body: &Value) -> Value {
    let text = body.to_string();
    let r = http_request(port, method, path, &[], Some(text.as_bytes()));
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.json()
}

// ---------------------------------------------------------------- the index

#[derive(Default)]
struct Live {
    index: LiveIndex,
    changes: Vec<ObjectChange>,
    /// When each change was emitted (same order as `changes`).
    emitted_at: Vec<Instant>,
    /// The `Init` of the list in progress, per kind.
    list_started: BTreeMap<RbacKind, Instant>,
    /// Completed (re-)lists: kind, when its `Init` arrived, when it was done.
    /// kube-runtime sends the list request only after `Init` is consumed,
    /// so such a list holds every write acknowledged before its `Init`.
    listed: Vec<(RbacKind, Instant, Instant)>,
    failures: BTreeMap<String, usize>,
}

impl Live {
    /// Whether a completed list of `kind` started after `after` and was
    /// done by `by`: it saw every write acknowledged before `after`.
    fn relisted(&self, kind: RbacKind, after: Instant, by: Option<Instant>) -> bool {
        self.listed
            .iter()
            .any(|(k, init, done)| *k == kind && *init > after && by.is_none_or(|b| *done <= b))
    }
}

fn failure_class(reason: &str) -> &'static str {
    if reason.contains(" 410 ") {
        "410 gone"
    } else if reason.contains(" 500 ") || reason.contains(" 503 ") {
        "5xx"
    } else if reason.contains("deserializ")
        || reason.contains("decod")
        || reason.contains("expected")
    {
        "garbage"
    } else {
        "stream error"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_index_survives_faults_and_loses_no_write() {
    let seed = knob("PERMDRIFT_WATCH_SEED", DEFAULT_SEED);
    let writes_wanted = knob("PERMDRIFT_WATCH_WRITES", DEFAULT_WRITES as u64) as usize;
    eprintln!(
        "watch resilience: seed {seed} (set PERMDRIFT_WATCH_SEED={seed} to replay these writes and faults), {writes_wanted} writes"
    );
    let started = Instant::now();
    let srv = KubeTestServer::start_with(Options::default().args([
        "--history".to_owned(),
        "150".to_owned(),
        "--bookmark-interval".to_owned(),
        "1".to_owned(),
        "--seed".to_owned(),
        seed.to_string(),
    ]));
    let port = srv.port;
    for ns in 0..NAMESPACES {
        let r = http_request(
            port,
            "POST",
            "/api/v1/namespaces",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            Some(
                json!({"metadata": {"name": format!("ns-{ns}")}})
                    .to_string()
                    .as_bytes(),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    let first_rv = control(port, "GET", "/_testserver/stats", &json!({}))["resource_version"]
        .as_u64()
        .expect("resource_version");
    let client = srv.client().await;
    let live = Arc::new(Mutex::new(Live::default()));
    let options = WatchOptions {
        page_size: 7, // several pages per re-list, so continue tokens can expire
        timeout_secs: Some(3),
        backoff: WatchBackoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(300),
            jitter: true,
        },
        ..WatchOptions::default()
    };
    let shared = live.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watch_cluster(client, options));
        while let Some(event) = events.next().await {
            let mut live = shared.lock().unwrap();
            let now = Instant::now();
            match &event {
                KindEvent::Init { kind } => {
                    live.list_started.insert(*kind, now);
                }
                KindEvent::InitDone { kind } => {
                    if let Some(init) = live.list_started.remove(kind) {
                        live.listed.push((*kind, init, now));
                    }
                }
                KindEvent::Failed { reason, .. } | KindEvent::Forbidden { reason, .. } => {
                    *live
                        .failures
                        .entry(failure_class(reason).to_owned())
                        .or_default() += 1;
                }
                _ => {}
            }
            let changes = live.index.apply(event);
            live.emitted_at.extend(changes.iter().map(|_| now));
            live.changes.extend(changes);
        }
    });

    // The writes, from a blocking thread, in four phases of faults.
    let writer = tokio::task::spawn_blocking(move || {
        let keys = all_keys();
        let mut w = Writer {
            port,
            rng: Rng(seed),
            state: BTreeMap::new(),
            last_rv: first_rv,
            log: BTreeMap::new(),
            rejected: 0,
            ops: BTreeMap::new(),
        };
        let phases = 4;
        let mut injected = Vec::new();
        // The server's counts restart with each configuration: add them up.
        let collect = |totals: &mut BTreeMap<String, u64>| {
            let report = control(port, "GET", "/_testserver/faults", &json!({}));
            for (k, v) in report["injected"].as_object().into_iter().flatten() {
                *totals.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        };
        for phase in 0..phases {
            let (name, faults) = phase_faults(phase, seed);
            let mut totals = BTreeMap::new();
            control(port, "PUT", "/_testserver/faults", &faults);
            let target = writes_wanted * (phase + 1) / phases;
            let mut done_here = 0usize;
            while w.log.values().map(Vec::len).sum::<usize>() < target {
                if w.step(&keys) {
                    done_here += 1;
                    // Re-arm forced expiries, and let the watchers breathe now
                    // and then so both coalesced and one-by-one delivery happen.
                    if done_here.is_multiple_of(40) {
                        collect(&mut totals);
                        control(port, "PUT", "/_testserver/faults", &faults);
                        std::thread::sleep(Duration::from_millis(60));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(150));
            collect(&mut totals);
            injected.push((name, totals));
        }
        control(port, "DELETE", "/_testserver/faults", &json!({}));
        (w, injected)
    });
    let (writer, injected) = writer.await.expect("writer thread");
    let writes_done: usize = writer.log.values().map(Vec::len).sum();
    let writes_ended = Instant::now();
    let stats = control(port, "GET", "/_testserver/stats", &json!({}));
    assert_eq!(
        stats["resource_version"].as_u64(),
        Some(writer.last_rv),
        "every write on the server was recorded"
    );

    // Converge: the index must come to equal a fresh list of the server.
    let fresh_client = srv.client().await;
    let info = SourceInfo {
        name: "resilience".into(),
        context: None,
        server: srv.url.clone(),
    };
    let fresh = snapshot_cluster(fresh_client, &info, &|_| {})
        .await
        .expect("fresh list");
    let fresh: BTreeMap<String, String> = fresh
        .kube()
        .expect("kubernetes source")
        .objects()
        .map(|(k, o)| (k.to_string(), o.json().to_owned()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let converged = {
            let l = live.lock().unwrap();
            let held: BTreeMap<String, String> = l
                .index
                .model()
                .objects()
                .map(|(k, o)| (k.to_string(), o.json().to_owned()))
                .collect();
            l.index.is_synced() && held == fresh
        };
        if converged {
            break;
        }
        if Instant::now() > deadline {
            let l = live.lock().unwrap();
            let held: BTreeSet<String> = l.index.model().keys().map(|k| k.to_string()).collect();
            let want: BTreeSet<String> = fresh.keys().cloned().collect();
            panic!(
                "the index did not converge (seed {seed}): synced {}, only held {:?}, only on the server {:?}",
                l.index.is_synced(),
                held.difference(&want).collect::<Vec<_>>(),
                want.difference(&held).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged_after = writes_ended.elapsed();
    task.abort();
    let _ = task.await;
    let live = Arc::try_unwrap(live)
        .ok()
        .expect("watch task stopped")
        .into_inner()
        .unwrap();

    // ---- per-object checks against the write log
    let mut by_key: BTreeMap<String, Vec<(&ObjectChange, Instant)>> = BTreeMap::new();
    for (c, at) in live.changes.iter().zip(&live.emitted_at) {
        by_key.entry(c.key.to_string()).or_default().push((c, *at));
    }
    let mut direct = 0usize;
    let mut coalesced = 0usize;
    let mut widening_direct = 0usize;
    let mut widening_coalesced = 0usize;
    let empty = Vec::new();
    let keys: BTreeSet<&String> = writer.log.keys().chain(by_key.keys()).collect();
    for id in keys {
        let writes = writer.log.get(id).unwrap_or(&empty);
        let timed = by_key.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let chain: Vec<&ObjectChange> = timed.iter().map(|(c, _)| *c).collect();
        let kind = kind_of(id);
        let ctx = || {
            format!(
                "{id} (seed {seed}): writes {:?}\nchanges {:?}",
                summary(writes),
                changes_summary(&chain)
            )
        };

        // positions in the write log (1-based; 0 = before the first write)
        let mut positions: Vec<Option<usize>> = chain
            .iter()
            .map(|c| match (&c.current, &c.resource_version) {
                (Some(obj), _) => {
                    let value = obj.value();
                    let rv = rv_of(&value);
                    let at = writes.iter().position(|w| w.rv == rv).unwrap_or_else(|| {
                        panic!("emitted a version no write made (rv {rv}): {}", ctx())
                    });
                    assert_eq!(
                        writes[at].state.as_ref(),
                        Some(&value),
                        "emitted content differs from the server's: {}",
                        ctx()
                    );
                    Some(at + 1)
                }
                (None, Some(rv)) => {
                    let rv: u64 = rv.parse().expect("numeric rv");
                    let at = writes
                        .iter()
                        .position(|w| w.rv == rv && w.state.is_none())
                        .unwrap_or_else(|| {
                            panic!("emitted a delete no write made (rv {rv}): {}", ctx())
                        });
                    Some(at + 1)
                }
                // a deletion found by a re-list: placed below
                (None, None) => None,
            })
            .collect();
        for j in 0..positions.len() {
            if positions[j].is_some() {
                continue;
            }
            let after = if j == 0 {
                0
            } else {
                positions[j - 1].unwrap_or(0)
            };
            let before = positions[j + 1..]
                .iter()
                .find_map(|p| *p)
                .unwrap_or(writes.len() + 1);
            let at = (after + 1..before)
                .rev()
                .find(|&p| writes[p - 1].state.is_none())
                .unwrap_or_else(|| panic!("a re-list deletion with no delete to match: {}", ctx()));
            positions[j] = Some(at);
        }

        let mut prev_pos = 0usize;
        let mut prev_state: Option<Value> = None;
        for ((c, emitted), pos) in timed.iter().zip(&positions) {
            let pos = pos.unwrap_or(0);
            assert_eq!(
                c.previous.as_ref().map(|o| o.value()),
                prev_state,
                "a change's previous is not the state before it: {}",
                ctx()
            );
            assert!(
                pos > prev_pos,
                "changes out of write order or repeated: {}",
                ctx()
            );
            if pos > prev_pos + 1 {
                // Skipped writes are fine only if a re-list coalesced them:
                // this change came from one, or one that saw them (and,
                // their net effect being nil, emitted nothing here) finished
                // before this watch event.
                let last_skipped = writes[pos - 2].at;
                assert!(
                    c.origin == ChangeOrigin::Relist
                        || live.relisted(kind, last_skipped, Some(*emitted)),
                    "writes {}..{} were skipped without a re-list (lost): {}",
                    prev_pos + 1,
                    pos - 1,
                    ctx()
                );
                for w in &writes[prev_pos..pos - 1] {
                    coalesced += 1;
                    widening_coalesced += usize::from(w.widening);
                }
            }
            direct += 1;
            widening_direct += usize::from(writes[pos - 1].widening);
            prev_pos = pos;
            prev_state = c.current.as_ref().map(|o| o.value());
        }
        // the last state is the server's; writes after the last change can
        // only be a create and delete that a re-list saw as nothing
        if prev_pos < writes.len() {
            assert!(
                prev_state.is_none() && writes.last().is_some_and(|w| w.state.is_none()),
                "the last writes were never emitted: {}",
                ctx()
            );
            let last = writes.last().map(|w| w.at).unwrap_or(started);
            assert!(
                live.relisted(kind, last, None),
                "writes {}.. were never emitted and no re-list covered them: {}",
                prev_pos + 1,
                ctx()
            );
            coalesced += writes.len() - prev_pos;
            widening_coalesced += writes[prev_pos..].iter().filter(|w| w.widening).count();
        }
    }
    assert_eq!(
        direct + coalesced,
        writes_done,
        "every write is accounted for"
    );

    let mut relist_changes: BTreeMap<&str, usize> = BTreeMap::new();
    for c in live
        .changes
        .iter()
        .filter(|c| c.origin == ChangeOrigin::Relist)
    {
        let what = match (&c.previous, &c.current) {
            (None, _) => "added",
            (_, None) => "deleted",
            _ => "modified",
        };
        *relist_changes.entry(what).or_default() += 1;
    }
    let relists = live.listed.len();
    let failures: usize = live.failures.values().sum();
    eprintln!(
        "watch resilience: seed {seed}: {writes_done} writes ({} rejected by the server) {:?}; \
         {} changes emitted ({relist_changes:?} from re-lists): {direct} one per write, \
         {coalesced} writes coalesced by re-lists; \
         widening writes: {widening_direct} emitted, {widening_coalesced} superseded by a later \
         emitted write; {relists} lists completed; watcher failures {:?}; faults injected {:?}; \
         converged {:.2}s after the last write; total {:.1}s",
        writer.rejected,
        writer.ops,
        live.changes.len(),
        live.failures,
        injected,
        converged_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(writes_done >= 1_000 || writes_wanted < 1_000);
    assert!(writer.rejected * 20 < writes_done, "few writes are refused");
    // the faults happened and were survived
    assert!(relists > 5, "re-lists beyond the first sync happened");
    assert!(failures > 0, "the watchers saw failures");
    for (name, counts) in &injected {
        assert!(!counts.is_empty(), "phase {name}: no fault was injected");
    }
}

fn kind_of(id: &str) -> RbacKind {
    RbacKind::from_kind(id.split('/').next().unwrap_or_default()).expect("kind")
}

fn summary(writes: &[Write]) -> Vec<String> {
    writes
        .iter()
        .map(|w| format!("{}@{}", w.op, w.rv))
        .collect()
}

fn changes_summary(changes: &[&ObjectChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            format!(
                "{:?}:{}{}",
                c.origin,
                match (&c.previous, &c.current) {
                    (None, Some(_)) => "added",
                    (Some(_), None) => "deleted",
                    _ => "modified",
                },
                c.current
                    .as_ref()
                    .map(|o| format!("@{}", rv_of(&o.value())))
                    .or(c.resource_version.as_ref().map(|rv| format!("@{rv}")))
                    .unwrap_or_default()
            )
        })
        .collect()
}
