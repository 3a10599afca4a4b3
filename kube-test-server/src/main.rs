//! The `kube-test-server` binary: flags in, [`kube_test_server::Server`]
//! bound, `listening on http://ADDR` as the first stdout line, then serving
//! until SIGTERM/SIGINT. Logs go to stderr (`RUST_LOG`, default `warn`).

#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use kube_test_server::{Args, Server};

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let server = Server::bind(&args).await?;
    if let Some((n, took)) = server.loaded() {
        eprintln!("loaded {n} objects in {took:.2?}");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", server.local_addr()).context("stdout")?;
        out.flush().context("stdout")?;
    }
    server.serve(shutdown_signal()).await;
    Ok(())
}
