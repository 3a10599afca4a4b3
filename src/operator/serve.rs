//! Serving one listener with limits that hostile clients cannot outlast.
//!
//! Connections come in on a TCP listener; each is admitted only while the
//! listener is under its connection limit (else closed at once, so the
//! backlog never fills with them), optionally wrapped in TLS within the
//! header timeout, and served by hyper's HTTP/1 connection with its header
//! read timeout (idle keep-alive connections included) and tower-http's
//! request timeout and body limit. Handlers see the peer address as axum's
//! `ConnectInfo`. A shutdown signal stops accepting and lets requests in
//! flight finish.

use crate::config::ServerLimits;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

/// One listener's serving parameters.
pub struct Serve {
    /// `http` or `api`: the metric label and log name.
    pub name: &'static str,
    pub limits: ServerLimits,
    pub tls: Option<TlsAcceptor>,
    pub metrics: Metrics,
}

/// The application with the request timeout applied. Each router applies
/// its own body limit, inside whatever records its refusals.
fn limited(app: Router, limits: &ServerLimits) -> Router {
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout.0,
    ))
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    serve: Serve,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = limited(app, &serve.limits);
    let slots = Arc::new(Semaphore::new(serve.limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(serve.limits.header_timeout.0)
        .keep_alive(true);
    let open = serve
        .metrics
        .http_connections
        .with_label_values(&[serve.name]);
    let refused = serve
        .metrics
        .http_connections_refused
        .with_label_values(&[serve.name]);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: back off briefly
                    // rather than spin, and keep serving what is open.
                    tracing::warn!(listener = serve.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.inc();
        let app = app
            .clone()
            .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let tls = serve.tls.clone();
        let handshake_timeout = serve.limits.header_timeout.0;
        let http = http.clone();
        let watcher = graceful.watcher();
        let open = open.clone();
        let name = serve.name;
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = http.serve_connection(TokioIo::new(tls_stream), service);
                            watcher.watch(conn).await.map_err(|e| e.to_string())
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await.map_err(|e| e.to_string())
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Requests in flight get a moment to finish; idle connections close now.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

/// Resolves once `shutdown` is true (the guard `wait_for` returns is not
/// `Send`, so it must not live in the accept loop's future).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Raises the soft open-file limit to the hard one, so the connection limits
/// (not the kernel) decide when a client is turned away. Returns the limit.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}
