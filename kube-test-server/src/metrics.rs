//! The server's own Prometheus metrics, served at `GET /metrics`: the
//! admission webhook series kube-apiserver exports, under its names and
//! labels, so alert rules written for a real API server can be tested
//! against this one. Each webhook call from `admission.rs` is observed once.

use std::time::Duration;

use prometheus::{CounterVec, Encoder, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

/// Validating webhooks only: the `type` label is always this.
const TYPE: &str = "validating";

pub struct Metrics {
    registry: Registry,
    duration: HistogramVec,
    requests: CounterVec,
    rejections: CounterVec,
    fail_open: CounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        // kube-apiserver's buckets for this histogram.
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_admission_webhook_admission_duration_seconds",
                "Seconds each admission webhook call took, by webhook, operation and whether it refused the request.",
            )
            .buckets(vec![0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0]),
            &["name", "type", "operation", "rejected"],
        )?;
        let requests = CounterVec::new(
            Opts::new(
                "apiserver_admission_webhook_request_total",
                "Admission webhook calls, by webhook, operation, HTTP status of the answer (0: no answer; at most 600) and whether the request was refused.",
            ),
            &["name", "type", "operation", "code", "rejected"],
        )?;
        let rejections = CounterVec::new(
            Opts::new(
                "apiserver_admission_webhook_rejection_count",
                "Requests refused through an admission webhook: denied by it (error_type no_error, rejection_code its status code) or refused because calling it failed under failurePolicy Fail (calling_webhook_error, code 0).",
            ),
            &["name", "type", "operation", "error_type", "rejection_code"],
        )?;
        let fail_open = CounterVec::new(
            Opts::new(
                "apiserver_admission_webhook_fail_open_count",
                "Failed admission webhook calls let through by failurePolicy Ignore.",
            ),
            &["name", "type"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(fail_open.clone()))?;
        Ok(Self {
            registry,
            duration,
            requests,
            rejections,
            fail_open,
        })
    }

    /// One call: its latency and answer (`code` 0 when no answer came).
    pub fn observe(
        &self,
        name: &str,
        operation: &str,
        rejected: bool,
        code: u16,
        elapsed: Duration,
    ) {
        let rejected = if rejected { "true" } else { "false" };
        self.duration
            .with_label_values(&[name, TYPE, operation, rejected])
            .observe(elapsed.as_secs_f64());
        let code = code.min(600).to_string();
        self.requests
            .with_label_values(&[name, TYPE, operation, code.as_str(), rejected])
            .inc();
    }

    /// A request refused by a webhook (`no_error`) or by failing to call it
    /// under `failurePolicy: Fail` (`calling_webhook_error`, code 0).
    pub fn rejected(&self, name: &str, operation: &str, error_type: &str, code: u16) {
        let code = code.min(600).to_string();
        self.rejections
            .with_label_values(&[name, TYPE, operation, error_type, code.as_str()])
            .inc();
    }

    /// A failed call let through by `failurePolicy: Ignore`.
    pub fn failed_open(&self, name: &str) {
        self.fail_open.with_label_values(&[name, TYPE]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
