//! The Kubernetes reverter: runs planned [`K8sOp`]s with the kube client.
//!
//! Operations from src/revert/plan.rs go in; each becomes one API write
//! (delete with a resourceVersion precondition, replace carrying the
//! resourceVersion judged, create, or a merge patch that carries the
//! resourceVersion and nulls the labels); the result, or a typed
//! [`K8sRevertError`] saying whether a retry can help, comes out. A thin
//! async adapter: it decides nothing.

use super::Retry;
use super::plan::K8sOp;
use crate::model::k8s::{RBAC_GROUP, RbacKey, RbacKind};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};

#[derive(Debug, thiserror::Error)]
pub enum K8sRevertError {
    #[error("{key}: forbidden: {message}")]
    Forbidden { key: String, message: String },
    #[error("{key}: changed since it was judged (resourceVersion precondition failed): {message}")]
    Conflict { key: String, message: String },
    #[error("{key}: the API server is throttling or unavailable ({code}): {message}")]
    Throttled {
        key: String,
        code: u16,
        message: String,
    },
    #[error("{key}: already gone")]
    NotFound { key: String },
    #[error("{key}: refused ({code}): {message}")]
    Refused {
        key: String,
        code: u16,
        message: String,
    },
    #[error("{key}: {message}")]
    Transport { key: String, message: String },
    #[error("{key}: no resourceVersion to condition the write on; refresh the snapshot")]
    NoPrecondition { key: String },
    #[error("{key}: the planned object is not a Kubernetes object: {message}")]
    BadObject { key: String, message: String },
}

impl K8sRevertError {
    /// The label a failed revert is counted under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            K8sRevertError::Forbidden { .. } => "forbidden",
            K8sRevertError::Conflict { .. } => "conflict",
            K8sRevertError::Throttled { .. } => "throttled",
            K8sRevertError::NotFound { .. } => "not-found",
            K8sRevertError::Refused { .. } => "refused",
            K8sRevertError::Transport { .. } => "transport",
            K8sRevertError::NoPrecondition { .. } => "no-precondition",
            K8sRevertError::BadObject { .. } => "bad-object",
        }
    }

    /// A conflict needs a fresh read and a new plan; a 403 never fixes
    /// itself; throttling and transport errors pass.
    pub fn retry(&self) -> Retry {
        match self {
            K8sRevertError::Conflict { .. } => Retry::Replan,
            K8sRevertError::Throttled { .. } | K8sRevertError::Transport { .. } => Retry::Retryable,
            _ => Retry::Permanent,
        }
    }

    fn from_kube(key: &RbacKey, e: kube::Error) -> Self {
        let key = key.to_string();
        match e {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    403 => K8sRevertError::Forbidden { key, message },
                    404 => K8sRevertError::NotFound { key },
                    409 => K8sRevertError::Conflict { key, message },
                    429 | 500 | 503 | 504 => K8sRevertError::Throttled {
                        key,
                        code: status.code,
                        message,
                    },
                    code => K8sRevertError::Refused { key, code, message },
                }
            }
            other => K8sRevertError::Transport {
                key,
                message: other.to_string(),
            },
        }
    }
}

fn api(client: &kube::Client, key: &RbacKey) -> Api<DynamicObject> {
    let gvk = match key.kind {
        RbacKind::ServiceAccount => GroupVersionKind::gvk("", "v1", "ServiceAccount"),
        kind => GroupVersionKind::gvk(RBAC_GROUP, "v1", kind.as_str()),
    };
    let resource = ApiResource::from_gvk_with_plural(&gvk, key.kind.resource());
    match &key.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Runs one operation.
pub async fn execute(client: &kube::Client, op: &K8sOp) -> Result<(), K8sRevertError> {
    match op {
        K8sOp::Delete {
            key,
            resource_version,
        } => {
            let params = DeleteParams {
                preconditions: resource_version.as_ref().map(|rv| Preconditions {
                    resource_version: Some(rv.clone()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            api(client, key)
                .delete(&key.name, &params)
                .await
                .map(|_| ())
                .map_err(|e| K8sRevertError::from_kube(key, e))
        }
        K8sOp::Replace {
            key,
            resource_version,
            object,
        } => {
            if resource_version.is_none() {
                return Err(K8sRevertError::NoPrecondition {
                    key: key.to_string(),
                });
            }
            let object: DynamicObject =
                serde_json::from_value(object.clone()).map_err(|e| K8sRevertError::BadObject {
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
            api(client, key)
                .replace(&key.name, &PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(|e| K8sRevertError::from_kube(key, e))
        }
        K8sOp::Create { key, object } => {
            let object: DynamicObject =
                serde_json::from_value(object.clone()).map_err(|e| K8sRevertError::BadObject {
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
            api(client, key)
                .create(&PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(|e| K8sRevertError::from_kube(key, e))
        }
        K8sOp::RemoveLabels {
            key,
            resource_version,
            labels,
        } => {
            let Some(rv) = resource_version else {
                return Err(K8sRevertError::NoPrecondition {
                    key: key.to_string(),
                });
            };
            // A merge patch carrying metadata.resourceVersion is refused with
            // 409 if the object moved on; a null label value removes the label.
            let nulls: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|l| (l.clone(), serde_json::Value::Null))
                .collect();
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": rv, "labels": nulls}
            });
            api(client, key)
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| K8sRevertError::from_kube(key, e))
        }
    }
}

/// Runs a plan's operations in order, stopping at the first failure; returns
/// how many ran.
pub async fn execute_all(client: &kube::Client, ops: &[K8sOp]) -> Result<usize, K8sRevertError> {
    for op in ops {
        if let Err(e) = execute(client, op).await {
            // A delete that finds the object gone already did its job.
            if matches!(op, K8sOp::Delete { .. }) && matches!(e, K8sRevertError::NotFound { .. }) {
                continue;
            }
            return Err(e);
        }
    }
    Ok(ops.len())
}
