//! The on-disk snapshot document (`permdrift.dev/v1alpha1`, kind `Snapshot`).
//!
//! A parsed JSON/YAML value comes in and an indexed [`Snapshot`] comes out;
//! a [`Snapshot`] goes out as canonical JSON or YAML: sources sorted by name,
//! Kubernetes objects by kind, namespace and name, IAM entities by kind and
//! ARN, map keys sorted. Reading then writing gives the same bytes.

use super::{MissingPart, Platform, Snapshot, SourceData, SourceMeta, SourceSnapshot};
use crate::index::iam::{IamModel, IamObject};
use crate::index::kube::{KubeModel, KubeObject};
use crate::model::aws::IamKind;
use crate::model::k8s;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const API_GROUP: &str = "permdrift.dev";
pub const API_VERSION: &str = "permdrift.dev/v1alpha1";
pub const KIND: &str = "Snapshot";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("unsupported snapshot apiVersion {0:?}: this permdrift reads {API_VERSION}")]
    Version(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Whether a parsed document is a permdrift snapshot (of any version).
pub fn is_snapshot(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some(KIND)
        && v.get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.split('/').next() == Some(API_GROUP))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceHeader {
    name: String,
    platform: Platform,
    #[serde(default = "yes")]
    complete: bool,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    resource_versions: BTreeMap<String, String>,
    #[serde(default)]
    collected_at: Option<String>,
    #[serde(default)]
    missing: Vec<MissingPart>,
}

fn yes() -> bool {
    true
}

/// Builds an indexed snapshot from a parsed snapshot document.
pub fn from_value(mut doc: Value) -> Result<Snapshot, SnapshotError> {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != API_VERSION {
        return Err(SnapshotError::Version(api_version.to_owned()));
    }
    let sources = match doc.get_mut("sources").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("sources", "expected a list")),
    };
    let mut snapshot = Snapshot::new();
    for (i, mut source) in sources.into_iter().enumerate() {
        let path = format!("sources[{i}]");
        let Some(map) = source.as_object_mut() else {
            return Err(invalid(path, "expected an object"));
        };
        let objects = map.remove("objects");
        let details = map.remove("authorizationDetails");
        let header: SourceHeader = serde_path_to_error::deserialize(&source)
            .map_err(|e| invalid(format!("{path}.{}", e.path()), e.inner().to_string()))?;
        let mut meta = SourceMeta {
            context: header.context,
            server: header.server,
            account_id: header.account_id,
            resource_versions: header.resource_versions,
            collected_at: header.collected_at,
            missing: header.missing,
        };
        if !header.complete && meta.missing.is_empty() {
            meta.missing.push(MissingPart {
                resource: "*".into(),
                namespace: None,
                reason: "marked incomplete".into(),
            });
        }
        let data = match header.platform {
            Platform::Kubernetes => {
                if details.is_some() {
                    return Err(invalid(
                        format!("{path}.authorizationDetails"),
                        "a kubernetes source holds `objects`",
                    ));
                }
                let items = match objects {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items,
                    Some(_) => return Err(invalid(format!("{path}.objects"), "expected a list")),
                };
                let mut model = KubeModel::new();
                for (j, item) in items.into_iter().enumerate() {
                    let object = KubeObject::from_raw(item)
                        .map_err(|e| invalid(format!("{path}.objects[{j}]"), e.to_string()))?;
                    let key = object.parsed.key.clone();
                    if model.insert(object).is_some() {
                        return Err(invalid(
                            format!("{path}.objects[{j}]"),
                            format!("duplicate object {key}"),
                        ));
                    }
                }
                SourceData::Kubernetes(model)
            }
            Platform::Aws => {
                if objects.is_some() {
                    return Err(invalid(
                        format!("{path}.objects"),
                        "an aws source holds `authorizationDetails`",
                    ));
                }
                let mut model = IamModel::new();
                if let Some(mut details) = details {
                    for kind in IamKind::ALL {
                        let list_path = format!("{path}.authorizationDetails.{}", kind.list_name());
                        let items = match details.get_mut(kind.list_name()).map(Value::take) {
                            None | Some(Value::Null) => Vec::new(),
                            Some(Value::Array(items)) => items,
                            Some(_) => return Err(invalid(list_path, "expected a list")),
                        };
                        for (j, item) in items.into_iter().enumerate() {
                            let (key, object) = IamObject::canonical(kind, item)
                                .map_err(|e| invalid(format!("{list_path}[{j}]"), e.to_string()))?;
                            if model.get(&key).is_some() {
                                return Err(invalid(
                                    format!("{list_path}[{j}]"),
                                    format!("duplicate entity {key}"),
                                ));
                            }
                            model.insert(key, object);
                        }
                    }
                }
                SourceData::Aws(model)
            }
        };
        if snapshot.sources.contains_key(&header.name) {
            return Err(invalid(
                path,
                format!("duplicate source name {:?}", header.name),
            ));
        }
        snapshot.sources.insert(
            header.name.clone(),
            SourceSnapshot {
                name: header.name,
                meta,
                data,
            },
        );
    }
    Ok(snapshot)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DocumentOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    sources: Vec<SourceOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceOut<'a> {
    name: &'a str,
    platform: Platform,
    complete: bool,
    #[serde(flatten)]
    meta: &'a SourceMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<Vec<&'a Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<BTreeMap<&'static str, Vec<&'a Value>>>,
}

