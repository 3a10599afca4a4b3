//! Applying judged outcomes: journal records, metrics and the open-widening
//! gauges, the same for every platform.
//!
//! A source loop hands each [`Outcome`] of `decide` here together with what
//! only the edge knows (the current object's text, the time, the write
//! latency); this turns it into `change`, `baseline-patch` and `close`
//! records and metric updates, and tells the loop what happened for its
//! logs and Kubernetes Events.

use super::Error;
use super::records::{self, ChangeFacts};
use super::store::StoreHandle;
use crate::decide::{ObjectKey, OpenWidening, Outcome, SourceState, Verdict};
use crate::metrics::Metrics;
use crate::report::{Change, Direction, Severity};
use crate::snapshot::Platform;
use jiff::Timestamp;
use serde_json::Value;

/// Attributes a judged change before its record is written.
pub type Attributor =
    std::sync::Arc<dyn Fn(&Change) -> Option<crate::attribution::Attribution> + Send + Sync>;

tokio::task_local! {
    /// Set by a source loop that attributes (src/operator/attribution.rs)
    /// around its judging, so that the attribution goes into the `change`
    /// record itself while `judge_one` stays the same for every platform.
    pub static ATTRIBUTOR: Attributor;
}

/// What the caller may want to announce after an outcome was recorded.
pub enum Announce {
    Nothing,
    Closed {
        object: String,
        reason: &'static str,
    },
    Judged {
        change: Box<Change>,
        verdict: Verdict,
        reason: String,
    },
}

pub struct Applied {
    pub announce: Announce,
    /// Records appended (0 when nothing was new).
    pub records: usize,
    /// Whether the baseline took a patch (what compaction counts).
    pub patched: bool,
}

pub struct Context<'a> {
    pub source: &'a str,
    pub platform: Platform,
    pub metrics: &'a Metrics,
    pub store: &'a StoreHandle,
}

/// Records that an open widening closed (`why`: restored, accepted, ...) at
/// `now`, and how long it was exposed.
pub async fn close(
    cx: &Context<'_>,
    key: &ObjectKey,
    open: &OpenWidening,
    why: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let exposure = super::seconds_since(open.detected_at, now);
    cx.store
        .append(cx.source, &records::close(key, open, why, exposure), now)
        .await?;
    cx.metrics
        .exposure_window
        .with_label_values(&[cx.source])
        .observe(exposure);
    Ok(())
}

/// Records an outcome. `raw` is the current object (None when deleted),
/// `written_at` when the change reached the system, if known.
pub async fn apply(
    cx: &Context<'_>,
    state: &SourceState,
    key: &ObjectKey,
    outcome: Outcome,
    raw: Option<Value>,
    now: Timestamp,
    written_at: Option<Timestamp>,
) -> Result<Applied, Error> {
    let mut appended = 0;
    let mut patched = false;
    let announce = match outcome {
        Outcome::AlreadyOpen => Announce::Nothing,
        Outcome::Restored { closed: None } => Announce::Nothing,
        Outcome::Restored { closed: Some(open) } => {
            close(cx, key, &open, "restored", now).await?;
            appended += 1;
            Announce::Closed {
                object: open.object,
                reason: "restored",
            }
        }
        Outcome::Judged(mut j) => {
            if let Ok(attribution) = ATTRIBUTOR.try_with(|attribute| attribute(&j.change)) {
                j.change.attribution = Some(attribution);
            }
            let latency = written_at.map(|w| super::seconds_since(w, now));
            let facts = ChangeFacts {
                key,
                change: &j.change,
                verdict: j.verdict,
                reason: &j.reason,
                grants: &j.grants,
                raw: raw.clone(),
                detected_at: now,
                latency_seconds: latency,
            };
            cx.store
                .append(cx.source, &records::change(facts), now)
                .await?;
            appended += 1;
            if j.advanced {
                let why = match j.change.direction {
                    Direction::Narrowing => "narrowing",
                    Direction::Neutral => "neutral",
                    _ => "allow-listed",
                };
                cx.store
                    .append(cx.source, &records::baseline_patch(key, raw, why), now)
                    .await?;
                appended += 1;
                patched = true;
                if let Some(open) = &j.superseded {
                    close(cx, key, open, why, now).await?;
                    appended += 1;
                }
            }
            cx.metrics.count_change(
                cx.source,
                cx.platform.as_str(),
                j.change.direction,
                j.change.severity,
            );
            if j.verdict == Verdict::Alert {
                cx.metrics
                    .unapproved_widening
                    .with_label_values(&[cx.source, j.change.severity.as_str()])
                    .inc();
            }
            if let Some(l) = latency {
                cx.metrics
                    .detection_latency
                    .with_label_values(&[cx.source, cx.platform.as_str()])
                    .observe(l);
            }
            Announce::Judged {
                verdict: j.verdict,
                reason: j.reason,
                change: Box::new(j.change),
            }
        }
    };
    update_open_gauges(cx, state);
    Ok(Applied {
        announce,
        records: appended,
        patched,
    })
}

