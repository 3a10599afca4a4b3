//! The loop of one Kubernetes cluster.
//!
//! Watch events come in and are applied to the live index; each change the
//! index reports is judged against the baseline (while this replica
//! records), recorded, and announced as a Kubernetes Event on the changed
//! object. Followers keep the index warm, so a takeover needs no re-list.

use super::events::{self, EventQueue};
use super::outcome::{self, Announce};
use super::source::{self, Current, SourceCtx};
use super::{Command, Error, Recording, now, unix_seconds};
use crate::decide::{ObjectKey, SourceState};
use crate::index::k8s::K8sObject;
use crate::index::k8s_live::{KindEvent, LiveIndex, RejectedObject};
use crate::model::k8s::RbacKind;
use crate::report::Direction;
use crate::snapshot::SourceSnapshot;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use std::collections::BTreeSet;
use tracing::Instrument;

/// The `event` label of `permdrift_watch_events_total`.
fn event_label(event: &KindEvent) -> &'static str {
    match event {
        KindEvent::Init { .. } | KindEvent::InitApply { .. } | KindEvent::InitDone { .. } => "list",
        KindEvent::Apply { .. } => "apply",
        KindEvent::Delete { .. } => "delete",
        KindEvent::Forbidden { .. } => "forbidden",
        KindEvent::Failed { .. } => "failed",
    }
}

/// When an object was last written, from its managedFields (seconds resolution).
fn written_at(object: Option<&K8sObject>) -> Option<jiff::Timestamp> {
    let v = object?.value();
    let fields = v.get("metadata")?.get("managedFields")?.as_array()?;
    fields
        .iter()
        .filter_map(|f| f.get("time")?.as_str()?.parse::<jiff::Timestamp>().ok())
        .max()
}

fn reference(object: &K8sObject) -> ObjectReference {
    let v = object.value();
    let meta = v.get("metadata");
    let text = |path: &str| {
        meta.and_then(|m| m.get(path))
            .and_then(|x| x.as_str())
            .map(str::to_owned)
    };
    ObjectReference {
        api_version: v
            .get("apiVersion")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
        kind: v.get("kind").and_then(|x| x.as_str()).map(str::to_owned),
        name: text("name"),
        namespace: text("namespace"),
        uid: text("uid"),
        resource_version: text("resourceVersion"),
        ..ObjectReference::default()
    }
}

/// The Event for an outcome: a widening (Warning), a narrowing (Normal) or
/// an open widening undone (Normal); nothing for neutral changes.
fn event_for(what: &Announce) -> Option<Event> {
    let (type_, reason, action, mut note) = match what {
        Announce::Judged {
            change,
            verdict,
            reason,
        } => {
            let (type_, name) = match change.direction {
                Direction::Widening | Direction::Mixed => {
                    (EventType::Warning, "PermissionWidening")
                }
                Direction::Narrowing => (EventType::Normal, "PermissionNarrowing"),
                Direction::Neutral => return None,
            };
            let detail = change
                .witness
                .as_ref()
                .map_or("permissions removed", |w| w.explanation.as_str());
            let mut note = format!(
                "{} {} ({}; {reason}): {detail}",
                change.severity.as_str(),
                change.direction.as_str(),
                verdict.as_str(),
            );
            if let Some(Some(a)) = &change.attribution {
                note = format!("{note} · by {}", a.line());
            }
            (type_, name, "Judged", note)
        }
        Announce::Closed { object, reason } => (
            EventType::Normal,
            "PermissionWideningClosed",
            "Closed",
            format!("the open widening of {object} is closed ({reason})"),
        ),
        Announce::Nothing => return None,
    };
    // The API limits a note to 1 kB; cut at a character boundary.
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    Some(Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    })
}

/// Queues the Event for an outcome already journaled.
fn announce(events: Option<&EventQueue>, object: Option<&ObjectReference>, what: &Announce) {
    if let (Some(events), Some(object), Some(event)) = (events, object, event_for(what)) {
        events.send(event, object.clone());
    }
}

