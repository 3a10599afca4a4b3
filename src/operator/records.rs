//! What the operator writes in the journal, and how it reads it back.
//!
//! Every record body the operator and the store write is one variant of
//! [`Body`], a serde enum tagged by the record's `kind` (`baseline`,
//! `baseline-patch`, `change`, `close`, `api-request`, `approval`, `revert-plan`,
//! `revert-intent`, `revert-result`, `reset`, `admission`, `suggestion`,
//! `attribution`): judged
//! outcomes go in through [`Body::encode`], and at start or takeover a
//! source's records come back out through [`Body::decode`] and [`replay`] as
//! its baseline (the last full baseline snapshot plus later patches, in
//! order) and its open widenings. The bodies serialise to exactly the JSON
//! the operator wrote before they were typed, so the canonical bytes that are
//! hashed and MACed do not change (tests below pin them). Pure: the store
//! does the I/O.

use crate::decide::{ObjectKey, OpenWidening, Verdict};
use crate::model::aws::{AwsKey, AwsKind};
use crate::model::k8s::{RbacKey, RbacKind};
use crate::report::{Change, ChangeKind, Direction, Risk, Severity, Witness};
use crate::store::Record;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const BASELINE: &str = "baseline";
pub const BASELINE_PATCH: &str = "baseline-patch";
pub const CHANGE: &str = "change";
pub const CLOSE: &str = "close";
pub const API_REQUEST: &str = "api-request";
pub const APPROVAL: &str = "approval";
pub const REVERT_PLAN: &str = "revert-plan";
pub const REVERT_INTENT: &str = "revert-intent";
pub const REVERT_RESULT: &str = "revert-result";
pub const ADMISSION: &str = "admission";
pub const SUGGESTION: &str = "suggestion";
pub const ATTRIBUTION: &str = "attribution";
/// Written by the store itself (`Store::reset`).
pub const RESET: &str = crate::store::head::RESET_KIND;

/// One record body, tagged by its journal kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "kebab-case")]
pub enum Body {
    Baseline(BaselineBody),
    BaselinePatch(PatchBody),
    Change(Box<ChangeBody>),
    Close(CloseBody),
    ApiRequest(ApiRequestBody),
    Reset(ResetBody),
    Approval(ApprovalBody),
    RevertPlan(RevertPlanBody),
    RevertIntent(RevertIntentBody),
    RevertResult(RevertResultBody),
    Admission(Box<AdmissionBody>),
    Suggestion(SuggestionBody),
    Attribution(AttributionBody),
}

/// A full baseline snapshot was stored under `digest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineBody {
    pub digest: String,
    pub reason: String,
    /// Absent in records written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<usize>,
}

/// The baseline now holds `raw` for `key` (or, with `None`, no such object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    #[serde(default)]
    pub raw: Option<Value>,
    pub reason: String,
    /// Who accepted it, as authenticated (accepted patches only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A judged change. Fields added over time default when absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    pub change: ChangeKind,
    pub direction: Direction,
    pub severity: Severity,
    #[serde(default)]
    pub risks: Vec<Risk>,
    pub verdict: Verdict,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub fingerprint: String,
    /// What the change grants beyond the baseline (`decide::grants_digest`).
    #[serde(default)]
    pub grants: String,
    #[serde(default)]
    pub gained_count: usize,
    #[serde(default)]
    pub lost_count: usize,
    #[serde(default)]
    pub witness: Option<Witness>,
    /// Replay always read a missing time as 0, the epoch.
    #[serde(default, with = "unix_seconds")]
    pub detected_at: Timestamp,
    /// From the object's last write to detection.
    #[serde(default)]
    pub latency_seconds: Option<f64>,
    /// The current object, kept so the change can be accepted (or reverted)
    /// from the journal alone.
    #[serde(default)]
    pub raw: Option<Value>,
    /// Who made the change and which agent suggestion it came from, as far
    /// as known when it was judged (docs/attribution.md); absent in
    /// records written without attribution, so their bytes do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<crate::attribution::Attribution>,
}

