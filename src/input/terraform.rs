//! Terraform plans (`terraform show -json PLAN`) as input.
//!
//! A plan's JSON comes in; the IAM and RBAC objects it describes come out,
//! in the raw shapes the rest of the input reads (GetAccountAuthorizationDetails
//! entities and RBAC manifests), for the state before the plan (`prior_state`
//! and each `change.before`) or after it (`change.after`), or applied to a
//! live state: each changed resource is undone as it was and redone as it
//! will be, so what Terraform does not manage stays. Alongside: the resource
//! address each object came from, and every value known only after apply
//! (`after_unknown`), reported and never guessed. Pure: no I/O.
//!
//! Terraform splits one IAM principal over many resources (a role, its
//! inline policies, its attachments); they are folded into one entity by
//! name. AWS managed policies appear only as ARNs and are filled in from
//! [`ManagedPolicies`].

use super::managed::{ManagedPolicies, is_aws_managed};
use crate::model::aws::AwsKind;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Whether a JSON document is `terraform show -json` output of a plan.
pub fn is_plan(v: &Value) -> bool {
    v.get("format_version").is_some_and(Value::is_string)
        && v.get("terraform_version").is_some_and(Value::is_string)
        && (v.get("resource_changes").is_some() || v.get("planned_values").is_some())
}

/// Which state of a plan to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlanSide {
    Before,
    #[default]
    After,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{location}: {message}")]
pub struct PlanError {
    /// A resource address and attribute, or a JSON path.
    pub location: String,
    pub message: String,
}

fn plan_error(location: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError {
        location: location.into(),
        message: message.into(),
    }
}

/// A value Terraform knows only after apply.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unknown {
    pub address: String,
    /// Attribute path, e.g. `policy` or `rule[0].verbs`.
    pub attribute: String,
    /// Whether the unknown value could grant access (a policy document, a
    /// rule, a policy ARN), as opposed to an identifier.
    pub possible_widening: bool,
    /// Set when the value is known but names an AWS managed policy whose
    /// document permdrift does not have.
    pub missing_policy: Option<String>,
}

impl Unknown {
    pub fn message(&self) -> String {
        if let Some(arn) = &self.missing_policy {
            format!(
                "possible widening: {} attaches {arn}, an AWS managed policy not in the shipped set, so what it grants is unknown (load a newer set with --managed-policies)",
                self.address
            )
        } else if self.possible_widening {
            format!(
                "possible widening: {} `{}` is known only after apply, so what it grants is unknown",
                self.address, self.attribute
            )
        } else {
            format!(
                "{} `{}` is known only after apply",
                self.address, self.attribute
            )
        }
    }
}

/// The IAM and RBAC objects of one state, in raw input shapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanState {
    /// GetAccountAuthorizationDetails entities.
    pub aws: Vec<(AwsKind, Value)>,
    /// RBAC manifests (`rbac.authorization.k8s.io/v1`).
    pub kube: Vec<Value>,
    /// Object (`Role arn:...`, `ClusterRole/name`) -> resource addresses.
    pub addresses: BTreeMap<String, BTreeSet<String>>,
    /// Values known only after apply (empty for the state before).
    pub unknown: Vec<Unknown>,
    /// Account id read from the plan's ARNs, if any.
    pub account: Option<String>,
}

/// One resource instance of one side of a plan.
struct Resource<'a> {
    address: &'a str,
    kind: &'a str,
    values: &'a Value,
    /// The `after_unknown` tree (after side only).
    unknown: Option<&'a Value>,
}

impl Resource<'_> {
    fn str(&self, name: &str) -> Result<Option<&str>, PlanError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(plan_error(
                format!("{} `{name}`", self.address),
                "expected a string",
            )),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, PlanError> {
        strings_of(self.values.get(name), &format!("{} `{name}`", self.address))
    }

    /// A JSON policy document attribute.
    fn document(&self, name: &str) -> Result<Option<Value>, PlanError> {
        match self.str(name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str::<Value>(text)
                .map(Some)
                .map_err(|e| plan_error(format!("{} `{name}`", self.address), e.to_string())),
        }
    }
}

fn strings_of(v: Option<&Value>, location: &str) -> Result<Vec<String>, PlanError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| plan_error(location, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(plan_error(location, "expected a list of strings")),
    }
}

/// Every `true` leaf of an `after_unknown` tree, as attribute paths.
fn unknown_paths(tree: &Value, prefix: &str, out: &mut Vec<String>) {
    match tree {
        Value::Bool(true) => out.push(prefix.to_owned()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unknown_paths(item, &format!("{prefix}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                unknown_paths(v, &path, out);
            }
        }
        _ => {}
    }
}

/// Attributes that identify or describe an object without granting anything.
fn is_identifier(attribute: &str) -> bool {
    let last = attribute.rsplit('.').next().unwrap_or(attribute);
    matches!(
        last,
        "id" | "arn"
            | "unique_id"
            | "create_date"
            | "policy_id"
            | "tags_all"
            | "uid"
            | "resource_version"
            | "generation"
            | "attachment_count"
    )
}

/// Resource types this module reads.
fn is_supported(kind: &str) -> bool {
    kind.starts_with("aws_iam_") || kind.starts_with("kubernetes_") && rbac_kind(kind).is_some()
}

fn rbac_kind(kind: &str) -> Option<&'static str> {
    match kind.trim_end_matches("_v1") {
        "kubernetes_cluster_role" => Some("ClusterRole"),
        "kubernetes_cluster_role_binding" => Some("ClusterRoleBinding"),
        "kubernetes_role" => Some("Role"),
        "kubernetes_role_binding" => Some("RoleBinding"),
        _ => None,
    }
}

