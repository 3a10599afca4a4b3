//! AWS IAM entities as the permission model sees them.
//!
//! GetAccountAuthorizationDetails-shaped JSON comes in (one entity per raw
//! object, documents already decoded); typed users, groups, roles and managed
//! policies keyed by ARN come out, plus the normal form used to decide whether
//! an entity changed.

use super::iam_policy::{self, PolicyDocument, PolicyError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsKind {
    Group,
    Policy,
    Role,
    User,
}

impl AwsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "Group",
            Self::Policy => "Policy",
            Self::Role => "Role",
            Self::User => "User",
        }
    }

    /// The GetAccountAuthorizationDetails list holding this kind.
    pub fn list_name(self) -> &'static str {
        match self {
            Self::Group => "GroupDetailList",
            Self::Policy => "Policies",
            Self::Role => "RoleDetailList",
            Self::User => "UserDetailList",
        }
    }

    pub fn name_field(self) -> &'static str {
        match self {
            Self::Group => "GroupName",
            Self::Policy => "PolicyName",
            Self::Role => "RoleName",
            Self::User => "UserName",
        }
    }

    pub const ALL: [AwsKind; 4] = [Self::Group, Self::Policy, Self::Role, Self::User];
}

impl fmt::Display for AwsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an IAM entity: its kind and ARN.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsKey {
    pub kind: AwsKind,
    pub arn: String,
}

impl fmt::Display for AwsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.arn)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Principal {
    pub arn: String,
    pub name: String,
    pub inline: BTreeMap<String, PolicyDocument>,
    pub attached: BTreeSet<String>,
    pub boundary: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub principal: Principal,
    /// Group names, as GetAccountAuthorizationDetails reports them.
    pub groups: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub principal: Principal,
    pub trust: PolicyDocument,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub default_version: String,
    /// The default version's document: the only one that grants anything.
    pub document: PolicyDocument,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsBody {
    User(User),
    Group(Principal),
    Role(Role),
    Policy(ManagedPolicy),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IamParseError {
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("{path}: {source}")]
    Policy { path: String, source: PolicyError },
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

fn field(path: impl Into<String>, message: impl Into<String>) -> IamParseError {
    IamParseError::Field {
        path: path.into(),
        message: message.into(),
    }
}

fn str_field<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, IamParseError> {
    match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(IamParseError::Missing(name)),
        Some(other) => Err(field(
            name,
            format!("expected a string, found {}", iam_policy::type_name(other)),
        )),
    }
}

fn list<'a>(v: &'a Value, name: &str) -> Result<&'a [Value], IamParseError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(field(
            name,
            format!("expected a list, found {}", iam_policy::type_name(other)),
        )),
    }
}

/// The ARN of a raw entity of `kind`.
pub fn key_of(kind: AwsKind, v: &Value) -> Result<AwsKey, IamParseError> {
    Ok(AwsKey {
        kind,
        arn: str_field(v, "Arn")?.to_owned(),
    })
}

/// The name of an entity, falling back to the last ARN segment (moto omits `PolicyName`).
pub fn name_of(kind: AwsKind, v: &Value) -> String {
    match v.get(kind.name_field()).and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => v
            .get("Arn")
            .and_then(Value::as_str)
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default()
            .to_owned(),
    }
}

fn document(raw: &Value, path: String) -> Result<PolicyDocument, IamParseError> {
    let decoded = iam_policy::decode_document(raw).map_err(|source| IamParseError::Policy {
        path: path.clone(),
        source,
    })?;
    iam_policy::parse_document(&decoded).map_err(|source| IamParseError::Policy { path, source })
}

fn principal(kind: AwsKind, v: &Value, inline_list: &str) -> Result<Principal, IamParseError> {
    let arn = str_field(v, "Arn")?.to_owned();
    let mut inline = BTreeMap::new();
    for (i, p) in list(v, inline_list)?.iter().enumerate() {
        let name = p
            .get("PolicyName")
            .and_then(Value::as_str)
            .ok_or_else(|| field(format!("{inline_list}[{i}].PolicyName"), "missing"))?;
        let doc = p
            .get("PolicyDocument")
            .ok_or_else(|| field(format!("{inline_list}[{i}].PolicyDocument"), "missing"))?;
        inline.insert(
            name.to_owned(),
            document(doc, format!("{inline_list}[{i}].PolicyDocument"))?,
        );
    }
    let mut attached = BTreeSet::new();
    for (i, a) in list(v, "AttachedManagedPolicies")?.iter().enumerate() {
        let arn = a
            .get("PolicyArn")
            .and_then(Value::as_str)
            .ok_or_else(|| field(format!("AttachedManagedPolicies[{i}].PolicyArn"), "missing"))?;
        attached.insert(arn.to_owned());
    }
    let boundary = match v.get("PermissionsBoundary") {
        None | Some(Value::Null) => None,
        Some(b) => Some(
            b.get("PermissionsBoundaryArn")
                .and_then(Value::as_str)
                .ok_or_else(|| field("PermissionsBoundary.PermissionsBoundaryArn", "missing"))?
                .to_owned(),
        ),
    };
    Ok(Principal {
        arn,
        name: name_of(kind, v),
        inline,
        attached,
        boundary,
    })
}