/// An agent suggestion posted to the API (`POST /api/v1/suggestions`),
/// kept whole so that it can be matched again after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuggestionBody {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When the agent said it (front matter `at`), else when it was posted.
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who posted it, as authenticated.
    pub caller: Caller,
    /// The name it was posted under (`?name=`), for evidence locations.
    pub file: String,
    /// The text as posted (UTF-8, bounded by the API's size limit).
    pub text: String,
    /// Actions understood, and what looked like one but was not.
    pub actions: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// The attribution of a change learnt after its `change` record was
/// written (the audit event came later): the same object and fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    pub fingerprint: String,
    pub attribution: crate::attribution::Attribution,
    /// From the change's detection to this record.
    pub waited_seconds: f64,
}

/// An open widening closed (restored, accepted, superseded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloseBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub fingerprint: String,
    pub reason: String,
    #[serde(default)]
    pub exposure_seconds: f64,
}

/// One request to the authenticated API, accepted or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRequestBody {
    pub action: String,
    pub source: Option<String>,
    pub outcome: String,
    pub status: u16,
    pub reason: String,
    pub message: String,
    pub caller: Option<Caller>,
    pub remote: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<usize>,
}

/// An approval offered to the operator, counted or rejected
/// (`operator/approvals.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalBody {
    pub source: Option<String>,
    pub object: Option<String>,
    /// The digest the approval names.
    pub digest: Option<String>,
    /// `counted` or `rejected`.
    pub outcome: String,
    /// `counted`, or the rejection label (docs/approvals.md).
    pub reason: String,
    pub message: String,
    /// Who offered it, as authenticated (a signed approval: its key).
    pub caller: Option<Caller>,
    /// The approver as the rules know them (a key's identity, a username).
    pub approver: Option<String>,
    pub expires: Option<Timestamp>,
    /// Whether the widening is approved now, with this approval.
    pub approved: bool,
    pub approvers: Vec<String>,
    pub needed: usize,
    pub remote: String,
}

/// The revert a widening would get (`operator/dry_run.rs`): in dry-run
/// mode, journaled instead of run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevertPlanBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    /// The approval digest of the widening (src/approval/digest.rs).
    pub digest: String,
    /// `dry-run`.
    pub mode: String,
    /// `revert` or `skip`.
    pub outcome: String,
    /// The skip label, or `revert`.
    pub reason: String,
    /// The operations, as `permdrift plan --format json` prints them
    /// (src/revert/plan.rs), exactly as they would run.
    pub plan: Value,
}

/// Enforce mode is about to run a revert (`operator/enforce.rs`): journaled
/// before the first write, so a restart finds what may have been applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevertIntentBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    /// The approval digest of the widening reverted (src/approval/digest.rs).
    pub digest: String,
    /// The resourceVersion judged (Kubernetes), which the writes are conditioned on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The operations, as `permdrift plan --format json` prints them.
    pub ops: Value,
}

/// How a revert ended (`operator/enforce.rs`), after its intent (`intent`
/// is that record's seq; a revert a rail held back has no intent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevertResultBody {
    #[serde(with = "stored_key")]
    pub key: ObjectKey,
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    /// `reverted`, `failed`, `skipped` or `already-restored`.
    pub outcome: String,
    /// `reverted`, the error's metric label (src/revert/k8s.rs, aws.rs), the
    /// rail's label (src/revert/rails.rs), or `already-restored`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tries made (0 when nothing ran).
    pub tries: u32,
}

