//! `permdrift run --config FILE`: the operator.

use super::Ctx;
use crate::config::{Config, LogFormat, LogLevel};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The operator configuration (YAML; see docs/operator.md and examples/permdrift.yaml).
    #[arg(long, value_name = "FILE", env = "PERMDRIFT_CONFIG")]
    config: PathBuf,
    /// Check the configuration and exit without starting anything.
    #[arg(long)]
    check: bool,
}

fn init_logging(config: &Config) {
    let level = match config.logging.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    // RUST_LOG, when set, refines the configured level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("permdrift={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.logging.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<u8> {
    let config = Config::load(&args.config)?;
    if args.check {
        ctx.info(&format!(
            "{}: valid ({} sources)",
            args.config.display(),
            config.sources.len()
        ));
        return Ok(0);
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            stop_tx.send_replace(true);
        });
        crate::operator::run::run(config, stop_rx).await
    })?;
    Ok(0)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
