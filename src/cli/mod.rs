//! Command-line entry point: flags are parsed here (clap), resolved into
//! options for the core, and results mapped to exit codes: like diff(1),
//! 0 means nothing at or above `--fail-on`, 1 found, 2 trouble.

mod api_client;
mod approve;
mod baseline;
mod completions;
mod diff;
mod explain;
mod history;
mod keygen;
mod output;
mod plan;
mod run;
mod snapshot;
mod suggest;
mod whocan;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "permdrift",
    version,
    about = "Access-control drift detector for Kubernetes RBAC and AWS IAM",
    long_about = "Access-control drift detector for Kubernetes RBAC and AWS IAM.\n\n\
        permdrift snapshots who-can-do-what, diffs two states, and says with evidence \
        whether access widened: which subjects gained which permissions, how risky that is, \
        and a concrete request that is allowed now and was not before.",
    after_help = "Exit status: 0 nothing at or above --fail-on, 1 found, 2 trouble (bad input, \
        unreadable or incomplete state).\nExamples:\n  \
        permdrift diff examples/incident/before examples/incident/after\n  \
        kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o yaml | permdrift snapshot --from - -o cluster.yaml\n  \
        permdrift who-can get secrets -n payments cluster.yaml"
)]
struct Cli {
    /// Print only results and errors, no progress or summaries on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Also report how long each phase took.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read access-control state and write one canonical snapshot.
    Snapshot(snapshot::SnapshotArgs),
    /// Compare two states: who gained and lost what, how risky, with a witness.
    Diff(diff::DiffArgs),
    /// List the subjects allowed a request (Kubernetes verb and resource, or IAM action).
    WhoCan(whocan::WhoCanArgs),
    // Help text lives with the command (`history::HistoryArgs`).
    History(history::HistoryArgs),
    /// Run the operator: watch clusters and accounts, judge and record every change.
    Run(run::RunArgs),
    /// Manage the approved baseline of a running operator or its store.
    Baseline(baseline::BaselineArgs),
    /// Make an ed25519 key pair for signing requests to the operator.
    Keygen(keygen::KeygenArgs),
    /// Approve one widening for a time: signed to a file, or sent to the operator.
    Approve(Box<approve::ApproveArgs>),
    /// Print the reverts enforce mode would run for a source.
    Plan(plan::PlanArgs),
    /// Post an agent suggestion (markdown or text) to a running operator, for attribution.
    Suggest(suggest::SuggestArgs),
    /// Print the chain behind a judged change: suggestion, actor, change, verdict.
    Explain(explain::ExplainArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page, permdrift(1), in roff (`permdrift man | man -l -`).
    Man(completions::ManArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Input options shared by commands that read files.
#[derive(clap::Args, Clone, Debug)]
pub struct InputArgs {
    /// Name of the Kubernetes source built from manifest files.
    #[arg(
        long = "source-name",
        value_name = "NAME",
        default_value = "kubernetes"
    )]
    kube_name: String,
    /// Name of the AWS source built from authorization details [default: the account id].
    #[arg(long = "aws-source-name", value_name = "NAME")]
    pub(crate) aws_name: Option<String>,
    /// Namespace for namespaced manifests that name none (what `kubectl apply -n` would use).
    #[arg(long, value_name = "NS", default_value = "default")]
    default_namespace: String,
    /// Largest input accepted, in bytes. Files are refused by their size;
    /// streams (stdin, pipes, FIFOs, devices) are read up to it and refused past it.
    #[arg(long, value_name = "BYTES", default_value_t = crate::input::DEFAULT_MAX_FILE_SIZE)]
    max_input_size: u64,
    /// AWS managed policies for Terraform plans, instead of the shipped set:
    /// JSON `[{name, arn, version_id, document}]`, gzipped or not.
    #[arg(long, value_name = "FILE")]
    managed_policies: Option<PathBuf>,
}

impl InputArgs {
    fn options(&self) -> crate::input::InputOptions {
        crate::input::InputOptions {
            kube_source: self.kube_name.clone(),
            aws_source: self.aws_name.clone(),
            max_file_size: self.max_input_size,
            default_namespace: self.default_namespace.clone(),
            ..crate::input::InputOptions::default()
        }
    }