/// One review of an RBAC write at admission (`operator/admission.rs`):
/// what the gate answered the API server, and who asked for the write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdmissionBody {
    /// The AdmissionReview's uid (the API server's audit log carries it too).
    pub uid: String,
    /// The object written (`ClusterRoleBinding/eng-admin`), when RBAC.
    pub object: Option<String>,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: String,
    /// The gate's outcome (`denied`, `warned`, `approved`, ...), or why
    /// it could not judge (`not-recording`, `timeout`, `malformed`, ...).
    pub outcome: String,
    /// Whether the write was allowed.
    pub allowed: bool,
    /// `detect` or `enforce`.
    pub mode: String,
    /// The requester (`userInfo`): the actor of the write.
    pub actor: Option<super::admission::Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<Risk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<String>,
    /// The content digest approvals name (src/admission/mod.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The denial message or warnings sent back.
    pub message: String,
    pub dry_run: bool,
    /// The caller's address (the API server).
    pub remote: String,
    /// Time spent judging, in seconds.
    pub seconds: f64,
}

/// Who made a request, as authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Caller {
    /// A Kubernetes identity, from TokenReview.
    Kubernetes {
        username: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        uid: String,
        groups: Vec<String>,
    },
    /// A configured signing key.
    Key { key_id: String, nonce: String },
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Kubernetes { username, .. } => write!(f, "kubernetes:{username}"),
            Caller::Key { key_id, .. } => write!(f, "key:{key_id}"),
        }
    }
}

/// The first record of a journal started over (`store/reset.rs` writes it).
pub use crate::store::ResetBody;

/// A record body that does not read as its kind says.
#[derive(Debug, thiserror::Error)]
#[error("journal record {seq} ({kind}): {source}")]
pub struct DecodeError {
    pub seq: u64,
    pub kind: String,
    /// Names the field (`serde_path_to_error`).
    #[source]
    pub source: serde_path_to_error::Error<serde_json::Error>,
}

impl Body {
    /// The journal kind this body is written under.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Baseline(_) => BASELINE,
            Body::BaselinePatch(_) => BASELINE_PATCH,
            Body::Change(_) => CHANGE,
            Body::Close(_) => CLOSE,
            Body::ApiRequest(_) => API_REQUEST,
            Body::Reset(_) => RESET,
            Body::Approval(_) => APPROVAL,
            Body::RevertPlan(_) => REVERT_PLAN,
            Body::RevertIntent(_) => REVERT_INTENT,
            Body::RevertResult(_) => REVERT_RESULT,
            Body::Admission(_) => ADMISSION,
            Body::Suggestion(_) => SUGGESTION,
            Body::Attribution(_) => ATTRIBUTION,
        }
    }

    /// `(kind, body)` as the store takes them.
    pub fn encode(&self) -> Result<(&'static str, Value), serde_json::Error> {
        let mut tagged = serde_json::to_value(self)?;
        let body = tagged.get_mut("body").map(Value::take).unwrap_or_default();
        Ok((self.kind(), body))
    }

    /// The body of a record of `kind`; `None` for kinds the operator does
    /// not write (`snapshot`, `note`, ...), which replay passes over. By
    /// reference: bodies hold whole objects, and replay reads every one.
    pub fn decode(
        kind: &str,
        body: &Value,
    ) -> Result<Option<Body>, serde_path_to_error::Error<serde_json::Error>> {
        fn de<'a, T: Deserialize<'a>>(
            body: &'a Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(body)
        }
        Ok(Some(match kind {
            BASELINE => Body::Baseline(de(body)?),
            BASELINE_PATCH => Body::BaselinePatch(de(body)?),
            CHANGE => Body::Change(de(body)?),
            CLOSE => Body::Close(de(body)?),
            API_REQUEST => Body::ApiRequest(de(body)?),
            RESET => Body::Reset(de(body)?),
            APPROVAL => Body::Approval(de(body)?),
            REVERT_PLAN => Body::RevertPlan(de(body)?),
            REVERT_INTENT => Body::RevertIntent(de(body)?),
            REVERT_RESULT => Body::RevertResult(de(body)?),
            ADMISSION => Body::Admission(de(body)?),
            SUGGESTION => Body::Suggestion(de(body)?),
            ATTRIBUTION => Body::Attribution(de(body)?),
            _ => return Ok(None),
        }))
    }

    /// [`Body::decode`] of a stored record, the error naming its seq.
    pub fn of_record(record: &Record) -> Result<Option<Body>, DecodeError> {
        Body::decode(&record.kind, &record.body).map_err(|source| DecodeError {
            seq: record.seq,
            kind: record.kind.clone(),
            source,
        })
    }
}

