//! Kubernetes Events, published apart from judging.
//!
//! A source loop judges, journals and only then queues the Event for what it
//! judged on a bounded channel ([`EventQueue::send`] never waits); one writer
//! task per cluster drains it and publishes each Event with a timeout. An
//! Event that does not fit in the queue, times out or is refused is dropped
//! and counted in `permdrift_events_dropped_total{source, reason}`: Events are
//! a courtesy to people looking at the cluster, the journal is the record, so
//! a slow or unreachable API server must never hold up the watch.

use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

/// Events waiting for the writer, per cluster.
pub const QUEUE: usize = 256;
/// How long one Event may take to publish.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The `reason` label values of `permdrift_events_dropped_total`.
pub const QUEUE_FULL: &str = "queue-full";
pub const TIMEOUT: &str = "timeout";
pub const FAILED: &str = "failed";
pub const DROP_REASONS: [&str; 3] = [QUEUE_FULL, TIMEOUT, FAILED];

/// The loop's end of the queue.
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
    source: String,
    metrics: Metrics,
}

impl EventQueue {
    /// Queues an Event on `reference`; drops (and counts) it when the queue is full.
    pub fn send(&self, event: Event, reference: ObjectReference) {
        match self.tx.try_send((event, reference)) {
            Ok(()) => {}
            Err(TrySendError::Full((event, _))) => {
                self.dropped(QUEUE_FULL);
                tracing::warn!(reason = %event.reason, "Kubernetes Event dropped: the queue is full");
            }
            // The writer ended (the runtime is going down).
            Err(TrySendError::Closed(_)) => self.dropped(FAILED),
        }
    }

    fn dropped(&self, reason: &str) {
        self.metrics
            .events_dropped
            .with_label_values(&[self.source.as_str(), reason])
            .inc();
    }
}

/// Starts the writer of one cluster's Events, inside the current span (the
/// source's). It ends once the queue is dropped and drained.
pub fn spawn(
    recorder: Recorder,
    source: &str,
    metrics: Metrics,
    capacity: usize,
    timeout: Duration,
) -> (EventQueue, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let writer = write(recorder, rx, source.to_owned(), metrics.clone(), timeout);
    let handle = tokio::spawn(writer.in_current_span());
    let queue = EventQueue {
        tx,
        source: source.to_owned(),
        metrics,
    };
    (queue, handle)
}

async fn write(
    recorder: Recorder,
    mut rx: mpsc::Receiver<(Event, ObjectReference)>,
    source: String,
    metrics: Metrics,
    timeout: Duration,
) {
    let dropped = |reason: &str| {
        metrics
            .events_dropped
            .with_label_values(&[source.as_str(), reason])
            .inc();
    };
    while let Some((event, reference)) = rx.recv().await {
        match tokio::time::timeout(timeout, recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                dropped(FAILED);
                tracing::warn!(error = %e, reason = %event.reason, "could not publish a Kubernetes Event");
            }
            Err(_) => {
                dropped(TIMEOUT);
                tracing::warn!(timeout_seconds = timeout.as_secs_f64(), reason = %event.reason,
                    "Kubernetes Event dropped: the API server did not answer in time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::{EventType, Reporter};

    fn event(n: usize) -> (Event, ObjectReference) {
        let event = Event {
            type_: EventType::Normal,
            reason: format!("Test{n}"),
            note: None,
            action: "Test".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            kind: Some("ClusterRole".into()),
            name: Some(format!("r{n}")),
            ..ObjectReference::default()
        };
        (event, reference)
    }

    /// A real client and Recorder against an API server that accepts
    /// connections and never answers: each Event times out, one that finds
    /// the queue full is dropped at once, and the sender never waits.
    #[tokio::test]
    async fn a_silent_api_server_costs_timeouts_and_drops_not_waits() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accept and hold every connection, reading nothing back.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        crate::source::k8s::install_crypto_provider();
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "permdrift".into(),
                instance: None,
            },
        );
        let metrics = Metrics::new(&[("lab".into(), "kubernetes")]).unwrap();
        let timeout = Duration::from_millis(300);
        let (queue, writer) = spawn(recorder, "lab", metrics.clone(), 1, timeout);
        let count = |reason: &str| {
            metrics
                .events_dropped
                .with_label_values(&["lab", reason])
                .get()
        };
        let (e, r) = event(1);
        queue.send(e, r);
        // Wait until the writer holds the first one (the queue is empty again).
        while queue.tx.capacity() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        for n in 2..=3 {
            let (e, r) = event(n);
            queue.send(e, r);
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "sending never waits on the writer"
        );
        assert_eq!(count(QUEUE_FULL), 1, "the third finds the queue full");
        drop(queue);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer ends once its queue is dropped and drained")
            .unwrap();
        assert_eq!(count(TIMEOUT), 2, "the first two time out");
        assert!(started.elapsed() >= timeout, "the second waited its turn");
        assert_eq!(count(FAILED), 0);
        let page = metrics.render().unwrap();
        assert!(
            page.contains("permdrift_events_dropped_total{reason=\"timeout\",source=\"lab\"} 2"),
            "{page}"
        );
        silent.abort();
    }

    #[test]
    fn drop_reasons_exist_from_the_start() {
        let metrics = Metrics::new(&[("lab".into(), "kubernetes")]).unwrap();
        let page = metrics.render().unwrap();
        for reason in DROP_REASONS {
            let line =
                format!("permdrift_events_dropped_total{{reason=\"{reason}\",source=\"lab\"}} 0");
            assert!(page.contains(&line), "{line} in {page}");
        }
    }
}