/// How long after a failure to load or record the loop tries again, at first
/// and at most (doubling in between).
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// When to try again after failures: a doubling backoff, reset by success.
#[derive(Default)]
struct Retry {
    at: Option<tokio::time::Instant>,
    delay: Option<std::time::Duration>,
}

impl Retry {
    fn schedule(&mut self) {
        let delay = self.delay.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
        self.delay = Some(delay);
        self.at = Some(tokio::time::Instant::now() + delay);
    }

    fn reset(&mut self) {
        *self = Retry::default();
    }
}

/// The next finished revert in enforce mode (pending forever otherwise).
async fn next_done(
    enforcer: Option<&mut super::enforce::Enforcer>,
) -> Option<super::enforce::Done> {
    match enforcer {
        Some(e) => e.next_done().await,
        None => std::future::pending().await,
    }
}

async fn retry_due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Event on an object permdrift cannot parse.
fn unreadable_event(object: &RejectedObject) -> (Event, ObjectReference) {
    let mut note = format!(
        "permdrift cannot parse this object, so what it grants is unknown and not judged: {}",
        object.reason
    );
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let event = Event {
        type_: EventType::Warning,
        reason: "UnreadableObject".into(),
        note: Some(note),
        action: "Read".into(),
        secondary: None,
    };
    let reference = ObjectReference {
        api_version: Some("rbac.authorization.k8s.io/v1".into()),
        kind: Some(object.kind.as_str().into()),
        name: Some(object.name.clone()),
        namespace: object.namespace.clone(),
        ..ObjectReference::default()
    };
    (event, reference)
}

/// Reports objects that became unreadable: a gauge, a log line each and a
/// warning Event. Called only when the count of unreadable objects changes.
fn report_unreadable(
    cx: &SourceCtx,
    index: &LiveIndex,
    known: &mut BTreeSet<(RbacKind, Option<String>, String)>,
    events: Option<&EventQueue>,
) {
    let rejected = index.rejected();
    cx.metrics
        .unreadable_objects
        .with_label_values(&[cx.name.as_str()])
        .set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
    let now: BTreeSet<_> = rejected
        .iter()
        .map(|r| (r.kind, r.namespace.clone(), r.name.clone()))
        .collect();
    for object in rejected
        .iter()
        .filter(|r| !known.contains(&(r.kind, r.namespace.clone(), r.name.clone())))
    {
        tracing::warn!(kind = object.kind.as_str(),
            namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name,
            error = %object.reason,
            "unreadable object: its effect is unknown; everything else is still judged");
        if let Some(events) = events
            && cx.is_recording()
        {
            let (event, reference) = unreadable_event(object);
            events.send(event, reference);
        }
    }
    *known = now;
}

/// A judged object (the Event's target) and what to announce on it, in
/// journal order.
type Outcomes = Vec<(Option<ObjectReference>, Announce)>;

/// One cluster's loop state: the live index and, while recording, the
/// judged state. Each input (a watch event, a retry, a leadership change, a
/// command) is one method; judging returns outcomes, and Events are queued
/// for them only after their records are journaled.
struct ClusterLoop {
    cx: SourceCtx,
    index: LiveIndex,
    state: Option<SourceState>,
    patches: usize,
    /// Counted approvals of open widenings (`approvals`).
    approvals: super::approvals::HeldApprovals,
    retry: Retry,
    unreadable: BTreeSet<(RbacKind, Option<String>, String)>,
    events: Option<EventQueue>,
    /// Enforce mode's side of the loop (`enforce`); None in other modes.
    enforcer: Option<super::enforce::Enforcer>,
    /// The live model's copy admission reviews write on (`admission`).
    review_copy: super::admission::ReviewCopy,
    /// Attribution of judged changes (None: not attributed).
    attribution: Option<super::attribution::LoopAttribution>,
}

