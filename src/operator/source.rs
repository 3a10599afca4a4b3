//! A source's loop: its current state, and (while this replica records) its
//! judged state.
//!
//! Fresh state comes in (an AWS poll here; a cluster's watch events in
//! `k8s_loop`); changed objects are judged against the baseline and the
//! outcomes recorded. On becoming the recorder the baseline and open
//! widenings are rebuilt from the journal (or the first complete snapshot
//! becomes the baseline), and every object that differs from the baseline is
//! judged once: what the journal already holds is recognised by fingerprint
//! and not recorded again.

use super::outcome::{self, Announce, Context};
use super::records;
use super::store::StoreHandle;
use super::{Command, Error, Health, Recording, now, unix_seconds};
use crate::classify::aws::RiskSets;
use crate::config::{AllowRule, AwsAccess, Mode};
use crate::decide::{ObjectKey, Outcome, Policy, SourceState};
use crate::diff::DiffOptions;
use crate::grants::catalog::Catalog;
use crate::index::aws::AwsObject;
use crate::index::k8s::K8sObject;
use crate::metrics::Metrics;
use crate::snapshot::{Platform, SourceData, SourceSnapshot};
use crate::source::aws::{AwsSourceOptions, fetch_account};
use jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Patches since the last full baseline after which a new one is written.
const COMPACT_AFTER: usize = 10_000;

/// Everything a source loop shares with the rest of the operator.
pub struct SourceCtx {
    pub name: String,
    pub platform: Platform,
    pub mode: Mode,
    pub allow: Arc<Vec<AllowRule>>,
    /// Protected globs, `latent` and the rails (dry-run and enforce modes).
    pub revert: Arc<crate::config::RevertConfig>,
    pub metrics: Metrics,
    pub store: StoreHandle,
    pub health: Health,
    /// True while this replica leads and has the store open.
    pub recording: watch::Receiver<bool>,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
    pub catalog: &'static Catalog,
    pub risk_sets: Arc<RiskSets>,
}

impl SourceCtx {
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            source: &self.name,
            mode: self.mode,
            allow: &self.allow,
        }
    }

    pub fn outcome_cx(&self) -> Context<'_> {
        Context {
            source: &self.name,
            platform: self.platform,
            metrics: &self.metrics,
            store: &self.store,
        }
    }

    pub fn is_recording(&self) -> bool {
        *self.recording.borrow()
    }
}

/// Options for judging in the operator: counts stay exact, listed grants few.
pub fn judge_options() -> DiffOptions {
    DiffOptions {
        max_grants: 50,
        subject_grants: false,
        ..DiffOptions::default()
    }
}

/// Stores a full baseline, reads it back, and only then journals it:
/// nothing is judged against a baseline that cannot be read back.
async fn persist_baseline(
    cx: &SourceCtx,
    snapshot: &SourceSnapshot,
    reason: &str,
) -> Result<(), Error> {
    let digest = cx.store.put_snapshot(snapshot).await?;
    let back = cx
        .store
        .get_snapshot(&digest)
        .await
        .map_err(|e| Error::BaselineReadBack {
            reason: e.to_string(),
            source: Some(e),
        })?;
    if back.object_count() != snapshot.object_count() {
        return Err(Error::BaselineReadBack {
            reason: format!(
                "it holds {} objects, not {}",
                back.object_count(),
                snapshot.object_count()
            ),
            source: None,
        });
    }
    cx.store
        .append(
            &cx.name,
            &records::baseline(&digest, reason, snapshot.object_count()),
            now(),
        )
        .await?;
    Ok(())
}

/// The judged state of a source: the baseline from the journal (the last full
/// baseline plus later patches) and its open widenings; or, for a source the
/// store has never seen, the current state as the first baseline. `first`
/// makes that snapshot; it is called only then (copying a large model is not
/// free).
pub async fn load_state(
    cx: &SourceCtx,
    first: impl FnOnce() -> SourceSnapshot,
) -> Result<SourceState, Error> {
    let history = cx.store.source_records(&cx.name).await?;
    let replayed = records::replay(&history)?;
    let Some(digest) = replayed.baseline_digest else {
        let mut first = first();
        first.name = cx.name.clone();
        persist_baseline(cx, &first, "first").await?;
        tracing::info!(
            objects = first.object_count(),
            "first complete snapshot is the baseline"
        );
        return Ok(SourceState::new(first));
    };
    let mut baseline =
        cx.store
            .get_snapshot(&digest)
            .await
            .map_err(|source| Error::BaselineMissing {
                digest: digest.clone(),
                source,
            })?;
    baseline.name = cx.name.clone();
    for (key, raw) in replayed.patches {
        patch(&mut baseline.data, &key, raw)?;
    }
    let mut state = SourceState::new(baseline);
    state.open = replayed.open;
    tracing::info!(open = state.open.len(), "baseline rebuilt from the journal");
    Ok(state)
}