/// A resource as the plan lists it: before and after (either may be absent).
struct Planned<'a> {
    address: &'a str,
    previous_address: Option<&'a str>,
    kind: &'a str,
    before: Option<&'a Value>,
    after: Option<&'a Value>,
    after_unknown: Option<&'a Value>,
    changed: bool,
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Managed resources of `prior_state`, by address, through child modules.
fn prior_resources<'a>(module: &'a Value, out: &mut BTreeMap<&'a str, (&'a str, &'a Value)>) {
    for r in module
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(address), Some(kind)) = (
            r.get("address").and_then(Value::as_str),
            r.get("type").and_then(Value::as_str),
        ) else {
            continue;
        };
        if r.get("mode").and_then(Value::as_str) == Some("data") {
            continue;
        }
        if let Some(values) = non_null(r.get("values")) {
            out.insert(address, (kind, values));
        }
    }
    for child in module
        .get("child_modules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        prior_resources(child, out);
    }
}

/// The plan's resources, each with its before and after.
fn planned(plan: &Value) -> Result<Vec<Planned<'_>>, PlanError> {
    let mut out = Vec::new();
    let changes = match plan.get("resource_changes") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items,
        Some(_) => return Err(plan_error("resource_changes", "expected a list")),
    };
    for (i, rc) in changes.iter().enumerate() {
        let here = format!("resource_changes[{i}]");
        if rc.get("mode").and_then(Value::as_str) == Some("data") {
            continue;
        }
        let address = rc
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| plan_error(&here, "missing `address`"))?;
        let kind = rc
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| plan_error(address, "missing `type`"))?;
        let change = rc
            .get("change")
            .ok_or_else(|| plan_error(address, "missing `change`"))?;
        let actions = strings_of(
            change.get("actions"),
            &format!("{address} `change.actions`"),
        )?;
        out.push(Planned {
            address,
            previous_address: rc.get("previous_address").and_then(Value::as_str),
            kind,
            before: non_null(change.get("before")),
            after: non_null(change.get("after")),
            after_unknown: non_null(change.get("after_unknown")),
            changed: !actions.iter().all(|a| a == "no-op" || a == "read"),
        });
    }
    Ok(out)
}

/// The IAM entities and RBAC objects being built, by name.
#[derive(Default)]
struct Table {
    account: Option<String>,
    aws: BTreeMap<(AwsKind, String), Map<String, Value>>,
    kube: BTreeMap<(String, String, String), Value>,
    addresses: BTreeMap<String, BTreeSet<String>>,
    unknown: BTreeSet<Unknown>,
    /// Policy ARN -> the first resource that attaches it, to name in reports.
    attached_by: BTreeMap<String, String>,
}

/// The account id in an IAM ARN (`arn:aws:iam::ID:...`).
fn account_of(arn: &str) -> Option<&str> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// The first account id found in any ARN-looking string of `v`.
fn find_account(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.starts_with("arn:") => account_of(s).map(str::to_owned),
        Value::Array(items) => items.iter().find_map(find_account),
        Value::Object(map) => map.values().find_map(find_account),
        _ => None,
    }
}