impl ClusterLoop {
    /// Applies a watch event to the index and its metrics; returns the
    /// changes the index reports.
    fn apply(&mut self, event: KindEvent) -> Vec<crate::index::k8s_live::ObjectChange> {
        let cx = &self.cx;
        let name = cx.name.as_str();
        cx.metrics
            .watch_events
            .with_label_values(&[name, event_label(&event)])
            .inc();
        let restart = match &event {
            KindEvent::Init { kind } if self.index.is_synced_kind(*kind) => Some("relist"),
            KindEvent::Failed { .. } => Some("failed"),
            KindEvent::Forbidden { .. } => Some("forbidden"),
            _ => None,
        };
        if let Some(reason) = restart {
            cx.metrics
                .watch_restarts
                .with_label_values(&[name, reason])
                .inc();
        }
        // Say why a kind is unreadable (expired credentials, missing
        // RBAC, a server down): readiness alone does not tell an operator.
        match &event {
            KindEvent::Failed { kind, reason } => tracing::warn!(
                kind = ?kind, error = %reason,
                "cannot read from the cluster; retrying with backoff"),
            KindEvent::Forbidden { kind, reason } => tracing::warn!(
                kind = ?kind, error = %reason,
                "forbidden to read from the cluster; grant it and the watch resumes"),
            _ => {}
        }
        let in_step = matches!(event, KindEvent::Apply { .. } | KindEvent::Delete { .. });
        let changes = self.index.apply(event);
        self.review_copy.follow(in_step, &changes);
        cx.health.set_complete(name, self.index.is_complete());
        if self.index.rejected_count() != self.unreadable.len() {
            report_unreadable(cx, &self.index, &mut self.unreadable, self.events.as_ref());
        }
        let platform = cx.platform.as_str();
        cx.metrics
            .source_up
            .with_label_values(&[name, platform])
            .set(i64::from(self.index.is_synced()));
        cx.metrics
            .snapshot_objects
            .with_label_values(&[name, platform])
            .set(i64::try_from(self.index.model().len()).unwrap_or(i64::MAX));
        if self.index.is_synced() {
            cx.metrics
                .last_snapshot
                .with_label_values(&[name])
                .set(unix_seconds(now()));
        }
        changes
    }

    async fn on_event(&mut self, event: KindEvent) {
        let changes = self.apply(event);
        if !self.cx.is_recording() || !self.index.is_synced() {
            return;
        }
        if !self.index.is_complete() {
            // A refused kind: changes to it cannot be judged now;
            // start over from the baseline once it reads again.
            if self.state.take().is_some() {
                let missing: Vec<String> = self
                    .index
                    .forbidden()
                    .map(|(k, r)| format!("{}: {r}", k.resource()))
                    .collect();
                self.cx.health.set_recording(&self.cx.name, Recording::Failed(format!(
                    "part of the cluster cannot be listed ({}); judging resumes against the baseline once it can",
                    missing.join("; "))));
            }
            return;
        }
        let result = match self.state.as_mut() {
            Some(s) => {
                judge_changes(
                    &self.cx,
                    s,
                    &self.index,
                    &changes,
                    &mut self.patches,
                    &self.approvals,
                    Extensions {
                        enforcer: self.enforcer.as_mut(),
                        attribution: self.attribution.as_mut(),
                    },
                )
                .await
            }
            // After a failure, the retry timer takes over, not every event.
            None if self.retry.at.is_some() => return,
            None => self.take_over().await,
        };
        self.settle(result).await;
    }

    async fn on_retry(&mut self) {
        self.retry.at = None;
        if self.cx.is_recording() && self.index.is_complete() {
            let result = self.take_over().await;
            self.settle(result).await;
        }
    }

