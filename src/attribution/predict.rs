//! Prediction: what each suggestion would change, as grants.
//!
//! OLD and the parsed actions go in. For each suggestion, the objects its
//! actions touch (and those they depend on: a binding's role, a role's
//! bindings and aggregators, a principal's policies and groups) are taken
//! from OLD into a small state, the actions are applied to a copy, and the
//! project's own diff compares the two: its changes, with their gained grants
//! and text diffs, are the prediction. Working on the touched objects only
//! keeps the cost independent of the size of OLD.

use super::actions::{AwsOp, Op, Origin, apply_merge_patch};
use super::suggestion::Suggestion;
use crate::diff::{DiffOptions, diff};
use crate::grants::catalog::Catalog;
use crate::index::aws::{AwsModel, AwsObject};
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::aws::{AwsKey, AwsKind};
use crate::model::k8s::{RbacKey, RbacKind, key_of};
use crate::report::Change;
use crate::snapshot::{Snapshot, SourceSnapshot};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Most related objects pulled from OLD per touched object.
const MAX_RELATED: usize = 64;

/// One predicted change of one suggestion.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Index into the suggestions.
    pub suggestion: usize,
    pub change: Change,
    /// The actions that wrote the object, in the order written (the first
    /// action of the suggestion for an object only reached, such as an
    /// aggregating role).
    pub origins: Vec<Origin>,
    /// Policy JSON given on its own: whoever gets it matches.
    pub any_subject: bool,
}

/// Names of OLD's IAM entities, built once for all suggestions.
struct AwsNames<'a> {
    model: &'a AwsModel,
    source: String,
    account: String,
    by_name: HashMap<(AwsKind, &'a str), &'a AwsKey>,
}

impl<'a> AwsNames<'a> {
    fn new(source: Option<&'a SourceSnapshot>, empty: &'a AwsModel) -> Self {
        let model = source.and_then(SourceSnapshot::iam).unwrap_or(empty);
        let mut by_name = HashMap::new();
        for (key, obj) in model.objects() {
            let name = match &obj.parsed {
                crate::model::aws::AwsBody::User(u) => u.principal.name.as_str(),
                crate::model::aws::AwsBody::Group(g) => g.name.as_str(),
                crate::model::aws::AwsBody::Role(r) => r.principal.name.as_str(),
                crate::model::aws::AwsBody::Policy(p) => p.name.as_str(),
            };
            by_name.insert((key.kind, name), key);
        }
        Self {
            model,
            source: source.map_or_else(|| "aws".to_owned(), |s| s.name.clone()),
            account: model
                .account_id()
                .map_or_else(|| "<account>".to_owned(), str::to_owned),
            by_name,
        }
    }

    fn key(&self, kind: AwsKind, name: &str) -> AwsKey {
        match self.by_name.get(&(kind, name)) {
            Some(k) => (*k).clone(),
            None => AwsKey {
                kind,
                arn: format!(
                    "arn:aws:iam::{}:{}/{name}",
                    self.account,
                    kind.as_str().to_ascii_lowercase()
                ),
            },
        }
    }
}

/// Predicts every suggestion's changes against OLD.
pub fn predict_all(
    old: &Snapshot,
    suggestions: &[Suggestion],
    catalog: &Catalog,
) -> Vec<Prediction> {
    let kube_source = old.sources.values().find(|s| s.kube().is_some());
    let empty_kube = K8sModel::new();
    let kube = kube_source
        .and_then(SourceSnapshot::kube)
        .unwrap_or(&empty_kube);
    let kube_name = kube_source.map_or("kubernetes", |s| s.name.as_str());
    let empty_aws = AwsModel::new();
    let names = AwsNames::new(old.sources.values().find(|s| s.iam().is_some()), &empty_aws);
    let mut out = Vec::new();
    for (i, s) in suggestions.iter().enumerate() {
        predict_kube(i, s, kube, kube_name, catalog, &mut out);
        predict_aws(i, s, &names, catalog, &mut out);
    }
    out
}