fn path_prefix(path: Option<&str>) -> String {
    match path {
        Some(p) if p.starts_with('/') && p.ends_with('/') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

impl Table {
    fn arn(&self, kind: AwsKind, path: &str, name: &str) -> String {
        // An ARN Terraform does not know yet follows from the account, the
        // path and the name (docs.aws.amazon.com IAM identifiers); the account
        // is the plan's own or, when it names none, left visibly unknown.
        let account = self.account.as_deref().unwrap_or("unknown-account");
        let word = match kind {
            AwsKind::Role => "role",
            AwsKind::User => "user",
            AwsKind::Group => "group",
            AwsKind::Policy => "policy",
        };
        format!("arn:aws:iam::{account}:{word}{path}{name}")
    }

    /// The entity `name` of `kind`, created bare if the plan does not define it.
    fn entity(&mut self, kind: AwsKind, name: &str) -> &mut Map<String, Value> {
        let arn = self.arn(kind, "/", name);
        self.aws.entry((kind, name.to_owned())).or_insert_with(|| {
            let mut m = Map::new();
            m.insert(kind.name_field().into(), Value::String(name.to_owned()));
            m.insert("Arn".into(), Value::String(arn));
            m.insert("Path".into(), Value::String("/".into()));
            if kind == AwsKind::Role {
                m.insert("AssumeRolePolicyDocument".into(), json!({"Statement": []}));
            }
            m
        })
    }

    fn note(&mut self, object: String, address: &str) {
        self.addresses
            .entry(object)
            .or_default()
            .insert(address.to_owned());
    }

    fn note_aws(&mut self, kind: AwsKind, name: &str, address: &str) {
        let arn = self
            .aws
            .get(&(kind, name.to_owned()))
            .and_then(|e| e.get("Arn"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.arn(kind, "/", name));
        self.note(format!("{kind} {arn}"), address);
    }

    fn unknowns(&mut self, r: &Resource<'_>) {
        let Some(tree) = r.unknown else { return };
        let mut paths = Vec::new();
        unknown_paths(tree, "", &mut paths);
        for attribute in paths {
            let possible_widening = !is_identifier(&attribute);
            self.unknown.insert(Unknown {
                address: r.address.to_owned(),
                attribute,
                possible_widening,
                missing_policy: None,
            });
        }
    }

    /// Adds what one resource instance defines.
    fn add(&mut self, r: &Resource<'_>) -> Result<(), PlanError> {
        self.unknowns(r);
        let mut arns = BTreeSet::new();
        for field in [
            "policy_arn",
            "policy_arns",
            "managed_policy_arns",
            "permissions_boundary",
        ] {
            managed_arns(r.values.get(field).unwrap_or(&Value::Null), &mut arns);
        }
        for arn in arns {
            self.attached_by
                .entry(arn)
                .or_insert_with(|| r.address.to_owned());
        }
        if let Some(kind) = rbac_kind(r.kind) {
            return self.add_kube(r, kind);
        }
        match r.kind {
            "aws_iam_role" | "aws_iam_user" | "aws_iam_group" => self.add_principal(r),
            "aws_iam_policy" => self.add_policy(r),
            "aws_iam_role_policy" | "aws_iam_user_policy" | "aws_iam_group_policy" => {
                let (kind, owner) = owner_field(r.kind);
                let Some(owner_name) = r.str(owner)? else {
                    return Ok(());
                };
                let owner_name = owner_name.rsplit(':').next().unwrap_or(owner_name);
                let name = r
                    .str("name")?
                    .map(str::to_owned)
                    .or_else(|| {
                        r.values
                            .get("id")
                            .and_then(Value::as_str)
                            .and_then(|id| id.rsplit(':').next())
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                let Some(document) = r.document("policy")? else {
                    return Ok(());
                };
                self.set_inline(kind, owner_name, &name, Some(document));
                self.note_aws(kind, owner_name, r.address);
                Ok(())
            }
            "aws_iam_role_policy_attachment"
            | "aws_iam_user_policy_attachment"
            | "aws_iam_group_policy_attachment" => {
                let (kind, owner) = owner_field(r.kind);
                if let (Some(owner_name), Some(arn)) = (r.str(owner)?, r.str("policy_arn")?) {
                    self.attach(kind, owner_name, arn, true);
                    self.note_aws(kind, owner_name, r.address);
                }
                Ok(())
            }
            "aws_iam_role_policy_attachments_exclusive"
            | "aws_iam_user_policy_attachments_exclusive"
            | "aws_iam_group_policy_attachments_exclusive" => {
                let (kind, _) = owner_field(r.kind);
                let owner = match kind {
                    AwsKind::Role => "role_name",
                    AwsKind::User => "user_name",
                    _ => "group_name",
                };
                if let Some(owner_name) = r.str(owner)? {
                    let arns = r.strings("policy_arns")?;
                    self.entity(kind, owner_name)
                        .remove("AttachedManagedPolicies");
                    for arn in arns {
                        self.attach(kind, owner_name, &arn, true);
                    }
                    self.note_aws(kind, owner_name, r.address);
                }
                Ok(())
            }
            "aws_iam_policy_attachment" => {
                let Some(arn) = r.str("policy_arn")? else {
                    return Ok(());
                };
                for (kind, field) in [
                    (AwsKind::Role, "roles"),
                    (AwsKind::User, "users"),
                    (AwsKind::Group, "groups"),
                ] {
                    for owner in r.strings(field)? {
                        self.attach(kind, &owner, arn, true);
                        self.note_aws(kind, &owner, r.address);
                    }
                }
                Ok(())
            }
            "aws_iam_user_group_membership" => {
                if let Some(user) = r.str("user")? {
                    for group in r.strings("groups")? {
                        self.join(user, &group, true);
                    }
                    self.note_aws(AwsKind::User, user, r.address);
                }
                Ok(())
            }
            "aws_iam_group_membership" => {
                if let Some(group) = r.str("group")? {
                    for user in r.strings("users")? {
                        self.join(&user, group, true);
                        self.note_aws(AwsKind::User, &user, r.address);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Takes back what one resource instance defined (the before of a change).
    fn remove(
        &mut self,
        r: &Resource<'_>,
        replaced_by: Option<&Resource<'_>>,
    ) -> Result<(), PlanError> {
        if let Some(kind) = rbac_kind(r.kind) {
            let (_, key) = kube_object(r, kind)?;
            self.kube.remove(&key);
            return Ok(());
        }
        match r.kind {
            "aws_iam_role" | "aws_iam_user" | "aws_iam_group" | "aws_iam_policy" => {
                let kind = principal_kind(r.kind);
                let name = r.str("name")?;
                let kept = replaced_by.and_then(|a| a.str("name").ok().flatten());
                // An update in place keeps the entity (its inline policies and
                // attachments may come from other resources); a delete or a
                // rename takes it away.
                if let Some(name) = name
                    && kept != Some(name)
                {
                    self.aws.remove(&(kind, name.to_owned()));
                }
                Ok(())
            }
            "aws_iam_role_policy" | "aws_iam_user_policy" | "aws_iam_group_policy" => {
                let (kind, owner) = owner_field(r.kind);
                if let (Some(owner_name), Some(name)) = (r.str(owner)?, r.str("name")?) {
                    self.set_inline(kind, owner_name, name, None);
                }
                Ok(())
            }
            "aws_iam_role_policy_attachment"
            | "aws_iam_user_policy_attachment"
            | "aws_iam_group_policy_attachment" => {
                let (kind, owner) = owner_field(r.kind);
                if let (Some(owner_name), Some(arn)) = (r.str(owner)?, r.str("policy_arn")?) {
                    self.attach(kind, owner_name, arn, false);
                }
                Ok(())
            }
            "aws_iam_policy_attachment" => {
                let Some(arn) = r.str("policy_arn")? else {
                    return Ok(());
                };
                for (kind, field) in [
                    (AwsKind::Role, "roles"),
                    (AwsKind::User, "users"),
                    (AwsKind::Group, "groups"),
                ] {
                    for owner in r.strings(field)? {
                        self.attach(kind, &owner, arn, false);
                    }
                }
                Ok(())
            }
            "aws_iam_user_group_membership" => {
                if let Some(user) = r.str("user")? {
                    for group in r.strings("groups")? {
                        self.join(user, &group, false);
                    }
                }
                Ok(())
            }
            "aws_iam_group_membership" => {
                if let Some(group) = r.str("group")? {
                    for user in r.strings("users")? {
                        self.join(&user, group, false);
                    }
                }
                Ok(())
            }
            // The exclusive attachment sets are replaced whole by their after.
            _ => Ok(()),
        }
    }

    fn add_principal(&mut self, r: &Resource<'_>) -> Result<(), PlanError> {
        let kind = principal_kind(r.kind);
        let Some(name) = r.str("name")? else {
            return Ok(());
        };
        let path = path_prefix(r.str("path")?);
        let arn = match r.str("arn")? {
            Some(arn) => arn.to_owned(),
            None => self.arn(kind, &path, name),
        };
        let trust = if kind == AwsKind::Role {
            Some(
                r.document("assume_role_policy")?
                    .unwrap_or_else(|| json!({"Statement": []})),
            )
        } else {
            None
        };
        let boundary = r.str("permissions_boundary")?.map(str::to_owned);
        let entity = self.entity(kind, name);
        entity.insert("Arn".into(), Value::String(arn));
        entity.insert("Path".into(), Value::String(path));
        if let Some(trust) = trust {
            entity.insert("AssumeRolePolicyDocument".into(), trust);
        }
        match boundary {
            Some(b) => entity.insert(
                "PermissionsBoundary".into(),
                json!({"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": b}),
            ),
            None => entity.remove("PermissionsBoundary"),
        };
        // `inline_policy` blocks and `managed_policy_arns`, where set, are
        // the role's whole inline and attached sets.
        let inline = r.values.get("inline_policy").and_then(Value::as_array);
        if let Some(blocks) = inline.filter(|b| !b.is_empty()) {
            let mut list = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some(text) = block.get("policy").and_then(Value::as_str) else {
                    continue;
                };
                if name.is_empty() || text.is_empty() {
                    continue;
                }
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    plan_error(
                        format!("{} `inline_policy[{i}].policy`", r.address),
                        e.to_string(),
                    )
                })?;
                list.push(json!({"PolicyName": name, "PolicyDocument": doc}));
            }
            self.entity(kind, name)
                .insert(inline_list(kind).into(), Value::Array(list));
        }
        let managed = r.strings("managed_policy_arns")?;
        if !managed.is_empty() {
            self.entity(kind, name).remove("AttachedManagedPolicies");
            for arn in managed {
                self.attach(kind, name, &arn, true);
            }
        }
        self.note_aws(kind, name, r.address);
        Ok(())
    }

    fn add_policy(&mut self, r: &Resource<'_>) -> Result<(), PlanError> {
        let Some(name) = r.str("name")? else {
            return Ok(());
        };
        let path = path_prefix(r.str("path")?);
        let arn = match r.str("arn")? {
            Some(arn) => arn.to_owned(),
            None => self.arn(AwsKind::Policy, &path, name),
        };
        // An unknown document grants nothing here; `unknowns` reports it.
        let document = r
            .document("policy")?
            .unwrap_or_else(|| json!({"Statement": []}));
        let entity = self.entity(AwsKind::Policy, name);
        entity.insert("Arn".into(), Value::String(arn));
        entity.insert("Path".into(), Value::String(path));
        // Terraform keeps one version of a policy: the default one.
        entity.insert("DefaultVersionId".into(), Value::String("v1".into()));
        entity.insert(
            "PolicyVersionList".into(),
            json!([{"VersionId": "v1", "IsDefaultVersion": true, "Document": document}]),
        );
        self.note_aws(AwsKind::Policy, name, r.address);
        Ok(())
    }

    fn set_inline(&mut self, kind: AwsKind, owner: &str, name: &str, doc: Option<Value>) {
        let entity = self.entity(kind, owner);
        let list = entity
            .entry(inline_list(kind))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.retain(|p| p.get("PolicyName").and_then(Value::as_str) != Some(name));
            if let Some(doc) = doc {
                items.push(json!({"PolicyName": name, "PolicyDocument": doc}));
            }
        }
    }

    fn attach(&mut self, kind: AwsKind, owner: &str, arn: &str, on: bool) {
        let entity = self.entity(kind, owner);
        let list = entity
            .entry("AttachedManagedPolicies")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.retain(|p| p.get("PolicyArn").and_then(Value::as_str) != Some(arn));
            if on {
                let name = arn.rsplit('/').next().unwrap_or(arn);
                items.push(json!({"PolicyName": name, "PolicyArn": arn}));
            }
        }
    }

    fn join(&mut self, user: &str, group: &str, on: bool) {
        let entity = self.entity(AwsKind::User, user);
        let list = entity
            .entry("GroupList")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.retain(|g| g.as_str() != Some(group));
            if on {
                items.push(Value::String(group.to_owned()));
            }
        }
        self.entity(AwsKind::Group, group);
    }

    fn add_kube(&mut self, r: &Resource<'_>, kind: &str) -> Result<(), PlanError> {
        let (object, key) = kube_object(r, kind)?;
        let display = match &key.1 {
            ns if ns.is_empty() => format!("{}/{}", key.0, key.2),
            ns => format!("{}/{ns}/{}", key.0, key.2),
        };
        self.note(display, r.address);
        self.kube.insert(key, object);
        Ok(())
    }

    /// Fills in every attached AWS managed policy the state does not hold,
    /// and reports those the set does not know.
    fn managed(&mut self, managed: &ManagedPolicies, also: BTreeSet<String>) {
        let mut attached = also;
        for ((kind, _), entity) in &self.aws {
            if *kind == AwsKind::Policy {
                continue;
            }
            for p in entity
                .get("AttachedManagedPolicies")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(arn) = p.get("PolicyArn").and_then(Value::as_str) {
                    attached.insert(arn.to_owned());
                }
            }
            if let Some(arn) = entity
                .get("PermissionsBoundary")
                .and_then(|b| b.get("PermissionsBoundaryArn"))
                .and_then(Value::as_str)
            {
                attached.insert(arn.to_owned());
            }
        }
        let held: BTreeSet<String> = self
            .aws
            .iter()
            .filter(|((kind, _), _)| *kind == AwsKind::Policy)
            .filter_map(|(_, e)| e.get("Arn").and_then(Value::as_str).map(str::to_owned))
            .collect();
        for arn in attached {
            if held.contains(&arn) || !is_aws_managed(&arn) {
                continue;
            }
            match managed.get(&arn).and_then(Value::as_object) {
                Some(entry) => {
                    let name = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
                    self.aws.insert((AwsKind::Policy, name), entry.clone());
                }
                None => {
                    self.unknown.insert(Unknown {
                        address: self
                            .attached_by
                            .get(&arn)
                            .cloned()
                            .unwrap_or_else(|| arn.clone()),
                        attribute: "policy_arn".into(),
                        possible_widening: true,
                        missing_policy: Some(arn.clone()),
                    });
                }
            }
        }
    }

    fn finish(self) -> PlanState {
        let mut aws: Vec<(AwsKind, Value)> = self
            .aws
            .into_iter()
            .map(|((kind, _), e)| (kind, Value::Object(e)))
            .collect();
        aws.sort_by(|a, b| {
            (a.0, a.1.get("Arn").and_then(Value::as_str))
                .cmp(&(b.0, b.1.get("Arn").and_then(Value::as_str)))
        });
        PlanState {
            aws,
            kube: self.kube.into_values().collect(),
            addresses: self.addresses,
            unknown: self.unknown.into_iter().collect(),
            account: self.account,
        }
    }
}

/// Every AWS managed policy ARN anywhere in `v`.
fn managed_arns(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if is_aws_managed(s) => {
            out.insert(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|i| managed_arns(i, out)),
        Value::Object(map) => map.values().for_each(|i| managed_arns(i, out)),
        _ => {}
    }
}

fn principal_kind(kind: &str) -> AwsKind {
    match kind {
        "aws_iam_user" => AwsKind::User,
        "aws_iam_group" => AwsKind::Group,
        "aws_iam_policy" => AwsKind::Policy,
        _ => AwsKind::Role,
    }
}

/// The principal kind a fragment resource belongs to, and the attribute naming it.
fn owner_field(kind: &str) -> (AwsKind, &'static str) {
    if kind.starts_with("aws_iam_user") {
        (AwsKind::User, "user")
    } else if kind.starts_with("aws_iam_group") {
        (AwsKind::Group, "group")
    } else {
        (AwsKind::Role, "role")
    }
}

fn inline_list(kind: AwsKind) -> &'static str {
    match kind {
        AwsKind::User => "UserPolicyList",
        AwsKind::Group => "GroupPolicyList",
        _ => "RolePolicyList",
    }
}

/// A single nested block: the provider writes it as a one-element list.
fn block(v: Option<&Value>) -> Option<&Value> {
    match v {
        Some(Value::Array(items)) => items.first(),
        Some(Value::Object(_)) => v,
        _ => None,
    }
}

fn camel(v: Option<&Value>) -> Option<Value> {
    non_null(v)
        .filter(|v| !matches!(v, Value::Array(a) if a.is_empty()))
        .filter(|v| !matches!(v, Value::Object(m) if m.is_empty()))
        .filter(|v| !matches!(v, Value::String(s) if s.is_empty()))
        .cloned()
}

/// The RBAC manifest of a `kubernetes_*role*` resource and its key.
fn kube_object(
    r: &Resource<'_>,
    kind: &str,
) -> Result<(Value, (String, String, String)), PlanError> {
    let meta = block(r.values.get("metadata"))
        .ok_or_else(|| plan_error(format!("{} `metadata`", r.address), "missing"))?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| plan_error(format!("{} `metadata.name`", r.address), "missing"))?;
    let namespaced = matches!(kind, "Role" | "RoleBinding");
    let namespace = if namespaced {
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
    } else {
        ""
    };
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    if namespaced {
        metadata.insert("namespace".into(), json!(namespace));
    }
    for field in ["labels", "annotations"] {
        if let Some(v) = camel(meta.get(field)) {
            metadata.insert(field.into(), v);
        }
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("rbac.authorization.k8s.io/v1"));
    object.insert("kind".into(), json!(kind));
    object.insert("metadata".into(), Value::Object(metadata));
    if matches!(kind, "Role" | "ClusterRole") {
        let mut rules = Vec::new();
        for rule in r
            .values
            .get("rule")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut out = Map::new();
            for (from, to) in [
                ("api_groups", "apiGroups"),
                ("resources", "resources"),
                ("resource_names", "resourceNames"),
                ("verbs", "verbs"),
                ("non_resource_urls", "nonResourceURLs"),
            ] {
                if let Some(v) = camel(rule.get(from)) {
                    out.insert(to.into(), v);
                }
            }
            rules.push(Value::Object(out));
        }
        object.insert("rules".into(), Value::Array(rules));
        if let Some(agg) = block(r.values.get("aggregation_rule")) {
            let mut selectors = Vec::new();
            for s in agg
                .get("cluster_role_selectors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut sel = Map::new();
                if let Some(v) = camel(s.get("match_labels")) {
                    sel.insert("matchLabels".into(), v);
                }
                if let Some(v) = camel(s.get("match_expressions")) {
                    sel.insert("matchExpressions".into(), v);
                }
                selectors.push(Value::Object(sel));
            }
            object.insert(
                "aggregationRule".into(),
                json!({"clusterRoleSelectors": selectors}),
            );
        }
    } else {
        let role_ref = block(r.values.get("role_ref"))
            .ok_or_else(|| plan_error(format!("{} `role_ref`", r.address), "missing"))?;
        object.insert(
            "roleRef".into(),
            json!({
                "apiGroup": role_ref.get("api_group").cloned().unwrap_or(json!("rbac.authorization.k8s.io")),
                "kind": role_ref.get("kind").cloned().unwrap_or(Value::Null),
                "name": role_ref.get("name").cloned().unwrap_or(Value::Null),
            }),
        );
        let mut subjects = Vec::new();
        for s in r
            .values
            .get("subject")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut out = Map::new();
            for (from, to) in [
                ("kind", "kind"),
                ("name", "name"),
                ("namespace", "namespace"),
                ("api_group", "apiGroup"),
            ] {
                if let Some(v) = camel(s.get(from)) {
                    out.insert(to.into(), v);
                }
            }
            subjects.push(Value::Object(out));
        }
        object.insert("subjects".into(), Value::Array(subjects));
    }
    Ok((
        Value::Object(object),
        (kind.to_owned(), namespace.to_owned(), name.to_owned()),
    ))
}