    async fn on_recording_changed(&mut self) {
        if self.cx.is_recording() {
            if self.index.is_complete() {
                let result = self.take_over().await;
                self.settle(result).await;
            }
        } else {
            if let Some(e) = self.enforcer.as_mut() {
                e.reset();
            }
            self.state = None;
            self.approvals = Default::default();
            self.retry.reset();
            self.cx.health.set_recording(&self.cx.name, Recording::Idle);
            outcome::clear_open_gauges(&self.cx.outcome_cx());
        }
    }

    /// Approvals lapse with time, not with events: drop the expired ones
    /// (counted, logged) and republish the approved gauge.
    async fn on_expiry_tick(&mut self) {
        if let Some(s) = self.state.as_ref()
            && let Err(e) = super::approvals::refresh(&self.cx, s, &mut self.approvals).await
        {
            tracing::warn!(error = %e, "could not read the approvals back");
        }
        if let (Some(e), Some(s)) = (self.enforcer.as_mut(), self.state.as_ref())
            && let Err(err) = e
                .on_tick(
                    &self.cx,
                    s,
                    Current::K8s(self.index.model()),
                    &self.approvals,
                )
                .await
        {
            tracing::warn!(error = %err, "could not plan the revert of a lapsed approval");
        }
    }

    /// Takes over (see [`takeover`]); in enforce mode, then settles the
    /// reverts a previous leader left open and plans the open widenings.
    async fn take_over(&mut self) -> (Outcomes, Result<(), Error>) {
        let (outcomes, result) = takeover(
            &self.cx,
            &mut self.state,
            &self.index,
            self.attribution.as_mut(),
        )
        .await;
        let result = match (result, self.enforcer.as_mut(), self.state.as_ref()) {
            (Ok(()), Some(e), Some(s)) => {
                let current = Current::K8s(self.index.model());
                match super::approvals::refresh(&self.cx, s, &mut self.approvals).await {
                    Ok(()) => {
                        e.after_takeover(&self.cx, s, current, &self.approvals)
                            .await
                    }
                    Err(err) => Err(err),
                }
            }
            (result, _, _) => result,
        };
        (outcomes, result)
    }

    /// A revert ended: judge its object against what the watch shows now
    /// (it closes as `reverted` once back at baseline), and plan again if
    /// someone wrote it meanwhile.
    async fn on_reverted(&mut self, done: super::enforce::Done) {
        let Some(e) = self.enforcer.as_mut() else {
            return;
        };
        e.finished(&done);
        let Some(s) = self.state.as_mut() else {
            return;
        };
        let current = Current::K8s(self.index.model());
        let key = done.key;
        let object = match &key {
            ObjectKey::K8s(k) => current_object(&self.index, k),
            ObjectKey::Aws(_) => None,
        };
        let mut outcomes = Vec::new();
        let result = match e.judge(&self.cx, s, current, &key, None).await {
            Ok(applied) => {
                outcomes.push((object, applied.announce));
                e.enforce(&self.cx, s, current, &key, &self.approvals, false)
                    .await
            }
            Err(err) => Err(err),
        };
        self.settle((outcomes, result)).await;
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AcceptBaseline { by, reply } => {
                let answer = match self.state.as_mut() {
                    Some(s) => source::accept(&self.cx, s, Current::K8s(self.index.model()), &by)
                        .await
                        .inspect(|accepted| self.patches += accepted),
                    None => Err(Error::NotRecording(
                        "not the leader, or the cluster is not synced",
                    )),
                };
                let _ = reply.send(answer);
            }
            Command::Approve { offer, reply } => {
                let answer = match self.state.as_ref() {
                    Some(s) => {
                        super::approvals::offer(
                            &self.cx,
                            s,
                            Current::K8s(self.index.model()),
                            &mut self.approvals,
                            *offer,
                        )
                        .await
                    }
                    None => Err(Error::NotRecording(
                        "not the leader, or the cluster is not synced",
                    )),
                };
                let _ = reply.send(answer);
            }
            Command::Admit(admit) => self.on_admit(*admit),
        }
    }

    /// An admission review: judged against the live index while this
    /// replica records a synced cluster, with the counted approvals.
    fn on_admit(&mut self, admit: super::admission::Admit) {
        let live = (self.state.is_some() && self.index.is_complete()).then(|| self.index.model());
        let t = now();
        let held = &self.approvals;
        let approvals = |_: &str, key: &crate::model::k8s::RbacKey, digest: &str| {
            super::admission::held_approves(held, key, digest, t)
        };
        super::admission::answer(admit, live, &mut self.review_copy, &approvals);
    }

    /// After judging or a takeover: the outcomes journaled so far are
    /// announced; on success the source records (and may compact); on
    /// failure it is marked not recording with the reason, its state
    /// dropped, and a retry scheduled.
    async fn settle(&mut self, result: (Outcomes, Result<(), Error>)) {
        let (outcomes, result) = result;
        for (object, what) in &outcomes {
            announce(self.events.as_ref(), object.as_ref(), what);
        }
        let cx = &self.cx;
        match result {
            Ok(()) => {
                self.retry.reset();
                if let Some(s) = self.state.as_ref() {
                    cx.health.set_recording(&cx.name, Recording::Ok);
                    if let Err(e) = source::maybe_compact(cx, s, &mut self.patches).await {
                        tracing::warn!(error = %e, "could not compact the baseline");
                    }
                    if let Err(e) = super::approvals::refresh(cx, s, &mut self.approvals).await {
                        tracing::warn!(error = %e, "could not read the approvals back");
                    }
                }
            }
            Err(e) => {
                self.state = None;
                self.approvals = Default::default();
                self.retry.schedule();
                cx.health
                    .set_recording(&cx.name, Recording::Failed(e.to_string()));
            }
        }
    }
}

