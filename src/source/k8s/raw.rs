//! Objects as the API server sends them: the five kinds' API coordinates,
//! and [`RawObject`], a `kube` resource type that keeps the whole JSON
//! document (so nothing the server sent is lost in a typed round trip) and
//! only lifts out the metadata the watcher needs.
//!
//! List items come without `apiVersion` and `kind`; `model::k8s::with_type` puts them
//! back so every object leaves this module self-describing.

use std::borrow::Cow;

use kube::core::{ApiResource, DynamicResourceScope, ObjectMeta, Resource};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::model::k8s::{RBAC_GROUP, RbacKind};

/// The served `v1` coordinates of `kind`.
pub fn api_resource(kind: RbacKind) -> ApiResource {
    let (group, api_version) = match kind {
        RbacKind::ServiceAccount => ("", "v1".to_owned()),
        _ => (RBAC_GROUP, format!("{RBAC_GROUP}/v1")),
    };
    ApiResource {
        group: group.to_owned(),
        version: "v1".to_owned(),
        api_version,
        kind: kind.as_str().to_owned(),
        plural: kind.resource().to_owned(),
    }
}

/// `rolebindings.rbac.authorization.k8s.io`, `serviceaccounts`: the name
/// RBAC rules and the server's messages use.
pub fn qualified_resource(kind: RbacKind) -> String {
    match kind {
        RbacKind::ServiceAccount => kind.resource().to_owned(),
        _ => format!("{}.{RBAC_GROUP}", kind.resource()),
    }
}

/// A watched object: the full JSON document plus the few metadata fields
/// `kube-runtime`'s watcher reads (name, namespace, resourceVersion).
#[derive(Clone, Debug)]
pub struct RawObject {
    meta: ObjectMeta,
    pub value: Value,
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let field = |name: &str| {
            value
                .get("metadata")
                .and_then(|m| m.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let meta = ObjectMeta {
            name: field("name"),
            namespace: field("namespace"),
            resource_version: field("resourceVersion"),
            ..ObjectMeta::default()
        };
        Ok(RawObject { meta, value })
    }
}

impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::k8s::{resource_version, with_type};
    use serde_json::json;

    #[test]
    fn list_items_get_their_type_back() {
        let v = with_type(RbacKind::RoleBinding, json!({"metadata": {"name": "a"}}));
        assert_eq!(v["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(v["kind"], "RoleBinding");
        let v = with_type(RbacKind::ServiceAccount, json!({"metadata": {"name": "a"}}));
        assert_eq!(v["apiVersion"], "v1");
        // an object that names its version keeps it
        let v = with_type(
            RbacKind::Role,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": "Role"}),
        );
        assert_eq!(v["apiVersion"], "rbac.authorization.k8s.io/v1beta1");
    }

    #[test]
    fn raw_objects_keep_everything_and_expose_metadata() {
        let text = r#"{"metadata":{"name":"r","namespace":"a","resourceVersion":"7",
            "managedFields":[{"manager":"kubectl"}]},"rules":null,"x-unknown":1}"#;
        let o: RawObject = serde_json::from_str(text).unwrap();
        assert_eq!(o.meta().resource_version.as_deref(), Some("7"));
        assert_eq!(o.meta().namespace.as_deref(), Some("a"));
        assert_eq!(o.value["x-unknown"], 1);
        assert!(o.value["rules"].is_null());
        assert_eq!(resource_version(&o.value), Some("7"));
        assert_eq!(
            api_resource(RbacKind::ClusterRoleBinding).api_version,
            "rbac.authorization.k8s.io/v1"
        );
        assert_eq!(
            qualified_resource(RbacKind::RoleBinding),
            "rolebindings.rbac.authorization.k8s.io"
        );
    }
}