/// The resources of one side of a plan, in the order they are added:
/// principals and policies first, then what refers to them.
fn side(plan: &Value, which: PlanSide) -> Result<Vec<Resource<'_>>, PlanError> {
    let changes = planned(plan)?;
    let mut prior = BTreeMap::new();
    if let Some(root) = plan
        .get("prior_state")
        .and_then(|s| s.get("values"))
        .and_then(|v| v.get("root_module"))
    {
        prior_resources(root, &mut prior);
    }
    let mut out = Vec::new();
    // What the plan does not list (or lists under a new address after a
    // `moved` block) is the same before and after.
    let mut listed: BTreeSet<&str> = changes.iter().map(|c| c.address).collect();
    listed.extend(changes.iter().filter_map(|c| c.previous_address));
    for (address, (kind, values)) in &prior {
        if !listed.contains(address) && is_supported(kind) {
            out.push(Resource {
                address,
                kind,
                values,
                unknown: None,
            });
        }
    }
    for c in &changes {
        let values = match which {
            PlanSide::Before => c.before,
            PlanSide::After => c.after,
        };
        if let Some(values) = values
            && is_supported(c.kind)
        {
            out.push(Resource {
                address: c.address,
                kind: c.kind,
                values,
                unknown: (which == PlanSide::After)
                    .then_some(c.after_unknown)
                    .flatten(),
            });
        }
    }
    out.sort_by_key(|r| order(r.kind));
    Ok(out)
}

