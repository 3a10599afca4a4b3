//! Revert planning: from a change and the baseline to the operations that
//! restore the approved state of that object.
//!
//! A classified [`Change`] comes in with the source's baseline and current
//! state (the objects themselves, for their content and resourceVersion),
//! the planning rules (protected objects, latent opt-in) and what is approved
//! or allow-listed; a [`Planned`] comes out: the typed operations to run, or
//! why nothing is planned. Only widening (or mixed) changes are planned, and
//! every operation restores baseline content, so a plan never grants what the
//! baseline did not. Pure: no I/O, no clock; the reverters
//! (src/revert/k8s.rs, src/revert/aws.rs) execute plans.

use crate::config::{AllowRule, Mode, RevertConfig};
use crate::decide::Policy;
use crate::diff::{DiffOptions, diff};
use crate::grants::catalog::Catalog;
use crate::grants::glob;
use crate::index::aws::{AwsModel, AwsObject};
use crate::index::k8s::K8sModel;
use crate::index::k8s::K8sObject;
use crate::model::aws::{AwsBody, AwsKey, AwsKind, Principal};
use crate::model::k8s::{RbacKey, RbacKind};
use crate::report::{Change, ChangeKind, Direction, Report, Severity};
use crate::snapshot::{Snapshot, SourceData, SourceSnapshot};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Keys serialize as the diff names objects (`ClusterRole/x`, `Role/ns/x`).
fn as_text<S: serde::Serializer>(key: &RbacKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}

/// One Kubernetes write.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum K8sOp {
    /// Delete an object the baseline does not have (or must recreate).
    Delete {
        #[serde(serialize_with = "as_text")]
        key: RbacKey,
        /// Deletion precondition: the version judged, so a newer edit is not deleted blind.
        resource_version: Option<String>,
    },
    /// Put the baseline content back, on condition the object is still the version judged.
    Replace {
        #[serde(serialize_with = "as_text")]
        key: RbacKey,
        resource_version: Option<String>,
        object: Value,
    },
    /// Create the baseline object (after deleting a binding whose immutable roleRef changed).
    Create {
        #[serde(serialize_with = "as_text")]
        key: RbacKey,
        object: Value,
    },
    /// Remove labels the baseline did not have (an aggregation label, say).
    RemoveLabels {
        #[serde(serialize_with = "as_text")]
        key: RbacKey,
        resource_version: Option<String>,
        labels: Vec<String>,
    },
}

/// A user, group or role, by kind and name (what the IAM write calls take).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrincipalRef {
    pub kind: String,
    pub name: String,
}

/// One IAM write.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum IamOp {
    PutPermissionsBoundary {
        principal: PrincipalRef,
        policy_arn: String,
    },
    UpdateTrustPolicy {
        role: String,
        document: String,
    },
    DetachPolicy {
        principal: PrincipalRef,
        policy_arn: String,
    },
    DeleteInlinePolicy {
        principal: PrincipalRef,
        name: String,
    },
    RemoveUserFromGroup {
        user: String,
        group: String,
    },
    SetDefaultPolicyVersion {
        policy_arn: String,
        version_id: String,
    },
    CreatePolicyVersion {
        policy_arn: String,
        document: String,
    },
    PutInlinePolicy {
        principal: PrincipalRef,
        name: String,
        document: String,
    },
    AttachPolicy {
        principal: PrincipalRef,
        policy_arn: String,
    },
    AddUserToGroup {
        user: String,
        group: String,
    },
    DeletePermissionsBoundary {
        principal: PrincipalRef,
    },
}

impl IamOp {
    /// Run order: what can only take access away first (a boundary, a trust
    /// policy, detaching), what restores baseline grants last, so no moment
    /// between two operations grants more than before the plan started.
    fn rank(&self) -> u8 {
        match self {
            IamOp::PutPermissionsBoundary { .. } => 0,
            IamOp::UpdateTrustPolicy { .. } => 1,
            IamOp::DetachPolicy { .. }
            | IamOp::DeleteInlinePolicy { .. }
            | IamOp::RemoveUserFromGroup { .. } => 2,
            IamOp::SetDefaultPolicyVersion { .. } | IamOp::CreatePolicyVersion { .. } => 3,
            IamOp::PutInlinePolicy { .. }
            | IamOp::AttachPolicy { .. }
            | IamOp::AddUserToGroup { .. } => 4,
            IamOp::DeletePermissionsBoundary { .. } => 5,
        }
    }
}

