//! `permdrift snapshot`: read state (files, live AWS accounts, live clusters)
//! and write one canonical snapshot.

use super::{Ctx, InputArgs, load, output};
use crate::snapshot::format::{self, Format};
use crate::snapshot::{Snapshot, SourceSnapshot};
use crate::source::aws::{AwsSourceOptions, DEFAULT_MAX_ATTEMPTS, fetch_account};
use crate::source::k8s::{self as kube_source, K8sOptions, K8sProgress};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// File, directory (read recursively) or `-` for stdin: kubectl output, manifests,
    /// `aws iam get-account-authorization-details` output, or permdrift snapshots.
    #[arg(long = "from", value_name = "PATH", num_args = 1..)]
    from: Vec<PathBuf>,
    /// Write here (atomically) instead of standard output;
    /// a regular file only: a symbolic link, device or FIFO there is refused
    /// (use `> FILE` for those); an existing file keeps its permissions.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format [default: json for a .json output file, else yaml].
    #[arg(long, value_enum)]
    format: Option<Format>,
    #[command(flatten)]
    input: InputArgs,
    // The live sources last: their help headings apply to what follows them.
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(clap::Args)]
#[command(next_help_heading = "Live AWS account")]
struct AwsArgs {
    /// Read one AWS account's IAM (GetAccountAuthorizationDetails) with the standard credential chain.
    #[arg(long)]
    aws: bool,
    /// Named profile from the shared AWS config files.
    #[arg(long, requires = "aws")]
    profile: Option<String>,
    /// Signing region [default: configured region, else us-east-1].
    #[arg(long, requires = "aws")]
    region: Option<String>,
    /// Send IAM and STS calls here instead of AWS (e.g. a moto or LocalStack endpoint).
    #[arg(long, requires = "aws", value_name = "URL")]
    endpoint_url: Option<String>,
    /// Assume this role first (through STS) and read as it.
    #[arg(long, requires = "aws", value_name = "ARN")]
    assume_role: Option<String>,
    /// Attempts per AWS call, with exponential backoff and jitter on throttling.
    #[arg(long, requires = "aws", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
}

#[derive(clap::Args)]
#[command(next_help_heading = "Live Kubernetes clusters")]
struct KubeArgs {
    /// Read live clusters' RBAC and ServiceAccounts through their API servers
    /// (the kubeconfig's current context unless told otherwise).
    #[arg(long)]
    kube: bool,
    /// Kubeconfig context to read; repeat for several clusters. Each cluster
    /// becomes a source named by its context.
    #[arg(long = "context", value_name = "NAME", requires = "kube")]
    contexts: Vec<String>,
    /// Read every context in the kubeconfig.
    #[arg(long, requires = "kube", conflicts_with = "contexts")]
    all_contexts: bool,
    /// Kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE", requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// Use the pod's service account instead of a kubeconfig (source `in-cluster`).
    #[arg(long, requires = "kube", conflicts_with_all = ["contexts", "all_contexts", "kubeconfig"])]
    in_cluster: bool,
    /// Name of the source when one cluster is read [default: its context, or `in-cluster`].
    #[arg(long = "kube-source-name", value_name = "NAME", requires = "kube")]
    kube_source_name: Option<String>,
}

impl KubeArgs {
    fn options(&self) -> K8sOptions {
        K8sOptions {
            kubeconfig: self.kubeconfig.clone(),
            contexts: self.contexts.clone(),
            all_contexts: self.all_contexts,
            in_cluster: self.in_cluster,
        }
    }
}

