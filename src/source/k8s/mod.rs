//! Live Kubernetes source: reads a cluster's RBAC (`v1` Roles,
//! ClusterRoles, RoleBindings, ClusterRoleBindings) and ServiceAccounts
//! through the API server and hands them on as raw objects, the same shape
//! the file inputs produce.
//!
//! Two ways in:
//! - [`snapshot_cluster`]: one paged list per resource (`limit`/`continue`),
//!   into a [`SourceSnapshot`] with each list's resourceVersion. A resource
//!   the caller may not list becomes a [`MissingPart`] and the source is
//!   incomplete; an unreachable server or rejected credentials is an error.
//! - [`watch_cluster`] feeding a [`LiveIndex`]: kube-runtime watchers for
//!   the five kinds, merged into one stream of [`KindEvent`]s, which the
//!   pure index turns into [`ObjectChange`]s. This is what the operator runs.
//!
//! Objects keep everything the server sent (`managedFields` included, which
//! attribution needs), plus the `apiVersion` and `kind` list items lack.

mod connect;
mod error;
mod raw;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::api::ListParams;
use kube::core::Resource;
use serde::Deserialize;
use serde_json::Value;

use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::k8s::RbacKind;
use crate::snapshot::{MissingPart, SourceSnapshot};

pub use connect::{
    ClusterTarget, IN_CLUSTER, K8sOptions, install_crypto_provider, resolve_clusters,
};
pub use error::K8sSourceError;
pub use raw::{api_resource, qualified_resource};
pub use watch::{WatchBackoff, WatchOptions, watch_cluster};

use error::{Call, Failure, classify, forbidden_reason};
use raw::RawObject;

/// Objects per list page (client-go's default).
pub const PAGE_SIZE: u32 = 500;

/// Attempts per page for failures a retry can fix (5xx, 429, garbled
/// bodies, dropped connections); the client itself also retries 429/503/504.
const PAGE_ATTEMPTS: u32 = 5;

/// Times one resource's list may start over after its continue token expired.
const LIST_RESTARTS: u32 = 3;

/// Which cluster a source is: its name in the snapshot (the kubeconfig
/// context, or `in-cluster`), the context, and the API server URL (for
/// messages and `meta.server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub name: String,
    pub context: Option<String>,
    pub server: String,
}

/// Reported after each list page, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct K8sProgress {
    pub kind: RbacKind,
    /// Objects of this kind read so far.
    pub objects: usize,
    /// 1-based page number.
    pub page: u32,
    /// Whether more pages follow.
    pub more: bool,
    /// Requests sent so far for the whole cluster, retries included.
    pub requests: u32,
}

impl fmt::Display for K8sProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (page {}){}",
            self.kind.resource(),
            thousands(self.objects),
            self.page,
            if self.more { "..." } else { "" }
        )
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One page of a list response: only what paging needs, items as value trees.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default)]
    items: Option<Vec<Value>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageMeta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// How one resource's list ended.
enum Listed {
    Complete {
        objects: Vec<K8sObject>,
        resource_version: Option<String>,
        unreadable: Vec<MissingPart>,
    },
    Missing(MissingPart),
}

/// Reads one cluster's RBAC and ServiceAccounts into a source named
/// `source.name`, with `meta.context`, `meta.server` and the list
/// resourceVersion per resource (`meta.collected_at` is the caller's: it
/// owns the clock). Resources the caller may not list are recorded in
/// `meta.missing` and the source is incomplete.
///
/// `progress` is called once per page; it must be `Sync` so the returned
/// future is `Send`.
pub async fn snapshot_cluster(
    client: kube::Client,
    source: &SourceInfo,
    progress: &(dyn Fn(K8sProgress) + Sync),
) -> Result<SourceSnapshot, K8sSourceError> {
    let mut model = K8sModel::new();
    let mut resource_versions = BTreeMap::new();
    let mut missing = Vec::new();
    let mut requests = 0u32;
    for kind in RbacKind::ALL {
        match list_kind(&client, source, kind, &mut requests, progress).await? {
            Listed::Complete {
                objects,
                resource_version,
                unreadable,
            } => {
                for object in objects {
                    model.insert(object);
                }
                if let Some(rv) = resource_version {
                    resource_versions.insert(kind.resource().to_owned(), rv);
                }
                missing.extend(unreadable);
            }
            Listed::Missing(part) => missing.push(part),
        }
    }
    let mut snapshot = SourceSnapshot::kubernetes(&source.name, model);
    snapshot.meta.context = source.context.clone();
    snapshot.meta.server = Some(source.server.clone());
    snapshot.meta.resource_versions = resource_versions;
    snapshot.meta.missing = missing;
    Ok(snapshot)
}