/// The operations restoring one object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Ops {
    K8s(Vec<K8sOp>),
    Iam(Vec<IamOp>),
}

impl Ops {
    pub fn len(&self) -> usize {
        match self {
            Ops::K8s(o) => o.len(),
            Ops::Iam(o) => o.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why nothing is planned for a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "kebab-case")]
pub enum Skip {
    /// Narrowing and neutral changes are never reverted.
    NotWidening(Direction),
    /// Matched a protected-object glob.
    Protected(String),
    /// Nobody holds the gained grants today (config `revert.latent` opts in).
    LatentOnly,
    /// An accepted approval covers this widening's digest.
    Approved,
    /// An allow-list rule, by name.
    AllowListed(String),
    /// The rules of an aggregated ClusterRole changed: the aggregation
    /// controller writes them, so the roles it aggregates are reverted instead.
    Aggregated,
    /// The change cannot be undone by the operations this version knows.
    Unsupported(String),
}

impl Skip {
    /// The label a skipped revert is journaled and counted under.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotWidening(_) => "not-widening",
            Skip::Protected(_) => "protected",
            Skip::LatentOnly => "latent-only",
            Skip::Approved => "approved",
            Skip::AllowListed(_) => "allow-listed",
            Skip::Aggregated => "aggregated",
            Skip::Unsupported(_) => "unsupported",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub source: String,
    pub object: String,
    /// The approval digest of the widening (src/approval/digest.rs).
    pub digest: String,
    pub severity: Severity,
    /// Planned in a later round: unchanged or narrower when judged alone,
    /// but the plan's other restorations would widen through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixup: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Revert(Ops),
    Skip(Skip),
}

/// Built-in protected objects: the operator's own RBAC and Kubernetes'
/// `system:*` bootstrap objects. The chart names its RBAC after the release's
/// full name, which always contains `permdrift` (`permdrift`,
/// `RELEASE-permdrift`, plus suffixes such as `-leader-election`;
/// charts/permdrift/templates/_helpers.tpl) unless overridden, hence the
/// infix globs.
pub const DEFAULT_PROTECTED: [&str; 5] = [
    "*/system:*",
    "ClusterRole/*permdrift*",
    "ClusterRoleBinding/*permdrift*",
    "Role/*/*permdrift*",
    "RoleBinding/*/*permdrift*",
];

/// What planning needs from the config, and the approvals already decided.
#[derive(Clone, Debug, Default)]
pub struct PlanRules {
    pub protected: Vec<String>,
    pub latent: bool,
    pub allow: Vec<AllowRule>,
    /// (object, digest) pairs approved now (src/approval decided them).
    pub approved: BTreeSet<(String, String)>,
}

impl PlanRules {
    pub fn from_config(revert: &RevertConfig, allow: &[AllowRule]) -> Self {
        let mut protected: Vec<String> = DEFAULT_PROTECTED.iter().map(|s| (*s).into()).collect();
        protected.extend(revert.protected.iter().cloned());
        PlanRules {
            protected,
            latent: revert.latent,
            allow: allow.to_vec(),
            approved: BTreeSet::new(),
        }
    }

