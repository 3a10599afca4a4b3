//! Auto-revert: planning (pure) and the reverters that run plans.
//!
//! A change judged unapproved flows into [`plan`], which yields the typed
//! operations restoring the object's baseline state; [`rails`] decides
//! whether a source may revert now (rate limit) and whether an object is
//! flapping; [`k8s`] and [`aws`] execute operations against the Kubernetes
//! API and IAM and classify failures as retryable or not, each with a metric
//! label; [`retry`] tries retryable failures again with backoff. The
//! operator runs them in enforce mode (src/operator/enforce.rs): leader
//! only, intent journaled before and result after.

pub mod aws;
pub mod k8s;
pub mod plan;
pub mod rails;
pub mod retry;

pub use plan::{IamOp, K8sOp, Ops, Outcome, PlanRules, Planned, Skip, plan_change, plan_report};

/// Whether a failed operation is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Throttling, timeouts: the same call again, later.
    Retryable,
    /// The object moved since it was judged (a failed resourceVersion
    /// precondition): read it again and plan again; the same call would fail.
    Replan,
    /// Forbidden, not found, invalid: retrying the same call cannot help.
    Permanent,
}
