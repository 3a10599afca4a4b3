//! Attribution: who made each change, and which agent suggestion it came from.
//!
//! In: the diff [`Report`], the OLD state, parsed [`suggestion::Suggestion`]s,
//! observed actor events ([`actors::Events`]) and the [`agents::AgentsConfig`].
//! Out: an [`Attribution`] (or `null`) on every change of the report. Pure:
//! files are read by `cli::diff`, which hands their text in; nothing here
//! reads a clock. See docs/attribution.md.

pub mod actions;
pub mod actors;
pub mod agents;
pub mod matching;
pub mod placeholder;
pub mod predict;
pub mod suggestion;

use crate::grants::catalog::Catalog;
use crate::report::{Grant, Report};
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};

/// Default window after a suggestion in which an applied change may follow it.
pub const DEFAULT_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributionKind {
    /// The actor is a known agent: the agent acted itself.
    Agent,
    /// A person (or any non-agent) applied what an agent suggested.
    AgentSuggested,
    /// A known actor that is no agent, and no suggestion explains the change.
    Human,
    /// Only a weak hint of who acted, and no suggestion explains the change.
    Unknown,
}

impl AttributionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::AgentSuggested => "agent-suggested",
            Self::Human => "human",
            Self::Unknown => "unknown",
        }
    }
}

/// How well a suggestion explains a change (ordered: best last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Some grants in common, or more applied than suggested.
    Partial,
    /// The same gained grants.
    Strong,
    /// The same object content, placeholders aside.
    Exact,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partial => "partial",
            Self::Strong => "strong",
            Self::Exact => "exact",
        }
    }
}

/// Where an actor was learnt from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ActorSource {
    #[default]
    AuditLog,
    Cloudtrail,
    /// `metadata.managedFields[].manager` of the new object: a weak hint.
    ManagedFields,
}

/// Who made a change, as the audit trail recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub via: ActorSource,
    /// Only a hint (a field manager's name), not an authenticated identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weak: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// AWS `userIdentity.arn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// AWS `userIdentity.type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    /// AWS `sessionContext.sessionIssuer.arn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// The field manager named by `managedFields` (weak hint only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// The audit event or CloudTrail record (`verb`/`eventName`) matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<jiff::Timestamp>,
}

impl Actor {
    /// A short name for text output.
    pub fn display(&self) -> String {
        let who = self
            .username
            .clone()
            .or_else(|| self.arn.clone())
            .or_else(|| self.manager.clone())
            .unwrap_or_else(|| "?".into());
        if self.weak {
            format!("{who} (field manager, weak hint)")
        } else {
            who
        }
    }
}

/// Which part of a suggestion matched, and the grants it shares with the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `FILE:LINE` of the command or manifest in the suggestion.
    pub location: String,
    /// The command or the manifest's first line, as written.
    pub text: String,
    /// Gained grants of the change that the suggestion predicts.
    pub grants: Vec<Grant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub kind: AttributionKind,
    pub actor: Option<Actor>,
    pub agent: Option<String>,
    /// The id of the suggestion that explains the change.
    pub suggestion: Option<String>,
    pub confidence: Option<Confidence>,
    pub evidence: Vec<Evidence>,
    /// Grants applied beyond what the suggestion predicts.
    pub beyond: Vec<Grant>,
}

impl Attribution {
    /// One line for text and markdown output.
    pub fn line(&self) -> String {
        let mut s = self.kind.as_str().to_owned();
        if let Some(sid) = &self.suggestion {
            s.push_str(&format!(" · suggestion {sid}"));
        }
        if let Some(agent) = &self.agent {
            s.push_str(&format!(" · agent {agent}"));
        }
        if let Some(c) = self.confidence {
            s.push_str(&format!(" · {}", c.as_str()));
        }
        if let Some(a) = &self.actor {
            s.push_str(&format!(" · by {}", a.display()));
        }
        if !self.evidence.is_empty() {
            let at: Vec<&str> = self.evidence.iter().map(|e| e.location.as_str()).collect();
            s.push_str(&format!(" · {}", at.join(", ")));
        }
        if !self.beyond.is_empty() {
            s.push_str(&format!(
                " · {} grant(s) beyond the suggestion",
                self.beyond.len()
            ));
        }
        s
    }
}

/// Everything attribution reads, gathered by the caller.
pub struct Inputs<'a> {
    pub suggestions: &'a [suggestion::Suggestion],
    pub events: &'a actors::Events,
    pub agents: &'a agents::AgentsConfig,
    pub window: jiff::SignedDuration,
}

/// Fills `attribution` on every change of `report` (diffed from `old` to `new`).
pub fn attribute(
    report: &mut Report,
    old: &Snapshot,
    new: &Snapshot,
    catalog: &Catalog,
    inputs: &Inputs<'_>,
) {
    let predictions = predict::predict_all(old, inputs.suggestions, catalog);
    let index = matching::Index::new(&predictions, inputs.suggestions);
    for change in &mut report.changes {
        let actor = actors::actor_for(change, new, inputs.events);
        let agent = actor.as_ref().and_then(|a| inputs.agents.agent_of(a));
        let at = actor.as_ref().and_then(|a| a.at);
        let best = index.best(change, at, inputs.window);
        let attribution = compose(actor, agent, best);
        change.attribution = Some(attribution);
    }
}

/// The attribution of one change from its actor (if known), the agent that
/// actor is (if any) and the best suggestion match (if any); `None` when
/// neither an actor nor a suggestion is known.
pub fn compose(
    actor: Option<Actor>,
    agent: Option<&str>,
    best: Option<matching::Match>,
) -> Option<Attribution> {
    match (agent, best) {
        (Some(agent), m) => Some(Attribution {
            kind: AttributionKind::Agent,
            agent: Some(agent.to_owned()),
            actor,
            suggestion: m.as_ref().map(|m| m.suggestion.clone()),
            confidence: m.as_ref().map(|m| m.confidence),
            evidence: m.as_ref().map(|m| m.evidence.clone()).unwrap_or_default(),
            beyond: m.map(|m| m.beyond).unwrap_or_default(),
        }),
        (None, Some(m)) => Some(Attribution {
            kind: AttributionKind::AgentSuggested,
            agent: m.agent.clone(),
            actor,
            suggestion: Some(m.suggestion),
            confidence: Some(m.confidence),
            evidence: m.evidence,
            beyond: m.beyond,
        }),
        (None, None) => actor.map(|a| Attribution {
            kind: if a.weak {
                AttributionKind::Unknown
            } else {
                AttributionKind::Human
            },
            actor: Some(a),
            agent: None,
            suggestion: None,
            confidence: None,
            evidence: Vec::new(),
            beyond: Vec::new(),
        }),
    }
}