/// The Event target of an object as the watch shows it now.
fn current_object(index: &LiveIndex, key: &crate::model::k8s::RbacKey) -> Option<ObjectReference> {
    index.model().get(key).map(reference)
}

/// The loop's parts that act on each judged change, where configured.
struct Extensions<'a> {
    enforcer: Option<&'a mut super::enforce::Enforcer>,
    attribution: Option<&'a mut super::attribution::LoopAttribution>,
}

/// Judges the changes of one watch event. Returns what was journaled (to
/// announce) and whether every change was. In enforce mode, an object with
/// a revert in flight waits for its end (`on_reverted` judges it then).
async fn judge_changes(
    cx: &SourceCtx,
    state: &mut SourceState,
    index: &LiveIndex,
    changes: &[crate::index::k8s_live::ObjectChange],
    patches: &mut usize,
    approvals: &super::approvals::HeldApprovals,
    Extensions {
        mut enforcer,
        mut attribution,
    }: Extensions<'_>,
) -> (Outcomes, Result<(), Error>) {
    let mut outcomes = Vec::new();
    for change in changes {
        let key = ObjectKey::K8s(change.key.clone());
        let written = written_at(change.current.as_ref());
        if enforcer.as_deref_mut().is_some_and(|e| e.defers(&key)) {
            continue;
        }
        let current = Current::K8s(index.model());
        let hook = attribution
            .as_deref_mut()
            .map(|a| a.hook(cx, state, change.current.as_ref(), written));
        let judged = async {
            match enforcer.as_deref_mut() {
                Some(e) => e.judge(cx, state, current, &key, written).await,
                None => source::judge_one(cx, state, current, &key, written).await,
            }
        };
        let judged = match hook {
            Some(hook) => super::outcome::ATTRIBUTOR.scope(hook, judged).await,
            None => judged.await,
        };
        if let (Some(a), Ok(applied)) = (attribution.as_deref_mut(), &judged) {
            a.judged(
                cx,
                &key,
                change.current.as_ref(),
                written,
                &applied.announce,
            );
        }
        match judged {
            Ok(applied) => {
                if let Some(e) = enforcer.as_deref_mut()
                    && let Err(err) = e.enforce(cx, state, current, &key, approvals, false).await
                {
                    return (outcomes, Err(err));
                }
                *patches += usize::from(applied.patched);
                if cx.mode == crate::config::Mode::DryRun
                    && matches!(
                        &applied.announce,
                        Announce::Judged {
                            verdict: crate::decide::Verdict::Alert,
                            ..
                        }
                    )
                    && let Err(e) = super::dry_run::journal_plan(
                        cx,
                        state,
                        Current::K8s(index.model()),
                        &key,
                        approvals,
                    )
                    .await
                {
                    return (outcomes, Err(e));
                }
                let object = change.current.as_ref().or(change.previous.as_ref());
                outcomes.push((object.map(reference), applied.announce));
            }
            Err(e) => return (outcomes, Err(e)),
        }
    }
    (outcomes, Ok(()))
}

