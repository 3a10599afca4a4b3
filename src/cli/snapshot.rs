//! `permdrift snapshot`: read state and write one canonical snapshot.

use super::{Ctx, InputArgs, load, output};
use crate::snapshot::format::{self, Format};
use anyhow::bail;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// File, directory (read recursively) or `-` for stdin: kubectl output, manifests,
    /// `aws iam get-account-authorization-details` output, or permdrift snapshots.
    #[arg(long = "from", value_name = "PATH", num_args = 1.., required = true)]
    from: Vec<PathBuf>,
    /// Write here (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format [default: json for a .json output file, else yaml].
    #[arg(long, value_enum)]
    format: Option<Format>,
    #[command(flatten)]
    input: InputArgs,
}

pub fn run(ctx: &Ctx, args: SnapshotArgs) -> anyhow::Result<u8> {
    let snapshot = load(ctx, &args.from, &args.input)?;
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
