//! Write verbs: create, update, patch, apply, delete and deletecollection.
//! A request body arrives here with the store's write lock held; it is
//! checked the way the real server checks it (types, names, namespaces,
//! resourceVersion preconditions), gets its server-owned metadata
//! (uid, timestamps, generation, managedFields), kind-specific defaults and
//! cascades (namespaces, CRDs), and is committed as one store write.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::aggregate;
use crate::error::{ApiError, Target};
use crate::kinds::{KindDef, kind_from_crd};
use crate::managed::{self, Writer};
use crate::patch;
use crate::selector::Filter;
use crate::store::{Obj, ObjKey, Store};

/// Who writes what, where.
pub struct Ctx<'a> {
    pub kd: &'a KindDef,
    /// the version the request addressed
    pub version: &'a str,
    /// namespace from the URL
    pub namespace: Option<&'a str>,
    pub manager: &'a str,
    /// RFC 3339, seconds precision
    pub now: &'a str,
    pub dry_run: bool,
    /// `--load`: keep uid/creationTimestamp/managedFields from the file
    pub preload: bool,
}

impl Ctx<'_> {
    fn target<'b>(&'b self, name: &'b str) -> Target<'b> {
        Target {
            group: &self.kd.group,
            resource: &self.kd.plural,
            name,
        }
    }

    fn key(&self, name: &str) -> ObjKey {
        (
            if self.kd.namespaced {
                self.namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name.to_string(),
        )
    }

    fn res(&self) -> (String, String) {
        (self.kd.group.clone(), self.kd.plural.clone())
    }

    fn requested_api_version(&self) -> String {
        self.kd.api_version(self.version)
    }

    fn stored_api_version(&self) -> String {
        self.kd.api_version(self.kd.preferred_version())
    }

    fn writer<'b>(&'b self, api_version: &'b str, subresource: &'b str) -> Writer<'b> {
        Writer {
            manager: self.manager,
            api_version,
            now: self.now,
            skip_status: self.kd.status_subresource && subresource.is_empty(),
            subresource,
        }
    }

    fn invalid(&self, name: &str, field: &str, reason: &str, detail: &str) -> ApiError {
        ApiError::invalid(&self.kd.kind, &self.kd.group, name, field, reason, detail)
    }
}

/// Result of a write.
pub struct Written {
    pub obj: Arc<Obj>,
    pub created: bool,
}

/// The object's metadata map, created when absent. None only for bodies
/// that `check_type` rejects (non-objects, non-object metadata).
fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = obj.as_object_mut()?;
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The body must be an object of this kind, in a served version of its group.
fn check_type(body: &Value, c: &Ctx) -> Result<(), ApiError> {
    let meta_ok = body
        .get("metadata")
        .is_none_or(|m| m.is_object() || m.is_null());
    if !body.is_object() || !meta_ok {
        return Err(ApiError::bad_request(format!(
            "the body of the request was not a {} object",
            c.kd.kind
        )));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != c.kd.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            c.kd.kind
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
    {
        let ok = c.kd.versions.iter().any(|v| c.kd.api_version(v) == av);
        if !ok {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                c.requested_api_version()
            )));
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn validate_name(c: &Ctx, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(c.invalid(
            name,
            "metadata.name",
            "FieldValueRequired",
            "name or generateName is required",
        ));
    }
    let bad = if c.kd.group == "rbac.authorization.k8s.io" {
        if name == "." || name == ".." {
            Some(format!("\"{name}\": may not be '{name}'"))
        } else if name.contains('/') || name.contains('%') {
            Some(format!("\"{name}\": may not contain '/' or '%'"))
        } else {
            None
        }
    } else if c.kd.plural == "namespaces" && c.kd.group.is_empty() {
        (!is_dns_label(name)).then(|| format!(
            "\"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ))
    } else {
        (!is_dns_subdomain(name)).then(|| format!(
            "\"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ))
    };
    match bad {
        Some(detail) => Err(c.invalid(name, "metadata.name", "FieldValueInvalid", &detail)),
        None => Ok(()),
    }
}

/// Checks the body's namespace against the URL's and fills it in.
fn settle_namespace(c: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let Some(meta) = meta_mut(obj) else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if !c.kd.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = c.namespace.unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(url_ns));
            Ok(())
        }
    }
}

/// Server-owned metadata of a new object.
fn init_meta(st: &mut Store, c: &Ctx, obj: &mut Value) {
    let uid = st.new_uid();
    let preload = c.preload;
    let Some(meta) = meta_mut(obj) else { return };
    if !preload || !meta.get("uid").is_some_and(Value::is_string) {
        meta.insert("uid".into(), json!(uid));
    }
    if !preload || !meta.get("creationTimestamp").is_some_and(Value::is_string) {
        meta.insert("creationTimestamp".into(), json!(c.now));
    }
    if !preload || !meta.get("generation").is_some_and(Value::is_number) {
        meta.insert("generation".into(), json!(1));
    }
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if !preload {
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
    }
}

fn set_type(c: &Ctx, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(c.stored_api_version()));
        m.insert("kind".into(), json!(c.kd.kind));
    }
}

