//! Field ownership (`metadata.managedFields`) and server-side apply. Writes
//! pass the old and new object through here: updates hand the changed fields
//! to the writing manager, applies check conflicts against other managers,
//! drop fields the applier stopped applying and merge the applied config.
//!
//! A simplification of structured-merge-diff: maps are granular, every list
//! is atomic (which is what RBAC `rules`/`subjects` are), and ownership is a
//! set of leaf paths written in the `FieldsV1` format.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A field path as `FieldsV1` keys: `["f:metadata", "f:labels", "f:app"]`.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Metadata the server owns; never part of a manager's field set.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The leaf fields set in an object.
pub fn leaves(obj: &Value, skip_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if skip_status => {}
            "metadata" => {
                if let Some(m) = v.as_object() {
                    for (mk, mv) in m {
                        if !SERVER_META.contains(&mk.as_str()) {
                            walk(mv, vec!["f:metadata".into(), format!("f:{mk}")], &mut out);
                        }
                    }
                }
            }
            _ => walk(v, vec![format!("f:{k}")], &mut out),
        }
    }
    out
}

fn walk(v: &Value, path: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(c, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a path, if the path only names map fields.
pub fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in p {
        cur = cur.get(seg.strip_prefix("f:")?)?;
    }
    Some(cur)
}

fn overlap(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[derive(Default)]
struct Node {
    member: bool,
    children: BTreeMap<String, Node>,
}

pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for seg in p {
            n = n.children.entry(seg.clone()).or_default();
        }
        n.member = true;
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    render(&root)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            rec(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        m.insert("time".into(), json!(self.time));
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), to_fields_v1(&self.fields));
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

pub fn parse_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    list.iter()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: s(e, "time"),
            subresource: s(e, "subresource"),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_value)
        .collect();
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Who is writing, and how.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
    pub skip_status: bool,
    pub subresource: &'a str,
}

/// Records a create/update/patch by `w.manager`: the fields it changed
/// become its own and are taken from every other manager.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer) {
    let old_mf = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let new_mf = new.pointer("/metadata/managedFields");
    // A request that changes managedFields itself is obeyed, as the real
    // server does (kubectl uses this to migrate client-side apply owners).
    let mut entries = if new_mf.is_some() && new_mf != old_mf {
        parse_entries(new)
    } else {
        old.map(parse_entries).unwrap_or_default()
    };
    let skip = w.skip_status;
    let old_leaves = old.map(|o| leaves(o, skip)).unwrap_or_default();
    let new_leaves = leaves(new, skip);
    let changed: Vec<&Path> = new_leaves
        .iter()
        .filter(|p| {
            !old_leaves.contains(*p) || old.and_then(|o| get_path(o, p)) != get_path(new, p)
        })
        .collect();
    let removed: Vec<&Path> = old_leaves.difference(&new_leaves).collect();
    for e in entries.iter_mut() {
        e.fields.retain(|q| {
            !changed.iter().any(|p| overlap(p, q))
                && !removed.iter().any(|r| q.starts_with(r.as_slice()))
        });
    }
    if !changed.is_empty() {
        let pos = entries
            .iter()
            .position(|e| e.same_owner(w.manager, "Update", w.subresource));
        let entry = match pos {
            Some(i) => &mut entries[i],
            None => {
                entries.push(Entry {
                    manager: w.manager.to_string(),
                    operation: "Update".into(),
                    api_version: w.api_version.into(),
                    time: w.now.into(),
                    subresource: w.subresource.into(),
                    fields: FieldSet::new(),
                });
                let last = entries.len() - 1;
                &mut entries[last]
            }
        };
        entry.fields.extend(changed.into_iter().cloned());
        entry.time = w.now.into();
        entry.api_version = w.api_version.into();
    }
    store_entries(new, entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// `.metadata.labels.app` for a FieldsV1 path.
pub fn dotted(p: &[String]) -> String {
    let mut s = String::new();
    for seg in p {
        s.push('.');
        s.push_str(seg.strip_prefix("f:").unwrap_or(seg));
    }
    s
}

fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && v.is_object() => deep_merge(tv, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Removes the field at `p`, then any map it leaves empty that the new
/// config does not mention.
fn remove_path(obj: &mut Value, p: &[String], config: &Value) {
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let Some(key) = last.strip_prefix("f:") else {
        return;
    };
    let mut cur = &mut *obj;
    for seg in parent {
        let Some(k) = seg.strip_prefix("f:") else {
            return;
        };
        match cur.get_mut(k) {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(key);
    }
    // prune emptied parents, innermost first; never metadata itself
    for depth in (1..parent.len() + 1).rev() {
        let prefix = &p[..depth];
        if prefix.len() == 1 && prefix[0] == "f:metadata" {
            break;
        }
        let empty = get_path(obj, prefix)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if !empty || get_path(config, prefix).is_some() {
            break;
        }
        remove_path_raw(obj, prefix);
    }
}

fn remove_path_raw(obj: &mut Value, p: &[String]) {
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let mut cur = &mut *obj;
    for seg in parent {
        match seg.strip_prefix("f:").and_then(|k| cur.get_mut(k)) {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let (Some(m), Some(k)) = (cur.as_object_mut(), last.strip_prefix("f:")) {
        m.remove(k);
    }
}

/// Server-side apply of `config` by `w.manager` onto `live` (None: create).
/// Returns the merged object with updated managedFields, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    force: bool,
    w: &Writer,
) -> Result<Value, Vec<Conflict>> {
    let applied = leaves(config, w.skip_status);
    let mut entries = live.map(parse_entries).unwrap_or_default();
    let base = live.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    let mine = |e: &Entry| e.same_owner(w.manager, "Apply", w.subresource);

    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for p in &applied {
            if e.fields.iter().any(|q| overlap(p, q)) && get_path(&base, p) != get_path(config, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            e.fields
                .retain(|q| !conflicts.iter().any(|c| overlap(&c.path, q)));
        }
    }

    let previous: FieldSet = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut result = base;
    for p in previous.difference(&applied) {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| !mine(e))
            .any(|e| e.fields.iter().any(|q| overlap(p, q)));
        if !owned_elsewhere && p.iter().all(|s| s.starts_with("f:")) {
            remove_path(&mut result, p, config);
        }
    }
    let mut cfg = config.clone();
    if let Some(m) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    deep_merge(&mut result, &cfg);

    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            e.fields = applied;
            e.time = w.now.into();
            e.api_version = w.api_version.into();
        }
        None => entries.push(Entry {
            manager: w.manager.into(),
            operation: "Apply".into(),
            api_version: w.api_version.into(),
            time: w.now.into(),
            subresource: w.subresource.into(),
            fields: applied,
        }),
    }
    store_entries(&mut result, entries);
    Ok(result)
}

/// The real server's conflict message:
/// `Apply failed with 1 conflict: conflict with "m" using v1: .data.a`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_mgr: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for c in conflicts {
        let d = dotted(&c.path);
        match by_mgr
            .iter_mut()
            .find(|(m, v, _)| *m == c.manager && *v == c.api_version)
        {
            Some((_, _, paths)) => paths.push(d),
            None => by_mgr.push((&c.manager, &c.api_version, vec![d])),
        }
    }
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|(m, v, paths)| {
            if paths.len() == 1 {
                format!("conflict with \"{m}\" using {v}: {}", paths[0])
            } else {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with \"{m}\" using {v}:\n{}", list.join("\n"))
            }
        })
        .collect();
    let n = conflicts.len();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join("\n")
    )
}
