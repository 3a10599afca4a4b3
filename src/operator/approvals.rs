//! Approvals offered to a running operator, from the API to the source loop.
//!
//! `POST /api/v1/approvals` (`api`) authenticates the caller and hands an
//! [`Offer`] (a signed approval, or a Kubernetes user's approval fields) to
//! the source's loop, which holds the open widenings and their [`Held`]
//! approvals. There the widening named is recomputed against the baseline
//! with no grant cap, so its approval digest is exact (src/approval/digest.rs),
//! and the offer is checked with the approval rules (src/approval/mod.rs):
//! counted, or rejected with its label. Either way one typed `approval`
//! journal record is written and `permdrift_approvals_total` counted. The
//! checks here are pure; the loop does the journaling.

use super::records::{ApprovalBody, Body, Caller};
use super::source::{Current, SourceCtx};
use super::{Error, now};
use crate::approval::{Rejection, Rules, SignedApproval, Widening, grants_digest};
use crate::decide::{ObjectKey, SourceState};
use crate::diff::{self, DiffOptions};
use crate::report::Severity;
use crate::snapshot::SourceData;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a Kubernetes user posts with a bearer token (`permdrift approve --server`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonApproval {
    pub source: String,
    pub object: String,
    pub digest: String,
    pub reason: String,
    /// Default: `approvals.defaultExpiry`.
    #[serde(default)]
    pub valid_for_seconds: Option<u64>,
}

/// An approval as it reaches the source loop.
#[derive(Clone, Debug)]
pub enum Offered {
    Signed(Box<SignedApproval>),
    /// Fields from an authenticated and authorized Kubernetes user.
    Person {
        fields: PersonApproval,
        username: String,
    },
}

#[derive(Clone, Debug)]
pub struct Offer {
    pub offered: Offered,
    pub caller: Caller,
    pub remote: String,
    pub rules: Arc<Rules>,
}

impl Offer {
    pub fn source(&self) -> &str {
        match &self.offered {
            Offered::Signed(s) => &s.approval.source,
            Offered::Person { fields, .. } => &fields.source,
        }
    }

    pub fn object(&self) -> &str {
        match &self.offered {
            Offered::Signed(s) => &s.approval.object,
            Offered::Person { fields, .. } => &fields.object,
        }
    }

    pub fn digest(&self) -> &str {
        match &self.offered {
            Offered::Signed(s) => &s.approval.digest,
            Offered::Person { fields, .. } => &fields.digest,
        }
    }
}

/// One counted approval of an open widening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub identity: String,
    pub digest: String,
    pub expires: Timestamp,
}

/// Counted approvals per object, as a source loop keeps them; read back
/// from the journal's `approval` records on the first offer after a start
/// or takeover (`restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldApprovals {
    loaded: bool,
    pub by_object: BTreeMap<ObjectKey, Vec<Held>>,
    /// Distinct approvers each widening needs (as its last approval record says).
    pub needed: BTreeMap<ObjectKey, usize>,
}

/// The counted approvals of a source's journal records whose widening is
/// still open, as of `now` (expired ones are left out). Pure.
pub fn restore(
    records: &[crate::store::Record],
    state: &SourceState,
    now: Timestamp,
) -> HeldApprovals {
    let mut held = HeldApprovals {
        loaded: true,
        ..HeldApprovals::default()
    };
    for record in records {
        let Ok(Some(Body::Approval(a))) = Body::of_record(record) else {
            continue;
        };
        let (Some(object), Some(digest), Some(approver), Some(expires)) =
            (a.object, a.digest, a.approver, a.expires)
        else {
            continue;
        };
        if a.outcome != "counted" || expires <= now {
            continue;
        }
        if let Some((key, _)) = state.open.iter().find(|(_, o)| o.object == object) {
            held.needed.insert(key.clone(), a.needed);
            held.by_object.entry(key.clone()).or_default().push(Held {
                identity: approver,
                digest,
                expires,
            });
        }
    }
    held
}

/// Why an offer was not counted: a rule's rejection, or the widening it
/// names is not open.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(transparent)]
    Rule(#[from] Rejection),
    #[error("{0} has no open widening in this source")]
    NoWidening(String),
    #[error("this approval was already counted; sign a new one")]
    Replayed,
}

impl Refused {
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Rule(r) => r.label(),
            Refused::NoWidening(_) => "no-widening",
            Refused::Replayed => "replayed",
        }
    }
}