impl AwsArgs {
    fn options(&self) -> AwsSourceOptions {
        AwsSourceOptions {
            profile: self.profile.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            assume_role: self.assume_role.clone(),
            max_attempts: self.max_attempts,
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Reads one live AWS account into a source.
async fn aws_source(
    ctx: &Ctx,
    args: &AwsArgs,
    input: &InputArgs,
) -> anyhow::Result<SourceSnapshot> {
    let progress = |p: crate::source::aws::AwsProgress| ctx.info(&format!("aws: {p}"));
    let fetch = fetch_account(&args.options(), &progress).await?;
    let mut source =
        crate::input::account_source(&fetch.account_id, &fetch.document, input.options())?;
    if let Some(name) = &input.aws_name {
        source.name = name.clone();
    }
    source.meta.collected_at = Some(now());
    ctx.info(&format!(
        "aws: account {}: {} entities in {} page(s), {} request(s)",
        fetch.account_id,
        source.object_count(),
        fetch.pages,
        fetch.requests
    ));
    Ok(source)
}

/// How often a cluster's page-by-page progress is printed (the last page
/// of each resource always is).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Reads every selected cluster (concurrently) into sources, in the order
/// the clusters were named.
async fn kube_sources(ctx: &Ctx, args: &KubeArgs) -> anyhow::Result<Vec<SourceSnapshot>> {
    kube_source::install_crypto_provider();
    let mut targets = kube_source::resolve_clusters(&args.options()).await?;
    if let Some(name) = &args.kube_source_name {
        match targets.as_mut_slice() {
            [one] => one.info.name = name.clone(),
            _ => bail!(
                "--kube-source-name names one cluster, but {} are read; each source is named by \
                 its context (read them in separate runs to rename them)",
                targets.len()
            ),
        }
    }
    let reads = targets.iter().map(|target| async move {
        let info = &target.info;
        let mut config = target.config.clone();
        // A list page that stalls this long means a hung connection.
        config.read_timeout = Some(Duration::from_secs(120));
        let client = kube_source::ClusterTarget {
            info: info.clone(),
            config,
        }
        .client()?;
        let started = Instant::now();
        let last_line = Mutex::new(None::<Instant>);
        let pages = Mutex::new(0u32);
        let requests = Mutex::new(0u32);
        let progress = |p: K8sProgress| {
            *pages.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            *requests.lock().unwrap_or_else(|e| e.into_inner()) = p.requests;
            let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
            if !p.more || last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                *last = Some(Instant::now());
                ctx.info(&format!("kube {}: {p}", info.name));
            }
        };
        let mut source = kube_source::snapshot_cluster(client, info, &progress).await?;
        source.meta.collected_at = Some(now());
        let pages = *pages.lock().unwrap_or_else(|e| e.into_inner());
        let requests = *requests.lock().unwrap_or_else(|e| e.into_inner());
        ctx.info(&format!(
            "kube {}: {} objects from {} ({} page{}, {} request{}) in {:.1}s",
            info.name,
            kube_source::thousands(source.object_count()),
            info.server,
            pages,
            if pages == 1 { "" } else { "s" },
            requests,
            if requests == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64()
        ));
        for part in &source.meta.missing {
            let scope = part
                .namespace
                .as_deref()
                .map(|ns| format!(" in {ns}"))
                .unwrap_or_default();
            ctx.warn(&format!(
                "kube {}: {}{scope} not read: {}",
                info.name, part.resource, part.reason
            ));
        }
        if !source.is_complete() {
            ctx.warn(&format!(
                "kube {}: the source is incomplete and is written with complete: false; \
                 `permdrift diff` will not read its unread objects as removed",
                info.name
            ));
        }
        anyhow::Ok(source)
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect()
}

/// Where a source came from, to say which flag renames it.
#[derive(Clone, Copy)]
enum Origin {
    Files,
    Aws,
    Kube,
}

fn rename_flag(source: &SourceSnapshot, origin: Origin) -> &'static str {
    match (origin, source.platform()) {
        (Origin::Files, crate::snapshot::Platform::Kubernetes) => "--source-name",
        (Origin::Files, crate::snapshot::Platform::Aws) | (Origin::Aws, _) => "--aws-source-name",
        (Origin::Kube, _) => "--kube-source-name",
    }
}

fn add_source(
    snapshot: &mut Snapshot,
    origins: &mut std::collections::BTreeMap<String, Origin>,
    source: SourceSnapshot,
    origin: Origin,
) -> anyhow::Result<()> {
    if let Some(existing) = snapshot.sources.get(&source.name) {
        let first = origins.get(&source.name).copied().unwrap_or(Origin::Files);
        let (a, b) = (rename_flag(existing, first), rename_flag(&source, origin));
        let flags = if a == b {
            a.to_owned()
        } else {
            format!("{a} or {b}")
        };
        bail!(
            "two sources are both named {:?}; rename one with {flags}",
            source.name
        );
    }
    origins.insert(source.name.clone(), origin);
    snapshot.sources.insert(source.name.clone(), source);
    Ok(())
}

pub fn run(ctx: &Ctx, args: SnapshotArgs) -> anyhow::Result<u8> {
    if args.from.is_empty() && !args.aws.aws && !args.kube.kube {
        bail!("nothing to snapshot: give --from PATH (files, directories, -), --aws or --kube");
    }
    let loaded = if args.from.is_empty() {
        Snapshot::new()
    } else {
        load(ctx, &args.from, &args.input)?
    };
    let mut snapshot = Snapshot::new();
    let mut origins = std::collections::BTreeMap::new();
    for (_, source) in loaded.sources {
        add_source(&mut snapshot, &mut origins, source, Origin::Files)?;
    }
    if args.aws.aws || args.kube.kube {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        if args.aws.aws {
            let source = runtime.block_on(aws_source(ctx, &args.aws, &args.input))?;
            add_source(&mut snapshot, &mut origins, source, Origin::Aws)?;
        }
        if args.kube.kube {
            for source in runtime.block_on(kube_sources(ctx, &args.kube))? {
                add_source(&mut snapshot, &mut origins, source, Origin::Kube)?;
            }
        }
    }
    if snapshot.sources.is_empty() {
        bail!("nothing to snapshot: no RBAC objects or IAM entities found in the inputs");
    }
    let format = args.format.unwrap_or_else(|| match &args.output {
        Some(p)
            if p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json")) =>
        {
            Format::Json
        }
        _ => Format::Yaml,
    });
    let text = format::to_string(&snapshot, format)?;
    match &args.output {
        Some(path) => {
            output::write_atomic(path, text.as_bytes())?;
            let sources: Vec<String> = snapshot
                .sources
                .values()
                .map(|s| {
                    format!(
                        "{} ({}, {} objects{})",
                        s.name,
                        s.platform(),
                        s.object_count(),
                        if s.is_complete() { "" } else { ", incomplete" }
                    )
                })
                .collect();
            ctx.info(&format!("wrote {}: {}", path.display(), sources.join(", ")));
        }
        None => output::print(&text)?,
    }
    Ok(0)
}