/// An object key as journaled: `{"platform": "kubernetes", "kind", "namespace", "name"}`
/// or `{"platform": "aws", "kind", "arn"}`.
mod stored_key {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "platform")]
    enum Repr {
        #[serde(rename = "kubernetes")]
        K8s {
            kind: String,
            namespace: Option<String>,
            name: String,
        },
        #[serde(rename = "aws")]
        Aws { kind: String, arn: String },
    }

    pub fn serialize<S: Serializer>(key: &ObjectKey, s: S) -> Result<S::Ok, S::Error> {
        match key {
            ObjectKey::K8s(k) => Repr::K8s {
                kind: k.kind.as_str().to_owned(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
            },
            ObjectKey::Aws(k) => Repr::Aws {
                kind: k.kind.as_str().to_owned(),
                arn: k.arn.clone(),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectKey, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::K8s {
                kind,
                namespace,
                name,
            } => ObjectKey::K8s(RbacKey {
                kind: RbacKind::from_kind(&kind)
                    .ok_or_else(|| D::Error::custom(format!("unknown RBAC kind {kind:?}")))?,
                namespace,
                name,
            }),
            Repr::Aws { kind, arn } => ObjectKey::Aws(AwsKey {
                kind: AwsKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .ok_or_else(|| D::Error::custom(format!("unknown IAM kind {kind:?}")))?,
                arn,
            }),
        })
    }
}

/// A timestamp journaled as Unix seconds with microseconds (a JSON number),
/// as `detected_at` always was.
pub mod unix_seconds {
    use jiff::Timestamp;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(super::super::unix_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let secs = f64::deserialize(d)?;
        super::super::from_unix_seconds(secs)
            .ok_or_else(|| D::Error::custom(format!("{secs} is not a time")))
    }
}

pub fn baseline(digest: &str, reason: &str, objects: usize) -> Body {
    Body::Baseline(BaselineBody {
        digest: digest.to_owned(),
        reason: reason.to_owned(),
        objects: Some(objects),
    })
}

/// The baseline now holds `raw` for `key` (or, with `None`, no such object).
pub fn baseline_patch(key: &ObjectKey, raw: Option<Value>, reason: &str) -> Body {
    Body::BaselinePatch(PatchBody {
        key: key.clone(),
        object: key.to_string(),
        raw,
        reason: reason.to_owned(),
        by: None,
    })
}

/// A baseline patch accepted by a person: `by` is who, as authenticated.
pub fn accepted_patch(key: &ObjectKey, raw: Option<Value>, by: &str) -> Body {
    Body::BaselinePatch(PatchBody {
        key: key.clone(),
        object: key.to_string(),
        raw,
        reason: "accepted".into(),
        by: Some(by.to_owned()),
    })
}

pub struct ChangeFacts<'a> {
    pub key: &'a ObjectKey,
    pub change: &'a Change,
    pub verdict: Verdict,
    pub reason: &'a str,
    /// What the change grants beyond the baseline (`decide::grants_digest`).
    pub grants: &'a str,
    /// The current object, kept so the change can be accepted (or reverted) from the journal alone.
    pub raw: Option<Value>,
    pub detected_at: Timestamp,
    pub latency_seconds: Option<f64>,
}