/// What the loop answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub object: String,
    pub approved: bool,
    pub approvers: BTreeSet<String>,
    pub needed: usize,
    pub until: Option<Timestamp>,
}

/// An open widening as approvals see it: its key, exact approval digest
/// and severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenTarget {
    pub key: ObjectKey,
    pub digest: String,
    pub severity: Severity,
}

/// Finds the open widening displayed as `object` and recomputes its
/// approval digest from the baseline and `current`, with no grant cap (the
/// operator judges with a cap, and its own digest is not the approval one).
pub fn open_target(
    cx: &SourceCtx,
    state: &SourceState,
    current: Current<'_>,
    object: &str,
) -> Option<OpenTarget> {
    let (key, open) = state.open.iter().find(|(_, o)| o.object == object)?;
    let change = uncapped_change(cx, state, current, key)?;
    let digest = grants_digest(&change).ok()?;
    Some(OpenTarget {
        key: key.clone(),
        digest,
        severity: open.severity,
    })
}

/// The change of `key` from the baseline to `current`, diffed with no grant
/// cap (what approval digests and revert plans need); None when equal.
pub fn uncapped_change(
    cx: &SourceCtx,
    state: &SourceState,
    current: Current<'_>,
    key: &ObjectKey,
) -> Option<crate::report::Change> {
    let options = DiffOptions {
        max_grants: 0,
        subject_grants: false,
        ..DiffOptions::default()
    };
    Some(match (&state.baseline.data, current, key) {
        (SourceData::Kubernetes(b), Current::K8s(c), ObjectKey::K8s(k)) => {
            let object_change = diff::k8s_object_change(b, c, k)?;
            let mut differ = diff::k8s::K8sDiffer::new(b, c);
            let mut classifier = crate::classify::k8s::Classifier::new();
            diff::k8s_change(
                &mut differ,
                &mut classifier,
                &cx.name,
                object_change,
                &options,
            )
            .0
        }
        (SourceData::Aws(b), Current::Aws(c), ObjectKey::Aws(k)) => {
            let object_change = diff::aws_object_change(b, c, k)?;
            let account = state
                .baseline
                .meta
                .account_id
                .clone()
                .or_else(|| c.account_id().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            let mut differ = diff::aws::AwsDiffer::new(b, c, cx.catalog);
            diff::aws_change(
                &mut differ,
                &cx.risk_sets,
                cx.catalog,
                &cx.name,
                &format!("account:{account}"),
                object_change,
                &options,
            )
            .0
        }
        _ => return None,
    })
}

/// (object, digest) pairs that enough unexpired approvals cover now, for
/// revert planning (`PlanRules::approved`).
pub fn approved_pairs(
    state: &SourceState,
    held: &HeldApprovals,
    now: Timestamp,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (key, hs) in &held.by_object {
        let Some(open) = state.open.get(key) else {
            continue;
        };
        let needed = held.needed.get(key).copied().unwrap_or(usize::MAX);
        let mut by_digest: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for h in hs.iter().filter(|h| h.expires > now) {
            by_digest.entry(&h.digest).or_default().insert(&h.identity);
        }
        for (digest, who) in by_digest {
            if who.len() >= needed {
                out.insert((open.object.clone(), digest.to_owned()));
            }
        }
    }
    out
}

/// Checks an offer against the open widening; on success, the identity it
/// counts for and until when. Pure.
pub fn check(
    offer: &Offer,
    source: &str,
    target: &OpenTarget,
    object: &str,
    now: Timestamp,
) -> Result<(String, Timestamp), Rejection> {
    // The actor is not known to the operator's watch or poll yet: until the
    // attribution work lands, self-approval is checked where an actor is known.
    let widening = Widening {
        source,
        object,
        digest: &target.digest,
        severity: target.severity,
        actor: None,
    };
    let rules = &offer.rules;
    match &offer.offered {
        Offered::Signed(signed) => {
            let identity = rules.check(signed, &widening, now)?;
            Ok((identity, signed.approval.expires))
        }
        Offered::Person { fields, username } => {
            if fields.source != source || fields.object != object {
                return Err(Rejection::OtherObject {
                    approved: format!("{} in {}", fields.object, fields.source),
                    actual: format!("{object} in {source}"),
                });
            }
            if fields.digest != target.digest {
                return Err(Rejection::OtherDigest {
                    approved: fields.digest.clone(),
                    actual: target.digest.clone(),
                });
            }
            let span = match fields.valid_for_seconds {
                Some(s) => SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX)),
                None => rules.default_expiry,
            };
            if span > rules.max_expiry {
                return Err(Rejection::TooLong {
                    seconds: span.as_secs(),
                    max_seconds: rules.max_expiry.as_secs(),
                });
            }
            rules.check_person(&[username], &widening)?;
            let expires = now
                .checked_add(span)
                .map_err(|_| Rejection::Malformed("validForSeconds is out of range".into()))?;
            Ok((username.clone(), expires))
        }
    }
}

