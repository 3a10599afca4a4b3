//! Attribution in the operator: who made each judged change, and which
//! agent suggestion it came from.
//!
//! Two kinds of evidence come in through the API and are held here in
//! memory, bounded: agent suggestions (`POST /api/v1/suggestions`, journaled
//! as `suggestion` records and restored from them at start), kept for the
//! configured window and count; and the API server's audit events (`POST
//! /api/v1/audit`), kept for [`AUDIT_KEEP`] and at most [`AUDIT_MAX`]. A
//! source loop asks for the attribution of each change it judges: the
//! actor is the audit event for the object and verb (the one with the new
//! object's resourceVersion, else the closest in time), the suggestion the
//! best match of `attribution::matching`, and `attribution::compose` makes
//! the verdict. [`Hub`] and [`Matcher`] do no I/O and read no clock (times
//! are passed in); [`LoopAttribution`] is the loop's thin edge: it sets the
//! hook that puts the attribution into the `change` record, and when the
//! actor is not known yet, waits up to [`ACTOR_WAIT`] (without blocking the
//! loop) for its audit event, then journals an `attribution` record.

use crate::attribution::actors::{AuditEvent, Events};
use crate::attribution::agents::AgentsConfig;
use crate::attribution::placeholder;
use crate::attribution::predict::{self, Prediction};
use crate::attribution::suggestion::Suggestion;
use crate::attribution::{self, Actor, Attribution};
use crate::grants::catalog::Catalog;
use crate::model::k8s::RbacKind;
use crate::report::{Change, ChangeKind};
use crate::snapshot::{Snapshot, SourceSnapshot};
use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How long audit events are kept for matching.
pub const AUDIT_KEEP: SignedDuration = SignedDuration::from_mins(10);
/// Most audit events kept; the oldest go first.
pub const AUDIT_MAX: usize = 50_000;
/// How long a change whose actor is not known yet waits for its audit
/// event: the API server's webhook batches, so it may come after the watch.
pub const ACTOR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Agent label value for a suggestion's `agent` that is no configured agent
/// (what a caller writes must not mint new metric series).
pub const OTHER_AGENT: &str = "other";

/// The suggestions and audit events held for attribution.
pub struct Hub {
    agents: AgentsConfig,
    window: SignedDuration,
    max_count: usize,
    inner: Mutex<Inner>,
    /// Bumped at every audit batch, so that loops waiting for an actor wake.
    audit_seen: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first, with the time each was received.
    suggestions: VecDeque<(Timestamp, Suggestion)>,
    /// Bumped whenever the suggestions change (predictions are cached by it).
    generation: u64,
    audit: VecDeque<AuditEvent>,
}

impl Hub {
    pub fn new(agents: AgentsConfig, window: std::time::Duration, max_count: usize) -> Arc<Self> {
        Arc::new(Hub {
            agents,
            window: SignedDuration::try_from(window).unwrap_or(attribution::DEFAULT_WINDOW),
            max_count: max_count.max(1),
            inner: Mutex::default(),
            audit_seen: watch::Sender::new(0),
        })
    }

    pub fn agents(&self) -> &AgentsConfig {
        &self.agents
    }

