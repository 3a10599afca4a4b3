//! Actors: who made a change, from the audit trail.
//!
//! Kubernetes audit log lines (`audit.k8s.io/v1` Event, JSON lines as
//! written by `--audit-log-path`) and CloudTrail log files
//! (`{"Records": [...]}`) go in as text; typed events come out, and for a
//! diff change the event that made it: by object, verb and resourceVersion
//! where recorded, else the latest write. Without an event, the new object's
//! `managedFields` manager is a weak hint, labelled so.

use super::{Actor, ActorSource};
use crate::model::k8s::RbacKind;
use crate::report::{Change, ChangeKind};
use crate::snapshot::Snapshot;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActorsError {
    #[error("{file}:{line}: not an audit.k8s.io/v1 Event: {message}")]
    Audit {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{name}: not an audit.k8s.io/v1 EventList: {message}")]
    AuditList { name: String, message: String },
    #[error("{file}: not a CloudTrail log file: {message}")]
    Cloudtrail { file: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    pub verb: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub resource_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailEvent {
    pub actor: Actor,
    pub event_name: String,
    pub parameters: Value,
}

/// Everything read from audit logs and CloudTrail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub audit: Vec<AuditEvent>,
    pub trail: Vec<TrailEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuditList {
    kind: String,
    api_version: String,
    #[serde(default)]
    items: Vec<RawAudit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAudit {
    kind: String,
    api_version: String,
    #[serde(default)]
    stage: Option<String>,
    verb: String,
    user: RawUser,
    #[serde(default)]
    impersonated_user: Option<RawUser>,
    #[serde(default, rename = "sourceIPs")]
    source_ips: Vec<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    object_ref: Option<RawObjectRef>,
    #[serde(default)]
    response_status: Option<Value>,
    #[serde(default)]
    request_object: Option<Value>,
    #[serde(default)]
    response_object: Option<Value>,
    #[serde(default)]
    stage_timestamp: Option<jiff::Timestamp>,
    #[serde(default)]
    request_received_timestamp: Option<jiff::Timestamp>,
}

const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

impl Events {
    /// Adds the events of an audit log (JSON lines). Reads, non-RBAC
    /// objects, failed requests and stages before ResponseComplete are left
    /// out; a line that is not an Event is an error naming its line.
    pub fn add_audit_log(&mut self, file: &str, text: &str) -> Result<(), ActorsError> {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let err = |message: String| ActorsError::Audit {
                file: file.to_owned(),
                line: i + 1,
                message,
            };
            let raw: RawAudit = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            self.push_audit(raw).map_err(err)?;
        }
        Ok(())
    }

    /// Adds the events of an `audit.k8s.io/v1` `EventList`, as the API
    /// server's audit webhook POSTs it. A body that is not one, or an item
    /// that is not an Event, is refused whole, naming the item: a batch is
    /// taken entirely or not at all.
    pub fn add_audit_list(&mut self, name: &str, bytes: &[u8]) -> Result<usize, ActorsError> {
        let err = |message: String| ActorsError::AuditList {
            name: name.to_owned(),
            message,
        };
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let list: RawAuditList = serde_path_to_error::deserialize(de)
            .map_err(|e| err(format!("{}: {}", e.path(), e.inner())))?;
        if list.kind != "EventList" || list.api_version != "audit.k8s.io/v1" {
            return Err(err(format!(
                "kind {:?}, apiVersion {:?} (want EventList, audit.k8s.io/v1)",
                list.kind, list.api_version
            )));
        }
        let mut batch = Events::default();
        for (i, raw) in list.items.into_iter().enumerate() {
            batch
                .push_audit(raw)
                .map_err(|m| err(format!("items[{i}]: {m}")))?;
        }
        let n = batch.audit.len();
        self.audit.extend(batch.audit);
        Ok(n)
    }

    /// Keeps one audit event if it is a completed, successful write to a
    /// named object; an event of another kind is an error.
    fn push_audit(&mut self, raw: RawAudit) -> Result<(), String> {
        if raw.kind != "Event" || raw.api_version != "audit.k8s.io/v1" {
            return Err(format!(
                "kind {:?}, apiVersion {:?}",
                raw.kind, raw.api_version
            ));
        }
        let Some(obj) = raw.object_ref else {
            return Ok(());
        };
        let done = raw.stage.as_deref().is_none_or(|s| s == "ResponseComplete");
        let ok = raw
            .response_status
            .as_ref()
            .and_then(|s| s.get("code"))
            .and_then(Value::as_u64)
            .is_none_or(|c| c < 300);
        if !done || !ok || !WRITE_VERBS.contains(&raw.verb.as_str()) {
            return Ok(());
        }
        let meta = |v: &Option<Value>, f: &str| {
            v.as_ref()
                .and_then(|o| o.pointer(&format!("/metadata/{f}")))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let name = obj
            .name
            .clone()
            .or_else(|| meta(&raw.response_object, "name"))
            .or_else(|| meta(&raw.request_object, "name"));
        let resource_version =
            meta(&raw.response_object, "resourceVersion").or(obj.resource_version);
        self.audit.push(AuditEvent {
            actor: Actor {
                via: ActorSource::AuditLog,
                username: raw.user.username,
                groups: raw.user.groups,
                impersonated_user: raw.impersonated_user.and_then(|u| u.username),
                user_agent: raw.user_agent,
                source_ips: raw.source_ips,
                event: Some(raw.verb.clone()),
                at: raw.stage_timestamp.or(raw.request_received_timestamp),
                ..Actor::default()
            },
            verb: raw.verb,
            resource: obj.resource.unwrap_or_default(),
            namespace: obj.namespace,
            name,
            resource_version,
        });
        Ok(())
    }

    /// Adds the IAM write events of one CloudTrail log file.
    pub fn add_cloudtrail(&mut self, file: &str, text: &str) -> Result<(), ActorsError> {
        let err = |message: String| ActorsError::Cloudtrail {
            file: file.to_owned(),
            message,
        };
        let doc: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let records = doc
            .get("Records")
            .and_then(Value::as_array)
            .ok_or_else(|| err("no `Records` list".into()))?;
        for (i, r) in records.iter().enumerate() {
            let s = |p: &str| r.pointer(p).and_then(Value::as_str).map(str::to_owned);
            let event_name =
                s("/eventName").ok_or_else(|| err(format!("Records[{i}]: no eventName")))?;
            if s("/eventSource").as_deref() != Some("iam.amazonaws.com")
                || r.get("errorCode").is_some()
            {
                continue;
            }
            let at = match s("/eventTime") {
                Some(t) => Some(
                    t.parse::<jiff::Timestamp>()
                        .map_err(|e| err(format!("Records[{i}].eventTime: {e}")))?,
                ),
                None => None,
            };
            self.trail.push(TrailEvent {
                actor: Actor {
                    via: ActorSource::Cloudtrail,
                    arn: s("/userIdentity/arn"),
                    identity_type: s("/userIdentity/type"),
                    issuer: s("/userIdentity/sessionContext/sessionIssuer/arn"),
                    source_identity: s("/userIdentity/sessionContext/sourceIdentity")
                        .or_else(|| s("/userIdentity/sourceIdentity")),
                    source_ips: s("/sourceIPAddress").into_iter().collect(),
                    user_agent: s("/userAgent"),
                    event: Some(event_name.clone()),
                    at,
                    ..Actor::default()
                },
                event_name,
                parameters: r.get("requestParameters").cloned().unwrap_or(Value::Null),
            });
        }
        Ok(())
    }
}

fn kube_kind(kind: &str) -> Option<RbacKind> {
    RbacKind::from_kind(kind)
}

/// Who made `change`: its audit event or CloudTrail record, else a weak
/// hint from the new object's field managers, else nobody.
pub fn actor_for(change: &Change, new: &Snapshot, events: &Events) -> Option<Actor> {
    let new_source = new.sources.get(&change.source);
    if let Some(kind) = kube_kind(&change.object.kind).filter(|_| change.object.arn.is_none()) {
        let key = crate::model::k8s::RbacKey::new(
            kind,
            change.object.namespace.as_deref(),
            &change.object.name,
        );
        let raw = new_source
            .and_then(|s| s.kube())
            .and_then(|m| m.get(&key))
            .map(|o| o.value());
        let rv = raw
            .as_ref()
            .and_then(|v| v.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str);
        let wanted = |e: &&AuditEvent| {
            e.resource == kind.resource()
                && e.name.as_deref() == Some(change.object.name.as_str())
                && e.namespace == change.object.namespace
                && (change.change == ChangeKind::Removed) == (e.verb == "delete")
        };
        let matching: Vec<&AuditEvent> = events.audit.iter().filter(wanted).collect();
        let chosen = rv
            .and_then(|rv| {
                matching
                    .iter()
                    .find(|e| e.resource_version.as_deref() == Some(rv))
            })
            .or_else(|| matching.iter().max_by_key(|e| e.actor.at));
        if let Some(e) = chosen {
            return Some(e.actor.clone());
        }
        let manager = raw.as_ref().and_then(|v| {
            v.pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .and_then(|m| m.iter().rev().find_map(|f| f.get("manager")?.as_str()))
                .map(str::to_owned)
        });
        return manager.map(|m| Actor {
            via: ActorSource::ManagedFields,
            weak: true,
            manager: Some(m),
            ..Actor::default()
        });
    }
    let arn = change.object.arn.as_deref()?;
    let name = arn.rsplit('/').next().unwrap_or(arn);
    let param_key = match change.object.kind.as_str() {
        "Role" => "roleName",
        "User" => "userName",
        "Group" => "groupName",
        _ => "policyArn",
    };
    events
        .trail
        .iter()
        .filter(|e| {
            let p = e.parameters.get(param_key).and_then(Value::as_str);
            p == Some(name) || p == Some(arn)
        })
        .max_by_key(|e| e.actor.at)
        .map(|e| e.actor.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_audit_line_is_named_by_its_number() {
        let mut e = Events::default();
        let good = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"create","user":{"username":"priya"},"objectRef":{"resource":"clusterrolebindings","name":"x"}}"#;
        let err = e
            .add_audit_log("audit.log", &format!("{good}\n{{not json\n"))
            .unwrap_err();
        assert!(err.to_string().starts_with("audit.log:2: "), "{err}");
    }

    #[test]
    fn an_event_list_is_taken_whole_or_refused_naming_the_item() {
        let good = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"create","user":{"username":"priya"},"objectRef":{"resource":"clusterrolebindings","name":"x"}}"#;
        let mut e = Events::default();
        let list =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{good}]}}"#);
        assert_eq!(e.add_audit_list("webhook", list.as_bytes()), Ok(1));
        assert_eq!(e.audit[0].actor.username.as_deref(), Some("priya"));
        let bad = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{good},{{"kind":"Pod","apiVersion":"v1","verb":"get","user":{{}}}}]}}"#
        );
        let err = e.add_audit_list("webhook", bad.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("items[1]"), "{err}");
        assert_eq!(e.audit.len(), 1, "nothing of a refused batch is kept");
        let err = e.add_audit_list("webhook", b"{\"items\": 3}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("webhook: not an audit.k8s.io/v1 EventList"),
            "{err}"
        );
    }

    #[test]
    fn cloudtrail_without_records_is_refused() {
        let mut e = Events::default();
        let err = e
            .add_cloudtrail("t.json", r#"{"records": []}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("t.json: not a CloudTrail log file"),
            "{err}"
        );
    }
}