/// Adds a counted approval and weighs what the widening holds: distinct
/// unexpired approvers of this digest, and until when `needed` of them hold.
pub fn count(
    held: &mut Vec<Held>,
    new: Held,
    needed: usize,
    now: Timestamp,
) -> (bool, BTreeSet<String>, Option<Timestamp>) {
    held.retain(|h| h.expires > now && h.digest == new.digest);
    match held.iter_mut().find(|h| h.identity == new.identity) {
        Some(h) => h.expires = h.expires.max(new.expires),
        None => held.push(new),
    }
    let approvers: BTreeSet<String> = held.iter().map(|h| h.identity.clone()).collect();
    let mut expiries: Vec<Timestamp> = held.iter().map(|h| h.expires).collect();
    expiries.sort_by(|a, b| b.cmp(a));
    let approved = approvers.len() >= needed;
    let until = approved
        .then(|| expiries.get(needed.saturating_sub(1)).copied())
        .flatten();
    (approved, approvers, until)
}

/// Open widenings that enough unexpired approvals of their current digest
/// cover. Pure.
pub fn approved_now(state: &SourceState, held: &HeldApprovals, now: Timestamp) -> usize {
    state
        .open
        .iter()
        .filter(|(key, _)| {
            held.by_object.get(*key).is_some_and(|hs| {
                let live: BTreeSet<&str> = hs
                    .iter()
                    .filter(|h| h.expires > now)
                    .map(|h| h.identity.as_str())
                    .collect();
                live.len() >= held.needed.get(*key).copied().unwrap_or(usize::MAX)
            })
        })
        .count()
}

/// After the loop judged (or took over): reads the counted approvals back
/// from the journal once, drops what closed or expired, and publishes
/// `permdrift_approved_widenings`.
pub async fn refresh(
    cx: &SourceCtx,
    state: &SourceState,
    held: &mut HeldApprovals,
) -> Result<(), Error> {
    let t = now();
    if !held.loaded {
        let records = cx.store.source_records(&cx.name).await?;
        *held = restore(&records, state, t);
    }
    let mut lapsed = 0u64;
    held.by_object.retain(|key, hs| {
        let Some(open) = state.open.get(key) else {
            return false;
        };
        let before = hs.len();
        hs.retain(|h| h.expires > t);
        let gone = before - hs.len();
        if gone > 0 {
            lapsed += gone as u64;
            // The widening stands unapproved again (or with fewer approvers).
            tracing::warn!(object = %open.object, expired = gone,
                "approval expired: the widening is no longer covered by it");
        }
        !hs.is_empty()
    });
    if lapsed > 0 {
        cx.metrics
            .approvals_expired
            .with_label_values(&[cx.name.as_str()])
            .inc_by(lapsed);
    }
    publish(cx, state, held, t);
    Ok(())
}