    pub fn window(&self) -> SignedDuration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave these lists half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds a suggestion received at `received` (its `at` when it names
    /// none); the oldest go past the window or the count.
    pub fn add_suggestion(&self, mut suggestion: Suggestion, received: Timestamp) {
        suggestion.at.get_or_insert(received);
        let mut inner = self.lock();
        inner.suggestions.retain(|(_, s)| s.id != suggestion.id);
        inner.suggestions.push_back((received, suggestion));
        self.prune(&mut inner, received);
        inner.generation += 1;
    }

    fn prune(&self, inner: &mut Inner, now: Timestamp) {
        while inner.suggestions.len() > self.max_count {
            inner.suggestions.pop_front();
        }
        let window = self.window;
        inner.suggestions.retain(|(received, s)| {
            let at = s.at.unwrap_or(*received).max(*received);
            now.duration_since(at) <= window
        });
    }

    /// The suggestions held at `now` and their generation.
    pub fn suggestions(&self, now: Timestamp) -> (u64, Vec<Suggestion>) {
        let (generation, held) = self.suggestions_since(now, None);
        (generation, held.unwrap_or_default())
    }

    /// The generation of the suggestions held at `now`, and the
    /// suggestions themselves only when it is not `known` (copying a
    /// thousand of them for every judged change would cost more than
    /// matching them).
    pub fn suggestions_since(
        &self,
        now: Timestamp,
        known: Option<u64>,
    ) -> (u64, Option<Vec<Suggestion>>) {
        let mut inner = self.lock();
        let before = inner.suggestions.len();
        self.prune(&mut inner, now);
        if inner.suggestions.len() != before {
            inner.generation += 1;
        }
        if known == Some(inner.generation) {
            return (inner.generation, None);
        }
        let held = inner.suggestions.iter().map(|(_, s)| s.clone()).collect();
        (inner.generation, Some(held))
    }

    /// Whether a suggestion with this id is held.
    pub fn holds(&self, id: &str) -> bool {
        self.lock().suggestions.iter().any(|(_, s)| s.id == id)
    }

    pub fn suggestion_count(&self) -> usize {
        self.lock().suggestions.len()
    }

    /// Keeps a batch of audit events received at `now`.
    pub fn add_audit(&self, events: Events, now: Timestamp) {
        {
            let mut inner = self.lock();
            inner.audit.extend(events.audit);
            while inner.audit.len() > AUDIT_MAX {
                inner.audit.pop_front();
            }
            inner.audit.retain(|e| {
                e.actor
                    .at
                    .is_none_or(|at| now.duration_since(at) <= AUDIT_KEEP)
            });
        }
        self.audit_seen.send_modify(|n| *n += 1);
    }

    /// Wakes when audit events arrive.
    pub fn watch_audit(&self) -> watch::Receiver<u64> {
        self.audit_seen.subscribe()
    }

    /// Who wrote the object of `change`: the audit event for its object and
    /// verb with resourceVersion `rv`, else the one closest to `near`.
    pub fn actor(&self, change: &Change, rv: Option<&str>, near: Timestamp) -> Option<Actor> {
        let kind =
            RbacKind::from_kind(&change.object.kind).filter(|_| change.object.arn.is_none())?;
        let removed = change.change == ChangeKind::Removed;
        let inner = self.lock();
        let matching: Vec<&AuditEvent> = inner
            .audit
            .iter()
            .filter(|e| {
                e.resource == kind.resource()
                    && e.name.as_deref() == Some(change.object.name.as_str())
                    && e.namespace == change.object.namespace
                    && removed == (e.verb == "delete")
            })
            .collect();
        let by_version = rv.and_then(|rv| {
            matching
                .iter()
                .find(|e| e.resource_version.as_deref() == Some(rv))
        });
        by_version
            .or_else(|| {
                matching.iter().min_by_key(|e| {
                    e.actor
                        .at
                        .map_or(SignedDuration::MAX, |at| at.duration_since(near).abs())
                })
            })
            .map(|e| e.actor.clone())
    }

    /// The metric label for an attribution's agent: a configured agent's
    /// name, `other`, or empty.
    pub fn agent_label(&self, a: &Attribution) -> String {
        match &a.agent {
            None => String::new(),
            Some(name) if self.agents.agents.iter().any(|x| &x.name == name) => name.clone(),
            Some(_) => OTHER_AGENT.to_owned(),
        }
    }
}

/// One source's predictions of the held suggestions, rebuilt when the
/// suggestions change (predicting is the costly part; matching is cheap).
#[derive(Default)]
pub struct Predicted {
    generation: Option<u64>,
    current: Option<Arc<Predictions>>,
}

/// Predictions, and where to find those a change could match.
///
/// `matching::Index` borrows its predictions, so it cannot be kept from one
/// change to the next, and building it over a thousand predictions costs
/// far more than matching. This keeps the same candidate rule as the
/// index's own (a shared (action, resource) of a gained grant, the same
/// object, or placeholders where the index cannot look them up), so that
/// the index built per change holds only the few that can match and gives
/// the answer it would give over all of them.
struct Predictions {
    suggestions: Vec<Suggestion>,
    predictions: Vec<Prediction>,
    by_grant: HashMap<(String, String), Vec<usize>>,
    by_name: HashMap<(String, String), Vec<usize>>,
    wild: Vec<usize>,
}

/// The name a prediction or change is looked up by: its ARN, else its name.
fn lookup_name(change: &Change) -> String {
    change
        .object
        .arn
        .clone()
        .unwrap_or_else(|| change.object.name.clone())
}

impl Predictions {
    fn new(suggestions: Vec<Suggestion>, predictions: Vec<Prediction>) -> Self {
        let mut by_grant: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut by_name: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut wild = Vec::new();
        for (i, p) in predictions.iter().enumerate() {
            let mut is_wild = false;
            let mut indexed = false;
            for g in &p.change.gained {
                if placeholder::has_placeholder(&g.action)
                    || placeholder::has_placeholder(&g.resource)
                {
                    is_wild = true;
                } else {
                    indexed = true;
                    let entry = by_grant
                        .entry((g.action.clone(), g.resource.clone()))
                        .or_default();
                    if entry.last() != Some(&i) {
                        entry.push(i);
                    }
                }
            }
            let name = lookup_name(&p.change);
            if placeholder::has_placeholder(&name) {
                is_wild |= !indexed;
            } else {
                by_name
                    .entry((p.change.object.kind.clone(), name))
                    .or_default()
                    .push(i);
            }
            if is_wild {
                wild.push(i);
            }
        }
        Predictions {
            suggestions,
            predictions,
            by_grant,
            by_name,
            wild,
        }
    }