pub fn change(f: ChangeFacts<'_>) -> Body {
    let c = f.change;
    Body::Change(Box::new(ChangeBody {
        key: f.key.clone(),
        object: c.object.display(),
        change: c.change,
        direction: c.direction,
        severity: c.severity,
        risks: c.risks.clone(),
        verdict: f.verdict,
        reason: f.reason.to_owned(),
        fingerprint: c.fingerprint.clone(),
        grants: f.grants.to_owned(),
        gained_count: c.gained_count,
        lost_count: c.lost_count,
        witness: c.witness.clone(),
        detected_at: f.detected_at,
        latency_seconds: f.latency_seconds,
        raw: f.raw,
        attribution: c.attribution.clone().flatten(),
    }))
}

pub fn close(key: &ObjectKey, open: &OpenWidening, reason: &str, exposure_seconds: f64) -> Body {
    Body::Close(CloseBody {
        key: key.clone(),
        object: open.object.clone(),
        fingerprint: open.fingerprint.clone(),
        reason: reason.to_owned(),
        exposure_seconds,
    })
}

/// A source's state as its records describe it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replayed {
    /// Digest of the last full baseline snapshot.
    pub baseline_digest: Option<String>,
    /// Changes to apply to that snapshot, in order: key and object (None = absent).
    pub patches: Vec<(ObjectKey, Option<Value>)>,
    pub open: BTreeMap<ObjectKey, OpenWidening>,
    /// The current object of each open widening, as recorded.
    pub open_raw: BTreeMap<ObjectKey, Option<Value>>,
}

impl Replayed {
    /// Applies one more record body (records of one source, oldest first).
    pub fn apply(&mut self, body: Body) {
        match body {
            Body::Baseline(b) => {
                self.baseline_digest = Some(b.digest);
                self.patches.clear();
            }
            Body::BaselinePatch(p) => self.patches.push((p.key, p.raw)),
            Body::Change(c) if c.verdict == Verdict::Alert => {
                let c = *c;
                let first = self
                    .open
                    .get(&c.key)
                    .map_or(c.detected_at, |o| o.detected_at);
                self.open.insert(
                    c.key.clone(),
                    OpenWidening {
                        object: c.object,
                        fingerprint: c.fingerprint,
                        grants: c.grants,
                        severity: c.severity,
                        detected_at: first,
                    },
                );
                self.open_raw.insert(c.key, c.raw);
            }
            Body::Change(c) => {
                self.open.remove(&c.key);
                self.open_raw.remove(&c.key);
            }
            Body::Close(c) => {
                self.open.remove(&c.key);
                self.open_raw.remove(&c.key);
            }
            Body::ApiRequest(_)
            | Body::Reset(_)
            | Body::Approval(_)
            | Body::RevertPlan(_)
            | Body::RevertIntent(_)
            | Body::RevertResult(_)
            | Body::Admission(_)
            | Body::Suggestion(_)
            | Body::Attribution(_) => {}
        }
    }
}

