//! The diff report: the versioned JSON contract (`docs/diff-format.md`) and
//! the value every renderer (text, JSON, markdown) reads.
//!
//! Built by `diff` from classified changes; nothing here computes anything.

use crate::snapshot::Platform;
use serde::{Deserialize, Serialize};

/// Version of the JSON diff output; bump on incompatible changes.
pub const SCHEMA: &str = "permdrift.dev/diff/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Widening,
    Narrowing,
    Mixed,
    Neutral,
}

impl Direction {
    pub fn from_parts(widens: bool, narrows: bool) -> Self {
        match (widens, narrows) {
            (true, true) => Direction::Mixed,
            (true, false) => Direction::Widening,
            (false, true) => Direction::Narrowing,
            (false, false) => Direction::Neutral,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Widening => "widening",
            Direction::Narrowing => "narrowing",
            Direction::Mixed => "mixed",
            Direction::Neutral => "neutral",
        }
    }

    pub fn widens(self) -> bool {
        matches!(self, Direction::Widening | Direction::Mixed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
        }
    }
}

/// Risk tags. The kebab-case names are part of the output contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    ClusterAdmin,
    WildcardVerb,
    WildcardResource,
    WildcardApigroup,
    NonresourceWildcard,
    Escalate,
    Bind,
    Impersonate,
    SecretsRead,
    PodCreate,
    PodExec,
    PodPortforward,
    NodesProxy,
    CsrApprove,
    AdmissionWebhookWrite,
    ServiceaccountTokenCreate,
    PvCreate,
    RbacWrite,
    EventsDelete,
    ConfigmapWrite,
    DeleteBroad,
    SystemGroupBinding,
    AggregationLabel,
    DanglingRoleRef,
    Admin,
    WildcardAction,
    PrivilegeEscalation,
    Passrole,
    CredentialsExposure,
    DataAccess,
    ResourceExposure,
    TrustWidened,
    TrustPublic,
    TrustCrossAccount,
    BoundaryRemoved,
    DenyRemoved,
    ConditionLoosened,
}

impl Risk {
    pub const ALL: [Risk; 37] = [
        Risk::ClusterAdmin,
        Risk::WildcardVerb,
        Risk::WildcardResource,
        Risk::WildcardApigroup,
        Risk::NonresourceWildcard,
        Risk::Escalate,
        Risk::Bind,
        Risk::Impersonate,
        Risk::SecretsRead,
        Risk::PodCreate,
        Risk::PodExec,
        Risk::PodPortforward,
        Risk::NodesProxy,
        Risk::CsrApprove,
        Risk::AdmissionWebhookWrite,
        Risk::ServiceaccountTokenCreate,
        Risk::PvCreate,
        Risk::RbacWrite,
        Risk::EventsDelete,
        Risk::ConfigmapWrite,
        Risk::DeleteBroad,
        Risk::SystemGroupBinding,
        Risk::AggregationLabel,
        Risk::DanglingRoleRef,
        Risk::Admin,
        Risk::WildcardAction,
        Risk::PrivilegeEscalation,
        Risk::Passrole,
        Risk::CredentialsExposure,
        Risk::DataAccess,
        Risk::ResourceExposure,
        Risk::TrustWidened,
        Risk::TrustPublic,
        Risk::TrustCrossAccount,
        Risk::BoundaryRemoved,
        Risk::DenyRemoved,
        Risk::ConditionLoosened,
    ];

    /// One bit per tag, for cheap unions over many grants.
    pub fn bit(self) -> u64 {
        1 << (self as u64)
    }

    /// The tags whose bits are set in `mask`.
    pub fn from_mask(mask: u64) -> impl Iterator<Item = Risk> {
        Risk::ALL.into_iter().filter(move |r| mask & r.bit() != 0)
    }

    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One atomic permission in output form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `User:alice`, `Group:eng`, `ServiceAccount:ns:name`; an IAM ARN, or a
    /// trust principal (`*`, `service:ec2.amazonaws.com`, `arn:...:root`).
    pub subject: String,
    /// `cluster`, `namespace:NAME`, or `account:ID`.
    pub scope: String,
    /// A Kubernetes verb or an IAM action (a pattern unless expanded).
    pub action: String,
    /// A Kubernetes resource (`pods/exec`), a nonResourceURL (`/metrics`), or an ARN pattern.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// The IAM condition block, canonical JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
    /// `deny` for an explicit IAM deny; absent for allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// Nobody holds it today: a role's own perm (`subject` is the role), or
    /// a binding's subject waiting for its missing role. Left out of `subjects`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latent: bool,
    /// The resource is an intersection whose containment could not be
    /// decided syntactically: the grant may already have been held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible: bool,
}

impl Grant {
    /// Subject first, so sorted grants read grouped by who holds them.
    fn sort_key(&self) -> impl Ord + '_ {
        let condition = self
            .condition
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        (
            (&self.subject, &self.scope, &self.resource, &self.action),
            (
                &self.api_group,
                &self.resource_names,
                condition,
                &self.effect,
                self.latent,
                self.possible,
            ),
        )
    }
}

impl PartialOrd for Grant {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Grant {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// A concrete request allowed after the change and not before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub subject: String,
    pub action: String,
    pub resource: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub explanation: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
}

impl ObjectRef {
    pub fn display(&self) -> String {
        match (&self.namespace, &self.arn) {
            (Some(ns), _) => format!("{}/{}/{}", self.kind, ns, self.name),
            (None, Some(arn)) => format!("{} {}", self.kind, arn),
            (None, None) => format!("{}/{}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub source: String,
    pub platform: Platform,
    pub object: ObjectRef,
    pub change: ChangeKind,
    pub direction: Direction,
    pub severity: Severity,
    pub risks: Vec<Risk>,
    /// How many grants were gained; `gained` lists at most `--max-grants` of them.
    pub gained_count: usize,
    pub gained: Vec<Grant>,
    pub lost_count: usize,
    pub lost: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
    pub text_diff: String,
    /// Stable identity of this exact change (source, object, before, after).
    pub fingerprint: String,
    /// Who made the change and which agent suggestion explains it
    /// (docs/attribution.md). Absent unless attribution was asked for;
    /// then `null` when nothing is known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub attribution: Option<Option<crate::attribution::Attribution>>,
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDelta {
    pub source: String,
    pub platform: Platform,
    pub subject: String,
    pub gained_count: usize,
    pub gained: Vec<Grant>,
    pub lost_count: usize,
    pub lost: Vec<Grant>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub changes: usize,
    pub widening: usize,
    pub narrowing: usize,
    pub mixed: usize,
    pub neutral: usize,
    pub max_severity: Option<Severity>,
}

/// A source that could not be fully compared, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    pub source: String,
    pub reason: String,
    /// Objects left out of the comparison because they may only be unreadable.
    pub objects_not_compared: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub summary: Summary,
    pub changes: Vec<Change>,
    pub subjects: Vec<SubjectDelta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<Incomplete>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    pub fn summarize(changes: &[Change]) -> Summary {
        let mut s = Summary {
            changes: changes.len(),
            ..Summary::default()
        };
        for c in changes {
            match c.direction {
                Direction::Widening => s.widening += 1,
                Direction::Narrowing => s.narrowing += 1,
                Direction::Mixed => s.mixed += 1,
                Direction::Neutral => s.neutral += 1,
            }
            s.max_severity = s.max_severity.max(Some(c.severity));
        }
        s
    }
}