    /// The predictions `change` could match, in their order.
    fn candidates(&self, change: &Change) -> Vec<Prediction> {
        let mut picked: Vec<usize> = self.wild.clone();
        let name = (change.object.kind.clone(), lookup_name(change));
        picked.extend(self.by_name.get(&name).into_iter().flatten());
        for g in &change.gained {
            let key = (g.action.clone(), g.resource.clone());
            picked.extend(self.by_grant.get(&key).into_iter().flatten());
        }
        picked.sort_unstable();
        picked.dedup();
        picked
            .into_iter()
            .filter_map(|i| self.predictions.get(i).cloned())
            .collect()
    }
}

impl Predicted {
    /// Brings the predictions up to date against `baseline` (the state
    /// suggestions are applied to) and returns a matcher for changes.
    pub fn matcher(
        &mut self,
        hub: &Arc<Hub>,
        baseline: &SourceSnapshot,
        catalog: &'static Catalog,
        now: Timestamp,
    ) -> Matcher {
        let (generation, changed) = hub.suggestions_since(now, self.generation);
        if let Some(suggestions) = changed {
            let predictions = if suggestions.is_empty() {
                Vec::new()
            } else {
                let mut old = Snapshot::new();
                old.sources.insert(baseline.name.clone(), baseline.clone());
                predict::predict_all(&old, &suggestions, catalog)
            };
            self.generation = Some(generation);
            self.current = Some(Arc::new(Predictions::new(suggestions, predictions)));
        }
        Matcher {
            hub: hub.clone(),
            predicted: self.current.clone(),
        }
    }
}

/// Attributes changes of one source with the suggestions predicted.
#[derive(Clone)]
pub struct Matcher {
    hub: Arc<Hub>,
    predicted: Option<Arc<Predictions>>,
}

impl Matcher {
    /// The attribution of `change`: `actor` as learnt (or none yet), the
    /// agent it is, and the suggestion that best explains the change.
    pub fn attribute(&self, change: &Change, actor: Option<Actor>) -> Option<Attribution> {
        let at = actor.as_ref().and_then(|a| a.at);
        let best = self.predicted.as_ref().and_then(|p| {
            let candidates = p.candidates(change);
            let index = attribution::matching::Index::new(&candidates, &p.suggestions);
            index.best(change, at, self.hub.window())
        });
        let agent = actor.as_ref().and_then(|a| self.hub.agents().agent_of(a));
        attribution::compose(actor, agent, best)
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

/// The resourceVersion of a watched object.
fn resource_version(object: Option<&crate::index::k8s::K8sObject>) -> Option<String> {
    object?
        .value()
        .pointer("/metadata/resourceVersion")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// A judged change whose actor is not known yet.
struct Waiting {
    key: crate::decide::ObjectKey,
    change: Change,
    rv: Option<String>,
    near: Timestamp,
    detected: Timestamp,
    deadline: tokio::time::Instant,
    matcher: Matcher,
    /// What the `change` record holds.
    known: Option<Attribution>,
}

/// One Kubernetes loop's attribution: predictions kept up to date and
/// changes waiting for their audit event.
pub struct LoopAttribution {
    hub: Arc<Hub>,
    predicted: Predicted,
    last: Option<Matcher>,
    waiting: Vec<Waiting>,
}

/// Most changes waiting for their actor at once; past it, the oldest stop
/// waiting (a burst must not hold memory without bound).
const MAX_WAITING: usize = 10_000;

impl LoopAttribution {
    pub fn new(hub: Arc<Hub>) -> Self {
        LoopAttribution {
            hub,
            predicted: Predicted::default(),
            last: None,
            waiting: Vec::new(),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The hook that attributes the change about to be judged (the object
    /// now `current`, written at `written`) against `state`'s baseline.
    pub fn hook(
        &mut self,
        cx: &super::source::SourceCtx,
        state: &crate::decide::SourceState,
        current: Option<&crate::index::k8s::K8sObject>,
        written: Option<Timestamp>,
    ) -> super::outcome::Attributor {
        let now = super::now();
        let matcher = self
            .predicted
            .matcher(&self.hub, &state.baseline, cx.catalog, now);
        self.last = Some(matcher.clone());
        let rv = resource_version(current);
        let near = written.unwrap_or(now);
        Arc::new(move |change: &Change| {
            let actor = matcher.hub().actor(change, rv.as_deref(), near);
            matcher.attribute(change, actor)
        })
    }

    /// After a change was judged and journaled: counted when its actor is
    /// known, else it waits for its audit event.
    pub fn judged(
        &mut self,
        cx: &super::source::SourceCtx,
        key: &crate::decide::ObjectKey,
        current: Option<&crate::index::k8s::K8sObject>,
        written: Option<Timestamp>,
        announce: &super::outcome::Announce,
    ) {
        let super::outcome::Announce::Judged { change, .. } = announce else {
            return;
        };
        let known = change.attribution.clone().flatten();
        let (Some(matcher), false) = (
            self.last.clone(),
            known.as_ref().is_some_and(|a| a.actor.is_some()),
        ) else {
            count(cx, &self.hub, known.as_ref());
            return;
        };
        let now = super::now();
        if self.waiting.len() >= MAX_WAITING {
            let oldest = self.waiting.remove(0);
            count(cx, &self.hub, oldest.known.as_ref());
        }
        self.waiting.push(Waiting {
            key: key.clone(),
            change: (**change).clone(),
            rv: resource_version(current),
            near: written.unwrap_or(now),
            detected: now,
            deadline: tokio::time::Instant::now() + ACTOR_WAIT,
            matcher,
            known,
        });
    }

    /// When the first waiting change stops waiting.
    pub fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.waiting.iter().map(|w| w.deadline).min()
    }

    /// Audit events arrived: each waiting change whose actor is now known
    /// gets an `attribution` record.
    pub async fn retry_waiting(&mut self, cx: &super::source::SourceCtx) {
        let mut still = Vec::with_capacity(self.waiting.len());
        for w in std::mem::take(&mut self.waiting) {
            let Some(actor) = self.hub.actor(&w.change, w.rv.as_deref(), w.near) else {
                still.push(w);
                continue;
            };
            let Some(attribution) = w.matcher.attribute(&w.change, Some(actor)) else {
                continue;
            };
            let now = super::now();
            let body = super::records::Body::Attribution(super::records::AttributionBody {
                key: w.key.clone(),
                object: w.change.object.display(),
                fingerprint: w.change.fingerprint.clone(),
                waited_seconds: now.duration_since(w.detected).as_secs_f64(),
                attribution: attribution.clone(),
            });
            if cx.is_recording()
                && let Err(e) = cx.store.append(&cx.name, &body, now).await
            {
                tracing::warn!(error = %e, object = %w.change.object.display(),
                    "attribution not journaled");
            }
            tracing::info!(object = %w.change.object.display(), attribution = %attribution.line(),
                "attributed after the change was judged");
            count(cx, &self.hub, Some(&attribution));
        }
        self.waiting = still;
    }

    /// Changes that waited long enough keep what their `change` record says.
    pub fn give_up_waiting(&mut self, cx: &super::source::SourceCtx, now: tokio::time::Instant) {
        let (done, still): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        for w in done {
            count(cx, &self.hub, w.known.as_ref());
        }
        self.waiting = still;
    }
}

/// Creates the source's `permdrift_attributed_changes_total` series at 0
/// (agents' kinds for every configured agent, `other` and none; a person's
/// with no agent), so the alert's `increase` sees the first attribution.
pub fn count_from_zero(cx: &super::source::SourceCtx, hub: &Hub) {
    use crate::attribution::AttributionKind;
    let mut agents: Vec<&str> = hub.agents.agents.iter().map(|a| a.name.as_str()).collect();
    agents.extend([OTHER_AGENT, ""]);
    for kind in [AttributionKind::Agent, AttributionKind::AgentSuggested] {
        for agent in &agents {
            cx.metrics
                .attributed
                .with_label_values(&[cx.name.as_str(), kind.as_str(), agent]);
        }
    }
    for kind in [AttributionKind::Human, AttributionKind::Unknown] {
        cx.metrics
            .attributed
            .with_label_values(&[cx.name.as_str(), kind.as_str(), ""]);
    }
}

/// Counts an attribution in `permdrift_attributed_changes_total`.
fn count(cx: &super::source::SourceCtx, hub: &Hub, a: Option<&Attribution>) {
    if let Some(a) = a {
        cx.metrics
            .attributed
            .with_label_values(&[cx.name.as_str(), a.kind.as_str(), &hub.agent_label(a)])
            .inc();
    }
}

/// Resolves when audit events arrive (never without a hub).
pub async fn audit_arrived(rx: Option<&mut watch::Receiver<u64>>) -> bool {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return true;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggestion(id: &str, at: Option<&str>) -> Suggestion {
        let front = at.map_or(String::new(), |t| format!("---\nat: {t}\n---\n"));
        crate::attribution::suggestion::parse(
            "post",
            id,
            format!("{front}Try:\n\n```sh\nkubectl create clusterrolebinding x --clusterrole=view --user=bob\n```\n").as_bytes(),
        )
        .unwrap()
    }

    /// The operator's case at its documented size: 1,000 suggestions held,
    /// one applied by a person. The time per change is printed (a debug
    /// build; BENCHMARKS.md has the measured numbers).
    #[test]
    fn among_a_thousand_suggestions_the_applied_one_is_found() {
        use crate::index::k8s::{K8sModel, K8sObject};
        use serde_json::json;
        let catalog = Catalog::embedded();
        let role = |i: usize| {
            K8sObject::from_raw(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": format!("role-{i}")},
                "rules": [{"apiGroups": [""], "resources": [format!("res{i}")], "verbs": ["get"]}]}))
            .unwrap()
        };
        let mut old = K8sModel::new();
        for i in 0..50 {
            old.insert(role(i));
        }
        let hub = Hub::new(
            AgentsConfig::default(),
            std::time::Duration::from_secs(3600),
            1000,
        );
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        for i in 0..1000 {
            let text = format!(
                "Try this:\n\n```sh\nkubectl create clusterrolebinding crb-{i} --clusterrole=role-{} --user=user-{i}\n```\n",
                i % 50
            );
            let s =
                crate::attribution::suggestion::parse("post", &format!("s{i}"), text.as_bytes())
                    .unwrap();
            hub.add_suggestion(s, t0);
        }
        let baseline = SourceSnapshot::kubernetes("lab", old.clone());
        let mut predicted = Predicted::default();
        let started = std::time::Instant::now();
        let matcher = predicted.matcher(&hub, &baseline, catalog, t0);
        let predicting = started.elapsed();
        let mut new = old;
        new.insert(
            K8sObject::from_raw(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "crb-777"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "role-27"},
                "subjects": [{"kind": "User", "name": "user-777", "apiGroup": "rbac.authorization.k8s.io"}]}))
            .unwrap(),
        );
        let snap = |m| {
            let mut s = Snapshot::new();
            s.sources
                .insert("lab".into(), SourceSnapshot::kubernetes("lab", m));
            s
        };
        let report = crate::diff::diff(
            &snap(baseline.kube().cloned().unwrap()),
            &snap(new),
            catalog,
            &super::super::source::judge_options(),
        );
        let change = &report.changes[0];
        let started = std::time::Instant::now();
        let rounds = 20;
        let mut found = None;
        for _ in 0..rounds {
            found = matcher.attribute(change, None);
        }
        let per_change = started.elapsed() / rounds;

        let a = found.expect("attributed");
        assert_eq!(a.suggestion.as_deref(), Some("s777"));
        assert_eq!(a.kind, crate::attribution::AttributionKind::AgentSuggested);
        eprintln!(
            "1,000 suggestions: predicted once in {predicting:?}, matched in {per_change:?} per change (debug build)"
        );
        // Predictions are kept until the suggestions change.
        let again = std::time::Instant::now();
        let _ = predicted.matcher(&hub, &baseline, catalog, t0);
        assert!(again.elapsed() < predicting, "predictions are cached");
    }

