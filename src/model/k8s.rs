//! Kubernetes RBAC objects as the permission model sees them.
//!
//! Raw objects (`serde_json::Value`, as stored in a snapshot) come in; typed
//! roles, bindings and service accounts keyed by [`RbacKey`] come out, together
//! with the normalised form used to decide whether two versions of an object
//! differ at all (volatile metadata dropped, order-insensitive lists sorted).

use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The RBAC group; `v1` and `v1beta1` objects are the same kinds to us.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RbacKind {
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    ServiceAccount,
}

impl RbacKind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "ClusterRole" => Self::ClusterRole,
            "ClusterRoleBinding" => Self::ClusterRoleBinding,
            "Role" => Self::Role,
            "RoleBinding" => Self::RoleBinding,
            "ServiceAccount" => Self::ServiceAccount,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterRole => "ClusterRole",
            Self::ClusterRoleBinding => "ClusterRoleBinding",
            Self::Role => "Role",
            Self::RoleBinding => "RoleBinding",
            Self::ServiceAccount => "ServiceAccount",
        }
    }

    /// The API resource name, as used in URLs and in kubectl.
    pub fn resource(self) -> &'static str {
        match self {
            Self::ClusterRole => "clusterroles",
            Self::ClusterRoleBinding => "clusterrolebindings",
            Self::Role => "roles",
            Self::RoleBinding => "rolebindings",
            Self::ServiceAccount => "serviceaccounts",
        }
    }

    pub fn is_namespaced(self) -> bool {
        matches!(self, Self::Role | Self::RoleBinding | Self::ServiceAccount)
    }

    /// Whether `apiVersion` is one this kind is served under.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        match self {
            Self::ServiceAccount => api_version == "v1",
            _ => matches!(
                api_version,
                "rbac.authorization.k8s.io/v1"
                    | "rbac.authorization.k8s.io/v1beta1"
                    | "rbac.authorization.k8s.io/v1alpha1"
            ),
        }
    }

    pub const ALL: [RbacKind; 5] = [
        Self::ClusterRole,
        Self::ClusterRoleBinding,
        Self::Role,
        Self::RoleBinding,
        Self::ServiceAccount,
    ];
}

impl fmt::Display for RbacKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an RBAC object within one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RbacKey {
    pub kind: RbacKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl RbacKey {
    pub fn new(kind: RbacKind, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub fn cluster_role(name: &str) -> Self {
        Self::new(RbacKind::ClusterRole, None, name)
    }
}

impl fmt::Display for RbacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, deserialize_with = "null_default")]
    pub api_groups: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub resources: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub verbs: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs", deserialize_with = "null_default")]
    pub non_resource_urls: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
            Self::ServiceAccount => "ServiceAccount",
        }
    }
}

/// Who a binding grants to. Service accounts carry their namespace.
/// Ordered by kind, namespace and name.
#[derive(Clone, Debug)]
pub struct Subject {
    pub kind: SubjectKind,
    pub namespace: Option<String>,
    pub name: String,
}

// A diff compares grants that mostly point at the very same subject;
// identity answers those without comparing bytes.
impl PartialEq for Subject {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.kind == other.kind
                && self.name == other.name
                && self.namespace == other.namespace)
    }
}

impl Eq for Subject {}

impl std::hash::Hash for Subject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.kind, &self.namespace, &self.name).hash(state);
    }
}

impl Ord for Subject {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if std::ptr::eq(self, other) {
            return std::cmp::Ordering::Equal;
        }
        (self.kind, &self.namespace, &self.name).cmp(&(other.kind, &other.namespace, &other.name))
    }
}

impl PartialOrd for Subject {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Names that stand for "everyone" (or everyone of a kind) and for the
/// all-powerful `system:masters`; Kubernetes authenticates requests into them.
pub const SYSTEM_SUBJECTS: [&str; 5] = [
    "system:anonymous",
    "system:unauthenticated",
    "system:authenticated",
    "system:serviceaccounts",
    "system:masters",
];

impl Subject {
    /// A user or group named one of [`SYSTEM_SUBJECTS`]. `system:anonymous`
    /// is a user and the rest are groups, but a binding that spells either
    /// kind means the same and is flagged alike.
    pub fn is_system(&self) -> bool {
        matches!(self.kind, SubjectKind::User | SubjectKind::Group)
            && SYSTEM_SUBJECTS.contains(&self.name.as_str())
    }

