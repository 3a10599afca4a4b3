//! Pre-approval by content: the widening a manifest or policy document would
//! cause, before anyone applies it.
//!
//! A source's current state and proposed content come in (Kubernetes
//! objects, as `kubectl apply` would write them; or an IAM policy document
//! and the entity it goes on); the proposed state is built the way the write
//! would leave it, diffed against the current one with no grant cap, and each
//! widening object comes out with the digest an approval must name. Pure.

use super::digest::{DigestError, grants_digest};
use crate::diff::{DiffOptions, diff};
use crate::grants::catalog::Catalog;
use crate::index::aws::AwsObject;
use crate::index::k8s::K8sObject;
use crate::model::aws::AwsKind;
use crate::report::Severity;
use crate::snapshot::{Snapshot, SourceData, SourceSnapshot};
use serde_json::Value;

/// One widening the content would cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedWidening {
    pub object: String,
    pub digest: String,
    pub severity: Severity,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentError {
    #[error("source {0:?} is {1}; this content is for the other platform")]
    Platform(String, &'static str),
    #[error(
        "{0} is not in the current state of the source; pre-approve policies for existing entities"
    )]
    NoTarget(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// An IAM policy document to be put on an entity: an inline policy named
/// `name` on a user, group or role, or the new default version of a managed policy.
pub struct IamContent<'a> {
    pub target_arn: &'a str,
    pub name: &'a str,
    pub document: &'a Value,
}

/// The state after applying Kubernetes objects (created or replaced whole).
pub fn with_k8s_objects(
    current: &SourceSnapshot,
    objects: &[K8sObject],
) -> Result<SourceSnapshot, ContentError> {
    let mut proposed = current.clone();
    let SourceData::Kubernetes(model) = &mut proposed.data else {
        return Err(ContentError::Platform(current.name.clone(), "AWS"));
    };
    for o in objects {
        model.insert(o.clone());
    }
    Ok(proposed)
}

/// The state after putting an IAM policy document on its target.
pub fn with_iam_policy(
    current: &SourceSnapshot,
    content: &IamContent<'_>,
) -> Result<SourceSnapshot, ContentError> {
    let mut proposed = current.clone();
    let SourceData::Aws(model) = &mut proposed.data else {
        return Err(ContentError::Platform(current.name.clone(), "Kubernetes"));
    };
    let key = model
        .keys()
        .find(|k| k.arn == content.target_arn)
        .cloned()
        .ok_or_else(|| ContentError::NoTarget(content.target_arn.to_owned()))?;
    let mut raw = model
        .get(&key)
        .map(|o| o.raw.clone())
        .ok_or_else(|| ContentError::NoTarget(content.target_arn.to_owned()))?;
    let entry = |list: &str, raw: &mut Value| {
        if let Some(obj) = raw.as_object_mut() {
            let items = obj.entry(list).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = items {
                items.retain(|p| p.get("PolicyName").and_then(Value::as_str) != Some(content.name));
                items.push(serde_json::json!({
                    "PolicyName": content.name,
                    "PolicyDocument": content.document,
                }));
            }
        }
    };
    match key.kind {
        AwsKind::User => entry("UserPolicyList", &mut raw),
        AwsKind::Group => entry("GroupPolicyList", &mut raw),
        AwsKind::Role => entry("RolePolicyList", &mut raw),
        AwsKind::Policy => {
            // A new version, made default: what CreatePolicyVersion --set-as-default does.
            let versions = raw
                .get("PolicyVersionList")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let next = versions
                .iter()
                .filter_map(|v| v.get("VersionId").and_then(Value::as_str))
                .filter_map(|id| id.trim_start_matches('v').parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let id = format!("v{next}");
            let mut versions: Vec<Value> = versions
                .into_iter()
                .map(|mut v| {
                    v["IsDefaultVersion"] = Value::Bool(false);
                    v
                })
                .collect();
            versions.push(serde_json::json!({
                "VersionId": id, "IsDefaultVersion": true, "Document": content.document
            }));
            raw["PolicyVersionList"] = Value::Array(versions);
            raw["DefaultVersionId"] = Value::String(id);
        }
    }
    let (new_key, object) =
        AwsObject::canonical(key.kind, raw).map_err(|e| ContentError::Invalid(e.to_string()))?;
    model.insert(new_key, object);
    Ok(proposed)
}

/// The widenings from `current` to `proposed`, with their approval digests.
pub fn widenings(
    current: &SourceSnapshot,
    proposed: &SourceSnapshot,
    catalog: &Catalog,
) -> Result<Vec<ProposedWidening>, ContentError> {
    let wrap = |s: &SourceSnapshot| {
        let mut snapshot = Snapshot::new();
        snapshot.sources.insert(s.name.clone(), s.clone());
        snapshot
    };
    let options = DiffOptions {
        max_grants: 0,
        ..DiffOptions::default()
    };
    let report = diff(&wrap(current), &wrap(proposed), catalog, &options);
    report
        .changes
        .iter()
        .filter(|c| c.direction.widens())
        .map(|c| {
            Ok(ProposedWidening {
                object: c.object.display(),
                digest: grants_digest(c)?,
                severity: c.severity,
            })
        })
        .collect()
}
