//! The operator's handle on the store.
//!
//! Source loops append records and read a source's history through it; only
//! the leader has the store open for writing (the store's lock is held for
//! as long as it leads), so a follower's appends are refused rather than
//! interleaved. The store's calls are blocking file I/O with fsync; they run
//! in `block_in_place` so the runtime keeps serving other tasks.

use crate::metrics::Metrics;
use crate::snapshot::SourceSnapshot;
use crate::store::{JournalKey, Store};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Records between two head log lines (besides every baseline).
const CHECKPOINT_EVERY: u64 = 1000;

/// Why the store did not open.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds its lock; worth retrying soon.
    Held,
    Failed(String),
}

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
    pub async fn open(&self) -> Result<Vec<String>, OpenError> {
        let mut guard = self.inner.lock().await;
        if guard.is_some() {
            return Ok(Vec::new());
        }
        let dir = self.dir.clone();
        let key = self.key.clone();
        let attempt = tokio::task::spawn_blocking(move || Store::open(&dir, key.as_ref()))
            .await
            .map_err(|e| OpenError::Failed(format!("store: {e}")))?;
        match attempt {
            Ok((store, warnings)) => {
                *guard = Some(store);
                Ok(warnings)
            }
            Err(crate::store::StoreError::Locked { .. }) => Err(OpenError::Held),
            Err(e) => Err(OpenError::Failed(e.to_string())),
        }
    }

    /// Resets a store this process could not open (see `Store::reset`);
    /// returns the previous head. Refused while the store is open: an intact
    /// journal is never started over from the API.
    pub async fn reset_refused(&self, reason: &str, actor: &str) -> Result<String, String> {
        let guard = self.inner.lock().await;
        if guard.is_some() {
            return Err(
                "the journal is open and intact; a reset is only for a journal the operator refuses to open"
                    .into(),
            );
        }
        let dir = self.dir.clone();
        let key = self.key.clone();
        let (reason, actor) = (reason.to_owned(), actor.to_owned());
        let at = jiff::Timestamp::now().to_string();
        let (store, record) = tokio::task::spawn_blocking(move || {
            crate::store::Store::reset(&dir, key.as_ref(), &reason, &actor, &at)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
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

    pub async fn append(
        &self,
        kind: &str,
        source: &str,
        body: Value,
        at: &str,
    ) -> Result<u64, String> {
        self.append_to(kind, Some(source), body, at).await
    }

    /// Appends a record that belongs to no one source (API requests).
    pub async fn append_global(&self, kind: &str, body: Value, at: &str) -> Result<u64, String> {
        self.append_to(kind, None, body, at).await
    }

    async fn append_to(
        &self,
        kind: &str,
        source: Option<&str>,
        body: Value,
        at: &str,
    ) -> Result<u64, String> {
        let mut guard = self.inner.lock().await;
        let store = guard
            .as_mut()
            .ok_or("store is not open: this replica does not lead")?;
        let record = tokio::task::block_in_place(|| store.append(kind, source, body, at))
            .map_err(|e| e.to_string())?;
        self.metrics
            .journal_records
            .with_label_values(&[kind])
            .inc();
        self.metrics.journal_head.set(record.seq as f64);
        // The head leaves the store at every baseline and every 1,000
        // records: a copy kept elsewhere is what proves a journal was not
        // shortened or rewritten (docs/journal.md).
        if kind == crate::operator::records::BASELINE || record.seq % CHECKPOINT_EVERY == 0 {
            tracing::info!(seq = record.seq, head = %store.head(), "journal checkpoint");
        }
        Ok(record.seq)
    }

    /// Every record of the open store, oldest first, verified.
    async fn records(&self) -> Result<Vec<crate::store::Record>, String> {
        let guard = self.inner.lock().await;
        let store = guard
            .as_ref()
            .ok_or("store is not open: this replica does not lead")?;
        tokio::task::block_in_place(|| store.records()).map_err(|e| e.to_string())
    }

    /// `(kind, body)` of every record of `source`, oldest first.
    pub async fn source_records(&self, source: &str) -> Result<Vec<(String, Value)>, String> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter(|r| r.source.as_deref() == Some(source))
            .map(|r| (r.kind, r.body))
            .collect())
    }

    /// `(at, body)` of every record of `kind` that belongs to no source.
    pub async fn global_records(&self, kind: &str) -> Result<Vec<(String, Value)>, String> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter(|r| r.source.is_none() && r.kind == kind)
            .map(|r| (r.at, r.body))
            .collect())
    }

    pub async fn put_snapshot(&self, snapshot: &SourceSnapshot) -> Result<String, String> {
        let mut guard = self.inner.lock().await;
        let store = guard
            .as_mut()
            .ok_or("store is not open: this replica does not lead")?;
        tokio::task::block_in_place(|| store.put_snapshot(snapshot)).map_err(|e| e.to_string())
    }

    pub async fn get_snapshot(&self, digest: &str) -> Result<SourceSnapshot, String> {
        let guard = self.inner.lock().await;
        let store = guard
            .as_ref()
            .ok_or("store is not open: this replica does not lead")?;
        tokio::task::block_in_place(|| store.get_snapshot(digest)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(attempt, Err(OpenError::Held)), "{attempt:?}");
        assert!(!handle.is_open().await);
        drop(held);
        assert!(handle.open().await.is_ok());
        assert!(handle.is_open().await);
    }
}
