//! The operator's HTTP endpoints.
//!
//! Requests come in on one listener; `/metrics` renders the registry in the
//! Prometheus text format, `/healthz` answers while the process runs,
//! `/readyz` once every source has a complete snapshot (else 503 naming the
//! sources still missing), and `POST /api/v1/baseline/accept?source=S` asks a
//! source's loop to accept its open widenings into the baseline.

use super::{Command, Readiness};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub commands: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/baseline/accept", post(accept))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    match s.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let waiting = s.readiness.waiting();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waiting for a complete snapshot of: {}\n",
                waiting.join(", ")
            ),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct AcceptQuery {
    source: Option<String>,
}

async fn accept(State(s): State<HttpState>, Query(q): Query<AcceptQuery>) -> Response {
    let targets: Vec<(&String, &mpsc::Sender<Command>)> = match &q.source {
        Some(name) => match s.commands.get_key_value(name) {
            Some(t) => vec![t],
            None => {
                let known: Vec<&str> = s.commands.keys().map(String::as_str).collect();
                return (
                    StatusCode::NOT_FOUND,
                    format!("no source {name:?} (configured: {})\n", known.join(", ")),
                )
                    .into_response();
            }
        },
        None => s.commands.iter().collect(),
    };
    let mut lines = Vec::new();
    for (name, tx) in targets {
        let (reply, answer) = oneshot::channel();
        if tx.send(Command::AcceptBaseline { reply }).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("source {name:?} is not running\n"),
            )
                .into_response();
        }
        match answer.await {
            Ok(Ok(n)) => lines.push(format!(
                "{name}: accepted {n} open widening(s) into the baseline"
            )),
            Ok(Err(e)) => return (StatusCode::CONFLICT, format!("{name}: {e}\n")).into_response(),
            Err(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("source {name:?} stopped\n"),
                )
                    .into_response();
            }
        }
    }
    (StatusCode::OK, format!("{}\n", lines.join("\n"))).into_response()
}
