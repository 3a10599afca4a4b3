//! The operator's handle on the store.
//!
//! Source loops append records and read a source's history through it; only
//! the leader has the store open for writing (the store's lock is held for
//! as long as it leads), so a follower's appends are refused rather than
//! interleaved. The store's calls are blocking file I/O with fsync; they run
//! in `block_in_place` so the runtime keeps serving other tasks.

use super::Error;
use super::records::{ApiRequestBody, Body};
use crate::metrics::Metrics;
use crate::snapshot::SourceSnapshot;
use crate::store::{JournalKey, Record, Store};
use jiff::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Records between two head log lines (besides every baseline).
const CHECKPOINT_EVERY: u64 = 1000;

#[derive(Clone)]
pub struct StoreHandle {
    dir: PathBuf,
    inner: Arc<Mutex<Option<Store>>>,
    metrics: Metrics,
    key: Option<JournalKey>,
}

impl StoreHandle {
    pub fn new(dir: PathBuf, metrics: Metrics) -> Self {
        Self {
            dir,
            inner: Arc::new(Mutex::new(None)),
            metrics,
            key: None,
        }
    }

    /// The journal key (`store.journalKeyFile`): records then carry a MAC.
    pub fn with_key(mut self, key: Option<JournalKey>) -> Self {
        self.key = key;
        self
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Opens the store for writing, in one attempt. While another process
    /// holds it (a previous leader that has not let go yet) the caller
    /// retries, free meanwhile to notice losing leadership or shutdown, and
    /// without keeping appends waiting on the handle.
    /// [`Error::StoreHeld`] says another process holds it.
    pub async fn open(&self) -> Result<Vec<String>, Error> {
        let mut guard = self.inner.lock().await;
        if guard.is_some() {
            return Ok(Vec::new());
        }
        let dir = self.dir.clone();
        let key = self.key.clone();
        let attempt = tokio::task::spawn_blocking(move || Store::open(&dir, key.as_ref()))
            .await
            .map_err(Error::StoreTask)?;
        match attempt {
            Ok((store, warnings)) => {
                *guard = Some(store);
                Ok(warnings)
            }
            Err(crate::store::StoreError::Locked { .. }) => Err(Error::StoreHeld),
            Err(e) => Err(e.into()),
        }
    }

    /// Resets a store this process could not open (see `Store::reset`);
    /// returns the previous head. Refused while the store is open: an intact
    /// journal is never started over from the API.
    pub async fn reset_refused(
        &self,
        reason: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<String, Error> {
        let guard = self.inner.lock().await;
        if guard.is_some() {
            return Err(Error::JournalIntact);
        }
        let dir = self.dir.clone();
        let key = self.key.clone();
        let (reason, actor) = (reason.to_owned(), actor.to_owned());
        let at = at.to_string();
        let (store, record) = tokio::task::spawn_blocking(move || {
            crate::store::Store::reset(&dir, key.as_ref(), &reason, &actor, &at)
        })
        .await
        .map_err(Error::StoreTask)??;
        // Let go of the lock: the supervisor opens the new chain on its next try.
        drop(store);
        Ok(record.body["previous"].to_string())
    }

    /// Publishes the head (gauge and log line) of the open store.
    pub async fn checkpoint(&self, why: &str) {
        if let Some(store) = self.inner.lock().await.as_ref() {
            let head = store.head();
            self.metrics.journal_head.set(head.seq as f64);
            tracing::info!(seq = head.seq, head = %head, keyed = store.keyed(), why, "journal checkpoint");
        }
    }

    /// Closes the store (releasing its lock), e.g. on losing leadership.
    pub async fn close(&self) {
        self.inner.lock().await.take();
    }

    pub async fn is_open(&self) -> bool {
        self.inner.lock().await.is_some()
    }

    /// Appends a record of `source`; returns its seq.
    pub async fn append(&self, source: &str, body: &Body, at: Timestamp) -> Result<u64, Error> {
        self.append_to(Some(source), body, at).await
    }

    /// Appends a record that belongs to no one source (API requests).
    pub async fn append_global(&self, body: &Body, at: Timestamp) -> Result<u64, Error> {
        self.append_to(None, body, at).await
    }

    async fn append_to(
        &self,
        source: Option<&str>,
        body: &Body,
        at: Timestamp,
    ) -> Result<u64, Error> {
        let (kind, value) = body.encode().map_err(Error::Encode)?;
        let mut guard = self.inner.lock().await;
        let store = guard.as_mut().ok_or(Error::NotLeading)?;
        let record =
            tokio::task::block_in_place(|| store.append(kind, source, value, &at.to_string()))?;
        self.metrics
            .journal_records
            .with_label_values(&[kind])
            .inc();
        self.metrics.journal_head.set(record.seq as f64);
        // The head leaves the store at every baseline and every 1,000
        // records: a copy kept elsewhere is what proves a journal was not
        // shortened or rewritten (docs/journal.md).
        if matches!(body, Body::Baseline(_)) || record.seq % CHECKPOINT_EVERY == 0 {
            tracing::info!(seq = record.seq, head = %store.head(), "journal checkpoint");
        }
        Ok(record.seq)
    }

    /// Every record of the open store, oldest first, verified.
    async fn records(&self) -> Result<Vec<Record>, Error> {
        let guard = self.inner.lock().await;
        let store = guard.as_ref().ok_or(Error::NotLeading)?;
        Ok(tokio::task::block_in_place(|| store.records())?)
    }

    /// Every record of `source`, oldest first (for `records::replay`).
    pub async fn source_records(&self, source: &str) -> Result<Vec<Record>, Error> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter(|r| r.source.as_deref() == Some(source))
            .collect())
    }