/// The loop's side of an offer: checks it against the open widening,
/// journals the outcome and counts it. An error is a store failure.
pub async fn offer(
    cx: &SourceCtx,
    state: &SourceState,
    current: Current<'_>,
    held: &mut HeldApprovals,
    offer: Offer,
) -> Result<Result<Counted, Refused>, Error> {
    let t = now();
    if !held.loaded {
        let records = cx.store.source_records(&cx.name).await?;
        *held = restore(&records, state, t);
    }
    let object = offer.object().to_owned();
    let target = open_target(cx, state, current, &object);
    let decided = match &target {
        None => Err(Refused::NoWidening(object.clone())),
        Some(target) => check(&offer, &cx.name, target, &object, t)
            .map_err(Refused::from)
            .and_then(|(identity, expires)| {
                // The same signed approval again (after a restart the API's
                // memory of used signatures is gone; the journal's is not).
                let seen = held.by_object.get(&target.key).is_some_and(|hs| {
                    hs.iter().any(|h| {
                        h.identity == identity && h.digest == target.digest && h.expires == expires
                    })
                });
                if seen && matches!(offer.offered, Offered::Signed(_)) {
                    return Err(Refused::Replayed);
                }
                Ok((identity, expires))
            })
            .map(|(identity, expires)| {
                let needed = offer.rules.needed(target.severity);
                held.needed.insert(target.key.clone(), needed);
                let entry = held.by_object.entry(target.key.clone()).or_default();
                let new = Held {
                    identity: identity.clone(),
                    digest: target.digest.clone(),
                    expires,
                };
                let (approved, approvers, until) = count(entry, new, needed, t);
                (identity, expires, approved, approvers, needed, until)
            }),
    };
    let (record, answer) = match decided {
        Ok((identity, expires, approved, approvers, needed, until)) => (
            ApprovalBody {
                source: Some(cx.name.clone()),
                object: Some(object.clone()),
                digest: Some(offer.digest().to_owned()),
                outcome: "counted".into(),
                reason: "counted".into(),
                message: offer_reason(&offer),
                caller: Some(offer.caller.clone()),
                approver: Some(identity),
                expires: Some(expires),
                approved,
                approvers: approvers.iter().cloned().collect(),
                needed,
                remote: offer.remote.clone(),
            },
            Ok(Counted {
                object,
                approved,
                approvers,
                needed,
                until,
            }),
        ),
        Err(refused) => (
            rejected_body(
                Some(&cx.name),
                &offer_parts(&offer),
                Some(offer.caller.clone()),
                &offer.remote,
                refused.label(),
                &refused.to_string(),
            ),
            Err(refused),
        ),
    };
    cx.metrics
        .approvals
        .with_label_values(&[cx.name.as_str(), &record.outcome, &record.reason])
        .inc();
    cx.store
        .append(&cx.name, &Body::Approval(record), t)
        .await?;
    publish(cx, state, held, t);
    Ok(answer)
}

/// Sets `permdrift_approved_widenings` and `permdrift_approvals_active` for the source.
pub fn publish(cx: &SourceCtx, state: &SourceState, held: &HeldApprovals, t: Timestamp) {
    let n = approved_now(state, held, t);
    cx.metrics
        .approved_widenings
        .with_label_values(&[cx.name.as_str()])
        .set(i64::try_from(n).unwrap_or(i64::MAX));
    let active = held
        .by_object
        .values()
        .flatten()
        .filter(|h| h.expires > t)
        .count();
    cx.metrics
        .approvals_active
        .with_label_values(&[cx.name.as_str()])
        .set(i64::try_from(active).unwrap_or(i64::MAX));
}

fn offer_reason(offer: &Offer) -> String {
    match &offer.offered {
        Offered::Signed(s) => s.approval.reason.clone(),
        Offered::Person { fields, .. } => fields.reason.clone(),
    }
}

/// What an offer names, for a rejection record.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub object: Option<String>,
    pub digest: Option<String>,
    pub approver: Option<String>,
    pub expires: Option<Timestamp>,
}

pub fn offer_parts(offer: &Offer) -> Parts {
    match &offer.offered {
        Offered::Signed(s) => Parts {
            object: Some(s.approval.object.clone()),
            digest: Some(s.approval.digest.clone()),
            approver: Some(s.approval.approver.clone()),
            expires: Some(s.approval.expires),
        },
        Offered::Person { fields, username } => Parts {
            object: Some(fields.object.clone()),
            digest: Some(fields.digest.clone()),
            approver: Some(username.clone()),
            expires: None,
        },
    }
}