/// Sets the open-widening gauges from the state's open set.
pub fn update_open_gauges(cx: &Context<'_>, state: &SourceState) {
    for s in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ] {
        let n = state.open.values().filter(|o| o.severity == s).count();
        cx.metrics
            .open_widening
            .with_label_values(&[cx.source, s.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        cx.metrics
            .open_widening_since
            .with_label_values(&[cx.source, s.as_str()])
            .set(state.oldest_open(s).map_or(0.0, super::unix_seconds));
    }
}

/// Clears the open-widening gauges (a follower must not export stale ones).
pub fn clear_open_gauges(cx: &Context<'_>) {
    for s in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ] {
        cx.metrics
            .open_widening
            .with_label_values(&[cx.source, s.as_str()])
            .set(0);
        cx.metrics
            .open_widening_since
            .with_label_values(&[cx.source, s.as_str()])
            .set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::decide::Policy;
    use crate::diff::DiffOptions;
    use crate::index::k8s::K8sModel;
    use crate::model::k8s::RbacKey;
    use crate::snapshot::SourceSnapshot;
    use serde_json::json;

    fn role(verbs: &[&str]) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"reader"},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":verbs}]})
    }

    fn binding() -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
            "metadata":{"name":"b"},
            "roleRef":{"kind":"ClusterRole","name":"reader","apiGroup":"rbac.authorization.k8s.io"},
            "subjects":[{"kind":"Group","name":"eng","apiGroup":"rbac.authorization.k8s.io"}]})
    }

    /// Only an outcome that moved the baseline counts as a patch (compaction
    /// counts patches, not judged changes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn only_a_baseline_patch_counts_as_patched() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(&[("kind".into(), "kubernetes")]).unwrap();
        let store = StoreHandle::new(dir.path().join("store"), metrics.clone());
        store.open().await.unwrap();
        let cx = Context {
            source: "kind",
            platform: Platform::Kubernetes,
            metrics: &metrics,
            store: &store,
        };
        let baseline = K8sModel::of(&[role(&["get", "list"]), binding()]);
        let mut state = SourceState::new(SourceSnapshot::kubernetes("kind", baseline));
        let policy = Policy {
            source: "kind",
            mode: Mode::Detect,
            allow: &[],
        };
        let key = RbacKey::cluster_role("reader");
        let object_key = ObjectKey::K8s(key.clone());
        let mut patched = Vec::new();
        // A widening nobody approved: alerted, the baseline keeps the old role.
        // A narrowing: the baseline moves to it.
        for verbs in [&["get", "list", "watch"][..], &["get"][..]] {
            let current = K8sModel::of(&[role(verbs), binding()]);
            let outcome = state.judge_k8s(
                &current,
                &key,
                &policy,
                Timestamp::UNIX_EPOCH,
                &DiffOptions::default(),
            );
            let raw = current.get(&key).map(|o| o.value());
            let t = crate::operator::from_unix_seconds(1.0).unwrap();
            let applied = apply(&cx, &state, &object_key, outcome, raw, t, None)
                .await
                .unwrap();
            assert!(matches!(applied.announce, Announce::Judged { .. }));
            patched.push(applied.patched);
        }
        assert_eq!(patched, [false, true]);
    }
}
