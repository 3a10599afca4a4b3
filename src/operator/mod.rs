//! The operator: `permdrift run`.
//!
//! Watches every configured cluster and polls every configured AWS account,
//! judges each change against the source's approved baseline (`decide`),
//! records it in the store, and reports it to Prometheus, Kubernetes Events
//! and the logs. One task per source owns that source's state; leadership
//! (`leader`) decides who records; `http` serves metrics and health, `api`
//! the authenticated API over TLS (`tls`), both through `serve`.

pub mod api;
pub mod http;
pub mod judge;
pub mod kube_loop;
pub mod leader;
pub mod records;
pub mod run;
pub mod serve;
pub mod source;
pub mod store;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The wall clock, read only at the edges (Unix seconds).
pub fn now() -> f64 {
    jiff::Timestamp::now().as_microsecond() as f64 / 1e6
}

/// RFC 3339 text of Unix seconds, for journal records.
pub fn rfc3339(unix: f64) -> String {
    jiff::Timestamp::from_microsecond((unix * 1e6) as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Requests to a source's loop.
#[derive(Debug)]
pub enum Command {
    /// Accept every open widening into the baseline; replies with how many.
    AcceptBaseline {
        /// Who asked, as authenticated (journaled with each accepted object).
        by: String,
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// Which sources have a complete snapshot (what `/readyz` reports).
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, bool>>>);

impl Readiness {
    pub fn new(sources: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(Mutex::new(
            sources.into_iter().map(|s| (s, false)).collect(),
        )))
    }

    pub fn set(&self, source: &str, ready: bool) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(source.to_owned(), ready);
        }
    }

    /// Sources still without a complete snapshot.
    pub fn waiting(&self) -> Vec<String> {
        match self.0.lock() {
            Ok(map) => map
                .iter()
                .filter(|(_, ready)| !**ready)
                .map(|(s, _)| s.clone())
                .collect(),
            Err(_) => vec!["(state unavailable)".into()],
        }
    }
}
