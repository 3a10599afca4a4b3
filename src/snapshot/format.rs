//! The on-disk snapshot document (`permdrift.dev/v1alpha1`, kind `Snapshot`).
//!
//! A parsed JSON/YAML value comes in and an indexed [`Snapshot`] comes out;
//! a [`Snapshot`] goes out as canonical JSON or YAML: sources sorted by name,
//! Kubernetes objects by kind, namespace and name, IAM entities by kind and
//! ARN, map keys sorted. Reading then writing gives the same bytes.

use super::{MissingPart, Platform, Snapshot, SourceData, SourceMeta, SourceSnapshot};
use crate::index::aws::{AwsModel, AwsObject};
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::aws::AwsKind;
use crate::model::k8s::RbacKey;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// A source's Kubernetes objects as read: value trees (YAML, or JSON read
/// generically) or raw JSON text borrowed from the file (the fast path).
enum ObjectsIn<'a> {
    Values(Vec<Value>),
    Raw(Vec<&'a str>),
}

fn meta_of(header: &SourceHeader) -> SourceMeta {
    let mut meta = SourceMeta {
        context: header.context.clone(),
        server: header.server.clone(),
        account_id: header.account_id.clone(),
        resource_versions: header.resource_versions.clone(),
        collected_at: header.collected_at.clone(),
        missing: header.missing.clone(),
    };
    if !header.complete && meta.missing.is_empty() {
        meta.missing.push(MissingPart {
            resource: "*".into(),
            namespace: None,
            reason: "marked incomplete".into(),
        });
    }
    meta
}

