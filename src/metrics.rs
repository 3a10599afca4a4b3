//! Prometheus metrics of the operator (`permdrift_*`, see docs/operator.md).
//!
//! The operator's loops record into a [`Metrics`] handle; `/metrics` renders
//! it in the text exposition format. Counters that alerts watch with
//! `increase()` are created at zero for every source and severity at start,
//! so the first increment is visible to the alert.

use crate::report::{Direction, Severity};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub build_info: IntGaugeVec,
    pub leader: Gauge,
    pub recording: Gauge,
    pub source_recording: IntGaugeVec,
    pub unreadable_objects: IntGaugeVec,
    pub source_up: IntGaugeVec,
    pub snapshot_duration: HistogramVec,
    pub snapshot_objects: IntGaugeVec,
    pub last_snapshot: GaugeVec,
    pub changes: IntCounterVec,
    pub unapproved_widening: IntCounterVec,
    pub open_widening: IntGaugeVec,
    pub open_widening_since: GaugeVec,
    pub detection_latency: HistogramVec,
    pub exposure_window: HistogramVec,
    pub watch_events: IntCounterVec,
    pub watch_restarts: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub reverts: IntCounterVec,
    /// Reverts that failed after their retries, by the error's label.
    pub revert_failures: IntCounterVec,
    /// Objects the flapping rail stopped reverting.
    pub revert_flapping: IntGaugeVec,
    pub attributed: IntCounterVec,
    pub approvals_active: IntGaugeVec,
    pub approvals_expired: IntCounterVec,
    pub journal_records: IntCounterVec,
    pub journal_head: Gauge,
    pub http_connections: IntGaugeVec,
    pub http_connections_refused: IntCounterVec,
    pub api_requests: IntCounterVec,
    /// Approvals offered through the API, counted or rejected (with the label).
    pub approvals: IntCounterVec,
    /// Open widenings enough unexpired approvals cover.
    pub approved_widenings: IntGaugeVec,
    /// Admission reviews answered, by outcome (docs/admission.md).
    pub admission_reviews: IntCounterVec,
    /// Time from an admission review's arrival to its answer.
    pub admission_duration: HistogramVec,
}

/// Why the API refuses a request (`permdrift_api_requests_total{reason}`).
pub const API_REFUSALS: [&str; 22] = [
    "unauthenticated",
    "no-authenticator",
    "forbidden",
    "review-failed",
    "malformed",
    "forged",
    "unknown-key",
    "expired",
    "not-yet-valid",
    "too-long",
    "replayed",
    "wrong-request",
    "bad-key",
    "oversized",
    "timeout",
    "unknown-source",
    "not-recording",
    "source-down",
    "not-found",
    "method-not-allowed",
    "internal",
    "other",
];

const SEVERITIES: [Severity; 4] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
];

