//! `permdrift plan`: the reverts enforce mode would run, from files.
//!
//! A source's approved baseline and its current state (snapshots) come in,
//! with the operator's config (protected objects, allow-list, latent opt-in,
//! approver keys) and signed approvals when given; the diff (no grant cap)
//! goes through revert planning (src/revert/plan.rs) and the plan comes out,
//! one line per object then one per operation, in the diff's order. Exit 1
//! when something would be reverted, like `diff --fail-on`.

use super::{Ctx, InputArgs, load, output};
use crate::approval::{self, Rules, Widening};
use crate::config::Config;
use crate::diff::{DiffOptions, diff};
use crate::revert::aws::call_of;
use crate::revert::plan::{IamOp, K8sOp, Ops, Outcome, PlanRules, Planned, Skip, plan_source};
use anyhow::{Context, bail};
use clap::ValueEnum;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    permdrift plan --source prod --baseline baseline.json --current now.json --config permdrift.yaml\n\n\
    Exit status: 0 nothing to revert, 1 reverts planned, 2 trouble.")]
pub struct PlanArgs {
    /// The source to plan for.
    #[arg(long)]
    source: String,
    /// The approved baseline (a snapshot, or anything `snapshot --from` reads).
    #[arg(long, value_name = "FILE")]
    baseline: PathBuf,
    /// The current state.
    #[arg(long, value_name = "FILE")]
    current: PathBuf,
    /// The operator's config: revert.protected, revert.latent, allow, approvals.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Signed approvals (`permdrift approve -o`), checked against the config's approver keys.
    #[arg(long, value_name = "FILE", requires = "config")]
    approvals: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: PlanFormat,
    #[command(flatten)]
    input: InputArgs,
}

pub fn run(ctx: &Ctx, args: PlanArgs) -> anyhow::Result<u8> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let baseline = load(ctx, std::slice::from_ref(&args.baseline), &args.input)?;
    let current = load_over_base(ctx, &args, &baseline)?;
    let pick = |s: &crate::snapshot::Snapshot, file: &PathBuf| {
        s.sources.get(&args.source).cloned().with_context(|| {
            let names: Vec<&str> = s.sources.keys().map(String::as_str).collect();
            format!(
                "{}: has no source {:?} (it has {})",
                file.display(),
                args.source,
                names.join(", ")
            )
        })
    };
    let (b, c) = (
        pick(&baseline, &args.baseline)?,
        pick(&current, &args.current)?,
    );
    let one = |s: crate::snapshot::SourceSnapshot| {
        let mut snapshot = crate::snapshot::Snapshot::new();
        snapshot.sources.insert(s.name.clone(), s);
        snapshot
    };
    let options = DiffOptions {
        max_grants: 0,
        ..DiffOptions::default()
    };
    let report = diff(
        &one(b.clone()),
        &one(c.clone()),
        crate::grants::catalog::Catalog::embedded(),
        &options,
    );
    for w in &report.warnings {
        ctx.warn(w);
    }
    let mut rules = match &config {
        Some(c) => PlanRules::from_config(&c.revert, &c.allow),
        None => PlanRules::from_config(&crate::config::RevertConfig::default(), &[]),
    };
    if let Some(config) = &config
        && !args.approvals.is_empty()
    {
        approve(ctx, &args, config, &report, &mut rules)?;
    }
    let planned = plan_source(&b, &c, &rules, crate::grants::catalog::Catalog::embedded());
    let text = match args.format {
        PlanFormat::Text => render_text(&args.source, &planned),
        PlanFormat::Json => {
            let mut json = serde_json::to_string_pretty(&planned)?;
            json.push('\n');
            json
        }
    };
    output::print(&text)?;
    let reverts = planned
        .iter()
        .any(|p| matches!(p.outcome, Outcome::Revert(_)));
    Ok(u8::from(reverts))
}

fn load_over_base(
    ctx: &Ctx,
    args: &PlanArgs,
    baseline: &crate::snapshot::Snapshot,
) -> anyhow::Result<crate::snapshot::Snapshot> {
    super::load_over(
        ctx,
        std::slice::from_ref(&args.current),
        &args.input,
        Some(baseline),
    )
}

/// Marks the widenings the given approvals cover; every refused approval is named.
fn approve(
    ctx: &Ctx,
    args: &PlanArgs,
    config: &Config,
    report: &crate::report::Report,
    rules: &mut PlanRules,
) -> anyhow::Result<()> {
    let approval_rules = Rules::from_config(&config.approvals)?;
    let mut offered = Vec::new();
    for file in &args.approvals {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--approvals {}", file.display()))?;
        offered.extend(approval::parse_file(&file.display().to_string(), &text)?);
    }
    if approval_rules.approvers.is_empty() {
        bail!("--config lists no approvals.keys: no approval can be checked");
    }
    let now = jiff::Timestamp::now();
    for change in report.changes.iter().filter(|c| c.direction.widens()) {
        let object = change.object.display();
        let digest = approval::digest::digest_of(&change.gained);
        let mine: Vec<_> = offered
            .iter()
            .filter(|a| a.approval.object == object)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let widening = Widening {
            source: &args.source,
            object: &object,
            digest: &digest,
            severity: change.severity,
            actor: None,
        };
        let decision = approval::decide(&approval_rules, &widening, &mine, now);
        for (_, rejection) in &decision.rejected {
            ctx.warn(&format!(
                "approval of {object} not counted ({}): {rejection}",
                rejection.label()
            ));
        }
        if decision.approved {
            rules.approved.insert((object, digest));
        } else if decision.rejected.is_empty() {
            ctx.warn(&format!(
                "{object}: {} of {} approvals needed",
                decision.approvers.len(),
                decision.needed
            ));
        }
    }
    Ok(())
}