/// Drops empty metadata collections, as Go's `omitempty` does on the real
/// server (removing the last label leaves no `labels: {}` behind).
fn normalize_meta(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, v| {
            let empty = match v {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            !(empty
                && matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences" | "managedFields"
                ))
        });
    }
}

/// Kind-specific defaulting and validation, for creates and updates.
fn defaults(c: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    normalize_meta(obj);
    let name = meta_str(obj, "name").to_string();
    match (c.kd.group.as_str(), c.kd.plural.as_str()) {
        ("", "namespaces") => {
            if let Some(meta) = meta_mut(obj)
                && let Some(l) = meta
                    .entry("labels")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
            {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if let Some(m) = obj.as_object_mut() {
                let spec = m.entry("spec").or_insert_with(|| json!({}));
                if spec.get("finalizers").is_none()
                    && let Some(s) = spec.as_object_mut()
                {
                    s.insert("finalizers".into(), json!(["kubernetes"]));
                }
                m.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        ("", "secrets") => {
            let Some(m) = obj.as_object_mut() else {
                return Ok(());
            };
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = m.entry("data").or_insert_with(|| json!({}));
                if let Some(d) = data.as_object_mut() {
                    for (k, v) in sd {
                        let raw = v.as_str().unwrap_or_default();
                        d.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                        );
                    }
                }
            }
            if !m.get("type").is_some_and(Value::is_string) {
                m.insert("type".into(), json!("Opaque"));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let kd = kind_from_crd(obj).map_err(|e| {
                ApiError::invalid(
                    "CustomResourceDefinition",
                    "apiextensions.k8s.io",
                    &name,
                    "spec",
                    "FieldValueInvalid",
                    &e.to_string(),
                )
            })?;
            let storage = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                })
                .and_then(|v| v.get("name"))
                .and_then(Value::as_str)
                .unwrap_or(kd.preferred_version())
                .to_string();
            let mut accepted = json!({
                "plural": kd.plural, "singular": kd.singular, "kind": kd.kind, "listKind": kd.list_kind,
            });
            if !kd.short_names.is_empty() {
                accepted["shortNames"] = json!(kd.short_names);
            }
            if !kd.categories.is_empty() {
                accepted["categories"] = json!(kd.categories);
            }
            let t = c.now;
            if let Some(m) = obj.as_object_mut() {
                m.insert(
                    "status".into(),
                    json!({
                        "acceptedNames": accepted,
                        "conditions": [
                            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t,
                             "reason": "NoConflicts", "message": "no conflicts found"},
                            {"type": "Established", "status": "True", "lastTransitionTime": t,
                             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                        ],
                        "storedVersions": [storage],
                    }),
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// The RBAC checks of the real server that matter to clients: rules need
/// verbs (and API groups for resources), bindings need a valid roleRef that
/// never changes, and subjects need a known kind.
fn validate_rbac(c: &Ctx, old: Option<&Value>, obj: &Value) -> Result<(), ApiError> {
    if c.kd.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let name = meta_str(obj, "name");
    let invalid =
        |field: String, reason: &str, detail: String| Err(c.invalid(name, &field, reason, &detail));
    let strs = |v: &Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match c.kd.kind.as_str() {
        "Role" | "ClusterRole" => {
            let rules = obj
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, r) in rules.iter().enumerate() {
                if strs(r, "verbs").is_empty() {
                    return invalid(
                        format!("rules[{i}].verbs"),
                        "FieldValueRequired",
                        "verbs must contain at least one value".into(),
                    );
                }
                let non_resource = strs(r, "nonResourceURLs");
                if !non_resource.is_empty() {
                    let mixed = !strs(r, "apiGroups").is_empty()
                        || !strs(r, "resources").is_empty()
                        || !strs(r, "resourceNames").is_empty();
                    if c.kd.kind == "Role" || mixed {
                        let why = if c.kd.kind == "Role" {
                            "namespaced rules cannot apply to non-resource URLs"
                        } else {
                            "rules cannot apply to both regular resources and non-resource URLs"
                        };
                        return invalid(
                            format!("rules[{i}].nonResourceURLs"),
                            "FieldValueInvalid",
                            format!("{non_resource:?}: {why}"),
                        );
                    }
                    continue;
                }
                if r.get("apiGroups")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty())
                {
                    return invalid(
                        format!("rules[{i}].apiGroups"),
                        "FieldValueRequired",
                        "resource rules must supply at least one api group".into(),
                    );
                }
                if strs(r, "resources").is_empty() {
                    return invalid(
                        format!("rules[{i}].resources"),
                        "FieldValueRequired",
                        "resource rules must supply at least one resource".into(),
                    );
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
            let rs = |k: &str| {
                role_ref
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            if let Some(old) = old
                && old.get("roleRef") != obj.get("roleRef")
            {
                let o = old.get("roleRef").cloned().unwrap_or(Value::Null);
                let os = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                return invalid(
                    "roleRef".into(),
                    "FieldValueInvalid",
                    format!(
                        "rbac.RoleRef{{APIGroup:\"{}\", Kind:\"{}\", Name:\"{}\"}}: cannot change roleRef",
                        os("apiGroup"),
                        os("kind"),
                        os("name")
                    ),
                );
            }
            if rs("apiGroup") != "rbac.authorization.k8s.io" {
                return invalid(
                    "roleRef.apiGroup".into(),
                    "FieldValueNotSupported",
                    format!(
                        "\"{}\": supported values: \"rbac.authorization.k8s.io\"",
                        rs("apiGroup")
                    ),
                );
            }
            let kinds: &[&str] = if c.kd.kind == "RoleBinding" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !kinds.contains(&rs("kind").as_str()) {
                let supported: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
                return invalid(
                    "roleRef.kind".into(),
                    "FieldValueNotSupported",
                    format!(
                        "\"{}\": supported values: {}",
                        rs("kind"),
                        supported.join(", ")
                    ),
                );
            }
            if rs("name").is_empty() {
                return invalid("roleRef.name".into(), "FieldValueRequired", String::new());
            }
            let subjects = obj
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, s) in subjects.iter().enumerate() {
                let f = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
                if f("name").is_empty() {
                    return invalid(
                        format!("subjects[{i}].name"),
                        "FieldValueRequired",
                        String::new(),
                    );
                }
                match f("kind") {
                    "ServiceAccount" => {
                        if c.kd.kind == "ClusterRoleBinding" && f("namespace").is_empty() {
                            return invalid(
                                format!("subjects[{i}].namespace"),
                                "FieldValueRequired",
                                String::new(),
                            );
                        }
                    }
                    "User" | "Group" => {}
                    other => {
                        return invalid(
                            format!("subjects[{i}].kind"),
                            "FieldValueNotSupported",
                            format!(
                                "\"{other}\": supported values: \"ServiceAccount\", \"User\", \"Group\""
                            ),
                        );
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// After-commit effects on the kind table.
fn after_write(st: &mut Store, c: &Ctx, obj: &Value) {
    if c.kd.group == "apiextensions.k8s.io"
        && c.kd.plural == "customresourcedefinitions"
        && let Ok(kd) = kind_from_crd(obj)
    {
        if st
            .kinds
            .get(&kd.group, &kd.plural)
            .is_some_and(|k| !k.from_crd)
        {
            return; // never shadow a built-in
        }
        st.kinds.upsert_crd(kd);
    }
}

/// Stores `value`; a dry run only shows it, with the resourceVersion the
/// object already had (`prior`), as the real server does.
fn commit(st: &mut Store, c: &Ctx, value: Value, prior: Option<u64>) -> Arc<Obj> {
    if c.dry_run {
        return match prior {
            Some(rv) => Obj::build(value, rv),
            None => Obj::unversioned(value),
        };
    }
    let is_crd = c.kd.group == "apiextensions.k8s.io" && c.kd.plural == "customresourcedefinitions";
    let crd = is_crd.then(|| value.clone());
    // ClusterRoles feed aggregation: remember the old version and selectors
    let cluster_role =
        (c.kd.group == aggregate::GROUP && c.kd.plural == "clusterroles").then(|| {
            // the old version only matters once aggregation runs, not while loading
            let key = (String::new(), meta_str(&value, "name").to_string());
            let old = if c.preload {
                None
            } else {
                st.get(&c.res(), &key)
            };
            (old, aggregate::selectors_of(&value))
        });
    let obj = st.put(&c.res(), value);
    if let Some(crd) = crd {
        after_write(st, c, &crd);
    }
    if let Some((old, selectors)) = cluster_role {
        aggregate::after_write(st, c.now, c.preload, old.as_deref(), Some(&obj), selectors);
    }
    obj
}

/// Everything but metadata and status: a change here bumps generation.
fn spec_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    };
    strip(a) != strip(b)
}

/// For no-op detection: the object without resourceVersion and managedFields times.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(Value::Array(mf)) = meta.get_mut("managedFields") {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    v
}

pub fn create(st: &mut Store, c: &Ctx, mut body: Value) -> Result<Written, ApiError> {
    check_type(&body, c)?;
    let prefix = meta_str(&body, "generateName").to_string();
    if meta_str(&body, "name").is_empty() && !prefix.is_empty() {
        let mut candidate = format!("{prefix}{}", st.name_suffix());
        for _ in 0..8 {
            if st.get(&c.res(), &c.key(&candidate)).is_none() {
                break;
            }
            candidate = format!("{prefix}{}", st.name_suffix());
        }
        if let Some(meta) = meta_mut(&mut body) {
            meta.insert("name".into(), json!(candidate));
        }
    }
    let name = meta_str(&body, "name").to_string();
    validate_name(c, &name)?;
    settle_namespace(c, &mut body)?;
    if c.kd.namespaced {
        let ns = c.namespace.unwrap_or_default();
        if ns.is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource: namespace is required for a namespaced resource",
            ));
        }
        if !st.namespace_exists(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
    }
    if st.get(&c.res(), &c.key(&name)).is_some() {
        return Err(ApiError::already_exists(&c.target(&name)));
    }
    init_meta(st, c, &mut body);
    set_type(c, &mut body);
    if c.kd.from_crd
        && c.kd.status_subresource
        && !c.preload
        && let Some(m) = body.as_object_mut()
    {
        m.remove("status");
    }
    defaults(c, &mut body)?;
    if !c.preload {
        validate_rbac(c, None, &body)?;
    }
    if !c.preload {
        if let Some(meta) = meta_mut(&mut body) {
            meta.remove("managedFields");
        }
        let av = c.requested_api_version();
        managed::track_update(None, &mut body, &c.writer(&av, ""));
    }
    Ok(Written {
        obj: commit(st, c, body, None),
        created: true,
    })
}

/// Finishes an update of `cur` to `new`: server metadata, generation,
/// defaults, ownership (unless `tracked`), no-op detection, commit.
fn finish_update(
    st: &mut Store,
    c: &Ctx,
    cur: &Arc<Obj>,
    mut new: Value,
    subresource: &str,
    tracked: bool,
) -> Result<Written, ApiError> {
    let name = cur.name.clone();
    let old = cur.value();
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let Some(meta) = meta_mut(&mut new) else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.and_then(|m| m.get(k)) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        meta.remove("selfLink");
    }
    set_type(c, &mut new);
    if c.kd.status_subresource
        && subresource.is_empty()
        && let Some(m) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    defaults(c, &mut new)?;
    validate_rbac(c, Some(&old), &new)?;
    if spec_differs(&old, &new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(meta) = meta_mut(&mut new) {
            meta.insert("generation".into(), json!(g.saturating_add(1)));
        }
    }
    if !tracked {
        let av = c.requested_api_version();
        managed::track_update(Some(&old), &mut new, &c.writer(&av, subresource));
    }
    if comparable(&new) == comparable(&old) {
        // The real server skips writes that change nothing: no new
        // resourceVersion, no watch event.
        return Ok(Written {
            obj: cur.clone(),
            created: false,
        });
    }
    // Dropping the last finalizer of an object being deleted deletes it.
    let terminating = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if terminating && !finalizers_left && !c.dry_run {
        let obj = commit(st, c, new, Some(cur.rv));
        let gone = st.remove(&c.res(), &c.key(&name)).unwrap_or(obj);
        return Ok(Written {
            obj: gone,
            created: false,
        });
    }
    Ok(Written {
        obj: commit(st, c, new, Some(cur.rv)),
        created: false,
    })
}

/// A controller's update of `cur` (tracked under `c.manager`).
pub fn update_from_controller(
    st: &mut Store,
    c: &Ctx,
    cur: &Arc<Obj>,
    new: Value,
) -> Result<Written, ApiError> {
    finish_update(st, c, cur, new, "", false)
}

fn check_rv_precondition(c: &Ctx, cur: &Obj, body: &Value) -> Result<(), ApiError> {
    let want = meta_str(body, "resourceVersion");
    if !want.is_empty() && want != cur.rv.to_string() {
        return Err(ApiError::stale(&c.target(&cur.name)));
    }
    Ok(())
}

fn check_name(body: &mut Value, name: &str) -> Result<(), ApiError> {
    let Some(meta) = meta_mut(body) else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            meta.insert("name".into(), json!(name));
            Ok(())
        }
    }
}

/// Overlays only the status of `from` onto `cur` (status subresource writes).
fn status_only(cur: &Obj, from: &Value) -> Value {
    let mut v = cur.value();
    if let Some(m) = v.as_object_mut() {
        match from.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    v
}

/// PUT.
pub fn update(
    st: &mut Store,
    c: &Ctx,
    name: &str,
    mut body: Value,
    subresource: &str,
) -> Result<Written, ApiError> {
    check_type(&body, c)?;
    check_name(&mut body, name)?;
    settle_namespace(c, &mut body)?;
    let Some(cur) = st.get(&c.res(), &c.key(name)) else {
        if c.kd.create_on_update && subresource.is_empty() {
            if let Some(meta) = meta_mut(&mut body) {
                meta.remove("resourceVersion");
            }
            return create(st, c, body);
        }
        return Err(ApiError::not_found(&c.target(name)));
    };
    check_rv_precondition(c, &cur, &body)?;
    let new = if subresource == "status" {
        status_only(&cur, &body)
    } else {
        body
    };
    finish_update(st, c, &cur, new, subresource, false)
}

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Parses a JSON (or, failing that, YAML) body.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            let looks_json = body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[');
            if looks_json {
                return Err(ApiError::bad_request(format!(
                    "error decoding request body: {json_err}"
                )));
            }
            serde_yaml::from_slice::<Value>(body).map_err(|e| {
                ApiError::bad_request(format!("error decoding YAML request body: {e}"))
            })
        }
    }
}

/// PATCH (all four types).
pub fn patch(
    st: &mut Store,
    c: &Ctx,
    name: &str,
    ptype: PatchType,
    body: &[u8],
    force: bool,
    subresource: &str,
) -> Result<Written, ApiError> {
    if ptype == PatchType::Apply {
        return apply(st, c, name, body, force, subresource);
    }
    let p = serde_json::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let Some(cur) = st.get(&c.res(), &c.key(name)) else {
        return Err(ApiError::not_found(&c.target(name)));
    };
    let mut doc = cur.value();
    if let Some(m) = doc.as_object_mut() {
        m.insert("apiVersion".into(), json!(c.requested_api_version()));
    }
    match ptype {
        PatchType::Json => patch::json_patch(&mut doc, &p).map_err(|e| {
            ApiError::new(422, "Invalid", e.to_string()).with_details(json!({
                "name": name, "group": c.kd.group, "kind": c.kd.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": e.to_string()}]
            }))
        })?,
        PatchType::Merge => {
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal non-object merge patch",
                ));
            }
            patch::merge_patch(&mut doc, &p)
        }
        PatchType::Strategic | PatchType::Apply => patch::strategic_merge_patch(&mut doc, &p),
    }
    if !doc.is_object() {
        return Err(ApiError::bad_request("patched object is not an object"));
    }
    if meta_str(&doc, "name") != name {
        return Err(c.invalid(
            name,
            "metadata.name",
            "FieldValueInvalid",
            "field is immutable",
        ));
    }
    check_type(&doc, c)?;
    check_rv_precondition(c, &cur, &doc)?;
    let new = if subresource == "status" {
        status_only(&cur, &doc)
    } else {
        doc
    };
    finish_update(st, c, &cur, new, subresource, false)
}