    #[test]
    fn suggestions_are_bounded_by_count_and_window() {
        let hub = Hub::new(
            AgentsConfig::default(),
            std::time::Duration::from_secs(3600),
            2,
        );
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        hub.add_suggestion(suggestion("a", None), t0);
        hub.add_suggestion(suggestion("b", None), t0);
        hub.add_suggestion(suggestion("c", None), t0);
        let ids = |hub: &Hub, now| -> Vec<String> {
            hub.suggestions(now).1.into_iter().map(|s| s.id).collect()
        };
        assert_eq!(ids(&hub, t0), ["b", "c"]);
        let later = t0 + SignedDuration::from_mins(61);
        assert!(ids(&hub, later).is_empty());
        // Metric labels name configured agents only.
        let a = |agent: Option<&str>| Attribution {
            kind: crate::attribution::AttributionKind::AgentSuggested,
            actor: None,
            agent: agent.map(str::to_owned),
            suggestion: None,
            confidence: None,
            evidence: Vec::new(),
            beyond: Vec::new(),
        };
        let configured = Hub::new(
            AgentsConfig::parse("a", "agents:\n- name: devhelper\n").unwrap(),
            std::time::Duration::from_secs(60),
            1,
        );
        assert_eq!(configured.agent_label(&a(Some("devhelper"))), "devhelper");
        assert_eq!(
            configured.agent_label(&a(Some("made-up-by-a-caller"))),
            OTHER_AGENT
        );
        assert_eq!(configured.agent_label(&a(None)), "");
        // A suggestion said long ago but posted now ages from when it was posted.
        hub.add_suggestion(suggestion("d", Some("2026-01-01T00:00:00Z")), later);
        assert_eq!(ids(&hub, later), ["d"]);
    }

