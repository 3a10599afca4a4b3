//! Approvals: one widening bound to a person, for a time.
//!
//! An [`Approval`] (source, object, the widening's grants digest, approver,
//! reason, issue and expiry time) comes in signed with the approver's ed25519
//! key (`permdrift approve`); together with the [`Widening`] it claims to
//! approve, the approver keys and rules from the config ([`Rules`]) and the
//! time `now` (the caller reads the clock), it is either accepted or rejected
//! with a typed [`Rejection`] whose label is what the journal and metrics
//! record. [`decide`] weighs all approvals of one widening: a critical one
//! needs `criticalApprovals` distinct approvers. Pure: no I/O, no clock.

pub mod content;
pub mod digest;

use crate::config::ApprovalConfig;
use crate::grants::glob;
use crate::report::Severity;
use crate::signature::{PublicKey, SecretKey, SignatureError};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use digest::{DigestError, grants_digest};

/// Domain separation: an approval's signature is never valid for anything
/// else the key signs (signed statements use another prefix, src/signature.rs).
const CONTEXT: &[u8] = b"permdrift-approval-v1\n";

/// What an approver approves. Field order is the canonical (signed) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approval {
    pub source: String,
    /// The object as the diff names it (`ClusterRoleBinding/x`, `Role arn:…`).
    pub object: String,
    /// [`grants_digest`] of the widening approved.
    pub digest: String,
    /// The approver's key id.
    pub approver: String,
    pub reason: String,
    pub issued: Timestamp,
    pub expires: Timestamp,
}

impl Approval {
    /// The bytes signed: a fixed prefix, then the approval's JSON in field order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = CONTEXT.to_vec();
        // Strings and timestamps only: serializing cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    pub fn sign(self, key: &SecretKey) -> SignedApproval {
        let signature = key.sign_bytes(&self.canonical_bytes());
        SignedApproval {
            approval: self,
            signature,
        }
    }
}

/// An approval with its signature, as written by `permdrift approve -o`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedApproval {
    pub approval: Approval,
    /// base64 of the 64-byte ed25519 signature.
    pub signature: String,
}

impl SignedApproval {
    /// Parses an approval file; `file` names it in the error.
    pub fn parse(file: &str, text: &str) -> Result<Self, Rejection> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| Rejection::Malformed(format!("{file}: {}: {}", e.path(), e.inner())))
    }
}

/// Reads an approval file: one signed approval, or a list of them.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<SignedApproval>, Rejection> {
    if text.trim_start().starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| Rejection::Malformed(format!("{file}: {}: {}", e.path(), e.inner())))
    } else {
        SignedApproval::parse(file, text).map(|a| vec![a])
    }
}

/// Why an approval does not count. Each has a label ([`Rejection::label`]).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("not an approval: {0}")]
    Malformed(String),
    #[error("signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("the signature does not verify with key {0:?}")]
    Forged(String),
    #[error("expired at {0}")]
    Expired(Timestamp),
    #[error("issued in the future ({0})")]
    NotYetValid(Timestamp),
    #[error("valid for {seconds} s, longer than the {max_seconds} s allowed")]
    TooLong { seconds: i64, max_seconds: i64 },
    #[error("approves digest {approved}, the widening is {actual}")]
    OtherDigest { approved: String, actual: String },
    #[error("approves {approved}, not {actual}")]
    OtherObject { approved: String, actual: String },
    #[error("{0} made the change and cannot approve it")]
    SelfApproval(String),
    #[error("{0} is an agent identity; agents never approve")]
    Agent(String),
    #[error("{0} already approved this widening")]
    Duplicate(String),
}

impl Rejection {
    /// The label this rejection is journaled and counted under.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::UnknownKey(_) => "unknown-key",
            Rejection::Forged(_) => "forged",
            Rejection::Expired(_) => "expired",
            Rejection::NotYetValid(_) => "not-yet-valid",
            Rejection::TooLong { .. } => "too-long",
            Rejection::OtherDigest { .. } => "other-digest",
            Rejection::OtherObject { .. } => "other-object",
            Rejection::SelfApproval(_) => "self-approval",
            Rejection::Agent(_) => "agent",
            Rejection::Duplicate(_) => "duplicate-approver",
        }
    }
}