fn apply(
    st: &mut Store,
    c: &Ctx,
    name: &str,
    body: &[u8],
    force: bool,
    subresource: &str,
) -> Result<Written, ApiError> {
    if c.manager.is_empty() {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            "fieldManager",
            "FieldValueRequired",
            "is required for apply patch",
        ));
    }
    let mut config = parse_body(body)?;
    check_type(&config, c)?;
    for field in ["apiVersion", "kind"] {
        if config
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "{field} must be set in an apply patch"
            )));
        }
    }
    if config.pointer("/metadata/managedFields").is_some() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    check_name(&mut config, name)?;
    settle_namespace(c, &mut config)?;
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let w = c.writer(&api_version, subresource);
    let cur = st.get(&c.res(), &c.key(name));
    if let Some(cur) = &cur {
        check_rv_precondition(c, cur, &config)?;
    }
    let live = cur.as_ref().map(|o| o.value());
    let merged = managed::apply(live.as_ref(), &config, force, &w).map_err(|conflicts| {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|k| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{}\" using {}", k.manager, k.api_version),
                    "field": managed::dotted(&k.path),
                })
            })
            .collect();
        let mut details = json!({"name": name, "kind": c.kd.plural, "causes": causes});
        if !c.kd.group.is_empty() {
            details["group"] = json!(c.kd.group);
        }
        ApiError::new(409, "Conflict", managed::conflict_message(&conflicts)).with_details(details)
    })?;
    match cur {
        None => {
            if !subresource.is_empty() {
                return Err(ApiError::not_found(&c.target(name)));
            }
            let mut new = merged;
            validate_name(c, name)?;
            if c.kd.namespaced {
                let ns = c.namespace.unwrap_or_default();
                if !st.namespace_exists(ns) {
                    return Err(ApiError::namespace_not_found(ns));
                }
            }
            init_meta(st, c, &mut new);
            set_type(c, &mut new);
            if c.kd.status_subresource
                && let Some(m) = new.as_object_mut()
            {
                m.remove("status");
            }
            defaults(c, &mut new)?;
            validate_rbac(c, None, &new)?;
            Ok(Written {
                obj: commit(st, c, new, None),
                created: true,
            })
        }
        Some(cur) => {
            let new = if subresource == "status" {
                let mut v = status_only(&cur, &merged);
                if let (Some(m), Some(mf)) = (
                    v.get_mut("metadata").and_then(Value::as_object_mut),
                    merged.pointer("/metadata/managedFields"),
                ) {
                    m.insert("managedFields".into(), mf.clone());
                }
                v
            } else {
                merged
            };
            finish_update(st, c, &cur, new, subresource, true)
        }
    }
}

