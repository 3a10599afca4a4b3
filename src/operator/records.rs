//! What the operator writes in the journal, and how it reads it back.
//!
//! Judged outcomes go in as record bodies (`baseline`, `baseline-patch`,
//! `change`, `close`); at start or takeover, a source's records come back out
//! as its baseline (the last full baseline snapshot plus later patches, in
//! order) and its open widenings. Pure: the store does the I/O.

use crate::decide::{ObjectKey, OpenWidening, Verdict};
use crate::model::aws::{AwsKey, AwsKind};
use crate::model::k8s::{RbacKey, RbacKind};
use crate::report::{Change, Severity};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const BASELINE: &str = "baseline";
pub const BASELINE_PATCH: &str = "baseline-patch";
pub const CHANGE: &str = "change";
pub const CLOSE: &str = "close";

pub fn key_json(key: &ObjectKey) -> Value {
    match key {
        ObjectKey::K8s(k) => {
            json!({"platform": "kubernetes", "kind": k.kind.as_str(), "namespace": k.namespace, "name": k.name})
        }
        ObjectKey::Aws(k) => json!({"platform": "aws", "kind": k.kind.as_str(), "arn": k.arn}),
    }
}

pub fn key_from_json(v: &Value) -> Option<ObjectKey> {
    let kind = v.get("kind")?.as_str()?;
    match v.get("platform")?.as_str()? {
        "kubernetes" => Some(ObjectKey::K8s(RbacKey {
            kind: RbacKind::from_kind(kind)?,
            namespace: v
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: v.get("name")?.as_str()?.to_owned(),
        })),
        "aws" => Some(ObjectKey::Aws(AwsKey {
            kind: AwsKind::ALL.into_iter().find(|k| k.as_str() == kind)?,
            arn: v.get("arn")?.as_str()?.to_owned(),
        })),
        _ => None,
    }
}

pub fn baseline(digest: &str, reason: &str, objects: usize) -> Value {
    json!({"digest": digest, "reason": reason, "objects": objects})
}

/// The baseline now holds `raw` for `key` (or, with `None`, no such object).
pub fn baseline_patch(key: &ObjectKey, raw: Option<Value>, reason: &str) -> Value {
    json!({"key": key_json(key), "object": key.to_string(), "raw": raw, "reason": reason})
}

/// A baseline patch accepted by a person: `by` is who, as authenticated.
pub fn accepted_patch(key: &ObjectKey, raw: Option<Value>, by: &str) -> Value {
    json!({"key": key_json(key), "object": key.to_string(), "raw": raw, "reason": "accepted", "by": by})
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
    pub detected_at: f64,
    pub latency_seconds: Option<f64>,
}

pub fn change(f: &ChangeFacts<'_>) -> Value {
    let c = f.change;
    json!({
        "key": key_json(f.key),
        "object": c.object.display(),
        "change": c.change,
        "direction": c.direction,
        "severity": c.severity,
        "risks": c.risks,
        "verdict": f.verdict,
        "reason": f.reason,
        "fingerprint": c.fingerprint,
        "grants": f.grants,
        "gained_count": c.gained_count,
        "lost_count": c.lost_count,
        "witness": c.witness,
        "detected_at": f.detected_at,
        "latency_seconds": f.latency_seconds,
        "raw": f.raw,
    })
}

pub fn close(key: &ObjectKey, open: &OpenWidening, reason: &str, exposure_seconds: f64) -> Value {
    json!({"key": key_json(key), "object": open.object, "fingerprint": open.fingerprint, "reason": reason, "exposure_seconds": exposure_seconds})
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

/// Replays `(kind, body)` records of one source, oldest first.
pub fn replay<'a>(records: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Replayed {
    let mut r = Replayed::default();
    for (kind, body) in records {
        let key = body.get("key").and_then(key_from_json);
        match (kind, key) {
            (BASELINE, _) => {
                if let Some(d) = body.get("digest").and_then(Value::as_str) {
                    r.baseline_digest = Some(d.to_owned());
                    r.patches.clear();
                }
            }
            (BASELINE_PATCH, Some(key)) => {
                let raw = body.get("raw").filter(|v| !v.is_null()).cloned();
                r.patches.push((key, raw));
            }
            (CHANGE, Some(key)) => {
                let alert =
                    body.get("verdict").and_then(Value::as_str) == Some(Verdict::Alert.as_str());
                if alert {
                    let detected_at = body
                        .get("detected_at")
                        .and_then(Value::as_f64)
                        .unwrap_or_default();
                    let first = r.open.get(&key).map_or(detected_at, |o| o.detected_at);
                    let severity: Severity = body
                        .get("severity")
                        .and_then(|s| serde_json::from_value(s.clone()).ok())
                        .unwrap_or(Severity::Info);
                    r.open.insert(
                        key.clone(),
                        OpenWidening {
                            object: body
                                .get("object")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            fingerprint: body
                                .get("fingerprint")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            grants: body
                                .get("grants")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            severity,
                            detected_at: first,
                        },
                    );
                    r.open_raw
                        .insert(key, body.get("raw").filter(|v| !v.is_null()).cloned());
                } else {
                    r.open.remove(&key);
                    r.open_raw.remove(&key);
                }
            }
            (CLOSE, Some(key)) => {
                r.open.remove(&key);
                r.open_raw.remove(&key);
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::K8s(RbacKey::new(RbacKind::ClusterRoleBinding, None, name))
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
            assert_eq!(key_from_json(&key_json(&k)), Some(k));
        }
    }

    #[test]
    fn replay_rebuilds_baseline_and_open_widenings() {
        let alert = |name: &str, fp: &str, at: f64| json!({"key": key_json(&key(name)), "object": name, "verdict": "alert", "fingerprint": fp, "grants": format!("g-{fp}"), "severity": "high", "detected_at": at, "raw": {"x": 1}});
        let records = [
            (BASELINE, baseline("d1", "first", 3)),
            (
                BASELINE_PATCH,
                baseline_patch(&key("early"), None, "narrowing"),
            ),
            (CHANGE, alert("a", "f1", 10.0)),
            (CHANGE, alert("a", "f2", 20.0)),
            (CHANGE, alert("b", "f3", 30.0)),
            (CLOSE, json!({"key": key_json(&key("b"))})),
            (BASELINE, baseline("d2", "compacted", 3)),
            (
                BASELINE_PATCH,
                baseline_patch(&key("late"), Some(json!({"k": 1})), "neutral"),
            ),
        ];
        let r = replay(records.iter().map(|(k, v)| (*k, v)));
        assert_eq!(r.baseline_digest.as_deref(), Some("d2"));
        assert_eq!(r.patches, vec![(key("late"), Some(json!({"k": 1})))]);
        assert_eq!(r.open.len(), 1);
        let a = &r.open[&key("a")];
        assert_eq!((a.fingerprint.as_str(), a.detected_at), ("f2", 10.0));
        assert_eq!(a.grants, "g-f2", "the grants digest survives a restart");
        assert_eq!(r.open_raw[&key("a")], Some(json!({"x": 1})));
    }
}
