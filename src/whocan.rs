//! Answering "who can do X" against one snapshot.
//!
//! A request comes in (a Kubernetes verb on a resource or nonResourceURL,
//! optionally in a namespace and for a name; or an IAM action, optionally on
//! a resource ARN); the subjects allowed come out, each with the scope and
//! the bindings or policies that allow it. Uses the same matching rules as
//! the diff, so both always agree.

use crate::grants::aws::AwsCache;
use crate::grants::aws_perm::{AwsPerms, GrantKey, ResourcePattern};
use crate::grants::catalog::Catalog;
use crate::grants::k8s::PermCache;
use crate::grants::k8s_perm::{Perm, perm_allows};
use crate::index::aws::AwsModel;
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::aws::{AwsBody, AwsKey, AwsKind};
use crate::model::k8s::RbacKind;
use roaring::RoaringBitmap;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Answer {
    pub subject: String,
    /// `cluster`, `namespace:NAME` or `account:ID`.
    pub scope: String,
    /// What allows it: `ClusterRoleBinding/x -> ClusterRole/y`, or a policy.
    pub via: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct K8sQuery {
    pub verb: String,
    /// `pods`, `pods/exec`, or a nonResourceURL starting with `/`.
    pub resource: String,
    pub api_group: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Subjects allowed the request. Without a namespace, every scope counts and
/// each answer says where; with one, that namespace and cluster-wide grants.
pub fn kube(model: &K8sModel, q: &K8sQuery) -> Vec<Answer> {
    let request = if q.resource.starts_with('/') {
        Perm::NonResource {
            url: &q.resource,
            verb: &q.verb,
        }
    } else {
        Perm::Resource {
            group: &q.api_group,
            resource: &q.resource,
            verb: &q.verb,
            name: q.name.as_deref(),
        }
    };
    let non_resource = matches!(request, Perm::NonResource { .. });
    let mut cache = PermCache::new(model);
    let mut answers: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (key, object) in model.objects() {
        let Some(binding) = object.binding() else {
            continue;
        };
        if key.kind == RbacKind::RoleBinding {
            // nonResourceURLs are only granted cluster-wide.
            if non_resource
                || q.namespace
                    .as_ref()
                    .is_some_and(|ns| key.namespace.as_ref() != Some(ns))
            {
                continue;
            }
        }
        let role = &binding.role;
        let perms = cache.role(role);
        if !perms.iter().any(|p| perm_allows(p, &request)) {
            continue;
        }
        let scope = match &key.namespace {
            Some(ns) => format!("namespace:{ns}"),
            None => "cluster".into(),
        };
        for subject in &binding.subjects {
            answers
                .entry((subject.to_string(), scope.clone()))
                .or_default()
                .push(format!("{key} -> {role}"));
        }
    }
    answers
        .into_iter()
        .map(|((subject, scope), via)| Answer {
            subject,
            scope,
            via,
            condition: None,
        })
        .collect()
}

fn resource_matches(pattern: &ResourcePattern, resource: Option<&str>) -> bool {
    resource.is_none_or(|r| pattern.matches(r))
}

/// The conditions under which `perms` allows `actions` on `resource`, if it does.
fn allowed_under(
    perms: &AwsPerms,
    actions: &RoaringBitmap,
    unknown: &str,
    resource: Option<&str>,
) -> Vec<Option<String>> {
    let denied = |key: &GrantKey| {
        key.condition.is_none()
            && perms.deny.iter().any(|(dk, dset)| {
                dk.condition.is_none()
                    && resource.is_some_and(|r| resource_matches(&dk.resource, Some(r)))
                    && (actions - &dset.ids).is_empty()
                    && !actions.is_empty()
            })
    };
    perms
        .allow
        .iter()
        .filter(|(key, set)| {
            resource_matches(&key.resource, resource)
                && (!(&set.ids & actions).is_empty() || set.unknown.contains(unknown))
                && !denied(key)
        })
        .map(|(key, _)| key.condition.clone())
        .collect()
}

/// Principals allowed an IAM action (a name or a pattern), optionally on one resource ARN.
/// For `sts:AssumeRole*` on a role ARN, the role's trusted principals are included.
pub fn iam(
    model: &AwsModel,
    catalog: &Catalog,
    action: &str,
    resource: Option<&str>,
) -> Vec<Answer> {
    let actions = catalog.expand(action);
    let unknown = action.to_ascii_lowercase();
    let scope = format!("account:{}", model.account_id().unwrap_or("unknown"));
    let mut cache = AwsCache::new(model, catalog);
    let mut out = Vec::new();
    let principals: Vec<AwsKey> = model
        .keys()
        .filter(|k| k.kind != AwsKind::Policy)
        .cloned()
        .collect();
    for key in principals {
        let effective = cache.principal(&key);
        let conditions = allowed_under(&effective, &actions, &unknown, resource);
        if conditions.is_empty() {
            continue;
        }
        // Which of its own documents grant it, for the explanation.
        let mut via = Vec::new();
        let object = model.get(&key).map(|o| &o.parsed);
        let (principal, groups) = match object {
            Some(AwsBody::User(u)) => (
                Some(&u.principal),
                u.groups.iter().cloned().collect::<Vec<_>>(),
            ),
            Some(AwsBody::Group(g)) => (Some(g), Vec::new()),
            Some(AwsBody::Role(r)) => (Some(&r.principal), Vec::new()),
            _ => (None, Vec::new()),
        };
        if let Some(p) = principal {
            for (name, doc) in &p.inline {
                if !allowed_under(
                    &cache.compiler().document(doc),
                    &actions,
                    &unknown,
                    resource,
                )
                .is_empty()
                {
                    via.push(format!("inline policy {name}"));
                }
            }
            for arn in &p.attached {
                if !allowed_under(&cache.managed(arn), &actions, &unknown, resource).is_empty() {
                    via.push(format!("attached {arn}"));
                }
            }
        }
        for group in groups {
            if let Some(gk) = model.group_key(&group)
                && !allowed_under(&cache.principal(&gk), &actions, &unknown, resource).is_empty()
            {
                via.push(format!("group {group}"));
            }
        }
        let condition = if conditions.iter().any(Option::is_none) {
            None
        } else {
            conditions.into_iter().flatten().next()
        };
        out.push(Answer {
            subject: key.arn.clone(),
            scope: scope.clone(),
            via,
            condition,
        });
    }
    if let Some(role_arn) = resource {
        let role = AwsKey {
            kind: AwsKind::Role,
            arn: role_arn.to_owned(),
        };
        for (principal, perms) in cache.trust(&role) {
            let conditions = allowed_under(&perms, &actions, &unknown, Some(role_arn));
            if conditions.is_empty() {
                continue;
            }
            out.push(Answer {
                subject: principal,
                scope: scope.clone(),
                via: vec![format!("trust policy of {role_arn}")],
                condition: conditions.into_iter().flatten().next(),
            });
        }
    }
    out.sort();
    out
}

/// Whether a kube object is a role or binding at all (used to describe empty answers).
pub fn has_rbac(model: &K8sModel) -> bool {
    model
        .objects()
        .any(|(_, o): (_, &K8sObject)| o.role().is_some() || o.binding().is_some())
}