/// Replays the records of one source, oldest first. A body that does not
/// read as its kind stops the replay with the record's seq and field: a
/// baseline rebuilt without it would be wrong.
pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<Replayed, DecodeError> {
    let mut r = Replayed::default();
    for record in records {
        if let Some(body) = Body::of_record(record)? {
            r.apply(body);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::canonical_json;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::K8s(RbacKey::new(RbacKind::ClusterRoleBinding, None, name))
    }

    fn record(seq: u64, body: &Body) -> Record {
        let (kind, body) = body.encode().unwrap();
        Record {
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

    fn at(secs: f64) -> Timestamp {
        crate::operator::from_unix_seconds(secs).unwrap()
    }

    fn alert(name: &str, fp: &str, secs: f64) -> Body {
        Body::decode(
            CHANGE,
            &json!({"key": {"platform": "kubernetes", "kind": "ClusterRoleBinding", "namespace": null, "name": name},
                "object": name, "change": "modified", "direction": "widening", "verdict": "alert",
                "fingerprint": fp, "grants": format!("g-{fp}"), "severity": "high", "detected_at": secs, "raw": {"x": 1}}),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn keys_round_trip() {
        for k in [
            key("a"),
            ObjectKey::K8s(RbacKey::new(RbacKind::Role, Some("ns"), "r")),
            ObjectKey::Aws(AwsKey {
                kind: AwsKind::Role,
                arn: "arn:aws:iam::1:role/r".into(),
            }),
        ] {
            let body = baseline_patch(&k, None, "neutral");
            let (kind, value) = body.encode().unwrap();
            assert_eq!(Body::decode(kind, &value).unwrap(), Some(body));
        }
    }

    /// The canonical text (what is hashed and MACed) of each body is the
    /// text the operator wrote before bodies were typed, byte for byte.
    #[test]
    fn bodies_keep_their_journaled_bytes() {
        let k8s = key("ops");
        let aws = ObjectKey::Aws(AwsKey {
            kind: AwsKind::Role,
            arn: "arn:aws:iam::1:role/r".into(),
        });
        let open = OpenWidening {
            object: "ClusterRoleBinding/ops".into(),
            fingerprint: "fp".into(),
            grants: "g".into(),
            severity: Severity::High,
            detected_at: at(1.5),
        };
        let cases = [
            (
                baseline("d1", "first", 3),
                r#"{"digest":"d1","objects":3,"reason":"first"}"#,
            ),
            (
                baseline_patch(&k8s, None, "narrowing"),
                r#"{"key":{"kind":"ClusterRoleBinding","name":"ops","namespace":null,"platform":"kubernetes"},"object":"ClusterRoleBinding/ops","raw":null,"reason":"narrowing"}"#,
            ),
            (
                accepted_patch(&aws, Some(json!({"a": 1})), "key:alice"),
                r#"{"by":"key:alice","key":{"arn":"arn:aws:iam::1:role/r","kind":"Role","platform":"aws"},"object":"Role arn:aws:iam::1:role/r","raw":{"a":1},"reason":"accepted"}"#,
            ),
            (
                close(&k8s, &open, "restored", 2.25),
                r#"{"exposure_seconds":2.25,"fingerprint":"fp","key":{"kind":"ClusterRoleBinding","name":"ops","namespace":null,"platform":"kubernetes"},"object":"ClusterRoleBinding/ops","reason":"restored"}"#,
            ),
        ];
        for (body, text) in cases {
            let (_, value) = body.encode().unwrap();
            assert_eq!(canonical_json(&value), text);
        }
        // A change record as an operator wrote it (tests/operator.rs shape):
        // decoded and encoded again, it is the same bytes.
        let written = json!({"key": {"platform": "kubernetes", "kind": "ClusterRoleBinding", "namespace": null, "name": "ops"},
            "object": "ClusterRoleBinding/ops", "change": "added", "direction": "widening", "severity": "critical",
            "risks": ["cluster-admin"], "verdict": "alert", "reason": "no allow rule", "fingerprint": "f",
            "grants": "g", "gained_count": 1, "lost_count": 0, "witness": null, "detected_at": 1764756000.123456,
            "latency_seconds": null, "raw": {"kind": "ClusterRoleBinding"}});
        let body = Body::decode(CHANGE, &written).unwrap().unwrap();
        let (kind, again) = body.encode().unwrap();
        assert_eq!(kind, CHANGE);
        assert_eq!(canonical_json(&again), canonical_json(&written));
    }

    #[test]
    fn every_kind_round_trips_under_its_serde_tag() {
        let api = Body::ApiRequest(ApiRequestBody {
            action: "baseline-accept".into(),
            source: None,
            outcome: "accepted".into(),
            status: 200,
            reason: "ok".into(),
            message: String::new(),
            caller: Some(Caller::Key {
                key_id: "k".into(),
                nonce: "n".into(),
            }),
            remote: "127.0.0.1:1".into(),
            accepted: Some(2),
        });
        let reset = Body::Reset(ResetBody {
            reason: "r".into(),
            actor: "a".into(),
            previous: serde_json::Map::new(),
        });
        let admission = Body::Admission(Box::new(AdmissionBody {
            uid: "u".into(),
            object: Some("ClusterRoleBinding/eng-admin".into()),
            operation: "CREATE".into(),
            outcome: "denied".into(),
            allowed: false,
            mode: "enforce".into(),
            actor: Some(crate::admission::review::UserInfo {
                username: "alice".into(),
                groups: vec!["engineering".into()],
                ..Default::default()
            }),
            severity: Some(Severity::Critical),
            risks: vec![Risk::ALL[0]],
            witness: Some("w".into()),
            digest: Some("sha256:00".into()),
            message: "m".into(),
            dry_run: false,
            remote: "127.0.0.1:2".into(),
            seconds: 0.001,
        }));
        for body in [
            baseline("d", "first", 1),
            api,
            reset,
            alert("a", "f", 3.0),
            admission,
        ] {
            let (kind, value) = body.encode().unwrap();
            let tagged = serde_json::to_value(&body).unwrap();
            assert_eq!(tagged["kind"], kind, "Body::kind agrees with the serde tag");
            assert_eq!(Body::decode(kind, &value).unwrap(), Some(body));
        }
        assert_eq!(Body::decode("note", &json!({"n": 1})).unwrap(), None);
    }

    #[test]
    fn a_bad_body_names_its_record_and_field() {
        let mut r = record(7, &baseline("d", "first", 1));
        r.kind = CLOSE.into();
        r.body = json!({"key": {"platform": "kubernetes", "kind": "Nope", "name": "x"}, "reason": "restored"});
        let e = replay([&r]).unwrap_err().to_string();
        assert!(e.starts_with("journal record 7 (close): key"), "{e}");
        assert!(e.contains("unknown RBAC kind \"Nope\""), "{e}");
        // A change whose risks[0] is no risk: the path says where.
        let mut r = record(12, &alert("a", "f", 1.0));
        r.body["risks"] = json!(["no-such-risk"]);
        let e = replay([&r]).unwrap_err().to_string();
        assert!(
            e.starts_with("journal record 12 (change): risks[0]: unknown variant"),
            "{e}"
        );
        // A missing time reads as the epoch, as replay always read it.
        let mut r = record(13, &alert("a", "f", 1.0));
        r.body.as_object_mut().unwrap().remove("detected_at");
        assert_eq!(
            replay([&r]).unwrap().open[&key("a")].detected_at,
            Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn replay_rebuilds_baseline_and_open_widenings() {
        let close_b = Body::Close(CloseBody {
            key: key("b"),
            object: String::new(),
            fingerprint: String::new(),
            reason: "restored".into(),
            exposure_seconds: 0.0,
        });
        let bodies = [
            baseline("d1", "first", 3),
            baseline_patch(&key("early"), None, "narrowing"),
            alert("a", "f1", 10.0),
            alert("a", "f2", 20.0),
            alert("b", "f3", 30.0),
            close_b,
            baseline("d2", "compacted", 3),
            baseline_patch(&key("late"), Some(json!({"k": 1})), "neutral"),
        ];
        let records: Vec<Record> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| record(i as u64 + 1, b))
            .collect();
        let r = replay(&records).unwrap();
        assert_eq!(r.baseline_digest.as_deref(), Some("d2"));
        assert_eq!(r.patches, vec![(key("late"), Some(json!({"k": 1})))]);
        assert_eq!(r.open.len(), 1);
        let a = &r.open[&key("a")];
        assert_eq!((a.fingerprint.as_str(), a.detected_at), ("f2", at(10.0)));
        assert_eq!(a.grants, "g-f2", "the grants digest survives a restart");
        assert_eq!(r.open_raw[&key("a")], Some(json!({"x": 1})));
        assert_eq!(at(10.0).as_second(), 10);
    }
}