/// Parses one raw entity of `kind` into the typed model.
pub fn parse_entity(kind: AwsKind, v: &Value) -> Result<AwsBody, IamParseError> {
    Ok(match kind {
        AwsKind::User => {
            let mut groups = BTreeSet::new();
            for (i, g) in list(v, "GroupList")?.iter().enumerate() {
                let name = g
                    .as_str()
                    .ok_or_else(|| field(format!("GroupList[{i}]"), "expected a group name"))?;
                groups.insert(name.to_owned());
            }
            AwsBody::User(User {
                principal: principal(kind, v, "UserPolicyList")?,
                groups,
            })
        }
        AwsKind::Group => AwsBody::Group(principal(kind, v, "GroupPolicyList")?),
        AwsKind::Role => {
            let trust = match v.get("AssumeRolePolicyDocument") {
                None | Some(Value::Null) => PolicyDocument::default(),
                Some(doc) => document(doc, "AssumeRolePolicyDocument".into())?,
            };
            AwsBody::Role(Role {
                principal: principal(kind, v, "RolePolicyList")?,
                trust,
            })
        }
        AwsKind::Policy => {
            let arn = str_field(v, "Arn")?.to_owned();
            let versions = list(v, "PolicyVersionList")?;
            let default_version = match v.get("DefaultVersionId").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => versions
                    .iter()
                    .find(|ver| ver.get("IsDefaultVersion").and_then(Value::as_bool) == Some(true))
                    .and_then(|ver| ver.get("VersionId").and_then(Value::as_str))
                    .ok_or(IamParseError::Missing("DefaultVersionId"))?
                    .to_owned(),
            };
            let (index, default) = versions
                .iter()
                .enumerate()
                .find(|(_, ver)| {
                    ver.get("VersionId").and_then(Value::as_str) == Some(default_version.as_str())
                })
                .ok_or_else(|| {
                    field(
                        "PolicyVersionList",
                        format!("has no version {default_version:?} (the DefaultVersionId)"),
                    )
                })?;
            let doc = default
                .get("Document")
                .ok_or_else(|| field(format!("PolicyVersionList[{index}].Document"), "missing"))?;
            AwsBody::Policy(ManagedPolicy {
                name: name_of(kind, v),
                arn,
                default_version,
                document: document(doc, format!("PolicyVersionList[{index}].Document"))?,
            })
        }
    })
}

/// Fields that change without any change in access.
const VOLATILE: [&str; 6] = [
    "RoleLastUsed",
    "AttachmentCount",
    "PermissionsBoundaryUsageCount",
    "UpdateDate",
    "CreateDate",
    "InstanceProfileList",
];

/// Decodes every policy document inside a raw entity in place, so snapshots
/// hold readable JSON whatever the input encoding was.
pub fn decode_documents(kind: AwsKind, v: &mut Value) -> Result<(), IamParseError> {
    let Some(obj) = v.as_object_mut() else {
        return Err(field("", "expected an object"));
    };
    let decode = |doc: &mut Value, path: String| -> Result<(), IamParseError> {
        *doc = iam_policy::decode_document(doc)
            .map_err(|source| IamParseError::Policy { path, source })?;
        Ok(())
    };
    match kind {
        AwsKind::Policy => {
            if let Some(Value::Array(versions)) = obj.get_mut("PolicyVersionList") {
                for (i, ver) in versions.iter_mut().enumerate() {
                    if let Some(doc) = ver.get_mut("Document") {
                        decode(doc, format!("PolicyVersionList[{i}].Document"))?;
                    }
                }
            }
        }
        _ => {
            if let Some(doc) = obj.get_mut("AssumeRolePolicyDocument")
                && !doc.is_null()
            {
                decode(doc, "AssumeRolePolicyDocument".into())?;
            }
            for list_name in ["UserPolicyList", "GroupPolicyList", "RolePolicyList"] {
                if let Some(Value::Array(items)) = obj.get_mut(list_name) {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Some(doc) = item.get_mut("PolicyDocument") {
                            decode(doc, format!("{list_name}[{i}].PolicyDocument"))?;
                        }
                    }
                }
            }
        }
    }
    if kind == AwsKind::Policy && !obj.contains_key("PolicyName") {
        let name = name_of(kind, &Value::Object(obj.clone()));
        obj.insert("PolicyName".into(), Value::String(name));
    }
    Ok(())
}