fn run_diff(old: SourceSnapshot, new: SourceSnapshot, catalog: &Catalog) -> Vec<Change> {
    let mut o = Snapshot::new();
    o.sources.insert(old.name.clone(), old);
    let mut n = Snapshot::new();
    n.sources.insert(new.name.clone(), new);
    let options = DiffOptions {
        max_grants: 0,
        subject_grants: false,
        ..DiffOptions::default()
    };
    diff(&o, &n, catalog, &options).changes
}

fn kube_target(op: &Op) -> Option<RbacKey> {
    let ns = |kind: RbacKind, ns: &Option<String>| {
        kind.is_namespaced()
            .then(|| ns.clone().unwrap_or_else(|| "<namespace>".into()))
    };
    match op {
        Op::KubeApply(v) => key_of(v).ok(),
        Op::KubeLabel {
            kind,
            namespace,
            name,
            ..
        }
        | Op::KubePatch {
            kind,
            namespace,
            name,
            ..
        }
        | Op::KubeAddSubjects {
            kind,
            namespace,
            name,
            ..
        } => Some(RbacKey::new(*kind, ns(*kind, namespace).as_deref(), name)),
        Op::Aws(_) => None,
    }
}

fn predict_kube(
    index: usize,
    s: &Suggestion,
    old: &K8sModel,
    source: &str,
    catalog: &Catalog,
    out: &mut Vec<Prediction>,
) {
    let mut context: BTreeMap<RbacKey, K8sObject> = BTreeMap::new();
    let mut working: BTreeMap<RbacKey, Value> = BTreeMap::new();
    let mut origins: Vec<(RbacKey, &Origin)> = Vec::new();
    for action in &s.actions {
        let Some(key) = kube_target(&action.op) else {
            continue;
        };
        let current = working
            .get(&key)
            .cloned()
            .or_else(|| old.get(&key).map(K8sObject::value));
        let earlier = working.get(&key).cloned();
        let next = match (&action.op, current) {
            (Op::KubeApply(v), _) => {
                let mut v = v.clone();
                if key.kind.is_namespaced() && v.pointer("/metadata/namespace").is_none() {
                    v["metadata"]["namespace"] = json!("<namespace>");
                }
                // An answer that writes the same role twice ("and also
                // pods/exec") means both sets of rules, whatever the second
                // apply would do to the first in a real cluster.
                if let (Some(prev), Some(rules)) = (
                    earlier.as_ref().and_then(|e| e["rules"].as_array()),
                    v["rules"].as_array().cloned(),
                ) {
                    let mut all = prev.clone();
                    all.extend(rules.into_iter().filter(|r| !prev.contains(r)));
                    v["rules"] = json!(all);
                }
                v
            }
            (Op::KubeLabel { labels, .. }, Some(mut v)) => {
                for (k, value) in labels {
                    match value {
                        Some(value) => v["metadata"]["labels"][k] = json!(value),
                        None => {
                            if let Some(m) = v
                                .pointer_mut("/metadata/labels")
                                .and_then(Value::as_object_mut)
                            {
                                m.remove(k);
                            }
                        }
                    }
                }
                v
            }
            (Op::KubePatch { patch, .. }, Some(mut v)) => {
                apply_merge_patch(&mut v, patch);
                v
            }
            (Op::KubeAddSubjects { subjects, .. }, Some(mut v)) => {
                let mut list = v["subjects"].as_array().cloned().unwrap_or_default();
                list.extend(subjects.iter().cloned());
                v["subjects"] = json!(list);
                v
            }
            // Changing an object OLD does not have: nothing to predict from.
            _ => continue,
        };
        if let Some(o) = old.get(&key) {
            context.insert(key.clone(), o.clone());
        }
        working.insert(key.clone(), next);
        origins.push((key, &action.origin));
    }
    if working.is_empty() {
        return;
    }
    // What the touched objects depend on, and what depends on them.
    let mut related: Vec<RbacKey> = Vec::new();
    for (key, value) in &working {
        if let Ok(obj) = K8sObject::from_raw(value.clone())
            && let Some(b) = obj.binding()
        {
            related.push(b.role.clone());
        }
        if matches!(key.kind, RbacKind::ClusterRole | RbacKind::Role) {
            related.extend(
                old.bindings_of_role(key)
                    .take(MAX_RELATED)
                    .map(|(k, _)| k.clone()),
            );
            if key.kind == RbacKind::ClusterRole {
                for agg in old.aggregators_of(&key.name).into_iter().take(MAX_RELATED) {
                    let agg_key = RbacKey::cluster_role(&agg);
                    related.extend(
                        old.bindings_of_role(&agg_key)
                            .take(MAX_RELATED)
                            .map(|(k, _)| k.clone()),
                    );
                    related.push(agg_key);
                }
            }
        }
    }
    // A role that the new labels aggregate into another (OLD's selectors
    // on the new labels), and the roles an aggregated role collects.
    for value in working.values() {
        let labels: BTreeMap<String, String> = value
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        if labels.is_empty() || value["kind"] != "ClusterRole" {
            continue;
        }
        for (name, selectors) in old.aggregators() {
            if selectors.iter().any(|s| s.matches(&labels)) {
                let agg_key = RbacKey::cluster_role(name);
                related.extend(
                    old.bindings_of_role(&agg_key)
                        .take(MAX_RELATED)
                        .map(|(k, _)| k.clone()),
                );
                related.push(agg_key);
            }
        }
    }
    let mut i = 0;
    while i < related.len() && i < 8 * MAX_RELATED {
        if let Some(role) = old.get(&related[i]).and_then(|o| o.role())
            && let Some(selectors) = &role.aggregation
        {
            for s in selectors {
                for name in old.cluster_roles_matching(s).into_iter().take(MAX_RELATED) {
                    related.push(RbacKey::cluster_role(name));
                }
            }
        }
        i += 1;
    }
    for key in related {
        if let Some(o) = old.get(&key) {
            context.entry(key).or_insert_with(|| o.clone());
        }
    }
    let mut before = K8sModel::new();
    for o in context.values() {
        before.insert(o.clone());
    }
    let mut after = before.clone();
    for value in working.into_values() {
        if let Ok(o) = K8sObject::from_raw(value) {
            after.insert(o);
        }
    }
    let changes = run_diff(
        SourceSnapshot::kubernetes(source, before),
        SourceSnapshot::kubernetes(source, after),
        catalog,
    );
    push_changes(
        index,
        changes,
        &origins,
        |c, k: &RbacKey| {
            c.object.kind == k.kind.as_str()
                && c.object.name == k.name
                && c.object.namespace.as_deref() == k.namespace.as_deref()
        },
        false,
        out,
    );
}