/// Runs one cluster's loop over `stream` (its watch events, from
/// `watch_cluster` or, in tests, made by hand) until the stream ends or the
/// operator shuts down; `recorder` publishes Events (None: no Events)
/// through a writer task of their own ([`events`](super::events)).
pub async fn k8s_loop(
    cx: SourceCtx,
    stream: impl futures_util::Stream<Item = KindEvent>,
    recorder: Option<Recorder>,
) {
    k8s_loop_with(cx, stream, recorder, Extras::default()).await
}

/// What a cluster loop does beyond judging: revert with `client` (used only
/// when the source's mode is `enforce`), and attribute each judged change
/// with `hub`'s suggestions and audit events (src/operator/attribution.rs).
#[derive(Default)]
pub struct Extras {
    pub client: Option<kube::Client>,
    pub hub: Option<std::sync::Arc<super::attribution::Hub>>,
}

/// [`k8s_loop`] with its [`Extras`].
pub async fn k8s_loop_with(
    cx: SourceCtx,
    stream: impl futures_util::Stream<Item = KindEvent>,
    recorder: Option<Recorder>,
    Extras { client, hub }: Extras,
) {
    let span = source::span(&cx);
    async move {
        let enforcer = match client {
            Some(c) if cx.mode == crate::config::Mode::Enforce => Some(
                super::enforce::Enforcer::spawn(&cx, super::enforce::Reverter::K8s(c)),
            ),
            _ => None,
        };
        if let Some(hub) = &hub {
            super::attribution::count_from_zero(&cx, hub);
        }
        let events = recorder.map(|r| {
            events::spawn(
                r,
                &cx.name,
                cx.metrics.clone(),
                events::QUEUE,
                events::PUBLISH_TIMEOUT,
            )
            .0
        });
        // How often lapsed approvals are looked for.
        let mut expiry = tokio::time::interval(std::time::Duration::from_secs(1));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut l = ClusterLoop {
            cx,
            index: LiveIndex::new(),
            state: None,
            patches: 0,
            approvals: Default::default(),
            retry: Retry::default(),
            unreadable: BTreeSet::new(),
            events,
            enforcer,
            review_copy: Default::default(),
            attribution: hub.map(super::attribution::LoopAttribution::new),
        };
        let mut audit_seen = l.attribution.as_ref().map(|a| a.hub().watch_audit());
        tokio::pin!(stream);
        loop {
            let waiting = l.attribution.as_ref().and_then(|a| a.next_deadline());
            tokio::select! {
                _ = expiry.tick() => l.on_expiry_tick().await,
                changed = super::attribution::audit_arrived(audit_seen.as_mut()) => {
                    if changed
                        && let Some(a) = l.attribution.as_mut()
                    {
                        a.retry_waiting(&l.cx).await;
                    }
                }
                () = retry_due(waiting) => {
                    if let Some(a) = l.attribution.as_mut() {
                        a.give_up_waiting(&l.cx, tokio::time::Instant::now());
                    }
                }
                event = stream.next() => match event {
                    Some(event) => l.on_event(event).await,
                    None => break,
                },
                () = retry_due(l.retry.at) => l.on_retry().await,
                Some(done) = next_done(l.enforcer.as_mut()) => l.on_reverted(done).await,
                changed = l.cx.recording.changed() => {
                    if changed.is_err() { break; }
                    l.on_recording_changed().await;
                }
                cmd = l.cx.commands.recv() => match cmd {
                    Some(cmd) => l.on_command(cmd).await,
                    None => break,
                },
                _ = l.cx.shutdown.changed() => break,
            }
        }
    }
    .instrument(span)
    .await
}