/// Sorts the lists of a raw entity whose order means nothing, so the stored
/// snapshot is the same whatever order the API or a file listed them in.
pub fn sort_lists(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    for (name, key) in [
        ("AttachedManagedPolicies", "PolicyArn"),
        ("UserPolicyList", "PolicyName"),
        ("GroupPolicyList", "PolicyName"),
        ("RolePolicyList", "PolicyName"),
        ("PolicyVersionList", "VersionId"),
        ("Tags", "Key"),
        ("InstanceProfileList", "Arn"),
    ] {
        if let Some(Value::Array(items)) = obj.get_mut(name) {
            items.sort_by(|a, b| {
                let ka = a.get(key).and_then(Value::as_str).unwrap_or_default();
                let kb = b.get(key).and_then(Value::as_str).unwrap_or_default();
                ka.cmp(kb).then_with(|| a.to_string().cmp(&b.to_string()))
            });
        }
    }
    if let Some(Value::Array(groups)) = obj.get_mut("GroupList") {
        groups.sort_by_cached_key(|g| g.to_string());
    }
}

/// The comparison form: volatile fields dropped, documents normalised and,
/// for managed policies, only the default version's document kept (other
/// versions grant nothing; which one is default is what matters).
pub fn normalize(kind: AwsKind, v: &Value) -> Value {
    let mut out = v.clone();
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    for f in VOLATILE {
        obj.remove(f);
    }
    if let Some(doc) = obj.get_mut("AssumeRolePolicyDocument") {
        *doc = iam_policy::normalize_document(doc);
    }
    for list_name in ["UserPolicyList", "GroupPolicyList", "RolePolicyList"] {
        if let Some(Value::Array(items)) = obj.get_mut(list_name) {
            for item in items.iter_mut() {
                if let Some(doc) = item.get_mut("PolicyDocument") {
                    *doc = iam_policy::normalize_document(doc);
                }
            }
        }
    }
    if kind == AwsKind::Policy {
        let default = obj.get("DefaultVersionId").cloned();
        if let Some(Value::Array(versions)) = obj.remove("PolicyVersionList") {
            let doc = versions
                .iter()
                .find(|ver| ver.get("VersionId") == default.as_ref())
                .and_then(|ver| ver.get("Document"))
                .map(iam_policy::normalize_document);
            if let Some(doc) = doc {
                obj.insert("DefaultVersionDocument".into(), doc);
            }
        }
    }
    sort_lists(&mut out);
    super::k8s::drop_empty(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_uses_default_version_and_fills_missing_name() {
        let mut p = json!({"Arn":"arn:aws:iam::1:policy/p","DefaultVersionId":"v2","PolicyVersionList":[
            {"VersionId":"v1","Document":{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}},
            {"VersionId":"v2","Document":"%7B%22Statement%22%3A%5B%5D%7D"}]});
        decode_documents(AwsKind::Policy, &mut p).unwrap();
        assert_eq!(p["PolicyName"], "p");
        let AwsBody::Policy(mp) = parse_entity(AwsKind::Policy, &p).unwrap() else {
            panic!()
        };
        assert_eq!(mp.default_version, "v2");
        assert!(mp.document.statements.is_empty());
    }

    #[test]
    fn missing_default_version_is_named() {
        let p =
            json!({"Arn":"arn:aws:iam::1:policy/p","DefaultVersionId":"v3","PolicyVersionList":[]});
        let e = parse_entity(AwsKind::Policy, &p).unwrap_err().to_string();
        assert!(e.contains("v3"), "{e}");
    }

    #[test]
    fn normalize_ignores_volatile_and_order() {
        let a = json!({"Arn":"arn:aws:iam::1:role/r","RoleName":"r","RoleLastUsed":{"LastUsedDate":"x"},
            "AttachedManagedPolicies":[{"PolicyArn":"b"},{"PolicyArn":"a"}]});
        let b = json!({"Arn":"arn:aws:iam::1:role/r","RoleName":"r",
            "AttachedManagedPolicies":[{"PolicyArn":"a"},{"PolicyArn":"b"}]});
        assert_eq!(normalize(AwsKind::Role, &a), normalize(AwsKind::Role, &b));
    }
}
