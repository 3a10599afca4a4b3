//! Why an operator step failed: one error for the store handle, the source
//! loops, judging and start-up.
//!
//! Failures flow from the store, the sources and the Kubernetes API into
//! [`Error`], keeping the underlying error as its `source`; they come out as
//! log lines, readiness reasons (`Recording::Failed`), API refusals and, through
//! [`Error::metric_label`], bounded metric label values.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica does not lead, so it has no store open.
    #[error("store is not open: this replica does not lead")]
    NotLeading,
    /// Another process holds the store's lock; worth retrying soon.
    #[error("store is held by another process")]
    StoreHeld,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reset asked of a journal that opened: only a refused one starts over.
    #[error(
        "the journal is open and intact; a reset is only for a journal the operator refuses to open"
    )]
    JournalIntact,
    /// A blocking store call did not finish (its task panicked or was cancelled).
    #[error("store task: {0}")]
    StoreTask(#[source] tokio::task::JoinError),
    #[error("cannot encode a journal record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Decode(#[from] super::records::DecodeError),
    /// A new baseline snapshot that does not read back as written.
    #[error("the new baseline does not read back: {reason}")]
    BaselineReadBack {
        reason: String,
        #[source]
        source: Option<StoreError>,
    },
    #[error("the baseline snapshot {digest} cannot be read: {source}")]
    BaselineMissing {
        digest: String,
        #[source]
        source: StoreError,
    },
    /// A journaled object that no longer parses (or belongs to another platform).
    #[error("journal patch of {key}: {source}")]
    Patch {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("this replica is not recording ({0})")]
    NotRecording(&'static str),
    /// An AWS account could not be read.
    #[error("{0}")]
    Poll(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("source {source_name:?}: {source}")]
    Kube {
        source_name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A cluster's client could not be made (kubeconfig, in-cluster config).
    #[error(transparent)]
    Cluster(Box<crate::source::k8s::K8sSourceError>),
    #[error("the kubeconfig names no cluster")]
    NoCluster,
    #[error("leader election: {0}")]
    Leader(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error("api.authentication: {0}")]
    Authentication(String),
    #[error("store.journalKeyFile: {0}")]
    JournalKey(#[source] crate::store::KeyError),
}

// Boxed: the kube source's error is large, and every operator Result carries it.
impl From<crate::source::k8s::K8sSourceError> for Error {
    fn from(e: crate::source::k8s::K8sSourceError) -> Self {
        Error::Cluster(Box::new(e))
    }
}

impl Error {
    /// A short, fixed name of the failure, for metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NotLeading => "not-leading",
            Error::StoreHeld => "store-held",
            Error::Store(_) | Error::StoreTask(_) => "store",
            Error::JournalIntact => "journal-intact",
            Error::Encode(_) | Error::Decode(_) => "record",
            Error::BaselineReadBack { .. } | Error::BaselineMissing { .. } => "baseline",
            Error::Patch { .. } => "patch",
            Error::NotRecording(_) => "not-recording",
            Error::Poll(_) => "poll",
            Error::Metrics(_) => "metrics",
            Error::Listen { .. } => "listen",
            Error::Kube { .. } | Error::Cluster(_) | Error::NoCluster => "kube",
            Error::Leader(_) => "leader",
            Error::Tls(_) => "tls",
            Error::Authentication(_) => "authentication",
            Error::JournalKey(_) => "journal-key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_keep_their_cause_and_a_fixed_label() {
        let store = StoreError::Invalid {
            dir: "/s".into(),
            message: "bad".into(),
        };
        let e = Error::BaselineMissing {
            digest: "d".into(),
            source: store,
        };
        assert_eq!(e.metric_label(), "baseline");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("store /s: bad")
        );
        assert_eq!(Error::NotLeading.metric_label(), "not-leading");
        let decode = crate::operator::records::replay([&crate::store::Record {
            seq: 3,
            at: "2026-12-03T10:00:00Z".into(),
            kind: "baseline".into(),
            source: None,
            body: serde_json::json!({}),
            prev: String::new(),
            mac: None,
            hash: String::new(),
        }])
        .map_err(Error::from)
        .unwrap_err();
        assert_eq!(decode.metric_label(), "record");
        assert!(
            decode
                .to_string()
                .starts_with("journal record 3 (baseline)"),
            "{decode}"
        );
    }
}
