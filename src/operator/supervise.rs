//! Supervision of the operator's long-running tasks.
//!
//! Each source loop runs as its own task; its outcome comes back here. A
//! loop that panics, or ends while the operator is not shutting down, is
//! never dropped silently: it is logged, its source stops counting as
//! recorded (`permdrift_source_recording`, `permdrift_recording`), and
//! `/healthz` fails with the reason, so the kubelet restarts the pod and
//! the new one starts from the journal.

use super::{Health, Recording};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs `task` for source `name` and reports its end to `health` unless it
/// ended because `shutdown` turned true.
pub fn spawn_source<F>(
    name: String,
    health: Health,
    shutdown: watch::Receiver<bool>,
    task: F,
) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let inner = tokio::spawn(task);
    tokio::spawn(async move {
        let reason = match inner.await {
            Ok(()) if *shutdown.borrow() => return,
            Ok(()) => "its loop ended unexpectedly".to_owned(),
            Err(e) if e.is_panic() => {
                format!("its loop panicked: {}", panic_text(e.into_panic().as_ref()))
            }
            Err(e) => format!("its loop was cancelled: {e}"),
        };
        tracing::error!(source = %name, reason = %reason,
            "source loop stopped: /healthz fails so that the pod is restarted");
        health.set_recording(&name, Recording::Failed(reason.clone()));
        health.task_failed(&name, reason);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn fresh() -> (Health, Metrics) {
        let metrics = Metrics::new(&[("prod".into(), "kubernetes")]).unwrap();
        (Health::new(["prod".to_owned()], metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn a_panicking_source_loop_fails_the_liveness_check() {
        let (health, metrics) = fresh();
        let (_tx, shutdown) = watch::channel(false);
        assert_eq!(health.liveness(), Ok(()));
        spawn_source("prod".into(), health.clone(), shutdown, async {
            panic!("index invariant broken")
        })
        .await
        .unwrap();
        let e = health.liveness().unwrap_err();
        assert!(
            e.contains("prod") && e.contains("index invariant broken"),
            "{e}"
        );
        assert!(health.problems().iter().any(|p| p.contains("panicked")));
        let page = metrics.render().unwrap();
        assert!(
            page.contains("permdrift_source_recording{source=\"prod\"} 0"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn a_loop_that_ends_by_itself_is_noticed_and_one_that_ends_on_shutdown_is_not() {
        let (health, _) = fresh();
        let (tx, shutdown) = watch::channel(false);
        spawn_source("prod".into(), health.clone(), shutdown.clone(), async {})
            .await
            .unwrap();
        assert!(
            health
                .liveness()
                .unwrap_err()
                .contains("ended unexpectedly")
        );

        let (health, _) = fresh();
        tx.send_replace(true);
        spawn_source("prod".into(), health.clone(), shutdown, async {})
            .await
            .unwrap();
        assert_eq!(health.liveness(), Ok(()));
    }
}
