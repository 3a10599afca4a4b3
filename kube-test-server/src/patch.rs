//! PATCH bodies. A JSON merge patch (RFC 7386), a JSON patch (RFC 6902) or a
//! strategic merge patch is applied to the current object's JSON here; the
//! result then goes through the same checks as a PUT. Server-side apply is
//! separate (`managed.rs`).

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("json: cannot unmarshal {0} into Go value of type jsonpatch.Patch")]
    NotAList(&'static str),
    #[error("unexpected kind of operation: {0:?}")]
    BadOp(String),
    #[error("missing value for {0:?} operation")]
    MissingValue(String),
    #[error("missing {0:?} in {1:?} operation")]
    MissingField(&'static str, String),
    #[error("jsonpatch {op} operation does not apply: doc is missing path: {path:?}")]
    MissingPath { op: String, path: String },
    #[error("testing value {0} failed: test failed")]
    TestFailed(String),
    #[error("invalid JSON pointer {0:?}")]
    BadPointer(String),
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// List fields that strategic merge patch merges by key in the kinds served
/// here (from the Kubernetes types' `patchMergeKey` tags); every other list
/// is replaced, as RBAC `rules` and `subjects` are.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "secrets" | "imagePullSecrets" | "containers" | "initContainers" | "env" | "volumes"
        | "volumeMounts" => "name",
        // ValidatingWebhookConfiguration: webhooks are merged by name.
        "webhooks" => "name",
        "ownerReferences" => "uid",
        "conditions" => "type",
        _ => return None,
    })
}

/// Lists of scalars merged as sets (`patchStrategy: merge` without a key).
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

fn merge_keyed_list(target: &mut Vec<Value>, patch: &[Value], key: &str) {
    for item in patch {
        let id = item.get(key);
        let pos = id.and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
        match (item.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                target.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge_patch(&mut target[i], item),
            (_, None) => {
                let mut v = item.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("$patch");
                }
                target.push(v);
            }
        }
    }
}

/// Reorders `list` as `$setElementOrder` asks; unlisted items keep their
/// relative order at the end.
fn set_order(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    let mut rest = std::mem::take(list);
    for o in order {
        let want = match key {
            Some(k) => o.get(k).cloned(),
            None => Some(o.clone()),
        };
        if let Some(i) = rest.iter().position(|v| id(v) == want && want.is_some()) {
            list.push(rest.remove(i));
        }
    }
    list.append(&mut rest);
}

/// Strategic merge patch, for the kinds served here: a merge patch that
/// understands the `$patch`, `$deleteFromPrimitiveList`, `$setElementOrder`
/// directives kubectl emits and merges the few keyed lists these kinds have.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        *target = Value::Object(m);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
        } else if v.is_object() {
            strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        } else if let (Some(items), Some(Value::Array(cur))) = (v.as_array(), t.get_mut(k)) {
            if let Some(key) = merge_key(k) {
                merge_keyed_list(cur, items, key);
            } else if merges_as_set(k) {
                for x in items {
                    if !cur.contains(x) {
                        cur.push(x.clone());
                    }
                }
            } else {
                *cur = items.clone();
            }
        } else {
            let mut v = v.clone();
            // a keyed list arriving where there was none: drop directives
            if let (Some(_), Some(items)) = (merge_key(k), v.as_array_mut()) {
                items.retain(|i| i.get("$patch").is_none());
            }
            t.insert(k.clone(), v);
        }
    }
    // apply ordering directives after the merges they refer to
    for (k, v) in p {
        if let (Some(field), Some(order)) = (k.strip_prefix("$setElementOrder/"), v.as_array())
            && let Some(Value::Array(list)) = t.get_mut(field)
        {
            set_order(list, order, merge_key(field));
        }
    }
}

fn parse_pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::BadPointer(p.to_string()));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<(&'a mut Value, String)> {
    let (last, parent) = path.split_last()?;
    let mut cur = doc;
    for seg in parent {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some((cur, last.clone()))
}

fn add(
    doc: &mut Value,
    path: &[String],
    value: Value,
    op: &str,
    raw: &str,
) -> Result<(), PatchError> {
    let missing = || PatchError::MissingPath {
        op: op.to_string(),
        path: raw.to_string(),
    };
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| missing())?
            };
            if idx > a.len() {
                return Err(missing());
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &[String], op: &str, raw: &str) -> Result<Value, PatchError> {
    let missing = || PatchError::MissingPath {
        op: op.to_string(),
        path: raw.to_string(),
    };
    let (parent, last) = parent_mut(doc, path).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let idx = last.parse::<usize>().map_err(|_| missing())?;
            if idx >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(idx))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or(PatchError::NotAList(match patch {
        Value::Object(_) => "object",
        Value::String(_) => "string",
        _ => "value",
    }))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let raw_path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::MissingField("path", name.to_string()))?;
        let path = parse_pointer(raw_path)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::MissingValue(name.to_string()))
        };
        let from = || -> Result<(String, Vec<String>), PatchError> {
            let f = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::MissingField("from", name.to_string()))?;
            Ok((f.to_string(), parse_pointer(f)?))
        };
        match name {
            "add" => add(doc, &path, value()?, name, raw_path)?,
            "remove" => {
                remove(doc, &path, name, raw_path)?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    *doc = v;
                } else {
                    remove(doc, &path, name, raw_path)?;
                    add(doc, &path, v, name, raw_path)?;
                }
            }
            "move" => {
                let (raw_from, fp) = from()?;
                let v = remove(doc, &fp, name, &raw_from)?;
                add(doc, &path, v, name, raw_path)?;
            }
            "copy" => {
                let (raw_from, fp) = from()?;
                let v = get(doc, &fp).cloned().ok_or(PatchError::MissingPath {
                    op: name.to_string(),
                    path: raw_from,
                })?;
                add(doc, &path, v, name, raw_path)?;
            }
            "test" => {
                let want = value()?;
                if get(doc, &path) != Some(&want) {
                    return Err(PatchError::TestFailed(raw_path.to_string()));
                }
            }
            other => return Err(PatchError::BadOp(other.to_string())),
        }
    }
    Ok(())
}