    #[test]
    fn the_actor_is_the_event_with_the_objects_version_else_the_closest() {
        let hub = Hub::new(
            AgentsConfig::default(),
            std::time::Duration::from_secs(3600),
            10,
        );
        let event = |user: &str, rv: &str, at: &str| {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"create","user":{{"username":"{user}"}},"objectRef":{{"resource":"clusterrolebindings","name":"x","resourceVersion":"{rv}"}},"stageTimestamp":"{at}"}}"#
            )
        };
        let list = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{},{}]}}"#,
            event("early", "5", "2026-12-03T10:00:00Z"),
            event("late", "9", "2026-12-03T10:05:00Z")
        );
        let mut events = Events::default();
        events.add_audit_list("t", list.as_bytes()).unwrap();
        let now: Timestamp = "2026-12-03T10:05:01Z".parse().unwrap();
        hub.add_audit(events, now);
        let change: Change = serde_json::from_value(serde_json::json!({
            "source": "lab", "platform": "kubernetes", "change": "added",
            "object": {"kind": "ClusterRoleBinding", "name": "x"},
            "direction": "widening", "severity": "low", "risks": [],
            "gained_count": 0, "gained": [], "lost_count": 0, "lost": [],
            "text_diff": "", "fingerprint": "f"
        }))
        .unwrap();
        let who = |rv, near: &str| {
            hub.actor(&change, rv, near.parse().unwrap())
                .and_then(|a| a.username)
        };
        assert_eq!(
            who(Some("5"), "2026-12-03T10:05:00Z").as_deref(),
            Some("early")
        );
        assert_eq!(who(None, "2026-12-03T10:04:00Z").as_deref(), Some("late"));
        assert_eq!(
            who(Some("77"), "2026-12-03T10:01:00Z").as_deref(),
            Some("early")
        );
    }
}