    /// Every API request record, with its time, oldest first.
    pub async fn api_requests(&self) -> Result<Vec<(Timestamp, ApiRequestBody)>, Error> {
        let mut out = Vec::new();
        for r in self.records().await? {
            // Only API requests: another kind that does not decode must not
            // cost the replay guard its memory of used nonces.
            if r.source.is_some() || r.kind != super::records::API_REQUEST {
                continue;
            }
            // One record that does not read is named and passed over: the
            // others' nonces must still be remembered.
            match (Body::of_record(&r), r.at.parse::<Timestamp>()) {
                (Ok(Some(Body::ApiRequest(body))), Ok(at)) => out.push((at, body)),
                (Err(e), _) => tracing::warn!(error = %e, "API request record not read"),
                (_, Err(e)) => {
                    tracing::warn!(seq = r.seq, at = %r.at, error = %e, "API request record not read")
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub async fn put_snapshot(&self, snapshot: &SourceSnapshot) -> Result<String, Error> {
        let mut guard = self.inner.lock().await;
        let store = guard.as_mut().ok_or(Error::NotLeading)?;
        Ok(tokio::task::block_in_place(|| {
            store.put_snapshot(snapshot)
        })?)
    }

    pub async fn get_snapshot(
        &self,
        digest: &str,
    ) -> Result<SourceSnapshot, crate::store::StoreError> {
        let guard = self.inner.lock().await;
        let Some(store) = guard.as_ref() else {
            return Err(crate::store::StoreError::Invalid {
                dir: self.dir.display().to_string(),
                message: Error::NotLeading.to_string(),
            });
        };
        tokio::task::block_in_place(|| store.get_snapshot(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// API requests come back typed; other global kinds, and a request
    /// record that does not read, are passed over without losing the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn api_requests_survive_other_kinds_and_a_bad_record() {
        use crate::operator::records::Caller;
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::new(dir.path().join("store"), Metrics::new(&[]).unwrap());
        handle.open().await.unwrap();
        let at: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let request = ApiRequestBody {
            action: "baseline-accept".into(),
            source: Some("lab".into()),
            outcome: "accepted".into(),
            status: 200,
            reason: "accepted".into(),
            message: String::new(),
            caller: Some(Caller::Key {
                key_id: "ops".into(),
                nonce: "n1".into(),
            }),
            remote: "127.0.0.1:1".into(),
            accepted: Some(1),
        };
        {
            let mut guard = handle.inner.lock().await;
            let store = guard.as_mut().unwrap();
            let t = at.to_string();
            store
                .append("note", None, serde_json::json!({"n": 1}), &t)
                .unwrap();
            store
                .append("api-request", None, serde_json::json!({"status": "x"}), &t)
                .unwrap();
        }
        handle
            .append_global(&Body::ApiRequest(request.clone()), at)
            .await
            .unwrap();
        assert_eq!(handle.api_requests().await.unwrap(), vec![(at, request)]);
    }

    #[tokio::test]
    async fn a_held_store_is_reported_at_once_and_opens_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (held, _) = Store::open(&path, None).unwrap();
        let handle = StoreHandle::new(path, Metrics::new(&[]).unwrap());
        // One attempt, not a wait: the caller stays free to notice shutdown.
        let attempt = tokio::time::timeout(std::time::Duration::from_secs(5), handle.open())
            .await
            .expect("open returns while the store is held");
        assert!(matches!(attempt, Err(Error::StoreHeld)), "{attempt:?}");
        assert!(!handle.is_open().await);
        drop(held);
        assert!(handle.open().await.is_ok());
        assert!(handle.is_open().await);
    }
}