    pub fn user(name: &str) -> Self {
        Self {
            kind: SubjectKind::User,
            namespace: None,
            name: name.to_owned(),
        }
    }
    pub fn group(name: &str) -> Self {
        Self {
            kind: SubjectKind::Group,
            namespace: None,
            name: name.to_owned(),
        }
    }
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            kind: SubjectKind::ServiceAccount,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}:{}:{}", self.kind.as_str(), ns, self.name),
            None => write!(f, "{}:{}", self.kind.as_str(), self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: SelectorOp,
    pub values: Vec<String>,
}

/// A `metav1.LabelSelector`. An empty selector matches everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.op {
                    SelectorOp::In => got.is_some_and(|v| r.values.contains(v)),
                    SelectorOp::NotIn => !got.is_some_and(|v| r.values.contains(v)),
                    SelectorOp::Exists => got.is_some(),
                    SelectorOp::DoesNotExist => got.is_none(),
                }
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDef {
    pub rules: Vec<PolicyRule>,
    /// `aggregationRule.clusterRoleSelectors`; `Some` marks an aggregated ClusterRole.
    pub aggregation: Option<Vec<LabelSelector>>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingDef {
    /// The role `roleRef` names, resolved: a ClusterRole, or a Role in the
    /// binding's own namespace. Kept as a key so the index and the diff
    /// refer to it without building one per lookup.
    pub role: RbacKey,
    pub subjects: Vec<Subject>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RbacBody {
    Role(RoleDef),
    Binding(BindingDef),
    ServiceAccount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacObject {
    pub key: RbacKey,
    pub body: RbacBody,
}

/// Why a raw object could not be read as RBAC. The path names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacParseError {
    #[error("missing or empty `{0}`")]
    Missing(&'static str),
    #[error("`kind` {0:?} is not an RBAC kind or ServiceAccount")]
    NotRbac(String),
    #[error("`apiVersion` {api_version:?} does not serve kind {kind}")]
    ApiVersion { api_version: String, kind: RbacKind },
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    /// A problem with the object as a whole (such as a missing top-level field).
    #[error("{0}")]
    Invalid(String),
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Everything the model reads from an object, in one pass; other fields
/// (managedFields, annotations, status) are skipped without being built, and
/// fields only checked (kinds, apiVersion) borrow from the text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<RawMeta>,
    #[serde(default, deserialize_with = "null_default")]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    aggregation_rule: Option<RawAggregation>,
    #[serde(default, borrow)]
    role_ref: Option<RawRoleRef<'a>>,
    #[serde(default, borrow, deserialize_with = "null_default")]
    subjects: Vec<RawSubject<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAggregation {
    #[serde(default, deserialize_with = "null_default")]
    cluster_role_selectors: Vec<RawSelector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelector {
    #[serde(default, deserialize_with = "null_default")]
    match_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    match_expressions: Vec<RawRequirement>,
}

#[derive(Deserialize)]
struct RawRequirement {
    key: String,
    operator: String,
    #[serde(default, deserialize_with = "null_default")]
    values: Vec<String>,
}

#[derive(Deserialize)]
struct RawRoleRef<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    name: String,
}

#[derive(Deserialize)]
struct RawSubject<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> RbacParseError {
    let path = e.path().to_string();
    if path == "." {
        RbacParseError::Invalid(e.inner().to_string())
    } else {
        RbacParseError::Field {
            path,
            message: e.inner().to_string(),
        }
    }
}

fn field_error(path: impl Into<String>, message: impl Into<String>) -> RbacParseError {
    RbacParseError::Field {
        path: path.into(),
        message: message.into(),
    }
}

/// The kind and `apiVersion` of a raw object, if it has them.
pub fn kind_of(value: &Value) -> Option<(&str, &str)> {
    Some((
        value.get("apiVersion")?.as_str()?,
        value.get("kind")?.as_str()?,
    ))
}

/// Reads only the identity of a raw RBAC object.
pub fn key_of(value: &Value) -> Result<RbacKey, RbacParseError> {
    parse_object(value).map(|o| o.key)
}

/// Parses a raw object into the typed model.
pub fn parse_object(value: &Value) -> Result<RbacObject, RbacParseError> {
    build(serde_path_to_error::deserialize(value).map_err(path_error)?)
}

/// Parses an object straight from its JSON text, without building a value tree.
pub fn parse_object_json(json: &str) -> Result<RbacObject, RbacParseError> {
    match serde_json::from_str::<RawObject>(json) {
        Ok(raw) => build(raw),
        // Only a failure pays for tracking the path, to name the field.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_str(json);
            let raw = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
            // Text after the object (a second one on the line) is an error too.
            de.end()
                .map_err(|e| RbacParseError::Invalid(e.to_string()))?;
            build(raw)
        }
    }
}

fn build(raw: RawObject<'_>) -> Result<RbacObject, RbacParseError> {
    let kind_str = raw.kind.ok_or(RbacParseError::Missing("kind"))?;
    let api_version = raw
        .api_version
        .ok_or(RbacParseError::Missing("apiVersion"))?;
    let kind = RbacKind::from_kind(&kind_str)
        .ok_or_else(|| RbacParseError::NotRbac(kind_str.into_owned()))?;
    if !kind.accepts_api_version(&api_version) {
        return Err(RbacParseError::ApiVersion {
            api_version: api_version.into_owned(),
            kind,
        });
    }
    let meta = raw.metadata.ok_or(RbacParseError::Missing("metadata"))?;
    let name = meta
        .name
        .filter(|n| !n.is_empty())
        .ok_or(RbacParseError::Missing("metadata.name"))?;
    let namespace = match (
        kind.is_namespaced(),
        meta.namespace.filter(|n| !n.is_empty()),
    ) {
        (true, None) => return Err(RbacParseError::Missing("metadata.namespace")),
        (true, ns) => ns,
        // Cluster-scoped objects ignore a stray namespace, as the API server does.
        (false, _) => None,
    };
    let key = RbacKey {
        kind,
        namespace,
        name,
    };
    let body = match key.kind {
        RbacKind::Role | RbacKind::ClusterRole => {
            let aggregation = match (key.kind, raw.aggregation_rule) {
                (RbacKind::ClusterRole, Some(agg)) => Some(
                    agg.cluster_role_selectors
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| selector(s, i))
                        .collect::<Result<_, _>>()?,
                ),
                _ => None,
            };
            RbacBody::Role(RoleDef {
                rules: raw.rules,
                aggregation,
                labels: meta.labels,
            })
        }
        RbacKind::RoleBinding | RbacKind::ClusterRoleBinding => {
            let role_ref = raw
                .role_ref
                .ok_or_else(|| RbacParseError::Invalid("missing field `roleRef`".into()))?;
            let role = match &*role_ref.kind {
                "ClusterRole" => RbacKey {
                    kind: RbacKind::ClusterRole,
                    namespace: None,
                    name: role_ref.name,
                },
                "Role" if key.kind == RbacKind::RoleBinding => RbacKey {
                    kind: RbacKind::Role,
                    namespace: key.namespace.clone(),
                    name: role_ref.name,
                },
                other => {
                    return Err(field_error(
                        "roleRef.kind",
                        format!("{other:?} is not a role kind this binding can reference"),
                    ));
                }
            };
            let subjects = raw
                .subjects
                .into_iter()
                .enumerate()
                .map(|(i, s)| subject(s, i, key.namespace.as_deref()))
                .collect::<Result<Vec<_>, _>>()?;
            RbacBody::Binding(BindingDef { role, subjects })
        }
        RbacKind::ServiceAccount => RbacBody::ServiceAccount,
    };
    Ok(RbacObject { key, body })
}

fn selector(raw: RawSelector, index: usize) -> Result<LabelSelector, RbacParseError> {
    let requirements = raw
        .match_expressions
        .into_iter()
        .enumerate()
        .map(|(j, r)| {
            let op = match r.operator.as_str() {
                "In" => SelectorOp::In,
                "NotIn" => SelectorOp::NotIn,
                "Exists" => SelectorOp::Exists,
                "DoesNotExist" => SelectorOp::DoesNotExist,
                other => {
                    return Err(field_error(
                        format!(
                            "aggregationRule.clusterRoleSelectors[{index}].matchExpressions[{j}].operator"
                        ),
                        format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
                    ));
                }
            };
            Ok(LabelRequirement {
                key: r.key,
                op,
                values: r.values,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: raw.match_labels,
        requirements,
    })
}

fn subject(
    raw: RawSubject<'_>,
    index: usize,
    binding_namespace: Option<&str>,
) -> Result<Subject, RbacParseError> {
    let kind = match &*raw.kind {
        "User" => SubjectKind::User,
        "Group" => SubjectKind::Group,
        "ServiceAccount" => SubjectKind::ServiceAccount,
        other => {
            return Err(field_error(
                format!("subjects[{index}].kind"),
                format!("unknown subject kind {other:?} (expected User, Group or ServiceAccount)"),
            ));
        }
    };
    let namespace = match kind {
        SubjectKind::ServiceAccount => {
            // The API server requires it; old manifests sometimes rely on the
            // binding's namespace, which is what kubectl users mean.
            match raw.namespace.filter(|n| !n.is_empty()) {
                Some(ns) => Some(ns),
                None => Some(
                    binding_namespace
                        .ok_or_else(|| {
                            field_error(
                                format!("subjects[{index}].namespace"),
                                "a ServiceAccount subject of a ClusterRoleBinding needs a namespace",
                            )
                        })?
                        .to_owned(),
                ),
            }
        }
        _ => None,
    };
    Ok(Subject {
        kind,
        namespace,
        name: raw.name,
    })
}

/// Metadata fields that change without any change of meaning.
const VOLATILE_METADATA: [&str; 7] = [
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionGracePeriodSeconds",
];

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The form two versions of an object are compared in: volatile metadata
/// removed, `apiVersion` reduced to its group, order-insensitive lists sorted,
/// empty collections dropped. Two objects with equal normal forms grant the
/// same and are not reported as changed.
pub fn normalize(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(obj) = v.as_object_mut() {
        if let Some(Value::String(api_version)) = obj.get_mut("apiVersion")
            && let Some((group, _)) = api_version.split_once('/')
        {
            *api_version = group.to_owned();
        }
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            for f in VOLATILE_METADATA {
                meta.remove(f);
            }
            if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                ann.remove(LAST_APPLIED);
            }
        }
        if let Some(Value::Array(rules)) = obj.get_mut("rules") {
            for rule in rules.iter_mut() {
                if let Some(r) = rule.as_object_mut() {
                    for list in [
                        "apiGroups",
                        "resources",
                        "verbs",
                        "resourceNames",
                        "nonResourceURLs",
                    ] {
                        if let Some(Value::Array(items)) = r.get_mut(list) {
                            sort_dedup(items);
                        }
                    }
                }
            }
            sort_dedup(rules);
        }
        if let Some(Value::Array(subjects)) = obj.get_mut("subjects") {
            sort_dedup(subjects);
        }
        if let Some(Value::Object(agg)) = obj.get_mut("aggregationRule")
            && let Some(Value::Array(sel)) = agg.get_mut("clusterRoleSelectors")
        {
            sort_dedup(sel);
        }
    }
    drop_empty(&mut v);
    v
}

fn sort_dedup(items: &mut Vec<Value>) {
    items.sort_by_cached_key(|v| v.to_string());
    items.dedup();
}

/// Removes nulls, empty maps and empty lists, recursively, so that `rules: null`,
/// `rules: []` and a missing `rules` compare equal.
pub(crate) fn drop_empty(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for child in map.values_mut() {
                drop_empty(child);
            }
            map.retain(|_, c| !is_empty(c));
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Sets `apiVersion` and `kind` (list items lack them) unless the object
/// already names them.
pub fn with_type(kind: RbacKind, mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        if !map.contains_key("apiVersion") {
            let api_version = match kind {
                RbacKind::ServiceAccount => "v1".to_owned(),
                _ => format!("{RBAC_GROUP}/v1"),
            };
            map.insert("apiVersion".into(), Value::String(api_version));
        }
        if !map.contains_key("kind") {
            map.insert("kind".into(), Value::String(kind.as_str().to_owned()));
        }
    }
    value
}

/// `metadata.resourceVersion` of a raw object.
pub fn resource_version(value: &Value) -> Option<&str> {
    value
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()
        .filter(|rv| !rv.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_role_with_null_rules_and_aggregation() {
        let v = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"admin","labels":{"a":"b"}},
            "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"x":"true"}}]},
            "rules":null});
        let o = parse_object(&v).unwrap();
        let RbacBody::Role(r) = o.body else { panic!() };
        assert!(r.rules.is_empty());
        assert_eq!(r.aggregation.unwrap().len(), 1);
        assert_eq!(r.labels.get("a").unwrap(), "b");
    }

    #[test]
    fn field_errors_name_the_path() {
        let v = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role",
            "metadata":{"name":"r","namespace":"n"}, "rules":[{"verbs":"get"}]});
        let e = parse_object(&v).unwrap_err().to_string();
        assert!(e.contains("rules[0].verbs"), "{e}");
        let v = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role",
            "metadata":{"name":"r"}});
        assert_eq!(
            parse_object(&v).unwrap_err(),
            RbacParseError::Missing("metadata.namespace")
        );
    }

    #[test]
    fn service_account_subject_defaults_to_binding_namespace() {
        let v = json!({"apiVersion":"rbac.authorization.k8s.io/v1beta1","kind":"RoleBinding",
            "metadata":{"name":"b","namespace":"team"},
            "roleRef":{"kind":"ClusterRole","name":"view","apiGroup":"rbac.authorization.k8s.io"},
            "subjects":[{"kind":"ServiceAccount","name":"ci"}]});
        let RbacBody::Binding(b) = parse_object(&v).unwrap().body else {
            panic!()
        };
        assert_eq!(b.subjects[0], Subject::service_account("team", "ci"));
    }

    #[test]
    fn normalize_ignores_order_and_volatile_fields() {
        let a = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role",
            "metadata":{"name":"r","namespace":"n","resourceVersion":"1"},
            "rules":[{"verbs":["list","get"],"resources":["pods"],"apiGroups":[""]},
                     {"verbs":["get"],"resources":["secrets"],"apiGroups":[""]}]});
        let b = json!({"apiVersion":"rbac.authorization.k8s.io/v1beta1","kind":"Role",
            "metadata":{"name":"r","namespace":"n","resourceVersion":"9","annotations":{}},
            "rules":[{"verbs":["get"],"resources":["secrets"],"apiGroups":[""]},
                     {"verbs":["get","list"],"resources":["pods"],"apiGroups":[""],"resourceNames":[]}]});
        assert_eq!(normalize(&a), normalize(&b));
    }

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> =
            [("a".to_string(), "1".to_string())].into_iter().collect();
        let sel = |reqs: Vec<LabelRequirement>| LabelSelector {
            match_labels: BTreeMap::new(),
            requirements: reqs,
        };
        let req = |op, values: &[&str]| LabelRequirement {
            key: "a".into(),
            op,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        assert!(sel(vec![]).matches(&labels));
        assert!(sel(vec![req(SelectorOp::In, &["1", "2"])]).matches(&labels));
        assert!(!sel(vec![req(SelectorOp::NotIn, &["1"])]).matches(&labels));
        assert!(sel(vec![req(SelectorOp::Exists, &[])]).matches(&labels));
        assert!(!sel(vec![req(SelectorOp::DoesNotExist, &[])]).matches(&labels));
    }
}