    fn protected_by(&self, change: &Change) -> Option<&str> {
        let display = change.object.display();
        let short = format!("{}/{}", change.object.kind, change.object.name);
        self.protected
            .iter()
            .find(|p| {
                glob::matches(p, &display)
                    || glob::matches(p, &short)
                    || change
                        .object
                        .arn
                        .as_deref()
                        .is_some_and(|a| glob::matches(p, a))
            })
            .map(String::as_str)
    }
}

/// Plans one source: diffs the current state against the baseline (no
/// grant cap) and plans every change. For Kubernetes, restoring one object
/// can make another, neutral when judged alone, grant what the baseline did
/// not (a role's old rules under a binding added since); so the plan is
/// applied to the current state in a pure simulation and planned again
/// until nothing new widens, later rounds first so those bindings go before
/// the restorations that would widen through them.
pub fn plan_source(
    baseline: &SourceSnapshot,
    current: &SourceSnapshot,
    rules: &PlanRules,
    catalog: &Catalog,
) -> Vec<Planned> {
    let options = DiffOptions {
        max_grants: 0,
        ..DiffOptions::default()
    };
    let wrap = |s: &SourceSnapshot| {
        let mut snapshot = Snapshot::new();
        snapshot.sources.insert(s.name.clone(), s.clone());
        snapshot
    };
    let report = diff(&wrap(baseline), &wrap(current), catalog, &options);
    let mut planned = plan_report(&report, &baseline.data, &current.data, rules);
    if !matches!(current.data, SourceData::Kubernetes(_)) {
        return planned;
    }
    let mut state = current.clone();
    let mut round = planned.clone();
    // Each round only plans objects not yet at baseline, so this ends
    // within one round per object; the bound is a guard.
    for _ in 0..current.object_count().max(1) {
        apply_k8s(&mut state, &round);
        let report = diff(&wrap(baseline), &wrap(&state), catalog, &options);
        let reverted: BTreeSet<&str> = planned
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::Revert(_)))
            .map(|p| p.object.as_str())
            .collect();
        let next: Vec<Planned> = plan_report(&report, &baseline.data, &state.data, rules)
            .into_iter()
            .filter(|p| {
                matches!(p.outcome, Outcome::Revert(_)) && !reverted.contains(p.object.as_str())
            })
            .map(|p| Planned { fixup: true, ..p })
            .collect();
        if next.is_empty() {
            break;
        }
        let mut merged = next.clone();
        merged.extend(
            planned
                .into_iter()
                .filter(|p| !next.iter().any(|n| n.object == p.object)),
        );
        planned = merged;
        round = next;
    }
    planned
}

/// What the API server holds after `planned` runs, preconditions holding:
/// the simulation [`plan_source`] checks a plan with.
pub fn apply_k8s(state: &mut SourceSnapshot, planned: &[Planned]) {
    let SourceData::Kubernetes(model) = &mut state.data else {
        return;
    };
    for p in planned {
        let Outcome::Revert(Ops::K8s(ops)) = &p.outcome else {
            continue;
        };
        for op in ops {
            match op {
                K8sOp::Delete { key, .. } => {
                    model.remove(key);
                }
                K8sOp::Replace { object, .. } | K8sOp::Create { object, .. } => {
                    if let Ok(o) = K8sObject::from_raw(object.clone()) {
                        model.insert(o);
                    }
                }
                K8sOp::RemoveLabels { key, labels, .. } => {
                    let Some(mut v) = model.get(key).map(|o| o.value()) else {
                        continue;
                    };
                    if let Some(Value::Object(l)) =
                        v.get_mut("metadata").and_then(|m| m.get_mut("labels"))
                    {
                        for label in labels {
                            l.remove(label);
                        }
                    }
                    if let Ok(o) = K8sObject::from_raw(v) {
                        model.insert(o);
                    }
                }
            }
        }
    }
}

/// Plans every change of one source's report (diffed with no grant cap),
/// each on its own (see [`plan_source`] for the whole source).
pub fn plan_report(
    report: &Report,
    baseline: &SourceData,
    current: &SourceData,
    rules: &PlanRules,
) -> Vec<Planned> {
    report
        .changes
        .iter()
        .map(|c| plan_change(c, baseline, current, rules))
        .collect()
}

