//! Applying judged outcomes: journal records, metrics and the open-widening
//! gauges, the same for every platform.
//!
//! A source loop hands each [`Outcome`] of `decide` here together with what
//! only the edge knows (the current object's text, the time, the write
//! latency); this turns it into `change`, `baseline-patch` and `close`
//! records and metric updates, and tells the loop what happened for its
//! logs and Kubernetes Events.

use super::records::{self, ChangeFacts};
use super::store::StoreHandle;
use crate::decide::{ObjectKey, OpenWidening, Outcome, SourceState, Verdict};
use crate::metrics::Metrics;
use crate::report::{Change, Direction, Severity};
use serde_json::Value;

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
}

pub struct Context<'a> {
    pub source: &'a str,
    pub platform: &'static str,
    pub metrics: &'a Metrics,
    pub store: &'a StoreHandle,
}

/// Records that an open widening closed (`why`: restored, accepted, ...) and
/// how long it was exposed. `now` is Unix seconds, `at` the same as RFC 3339.
pub async fn close(
    cx: &Context<'_>,
    key: &ObjectKey,
    open: &OpenWidening,
    why: &str,
    now: f64,
    at: &str,
) -> Result<(), String> {
    let exposure = (now - open.detected_at).max(0.0);
    cx.store
        .append(
            records::CLOSE,
            cx.source,
            records::close(key, open, why, exposure),
            at,
        )
        .await?;
    cx.metrics
        .exposure_window
        .with_label_values(&[cx.source])
        .observe(exposure);
    Ok(())
}

/// Records an outcome. `raw` is the current object (None when deleted), `now`
/// Unix seconds, `written_at` when the change reached the system, if known.
pub async fn apply(
    cx: &Context<'_>,
    state: &SourceState,
    key: &ObjectKey,
    outcome: Outcome,
    raw: Option<Value>,
    now: f64,
    written_at: Option<f64>,
) -> Result<Applied, String> {
    let at = super::rfc3339(now);
    let mut appended = 0;
    let announce = match outcome {
        Outcome::AlreadyOpen => Announce::Nothing,
        Outcome::Restored { closed: None } => Announce::Nothing,
        Outcome::Restored { closed: Some(open) } => {
            close(cx, key, &open, "restored", now, &at).await?;
            appended += 1;
            Announce::Closed {
                object: open.object,
                reason: "restored",
            }
        }
        Outcome::Judged(j) => {
            let latency = written_at.map(|w| (now - w).max(0.0));
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
                .append(records::CHANGE, cx.source, records::change(&facts), &at)
                .await?;
            appended += 1;
            if j.advanced {
                let why = match j.change.direction {
                    Direction::Narrowing => "narrowing",
                    Direction::Neutral => "neutral",
                    _ => "allow-listed",
                };
                cx.store
                    .append(
                        records::BASELINE_PATCH,
                        cx.source,
                        records::baseline_patch(key, raw, why),
                        &at,
                    )
                    .await?;
                appended += 1;
                if let Some(open) = &j.superseded {
                    close(cx, key, open, why, now, &at).await?;
                    appended += 1;
                }
            }
            cx.metrics.count_change(
                cx.source,
                cx.platform,
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
                    .with_label_values(&[cx.source, cx.platform])
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
    }
    cx.metrics
        .open_widening_since
        .with_label_values(&[cx.source])
        .set(state.oldest_open());
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
    }
    cx.metrics
        .open_widening_since
        .with_label_values(&[cx.source])
        .set(0.0);
}
