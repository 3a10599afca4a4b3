//! `permdrift snapshot`: read state (files, live AWS accounts, live clusters)
//! and write one canonical snapshot.

use super::{Ctx, InputArgs, load, output};
use crate::input::Loader;
use crate::snapshot::format::{self, Format};
use crate::snapshot::{Snapshot, SourceSnapshot};
use crate::source::aws::{AwsSourceOptions, DEFAULT_MAX_ATTEMPTS, fetch_account};
use anyhow::{Context, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// File, directory (read recursively) or `-` for stdin: kubectl output, manifests,
    /// `aws iam get-account-authorization-details` output, or permdrift snapshots.
    #[arg(long = "from", value_name = "PATH", num_args = 1..)]
    from: Vec<PathBuf>,
    #[command(flatten)]
    aws: AwsArgs,
    /// Write here (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format [default: json for a .json output file, else yaml].
    #[arg(long, value_enum)]
    format: Option<Format>,
    #[command(flatten)]
    input: InputArgs,
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
    let origin = format!("aws account {}", fetch.account_id);
    let mut loader = Loader::new(input.options());
    loader.add_authorization_details(&origin, &fetch.document)?;
    let (mut snapshot, _) = loader.finish()?;
    let mut source = snapshot
        .sources
        .pop_first()
        .map(|(_, s)| s)
        .with_context(|| format!("{origin}: no IAM entities read"))?;
    source.name = input
        .aws_name
        .clone()
        .unwrap_or_else(|| fetch.account_id.clone());
    source.meta.account_id = Some(fetch.account_id.clone());
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

fn add_source(snapshot: &mut Snapshot, source: SourceSnapshot) -> anyhow::Result<()> {
    if snapshot.sources.contains_key(&source.name) {
        bail!(
            "two sources are both named {:?}; rename one (--source-name / --aws-source-name)",
            source.name
        );
    }
    snapshot.sources.insert(source.name.clone(), source);
    Ok(())
}

pub fn run(ctx: &Ctx, args: SnapshotArgs) -> anyhow::Result<u8> {
    if args.from.is_empty() && !args.aws.aws {
        bail!("nothing to snapshot: give --from PATH (files, directories, -) or --aws");
    }
    let mut snapshot = if args.from.is_empty() {
        Snapshot::new()
    } else {
        load(ctx, &args.from, &args.input)?
    };
    if args.aws.aws {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let source = runtime.block_on(aws_source(ctx, &args.aws, &args.input))?;
        add_source(&mut snapshot, source)?;
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