/// A source's current state by reference, as the operator's loops hold it
/// (copying a large model per planned widening is not free).
#[derive(Clone, Copy)]
pub enum Live<'a> {
    K8s(&'a K8sModel),
    Aws(&'a AwsModel),
}

impl<'a> Live<'a> {
    pub fn of(data: &'a SourceData) -> Self {
        match data {
            SourceData::Kubernetes(m) => Live::K8s(m),
            SourceData::Aws(m) => Live::Aws(m),
        }
    }
}

/// Plans the revert of one change.
pub fn plan_change(
    change: &Change,
    baseline: &SourceData,
    current: &SourceData,
    rules: &PlanRules,
) -> Planned {
    plan_live(change, baseline, Live::of(current), rules)
}

/// [`plan_change`] against the current state by reference.
pub fn plan_live(
    change: &Change,
    baseline: &SourceData,
    current: Live<'_>,
    rules: &PlanRules,
) -> Planned {
    let object = change.object.display();
    let digest = crate::approval::digest::digest_of(&change.gained);
    let outcome = match skip_reason(change, &object, &digest, rules) {
        Some(skip) => Outcome::Skip(skip),
        None => match (baseline, current) {
            (SourceData::Kubernetes(b), Live::K8s(c)) => plan_k8s(change, b, c),
            (SourceData::Aws(b), Live::Aws(c)) => plan_iam(change, b, c),
            _ => Outcome::Skip(Skip::Unsupported(
                "baseline and current are different platforms".into(),
            )),
        },
    };
    Planned {
        source: change.source.clone(),
        object,
        digest,
        severity: change.severity,
        fixup: false,
        outcome,
    }
}

fn skip_reason(change: &Change, object: &str, digest: &str, rules: &PlanRules) -> Option<Skip> {
    if !change.direction.widens() {
        return Some(Skip::NotWidening(change.direction));
    }
    if let Some(p) = rules.protected_by(change) {
        return Some(Skip::Protected(p.to_owned()));
    }
    let policy = Policy {
        source: &change.source,
        mode: Mode::Enforce,
        allow: &rules.allow,
    };
    if let Some(rule) = policy.allowed_by(change) {
        return Some(Skip::AllowListed(rule.name.clone()));
    }
    if rules
        .approved
        .contains(&(object.to_owned(), digest.to_owned()))
    {
        return Some(Skip::Approved);
    }
    // A widening nobody holds today (docs/diff-format.md, "Latent grants")
    // is left to review unless the config opts in.
    if !rules.latent && !change.gained.is_empty() && change.gained.iter().all(|g| g.latent) {
        return Some(Skip::LatentOnly);
    }
    None
}

fn unsupported(what: impl Into<String>) -> Outcome {
    Outcome::Skip(Skip::Unsupported(what.into()))
}

fn rbac_key(change: &Change) -> Option<RbacKey> {
    let kind = RbacKind::from_kind(&change.object.kind)?;
    Some(RbacKey::new(
        kind,
        change.object.namespace.as_deref(),
        &change.object.name,
    ))
}

/// Baseline content as written back: volatile metadata (uid, timestamps,
/// managedFields, the old resourceVersion) dropped, the precondition set.
fn restorable(baseline: &Value, resource_version: Option<&str>) -> Value {
    let mut v = baseline.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(f);
        }
        if let Some(rv) = resource_version {
            meta.insert("resourceVersion".into(), Value::String(rv.to_owned()));
        }
    }
    v
}