/// The widening an approval is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Widening<'a> {
    pub source: &'a str,
    pub object: &'a str,
    pub digest: &'a str,
    pub severity: Severity,
    /// Who made the change, where known (the audit event's user, later attribution).
    pub actor: Option<&'a str>,
}

/// A configured approver key and the identity its holder acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    pub key: PublicKey,
    pub identity: String,
}

/// Identities (globs) that are automation, never people: they never approve.
/// Kept apart from attribution's agent settings, which will feed it later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentList(pub Vec<String>);

impl AgentList {
    pub fn contains(&self, identity: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| glob::matches(pattern, identity))
    }
}

/// The approval rules of one operator, from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub approvers: BTreeMap<String, Approver>,
    pub agents: AgentList,
    pub default_expiry: SignedDuration,
    pub max_expiry: SignedDuration,
    pub clock_skew: SignedDuration,
    pub critical_approvals: usize,
}

fn signed(d: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Rules {
    /// Rules from a validated config; a bad key is named by its id.
    pub fn from_config(config: &ApprovalConfig) -> Result<Self, SignatureError> {
        let mut approvers = BTreeMap::new();
        for k in &config.keys {
            let key = PublicKey::parse(&k.public_key)
                .map_err(|e| SignatureError::BadKey(format!("{}: {e}", k.id)))?;
            let identity = k.identity.clone().unwrap_or_else(|| k.id.clone());
            approvers.insert(k.id.clone(), Approver { key, identity });
        }
        Ok(Rules {
            approvers,
            agents: AgentList(config.agents.clone()),
            default_expiry: signed(config.default_expiry.0),
            max_expiry: signed(config.max_expiry.0),
            clock_skew: signed(config.clock_skew.0),
            critical_approvals: config.critical_approvals,
        })
    }

    /// Distinct approvers `severity` needs.
    pub fn needed(&self, severity: Severity) -> usize {
        if severity == Severity::Critical {
            self.critical_approvals.max(1)
        } else {
            1
        }
    }

    /// The rules on the person, whatever the credential: not an agent, and
    /// not the actor of the change. `names` are every name they go by (key
    /// id, identity).
    pub fn check_person(&self, names: &[&str], widening: &Widening<'_>) -> Result<(), Rejection> {
        let first = names.first().copied().unwrap_or_default().to_owned();
        if names.iter().any(|n| self.agents.contains(n)) {
            return Err(Rejection::Agent(first));
        }
        if let Some(actor) = widening.actor
            && names.iter().any(|n| same_identity(n, actor))
        {
            return Err(Rejection::SelfApproval(first));
        }
        Ok(())
    }

    /// Checks one signed approval against the widening; on success returns
    /// the approver's identity.
    pub fn check(
        &self,
        signed: &SignedApproval,
        widening: &Widening<'_>,
        now: Timestamp,
    ) -> Result<String, Rejection> {
        let a = &signed.approval;
        let approver = self
            .approvers
            .get(&a.approver)
            .ok_or_else(|| Rejection::UnknownKey(a.approver.clone()))?;
        if !approver
            .key
            .verifies(&a.canonical_bytes(), &signed.signature)
        {
            return Err(Rejection::Forged(a.approver.clone()));
        }
        if a.source != widening.source || a.object != widening.object {
            return Err(Rejection::OtherObject {
                approved: format!("{} in {}", a.object, a.source),
                actual: format!("{} in {}", widening.object, widening.source),
            });
        }
        if a.digest != widening.digest {
            return Err(Rejection::OtherDigest {
                approved: a.digest.clone(),
                actual: widening.digest.to_owned(),
            });
        }
        if a.expires + self.clock_skew <= now {
            return Err(Rejection::Expired(a.expires));
        }
        if a.issued > now + self.clock_skew {
            return Err(Rejection::NotYetValid(a.issued));
        }
        let lifetime = a.expires.duration_since(a.issued);
        if lifetime > self.max_expiry {
            return Err(Rejection::TooLong {
                seconds: lifetime.as_secs(),
                max_seconds: self.max_expiry.as_secs(),
            });
        }
        self.check_person(&[&a.approver, &approver.identity], widening)?;
        Ok(approver.identity.clone())
    }
}

/// Identities compare case-insensitively (e-mail addresses, ARNs' names).
fn same_identity(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The verdict on one widening from all approvals offered for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Enough distinct approvers accepted it.
    pub approved: bool,
    /// Identities whose approvals were accepted, sorted.
    pub approvers: BTreeSet<String>,
    pub needed: usize,
    /// When the approval lapses: the latest expiry among the first `needed`
    /// approvals, earliest first (so the widening is covered until then).
    pub until: Option<Timestamp>,
    /// Approvals that did not count, by their position in the input.
    pub rejected: Vec<(usize, Rejection)>,
}

/// Weighs every approval offered for `widening` at `now`.
pub fn decide(
    rules: &Rules,
    widening: &Widening<'_>,
    approvals: &[SignedApproval],
    now: Timestamp,
) -> Decision {
    let needed = rules.needed(widening.severity);
    let mut accepted: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut rejected = Vec::new();
    for (i, signed) in approvals.iter().enumerate() {
        match rules.check(signed, widening, now) {
            Ok(identity) => {
                let expires = signed.approval.expires;
                match accepted.get_mut(&identity) {
                    // One person approving twice still counts once; the later expiry holds.
                    Some(e) => {
                        if expires > *e {
                            *e = expires;
                        }
                        rejected.push((i, Rejection::Duplicate(identity)));
                    }
                    None => {
                        accepted.insert(identity, expires);
                    }
                }
            }
            Err(r) => rejected.push((i, r)),
        }
    }
    let approved = accepted.len() >= needed;
    // Covered while `needed` approvals hold: the needed-th latest expiry.
    let mut expiries: Vec<Timestamp> = accepted.values().copied().collect();
    expiries.sort_by(|a, b| b.cmp(a));
    let until = if approved {
        expiries.get(needed - 1).copied()
    } else {
        None
    };
    Decision {
        approved,
        approvers: accepted.into_keys().collect(),
        needed,
        until,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DIGEST: &str = "d1";

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    fn rules() -> Rules {
        let approver = |seed: u8, identity: &str| Approver {
            key: key(seed).public(),
            identity: identity.into(),
        };
        Rules {
            approvers: BTreeMap::from([
                ("alice".into(), approver(1, "alice@example.com")),
                ("bob".into(), approver(2, "bob@example.com")),
                (
                    "ci".into(),
                    approver(3, "system:serviceaccount:ci:deployer"),
                ),
            ]),
            agents: AgentList(vec!["system:serviceaccount:ci:*".into()]),
            default_expiry: SignedDuration::from_hours(8),
            max_expiry: SignedDuration::from_hours(24),
            clock_skew: SignedDuration::from_secs(60),
            critical_approvals: 2,
        }
    }

    fn widening(severity: Severity, actor: Option<&'static str>) -> Widening<'static> {
        Widening {
            source: "prod",
            object: "ClusterRoleBinding/x",
            digest: DIGEST,
            severity,
            actor,
        }
    }

    fn approval(approver: &str, seed: u8) -> SignedApproval {
        Approval {
            source: "prod".into(),
            object: "ClusterRoleBinding/x".into(),
            digest: DIGEST.into(),
            approver: approver.into(),
            reason: "incident 42".into(),
            issued: t("2026-12-03T10:00:00Z"),
            expires: t("2026-12-03T14:00:00Z"),
        }
        .sign(&key(seed))
    }

    const NOW: &str = "2026-12-03T11:00:00Z";

    fn reject(signed: &SignedApproval, w: &Widening<'_>, now: &str) -> &'static str {
        rules().check(signed, w, t(now)).unwrap_err().label()
    }

    #[test]
    fn a_good_approval_is_accepted() {
        let w = widening(Severity::High, Some("mallory@example.com"));
        let d = decide(&rules(), &w, &[approval("alice", 1)], t(NOW));
        assert!(d.approved);
        assert_eq!(d.until, Some(t("2026-12-03T14:00:00Z")));
        assert_eq!(
            d.approvers.into_iter().collect::<Vec<_>>(),
            ["alice@example.com"]
        );
    }

    #[test]
    fn the_actor_of_the_change_cannot_approve_it() {
        let w = widening(Severity::High, Some("Alice@example.com"));
        assert_eq!(reject(&approval("alice", 1), &w, NOW), "self-approval");
        // Unknown actor: the rule cannot apply.
        let w = widening(Severity::High, None);
        assert!(rules().check(&approval("alice", 1), &w, t(NOW)).is_ok());
    }

    #[test]
    fn an_agent_never_approves() {
        let w = widening(Severity::Low, None);
        assert_eq!(reject(&approval("ci", 3), &w, NOW), "agent");
    }

    #[test]
    fn a_critical_widening_needs_two_distinct_approvers() {
        let w = widening(Severity::Critical, None);
        let one = decide(&rules(), &w, &[approval("alice", 1)], t(NOW));
        assert!(!one.approved);
        assert_eq!(one.needed, 2);
        let twice = decide(
            &rules(),
            &w,
            &[approval("alice", 1), approval("alice", 1)],
            t(NOW),
        );
        assert!(!twice.approved);
        assert_eq!(twice.rejected[0].1.label(), "duplicate-approver");
        let two = decide(
            &rules(),
            &w,
            &[approval("alice", 1), approval("bob", 2)],
            t(NOW),
        );
        assert!(two.approved);
    }

    #[test]
    fn forged_unknown_key_and_other_digest_are_rejected() {
        let w = widening(Severity::High, None);
        // Signed by bob's key under alice's name.
        assert_eq!(reject(&approval("alice", 2), &w, NOW), "forged");
        // Edited after signing: a wider digest.
        let mut edited = approval("alice", 1);
        edited.approval.digest = "d2".into();
        assert_eq!(reject(&edited, &w, NOW), "forged");
        assert_eq!(reject(&approval("carol", 9), &w, NOW), "unknown-key");
        let mut other = widening(Severity::High, None);
        other.digest = "d2";
        assert_eq!(reject(&approval("alice", 1), &other, NOW), "other-digest");
        other.digest = DIGEST;
        other.object = "ClusterRoleBinding/y";
        assert_eq!(reject(&approval("alice", 1), &other, NOW), "other-object");
    }

    #[test]
    fn expiry_tolerates_the_configured_clock_skew_and_no_more() {
        let w = widening(Severity::High, None);
        let a = approval("alice", 1);
        assert!(rules().check(&a, &w, t("2026-12-03T14:00:59Z")).is_ok());
        assert_eq!(reject(&a, &w, "2026-12-03T14:01:00Z"), "expired");
        assert!(rules().check(&a, &w, t("2026-12-03T09:59:01Z")).is_ok());
        assert_eq!(reject(&a, &w, "2026-12-03T09:58:59Z"), "not-yet-valid");
        let long = Approval {
            expires: t("2026-12-05T10:00:00Z"),
            ..a.approval.clone()
        }
        .sign(&key(1));
        assert_eq!(reject(&long, &w, NOW), "too-long");
    }

    #[test]
    fn approvals_round_trip_and_refuse_extra_fields() {
        let a = approval("alice", 1);
        let text = serde_json::to_string_pretty(&a).unwrap();
        assert_eq!(SignedApproval::parse("a.json", &text).unwrap(), a);
        let extra = text.replacen("\"reason\"", "\"admin\": true, \"reason\"", 1);
        let e = SignedApproval::parse("a.json", &extra).unwrap_err();
        assert_eq!(e.label(), "malformed");
        assert!(e.to_string().contains("a.json"), "{e}");
    }
}
