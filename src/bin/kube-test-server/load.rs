//! `--load FILE`: fixtures read at start. A file is a JSON array, a `List`
//! (JSON or YAML) or multi-document YAML; JSON is parsed directly (the fast
//! path for 100k-object benchmarks). Objects are created through the normal
//! create path in dependency order (CRDs, namespaces, the rest), keeping
//! their own uid/creationTimestamp/managedFields and creating missing
//! namespaces.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ops::{self, Ctx};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: invalid YAML: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{path}: object #{index} ({what}): {message}")]
    Object {
        path: String,
        index: usize,
        what: String,
        message: String,
    },
}

/// Flattens `List`s (and nested arrays) into single objects.
fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.into_iter().for_each(|x| flatten(x, out)),
        Value::Object(mut m) => {
            let is_list = m
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k == "List" || k.ends_with("List"))
                && m.get("items").is_some_and(Value::is_array);
            if is_list {
                if let Some(items) = m.remove("items") {
                    flatten(items, out);
                }
            } else {
                out.push(Value::Object(m));
            }
        }
        Value::Null => {}
        _ => {}
    }
}

fn parse_file(path: &Path) -> Result<Vec<Value>, LoadError> {
    let p = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| LoadError::Read {
        path: p.clone(),
        source,
    })?;
    let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let mut out = Vec::new();
    if matches!(first, Some(b'{') | Some(b'[')) {
        let v: Value = serde_json::from_slice(&data).map_err(|source| LoadError::Json {
            path: p.clone(),
            source,
        })?;
        flatten(v, &mut out);
    } else {
        for doc in serde_yaml::Deserializer::from_slice(&data) {
            let v = Value::deserialize(doc).map_err(|source| LoadError::Yaml {
                path: p.clone(),
                source,
            })?;
            flatten(v, &mut out);
        }
    }
    Ok(out)
}

fn group_of(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Loads every file into the store; returns the number of objects created.
pub fn load(st: &mut Store, files: &[impl AsRef<Path>], now: &str) -> Result<usize, LoadError> {
    let mut total = 0;
    for f in files {
        let path = f.as_ref().display().to_string();
        let t = std::time::Instant::now();
        let objects = parse_file(f.as_ref())?;
        tracing::info!(
            "{path}: parsed {} objects in {:?}",
            objects.len(),
            t.elapsed()
        );
        let rank = |v: &Value| match v.get("kind").and_then(Value::as_str) {
            Some("CustomResourceDefinition") => 0,
            Some("Namespace") => 1,
            _ => 2,
        };
        let mut indexed: Vec<(usize, Value)> = objects.into_iter().enumerate().collect();
        indexed.sort_by_key(|(i, v)| (rank(v), *i));
        for (index, obj) in indexed {
            let av = obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let kind = obj
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let what = format!("{av} {kind} {name}");
            let err = |message: String| LoadError::Object {
                path: path.clone(),
                index,
                what: what.clone(),
                message,
            };
            let (group, version) = group_of(&av);
            let kd = st
                .kinds
                .by_kind(group, &kind)
                .filter(|k| k.serves(version))
                .ok_or_else(|| err("no such kind is served".into()))?;
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            if kd.namespaced && !st.namespace_exists(&ns) {
                let ns_kd = st
                    .kinds
                    .get("", "namespaces")
                    .ok_or_else(|| err("namespaces are not served".into()))?;
                let c = Ctx {
                    kd: &ns_kd,
                    version: "v1",
                    namespace: None,
                    manager: "kube-test-server",
                    now,
                    dry_run: false,
                    preload: true,
                };
                ops::create(
                    st,
                    &c,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .map_err(|e| err(e.message))?;
            }
            let c = Ctx {
                kd: &kd,
                version,
                namespace: kd.namespaced.then_some(ns.as_str()),
                manager: "kube-test-server",
                now,
                dry_run: false,
                preload: true,
            };
            match ops::create(st, &c, obj) {
                Ok(_) => total += 1,
                // a fixture repeating a default namespace is fine
                Err(e) if e.code == 409 && kind == "Namespace" => {}
                Err(e) => return Err(err(e.message)),
            }
        }
    }
    Ok(total)
}