/// Becomes the recorder: rebuild the judged state and judge every object that
/// differs from the baseline (what the journal holds is not recorded again).
/// Returns what was journaled, to announce, with the result.
async fn takeover(
    cx: &SourceCtx,
    state: &mut Option<SourceState>,
    index: &LiveIndex,
    attribution: Option<&mut super::attribution::LoopAttribution>,
) -> (Outcomes, Result<(), Error>) {
    let mut outcomes = Vec::new();
    let result = takeover_into(cx, state, index, &mut outcomes, attribution).await;
    (outcomes, result)
}

async fn takeover_into(
    cx: &SourceCtx,
    state: &mut Option<SourceState>,
    index: &LiveIndex,
    outcomes: &mut Outcomes,
    mut attribution: Option<&mut super::attribution::LoopAttribution>,
) -> Result<(), Error> {
    let current = index.model();
    let mut loaded =
        source::load_state(cx, || SourceSnapshot::kubernetes(&cx.name, current.clone())).await?;
    let keys = source::differing_keys(Current::of(&loaded.baseline.data), Current::K8s(current));
    let differing: BTreeSet<ObjectKey> = keys.iter().cloned().collect();
    for (key, what) in source::reconcile_open(cx, &mut loaded, &differing).await? {
        if let ObjectKey::K8s(k) = &key {
            outcomes.push((current.get(k).map(reference), what));
        }
    }
    for key in keys {
        let ObjectKey::K8s(k) = &key else { continue };
        // An unreadable object is unknown, not removed from the baseline.
        if index.is_rejected(k) {
            continue;
        }
        let object = current.get(k);
        let written = written_at(object);
        // Changes made while nobody recorded are attributed too: the
        // suggestions are in the journal, and audit events may still come.
        let hook = attribution
            .as_deref_mut()
            .map(|a| a.hook(cx, &loaded, object, written));
        let judged = source::judge_one(cx, &mut loaded, Current::K8s(current), &key, written);
        let what = match hook {
            Some(hook) => super::outcome::ATTRIBUTOR.scope(hook, judged).await,
            None => judged.await,
        }?
        .announce;
        if let Some(a) = attribution.as_deref_mut() {
            a.judged(cx, &key, object, written, &what);
        }
        outcomes.push((object.map(reference), what));
    }
    outcome::update_open_gauges(&cx.outcome_cx(), &loaded);
    *state = Some(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::operator::store::StoreHandle;
    use crate::operator::{Health, StoreStatus};
    use crate::snapshot::Platform;
    use serde_json::json;
    use std::sync::Arc;
    use tokio::sync::{mpsc, watch};

    fn list_events(objects: &[(RbacKind, serde_json::Value)]) -> Vec<KindEvent> {
        let mut events = Vec::new();
        for kind in RbacKind::ALL {
            events.push(KindEvent::Init { kind });
            for (k, object) in objects.iter().filter(|(k, _)| *k == kind) {
                events.push(KindEvent::InitApply {
                    kind: *k,
                    object: object.clone(),
                });
            }
            events.push(KindEvent::InitDone { kind });
        }
        events
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hand_made_watch_stream_is_judged_and_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(&[("lab".into(), "kubernetes")]).unwrap();
        let store = StoreHandle::new(dir.path().join("store"), metrics.clone());
        store.open().await.unwrap();
        let health = Health::new(["lab".to_owned()], metrics.clone());
        health.set_store(StoreStatus::Open);
        let (_recording_tx, recording) = watch::channel(true);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let (_commands_tx, commands) = mpsc::channel(1);
        let catalog = crate::grants::catalog::Catalog::embedded();
        let cx = SourceCtx {
            name: "lab".into(),
            platform: Platform::Kubernetes,
            mode: crate::config::Mode::Detect,
            allow: Arc::new(Vec::new()),
            revert: Arc::default(),
            metrics: metrics.clone(),
            store: store.clone(),
            health: health.clone(),
            recording,
            commands,
            shutdown,
            catalog,
            risk_sets: Arc::new(crate::classify::aws::RiskSets::new(catalog)),
        };
        let admin = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "admin-all", "resourceVersion": "1"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "agent-is-admin", "resourceVersion": "2"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin-all"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "default"}]});
        let mut events = list_events(&[(RbacKind::ClusterRole, admin)]);
        events.push(KindEvent::Apply {
            kind: RbacKind::ClusterRoleBinding,
            object: binding,
        });
        k8s_loop(cx, futures_util::stream::iter(events), None).await;

        assert!(health.is_recording(), "{:?}", health.problems());
        let records = store.source_records("lab").await.unwrap();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["baseline", "change"]);
        let change = &records[1].body;
        assert_eq!(change["object"], "ClusterRoleBinding/agent-is-admin");
        assert_eq!(change["verdict"], "alert");
        assert_eq!(change["severity"], "critical");
        // What the operator wrote reads back typed and encodes to the same bytes.
        for r in &records {
            let body = crate::operator::records::Body::of_record(r)
                .unwrap()
                .unwrap();
            let (kind, again) = body.encode().unwrap();
            assert_eq!(kind, r.kind);
            let canonical = crate::store::record::canonical_json;
            assert_eq!(canonical(&again), canonical(&r.body));
        }
        let page = metrics.render().unwrap();
        assert!(
            page.contains("permdrift_open_widening{severity=\"critical\",source=\"lab\"} 1"),
            "{page}"
        );
    }

    #[test]
    fn a_judged_changes_event_says_who_and_which_suggestion_in_one_line() {
        let mut change: crate::report::Change = serde_json::from_value(json!({
            "source": "lab", "platform": "kubernetes", "change": "added",
            "object": {"kind": "ClusterRoleBinding", "name": "x"},
            "direction": "widening", "severity": "high", "risks": [],
            "gained_count": 0, "gained": [], "lost_count": 0, "lost": [],
            "text_diff": "", "fingerprint": "f"
        }))
        .unwrap();
        change.attribution = Some(Some(crate::attribution::Attribution {
            kind: crate::attribution::AttributionKind::AgentSuggested,
            actor: Some(crate::attribution::Actor {
                username: Some("priya".into()),
                ..Default::default()
            }),
            agent: Some("devhelper".into()),
            suggestion: Some("eng-help-1".into()),
            confidence: Some(crate::attribution::Confidence::Exact),
            evidence: Vec::new(),
            beyond: Vec::new(),
        }));
        let what = Announce::Judged {
            change: Box::new(change),
            verdict: crate::decide::Verdict::Alert,
            reason: "unapproved".into(),
        };
        let note = event_for(&what).and_then(|e| e.note).unwrap();
        assert!(
            note.ends_with(
                " · by agent-suggested · suggestion eng-help-1 · agent devhelper · exact · by priya"
            ),
            "{note}"
        );
        assert!(!note.contains('\n'), "{note}");
    }

    #[test]
    fn event_notes_are_cut_at_a_character_boundary() {
        let what = Announce::Closed {
            object: "é".repeat(700),
            reason: "restored",
        };
        let note = event_for(&what).and_then(|e| e.note).unwrap();
        assert!(note.len() <= 1000 && note.len() > 990, "{}", note.len());
        assert!(event_for(&Announce::Nothing).is_none());
    }
}
