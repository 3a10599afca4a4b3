//! Enforce mode: the leader reverts the widenings nobody approved.
//!
//! After a source loop judges an object whose widening is open and neither
//! allow-listed nor approved, the change is diffed again with no grant cap
//! and planned with the same pure planner as dry-run (src/revert/plan.rs);
//! a plan that reverts becomes a [`Job`] on a bounded queue, so the loop is
//! never held up by a slow API. A supervised worker task per source takes
//! jobs one at a time: while this replica records, it asks the rails
//! (src/revert/rails.rs) first, journals a `revert-intent` record, runs the
//! operations with the reverter (src/revert/k8s.rs, src/revert/aws.rs)
//! retrying with backoff (src/revert/retry.rs), journals the `revert-result`
//! and tells the loop. The loop closes the widening with the reason
//! `reverted` once it sees the baseline again. Skipped plans (protected,
//! approved, ...) are journaled as `revert-plan` records with mode `enforce`.
//! On takeover, an intent without a result is settled from the live state
//! ([`unfinished`]): `already-restored` when the widening is gone, else
//! `interrupted` and planned afresh, never run twice blind.

use super::approvals::{self, HeldApprovals};
use super::outcome::{self, Announce, Applied};
use super::records::{Body, RevertIntentBody, RevertPlanBody, RevertResultBody};
use super::source::{self, Current, SourceCtx};
use super::store::StoreHandle;
use super::{Error, now};
use crate::decide::{ObjectKey, Outcome as Decided, SourceState};
use crate::metrics::Metrics;
use crate::revert::plan::{Live, Ops, Outcome, PlanRules, plan_live};
use crate::revert::rails::{Gate, Rails};
use crate::revert::retry::{self, Backoff};
use crate::store::Record;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::{mpsc, watch};

/// The `outcome` label of `permdrift_reverts_total`, and of `revert-result`
/// records.
pub const OUTCOMES: [&str; 4] = ["reverted", "failed", "skipped", "already-restored"];
/// The `reason` labels of `permdrift_revert_failures_total`: the reverters'
/// error labels (src/revert/k8s.rs, src/revert/aws.rs) and a full queue.
/// Each starts at 0, so `PermdriftRevertFailed` sees the first failure.
pub const FAILURE_REASONS: [&str; 11] = [
    "forbidden",
    "conflict",
    "throttled",
    "not-found",
    "refused",
    "transport",
    "no-precondition",
    "bad-object",
    "unsupported",
    "interrupted",
    "queue-full",
];

/// The reason a widening closes when enforce mode reverted it.
pub const REVERTED: &str = "reverted";

/// The `revert-result` reason of an intent a restart cut short while the
/// widening still stands (it is planned again from the live state).
pub const INTERRUPTED: &str = "interrupted";

/// Jobs waiting for the worker; more are dropped (and planned again when
/// the object next changes or the source is taken over).
const QUEUE: usize = 64;

/// How often the flapping gauge is brought up to date between jobs.
const FLAPPING_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// What runs the operations: the source's own API client.
#[derive(Clone)]
pub enum Reverter {
    K8s(kube::Client),
    Iam(aws_sdk_iam::Client),
}

/// One planned revert, from the loop to the worker.
#[derive(Debug)]
pub struct Job {
    pub key: ObjectKey,
    pub object: String,
    pub digest: String,
    pub version: Option<String>,
    pub ops: Ops,
}

/// The worker's answer: the revert of `key` ended (`reverted`: its
/// operations all succeeded).
#[derive(Debug)]
pub struct Done {
    pub key: ObjectKey,
    pub reverted: bool,
    /// Held back by the rate limit until then: planned again at that time.
    pub retry_at: Option<Timestamp>,
}

