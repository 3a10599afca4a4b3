//! The operator: `permdrift run`.
//!
//! Watches every configured cluster and polls every configured AWS account,
//! judges each change against the source's approved baseline (`decide`),
//! records it in the store, and reports it to Prometheus, Kubernetes Events
//! and the logs. One task per source owns that source's state; leadership
//! (`leader`) decides who records; `http` serves metrics and health, `api`
//! the authenticated API over TLS (`tls`), both through `serve`.

pub mod admission;
pub mod api;
pub mod approvals;
pub mod attribution;
pub mod dry_run;
pub mod enforce;
pub mod error;
pub mod events;
pub mod http;
pub mod k8s_loop;
pub mod leader;
pub mod outcome;
pub mod records;
pub mod run;
pub mod serve;
pub mod source;
pub mod store;
pub mod supervise;
pub mod tls;

pub use error::Error;

use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The wall clock, read only at the edges, to the microsecond: the journal
/// keeps `detected_at` as Unix seconds with six decimals, and a time read
/// back from it must equal the one that was written.
pub fn now() -> Timestamp {
    let t = Timestamp::now();
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// Unix seconds, where a number is wanted: metrics and the journal's
/// `detected_at`.
pub fn unix_seconds(t: Timestamp) -> f64 {
    t.as_microsecond() as f64 / 1e6
}

/// Seconds from `from` to `to`, never negative (a clock stepped back reads 0).
pub fn seconds_since(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

/// The time of Unix seconds (to the microsecond); None out of range.
pub fn from_unix_seconds(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    Timestamp::from_microsecond((secs * 1e6).round() as i64).ok()
}

/// Requests to a source's loop.
#[derive(Debug)]
pub enum Command {
    /// Accept every open widening into the baseline; replies with how many.
    AcceptBaseline {
        /// Who asked, as authenticated (journaled with each accepted object).
        by: String,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    /// Check an approval against the open widening it names, journal and
    /// count the outcome (`approvals`).
    Approve {
        offer: Box<approvals::Offer>,
        reply: oneshot::Sender<Result<Result<approvals::Counted, approvals::Refused>, Error>>,
    },
    /// Review an RBAC write against the live index (`admission`).
    Admit(Box<admission::Admit>),
}

/// Whether a source's changes are being judged and recorded on this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recording {
    /// Not the recorder (a follower, or the store is not open yet).
    Idle,
    /// Judged state loaded and the last record written.
    Ok,
    /// Could not load, persist or read back: changes go unrecorded until it
    /// recovers (the loop retries).
    Failed(String),
}

/// The store as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    /// Not leading: nothing to open.
    Closed,
    Open,
    Failed(String),
}

#[derive(Debug)]
struct HealthState {
    store: StoreStatus,
    /// Per source: has a complete snapshot, and its judging.
    sources: BTreeMap<String, (bool, Recording)>,
    /// Tasks that stopped for good (panicked or ended), with why.
    failed_tasks: BTreeMap<String, String>,
}

/// The one notion of "this source is being judged and recorded", behind
/// `/readyz`, `permdrift_recording` and `permdrift_source_recording`: every
/// failure to load, persist or read back a verdict or baseline lands here
/// with its reason, and the gauges follow at once.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<HealthState>>,
    metrics: crate::metrics::Metrics,
}

impl Health {
    pub fn new(
        sources: impl IntoIterator<Item = String>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let health = Self {
            state: Arc::new(Mutex::new(HealthState {
                store: StoreStatus::Closed,
                sources: sources
                    .into_iter()
                    .map(|s| (s, (false, Recording::Idle)))
                    .collect(),
                failed_tasks: BTreeMap::new(),
            })),
            metrics,
        };
        health.publish();
        health
    }

    fn update(&self, f: impl FnOnce(&mut HealthState)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
        self.publish();
    }

    /// A source has (or no longer has) a complete snapshot.
    pub fn set_complete(&self, source: &str, complete: bool) {
        self.update(|s| {
            if let Some(entry) = s.sources.get_mut(source) {
                entry.0 = complete;
            }
        });
    }

