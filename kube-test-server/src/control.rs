//! The test-control API under `/_testserver/`: health, request statistics,
//! the fault configuration, the deny list and the bearer tokens. It is served before
//! authentication, fault injection and auditing, so tests can always steer
//! the server, whatever faults are active.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::auth;
use crate::faults::FaultConfig;
use crate::http::App;
use crate::tokens::TokenSpecError;

#[derive(Default)]
struct Counters {
    requests: BTreeMap<String, u64>,
    bytes: BTreeMap<String, u64>,
    total_requests: u64,
    total_bytes: u64,
}

/// Request counts by "verb resource" and bytes sent.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Counters>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count_request(&self, key: &str) {
        let mut c = self.lock();
        c.total_requests += 1;
        *c.requests.entry(key.to_string()).or_default() += 1;
    }

    pub fn add_bytes(&self, key: &str, n: usize) {
        let mut c = self.lock();
        c.total_bytes += n as u64;
        *c.bytes.entry(key.to_string()).or_default() += n as u64;
    }

    pub fn snapshot(&self) -> Value {
        let c = self.lock();
        json!({
            "requests": c.requests,
            "bytes": c.bytes,
            "total_requests": c.total_requests,
            "total_bytes": c.total_bytes,
        })
    }

    pub fn reset(&self) {
        *self.lock() = Counters::default();
    }
}

fn reply(code: StatusCode, v: Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(&v).unwrap_or_default(),
    )
        .into_response()
}

fn bad(msg: impl std::fmt::Display) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": msg.to_string()}))
}

fn parse(body: &Bytes) -> Result<Value, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
}

pub fn handle(app: &App, method: &Method, path: &str, body: &Bytes) -> Response {
    let sub = path.trim_start_matches("/_testserver").trim_matches('/');
    match (method.as_str(), sub) {
        ("GET", "healthz") => (StatusCode::OK, "ok").into_response(),
        ("GET", "ca.crt") => (
            StatusCode::OK,
            [("content-type", "application/x-pem-file")],
            crate::serve::CA_PEM,
        )
            .into_response(),
        ("GET", "stats") => {
            let mut s = app.stats.snapshot();
            let st = app.read_store();
            s["resource_version"] = json!(st.current_rv());
            s["objects"] = json!(st.total_objects());
            s["watchers"] = json!(st.watcher_count());
            reply(StatusCode::OK, s)
        }
        ("DELETE", "stats") | ("POST", "stats/reset") => {
            app.stats.reset();
            reply(StatusCode::OK, json!({"reset": true}))
        }
        ("GET", "faults") => reply(StatusCode::OK, app.faults.describe()),
        ("POST" | "PUT", "faults") => match parse(body).and_then(FaultConfig::parse) {
            Ok(cfg) => {
                app.faults.set(cfg);
                reply(StatusCode::OK, app.faults.describe())
            }
            Err(e) => bad(e),
        },
        ("DELETE", "faults") => {
            app.faults.set(FaultConfig::default());
            reply(StatusCode::OK, app.faults.describe())
        }
        ("GET", "deny") => {
            let rules = app.deny.read().unwrap_or_else(|e| e.into_inner()).clone();
            reply(StatusCode::OK, json!({"rules": rules}))
        }
        ("POST" | "PUT", "deny") => {
            match parse(body).and_then(auth::parse_rules) {
                Ok(new) => {
                    let mut rules = app.deny.write().unwrap_or_else(|e| e.into_inner());
                    // POST adds, PUT replaces
                    if method == Method::PUT {
                        rules.clear();
                    }
                    rules.extend(new);
                    reply(StatusCode::OK, json!({"rules": *rules}))
                }
                Err(e) => bad(e),
            }
        }
        ("DELETE", "deny") => {
            app.deny.write().unwrap_or_else(|e| e.into_inner()).clear();
            reply(StatusCode::OK, json!({"rules": []}))
        }
        ("GET", "tokens") => reply(
            StatusCode::OK,
            app.auth.tokens.describe(jiff::Timestamp::now()),
        ),
        ("POST", "tokens") => match parse(body)
            .map_err(TokenSpecError::from)
            .and_then(|v| app.auth.tokens.insert_json(v))
        {
            Ok(added) => reply(StatusCode::OK, json!({"added": added})),
            Err(e) => bad(e),
        },
        ("DELETE", t) if t.starts_with("tokens/") => {
            let raw = t.trim_start_matches("tokens/");
            let token = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            if app.auth.tokens.remove(&token) {
                reply(StatusCode::OK, json!({"deleted": token}))
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("no token {token:?}")}),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown control endpoint", "endpoints": [
                "GET /_testserver/healthz", "GET /_testserver/ca.crt",
                "GET|DELETE /_testserver/stats", "POST /_testserver/stats/reset",
                "GET|POST|PUT|DELETE /_testserver/faults",
                "GET|POST|PUT|DELETE /_testserver/deny",
                "GET|POST /_testserver/tokens", "DELETE /_testserver/tokens/{token}",
            ]}),
        ),
    }
}
