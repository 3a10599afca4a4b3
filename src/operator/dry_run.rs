//! Dry-run mode: what enforce mode would revert, journaled instead of run.
//!
//! After a source loop judges a widening it cannot allow, the change is
//! diffed again with no grant cap against the baseline and planned with the
//! pure planner (src/revert/plan.rs) under the config's protected globs,
//! allow-list, `revert.latent` and the approvals counted so far; the plan
//! (operations, or the label of why nothing is planned) goes into the
//! journal as a typed `revert-plan` record. Nothing is written to the
//! cluster.

use super::approvals::{self, HeldApprovals};
use super::records::{Body, RevertPlanBody};
use super::source::{Current, SourceCtx};
use super::{Error, now};
use crate::decide::{ObjectKey, SourceState};
use crate::revert::plan::{Outcome, PlanRules, plan_change};
use crate::snapshot::SourceData;

/// Plans the revert of `key`'s widening and journals it (dry-run mode).
/// Returns the record written, or None when the object equals the baseline.
pub async fn journal_plan(
    cx: &SourceCtx,
    state: &SourceState,
    current: Current<'_>,
    key: &ObjectKey,
    held: &HeldApprovals,
) -> Result<Option<RevertPlanBody>, Error> {
    let t = now();
    let Some(change) = approvals::uncapped_change(cx, state, current, key) else {
        return Ok(None);
    };
    let mut rules = PlanRules::from_config(&cx.revert, &cx.allow);
    rules.approved = approvals::approved_pairs(state, held, t);
    // The planner takes whole source data; a copy of the live model per
    // planned widening is the price until it takes the model by reference.
    let current_data = match current {
        Current::K8s(m) => SourceData::Kubernetes(m.clone()),
        Current::Aws(m) => SourceData::Aws(m.clone()),
    };
    let planned = plan_change(&change, &state.baseline.data, &current_data, &rules);
    let (outcome, reason) = match &planned.outcome {
        Outcome::Revert(_) => ("revert", "revert".to_owned()),
        Outcome::Skip(skip) => ("skip", skip.label().to_owned()),
    };
    let body = RevertPlanBody {
        key: key.clone(),
        object: planned.object.clone(),
        digest: planned.digest.clone(),
        mode: "dry-run".into(),
        outcome: outcome.into(),
        reason,
        plan: serde_json::to_value(&planned).map_err(Error::Encode)?,
    };
    cx.store
        .append(&cx.name, &Body::RevertPlan(body.clone()), t)
        .await?;
    tracing::info!(object = %body.object, outcome, reason = %body.reason,
        "dry-run: revert planned, not run");
    Ok(Some(body))
}
