//! Watch streams. A registered watcher's channel (fed by the store under its
//! write lock) is turned into a chunked body of newline-delimited
//! `{"type":..,"object":..}` events, one chunk per event, with periodic and
//! final BOOKMARKs, the `timeoutSeconds` deadline, server shutdown, and the
//! drop-after-N-events fault.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::http::App;
use crate::kinds::KindDef;
use crate::store::{EventType, WatchMsg};
use crate::table::{self, Include};

pub struct WatchOpts {
    pub bookmarks: bool,
    pub timeout: Duration,
    pub drop_after: Option<u64>,
    pub api_version: String,
    pub kind: String,
    /// render objects as Tables (kubectl get -w)
    pub table: Option<(Arc<KindDef>, Include)>,
    pub stats_key: String,
    /// the watch's audit event, re-emitted as ResponseComplete at the end
    pub audit_end: AuditSlot,
}

pub type AuditSlot = Arc<std::sync::Mutex<Option<Value>>>;

enum Item {
    Msg(WatchMsg),
    Bookmark(u64),
    End,
}

struct Stream {
    app: Arc<App>,
    rx: UnboundedReceiver<WatchMsg>,
    opts: WatchOpts,
    deadline: Instant,
    next_bookmark: Instant,
    pending: VecDeque<Item>,
    sent: u64,
    done: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Stream {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.done {
                return None;
            }
            if self.opts.drop_after.is_some_and(|n| self.sent >= n) {
                self.done = true;
                // Let the connection flush what was sent, then cut it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some(Err(std::io::Error::other(
                    "injected fault: watch stream dropped",
                )));
            }
            match self.pending.pop_front() {
                Some(Item::Msg(m)) => return Some(Ok(self.encode(m))),
                Some(Item::Bookmark(rv)) => return Some(Ok(self.bookmark(rv, false))),
                Some(Item::End) => {
                    self.done = true;
                    return None;
                }
                None => {}
            }
            let bookmarks = self.opts.bookmarks;
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => self.pending.push_back(Item::Msg(m)),
                    None => self.done = true,
                },
                _ = tokio::time::sleep_until(self.next_bookmark), if bookmarks => self.tick(false),
                _ = tokio::time::sleep_until(self.deadline) => self.tick(true),
                _ = self.shutdown.changed() => self.done = true,
            }
        }
    }

    /// Queues a bookmark (and, at the deadline, the end). The store's
    /// resourceVersion is read under its lock and the channel drained then:
    /// every event up to that version is already queued, so the bookmark
    /// can never overtake one.
    fn tick(&mut self, end: bool) {
        let rv = {
            let st = self.app.read_store();
            let rv = st.current_rv();
            while let Ok(m) = self.rx.try_recv() {
                self.pending.push_back(Item::Msg(m));
            }
            rv
        };
        if self.opts.bookmarks {
            self.pending.push_back(Item::Bookmark(rv));
        }
        if end {
            self.pending.push_back(Item::End);
        } else {
            self.next_bookmark = Instant::now() + self.app.bookmark_interval;
        }
    }

    fn frame(&self, typ: &str, object: &[u8]) -> Bytes {
        let mut buf = Vec::with_capacity(object.len() + 32);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(typ.as_bytes());
        buf.extend_from_slice(b"\",\"object\":");
        buf.extend_from_slice(object);
        buf.extend_from_slice(b"}\n");
        self.app.stats.add_bytes(&self.opts.stats_key, buf.len());
        Bytes::from(buf)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), Value::Null);
        if initial_end {
            meta.insert(
                "annotations".into(),
                json!({"k8s.io/initial-events-end": "true"}),
            );
        }
        let obj =
            json!({"kind": self.opts.kind, "apiVersion": self.opts.api_version, "metadata": meta});
        self.frame("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
    }

    fn encode(&mut self, m: WatchMsg) -> Bytes {
        if m.typ == EventType::InitialEnd {
            return self.bookmark(m.obj.rv, true);
        }
        self.sent += 1;
        let body = match &self.opts.table {
            Some((kd, include)) => {
                let mut meta = Map::new();
                meta.insert("resourceVersion".into(), json!(m.obj.rv.to_string()));
                let t = table::table(kd, std::iter::once(m.obj.value()), *include, meta);
                Bytes::from(serde_json::to_vec(&t).unwrap_or_default())
            }
            None => m.obj.render(&self.opts.api_version),
        };
        self.frame(m.typ.as_str(), &body)
    }
}

impl Drop for Stream {
    // Runs when the stream ends or the client goes away.
    fn drop(&mut self) {
        let slot = self
            .opts
            .audit_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut ev) = slot {
            ev["stage"] = json!("ResponseComplete");
            ev["stageTimestamp"] = json!(crate::audit::micro_time(jiff::Timestamp::now()));
            self.app.audit.emit_event(ev);
        }
    }
}

/// The body of a watch response.
pub fn body(app: Arc<App>, rx: UnboundedReceiver<WatchMsg>, opts: WatchOpts) -> Body {
    let now = Instant::now();
    let shutdown = app.shutdown.clone();
    let s = Stream {
        deadline: now + opts.timeout,
        next_bookmark: now + app.bookmark_interval,
        app,
        rx,
        opts,
        pending: VecDeque::new(),
        sent: 0,
        done: false,
        shutdown,
    };
    Body::from_stream(futures_util::stream::unfold(s, |mut s| async move {
        s.next().await.map(|item| (item, s))
    }))
}

/// A watch that only reports an error (e.g. 410 Expired) and ends, as the
/// real server does for a too-old resourceVersion.
pub fn error_body(status: &Value) -> Bytes {
    let mut v = b"{\"type\":\"ERROR\",\"object\":".to_vec();
    v.extend_from_slice(&serde_json::to_vec(status).unwrap_or_default());
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}
