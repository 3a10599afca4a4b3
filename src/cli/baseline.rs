//! `permdrift baseline accept`: accept open widenings into the baseline,
//! through a running operator's authenticated API (`api_client`), or
//! directly in a store no operator holds.

use super::Ctx;
use super::api_client::{self, Credential};
use crate::operator::records;
use crate::signature::{Action, SecretKey, Statement};
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
#[command(
    after_help = "Through a running operator, the request goes to its authenticated API over TLS \
    (`api.listen`, 8443 by default) with your Kubernetes identity: --token, else the kubeconfig's \
    token. The operator checks it with TokenReview and needs RBAC verb `accept` on \
    `baselines.permdrift.dev` named by the source (the chart's permdrift-baseline-acceptor \
    ClusterRole). Without Kubernetes, sign the request with a key the operator's config lists \
    (`permdrift keygen`, then --key FILE --key-id ID). Every accept and every refusal is journaled \
    with who asked.\n\nExamples:\n  \
    kubectl -n permdrift port-forward svc/permdrift 8443 &\n  \
    permdrift baseline accept --source prod-eu --server https://127.0.0.1:8443 --ca-cert ca.crt\n  \
    permdrift baseline accept --source acct --fingerprint sha256:9f86d0... --key alice.key --key-id alice\n  \
    permdrift baseline accept --store /var/lib/permdrift   # no operator running on it"
)]
pub struct AcceptArgs {
    /// Only this source [default: every source].
    #[arg(long)]
    source: Option<String>,
    /// A running operator's API address (TLS).
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8443",
        conflicts_with = "store"
    )]
    server: String,
    #[command(flatten)]
    trust: api_client::TrustArgs,
    #[command(flatten)]
    bearer: api_client::TokenArgs,
    /// Sign the request with this ed25519 private key (PEM, from `permdrift keygen`)
    /// instead of sending a token.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "token",
        requires = "key_id"
    )]
    key: Option<PathBuf>,
    /// The name the operator's config lists the key under.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
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
        None => online(ctx, &args),
    }
}

/// How long a signed request stays valid: long enough to reach the operator.
const SIGNED_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

fn online(ctx: &Ctx, args: &AcceptArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let url = match &args.source {
        Some(s) => format!(
            "{}/api/v1/baseline/accept?source={}",
            args.server.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!(
            "{}/api/v1/baseline/accept",
            args.server.trim_end_matches('/')
        ),
    };
    let credential = match (&args.key, &args.key_id) {
        (Some(file), Some(key_id)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--key {}", file.display()))?;
            let key =
                SecretKey::from_pem(&text).with_context(|| format!("--key {}", file.display()))?;
            let now = jiff::Timestamp::now();
            let statement = Statement {
                action: Action::BaselineAccept,
                source: args.source.clone(),
                key_id: key_id.clone(),
                issued_at: now,
                expires_at: now + SIGNED_LIFETIME,
                nonce: hex::encode(rand::random::<[u8; 16]>()),
            };
            Credential::Signed(serde_json::to_string(&key.sign(statement))?)
        }
        _ => Credential::Bearer(runtime.block_on(args.bearer.token())?),
    };
    let (status, body) = runtime.block_on(api_client::send(&url, &args.trust, &credential))?;
    if status != 200 {
        bail!("{url}: {status}: {}", body.trim());
    }
    ctx.info(body.trim());
    Ok(0)
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
    let at = crate::operator::now();
    // Offline, whoever can write the store's directory is the authority;
    // the journal names the local account that did it.
    let by = format!(
        "store-access:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    for source in sources {
        let replayed = records::replay(
            all.iter()
                .filter(|r| r.source.as_deref() == Some(source.as_str())),
        )?;
        for (key, open) in &replayed.open {
            let raw = replayed.open_raw.get(key).cloned().flatten();
            let exposure = crate::operator::seconds_since(open.detected_at, at);
            for body in [
                records::accepted_patch(key, raw, &by),
                records::close(key, open, "accepted", exposure),
            ] {
                let (kind, value) = body.encode()?;
                store.append(kind, Some(&source), value, &at.to_string())?;
            }
        }
        ctx.info(&format!(
            "{source}: accepted {} open widening(s) into the baseline",
            replayed.open.len()
        ));
    }
    Ok(0)
}