fn patch(data: &mut SourceData, key: &ObjectKey, raw: Option<Value>) -> Result<(), Error> {
    let unreadable = |e: Box<dyn std::error::Error + Send + Sync>| Error::Patch {
        key: key.to_string(),
        source: e,
    };
    match (data, key, raw) {
        (SourceData::Kubernetes(m), ObjectKey::K8s(_), Some(raw)) => {
            m.insert(K8sObject::from_raw(raw).map_err(|e| unreadable(Box::new(e)))?);
        }
        (SourceData::Kubernetes(m), ObjectKey::K8s(k), None) => {
            m.remove(k);
        }
        (SourceData::Aws(m), ObjectKey::Aws(k), Some(raw)) => {
            m.insert(
                k.clone(),
                AwsObject::from_raw(k.kind, raw).map_err(|e| unreadable(Box::new(e)))?,
            );
        }
        (SourceData::Aws(m), ObjectKey::Aws(k), None) => {
            m.remove(k);
        }
        _ => return Err(unreadable("platform mismatch".into())),
    }
    Ok(())
}

/// A source's current state, as the loops hold it.
#[derive(Clone, Copy)]
pub enum Current<'a> {
    K8s(&'a crate::index::k8s::K8sModel),
    Aws(&'a crate::index::aws::AwsModel),
}

impl<'a> Current<'a> {
    pub fn of(data: &'a SourceData) -> Self {
        match data {
            SourceData::Kubernetes(m) => Current::K8s(m),
            SourceData::Aws(m) => Current::Aws(m),
        }
    }
}

/// Keys whose objects differ between two states (raw text), in order.
pub fn differing_keys(a: Current<'_>, b: Current<'_>) -> Vec<ObjectKey> {
    match (a, b) {
        (Current::K8s(x), Current::K8s(y)) => {
            let keys: BTreeSet<_> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .filter(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => p != q,
                    _ => true,
                })
                .map(|k| ObjectKey::K8s(k.clone()))
                .collect()
        }
        (Current::Aws(x), Current::Aws(y)) => {
            let keys: BTreeSet<_> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .filter(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => p.raw != q.raw,
                    _ => true,
                })
                .map(|k| ObjectKey::Aws(k.clone()))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The current object's text, for the journal.
pub fn current_raw(current: Current<'_>, key: &ObjectKey) -> Option<Value> {
    match (current, key) {
        (Current::K8s(m), ObjectKey::K8s(k)) => m.get(k).map(K8sObject::value),
        (Current::Aws(m), ObjectKey::Aws(k)) => m.get(k).map(|o| o.raw.clone()),
        _ => None,
    }
}

/// Judges one object and records the outcome. Returns what to announce and
/// whether the baseline took a patch.
pub async fn judge_one(
    cx: &SourceCtx,
    state: &mut SourceState,
    current: Current<'_>,
    key: &ObjectKey,
    written_at: Option<Timestamp>,
) -> Result<outcome::Applied, Error> {
    let t = now();
    let outcome = match (current, key) {
        (Current::K8s(m), ObjectKey::K8s(k)) => {
            state.judge_k8s(m, k, &cx.policy(), t, &judge_options())
        }
        (Current::Aws(m), ObjectKey::Aws(k)) => {
            let catalog = (cx.catalog, &*cx.risk_sets);
            state.judge_aws(m, catalog, k, &cx.policy(), t, &judge_options())
        }
        _ => Outcome::AlreadyOpen,
    };
    let raw = current_raw(current, key);
    let applied = outcome::apply(&cx.outcome_cx(), state, key, outcome, raw, t, written_at).await?;
    if let Announce::Judged {
        change,
        verdict,
        reason,
    } = &applied.announce
    {
        tracing::info!(
            object = %change.object.display(),
            change = change.change.as_str(),
            direction = change.direction.as_str(),
            severity = change.severity.as_str(),
            verdict = verdict.as_str(),
            reason = %reason,
            witness = change.witness.as_ref().map(|w| w.explanation.as_str()).unwrap_or(""),
            "judged"
        );
    }
    Ok(applied)
}

/// The reason an open widening closes when it was undone while this
/// replica was not watching (a restart, a takeover, a re-list).
pub const RESTORED_WHILE_DOWN: &str = "restored-while-down";

/// After a restart or re-list: closes the open widenings whose objects match
/// the baseline again (`differing` holds every key that still differs or is
/// unknown). Returns what closed, for Events.
pub async fn reconcile_open(
    cx: &SourceCtx,
    state: &mut SourceState,
    differing: &BTreeSet<ObjectKey>,
) -> Result<Vec<(ObjectKey, outcome::Announce)>, Error> {
    let t = now();
    let mut closed = Vec::new();
    for (key, open) in state.restored_while_down(differing) {
        outcome::close(&cx.outcome_cx(), &key, &open, RESTORED_WHILE_DOWN, t).await?;
        tracing::info!(object = %open.object, "open widening was undone while not watched");
        closed.push((
            key,
            outcome::Announce::Closed {
                object: open.object,
                reason: RESTORED_WHILE_DOWN,
            },
        ));
    }
    Ok(closed)
}

/// After a full baseline grows too many patches, writes a new one.
pub async fn maybe_compact(
    cx: &SourceCtx,
    state: &SourceState,
    patches_since: &mut usize,
) -> Result<(), Error> {
    if *patches_since < COMPACT_AFTER {
        return Ok(());
    }
    persist_baseline(cx, &state.baseline, "compacted").await?;
    *patches_since = 0;
    Ok(())
}

/// Accepts every open widening into the baseline (the `baseline accept` API),
/// journaling `by` (the authenticated caller) with each.
pub async fn accept(
    cx: &SourceCtx,
    state: &mut SourceState,
    current: Current<'_>,
    by: &str,
) -> Result<usize, Error> {
    let t = now();
    let accepted = match current {
        Current::K8s(m) => state.accept_all_k8s(m),
        Current::Aws(m) => state.accept_all_aws(m),
    };
    for (key, open) in &accepted {
        let raw = current_raw(current, key);
        cx.store
            .append(&cx.name, &records::accepted_patch(key, raw, by), t)
            .await?;
        outcome::close(&cx.outcome_cx(), key, open, "accepted", t).await?;
    }
    outcome::update_open_gauges(&cx.outcome_cx(), state);
    Ok(accepted.len())
}

/// Reads one AWS account into a source snapshot.
async fn poll_aws(name: &str, options: &AwsSourceOptions) -> Result<SourceSnapshot, Error> {
    let quiet = |_: crate::source::aws::AwsProgress| {};
    let fetch = fetch_account(options, &quiet)
        .await
        .map_err(|e| Error::Poll(Box::new(e)))?;
    let mut source = crate::input::account_source(
        &fetch.account_id,
        &fetch.document,
        crate::input::InputOptions::default(),
    )
    .map_err(|e| Error::Poll(Box::new(e)))?;
    source.name = name.to_owned();
    source.meta.collected_at = Some(now().to_string());
    Ok(source)
}

/// The loop of one AWS account: poll, judge what changed, sleep; its log
/// lines carry the source's span.
pub async fn aws_loop(cx: SourceCtx, access: AwsAccess) {
    let span = span(&cx);
    poll_loop(cx, access).instrument(span).await
}

/// The span a source's loop runs in: every log line of the source (and of
/// the tasks it starts) names it and its platform.
pub fn span(cx: &SourceCtx) -> tracing::Span {
    tracing::info_span!("source", source = %cx.name, platform = cx.platform.as_str())
}

async fn poll_loop(mut cx: SourceCtx, access: AwsAccess) {
    let options = AwsSourceOptions {
        profile: access.profile.clone(),
        region: access.region.clone(),
        endpoint_url: access.endpoint_url.clone(),
        assume_role: access.assume_role.clone(),
        max_attempts: crate::source::aws::DEFAULT_MAX_ATTEMPTS,
    };
    let mut current: Option<SourceSnapshot> = None;
    let mut state: Option<SourceState> = None;
    let mut patches = 0usize;
    let mut approvals = super::approvals::HeldApprovals::default();
    let mut enforcer: Option<super::enforce::Enforcer> = None;
    loop {
        let started = now();
        let clock = std::time::Instant::now();
        match poll_aws(&cx.name, &options).await {
            Ok(snapshot) => {
                let fetch_seconds = clock.elapsed().as_secs_f64();
                tracing::debug!(fetch_seconds, "polled");
                cx.metrics
                    .snapshot_duration
                    .with_label_values(&[cx.name.as_str(), cx.platform.as_str()])
                    .observe(fetch_seconds);
                cx.metrics
                    .source_up
                    .with_label_values(&[cx.name.as_str(), cx.platform.as_str()])
                    .set(1);
                cx.metrics
                    .snapshot_objects
                    .with_label_values(&[cx.name.as_str(), cx.platform.as_str()])
                    .set(i64::try_from(snapshot.object_count()).unwrap_or(i64::MAX));
                cx.metrics
                    .last_snapshot
                    .with_label_values(&[cx.name.as_str()])
                    .set(unix_seconds(now()));
                cx.health.set_complete(&cx.name, true);
                let previous = current.replace(snapshot);
                if let Some(snapshot) = &current {
                    let took_over = state.is_none();
                    let judged = match ensure_enforcer(&cx, &options, &mut enforcer).await {
                        Ok(()) => {
                            judge_poll(
                                &cx,
                                &mut state,
                                previous.as_ref(),
                                snapshot,
                                started,
                                &mut patches,
                                (&approvals, enforcer.as_mut().filter(|_| !took_over)),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    let judged = match (judged, &state) {
                        (Ok(()), Some(s)) => {
                            super::approvals::refresh(&cx, s, &mut approvals).await
                        }
                        (other, _) => other,
                    };
                    // Enforce mode: after a takeover (approvals read back
                    // first) every open widening is planned; at every poll,
                    // lapsed approvals are.
                    let judged = match (judged, &state, enforcer.as_mut()) {
                        (Ok(()), Some(s), Some(e)) => {
                            let live = Current::of(&snapshot.data);
                            if took_over {
                                e.after_takeover(&cx, s, live, &approvals).await
                            } else {
                                e.on_tick(&cx, s, live, &approvals).await
                            }
                        }
                        (other, _, _) => other,
                    };
                    match judged {
                        Ok(()) if state.is_some() => {
                            cx.health.set_recording(&cx.name, Recording::Ok)
                        }
                        Ok(()) => {}
                        Err(e) => {
                            cx.health.set_recording(
                                &cx.name,
                                Recording::Failed(format!("{e} (retrying at the next poll)")),
                            );
                            state = None;
                            approvals = Default::default();
                        }
                    }
                }
            }
            Err(e) => {
                cx.metrics
                    .source_up
                    .with_label_values(&[cx.name.as_str(), cx.platform.as_str()])
                    .set(0);
                tracing::warn!(error = %e, "poll failed");
            }
        }
        let sleep = tokio::time::sleep(access.poll_interval.0);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                changed = cx.recording.changed() => {
                    if changed.is_err() { return; }
                    if !cx.is_recording() {
                        state = None;
                        approvals = Default::default();
                        if let Some(e) = enforcer.as_mut() {
                            e.reset();
                        }
                        cx.health.set_recording(&cx.name, Recording::Idle);
                        outcome::clear_open_gauges(&cx.outcome_cx());
                    } else {
                        break; // judge at once on becoming the recorder
                    }
                }
                cmd = cx.commands.recv() => match cmd {
                    Some(Command::AcceptBaseline { by, reply }) => {
                        let answer = match (&mut state, &current) {
                            (Some(s), Some(c)) => accept(&cx, s, Current::of(&c.data), &by)
                                .await
                                .inspect(|accepted| patches += accepted),
                            _ => Err(Error::NotRecording("not the leader, or no snapshot yet")),
                        };
                        let _ = reply.send(answer);
                    }
                    Some(Command::Approve { offer, reply }) => {
                        let answer = match (&state, &current) {
                            (Some(s), Some(c)) => {
                                super::approvals::offer(&cx, s, Current::of(&c.data), &mut approvals, *offer)
                                    .await
                            }
                            _ => Err(Error::NotRecording("not the leader, or no snapshot yet")),
                        };
                        let _ = reply.send(answer);
                    }
                    // An AWS source has no admission gate: dropping the
                    // review lets the handler allow it unjudged.
                    Some(Command::Admit(_)) => {}
                    None => return,
                },
                Some(done) = next_done(enforcer.as_mut()) => {
                    if let (Some(e), Some(s), Some(c)) = (enforcer.as_mut(), state.as_mut(), &current) {
                        e.finished(&done);
                        let live = Current::of(&c.data);
                        let judged = match e.judge(&cx, s, live, &done.key, None).await {
                            Ok(_) => e.enforce(&cx, s, live, &done.key, &approvals, false).await,
                            Err(err) => Err(err),
                        };
                        if let Err(err) = judged {
                            tracing::warn!(error = %err, "could not judge a reverted object");
                        }
                    }
                }
                _ = cx.shutdown.changed() => return,
            }
        }
    }
}

/// In enforce mode, the IAM client the reverter runs with (built once).
async fn ensure_enforcer(
    cx: &SourceCtx,
    options: &AwsSourceOptions,
    enforcer: &mut Option<super::enforce::Enforcer>,
) -> Result<(), Error> {
    if cx.mode != Mode::Enforce || enforcer.is_some() {
        return Ok(());
    }
    let client = crate::source::aws::iam_client(options)
        .await
        .map_err(|e| Error::Poll(Box::new(e)))?;
    *enforcer = Some(super::enforce::Enforcer::spawn(
        cx,
        super::enforce::Reverter::Iam(client),
    ));
    Ok(())
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

async fn judge_poll(
    cx: &SourceCtx,
    state: &mut Option<SourceState>,
    previous: Option<&SourceSnapshot>,
    current: &SourceSnapshot,
    started: Timestamp,
    patches: &mut usize,
    // The approvals counted so far, and enforce mode's side of the loop.
    (approvals, mut enforcer): (
        &super::approvals::HeldApprovals,
        Option<&mut super::enforce::Enforcer>,
    ),
) -> Result<(), Error> {
    if !cx.is_recording() || !current.is_complete() {
        return Ok(());
    }
    let keys = match (state.as_ref(), previous) {
        (Some(_), Some(prev)) => {
            differing_keys(Current::of(&prev.data), Current::of(&current.data))
        }
        _ => {
            let mut loaded = load_state(cx, || current.clone()).await?;
            let keys = differing_keys(
                Current::of(&loaded.baseline.data),
                Current::of(&current.data),
            );
            let differing: BTreeSet<ObjectKey> = keys.iter().cloned().collect();
            reconcile_open(cx, &mut loaded, &differing).await?;
            *state = Some(loaded);
            keys
        }
    };
    let Some(s) = state.as_mut() else {
        return Ok(());
    };
    let clock = std::time::Instant::now();
    let changed = keys.len();
    for key in keys {
        let live = Current::of(&current.data);
        let applied = match enforcer.as_deref_mut() {
            // Judged when its revert ends.
            Some(e) if e.defers(&key) => continue,
            Some(e) => e.judge(cx, s, live, &key, Some(started)).await?,
            None => judge_one(cx, s, live, &key, Some(started)).await?,
        };
        if let Some(e) = enforcer.as_deref_mut() {
            e.enforce(cx, s, live, &key, approvals, false).await?;
        }
        *patches += usize::from(applied.patched);
        if cx.mode == Mode::DryRun
            && matches!(
                &applied.announce,
                Announce::Judged {
                    verdict: crate::decide::Verdict::Alert,
                    ..
                }
            )
        {
            super::dry_run::journal_plan(cx, s, Current::of(&current.data), &key, approvals)
                .await?;
        }
    }
    outcome::update_open_gauges(&cx.outcome_cx(), s);
    tracing::debug!(
        objects = current.object_count(),
        changed,
        judge_seconds = clock.elapsed().as_secs_f64(),
        "poll judged"
    );
    maybe_compact(cx, s, patches).await
}