/// A rejection record: `label` as docs/approvals.md names it.
pub fn rejected_body(
    source: Option<&str>,
    parts: &Parts,
    caller: Option<Caller>,
    remote: &str,
    label: &str,
    message: &str,
) -> ApprovalBody {
    ApprovalBody {
        source: source.map(str::to_owned),
        object: parts.object.clone(),
        digest: parts.digest.clone(),
        outcome: "rejected".into(),
        reason: label.to_owned(),
        message: message.to_owned(),
        caller,
        approver: parts.approver.clone(),
        expires: parts.expires,
        approved: false,
        approvers: Vec::new(),
        needed: 0,
        remote: remote.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::OpenWidening;
    use crate::model::k8s::{RbacKey, RbacKind};

    fn key(name: &str) -> ObjectKey {
        ObjectKey::K8s(RbacKey::new(RbacKind::ClusterRoleBinding, None, name))
    }

    fn state_with_open(names: &[&str]) -> SourceState {
        let mut state = SourceState::new(crate::snapshot::SourceSnapshot::kubernetes(
            "lab",
            Default::default(),
        ));
        for name in names {
            state.open.insert(
                key(name),
                OpenWidening {
                    object: format!("ClusterRoleBinding/{name}"),
                    fingerprint: String::new(),
                    grants: String::new(),
                    severity: Severity::Critical,
                    detected_at: Timestamp::UNIX_EPOCH,
                },
            );
        }
        state
    }

    fn record(seq: u64, body: ApprovalBody) -> crate::store::Record {
        let (kind, body) = Body::Approval(body).encode().unwrap();
        crate::store::Record {
            seq,
            at: "2026-12-03T10:00:00Z".into(),
            kind: kind.into(),
            source: Some("lab".into()),
            body,
            prev: String::new(),
            mac: None,
            hash: String::new(),
        }
    }

    fn counted(object: &str, who: &str, expires: &str) -> ApprovalBody {
        ApprovalBody {
            source: Some("lab".into()),
            object: Some(format!("ClusterRoleBinding/{object}")),
            digest: Some("d1".into()),
            outcome: "counted".into(),
            reason: "counted".into(),
            message: String::new(),
            caller: None,
            approver: Some(who.into()),
            expires: Some(t(expires)),
            approved: false,
            approvers: Vec::new(),
            needed: 2,
            remote: String::new(),
        }
    }

    /// After a restart, only counted, unexpired approvals of widenings still
    /// open come back; with two distinct approvers the widening is approved.
    #[test]
    fn approvals_are_restored_from_the_journal() {
        let now = t("2026-12-03T10:00:00Z");
        let state = state_with_open(&["x", "y"]);
        let mut rejected = counted("x", "mallory", "2026-12-03T12:00:00Z");
        rejected.outcome = "rejected".into();
        rejected.reason = "agent".into();
        let records = [
            record(1, counted("x", "alice", "2026-12-03T12:00:00Z")),
            record(2, rejected),
            record(3, counted("x", "bob", "2026-12-03T11:00:00Z")),
            record(4, counted("y", "alice", "2026-12-03T09:00:00Z")),
            record(5, counted("gone", "alice", "2026-12-03T12:00:00Z")),
        ];
        let held = restore(&records, &state, now);
        assert_eq!(held.by_object.len(), 1, "{held:?}");
        assert_eq!(held.by_object[&key("x")].len(), 2);
        assert_eq!(approved_now(&state, &held, now), 1);
        assert_eq!(
            approved_pairs(&state, &held, now),
            BTreeSet::from([("ClusterRoleBinding/x".to_owned(), "d1".to_owned())])
        );
        // Once bob's approval lapses, one approver is not enough.
        let later = t("2026-12-03T11:30:00Z");
        assert_eq!(approved_now(&state, &held, later), 0);
        assert!(approved_pairs(&state, &held, later).is_empty());
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held(who: &str, digest: &str, expires: &str) -> Held {
        Held {
            identity: who.into(),
            digest: digest.into(),
            expires: t(expires),
        }
    }

    #[test]
    fn distinct_unexpired_approvers_of_the_same_digest_count() {
        let now = t("2026-12-03T10:00:00Z");
        let mut hs = vec![
            held("old", "d1", "2026-12-03T09:00:00Z"),
            held("other-digest", "d0", "2026-12-03T20:00:00Z"),
        ];
        let (approved, who, until) =
            count(&mut hs, held("alice", "d1", "2026-12-03T12:00:00Z"), 2, now);
        assert!(!approved);
        assert_eq!(
            who.len(),
            1,
            "expired and other-digest approvals are dropped"
        );
        assert_eq!(until, None);
        // alice again counts once; bob makes two.
        let (approved, _, _) = count(&mut hs, held("alice", "d1", "2026-12-03T13:00:00Z"), 2, now);
        assert!(!approved);
        let (approved, who, until) =
            count(&mut hs, held("bob", "d1", "2026-12-03T11:00:00Z"), 2, now);
        assert!(approved);
        assert_eq!(who.into_iter().collect::<Vec<_>>(), ["alice", "bob"]);
        // Covered while both hold: until the earlier of the two expiries.
        assert_eq!(until, Some(t("2026-12-03T11:00:00Z")));
    }
}
