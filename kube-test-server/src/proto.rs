//! Kubernetes protobuf request bodies. kubectl's typed clients (the
//! `kubectl create role|rolebinding|clusterrole|clusterrolebinding|namespace|
//! serviceaccount|configmap|secret` generators) send
//! `application/vnd.kubernetes.protobuf` and do not fall back to JSON, so the
//! `k8s\0` envelope and those kinds' messages are decoded here into the JSON
//! the rest of the server works on. Responses are always JSON, which those
//! clients accept too.

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("protobuf body lacks the k8s envelope")]
    NoMagic,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies are not supported for kind {0:?}; send JSON")]
    UnknownKind(String),
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    /// map<string,string>
    MapStr,
    /// map<string,bytes> (base64 in JSON)
    MapBytes,
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// kept in JSON even when empty (Go fields without omitempty)
    keep_empty: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        keep_empty: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
        keep_empty: false,
    }
}

const fn req(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        keep_empty: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(5, "apiVersion", Ty::Str),
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REF)),
    rep(14, "finalizers", Ty::Str),
];

const POLICY_RULE: &[Field] = &[
    rep(1, "verbs", Ty::Str),
    rep(2, "apiGroups", Ty::Str),
    rep(3, "resources", Ty::Str),
    rep(4, "resourceNames", Ty::Str),
    rep(5, "nonResourceURLs", Ty::Str),
];

const SELECTOR_REQ: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    rep(3, "values", Ty::Str),
];

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Ty::MapStr),
    rep(2, "matchExpressions", Ty::Msg(SELECTOR_REQ)),
];

const AGGREGATION_RULE: &[Field] = &[rep(1, "clusterRoleSelectors", Ty::Msg(LABEL_SELECTOR))];

const ROLE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "rules", Ty::Msg(POLICY_RULE)),
    f(3, "aggregationRule", Ty::Msg(AGGREGATION_RULE)),
];

const SUBJECT: &[Field] = &[
    req(1, "kind", Ty::Str),
    f(2, "apiGroup", Ty::Str),
    req(3, "name", Ty::Str),
    f(4, "namespace", Ty::Str),
];

const ROLE_REF: &[Field] = &[
    req(1, "apiGroup", Ty::Str),
    req(2, "kind", Ty::Str),
    req(3, "name", Ty::Str),
];

const BINDING: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "subjects", Ty::Msg(SUBJECT)),
    f(3, "roleRef", Ty::Msg(ROLE_REF)),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const OBJECT_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "secrets", Ty::Msg(OBJECT_REF)),
    rep(3, "imagePullSecrets", Ty::Msg(&[f(1, "name", Ty::Str)])),
    f(4, "automountServiceAccountToken", Ty::Bool),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];

const SELF_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
        ]),
    ),
];

const ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
            f(3, "user", Ty::Str),
            rep(4, "groups", Ty::Str),
            f(6, "uid", Ty::Str),
        ]),
    ),
];

const UNKNOWN_TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

fn schema_for(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "ClusterRole" | "Role" => ROLE,
        "ClusterRoleBinding" | "RoleBinding" => BINDING,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "SelfSubjectAccessReview" => SELF_ACCESS_REVIEW,
        "SubjectAccessReview" => ACCESS_REVIEW,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(ProtoError::Malformed)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ProtoError::Malformed)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed)?;
        let end = self.pos.checked_add(len).ok_or(ProtoError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(ProtoError::Malformed),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ProtoError> {
        if self.pos + n > self.buf.len() {
            return Err(ProtoError::Malformed);
        }
        self.pos += n;
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed)
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) => {
                let raw = r.bytes()?;
                v = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(utf8(raw)?)
                };
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, ProtoError> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut secs: i64 = 0;
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 0) => secs = r.varint()? as i64,
            (_, wire) => r.skip(wire)?,
        }
    }
    if secs == 0 {
        return Ok(Value::Null);
    }
    Ok(jiff::Timestamp::from_second(secs)
        .map(|t| json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null))
}

fn message(b: &[u8], schema: &[Field]) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    let mut r = Reader { buf: b, pos: 0 };
    while r.pos < b.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            r.skip(wire)?;
            continue;
        };
        let value = match (field.ty, wire) {
            (Ty::Str, 2) => json!(utf8(r.bytes()?)?),
            (Ty::Int, 0) => json!(r.varint()? as i64),
            (Ty::Bool, 0) => json!(r.varint()? != 0),
            (Ty::Time, 2) => time(r.bytes()?)?,
            (Ty::Msg(s), 2) => Value::Object(message(r.bytes()?, s)?),
            (Ty::MapStr | Ty::MapBytes, 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(field.ty, Ty::MapBytes))?;
                let m = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (_, wire) => {
                r.skip(wire)?;
                continue;
            }
        };
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Object(m) => m.is_empty() && field.name == "creationTimestamp",
            _ => false,
        };
        if empty && !field.keep_empty && !field.repeated {
            continue;
        }
        if field.repeated {
            let a = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = a.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(field.name.into(), value);
        }
    }
    Ok(out)
}

/// Decodes a `k8s\0`-enveloped protobuf object into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\x00").ok_or(ProtoError::NoMagic)?;
    let mut r = Reader { buf: rest, pos: 0 };
    let (mut type_meta, mut raw) = (Map::new(), &[][..]);
    while r.pos < rest.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => type_meta = message(r.bytes()?, UNKNOWN_TYPE_META)?,
            (2, 2) => raw = r.bytes()?,
            (_, wire) => r.skip(wire)?,
        }
    }
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let schema = schema_for(&kind).ok_or(ProtoError::UnknownKind(kind))?;
    let mut obj = message(raw, schema)?;
    for (k, v) in type_meta {
        obj.insert(k, v);
    }
    Ok(Value::Object(obj))
}