fn build_source(
    path: &str,
    header: SourceHeader,
    objects: Option<ObjectsIn<'_>>,
    details: Option<Value>,
    base: Option<&K8sModel>,
) -> Result<SourceSnapshot, SnapshotError> {
    let meta = meta_of(&header);
    let data = match header.platform {
        Platform::Kubernetes => {
            if details.is_some() {
                return Err(invalid(
                    format!("{path}.authorizationDetails"),
                    "a kubernetes source holds `objects`",
                ));
            }
            if let (Some(ObjectsIn::Raw(items)), Some(base)) = (&objects, base) {
                let model = kube_model_over_base(path, items, base)?;
                return Ok(SourceSnapshot {
                    name: header.name,
                    meta,
                    data: SourceData::Kubernetes(model),
                });
            }
            let duplicate = |j: usize, key: RbacKey| {
                invalid(
                    format!("{path}.objects[{j}]"),
                    format!("duplicate object {key}"),
                )
            };
            let parsed =
                |j: usize, object: Result<K8sObject, crate::model::k8s::RbacParseError>| {
                    object.map_err(|e| invalid(format!("{path}.objects[{j}]"), e.to_string()))
                };
            let objects = match objects {
                None => Vec::new(),
                Some(ObjectsIn::Values(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(j, item)| parsed(j, K8sObject::from_raw(item)))
                    .collect::<Result<_, _>>()?,
                Some(ObjectsIn::Raw(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(j, item)| parsed(j, object_from_text(item)))
                    .collect::<Result<_, _>>()?,
            };
            let model = K8sModel::from_objects(objects).map_err(|(j, key)| duplicate(j, key))?;
            SourceData::Kubernetes(model)
        }
        Platform::Aws => {
            if objects.is_some() {
                return Err(invalid(
                    format!("{path}.objects"),
                    "an aws source holds `authorizationDetails`",
                ));
            }
            let mut model = AwsModel::new();
            if let Some(mut details) = details {
                for kind in AwsKind::ALL {
                    let list_path = format!("{path}.authorizationDetails.{}", kind.list_name());
                    let items = match details.get_mut(kind.list_name()).map(Value::take) {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(items)) => items,
                        Some(_) => return Err(invalid(list_path, "expected a list")),
                    };
                    for (j, item) in items.into_iter().enumerate() {
                        let (key, object) = AwsObject::canonical(kind, item)
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
    Ok(SourceSnapshot {
        name: header.name,
        meta,
        data,
    })
}

/// Parses one object's text as stored by [`json`]: compact text is kept as it
/// is; anything else is re-serialised so the stored text stays canonical.
fn object_from_text(item: &str) -> Result<K8sObject, crate::model::k8s::RbacParseError> {
    if item.as_bytes().contains(&b'\n') {
        serde_json::from_str(item)
            .map_err(|e| crate::model::k8s::RbacParseError::Invalid(e.to_string()))
            .and_then(K8sObject::from_raw)
    } else {
        K8sObject::from_json(item)
    }
}

/// Builds a source's model as `base` plus what differs: an object whose text
/// is identical to one in `base` is that object, shared and not parsed again,
/// and the base's index is patched rather than rebuilt. For diffing two
/// snapshots of one cluster, where almost everything is unchanged.
fn kube_model_over_base(
    path: &str,
    items: &[&str],
    base: &K8sModel,
) -> Result<K8sModel, SnapshotError> {
    match over_base_in_order(path, items, base)? {
        Some(model) => Ok(model),
        None => over_base_by_text(path, items, base),
    }
}

/// The common case, in one pass without hashing: objects in key order (as
/// this writer stores them) walked beside the base's. `None` when the items
/// are not in strictly increasing key order.
fn over_base_in_order(
    path: &str,
    items: &[&str],
    base: &K8sModel,
) -> Result<Option<K8sModel>, SnapshotError> {
    use std::borrow::Cow;
    let mut model = base.clone();
    let mut cursor = base.objects().peekable();
    // The key of the previous item. An unchanged item's key is the cursor's,
    // which only moves forward, so only parsed items need checking.
    let mut last: Option<Cow<'_, RbacKey>> = None;
    let mut gone: Vec<&RbacKey> = Vec::new();
    for (j, item) in items.iter().enumerate() {
        if let Some((k, o)) = cursor.peek()
            && o.json() == *item
        {
            last = Some(Cow::Borrowed(*k));
            cursor.next();
            continue;
        }
        let object = object_from_text(item)
            .map_err(|e| invalid(format!("{path}.objects[{j}]"), e.to_string()))?;
        let key = &object.parsed.key;
        if last.as_deref().is_some_and(|last| last >= key) {
            return Ok(None);
        }
        // Base objects before this one that NEW did not hold are gone.
        while let Some((k, _)) = cursor.next_if(|(k, _)| *k <= key) {
            if k != key {
                gone.push(k);
            }
        }
        last = Some(Cow::Owned(key.clone()));
        model.insert(object);
    }
    gone.extend(cursor.map(|(k, _)| k));
    for key in gone {
        model.remove(key);
    }
    Ok(Some(model))
}

/// Any order: unchanged objects are found by their text.
fn over_base_by_text(
    path: &str,
    items: &[&str],
    base: &K8sModel,
) -> Result<K8sModel, SnapshotError> {
    let by_text: FxHashMap<&str, &RbacKey> = base.objects().map(|(k, o)| (o.json(), k)).collect();
    let mut model = base.clone();
    let mut seen: FxHashSet<RbacKey> = FxHashSet::default();
    for (j, item) in items.iter().enumerate() {
        let key = match by_text.get(item) {
            Some(key) => (*key).clone(),
            None => {
                let object = object_from_text(item)
                    .map_err(|e| invalid(format!("{path}.objects[{j}]"), e.to_string()))?;
                let key = object.parsed.key.clone();
                model.insert(object);
                key
            }
        };
        if !seen.insert(key.clone()) {
            return Err(invalid(
                format!("{path}.objects[{j}]"),
                format!("duplicate object {key}"),
            ));
        }
    }
    let gone: Vec<RbacKey> = base
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        model.remove(&key);
    }
    Ok(model)
}

fn add_source(
    snapshot: &mut Snapshot,
    path: &str,
    source: SourceSnapshot,
) -> Result<(), SnapshotError> {
    if snapshot.sources.contains_key(&source.name) {
        return Err(invalid(
            path,
            format!("duplicate source name {:?}", source.name),
        ));
    }
    snapshot.sources.insert(source.name.clone(), source);
    Ok(())
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
        let objects = match map.remove("objects") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(ObjectsIn::Values(items)),
            Some(_) => return Err(invalid(format!("{path}.objects"), "expected a list")),
        };
        let details = map.remove("authorizationDetails");
        let header: SourceHeader = serde_path_to_error::deserialize(&source)
            .map_err(|e| invalid(format!("{path}.{}", e.path()), e.inner().to_string()))?;
        let built = build_source(&path, header, objects, details, None)?;
        add_source(&mut snapshot, &path, built)?;
    }
    Ok(snapshot)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentRaw<'a> {
    api_version: String,
    #[serde(borrow, default)]
    sources: Vec<SourceRaw<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceRaw<'a> {
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
    #[serde(borrow, default)]
    objects: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    authorization_details: Option<&'a RawValue>,
}

/// Whether JSON text starts like a snapshot this writer produced (the fast
/// path applies); anything else goes through [`from_value`].
pub fn looks_like_json_snapshot(text: &str) -> bool {
    // 256 bytes, or fewer so as not to split a character (a panic otherwise).
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    head.trim_start().starts_with('{') && head.contains(API_GROUP) && head.contains("\"Snapshot\"")
}

/// Reads a JSON snapshot without building value trees for its Kubernetes
/// objects. `None` when the text is not such a snapshot or has any problem,
/// so the caller can fall back to the general path and its precise errors.
pub fn from_json(text: &str) -> Option<Snapshot> {
    from_json_over(text, None)
}

/// As [`from_json`], reusing the objects of `base` that did not change (see
/// `kube_model_over_base`): how a diff reads NEW once OLD is loaded.
pub fn from_json_over(text: &str, base: Option<&Snapshot>) -> Option<Snapshot> {
    match object_lines(text) {
        Some((skeleton, lists)) => from_document(&skeleton, Some(lists), base),
        None => from_document(text, None, base),
    }
}

/// Splits JSON laid out as this writer does it (each Kubernetes object
/// compact on its own line, see [`json`]) into the document with its object
/// lists emptied and the text of each list's objects, in order. Reading the
/// objects line by line spares a JSON pass over the whole file; each object
/// is still checked when it is parsed (or found equal to a base object).
/// `None` when the text is laid out any other way.
fn object_lines(text: &str) -> Option<(String, Vec<Vec<&str>>)> {
    const OPEN: &str = "      \"objects\": [";
    const EMPTY: &str = "      \"objects\": []";
    const CLOSE: &str = "      ]";
    const INDENT: &str = "        ";
    use std::fmt::Write;
    let mut skeleton = String::new();
    let mut lists = Vec::new();
    let mut lines = text.split_inclusive('\n');
    while let Some(line) = lines.next() {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        // Each list found becomes `"objects": [N]` in the skeleton, so it
        // goes to the source that held it and to no other.
        if bare == EMPTY {
            let _ = writeln!(skeleton, "      \"objects\": [{}]", lists.len());
            lists.push(Vec::new());
            continue;
        } else if bare == OPEN {
            let mut items = Vec::new();
            loop {
                let line = lines.next()?;
                let bare = line.strip_suffix('\n').unwrap_or(line);
                if bare == CLOSE {
                    break;
                }
                items.push(bare.strip_prefix(INDENT)?);
            }
            // A comma after every object but the last.
            let last = items.len().checked_sub(1)?;
            for (i, item) in items.iter_mut().enumerate() {
                *item = match (i < last, item.strip_suffix(',')) {
                    (true, Some(object)) => object,
                    (false, None) => item,
                    _ => return None,
                };
                if !(item.starts_with('{') && item.ends_with('}')) {
                    return None;
                }
            }
            let _ = writeln!(skeleton, "      \"objects\": [{}]", lists.len());
            lists.push(items);
            continue;
        }
        skeleton.push_str(line);
    }
    Some((skeleton, lists))
}

/// Builds a snapshot from a JSON document whose object lists are either in
/// it or, when `lists` is given, passed beside it, each source holding the
/// number of its list in its place (see [`object_lines`]).
fn from_document<'t>(
    text: &'t str,
    lists: Option<Vec<Vec<&'t str>>>,
    base: Option<&Snapshot>,
) -> Option<Snapshot> {
    let doc: DocumentRaw<'_> = serde_json::from_str(text).ok()?;
    if doc.api_version != API_VERSION {
        return None;
    }
    let mut lists = lists.map(|lists| lists.into_iter().enumerate());
    let mut snapshot = Snapshot::new();
    for (i, source) in doc.sources.into_iter().enumerate() {
        let objects: Option<Vec<&str>> = match (source.objects, lists.as_mut()) {
            (None, _) => None,
            (Some(items), None) => Some(items.iter().map(|item| item.get()).collect()),
            // Lists in document order: this source must hold the next one's number.
            (Some(items), Some(lists)) => match (items.as_slice(), lists.next()) {
                ([number], Some((n, list))) if number.get() == n.to_string() => Some(list),
                _ => return None,
            },
        };
        let path = format!("sources[{i}]");
        let header = SourceHeader {
            name: source.name,
            platform: source.platform,
            complete: source.complete,
            context: source.context,
            server: source.server,
            account_id: source.account_id,
            resource_versions: source.resource_versions,
            collected_at: source.collected_at,
            missing: source.missing,
        };
        let details = match source.authorization_details {
            Some(raw) => Some(serde_json::from_str(raw.get()).ok()?),
            None => None,
        };
        let base_model = base
            .and_then(|b| b.sources.get(&header.name))
            .and_then(SourceSnapshot::kube);
        let built = build_source(
            &path,
            header,
            objects.map(ObjectsIn::Raw),
            details,
            base_model,
        )
        .ok()?;
        add_source(&mut snapshot, &path, built).ok()?;
    }
    // Every list found in the text belongs to a source.
    if lists.is_some_and(|mut rest| rest.next().is_some()) {
        return None;
    }
    Some(snapshot)
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
    objects: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<BTreeMap<&'static str, Vec<&'a Value>>>,
}

fn iam_lists(m: &AwsModel) -> BTreeMap<&'static str, Vec<&Value>> {
    let mut lists: BTreeMap<&'static str, Vec<&Value>> = AwsKind::ALL
        .iter()
        .map(|k| (k.list_name(), Vec::new()))
        .collect();
    for (key, object) in m.objects() {
        lists
            .entry(key.kind.list_name())
            .or_default()
            .push(&object.raw);
    }
    lists
}

/// YAML: a plain serialisation of the whole document (objects as value trees).
fn yaml(snapshot: &Snapshot) -> Result<String, SnapshotError> {
    let sources = snapshot
        .sources
        .values()
        .map(|s| {
            let (objects, authorization_details) = match &s.data {
                SourceData::Kubernetes(m) => {
                    (Some(m.objects().map(|(_, o)| o.value()).collect()), None)
                }
                SourceData::Aws(m) => (None, Some(iam_lists(m))),
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
    let doc = DocumentOut {
        api_version: API_VERSION,
        kind: KIND,
        sources,
    };
    serde_yaml::to_string(&doc).map_err(|e| invalid("", e.to_string()))
}

/// JSON: the document pretty-printed, but each object compact on its own line,
/// so files stay small and line diffs show whole objects.
fn json(snapshot: &Snapshot) -> Result<String, SnapshotError> {
    json_of(snapshot.sources.values())
}

/// The canonical JSON text of a snapshot holding just `source` (what
/// `to_string` gives for it), without copying the source.
pub fn source_to_json(source: &SourceSnapshot) -> Result<String, SnapshotError> {
    json_of(std::iter::once(source))
}

fn json_of<'a>(sources: impl Iterator<Item = &'a SourceSnapshot>) -> Result<String, SnapshotError> {
    let mut sources = sources.peekable();
    let empty = sources.peek().is_none();
    use std::fmt::Write;
    let compact = |v: &dyn erased::ToJson| v.to_json().map_err(|e| invalid("", e.to_string()));
    let mut out = format!(
        "{{\n  \"apiVersion\": \"{API_VERSION}\",\n  \"kind\": \"{KIND}\",\n  \"sources\": ["
    );
    for (i, s) in sources.enumerate() {
        out.push_str(if i == 0 { "\n    {\n" } else { ",\n    {\n" });
        let header = SourceOut {
            name: &s.name,
            platform: s.platform(),
            complete: s.is_complete(),
            meta: &s.meta,
            objects: None,
            authorization_details: None,
        };
        // Header fields in declaration order, one per line.
        let header = serde_json::to_string(&header).map_err(|e| invalid("", e.to_string()))?;
        let fields: serde_json::Map<String, Value> =
            serde_json::from_str(&header).map_err(|e| invalid("", e.to_string()))?;
        let order = [
            "name",
            "platform",
            "complete",
            "context",
            "server",
            "accountId",
            "resourceVersions",
            "collectedAt",
            "missing",
        ];
        for key in order {
            if let Some(v) = fields.get(key) {
                let _ = writeln!(out, "      \"{key}\": {},", compact(v)?);
            }
        }
        match &s.data {
            SourceData::Kubernetes(m) => {
                out.push_str("      \"objects\": [");
                for (j, (_, o)) in m.objects().enumerate() {
                    out.push_str(if j == 0 { "\n        " } else { ",\n        " });
                    out.push_str(o.json());
                }
                out.push_str(if m.is_empty() { "]\n" } else { "\n      ]\n" });
            }
            SourceData::Aws(m) => {
                out.push_str("      \"authorizationDetails\": {");
                for (k, (list, items)) in iam_lists(m).into_iter().enumerate() {
                    let _ = write!(
                        out,
                        "{}\n        \"{list}\": [",
                        if k == 0 { "" } else { "," }
                    );
                    for (j, item) in items.iter().enumerate() {
                        out.push_str(if j == 0 {
                            "\n          "
                        } else {
                            ",\n          "
                        });
                        out.push_str(&compact(*item)?);
                    }
                    out.push_str(if items.is_empty() { "]" } else { "\n        ]" });
                }
                out.push_str("\n      }\n");
            }
        }
        out.push_str("    }");
    }
    out.push_str(if empty { "]\n}\n" } else { "\n  ]\n}\n" });
    Ok(out)
}

mod erased {
    /// Compact JSON of anything serialisable.
    pub trait ToJson {
        fn to_json(&self) -> Result<String, serde_json::Error>;
    }
    impl<T: serde::Serialize> ToJson for T {
        fn to_json(&self) -> Result<String, serde_json::Error> {
            serde_json::to_string(self)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// The canonical text of a snapshot.
pub fn to_string(snapshot: &Snapshot, format: Format) -> Result<String, SnapshotError> {
    let mut text = match format {
        Format::Json => json(snapshot)?,
        Format::Yaml => yaml(snapshot)?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// How to name a Kubernetes object in messages: `Kind/namespace/name`.
pub fn describe_object(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) if !ns.is_empty() => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
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
        assert!(text.contains("\"Statement\":[]"), "{text}");
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

    fn kube_sample(names: &[&str]) -> Snapshot {
        let objects: Vec<Value> = names
            .iter()
            .map(|n| json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
                "metadata":{"name":n},"rules":[{"apiGroups":[""],"resources":["pods"],"verbs":[n]}]}))
            .collect();
        from_value(json!({"apiVersion": API_VERSION, "kind": KIND, "sources": [
            {"name":"c","platform":"kubernetes","objects":objects}]}))
        .unwrap()
    }

    /// The object lines of a canonical JSON snapshot rearranged by `f`.
    fn with_object_lines(text: &str, f: impl FnOnce(&mut Vec<String>)) -> String {
        let (head, rest) = text.split_once("\"objects\": [\n").unwrap();
        let (body, tail) = rest.split_once("\n      ]").unwrap();
        let mut lines: Vec<String> = body
            .lines()
            .map(|l| l.trim_end_matches(',').to_owned())
            .collect();
        f(&mut lines);
        format!("{head}\"objects\": [\n{}\n      ]{tail}", lines.join(",\n"))
    }

    #[test]
    fn reading_over_a_base_in_any_order_equals_reading_alone() {
        let base = kube_sample(&["a", "b", "c", "d"]);
        let text = to_string(&kube_sample(&["b", "c2", "d", "e"]), Format::Json).unwrap();
        let shuffled = with_object_lines(&text, |lines| lines.reverse());
        for text in [&text, &shuffled] {
            let over = from_json_over(text, Some(&base)).expect("fast path");
            let alone = from_value(serde_json::from_str(text).unwrap()).unwrap();
            assert_eq!(
                to_string(&over, Format::Json).unwrap(),
                to_string(&alone, Format::Json).unwrap()
            );
            let keys: Vec<String> = over.sources["c"]
                .kube()
                .unwrap()
                .keys()
                .map(|k| k.name.clone())
                .collect();
            assert_eq!(keys, ["b", "c2", "d", "e"]);
        }
    }

    #[test]
    fn a_repeated_object_line_is_left_to_the_general_path_which_names_it() {
        let base = kube_sample(&["a", "b"]);
        let text = to_string(&base, Format::Json).unwrap();
        let repeated = with_object_lines(&text, |lines| lines.push(lines[1].clone()));
        assert!(from_json_over(&repeated, Some(&base)).is_none());
        assert!(from_json(&repeated).is_none());
        let e = from_value(serde_json::from_str(&repeated).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sources[0].objects[2]") && e.contains("duplicate object ClusterRole/b"),
            "{e}"
        );
    }

    #[test]
    fn unusual_lines_never_read_differently_from_the_general_path() {
        let text = to_string(&kube_sample(&["a", "b", "c"]), Format::Json).unwrap();
        // Two objects on one line, and an `objects` list outside any source
        // laid out like a source's.
        let joined = with_object_lines(&text, |lines| {
            let second = lines.remove(1);
            lines[0] = format!("{}, {second}", lines[0]);
        });
        let stray = text.replace(
            "  \"kind\": \"Snapshot\",\n",
            "  \"kind\": \"Snapshot\",\n  \"x\": {\n      \"objects\": []\n  },\n",
        );
        for text in [joined, stray] {
            let general = from_value(serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(general.object_count(), 3);
            if let Some(fast) = from_json(&text) {
                assert_eq!(
                    to_string(&fast, Format::Json).unwrap(),
                    to_string(&general, Format::Json).unwrap()
                );
            }
        }
    }

    #[test]
    fn other_layouts_are_read_without_the_line_reader() {
        let snapshot = kube_sample(&["a", "b"]);
        let text = to_string(&snapshot, Format::Json).unwrap();
        assert!(object_lines(&text).is_some());
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&text).unwrap()).unwrap();
        assert!(object_lines(&pretty).is_none());
        let read = from_json(&pretty).expect("fast path, value by value");
        assert_eq!(to_string(&read, Format::Json).unwrap(), text);
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