fn order(kind: &str) -> u8 {
    match kind {
        "aws_iam_role" | "aws_iam_user" | "aws_iam_group" | "aws_iam_policy" => 0,
        k if k.ends_with("_exclusive") => 2,
        _ => 1,
    }
}

/// One state of a plan, built from the plan alone.
pub fn state(
    plan: &Value,
    which: PlanSide,
    managed: &ManagedPolicies,
) -> Result<PlanState, PlanError> {
    let mut table = Table {
        account: find_account(plan),
        ..Table::default()
    };
    let resources = side(plan, which)?;
    for r in &resources {
        table.add(r)?;
    }
    // Managed policies either side names are in both, so that attaching
    // one reads as a change to the principal, not as a policy appearing.
    let mut named = BTreeSet::new();
    managed_arns(
        plan.get("resource_changes").unwrap_or(&Value::Null),
        &mut named,
    );
    table.managed(managed, named);
    Ok(table.finish())
}

/// A live state (raw entities and manifests) with the plan applied: each
/// changed resource is taken back as it was and added as it will be.
pub fn apply(
    plan: &Value,
    live_aws: Vec<(AwsKind, Value)>,
    live_kube: Vec<Value>,
    managed: &ManagedPolicies,
) -> Result<PlanState, PlanError> {
    let mut table = Table {
        account: find_account(plan),
        ..Table::default()
    };
    for (kind, raw) in live_aws {
        if table.account.is_none() {
            table.account = find_account(raw.get("Arn").unwrap_or(&Value::Null));
        }
        let name = crate::model::aws::name_of(kind, &raw);
        if let Value::Object(map) = raw {
            table.aws.insert((kind, name), map);
        }
    }
    for raw in live_kube {
        let kind = raw
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let meta = raw.get("metadata");
        let field = |f: &str| {
            meta.and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let key = (kind, field("namespace"), field("name"));
        table.kube.insert(key, raw);
    }
    let changes: Vec<Planned<'_>> = planned(plan)?
        .into_iter()
        .filter(|c| c.changed && is_supported(c.kind))
        .collect();
    // Take back every before, then add every after, principals first.
    let mut befores: Vec<(Resource<'_>, Option<Resource<'_>>)> = Vec::new();
    let mut afters: Vec<Resource<'_>> = Vec::new();
    for c in &changes {
        let after = c.after.map(|v| Resource {
            address: c.address,
            kind: c.kind,
            values: v,
            unknown: c.after_unknown,
        });
        if let Some(before) = c.before {
            let replaced_by = c.after.map(|v| Resource {
                address: c.address,
                kind: c.kind,
                values: v,
                unknown: None,
            });
            befores.push((
                Resource {
                    address: c.address,
                    kind: c.kind,
                    values: before,
                    unknown: None,
                },
                replaced_by,
            ));
        }
        if let Some(after) = after {
            afters.push(after);
        }
    }
    befores.sort_by_key(|(r, _)| std::cmp::Reverse(order(r.kind)));
    for (r, replaced_by) in &befores {
        table.remove(r, replaced_by.as_ref())?;
    }
    afters.sort_by_key(|r| order(r.kind));
    for r in &afters {
        table.add(r)?;
    }
    table.managed(managed, BTreeSet::new());
    Ok(table.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of the given `(address, type, before, after, after_unknown)` changes.
    fn plan(changes: &[(&str, &str, Value, Value, Value)]) -> Value {
        let changes: Vec<Value> = changes
            .iter()
            .map(|(address, kind, before, after, unknown)| {
                json!({
                    "address": address, "mode": "managed", "type": kind,
                    "name": address.rsplit('.').next(),
                    "change": {
                        "actions": [match (before.is_null(), after.is_null()) {
                            (true, _) => "create", (_, true) => "delete", _ => "update" }],
                        "before": before, "after": after, "after_unknown": unknown,
                    }
                })
            })
            .collect();
        json!({"format_version": "1.2", "terraform_version": "1.9.5", "resource_changes": changes})
    }

    fn entity<'a>(state: &'a PlanState, kind: AwsKind, name: &str) -> &'a Value {
        state
            .aws
            .iter()
            .find(|(k, e)| *k == kind && crate::model::aws::name_of(*k, e) == name)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", state.aws))
    }

    const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;

    #[test]
    fn users_groups_memberships_boundaries_and_exclusive_attachments_fold_into_entities() {
        let p = plan(&[
            (
                "aws_iam_user.alice",
                "aws_iam_user",
                Value::Null,
                json!({"name": "alice", "path": "/eng/", "arn": "arn:aws:iam::111122223333:user/eng/alice",
                    "permissions_boundary": "arn:aws:iam::111122223333:policy/boundary"}),
                json!({}),
            ),
            (
                "aws_iam_group.eng",
                "aws_iam_group",
                Value::Null,
                json!({"name": "eng", "path": "/"}),
                json!({"arn": true}),
            ),
            (
                "aws_iam_group_policy.read",
                "aws_iam_group_policy",
                Value::Null,
                json!({"group": "eng", "name": "read", "policy": DOC}),
                json!({}),
            ),
            (
                "aws_iam_user_group_membership.alice",
                "aws_iam_user_group_membership",
                Value::Null,
                json!({"user": "alice", "groups": ["eng"]}),
                json!({}),
            ),
            (
                "aws_iam_role_policy_attachment.old",
                "aws_iam_role_policy_attachment",
                Value::Null,
                json!({"role": "ci", "policy_arn": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"}),
                json!({}),
            ),
            (
                "aws_iam_role_policy_attachments_exclusive.ci",
                "aws_iam_role_policy_attachments_exclusive",
                Value::Null,
                json!({"role_name": "ci", "policy_arns": ["arn:aws:iam::aws:policy/AdministratorAccess"]}),
                json!({}),
            ),
        ]);
        let after = state(&p, PlanSide::After, ManagedPolicies::embedded()).unwrap();
        let alice = entity(&after, AwsKind::User, "alice");
        assert_eq!(alice["Arn"], "arn:aws:iam::111122223333:user/eng/alice");
        assert_eq!(alice["GroupList"], json!(["eng"]));
        assert_eq!(
            alice["PermissionsBoundary"]["PermissionsBoundaryArn"],
            "arn:aws:iam::111122223333:policy/boundary"
        );
        let eng = entity(&after, AwsKind::Group, "eng");
        // The ARN Terraform does not know yet: the plan's account, path, name.
        assert_eq!(eng["Arn"], "arn:aws:iam::111122223333:group/eng");
        assert_eq!(eng["GroupPolicyList"][0]["PolicyName"], "read");
        // The exclusive set replaces the attachment made elsewhere.
        let ci = entity(&after, AwsKind::Role, "ci");
        assert_eq!(
            ci["AttachedManagedPolicies"],
            json!([{"PolicyName": "AdministratorAccess", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}])
        );
        // Both managed policies the plan names are in the state, so the
        // attachment, not the policy, is what changes.
        entity(&after, AwsKind::Policy, "AdministratorAccess");
        entity(&after, AwsKind::Policy, "AmazonS3ReadOnlyAccess");
        let before = state(&p, PlanSide::Before, ManagedPolicies::embedded()).unwrap();
        assert_eq!(before.aws.len(), 2, "{:#?}", before.aws);
        // Only the group's ARN was unknown, and it grants nothing.
        assert_eq!(
            after.unknown,
            [Unknown {
                address: "aws_iam_group.eng".into(),
                attribute: "arn".into(),
                possible_widening: false,
                missing_policy: None,
            }]
        );
        assert!(
            after.addresses["User arn:aws:iam::111122223333:user/eng/alice"]
                .contains("aws_iam_user_group_membership.alice")
        );
    }

    #[test]
    fn kubernetes_resources_become_rbac_manifests() {
        let p = plan(&[
            (
                "kubernetes_cluster_role.agg",
                "kubernetes_cluster_role",
                Value::Null,
                json!({"metadata": [{"name": "agg", "labels": {"a": "b"}}], "rule": [],
                    "aggregation_rule": [{"cluster_role_selectors": [{"match_labels": {"rbac.example.com/aggregate": "true"}, "match_expressions": []}]}]}),
                json!({}),
            ),
            (
                "kubernetes_role_binding_v1.rb",
                "kubernetes_role_binding_v1",
                Value::Null,
                json!({"metadata": [{"name": "rb", "namespace": ""}],
                    "role_ref": [{"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}],
                    "subject": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ci", "api_group": ""}]}),
                json!({}),
            ),
        ]);
        let after = state(&p, PlanSide::After, ManagedPolicies::embedded()).unwrap();
        assert_eq!(after.kube.len(), 2);
        let agg = after
            .kube
            .iter()
            .find(|o| o["kind"] == "ClusterRole")
            .unwrap();
        assert_eq!(
            agg["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.example.com/aggregate"],
            "true"
        );
        assert_eq!(agg["metadata"]["labels"]["a"], "b");
        let rb = after
            .kube
            .iter()
            .find(|o| o["kind"] == "RoleBinding")
            .unwrap();
        // No namespace: `default`, as the provider does.
        assert_eq!(rb["metadata"]["namespace"], "default");
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "ci"}])
        );
        assert!(after.addresses.contains_key("RoleBinding/default/rb"));
    }

    #[test]
    fn unknown_paths_are_listed_and_judged() {
        let mut paths = Vec::new();
        unknown_paths(
            &json!({"id": true, "rule": [{"verbs": [false, true]}], "metadata": [{"uid": true}], "x": false}),
            "",
            &mut paths,
        );
        assert_eq!(paths, ["id", "metadata[0].uid", "rule[0].verbs[1]"]);
        assert!(is_identifier("metadata[0].uid") && is_identifier("arn"));
        assert!(!is_identifier("rule[0].verbs[1]") && !is_identifier("policy"));
    }

    #[test]
    fn what_is_not_a_plan_is_not_taken_for_one() {
        assert!(is_plan(
            &json!({"format_version": "1.2", "terraform_version": "1.9.5", "planned_values": {}})
        ));
        assert!(!is_plan(&json!({"format_version": "1.0", "values": {}})));
        assert!(!is_plan(&json!({"kind": "List", "items": []})));
    }

    #[test]
    fn a_managed_policy_outside_the_shipped_set_is_a_possible_widening() {
        // The vendored set holds about half of AWS's managed policies.
        let arn = "arn:aws:iam::aws:policy/ReadOnlyAccess";
        let p = plan(&[(
            "aws_iam_user_policy_attachment.ro",
            "aws_iam_user_policy_attachment",
            Value::Null,
            json!({"user": "bob", "policy_arn": arn}),
            json!({}),
        )]);
        let after = state(&p, PlanSide::After, ManagedPolicies::embedded()).unwrap();
        assert!(!after.aws.iter().any(|(k, _)| *k == AwsKind::Policy));
        assert_eq!(after.unknown.len(), 1);
        assert!(after.unknown[0].possible_widening);
        assert_eq!(after.unknown[0].missing_policy.as_deref(), Some(arn));
        assert!(after.unknown[0].message().contains("--managed-policies"));
        assert_eq!(
            after.unknown[0].address,
            "aws_iam_user_policy_attachment.ro"
        );
    }

    #[test]
    fn a_malformed_plan_names_where() {
        let bad = json!({"format_version": "1.2", "terraform_version": "1", "resource_changes": [{"mode": "managed"}]});
        let e = state(&bad, PlanSide::After, ManagedPolicies::embedded()).unwrap_err();
        assert_eq!(e.to_string(), "resource_changes[0]: missing `address`");
    }
}
