//! `permdrift suggest`: post an agent suggestion to a running operator.
//!
//! A file (markdown or text, optional YAML front matter, as `permdrift diff
//! --suggestions` reads it) goes to the operator's `POST
//! /api/v1/suggestions` with the caller's Kubernetes bearer token; the
//! operator parses, journals and holds it for attribution
//! (docs/attribution.md) and answers with what it understood.

use super::Ctx;
use super::api_client::{self, Credential};
use anyhow::{Context, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    permdrift suggest --server https://permdrift.example:8443 --ca-cert ca.crt answer.md\n  \
    PERMDRIFT_TOKEN=$(cat token) permdrift suggest --server https://127.0.0.1:8443 --fingerprint sha256:... reply.txt")]
pub struct SuggestArgs {
    /// The suggestion: markdown or text, with optional front matter (id, agent, at, url).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The operator's API (`api.listen`), e.g. https://permdrift.example:8443.
    #[arg(long, value_name = "URL")]
    server: String,
    #[command(flatten)]
    trust: api_client::TrustArgs,
    #[command(flatten)]
    bearer: api_client::TokenArgs,
}

pub fn run(ctx: &Ctx, args: SuggestArgs) -> anyhow::Result<u8> {
    // Sent as read: the operator checks size, encoding and front matter, and
    // says what is wrong in its answer.
    let body = std::fs::read(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = runtime.block_on(args.bearer.token())?;
    let name_query =
        percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC);
    let url = format!(
        "{}/api/v1/suggestions?name={name_query}",
        args.server.trim_end_matches('/')
    );
    let credential = Credential::BearerText { token, body };
    let (status, reply) = runtime.block_on(api_client::send(&url, &args.trust, &credential))?;
    if status != 200 {
        bail!("{}: {status}: {}", args.file.display(), reply.trim());
    }
    ctx.info(reply.trim());
    Ok(0)
}