    /// How a source's judging stands; a change is logged once.
    pub fn set_recording(&self, source: &str, judging: Recording) {
        self.update(|s| {
            if let Some(entry) = s.sources.get_mut(source)
                && entry.1 != judging
            {
                match &judging {
                    Recording::Failed(reason) => tracing::error!(source, reason = %reason,
                        "not recording: changes of this source are not judged or journaled until this recovers"),
                    Recording::Ok if matches!(entry.1, Recording::Failed(_)) => {
                        tracing::info!(source, "recording again")
                    }
                    _ => {}
                }
                entry.1 = judging;
            }
        });
    }

    /// A task stopped for good: the process is no longer alive in any useful sense.
    pub fn task_failed(&self, task: &str, reason: String) {
        self.update(|s| {
            s.failed_tasks.insert(task.to_owned(), reason);
        });
    }

    /// What `/healthz` answers: fine, or the tasks that stopped and why.
    pub fn liveness(&self) -> Result<(), String> {
        let Ok(state) = self.state.lock() else {
            return Err("(state unavailable)".into());
        };
        if state.failed_tasks.is_empty() {
            return Ok(());
        }
        Err(state
            .failed_tasks
            .iter()
            .map(|(task, why)| format!("{task}: {why}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    pub fn set_store(&self, store: StoreStatus) {
        self.update(|s| s.store = store);
    }

    /// True while this replica holds the store and judges and records every source.
    pub fn is_recording(&self) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.store == StoreStatus::Open && s.sources.values().all(|(_, j)| *j == Recording::Ok)
        })
    }

    fn publish(&self) {
        let Ok(state) = self.state.lock() else {
            return;
        };
        let open = state.store == StoreStatus::Open;
        let mut all = open;
        for (source, (_, judging)) in &state.sources {
            let ok = open && *judging == Recording::Ok;
            all &= ok;
            self.metrics
                .source_recording
                .with_label_values(&[source.as_str()])
                .set(i64::from(ok));
        }
        self.metrics.recording.set(if all { 1.0 } else { 0.0 });
    }

    /// What keeps this replica from being ready: sources without a complete
    /// snapshot, and (on the leader) a store or source that is not recording.
    pub fn problems(&self) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return vec!["(state unavailable)".into()];
        };
        let mut out: Vec<String> = state
            .sources
            .iter()
            .filter(|(_, (complete, _))| !complete)
            .map(|(s, _)| format!("{s}: waiting for a complete snapshot"))
            .collect();
        for (task, why) in &state.failed_tasks {
            out.push(format!("{task}: {why}"));
        }
        if let StoreStatus::Failed(reason) = &state.store {
            out.push(format!("store: not recording: {reason}"));
        }
        let leader = state.store == StoreStatus::Open;
        for (source, (complete, judging)) in &state.sources {
            match judging {
                Recording::Failed(reason) => {
                    out.push(format!("{source}: not recording: {reason}"));
                }
                // The leader is ready once it has judged the first snapshot
                // against the baseline, not merely listed it: a change made
                // before then waits for that takeover.
                Recording::Idle if leader && *complete => {
                    out.push(format!("{source}: judging its first snapshot"));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_ready_only_once_the_first_snapshot_is_judged() {
        let metrics = crate::metrics::Metrics::new(&[("prod".into(), "kubernetes")]).unwrap();
        let health = Health::new(["prod".to_owned()], metrics);
        health.set_complete("prod", true);
        // A follower with a complete snapshot is ready: it records nothing.
        assert_eq!(health.problems(), Vec::<String>::new());
        health.set_store(StoreStatus::Open);
        assert_eq!(health.problems(), ["prod: judging its first snapshot"]);
        health.set_recording("prod", Recording::Ok);
        assert_eq!(health.problems(), Vec::<String>::new());
        health.set_recording("prod", Recording::Failed("disk full".into()));
        assert_eq!(health.problems(), ["prod: not recording: disk full"]);
    }
}