impl Metrics {
    /// Registers every family; `sources` are (name, platform) pairs.
    pub fn new(sources: &[(String, &'static str)]) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let m = Metrics {
            admission_reviews: IntCounterVec::new(
                Opts::new(
                    "permdrift_admission_reviews_total",
                    "Admission reviews of RBAC writes answered, by decision (docs/admission.md)",
                ),
                &["source", "decision"],
            )?,
            admission_duration: HistogramVec::new(
                HistogramOpts::new(
                    "permdrift_admission_review_duration_seconds",
                    "From an admission review's arrival to its answer",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["source"],
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("permdrift_build_info", "permdrift build, always 1"),
                &["version"],
            )?,
            leader: Gauge::new(
                "permdrift_leader",
                "1 on the replica holding the leader Lease, else 0",
            )?,
            recording: Gauge::new(
                "permdrift_recording",
                "1 on the replica that judges and records every source (leads, holds the store, and each source's state loads and persists), else 0",
            )?,
            source_recording: IntGaugeVec::new(
                Opts::new(
                    "permdrift_source_recording",
                    "1 while this replica judges and journals the source's changes, else 0 (see the log for why)",
                ),
                &["source"],
            )?,
            unreadable_objects: IntGaugeVec::new(
                Opts::new(
                    "permdrift_unreadable_objects",
                    "Objects of the source that cannot be parsed, so their effect is unknown",
                ),
                &["source"],
            )?,
            source_up: IntGaugeVec::new(
                Opts::new(
                    "permdrift_source_up",
                    "1 while the source is read successfully",
                ),
                &["source", "platform"],
            )?,
            snapshot_duration: HistogramVec::new(
                HistogramOpts::new(
                    "permdrift_snapshot_duration_seconds",
                    "Time to read a complete snapshot of a source",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ]),
                &["source", "platform"],
            )?,
            snapshot_objects: IntGaugeVec::new(
                Opts::new(
                    "permdrift_snapshot_objects",
                    "Objects in the current state of a source",
                ),
                &["source", "platform"],
            )?,
            last_snapshot: GaugeVec::new(
                Opts::new(
                    "permdrift_last_successful_snapshot_timestamp_seconds",
                    "Unix time of the last complete read of a source (kept current by watches)",
                ),
                &["source"],
            )?,
            changes: IntCounterVec::new(
                Opts::new("permdrift_changes_total", "Changes judged"),
                &["source", "platform", "direction", "severity"],
            )?,
            unapproved_widening: IntCounterVec::new(
                Opts::new(
                    "permdrift_unapproved_widening_total",
                    "Widening changes neither allow-listed nor approved",
                ),
                &["source", "severity"],
            )?,
            open_widening: IntGaugeVec::new(
                Opts::new(
                    "permdrift_open_widening",
                    "Widening changes not yet accepted, approved or reverted",
                ),
                &["source", "severity"],
            )?,
            open_widening_since: GaugeVec::new(
                Opts::new(
                    "permdrift_open_widening_since_timestamp_seconds",
                    "Unix time the oldest open widening of each severity was detected (0 when none)",
                ),
                &["source", "severity"],
            )?,
            detection_latency: HistogramVec::new(
                HistogramOpts::new(
                    "permdrift_detection_latency_seconds",
                    "From the write (or poll start) to the recorded verdict",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["source", "platform"],
            )?,
            exposure_window: HistogramVec::new(
                HistogramOpts::new(
                    "permdrift_exposure_window_seconds",
                    "From detection of a widening to its close",
                )
                .buckets(vec![
                    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 7200.0, 21600.0, 86400.0,
                ]),
                &["source"],
            )?,
            watch_events: IntCounterVec::new(
                Opts::new("permdrift_watch_events_total", "Watch events applied"),
                &["source", "type"],
            )?,
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    "permdrift_watch_restarts_total",
                    "Re-lists after dropped streams or 410 Gone",
                ),
                &["source", "reason"],
            )?,
            events_dropped: IntCounterVec::new(
                Opts::new(
                    "permdrift_events_dropped_total",
                    "Kubernetes Events not published (queue full, timed out, refused)",
                ),
                &["source", "reason"],
            )?,
            reverts: IntCounterVec::new(
                Opts::new("permdrift_reverts_total", "Revert plans executed"),
                &["source", "outcome"],
            )?,
            revert_failures: IntCounterVec::new(
                Opts::new(
                    "permdrift_revert_failures_total",
                    "Reverts that failed after their retries",
                ),
                &["source", "reason"],
            )?,
            revert_flapping: IntGaugeVec::new(
                Opts::new(
                    "permdrift_revert_flapping",
                    "Objects no longer reverted because they flap",
                ),
                &["source"],
            )?,
            attributed: IntCounterVec::new(
                Opts::new(
                    "permdrift_attributed_changes_total",
                    "Judged changes attributed, by kind (agent, agent-suggested, human, unknown) and configured agent",
                ),
                &["source", "kind", "agent"],
            )?,
            approvals_active: IntGaugeVec::new(
                Opts::new("permdrift_approvals_active", "Unexpired approvals"),
                &["source"],
            )?,
            approvals_expired: IntCounterVec::new(
                Opts::new(
                    "permdrift_approvals_expired_total",
                    "Approvals that expired",
                ),
                &["source"],
            )?,
            journal_records: IntCounterVec::new(
                Opts::new(
                    "permdrift_journal_records_total",
                    "Records appended to the journal",
                ),
                &["kind"],
            )?,
            journal_head: Gauge::new(
                "permdrift_journal_head_sequence",
                "Sequence number of the journal's last record on the recording replica (compare with a copy kept elsewhere: a drop means records were removed)",
            )?,
            http_connections: IntGaugeVec::new(
                Opts::new(
                    "permdrift_http_connections",
                    "Open client connections per listener",
                ),
                &["listener"],
            )?,
            http_connections_refused: IntCounterVec::new(
                Opts::new(
                    "permdrift_http_connections_refused_total",
                    "Connections closed on arrival because the listener was at its limit",
                ),
                &["listener"],
            )?,
            api_requests: IntCounterVec::new(
                Opts::new(
                    "permdrift_api_requests_total",
                    "Requests to the authenticated API by action and outcome (reason: why refused)",
                ),
                &["action", "outcome", "reason"],
            )?,
            approvals: IntCounterVec::new(
                Opts::new(
                    "permdrift_approvals_total",
                    "Approvals offered to the operator by source and outcome (reason: the rejection label)",
                ),
                &["source", "outcome", "reason"],
            )?,
            approved_widenings: IntGaugeVec::new(
                Opts::new(
                    "permdrift_approved_widenings",
                    "Open widenings that enough unexpired approvals cover",
                ),
                &["source"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.build_info.clone()))?;
        m.registry.register(Box::new(m.admission_reviews.clone()))?;
        m.registry
            .register(Box::new(m.admission_duration.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.recording.clone()))?;
        m.registry.register(Box::new(m.source_recording.clone()))?;
        m.registry
            .register(Box::new(m.unreadable_objects.clone()))?;
        m.registry.register(Box::new(m.source_up.clone()))?;
        m.registry.register(Box::new(m.snapshot_duration.clone()))?;
        m.registry.register(Box::new(m.snapshot_objects.clone()))?;
        m.registry.register(Box::new(m.last_snapshot.clone()))?;
        m.registry.register(Box::new(m.changes.clone()))?;
        m.registry
            .register(Box::new(m.unapproved_widening.clone()))?;
        m.registry.register(Box::new(m.open_widening.clone()))?;
        m.registry
            .register(Box::new(m.open_widening_since.clone()))?;
        m.registry.register(Box::new(m.detection_latency.clone()))?;
        m.registry.register(Box::new(m.exposure_window.clone()))?;
        m.registry.register(Box::new(m.watch_events.clone()))?;
        m.registry.register(Box::new(m.watch_restarts.clone()))?;
        m.registry.register(Box::new(m.events_dropped.clone()))?;
        m.registry.register(Box::new(m.reverts.clone()))?;
        m.registry.register(Box::new(m.revert_failures.clone()))?;
        m.registry.register(Box::new(m.revert_flapping.clone()))?;
        m.registry.register(Box::new(m.attributed.clone()))?;
        m.registry.register(Box::new(m.approvals_active.clone()))?;
        m.registry.register(Box::new(m.approvals_expired.clone()))?;
        m.registry.register(Box::new(m.journal_records.clone()))?;
        m.registry.register(Box::new(m.journal_head.clone()))?;
        m.registry.register(Box::new(m.http_connections.clone()))?;
        m.registry
            .register(Box::new(m.http_connections_refused.clone()))?;
        m.registry.register(Box::new(m.api_requests.clone()))?;
        m.registry.register(Box::new(m.approvals.clone()))?;
        m.registry
            .register(Box::new(m.approved_widenings.clone()))?;
        // Refusals are counted from zero, so that the alert's increase() sees
        // the first one of each reason.
        for reason in API_REFUSALS {
            m.api_requests
                .with_label_values(&["baseline-accept", "refused", reason]);
        }
        for listener in ["http", "api"] {
            m.http_connections.with_label_values(&[listener]).set(0);
            m.http_connections_refused.with_label_values(&[listener]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for (source, platform) in sources {
            let (source, platform) = (source.as_str(), *platform);
            m.source_up.with_label_values(&[source, platform]).set(0);
            m.source_recording.with_label_values(&[source]).set(0);
            m.approved_widenings.with_label_values(&[source]).set(0);
            m.unreadable_objects.with_label_values(&[source]).set(0);
            m.last_snapshot.with_label_values(&[source]).set(0.0);
            m.snapshot_objects
                .with_label_values(&[source, platform])
                .set(0);
            m.approvals_active.with_label_values(&[source]).set(0);
            m.approvals_expired.with_label_values(&[source]);
            // Histograms appear on /metrics only once a child exists.
            m.snapshot_duration.with_label_values(&[source, platform]);
            m.detection_latency.with_label_values(&[source, platform]);
            m.exposure_window.with_label_values(&[source]);
            for s in SEVERITIES {
                m.unapproved_widening
                    .with_label_values(&[source, s.as_str()]);
                m.open_widening
                    .with_label_values(&[source, s.as_str()])
                    .set(0);
                m.open_widening_since
                    .with_label_values(&[source, s.as_str()])
                    .set(0.0);
            }
            for outcome in crate::operator::enforce::OUTCOMES {
                m.reverts.with_label_values(&[source, outcome]);
            }
            m.revert_flapping.with_label_values(&[source]).set(0);
            for reason in crate::operator::enforce::FAILURE_REASONS {
                m.revert_failures.with_label_values(&[source, reason]);
            }
            if platform == "kubernetes" {
                for reason in crate::operator::events::DROP_REASONS {
                    m.events_dropped.with_label_values(&[source, reason]);
                }
            }
        }
        Ok(m)
    }

    pub fn count_change(
        &self,
        source: &str,
        platform: &str,
        direction: Direction,
        severity: Severity,
    ) {
        self.changes
            .with_label_values(&[source, platform, direction.as_str(), severity.as_str()])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_counters_exist_at_zero_for_every_severity() {
        let m = Metrics::new(&[("prod".into(), "kubernetes")]).unwrap();
        let text = m.render().unwrap();
        for s in ["critical", "high", "medium", "low"] {
            let line = format!(
                "permdrift_unapproved_widening_total{{severity=\"{s}\",source=\"prod\"}} 0"
            );
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
        assert!(text.contains("# HELP permdrift_detection_latency_seconds"));
        assert!(text.contains("permdrift_build_info{version=\""));
        m.count_change("prod", "kubernetes", Direction::Widening, Severity::High);
        assert!(m.render().unwrap().contains(
            "permdrift_changes_total{direction=\"widening\",platform=\"kubernetes\",severity=\"high\",source=\"prod\"} 1"
        ));
    }
}
