//! `permdrift baseline accept`: accept open widenings into the baseline,
//! through a running operator's API, or directly in a store no operator holds.

use super::Ctx;
use crate::operator::records;
use crate::store::Store;
use anyhow::{Context, bail};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum BaselineCommand {
    /// Accept the open widenings of one source (or all) into its baseline.
    Accept(AcceptArgs),
}

#[derive(clap::Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    command: BaselineCommand,
}

#[derive(clap::Args)]
pub struct AcceptArgs {
    /// Only this source [default: every source].
    #[arg(long)]
    source: Option<String>,
    /// A running operator's HTTP address.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        conflicts_with = "store"
    )]
    server: String,
    /// Accept directly in this store (only when no operator is running on it).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// With --store: the journal key file (the operator's store.journalKeyFile).
    #[arg(long, value_name = "PATH", env = "PERMDRIFT_JOURNAL_KEY_FILE")]
    key_file: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: BaselineArgs) -> anyhow::Result<u8> {
    let BaselineCommand::Accept(args) = args.command;
    match &args.store {
        Some(dir) => offline(ctx, dir, args.key_file.as_deref(), args.source.as_deref()),
        None => online(ctx, &args.server, args.source.as_deref()),
    }
}

fn online(ctx: &Ctx, server: &str, source: Option<&str>) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let url = match source {
        Some(s) => format!(
            "{}/api/v1/baseline/accept?source={}",
            server.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("{}/api/v1/baseline/accept", server.trim_end_matches('/')),
    };
    let (status, body) = runtime.block_on(post(&url))?;
    if status != 200 {
        bail!("{url}: {status}: {}", body.trim());
    }
    ctx.info(body.trim());
    Ok(0)
}

async fn post(url: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url}: not a URL"))?;
    // The operator's API is plain HTTP; sending a request meant for TLS in
    // the clear would fail obscurely at best.
    if let Some(scheme) = uri.scheme_str().filter(|s| *s != "http") {
        bail!(
            "{url}: the operator's API speaks plain HTTP, not {scheme}; use --server http://HOST:PORT (for example through `kubectl port-forward`)"
        );
    }
    let host = uri.host().context("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| {
            format!("cannot reach the operator at {host}:{port}; is it running? (or use --store)")
        })?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", format!("{host}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn offline(
    ctx: &Ctx,
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    only: Option<&str>,
) -> anyhow::Result<u8> {
    let key = key_file
        .map(crate::store::JournalKey::from_file)
        .transpose()?;
    let (mut store, warnings) = Store::open(dir, key.as_ref()).with_context(|| {
        format!(
            "cannot open {} for writing (if an operator is running on it, use --server)",
            dir.display()
        )
    })?;
    for w in warnings {
        ctx.warn(&w);
    }
    let all = store.records()?;
    let mut sources: Vec<String> = all.iter().filter_map(|r| r.source.clone()).collect();
    sources.sort();
    sources.dedup();
    if let Some(s) = only {
        if !sources.iter().any(|x| x == s) {
            bail!(
                "the store has no source {s:?} (it has: {})",
                sources.join(", ")
            );
        }
        sources.retain(|x| x == s);
    }
    let at = crate::operator::rfc3339(crate::operator::now());
    for source in sources {
        let replayed = records::replay(
            all.iter()
                .filter(|r| r.source.as_deref() == Some(source.as_str()))
                .map(|r| (r.kind.as_str(), &r.body)),
        );
        for (key, open) in &replayed.open {
            let raw = replayed.open_raw.get(key).cloned().flatten();
            store.append(
                records::BASELINE_PATCH,
                Some(&source),
                records::baseline_patch(key, raw, "accepted"),
                &at,
            )?;
            let exposure = (crate::operator::now() - open.detected_at).max(0.0);
            store.append(
                records::CLOSE,
                Some(&source),
                records::close(key, open, "accepted", exposure),
                &at,
            )?;
        }
        ctx.info(&format!(
            "{source}: accepted {} open widening(s) into the baseline",
            replayed.open.len()
        ));
    }
    Ok(0)
}