fn precondition(rv: &Option<String>) -> String {
    match rv {
        Some(rv) => format!(" if still at resourceVersion {rv}"),
        None => " (no resourceVersion known: enforce refuses without one)".into(),
    }
}

fn k8s_line(op: &K8sOp) -> String {
    match op {
        K8sOp::Delete {
            key,
            resource_version,
            ..
        } => format!("delete {key}{}", precondition(resource_version)),
        K8sOp::Replace {
            key,
            resource_version,
            ..
        } => format!(
            "restore {key} to its baseline content{}",
            precondition(resource_version)
        ),
        K8sOp::Create { key, .. } => format!("create {key} with its baseline content"),
        K8sOp::RemoveLabels {
            key,
            resource_version,
            labels,
            ..
        } => format!(
            "remove label{} {} from {key}{}",
            if labels.len() == 1 { "" } else { "s" },
            labels.join(", "),
            precondition(resource_version)
        ),
    }
}

fn iam_line(op: &IamOp) -> String {
    let call = call_of(op)
        .map(|c| c.action())
        .unwrap_or_else(|e| e.to_string());
    let detail = match op {
        IamOp::PutPermissionsBoundary {
            principal,
            policy_arn,
        }
        | IamOp::DetachPolicy {
            principal,
            policy_arn,
        }
        | IamOp::AttachPolicy {
            principal,
            policy_arn,
        } => format!("{} {} {policy_arn}", principal.kind, principal.name),
        IamOp::DeletePermissionsBoundary { principal } => {
            format!("{} {}", principal.kind, principal.name)
        }
        IamOp::DeleteInlinePolicy { principal, name } => {
            format!("{} {} policy {name}", principal.kind, principal.name)
        }
        IamOp::PutInlinePolicy {
            principal, name, ..
        } => format!(
            "{} {} policy {name} (baseline document)",
            principal.kind, principal.name
        ),
        IamOp::UpdateTrustPolicy { role, .. } => format!("Role {role} (baseline trust policy)"),
        IamOp::RemoveUserFromGroup { user, group } | IamOp::AddUserToGroup { user, group } => {
            format!("User {user} group {group}")
        }
        IamOp::SetDefaultPolicyVersion {
            policy_arn,
            version_id,
        } => format!("{policy_arn} {version_id}"),
        IamOp::CreatePolicyVersion { policy_arn, .. } => {
            format!("{policy_arn} (baseline document, as default)")
        }
    };
    format!("{call} {detail}")
}

fn skip_text(skip: &Skip) -> String {
    match skip {
        Skip::NotWidening(d) => format!("{} change, never reverted", d.as_str()),
        Skip::Protected(p) => format!("protected ({p})"),
        Skip::LatentOnly => {
            "latent only: nobody holds the gained grants today (revert.latent opts in)".into()
        }
        Skip::Approved => "approved".into(),
        Skip::AllowListed(rule) => format!("allow-listed by {rule:?}"),
        Skip::Aggregated => {
            "aggregated: the controller writes its rules; the roles it aggregates are reverted"
                .into()
        }
        Skip::Unsupported(why) => format!("not revertible: {why}"),
    }
}

/// The text plan: deterministic (the diff's order, no times).
pub fn render_text(source: &str, planned: &[Planned]) -> String {
    let reverts = planned
        .iter()
        .filter(|p| matches!(p.outcome, Outcome::Revert(_)))
        .count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "source {source}: {} change{}, {reverts} to revert, {} left as they are",
        planned.len(),
        if planned.len() == 1 { "" } else { "s" },
        planned.len() - reverts
    );
    for p in planned {
        match &p.outcome {
            Outcome::Revert(ops) => {
                let _ = writeln!(
                    out,
                    "revert {} ({}, digest {})",
                    p.object,
                    p.severity.as_str(),
                    p.digest
                );
                if p.fixup {
                    let _ = writeln!(
                        out,
                        "  (not widening alone: restoring the others would widen through it)"
                    );
                }
                let lines: Vec<String> = match ops {
                    Ops::K8s(ops) => ops.iter().map(k8s_line).collect(),
                    Ops::Iam(ops) => ops.iter().map(iam_line).collect(),
                };
                for line in lines {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Outcome::Skip(skip) => {
                let _ = writeln!(out, "keep   {}: {}", p.object, skip_text(skip));
            }
        }
    }
    out
}