fn labels(v: &Value) -> BTreeMap<String, Value> {
    v.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn without_labels(v: &Value) -> Value {
    let mut n = crate::model::k8s::normalize(v);
    if let Some(Value::Object(meta)) = n.get_mut("metadata") {
        meta.remove("labels");
    }
    n
}

fn plan_k8s(change: &Change, baseline: &K8sModel, current: &K8sModel) -> Outcome {
    let Some(rbac) = rbac_key(change) else {
        return unsupported(format!("{} is not an RBAC kind", change.object.kind));
    };
    let now = current.get(&rbac).map(|o| o.value());
    let then = baseline.get(&rbac).map(|o| o.value());
    let rv = |v: &Value| crate::model::k8s::resource_version(v).map(str::to_owned);
    let ops = match (change.change, then, now) {
        (ChangeKind::Added, None, Some(now)) => vec![K8sOp::Delete {
            key: rbac,
            resource_version: rv(&now),
        }],
        (ChangeKind::Modified, Some(then), Some(now)) => {
            let role_ref = |v: &Value| v.get("roleRef").cloned();
            let (old_labels, new_labels) = (labels(&then), labels(&now));
            let aggregation = |v: &Value| {
                crate::model::k8s::normalize(v)
                    .get("aggregationRule")
                    .cloned()
            };
            let rules_only = |v: &Value| {
                let mut n = crate::model::k8s::normalize(v);
                if let Some(obj) = n.as_object_mut() {
                    obj.remove("rules");
                }
                n
            };
            if aggregation(&then).is_some()
                && aggregation(&then) == aggregation(&now)
                && rules_only(&then) == rules_only(&now)
            {
                return Outcome::Skip(Skip::Aggregated);
            }
            if role_ref(&then) != role_ref(&now) {
                // roleRef is immutable: the binding is deleted and created again.
                vec![
                    K8sOp::Delete {
                        key: rbac.clone(),
                        resource_version: rv(&now),
                    },
                    K8sOp::Create {
                        key: rbac,
                        object: restorable(&then, None),
                    },
                ]
            } else if without_labels(&then) == without_labels(&now)
                && old_labels.iter().all(|(k, v)| new_labels.get(k) == Some(v))
            {
                // Only labels were added: remove just those, leaving the rest as it is.
                let added = new_labels
                    .keys()
                    .filter(|k| !old_labels.contains_key(*k))
                    .cloned()
                    .collect();
                vec![K8sOp::RemoveLabels {
                    key: rbac,
                    resource_version: rv(&now),
                    labels: added,
                }]
            } else {
                let resource_version = rv(&now);
                vec![K8sOp::Replace {
                    key: rbac,
                    object: restorable(&then, resource_version.as_deref()),
                    resource_version,
                }]
            }
        }
        (kind, _, _) => {
            return unsupported(format!(
                "a {} object cannot widen Kubernetes RBAC by being {}",
                change.object.kind,
                kind.as_str()
            ));
        }
    };
    Outcome::Revert(Ops::K8s(ops))
}

fn aws_key(change: &Change) -> Option<AwsKey> {
    let kind = AwsKind::ALL
        .into_iter()
        .find(|k| k.as_str() == change.object.kind)?;
    Some(AwsKey {
        kind,
        arn: change.object.arn.clone()?,
    })
}

/// The document of an inline policy `name` in a raw entity, as JSON text.
fn inline_document(raw: &Value, name: &str) -> Option<String> {
    ["UserPolicyList", "GroupPolicyList", "RolePolicyList"]
        .iter()
        .filter_map(|l| raw.get(*l).and_then(Value::as_array))
        .flatten()
        .find(|p| p.get("PolicyName").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("PolicyDocument"))
        .map(Value::to_string)
}

fn principal_ops(
    kind: AwsKind,
    then: &Principal,
    then_raw: &Value,
    now: &Principal,
    ops: &mut Vec<IamOp>,
) {
    let who = PrincipalRef {
        kind: kind.as_str().to_owned(),
        name: now.name.clone(),
    };
    for arn in now.attached.difference(&then.attached) {
        ops.push(IamOp::DetachPolicy {
            principal: who.clone(),
            policy_arn: arn.clone(),
        });
    }
    for arn in then.attached.difference(&now.attached) {
        ops.push(IamOp::AttachPolicy {
            principal: who.clone(),
            policy_arn: arn.clone(),
        });
    }
    for (name, doc) in &now.inline {
        if !then.inline.contains_key(name) {
            ops.push(IamOp::DeleteInlinePolicy {
                principal: who.clone(),
                name: name.clone(),
            });
        } else if then.inline.get(name) != Some(doc)
            && let Some(document) = inline_document(then_raw, name)
        {
            ops.push(IamOp::PutInlinePolicy {
                principal: who.clone(),
                name: name.clone(),
                document,
            });
        }
    }
    for name in then.inline.keys() {
        if !now.inline.contains_key(name)
            && let Some(document) = inline_document(then_raw, name)
        {
            ops.push(IamOp::PutInlinePolicy {
                principal: who.clone(),
                name: name.clone(),
                document,
            });
        }
    }
    match (&then.boundary, &now.boundary) {
        (Some(b), n) if n.as_ref() != Some(b) => ops.push(IamOp::PutPermissionsBoundary {
            principal: who,
            policy_arn: b.clone(),
        }),
        (None, Some(_)) => ops.push(IamOp::DeletePermissionsBoundary { principal: who }),
        _ => {}
    }
}

fn plan_iam(change: &Change, baseline: &AwsModel, current: &AwsModel) -> Outcome {
    let Some(key) = aws_key(change) else {
        return unsupported(format!("{} is not an IAM kind", change.object.display()));
    };
    let (then, now): (Option<&AwsObject>, Option<&AwsObject>) =
        (baseline.get(&key), current.get(&key));
    let (Some(then), Some(now)) = (then, now) else {
        return unsupported(format!(
            "the IAM {} was {}; deleting or recreating IAM entities is not planned",
            key.kind.as_str().to_lowercase(),
            change.change.as_str()
        ));
    };
    let mut ops = Vec::new();
    match (&then.parsed, &now.parsed) {
        (AwsBody::User(t), AwsBody::User(n)) => {
            principal_ops(key.kind, &t.principal, &then.raw, &n.principal, &mut ops);
            for g in n.groups.difference(&t.groups) {
                ops.push(IamOp::RemoveUserFromGroup {
                    user: n.principal.name.clone(),
                    group: g.clone(),
                });
            }
            for g in t.groups.difference(&n.groups) {
                ops.push(IamOp::AddUserToGroup {
                    user: n.principal.name.clone(),
                    group: g.clone(),
                });
            }
        }
        (AwsBody::Group(t), AwsBody::Group(n)) => {
            principal_ops(key.kind, t, &then.raw, n, &mut ops);
        }
        (AwsBody::Role(t), AwsBody::Role(n)) => {
            if t.trust != n.trust {
                let document = then
                    .raw
                    .get("AssumeRolePolicyDocument")
                    .map(Value::to_string)
                    .unwrap_or_else(|| r#"{"Version":"2012-10-17","Statement":[]}"#.into());
                ops.push(IamOp::UpdateTrustPolicy {
                    role: n.principal.name.clone(),
                    document,
                });
            }
            principal_ops(key.kind, &t.principal, &then.raw, &n.principal, &mut ops);
        }
        (AwsBody::Policy(t), AwsBody::Policy(n)) => {
            if t.default_version != n.default_version || t.document != n.document {
                // IAM versions are immutable: the baseline's version, if still
                // there, is the baseline document; otherwise it is recreated.
                let kept = now
                    .raw
                    .get("PolicyVersionList")
                    .and_then(Value::as_array)
                    .is_some_and(|vs| {
                        vs.iter().any(|v| {
                            v.get("VersionId").and_then(Value::as_str)
                                == Some(t.default_version.as_str())
                        })
                    });
                if kept && t.default_version != n.default_version {
                    ops.push(IamOp::SetDefaultPolicyVersion {
                        policy_arn: t.arn.clone(),
                        version_id: t.default_version.clone(),
                    });
                } else {
                    let document = then
                        .raw
                        .get("PolicyVersionList")
                        .and_then(Value::as_array)
                        .and_then(|vs| {
                            vs.iter().find(|v| {
                                v.get("VersionId").and_then(Value::as_str)
                                    == Some(t.default_version.as_str())
                            })
                        })
                        .and_then(|v| v.get("Document"))
                        .map(Value::to_string);
                    match document {
                        Some(document) => ops.push(IamOp::CreatePolicyVersion {
                            policy_arn: t.arn.clone(),
                            document,
                        }),
                        None => {
                            return unsupported("the baseline's default version has no document");
                        }
                    }
                }
            }
        }
        _ => return unsupported("the entity changed kind"),
    }
    if ops.is_empty() {
        return unsupported("no IAM operation restores this change");
    }
    ops.sort_by_key(IamOp::rank);
    Outcome::Revert(Ops::Iam(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(name: &str, rv: &str, labels: Value, verbs: &[&str]) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":name,"resourceVersion":rv,"uid":"u-1","labels":labels},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":verbs}]})
    }

    fn crb(name: &str, rv: &str, role: &str, user: &str) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
            "metadata":{"name":name,"resourceVersion":rv},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},
            "subjects":[{"kind":"User","name":user,"apiGroup":"rbac.authorization.k8s.io"}]})
    }

    fn data(objects: &[Value]) -> SourceData {
        let mut model = K8sModel::new();
        for o in objects {
            model.insert(K8sObject::from_raw(o.clone()).unwrap());
        }
        SourceData::Kubernetes(model)
    }

    fn plan(baseline: &[Value], current: &[Value], rules: &PlanRules) -> Vec<Planned> {
        let snap = |objects: &[Value]| {
            let SourceData::Kubernetes(m) = data(objects) else {
                unreachable!()
            };
            let mut s = Snapshot::new();
            s.sources
                .insert("prod".into(), SourceSnapshot::kubernetes("prod", m));
            s
        };
        let options = DiffOptions {
            max_grants: 0,
            ..DiffOptions::default()
        };
        let report = diff(
            &snap(baseline),
            &snap(current),
            Catalog::embedded(),
            &options,
        );
        plan_report(&report, &data(baseline), &data(current), rules)
    }

    fn rules() -> PlanRules {
        PlanRules::from_config(&RevertConfig::default(), &[])
    }

    fn base() -> Vec<Value> {
        vec![
            role("reader", "10", json!({}), &["get"]),
            crb("readers", "11", "reader", "alice"),
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
                "metadata":{"name":"agg","resourceVersion":"12"},
                "aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"to-agg":"true"}}]}}),
            crb("agg-users", "13", "agg", "bob"),
        ]
    }

    #[test]
    fn an_added_binding_is_deleted_on_condition_of_its_version() {
        let mut current = base();
        current.push(crb("oops", "20", "cluster-admin", "mallory"));
        current.push(
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"cluster-admin","resourceVersion":"1"},
            "rules":[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]}),
        );
        let mut baseline = base();
        baseline.push(current[5].clone());
        let planned = plan(&baseline, &current, &rules());
        assert_eq!(planned.len(), 1);
        let Outcome::Revert(Ops::K8s(ops)) = &planned[0].outcome else {
            panic!("{planned:?}")
        };
        assert!(
            matches!(&ops[..], [K8sOp::Delete { key, resource_version: Some(rv), .. }]
            if key.to_string() == "ClusterRoleBinding/oops" && rv == "20")
        );
    }

    #[test]
    fn a_modified_role_gets_its_baseline_rules_back_with_a_precondition() {
        let mut current = base();
        current[0] = role("reader", "30", json!({}), &["get", "list", "delete"]);
        let planned = plan(&base(), &current, &rules());
        let Outcome::Revert(Ops::K8s(ops)) = &planned[0].outcome else {
            panic!("{planned:?}")
        };
        let [
            K8sOp::Replace {
                object,
                resource_version,
                ..
            },
        ] = &ops[..]
        else {
            panic!("{ops:?}")
        };
        assert_eq!(resource_version.as_deref(), Some("30"));
        assert_eq!(object["metadata"]["resourceVersion"], "30");
        assert_eq!(object["rules"][0]["verbs"], json!(["get"]));
        assert!(object["metadata"].get("uid").is_none());
    }

    #[test]
    fn an_added_aggregation_label_is_removed_alone() {
        let mut current = base();
        current[0] = role(
            "reader",
            "31",
            json!({"to-agg":"true","team":"x"}),
            &["get"],
        );
        let mut baseline = base();
        baseline[0] = role("reader", "10", json!({"team":"x"}), &["get"]);
        let planned = plan(&baseline, &current, &rules());
        let widening: Vec<_> = planned
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::Revert(_)))
            .collect();
        assert_eq!(widening.len(), 1, "{planned:?}");
        let Outcome::Revert(Ops::K8s(ops)) = &widening[0].outcome else {
            panic!()
        };
        assert!(
            matches!(&ops[..], [K8sOp::RemoveLabels { labels, resource_version: Some(rv), .. }]
            if labels == &["to-agg".to_owned()] && rv == "31")
        );
    }

    #[test]
    fn narrowing_is_never_reverted() {
        let mut current = base();
        current.remove(1);
        let planned = plan(&base(), &current, &rules());
        assert_eq!(
            planned[0].outcome,
            Outcome::Skip(Skip::NotWidening(Direction::Narrowing))
        );
    }

    #[test]
    fn protected_objects_are_never_planned() {
        let mut current = base();
        current.push(crb("system:oops", "40", "reader", "mallory"));
        current.push(crb("prod-permdrift", "41", "reader", "mallory"));
        current.push(crb("gitops-root", "42", "reader", "mallory"));
        let mut config = RevertConfig::default();
        config.protected.push("ClusterRoleBinding/gitops-*".into());
        let planned = plan(&base(), &current, &PlanRules::from_config(&config, &[]));
        assert_eq!(planned.len(), 3);
        for p in &planned {
            assert_eq!(
                p.outcome.clone(),
                match p.object.as_str() {
                    "ClusterRoleBinding/system:oops" =>
                        Outcome::Skip(Skip::Protected("*/system:*".into())),
                    "ClusterRoleBinding/prod-permdrift" =>
                        Outcome::Skip(Skip::Protected("ClusterRoleBinding/*permdrift*".into())),
                    _ => Outcome::Skip(Skip::Protected("ClusterRoleBinding/gitops-*".into())),
                }
            );
        }
    }

    #[test]
    fn a_latent_only_widening_is_left_alone_unless_opted_in() {
        let mut current = base();
        current.push(role("unbound", "50", json!({}), &["*"]));
        let planned = plan(&base(), &current, &rules());
        assert_eq!(planned[0].outcome, Outcome::Skip(Skip::LatentOnly));
        let config = RevertConfig {
            latent: true,
            ..RevertConfig::default()
        };
        let planned = plan(&base(), &current, &PlanRules::from_config(&config, &[]));
        assert!(matches!(&planned[0].outcome, Outcome::Revert(Ops::K8s(ops))
            if matches!(&ops[..], [K8sOp::Delete { .. }])));
    }

    #[test]
    fn approved_and_allow_listed_widenings_are_kept() {
        let mut current = base();
        current.push(crb("ok", "60", "reader", "carol"));
        let planned = plan(&base(), &current, &rules());
        let mut approved = rules();
        approved
            .approved
            .insert((planned[0].object.clone(), planned[0].digest.clone()));
        let again = plan(&base(), &current, &approved);
        assert_eq!(again[0].outcome, Outcome::Skip(Skip::Approved));
        // Another digest (a wider binding) is not covered by that approval.
        let mut wider = current.clone();
        wider[4] = crb("ok", "61", "reader", "carol");
        wider[4]["subjects"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind":"User","name":"dave","apiGroup":"rbac.authorization.k8s.io"}));
        let third = plan(&base(), &wider, &approved);
        assert!(matches!(third[0].outcome, Outcome::Revert(_)));
        let allow = AllowRule {
            name: "carol-reads".into(),
            reason: None,
            source: None,
            subject: Some("User:carol".into()),
            object: None,
            risks: None,
        };
        let listed = PlanRules::from_config(&RevertConfig::default(), &[allow]);
        let fourth = plan(&base(), &current, &listed);
        assert_eq!(
            fourth[0].outcome,
            Outcome::Skip(Skip::AllowListed("carol-reads".into()))
        );
    }
}