fn document(snapshot: &Snapshot) -> DocumentOut<'_> {
    let sources = snapshot
        .sources
        .values()
        .map(|s| {
            let (objects, authorization_details) = match &s.data {
                SourceData::Kubernetes(m) => {
                    (Some(m.objects().map(|(_, o)| &o.raw).collect()), None)
                }
                SourceData::Aws(m) => {
                    let mut lists: BTreeMap<&'static str, Vec<&Value>> = IamKind::ALL
                        .iter()
                        .map(|k| (k.list_name(), Vec::new()))
                        .collect();
                    for (key, object) in m.objects() {
                        lists
                            .entry(key.kind.list_name())
                            .or_default()
                            .push(&object.raw);
                    }
                    (None, Some(lists))
                }
            };
            SourceOut {
                name: &s.name,
                platform: s.platform(),
                complete: s.is_complete(),
                meta: &s.meta,
                objects,
                authorization_details,
            }
        })
        .collect();
    DocumentOut {
        api_version: API_VERSION,
        kind: KIND,
        sources,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// The canonical text of a snapshot.
pub fn to_string(snapshot: &Snapshot, format: Format) -> Result<String, SnapshotError> {
    let doc = document(snapshot);
    let mut text = match format {
        Format::Json => {
            serde_json::to_string_pretty(&doc).map_err(|e| invalid("", e.to_string()))?
        }
        Format::Yaml => serde_yaml::to_string(&doc).map_err(|e| invalid("", e.to_string()))?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Keys of a Kubernetes object in snapshot order, for error messages.
pub fn describe_object(v: &Value) -> String {
    match k8s::key_of(v) {
        Ok(key) => key.to_string(),
        Err(_) => {
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
            let name = v
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            format!("{kind}/{name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "sources": [
            {"name":"prod","platform":"kubernetes","complete":true,"objects":[
                {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"r","namespace":"b"},"rules":[]},
                {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"c"},"rules":[]}]},
            {"name":"acct","platform":"aws","complete":false,"accountId":"1",
             "missing":[{"resource":"iam:GetAccountAuthorizationDetails","reason":"denied"}],
             "authorizationDetails":{"RoleDetailList":[{"RoleName":"r","Arn":"arn:aws:iam::1:role/r",
                "AssumeRolePolicyDocument":"%7B%22Statement%22%3A%5B%5D%7D"}]}}]})
    }

    #[test]
    fn round_trip_is_byte_identical_and_sorted() {
        let s = from_value(sample()).unwrap();
        for format in [Format::Json, Format::Yaml] {
            let text = to_string(&s, format).unwrap();
            let again: Value = match format {
                Format::Json => serde_json::from_str(&text).unwrap(),
                Format::Yaml => serde_yaml::from_str(&text).unwrap(),
            };
            assert_eq!(
                to_string(&from_value(again).unwrap(), format).unwrap(),
                text
            );
        }
        let text = to_string(&s, Format::Json).unwrap();
        assert!(text.find("\"acct\"").unwrap() < text.find("\"prod\"").unwrap());
        assert!(text.find("\"ClusterRole\"").unwrap() < text.find("\"Role\"").unwrap());
        // Documents are stored decoded.
        assert!(text.contains("\"Statement\": []"), "{text}");
        assert!(!s.sources["acct"].is_complete());
    }

    #[test]
    fn errors_name_the_path() {
        let mut doc = sample();
        doc["sources"][0]["objects"][1]["rules"] = json!([{"verbs": 3}]);
        let e = from_value(doc).unwrap_err().to_string();
        assert!(
            e.starts_with("sources[0].objects[1]: rules[0].verbs"),
            "{e}"
        );
        let mut doc = sample();
        doc["apiVersion"] = json!("permdrift.dev/v9");
        assert_eq!(
            from_value(doc).unwrap_err(),
            SnapshotError::Version("permdrift.dev/v9".into())
        );
        let mut doc = sample();
        doc["sources"][1]["platform"] = json!("gcp");
        let e = from_value(doc).unwrap_err().to_string();
        assert!(e.contains("sources[1]") && e.contains("platform"), "{e}");
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut doc = sample();
        let dup = doc["sources"][0]["objects"][0].clone();
        doc["sources"][0]["objects"]
            .as_array_mut()
            .unwrap()
            .push(dup);
        assert!(
            from_value(doc)
                .unwrap_err()
                .to_string()
                .contains("duplicate object Role/b/r")
        );
    }
}