fn push_changes<K>(
    index: usize,
    changes: Vec<Change>,
    origins: &[(K, &Origin)],
    is_target: impl Fn(&Change, &K) -> bool,
    any_subject: bool,
    out: &mut Vec<Prediction>,
) {
    for change in changes {
        let mut wrote: Vec<Origin> = origins
            .iter()
            .filter(|(k, _)| is_target(&change, k))
            .map(|(_, o)| (*o).clone())
            .collect();
        if wrote.is_empty() {
            wrote.extend(origins.first().map(|(_, o)| (*o).clone()));
        }
        if !wrote.is_empty() {
            out.push(Prediction {
                suggestion: index,
                change,
                origins: wrote,
                any_subject,
            });
        }
    }
}

fn empty_entity(kind: AwsKind, key: &AwsKey, name: &str) -> Value {
    let mut v = json!({"Arn": key.arn, "Path": "/", kind.name_field(): name});
    match kind {
        AwsKind::Role => {
            v["AssumeRolePolicyDocument"] = json!({"Version": "2012-10-17", "Statement": []});
            v["RolePolicyList"] = json!([]);
            v["AttachedManagedPolicies"] = json!([]);
        }
        AwsKind::User => {
            v["UserPolicyList"] = json!([]);
            v["AttachedManagedPolicies"] = json!([]);
            v["GroupList"] = json!([]);
        }
        AwsKind::Group => {
            v["GroupPolicyList"] = json!([]);
            v["AttachedManagedPolicies"] = json!([]);
        }
        AwsKind::Policy => {
            v["DefaultVersionId"] = json!("v1");
            v["PolicyVersionList"] = json!([]);
        }
    }
    v
}