/// The loop's side of enforce mode.
pub struct Enforcer {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    /// Objects with a job queued or running: their changes wait for its end.
    inflight: BTreeSet<ObjectKey>,
    /// The version (resourceVersion, or the IAM object's text) last planned
    /// per object: the same version is not planned twice.
    attempted: BTreeMap<ObjectKey, Option<String>>,
    /// Reverted, not yet seen back at baseline: closes as `reverted`.
    reverted: BTreeSet<ObjectKey>,
    /// (object, digest) pairs approved at the last look: a pair that drops
    /// out has lapsed, and its widening is planned again.
    approved: BTreeSet<(String, String)>,
    /// Objects the rate limit held back, and when they may go.
    waiting: BTreeMap<ObjectKey, Timestamp>,
}

/// What identifies the version of an object that was planned.
fn version(current: Current<'_>, key: &ObjectKey) -> Option<String> {
    match (current, key) {
        (Current::K8s(m), ObjectKey::K8s(k)) => m
            .get(k)
            .and_then(|o| crate::model::k8s::resource_version(&o.value()).map(str::to_owned)),
        (Current::Aws(m), ObjectKey::Aws(k)) => m.get(k).map(|o| o.raw.to_string()),
        _ => None,
    }
}

fn live(current: Current<'_>) -> Live<'_> {
    match current {
        Current::K8s(m) => Live::K8s(m),
        Current::Aws(m) => Live::Aws(m),
    }
}

impl Enforcer {
    /// Starts the source's revert worker (supervised: a panic fails
    /// `/healthz`) and returns the loop's side of it.
    pub fn spawn(cx: &SourceCtx, reverter: Reverter) -> Enforcer {
        let (jobs_tx, jobs) = mpsc::channel(QUEUE);
        let (done_tx, done) = mpsc::channel(QUEUE);
        let worker = Worker {
            source: cx.name.clone(),
            store: cx.store.clone(),
            metrics: cx.metrics.clone(),
            recording: cx.recording.clone(),
            reverter,
            rails: Rails::new(&cx.revert),
            backoff: Backoff::default(),
            jobs,
            done: done_tx,
        };
        let span = source::span(cx);
        super::supervise::spawn_source(
            format!("{}/reverter", cx.name),
            cx.health.clone(),
            cx.shutdown.clone(),
            tracing::Instrument::instrument(worker.run(), span),
        );
        Enforcer {
            jobs: jobs_tx,
            done,
            inflight: BTreeSet::new(),
            attempted: BTreeMap::new(),
            reverted: BTreeSet::new(),
            approved: BTreeSet::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// The next finished revert (pending forever while none is).
    pub async fn next_done(&mut self) -> Option<Done> {
        self.done.recv().await
    }

    /// Whether `key`'s changes wait for a revert in flight.
    pub fn defers(&self, key: &ObjectKey) -> bool {
        self.inflight.contains(key)
    }

    /// A revert ended: its object's changes are judged again from now on.
    pub fn finished(&mut self, done: &Done) {
        self.inflight.remove(&done.key);
        if done.reverted {
            self.reverted.insert(done.key.clone());
        }
        if let Some(at) = done.retry_at {
            self.waiting.insert(done.key.clone(), at);
        }
    }

    /// This replica stopped recording: what it planned is forgotten (the
    /// next leader plans from the journal and the live state).
    pub fn reset(&mut self) {
        self.attempted.clear();
        self.reverted.clear();
        self.approved.clear();
        self.waiting.clear();
    }

    /// Judges one object like `source::judge_one`, except that a widening
    /// this worker reverted closes as `reverted`.
    pub async fn judge(
        &mut self,
        cx: &SourceCtx,
        state: &mut SourceState,
        current: Current<'_>,
        key: &ObjectKey,
        written_at: Option<Timestamp>,
    ) -> Result<Applied, Error> {
        if !self.reverted.contains(key) {
            return source::judge_one(cx, state, current, key, written_at).await;
        }
        let t = now();
        let decided = match (current, key) {
            (Current::K8s(m), ObjectKey::K8s(k)) => {
                state.judge_k8s(m, k, &cx.policy(), t, &source::judge_options())
            }
            (Current::Aws(m), ObjectKey::Aws(k)) => {
                let catalog = (cx.catalog, &*cx.risk_sets);
                state.judge_aws(m, catalog, k, &cx.policy(), t, &source::judge_options())
            }
            _ => Decided::AlreadyOpen,
        };
        match decided {
            Decided::Restored { closed: Some(open) } => {
                self.reverted.remove(key);
                self.attempted.remove(key);
                outcome::close(&cx.outcome_cx(), key, &open, REVERTED, t).await?;
                outcome::update_open_gauges(&cx.outcome_cx(), state);
                tracing::info!(object = %open.object, "reverted widening seen back at baseline");
                Ok(Applied {
                    announce: Announce::Closed {
                        object: open.object,
                        reason: REVERTED,
                    },
                    records: 1,
                    patched: false,
                })
            }
            other => {
                let raw = source::current_raw(current, key);
                outcome::apply(&cx.outcome_cx(), state, key, other, raw, t, written_at).await
            }
        }
    }

    /// After `key` was judged: if its widening is open, plan its revert and
    /// queue it, or journal why nothing is planned. `force` plans a version
    /// planned before (an approval lapsed).
    pub async fn enforce(
        &mut self,
        cx: &SourceCtx,
        state: &SourceState,
        current: Current<'_>,
        key: &ObjectKey,
        held: &HeldApprovals,
        force: bool,
    ) -> Result<(), Error> {
        if !cx.is_recording() || self.inflight.contains(key) || !state.open.contains_key(key) {
            return Ok(());
        }
        let version = version(current, key);
        if !force && self.attempted.get(key) == Some(&version) {
            return Ok(());
        }
        let Some(change) = approvals::uncapped_change(cx, state, current, key) else {
            return Ok(());
        };
        let t = now();
        let mut rules = PlanRules::from_config(&cx.revert, &cx.allow);
        rules.approved = approvals::approved_pairs(state, held, t);
        let planned = plan_live(&change, &state.baseline.data, live(current), &rules);
        self.attempted.insert(key.clone(), version.clone());
        match planned.outcome {
            Outcome::Revert(ops) if !ops.is_empty() => {
                let job = Job {
                    key: key.clone(),
                    object: planned.object,
                    digest: planned.digest,
                    version,
                    ops,
                };
                match self.jobs.try_send(job) {
                    Ok(()) => {
                        self.inflight.insert(key.clone());
                        self.reverted.remove(key);
                    }
                    Err(e) => {
                        // Planned again when the object next changes or at takeover.
                        self.attempted.remove(key);
                        tracing::warn!(object = %change.object.display(), error = %e,
                            "revert queue full or closed: not reverted now");
                        cx.metrics
                            .revert_failures
                            .with_label_values(&[cx.name.as_str(), "queue-full"])
                            .inc();
                    }
                }
                Ok(())
            }
            Outcome::Revert(_) => Ok(()),
            Outcome::Skip(skip) => {
                let body = RevertPlanBody {
                    key: key.clone(),
                    object: planned.object.clone(),
                    digest: planned.digest.clone(),
                    mode: "enforce".into(),
                    outcome: "skip".into(),
                    reason: skip.label().into(),
                    plan: serde_json::to_value(crate::revert::plan::Planned {
                        outcome: Outcome::Skip(skip.clone()),
                        ..planned
                    })
                    .map_err(Error::Encode)?,
                };
                cx.store
                    .append(&cx.name, &Body::RevertPlan(body), t)
                    .await?;
                tracing::info!(object = %change.object.display(), reason = skip.label(),
                    "enforce: widening left in place");
                Ok(())
            }
        }
    }

    /// Every second (with the approvals just refreshed): widenings whose
    /// approval lapsed, and those the rate limit held back whose time came,
    /// are planned again.
    pub async fn on_tick(
        &mut self,
        cx: &SourceCtx,
        state: &SourceState,
        current: Current<'_>,
        held: &HeldApprovals,
    ) -> Result<(), Error> {
        let t = now();
        let due: Vec<ObjectKey> = self
            .waiting
            .iter()
            .filter(|(_, at)| **at <= t)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.waiting.remove(&key);
            self.enforce(cx, state, current, &key, held, true).await?;
        }
        let now_approved = approvals::approved_pairs(state, held, t);
        let lapsed: BTreeSet<&str> = self
            .approved
            .difference(&now_approved)
            .map(|(object, _)| object.as_str())
            .collect();
        let keys: Vec<ObjectKey> = state
            .open
            .iter()
            .filter(|(_, o)| lapsed.contains(o.object.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        self.approved = now_approved;
        for key in keys {
            tracing::info!(object = %key, "approval lapsed: the widening is planned again");
            self.enforce(cx, state, current, &key, held, true).await?;
        }
        Ok(())
    }

    /// After a takeover: settles intents a previous leader left without a
    /// result, then plans every open widening.
    pub async fn after_takeover(
        &mut self,
        cx: &SourceCtx,
        state: &SourceState,
        current: Current<'_>,
        held: &HeldApprovals,
    ) -> Result<(), Error> {
        self.reset();
        let records = cx.store.source_records(&cx.name).await?;
        for (seq, intent) in unfinished(&records) {
            let (outcome, reason) = settle(state.open.contains_key(&intent.key));
            let body = RevertResultBody {
                key: intent.key.clone(),
                object: intent.object.clone(),
                intent: Some(seq),
                outcome: outcome.into(),
                reason: reason.into(),
                error: None,
                tries: 0,
            };
            cx.store
                .append(&cx.name, &Body::RevertResult(body), now())
                .await?;
            cx.metrics
                .reverts
                .with_label_values(&[cx.name.as_str(), outcome])
                .inc();
            tracing::info!(object = %intent.object, outcome, "revert intent found without a result");
        }
        self.approved = approvals::approved_pairs(state, held, now());
        let open: Vec<ObjectKey> = state.open.keys().cloned().collect();
        for key in open {
            self.enforce(cx, state, current, &key, held, false).await?;
        }
        Ok(())
    }
}

/// Intents without a result, with their seq, oldest first. Pure.
pub fn unfinished(records: &[Record]) -> Vec<(u64, RevertIntentBody)> {
    let mut open: BTreeMap<u64, RevertIntentBody> = BTreeMap::new();
    for record in records {
        match Body::of_record(record) {
            Ok(Some(Body::RevertIntent(i))) => {
                open.insert(record.seq, i);
            }
            Ok(Some(Body::RevertResult(r))) => {
                if let Some(seq) = r.intent {
                    open.remove(&seq);
                }
            }
            _ => {}
        }
    }
    open.into_iter().collect()
}

/// How an intent without a result is settled, from whether its widening is
/// still open on the live state: gone means the revert (or someone) restored
/// it, so nothing runs again; still open means it is planned afresh. Pure.
pub fn settle(still_open: bool) -> (&'static str, &'static str) {
    if still_open {
        ("failed", INTERRUPTED)
    } else {
        ("already-restored", "already-restored")
    }
}

/// Runs one source's reverts, one at a time, leader only.
struct Worker {
    source: String,
    store: StoreHandle,
    metrics: Metrics,
    recording: watch::Receiver<bool>,
    reverter: Reverter,
    rails: Rails,
    backoff: Backoff,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Done>,
}

/// A failed revert: the error's metric label, its text, the tries made and
/// whether the object moved since it was planned (a fresh plan follows).
type Failure = (&'static str, String, u32, bool);

fn failure<E: retry::Classified + std::fmt::Display>(
    label: &'static str,
    f: retry::Failed<E>,
) -> Failure {
    let moved = f.error.retry() == crate::revert::Retry::Replan;
    (label, f.error.to_string(), f.tries, moved)
}

impl Worker {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(FLAPPING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = self.jobs.recv() => {
                    let Some(job) = job else { break };
                    let (reverted, retry_at) = match self.one(&job).await {
                        Ok(ended) => ended,
                        Err(e) => {
                            tracing::warn!(object = %job.object, error = %e,
                                "revert not journaled; nothing more is run for it now");
                            (false, None)
                        }
                    };
                    let done = Done { key: job.key, reverted, retry_at };
                    if self.done.send(done).await.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => self.publish_flapping(now()),
            }
        }
    }

    fn publish_flapping(&mut self, t: Timestamp) {
        let n = self.rails.flapping(t);
        self.metrics
            .revert_flapping
            .with_label_values(&[self.source.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .reverts
            .with_label_values(&[self.source.as_str(), outcome])
            .inc();
    }

    async fn journal(&self, body: RevertResultBody) -> Result<(), Error> {
        self.count(&body.outcome);
        self.store
            .append(&self.source, &Body::RevertResult(body), now())
            .await
            .map(|_| ())
    }

    /// Runs one job: whether every operation succeeded, and when to try
    /// again if the rate limit held it back.
    async fn one(&mut self, job: &Job) -> Result<(bool, Option<Timestamp>), Error> {
        if !*self.recording.borrow() {
            tracing::info!(object = %job.object, "not the leader: the revert is left to the leader");
            return Ok((false, None));
        }
        let t = now();
        let gate = self.rails.check(&job.object, t);
        self.publish_flapping(t);
        if gate != Gate::Go {
            tracing::warn!(object = %job.object, rail = gate.label(), "revert held back by a rail");
            self.journal(RevertResultBody {
                key: job.key.clone(),
                object: job.object.clone(),
                intent: None,
                outcome: "skipped".into(),
                reason: gate.label().into(),
                error: None,
                tries: 0,
            })
            .await?;
            let retry_at = match gate {
                Gate::RateLimited(at) => Some(at),
                _ => None,
            };
            return Ok((false, retry_at));
        }
        let intent = RevertIntentBody {
            key: job.key.clone(),
            object: job.object.clone(),
            digest: job.digest.clone(),
            resource_version: match job.key {
                ObjectKey::K8s(_) => job.version.clone(),
                ObjectKey::Aws(_) => None,
            },
            ops: serde_json::to_value(&job.ops).map_err(Error::Encode)?,
        };
        // No journal, no revert: the intent must be on disk before any write.
        let seq = self
            .store
            .append(&self.source, &Body::RevertIntent(intent), t)
            .await?;
        let result = self.execute(&job.ops).await;
        let reverted = result.is_ok();
        let body = match result {
            Ok(tries) => {
                self.rails.record(&job.object, now());
                tracing::info!(object = %job.object, tries, "reverted");
                RevertResultBody {
                    key: job.key.clone(),
                    object: job.object.clone(),
                    intent: Some(seq),
                    outcome: "reverted".into(),
                    reason: "reverted".into(),
                    error: None,
                    tries,
                }
            }
            Err((label, error, tries, true)) => {
                // Someone wrote the object after it was planned: the loop plans
                // that version afresh, so this is no failure to alert on.
                tracing::info!(object = %job.object, error = %error,
                    "the object moved since it was planned; planning again");
                RevertResultBody {
                    key: job.key.clone(),
                    object: job.object.clone(),
                    intent: Some(seq),
                    outcome: "skipped".into(),
                    reason: label.into(),
                    error: Some(error),
                    tries,
                }
            }
            Err((label, error, tries, false)) => {
                tracing::warn!(object = %job.object, reason = label, error = %error, tries,
                    "revert failed");
                self.metrics
                    .revert_failures
                    .with_label_values(&[self.source.as_str(), label])
                    .inc();
                RevertResultBody {
                    key: job.key.clone(),
                    object: job.object.clone(),
                    intent: Some(seq),
                    outcome: "failed".into(),
                    reason: label.into(),
                    error: Some(error),
                    tries,
                }
            }
        };
        self.journal(body).await?;
        self.publish_flapping(now());
        Ok((reverted, None))
    }

    /// Runs the operations with retries; the tries made, or the failure.
    async fn execute(&self, ops: &Ops) -> Result<u32, Failure> {
        let mut tries = 0u32;
        match (&self.reverter, ops) {
            (Reverter::K8s(client), Ops::K8s(ops)) => retry::run(&self.backoff, || {
                tries += 1;
                crate::revert::k8s::execute_all(client, ops)
            })
            .await
            .map(|_| tries)
            .map_err(|f| failure(f.error.metric_label(), f)),
            (Reverter::Iam(client), Ops::Iam(ops)) => retry::run(&self.backoff, || {
                tries += 1;
                crate::revert::aws::execute_all(client, ops)
            })
            .await
            .map(|_| tries)
            .map_err(|f| failure(f.error.metric_label(), f)),
            _ => Err((
                "platform",
                "the plan is for another platform than the source".into(),
                0,
                false,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::k8s::{RbacKey, RbacKind};

    fn key(name: &str) -> ObjectKey {
        ObjectKey::K8s(RbacKey::new(RbacKind::ClusterRoleBinding, None, name))
    }

    fn record(seq: u64, body: Body) -> Record {
        let (kind, body) = body.encode().unwrap();
        Record {
            seq,
            at: "2026-12-03T10:00:00Z".into(),
            kind: kind.into(),
            source: Some("lab".into()),
            body,
            prev: String::new(),
            mac: None,
            hash: String::new(),
        }
    }

    fn intent(name: &str) -> Body {
        Body::RevertIntent(RevertIntentBody {
            key: key(name),
            object: format!("ClusterRoleBinding/{name}"),
            digest: "d".into(),
            resource_version: Some("7".into()),
            ops: serde_json::json!([{"op": "delete"}]),
        })
    }

    fn result(name: &str, intent: u64) -> Body {
        Body::RevertResult(RevertResultBody {
            key: key(name),
            object: format!("ClusterRoleBinding/{name}"),
            intent: Some(intent),
            outcome: "reverted".into(),
            reason: "reverted".into(),
            error: None,
            tries: 1,
        })
    }

    #[test]
    fn only_intents_without_a_result_are_unfinished() {
        let records = [
            record(1, intent("a")),
            record(2, intent("b")),
            record(3, result("a", 1)),
            record(4, intent("a")),
            // A rail's skip has no intent and settles nothing.
            record(
                5,
                Body::RevertResult(RevertResultBody {
                    intent: None,
                    outcome: "skipped".into(),
                    reason: "flapping".into(),
                    tries: 0,
                    ..match result("b", 2) {
                        Body::RevertResult(r) => r,
                        _ => unreachable!(),
                    }
                }),
            ),
        ];
        let open: Vec<(u64, String)> = unfinished(&records)
            .into_iter()
            .map(|(seq, i)| (seq, i.object))
            .collect();
        assert_eq!(
            open,
            [
                (2, "ClusterRoleBinding/b".to_owned()),
                (4, "ClusterRoleBinding/a".to_owned())
            ]
        );
    }

    #[test]
    fn an_intent_whose_widening_is_gone_is_already_restored_and_never_run_again() {
        assert_eq!(settle(false), ("already-restored", "already-restored"));
        assert_eq!(settle(true), ("failed", INTERRUPTED));
    }

    #[test]
    fn revert_records_read_back_as_written() {
        for body in [intent("a"), result("a", 1)] {
            let r = record(9, body.clone());
            assert_eq!(Body::of_record(&r).unwrap(), Some(body));
        }
    }
}