    /// [`Self::options`] with the `--managed-policies` set read.
    fn options_with_policies(&self) -> anyhow::Result<crate::input::InputOptions> {
        use anyhow::Context;
        let mut options = self.options();
        if let Some(path) = &self.managed_policies {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let set = crate::input::managed::ManagedPolicies::parse(&bytes).with_context(|| {
                format!("{}: not a set of AWS managed policies", path.display())
            })?;
            options.managed_policies = Some(std::sync::Arc::new(set));
        }
        Ok(options)
    }
}

/// Context passed to every command.
pub struct Ctx {
    pub quiet: bool,
    pub verbose: bool,
}

impl Ctx {
    /// A progress or summary line on stderr.
    pub fn info(&self, line: &str) {
        if !self.quiet {
            eprintln!("permdrift: {line}");
        }
    }

    /// A phase timing, shown with --verbose.
    pub fn timing(&self, phase: &str, started: std::time::Instant) {
        if self.verbose {
            eprintln!(
                "permdrift: {phase}: {:.3}s",
                started.elapsed().as_secs_f64()
            );
        }
    }

    pub fn warn(&self, line: &str) {
        eprintln!("permdrift: warning: {line}");
    }
}

/// Loads paths into a snapshot, reporting what was read and skipped.
fn load(
    ctx: &Ctx,
    paths: &[PathBuf],
    input: &InputArgs,
) -> anyhow::Result<crate::snapshot::Snapshot> {
    load_over(ctx, paths, input, None)
}

/// Loads paths, sharing the unchanged objects of `base`.
fn load_over(
    ctx: &Ctx,
    paths: &[PathBuf],
    input: &InputArgs,
    base: Option<&crate::snapshot::Snapshot>,
) -> anyhow::Result<crate::snapshot::Snapshot> {
    let options = input.options_with_policies()?;
    Ok(load_with(ctx, paths, options, base)?.0)
}

/// Loads paths with these options, keeping what the load reported.
fn load_with(
    ctx: &Ctx,
    paths: &[PathBuf],
    options: crate::input::InputOptions,
    base: Option<&crate::snapshot::Snapshot>,
) -> anyhow::Result<(crate::snapshot::Snapshot, crate::input::LoadReport)> {
    let started = std::time::Instant::now();
    let (snapshot, report) = crate::input::load_over(paths, options, base)?;
    for w in &report.warnings {
        ctx.warn(w);
    }
    let elapsed = started.elapsed();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut line = format!(
        "read {}: {} file{}, {} object{}",
        names.join(", "),
        report.files,
        if report.files == 1 { "" } else { "s" },
        report.objects,
        if report.objects == 1 { "" } else { "s" }
    );
    if !report.skipped_kinds.is_empty() {
        let skipped: Vec<String> = report
            .skipped_kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        line.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    if !report.skipped_files.is_empty() {
        line.push_str(&format!(
            "; ignored {} non-YAML/JSON files",
            report.skipped_files.len()
        ));
    }
    if elapsed.as_millis() >= 500 {
        line.push_str(&format!(" in {:.1}s", elapsed.as_secs_f64()));
    }
    ctx.info(&line);
    Ok((snapshot, report))
}

fn catalog(
    path: Option<&PathBuf>,
) -> anyhow::Result<std::borrow::Cow<'static, crate::grants::catalog::Catalog>> {
    use anyhow::Context;
    match path {
        None => Ok(std::borrow::Cow::Borrowed(
            crate::grants::catalog::Catalog::embedded(),
        )),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read catalog {}", p.display()))?;
            let c = crate::grants::catalog::Catalog::parse(&text)
                .with_context(|| format!("{}: not an IAM action catalog", p.display()))?;
            Ok(std::borrow::Cow::Owned(c))
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let result = match cli.command {
        Command::Snapshot(args) => snapshot::run(&ctx, args),
        Command::Diff(args) => diff::run(&ctx, args),
        Command::WhoCan(args) => whocan::run(&ctx, args),
        Command::History(args) => history::run(&ctx, args),
        Command::Run(args) => run::run(&ctx, args),
        Command::Baseline(args) => baseline::run(&ctx, args),
        Command::Keygen(args) => keygen::run(&ctx, args),
        Command::Approve(args) => approve::run(&ctx, *args),
        Command::Plan(args) => plan::run(&ctx, args),
        Command::Suggest(args) => suggest::run(&ctx, args),
        Command::Explain(args) => explain::run(&ctx, args),
        Command::Completions(args) => completions::run_completions(&ctx, args),
        Command::Man(args) => completions::run_man(&ctx, args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("permdrift: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