fn inline_list(kind: AwsKind) -> &'static str {
    match kind {
        AwsKind::Role => "RolePolicyList",
        AwsKind::User => "UserPolicyList",
        _ => "GroupPolicyList",
    }
}

fn predict_aws(
    index: usize,
    s: &Suggestion,
    names: &AwsNames<'_>,
    catalog: &Catalog,
    out: &mut Vec<Prediction>,
) {
    let old = names.model;
    for bare in [false, true] {
        let mut working: BTreeMap<AwsKey, Value> = BTreeMap::new();
        let mut origins: Vec<(AwsKey, &Origin)> = Vec::new();
        let current = |working: &mut BTreeMap<AwsKey, Value>, kind: AwsKind, name: &str| {
            let key = names.key(kind, name);
            let value = working.get(&key).cloned().unwrap_or_else(|| {
                old.get(&key)
                    .map(|o| o.raw.clone())
                    .unwrap_or_else(|| empty_entity(kind, &key, name))
            });
            (key, value)
        };
        for action in &s.actions {
            let Op::Aws(op) = &action.op else { continue };
            // Bare policy documents are predicted on their own, so that their
            // "anyone" subject does not spread to the commands' changes.
            if matches!(op, AwsOp::BarePolicy { .. }) != bare {
                continue;
            }
            let (key, mut v) = match op {
                AwsOp::AttachPolicy { kind, name, .. }
                | AwsOp::PutPolicy { kind, name, .. }
                | AwsOp::DeleteBoundary { kind, name } => current(&mut working, *kind, name),
                AwsOp::UpdateTrust { role, .. } | AwsOp::CreateRole { role, .. } => {
                    current(&mut working, AwsKind::Role, role)
                }
                AwsOp::CreatePolicy { name, .. } => current(&mut working, AwsKind::Policy, name),
                AwsOp::CreatePolicyVersion { policy_arn, .. } => {
                    let name = policy_arn.rsplit('/').next().unwrap_or(policy_arn);
                    let key = AwsKey {
                        kind: AwsKind::Policy,
                        arn: policy_arn.clone(),
                    };
                    let v = working
                        .get(&key)
                        .cloned()
                        .or_else(|| old.get(&key).map(|o| o.raw.clone()));
                    match v {
                        Some(v) => (key, v),
                        None => current(&mut working, AwsKind::Policy, name),
                    }
                }
                AwsOp::AddUserToGroup { user, .. } => current(&mut working, AwsKind::User, user),
                AwsOp::BarePolicy { .. } => current(&mut working, AwsKind::Role, "<principal>"),
            };
            match op {
                AwsOp::AttachPolicy { policy_arn, .. } => {
                    let name = policy_arn.rsplit('/').next().unwrap_or(policy_arn);
                    // `arn:aws:iam::YOUR_ACCOUNT_ID:policy/X` stands for OLD's X.
                    let known = names.by_name.get(&(AwsKind::Policy, name));
                    let policy_arn = match known {
                        Some(k) if super::placeholder::matches(policy_arn, &k.arn) => &k.arn,
                        _ => policy_arn,
                    };
                    push_unique(
                        &mut v["AttachedManagedPolicies"],
                        json!({"PolicyArn": policy_arn, "PolicyName": name}),
                    );
                }
                AwsOp::PutPolicy {
                    kind,
                    policy_name,
                    document,
                    ..
                } => {
                    let list = inline_list(*kind);
                    let mut items = v[list].as_array().cloned().unwrap_or_default();
                    items.retain(|p| p["PolicyName"] != json!(policy_name));
                    items.push(json!({"PolicyName": policy_name, "PolicyDocument": document}));
                    v[list] = json!(items);
                }
                AwsOp::UpdateTrust { document, .. } | AwsOp::CreateRole { document, .. } => {
                    v["AssumeRolePolicyDocument"] = document.clone();
                }
                AwsOp::CreatePolicy { document, .. }
                | AwsOp::CreatePolicyVersion { document, .. } => {
                    let n = v["PolicyVersionList"].as_array().map_or(0, Vec::len) + 1;
                    let id = format!("v{n}-suggested");
                    let mut versions: Vec<Value> = v["PolicyVersionList"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|mut ver| {
                            ver["IsDefaultVersion"] = json!(false);
                            ver
                        })
                        .collect();
                    versions.push(
                        json!({"VersionId": id, "IsDefaultVersion": true, "Document": document}),
                    );
                    v["PolicyVersionList"] = json!(versions);
                    v["DefaultVersionId"] = json!(id);
                }
                AwsOp::AddUserToGroup { group: g, .. } => {
                    push_unique(&mut v["GroupList"], json!(g))
                }
                AwsOp::DeleteBoundary { .. } => {
                    if let Some(m) = v.as_object_mut() {
                        m.remove("PermissionsBoundary");
                    }
                }
                AwsOp::BarePolicy { document } => {
                    let mut items = v["RolePolicyList"].as_array().cloned().unwrap_or_default();
                    items.push(json!({"PolicyName": "<policy>", "PolicyDocument": document}));
                    v["RolePolicyList"] = json!(items);
                }
            }
            working.insert(key.clone(), v);
            origins.push((key, &action.origin));
        }
        if working.is_empty() {
            continue;
        }
        let mut before = AwsModel::new();
        let mut related: Vec<AwsKey> = Vec::new();
        for (key, v) in &working {
            related.push(key.clone());
            for p in v["AttachedManagedPolicies"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(arn) = p["PolicyArn"].as_str() {
                    related.push(AwsKey {
                        kind: AwsKind::Policy,
                        arn: arn.to_owned(),
                    });
                }
            }
            if let Some(b) = v
                .pointer("/PermissionsBoundary/PermissionsBoundaryArn")
                .and_then(Value::as_str)
            {
                related.push(AwsKey {
                    kind: AwsKind::Policy,
                    arn: b.to_owned(),
                });
            }
            for g in v["GroupList"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(gk) = old.group_key(g) {
                    related.push(gk);
                }
            }
            match key.kind {
                AwsKind::Group => {
                    let name = v["GroupName"].as_str().unwrap_or_default();
                    related.extend(old.members_of(name).take(MAX_RELATED));
                }
                AwsKind::Policy => {
                    related.extend(old.users_of_policy(&key.arn).take(MAX_RELATED).cloned());
                }
                _ => {}
            }
        }
        // A group's policies reach its members; a policy's users hold its grants.
        let mut i = 0;
        while i < related.len() && i < 4 * MAX_RELATED {
            let key = related[i].clone();
            if let Some(o) = old.get(&key) {
                let mut more: Vec<AwsKey> = Vec::new();
                let boundary = o
                    .raw
                    .pointer("/PermissionsBoundary/PermissionsBoundaryArn")
                    .and_then(Value::as_str);
                let attached = o.raw["AttachedManagedPolicies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["PolicyArn"].as_str());
                for arn in attached.chain(boundary) {
                    more.push(AwsKey {
                        kind: AwsKind::Policy,
                        arn: arn.to_owned(),
                    });
                }
                match &o.parsed {
                    crate::model::aws::AwsBody::Group(g) => {
                        more.extend(old.members_of(&g.name).take(MAX_RELATED));
                    }
                    crate::model::aws::AwsBody::User(u) => {
                        more.extend(u.groups.iter().filter_map(|g| old.group_key(g)));
                    }
                    _ => {}
                }
                for k in more {
                    if !related.contains(&k) {
                        related.push(k);
                    }
                }
                if before.get(&key).is_none() {
                    before.insert(key, o.clone());
                }
            }
            i += 1;
        }
        let mut after = before.clone();
        for (key, v) in working {
            match AwsObject::canonical(key.kind, v) {
                Ok((k, o)) => {
                    after.insert(k, o);
                }
                Err(_) => continue,
            }
        }
        let changes = run_diff(
            SourceSnapshot::aws(&names.source, before),
            SourceSnapshot::aws(&names.source, after),
            catalog,
        );
        push_changes(
            index,
            changes,
            &origins,
            |c, k: &AwsKey| c.object.arn.as_deref() == Some(k.arn.as_str()),
            bare,
            out,
        );
    }
}

fn push_unique(list: &mut Value, item: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut()
        && !a.contains(&item)
    {
        a.push(item);
    }
}
