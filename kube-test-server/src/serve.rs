//! Connections. One listening port speaks both plain HTTP and HTTPS: the
//! first byte of each connection tells a TLS ClientHello (0x16) from an HTTP
//! request. HTTPS exists because kubectl (client-go's clientcmd) only sends
//! tokens and basic-auth credentials over TLS; it uses a fixed test-only
//! certificate (CA in `tls/ca.crt`, valid for 127.0.0.1, ::1 and localhost).
//! Each request is handed to `http::handle` with the peer address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::http::{self, App};

/// The test CA that signed the server certificate; put it in kubeconfigs
/// as `certificate-authority-data`.
pub const CA_PEM: &str = include_str!("tls/ca.crt");
const CERT_PEM: &str = include_str!("tls/server.crt");
const KEY_PEM: &str = include_str!("tls/server.key");

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("embedded TLS material is invalid: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn acceptor() -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_slice_iter(CERT_PEM.as_bytes())
        .chain(CertificateDer::pem_slice_iter(CA_PEM.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes())?;
    // Name the provider: both ring and aws-lc-rs are compiled into this
    // package, so there is no unambiguous process default.
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

async fn serve_io<I>(io: I, app: Arc<App>, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(http::handle(app, peer, req.map(Body::new)).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        // dropped watches (an injected fault) end up here too
        tracing::debug!("connection from {peer}: {e}");
    }
}

async fn serve_conn(tcp: TcpStream, peer: SocketAddr, app: Arc<App>, tls: TlsAcceptor) {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => match tls.accept(tcp).await {
            Ok(stream) => serve_io(stream, app, peer).await,
            Err(e) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
        },
        Ok(_) => serve_io(tcp, app, peer).await,
        Err(e) => tracing::debug!("reading from {peer}: {e}"),
    }
}

/// Accepts connections until `stop` resolves.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    tls: TlsAcceptor,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(serve_conn(tcp, peer, app.clone(), tls.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
}