/// Pages through one resource across all namespaces. Transient failures
/// retry the page; an expired continue token starts the resource over.
async fn list_kind(
    client: &kube::Client,
    source: &SourceInfo,
    kind: RbacKind,
    requests: &mut u32,
    progress: &(dyn Fn(K8sProgress) + Sync),
) -> Result<Listed, K8sSourceError> {
    let resource = raw::qualified_resource(kind);
    let url = RawObject::url_path(&raw::api_resource(kind), None);
    let mut restarts = 0u32;
    'restart: loop {
        let mut objects = Vec::new();
        let mut unreadable: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        let mut continue_token: Option<String> = None;
        let mut page = 0u32;
        loop {
            let params = ListParams {
                limit: Some(PAGE_SIZE),
                continue_token: continue_token.clone(),
                ..ListParams::default()
            };
            let mut attempt = 0u32;
            let body = loop {
                attempt += 1;
                *requests += 1;
                let request = kube::core::Request::new(&url).list(&params).map_err(|e| {
                    K8sSourceError::Client {
                        source_name: source.name.clone(),
                        server: source.server.clone(),
                        detail: e.to_string(),
                    }
                })?;
                let failure = match client.request_text(request).await {
                    Ok(text) => match parse_page(&text) {
                        Ok(body) => break body,
                        Err(detail) => Failure::Transient(K8sSourceError::InvalidResponse {
                            source_name: source.name.clone(),
                            server: source.server.clone(),
                            resource: resource.clone(),
                            detail,
                            attempts: attempt,
                        }),
                    },
                    Err(e) => classify(
                        e,
                        &Call {
                            source_name: &source.name,
                            server: &source.server,
                            resource: &resource,
                            attempts: attempt,
                        },
                    ),
                };
                match failure {
                    Failure::Forbidden(message) => {
                        return Ok(Listed::Missing(MissingPart {
                            resource: kind.resource().to_owned(),
                            namespace: None,
                            reason: forbidden_reason("list", &resource, &message),
                        }));
                    }
                    Failure::NotServed(message) => {
                        return Ok(Listed::Missing(MissingPart {
                            resource: kind.resource().to_owned(),
                            namespace: None,
                            reason: format!(
                                "{resource} is not served by {} ({message}); an api server \
                                 without rbac.authorization.k8s.io/v1 cannot be read",
                                source.server
                            ),
                        }));
                    }
                    Failure::Expired(message) => {
                        restarts += 1;
                        if restarts > LIST_RESTARTS {
                            return Err(K8sSourceError::Restarts {
                                source_name: source.name.clone(),
                                server: source.server.clone(),
                                resource,
                                reason: message,
                            });
                        }
                        tracing::info!(source = %source.name, %resource, "list expired; starting it over");
                        continue 'restart;
                    }
                    Failure::Fatal(e) => return Err(e),
                    // Connection refused before anything was read: the server
                    // is not there, waiting will not help a CLI.
                    Failure::Transient(e @ K8sSourceError::Unreachable { .. })
                        if *requests == 1 =>
                    {
                        return Err(e);
                    }
                    Failure::Transient(e) if attempt >= PAGE_ATTEMPTS => return Err(e),
                    Failure::Transient(e) => {
                        tracing::debug!(error = %e, attempt, "retrying a list page");
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
            };
            page += 1;
            for item in body.items {
                let value = crate::model::k8s::with_type(kind, item);
                let (namespace, name) = namespace_and_name(&value);
                match K8sObject::from_raw(value) {
                    Ok(object) => objects.push(object),
                    Err(e) => unreadable
                        .entry(if kind.is_namespaced() {
                            namespace
                        } else {
                            None
                        })
                        .or_default()
                        .push(format!("{name}: {e}")),
                }
            }
            let more = body.continue_token.is_some();
            progress(K8sProgress {
                kind,
                objects: objects.len(),
                page,
                more,
                requests: *requests,
            });
            match body.continue_token {
                Some(token) => continue_token = Some(token),
                None => {
                    let unreadable = unreadable
                        .into_iter()
                        .map(|(namespace, problems)| MissingPart {
                            resource: kind.resource().to_owned(),
                            namespace,
                            reason: format!("unreadable objects ({})", problems.join("; ")),
                        })
                        .collect();
                    return Ok(Listed::Complete {
                        objects,
                        resource_version: body.resource_version,
                        unreadable,
                    });
                }
            }
        }
    }
}

#[derive(Debug)]
struct PageBody {
    items: Vec<Value>,
    resource_version: Option<String>,
    continue_token: Option<String>,
}

fn parse_page(text: &str) -> Result<PageBody, String> {
    let page: Page = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let is_list = page.kind.as_deref().is_some_and(|k| k.ends_with("List"));
    let items = match page.items {
        Some(items) => items,
        // An empty list may say `"items": null`.
        None if is_list => Vec::new(),
        None => {
            return Err(format!(
                "not a list ({})",
                page.kind.as_deref().unwrap_or("no `kind`")
            ));
        }
    };
    Ok(PageBody {
        items,
        resource_version: page.metadata.resource_version.filter(|s| !s.is_empty()),
        continue_token: page.metadata.continue_token.filter(|s| !s.is_empty()),
    })
}

fn namespace_and_name(value: &Value) -> (Option<String>, String) {
    let meta = value.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    (field("namespace"), field("name").unwrap_or_default())
}

fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.saturating_sub(1).min(4)).min(Duration::from_secs(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_a_sentence() {
        let p = K8sProgress {
            kind: RbacKind::ClusterRole,
            objects: 1234,
            page: 3,
            more: true,
            requests: 3,
        };
        assert_eq!(p.to_string(), "clusterroles: 1,234 (page 3)...");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
    }

    #[test]
    fn pages_are_read_and_non_lists_refused() {
        let page = parse_page(
            r#"{"kind":"ClusterRoleList","metadata":{"resourceVersion":"9","continue":"abc"},"items":[{"metadata":{"name":"a"}}]}"#,
        )
        .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.resource_version.as_deref(), Some("9"));
        assert_eq!(page.continue_token.as_deref(), Some("abc"));
        let last = parse_page(r#"{"kind":"RoleList","metadata":{"continue":""},"items":null}"#);
        assert!(
            last.unwrap().items.is_empty(),
            "null items is an empty list"
        );
        assert!(parse_page(r#"{"metadata":{}}"#).is_err());
        assert!(parse_page("<html>").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_page(r#"{"kind":"Status"}"#)
                .unwrap_err()
                .contains("Status")
        );
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(9), Duration::from_secs(3));
    }
}