/// DELETE of one object. Returns the deleted object (or, for an object with
/// finalizers, the object now marked for deletion) and whether it is gone.
pub fn delete(
    st: &mut Store,
    c: &Ctx,
    name: &str,
    opts: &Value,
) -> Result<(Arc<Obj>, bool), ApiError> {
    let Some(cur) = st.get(&c.res(), &c.key(name)) else {
        return Err(ApiError::not_found(&c.target(name)));
    };
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let actual = &cur.uid;
        if uid != actual {
            return Err(ApiError::conflict(
                &c.target(name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let actual = cur.rv.to_string();
        if rv != actual {
            return Err(ApiError::conflict(
                &c.target(name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    if c.dry_run {
        return Ok((cur, true));
    }
    let cur_value = cur.value();
    let has_finalizers = cur_value
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if cur_value.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((cur, false));
        }
        let mut v = cur_value;
        if let Some(meta) = meta_mut(&mut v) {
            meta.insert("deletionTimestamp".into(), json!(c.now));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        return Ok((st.put(&c.res(), v), false));
    }
    let res = c.res();
    if c.kd.group.is_empty() && c.kd.plural == "namespaces" {
        for (r, k) in st.keys_in_namespace(name) {
            st.remove(&r, &k);
        }
    }
    if c.kd.group == "apiextensions.k8s.io"
        && c.kd.plural == "customresourcedefinitions"
        && let Ok(kd) = kind_from_crd(&cur_value)
        && st
            .kinds
            .get(&kd.group, &kd.plural)
            .is_some_and(|k| k.from_crd)
    {
        let crs = (kd.group.clone(), kd.plural.clone());
        for k in st.keys_of(&crs) {
            st.remove(&crs, &k);
        }
        st.kinds.remove_crd(&kd.group, &kd.plural);
    }
    let gone = st.remove(&res, &c.key(name)).unwrap_or(cur);
    if c.kd.group == aggregate::GROUP && c.kd.plural == "clusterroles" {
        aggregate::after_write(st, c.now, false, Some(&gone), None, None);
    }
    Ok((gone, true))
}

/// DELETE on a collection.
pub fn delete_collection(
    st: &mut Store,
    c: &Ctx,
    filter: &Filter,
    opts: &Value,
) -> Result<Vec<Arc<Obj>>, ApiError> {
    let page = st.page(&c.res(), filter, st.current_rv(), None, None);
    let mut out = Vec::new();
    for obj in page.items {
        let name = obj.name.clone();
        let ns = obj.namespace.clone();
        let cc = Ctx {
            namespace: if ns.is_empty() {
                c.namespace
            } else {
                Some(&ns)
            },
            ..*c
        };
        let (gone, _) = delete(st, &cc, &name, opts)?;
        out.push(gone);
    }
    Ok(out)
}
