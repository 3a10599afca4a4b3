//! `--load FILE`: fixtures read at start. A file is a JSON array, a `List`
//! (JSON or YAML) or multi-document YAML. A top-level JSON array is streamed
//! element by element (the fast path for 100k-object benchmarks: no parsed
//! copy of the whole file is ever held). Objects go through the normal create
//! path, keeping their own uid/creationTimestamp/managedFields; missing
//! namespaces are created, and objects of kinds not served yet (custom
//! resources listed before their CRD) are retried after everything else.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::{Value, json};

use crate::kinds::KindDef;
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

struct Loader<'a> {
    st: &'a mut Store,
    now: &'a str,
    path: String,
    index: usize,
    total: usize,
    /// (path, index, object) of objects whose kind was not served when read
    deferred: Vec<(String, usize, Value)>,
    /// kinds already resolved, by (apiVersion, kind): fixtures repeat a few
    kinds: HashMap<(String, String), Arc<KindDef>>,
}

fn group_of(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn str_field(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Loader<'_> {
    /// Takes one document: a `List` is unpacked, anything else created.
    fn add(&mut self, v: Value) -> Result<(), LoadError> {
        match v {
            Value::Array(a) => a.into_iter().try_for_each(|x| self.add(x)),
            Value::Object(mut m)
                if m.get("items").is_some_and(Value::is_array)
                    && m.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
            {
                match m.remove("items") {
                    Some(items) => self.add(items),
                    None => Ok(()),
                }
            }
            Value::Null => Ok(()),
            obj => {
                self.index += 1;
                let (path, index) = (self.path.clone(), self.index);
                self.create(obj, &path, index, false)
            }
        }
    }

    fn create(
        &mut self,
        obj: Value,
        path: &str,
        index: usize,
        last_try: bool,
    ) -> Result<(), LoadError> {
        let av = str_field(&obj, "/apiVersion");
        let kind = str_field(&obj, "/kind");
        let name = str_field(&obj, "/metadata/name");
        let err = |message: String| LoadError::Object {
            path: path.to_string(),
            index,
            what: format!("{av} {kind} {name}"),
            message,
        };
        let (group, version) = group_of(&av);
        let cache_key = (av.clone(), kind.clone());
        let cached = self.kinds.get(&cache_key).cloned();
        let Some(kd) = cached.or_else(|| {
            let kd = self
                .st
                .kinds
                .by_kind(group, &kind)
                .filter(|k| k.serves(version))?;
            self.kinds.insert(cache_key, kd.clone());
            Some(kd)
        }) else {
            if last_try {
                return Err(err("no such kind is served".into()));
            }
            self.deferred.push((path.to_string(), index, obj));
            return Ok(());
        };
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        if kd.namespaced && !self.st.namespace_exists(&ns) {
            let ns_kd = self
                .st
                .kinds
                .get("", "namespaces")
                .ok_or_else(|| err("namespaces are not served".into()))?;
            let c = Ctx {
                kd: &ns_kd,
                version: "v1",
                namespace: None,
                manager: "kube-test-server",
                now: self.now,
                dry_run: false,
                preload: true,
            };
            ops::create(
                self.st,
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
            now: self.now,
            dry_run: false,
            preload: true,
        };
        // A namespace may already exist (a default one, or created for an
        // earlier object): the fixture's version replaces it.
        let again = (kind == "Namespace").then(|| obj.clone());
        match ops::create(self.st, &c, obj) {
            Ok(_) => self.total += 1,
            Err(e) if e.code == 409 && again.is_some() => {
                if let Some(mut ns_obj) = again {
                    if let Some(meta) = ns_obj.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("resourceVersion");
                    }
                    ops::update(self.st, &c, &name, ns_obj, "").map_err(|e| err(e.message))?;
                    self.total += 1;
                }
            }
            Err(e) => return Err(err(e.message)),
        }
        Ok(())
    }
}

/// Feeds each element of a top-level JSON array to the loader as it is parsed.
struct EachElement<'l, 'a> {
    loader: &'l mut Loader<'a>,
    failure: &'l mut Option<LoadError>,
}

impl<'de> Visitor<'de> for EachElement<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            if let Err(e) = self.loader.add(v) {
                *self.failure = Some(e);
                return Err(serde::de::Error::custom("load aborted"));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for EachElement<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

fn load_file(loader: &mut Loader, path: &Path) -> Result<(), LoadError> {
    let p = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| LoadError::Read {
        path: p.clone(),
        source,
    })?;
    loader.path = p.clone();
    loader.index = 0;
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            let mut failure = None;
            let mut de = serde_json::Deserializer::from_slice(&data);
            let res = EachElement {
                loader,
                failure: &mut failure,
            }
            .deserialize(&mut de)
            .and_then(|_| de.end());
            if let Some(e) = failure {
                return Err(e);
            }
            res.map_err(|source| LoadError::Json { path: p, source })
        }
        Some(b'{') => {
            let v: Value = serde_json::from_slice(&data)
                .map_err(|source| LoadError::Json { path: p, source })?;
            loader.add(v)
        }
        _ => {
            for doc in serde_yaml::Deserializer::from_slice(&data) {
                let v = Value::deserialize(doc).map_err(|source| LoadError::Yaml {
                    path: p.clone(),
                    source,
                })?;
                loader.add(v)?;
            }
            Ok(())
        }
    }
}

/// Loads every file into the store; returns the number of objects created.
pub fn load(st: &mut Store, files: &[impl AsRef<Path>], now: &str) -> Result<usize, LoadError> {
    let mut loader = Loader {
        st,
        now,
        path: String::new(),
        index: 0,
        total: 0,
        deferred: Vec::new(),
        kinds: HashMap::new(),
    };
    for f in files {
        load_file(&mut loader, f.as_ref())?;
    }
    // Custom resources read before their CRD; CRDs may have registered
    // their kinds since.
    for (path, index, obj) in std::mem::take(&mut loader.deferred) {
        loader.create(obj, &path, index, true)?;
    }
    let total = loader.total;
    if !loader.st.aggregators.is_empty() {
        crate::aggregate::reconcile(loader.st, now);
    }
    Ok(total)
}
