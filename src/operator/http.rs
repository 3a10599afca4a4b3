//! The operator's plain, read-only endpoints.
//!
//! Requests come in on the plain listener that Prometheus and the kubelet
//! reach; `/metrics` renders the registry in the Prometheus text format,
//! `/healthz` answers while every task runs (500 naming any that stopped), `/readyz` once every source
//! has a complete snapshot and, on the leader, every source is judged and
//! recorded (else 503 naming each problem and its reason).
//! Nothing here changes anything: writes go to the authenticated API
//! (`api`), on its own TLS port.

use super::Health;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub health: Health,
}

/// These endpoints take no body at all.
const MAX_BODY: usize = 1024;

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
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

async fn healthz(State(s): State<HttpState>) -> Response {
    match s.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not alive:\n{why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let problems = s.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
            .into_response()
    }
}
