//! Risk tags, severity and witnesses for IAM permission changes.
//!
//! The widening part of an IAM effect comes in (gained allows, dropped
//! denies, trust grants); the risk tags of docs/diff-format.md, a severity and a concrete
//! witness come out. Action-based tags are decided on catalog ids, so
//! `iam:*`, `iam:Attach*` and `iam:AttachRolePolicy` all count alike.

use crate::diff::aws::{AwsEffect, AwsGrant};
use crate::grants::aws_perm::{GrantKey, ResourcePattern, account_of};
use crate::grants::catalog::{AccessLevel, Catalog};
use crate::model::iam_policy::Effect;
use crate::report::{Risk, Severity, Witness};
use roaring::RoaringBitmap;
use std::collections::BTreeSet;

/// Actions that let a principal raise its own (or another's) permissions.
const PRIVILEGE_ESCALATION: [&str; 20] = [
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:AttachUserPolicy",
    "iam:AttachGroupPolicy",
    "iam:AttachRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutGroupPolicy",
    "iam:PutRolePolicy",
    "iam:AddUserToGroup",
    "iam:UpdateAssumeRolePolicy",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:CreateAccessKey",
    "iam:DeleteUserPermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:PutUserPermissionsBoundary",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteUserPolicy",
    "glue:UpdateDevEndpoint",
    "lambda:UpdateFunctionCode",
];

/// Actions that run code under a role the caller passes: with `iam:PassRole`
/// on every role, they run it as any role in the account.
const PASSROLE_TARGETS: [&str; 13] = [
    "lambda:CreateFunction",
    "lambda:UpdateFunctionConfiguration",
    "ec2:RunInstances",
    "ecs:RunTask",
    "ecs:RegisterTaskDefinition",
    "glue:CreateDevEndpoint",
    "glue:CreateJob",
    "cloudformation:CreateStack",
    "datapipeline:CreatePipeline",
    "sagemaker:CreateNotebookInstance",
    "sagemaker:CreateTrainingJob",
    "codebuild:CreateProject",
    "states:CreateStateMachine",
];

/// Web identity providers whose tokens anyone can get (any GitHub
/// repository, any Cognito identity pool, any Google account ...), and the
/// condition keys that narrow a trust to the intended ones.
const OPEN_PROVIDERS: [(&str, &[&str], &str); 6] = [
    (
        "token.actions.githubusercontent.com",
        &["sub"],
        "any GitHub repository",
    ),
    (
        "cognito-identity.amazonaws.com",
        &["aud"],
        "any Cognito identity pool",
    ),
    (
        "accounts.google.com",
        &["aud", "sub", "oaud"],
        "any Google account",
    ),
    ("graph.facebook.com", &["app_id", "id"], "any Facebook user"),
    (
        "www.amazon.com",
        &["app_id", "user_id"],
        "any Login with Amazon user",
    ),
    ("gitlab.com", &["sub"], "any GitLab project"),
];

/// Who can assume a role through a federated trust that no condition narrows:
/// `Some(("any GitHub repository", "sub"))` for a GitHub OIDC trust without a
/// `sub` condition; `None` when the provider is not an open one or a
/// condition restricts it.
pub fn open_federation(
    subject: &str,
    condition: Option<&str>,
) -> Option<(&'static str, &'static str)> {
    let provider = subject.strip_prefix("federated:")?;
    // An OIDC provider is named by ARN (`...:oidc-provider/HOST`) or by host.
    let host = provider
        .rsplit_once(":oidc-provider/")
        .map_or(provider, |(_, h)| h)
        .to_ascii_lowercase();
    let (_, keys, who) = OPEN_PROVIDERS.iter().find(|(h, _, _)| *h == host)?;
    let blocks: Vec<serde_json::Value> = match condition.map(serde_json::from_str) {
        Some(Ok(serde_json::Value::Array(blocks))) => blocks,
        Some(Ok(block)) => vec![block],
        _ => Vec::new(),
    };
    let restricts = |key: &str, values: &serde_json::Value| {
        let key = key.to_ascii_lowercase();
        let named = keys.iter().any(|k| key == format!("{host}:{k}"));
        let values: Vec<&str> = match values {
            serde_json::Value::Array(list) => list.iter().filter_map(|v| v.as_str()).collect(),
            other => other.as_str().into_iter().collect(),
        };
        // `*` or `repo:*` names everyone again.
        named
            && !values.is_empty()
            && values.iter().all(|v| {
                let rest = v.strip_prefix("repo:").unwrap_or(v);
                !rest.is_empty() && !rest.starts_with(['*', '?'])
            })
    };
    let restricted = blocks.iter().filter_map(|b| b.as_object()).any(|ops| {
        ops.iter().any(|(op, conditions)| {
            op.contains("String")
                && !op.contains("Not")
                && conditions
                    .as_object()
                    .is_some_and(|c| c.iter().any(|(k, v)| restricts(k, v)))
        })
    });
    (!restricted).then_some((*who, keys[0]))
}

/// Actions whose response is, or mints, a credential.
const CREDENTIALS: [&str; 22] = [
    "iam:CreateAccessKey",
    "iam:UpdateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:CreateServiceSpecificCredential",
    "iam:ResetServiceSpecificCredential",
    "iam:UploadSSHPublicKey",
    "sts:AssumeRole",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoleWithWebIdentity",
    "sts:GetSessionToken",
    "sts:GetFederationToken",
    "ecr:GetAuthorizationToken",
    "codeartifact:GetAuthorizationToken",
    "ec2:GetPasswordData",
    "lightsail:GetInstanceAccessDetails",
    "lightsail:DownloadDefaultKeyPair",
    "redshift:GetClusterCredentials",
    "rds-db:connect",
    "sso:GetRoleCredentials",
    "cognito-identity:GetCredentialsForIdentity",
    "secretsmanager:GetSecretValue",
];

/// Services whose Read-level actions return stored data rather than configuration.
const DATA_SERVICES: [&str; 22] = [
    "s3",
    "s3-object-lambda",
    "dynamodb",
    "dax",
    "secretsmanager",
    "ssm",
    "rds-data",
    "redshift-data",
    "sqs",
    "kinesis",
    "firehose",
    "logs",
    "athena",
    "es",
    "aoss",
    "glacier",
    "ebs",
    "timestream",
    "kafka-cluster",
    "qldb",
    "codecommit",
    "backup",
];

/// Precomputed action sets for one catalog.
pub struct RiskSets {
    privilege_escalation: RoaringBitmap,
    credentials: RoaringBitmap,
    passrole: RoaringBitmap,
    passrole_targets: RoaringBitmap,
    data: RoaringBitmap,
    permissions_management: RoaringBitmap,
    read_only: RoaringBitmap,
    all: u64,
}

fn ids(catalog: &Catalog, names: &[&str]) -> RoaringBitmap {
    names.iter().filter_map(|n| catalog.id_of(n)).collect()
}

impl RiskSets {
    pub fn new(catalog: &Catalog) -> Self {
        let mut data = ids(catalog, &["kms:Decrypt"]);
        let mut permissions_management = RoaringBitmap::new();
        let mut read_only = RoaringBitmap::new();
        for id in 0..catalog.len() as u32 {
            let Some(action) = catalog.action(id) else {
                continue;
            };
            if action.level == AccessLevel::PermissionsManagement {
                permissions_management.insert(id);
            }
            if action.level.is_read_only() {
                read_only.insert(id);
            }
        }
        for service in DATA_SERVICES {
            if let Some(range) = catalog.service(service) {
                for id in range {
                    if catalog
                        .action(id)
                        .is_some_and(|a| a.level == AccessLevel::Read)
                    {
                        data.insert(id);
                    }
                }
            }
        }
        Self {
            privilege_escalation: ids(catalog, &PRIVILEGE_ESCALATION),
            credentials: ids(catalog, &CREDENTIALS),
            passrole: ids(catalog, &["iam:PassRole"]),
            passrole_targets: ids(catalog, &PASSROLE_TARGETS),
            data,
            permissions_management,
            read_only,
            all: catalog.len() as u64,
        }
    }

    fn is_write(&self, grant: &AwsGrant) -> bool {
        !grant.actions.unknown.is_empty() || !(&grant.actions.ids - &self.read_only).is_empty()
    }
}

/// Tags one widening grant earns. `wildcard_pattern` says whether a glob
/// spelling produced it (known only to the caller, which has the patterns).
pub fn grant_risks(
    g: &AwsGrant,
    sets: &RiskSets,
    role_account: Option<&str>,
    wildcard_pattern: bool,
) -> BTreeSet<Risk> {
    let mut risks = BTreeSet::new();
    if g.trust {
        risks.insert(Risk::TrustWidened);
        if g.subject == "*" || open_federation(&g.subject, g.key.condition.as_deref()).is_some() {
            risks.insert(Risk::TrustPublic);
        } else if let (Some(theirs), Some(ours)) = (account_of(&g.subject), role_account)
            && theirs != ours
        {
            risks.insert(Risk::TrustCrossAccount);
        }
        return risks;
    }
    if g.effect == Effect::Deny {
        risks.insert(Risk::DenyRemoved);
    }
    let ids = &g.actions.ids;
    let any = |set: &RoaringBitmap| !(ids & set).is_empty();
    let everywhere = ResourcePattern::Any("*".into());
    let unconditional_everywhere = GrantKey {
        resource: everywhere.clone(),
        condition: None,
    };
    // `*` on `*` now, whether this grant brings all of it or completes what
    // the principal already held.
    let admin_after = g.holder.as_ref().is_some_and(|h| {
        h.allow
            .get(&unconditional_everywhere)
            .is_some_and(|set| set.ids.len() == sets.all)
    });
    if g.key == unconditional_everywhere
        && g.effect == Effect::Allow
        && (ids.len() == sets.all || admin_after)
    {
        risks.insert(Risk::Admin);
    }
    // PassRole on every role, to a principal that can start code under a
    // passed role, runs that code as any role: an admin one included.
    let every_role = ResourcePattern::Any(format!(
        "arn:aws:iam::{}:role/*",
        role_account.unwrap_or("*")
    ));
    if g.effect == Effect::Allow
        && any(&sets.passrole)
        && g.key.resource.covers(&every_role)
        && g.holder.as_ref().is_some_and(|h| {
            h.allow
                .values()
                .any(|set| !(&set.ids & &sets.passrole_targets).is_empty())
        })
    {
        risks.insert(Risk::PrivilegeEscalation);
    }
    if wildcard_pattern {
        risks.insert(Risk::WildcardAction);
    }
    if g.key.resource == ResourcePattern::Any("*".into()) {
        risks.insert(Risk::WildcardResource);
    }
    if any(&sets.privilege_escalation) {
        risks.insert(Risk::PrivilegeEscalation);
    }
    if any(&sets.passrole) {
        risks.insert(Risk::Passrole);
    }
    if any(&sets.credentials) {
        risks.insert(Risk::CredentialsExposure);
    }
    if any(&sets.data) {
        risks.insert(Risk::DataAccess);
    }
    if any(&sets.permissions_management) {
        risks.insert(Risk::ResourceExposure);
    }
    if g.loosened {
        risks.insert(Risk::ConditionLoosened);
    }
    risks
}

pub fn severity(risks: &BTreeSet<Risk>, any_write: bool) -> Severity {
    let has = |r: &[Risk]| r.iter().any(|x| risks.contains(x));
    if has(&[Risk::Admin, Risk::PrivilegeEscalation, Risk::TrustPublic]) {
        Severity::Critical
    } else if has(&[
        Risk::CredentialsExposure,
        Risk::ResourceExposure,
        Risk::Passrole,
        Risk::TrustCrossAccount,
        Risk::BoundaryRemoved,
        Risk::DenyRemoved,
    ]) {
        Severity::High
    } else if any_write || risks.contains(&Risk::TrustWidened) {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// Tags and severity of a whole change.
pub fn classify(
    effect: &AwsEffect,
    sets: &RiskSets,
    role_account: Option<&str>,
    mut wildcard_pattern: impl FnMut(&AwsGrant) -> bool,
) -> (BTreeSet<Risk>, Severity) {
    let mut risks = BTreeSet::new();
    let mut any_write = false;
    let mut widening = false;
    for g in effect.widening() {
        widening = true;
        risks.extend(grant_risks(g, sets, role_account, wildcard_pattern(g)));
        any_write |= !g.trust && sets.is_write(g);
    }
    if !widening {
        return (BTreeSet::new(), Severity::Info);
    }
    if effect.boundary_removed {
        risks.insert(Risk::BoundaryRemoved);
    }
    let severity = severity(&risks, any_write);
    (risks, severity)
}

/// An instance of a resource pattern: globs filled in, so it reads as one resource.
fn instance(pattern: &ResourcePattern) -> String {
    match pattern {
        ResourcePattern::Any(p) if p == "*" => "*".into(),
        ResourcePattern::Any(p) => p.replace('*', "example").replace('?', "x"),
        ResourcePattern::Not(list) => format!("any resource except {}", list.join(", ")),
        // The narrowest-looking glob, filled in: a reader sees one resource it allows.
        ResourcePattern::Within { all, .. } => all
            .iter()
            .max_by_key(|g| g.len())
            .map(|g| g.replace('*', "example").replace('?', "x"))
            .unwrap_or_default(),
    }
}

/// The most telling widening request: the most severe grant, and in it the
/// most dangerous action.
pub fn witness(
    effect: &AwsEffect,
    sets: &RiskSets,
    catalog: &Catalog,
    role_account: Option<&str>,
    scope: &str,
) -> Option<Witness> {
    let best = effect.widening().max_by_key(|g| {
        let risks = grant_risks(g, sets, role_account, false);
        (severity(&risks, !g.trust && sets.is_write(g)), risks.len())
    })?;
    let ids = &best.actions.ids;
    let preferred = [
        &sets.privilege_escalation,
        &sets.credentials,
        &sets.passrole,
        &sets.permissions_management,
        &sets.data,
    ];
    let id = preferred
        .iter()
        .find_map(|set| (ids & *set).min())
        .or_else(|| (ids - &sets.read_only).min())
        .or_else(|| ids.min());
    let action = match id.and_then(|i| catalog.action(i)) {
        Some(a) => a.name.clone(),
        None => best
            .actions
            .unknown
            .iter()
            .next()
            .cloned()
            .unwrap_or_default(),
    };
    let resource = instance(&best.key.resource);
    let condition = best
        .key
        .condition
        .as_ref()
        .map(|c| format!(" when {c}"))
        .unwrap_or_default();
    let open = open_federation(&best.subject, best.key.condition.as_deref());
    let who = if best.subject == "*" {
        "any AWS principal (*)".to_owned()
    } else if let Some((anyone, key)) = open {
        let provider = best.subject.trim_start_matches("federated:");
        format!("{anyone} (the trust names {provider} with no `{key}` condition)")
    } else {
        best.subject.clone()
    };
    let explanation = match (best.trust, best.effect) {
        (true, _) => {
            format!("{who} can now {action} into {resource}{condition}; before, it could not")
        }
        (false, Effect::Deny) => format!(
            "{} is no longer explicitly denied {action} on {resource}{condition}",
            best.subject
        ),
        (false, Effect::Allow) => format!(
            "{} can now call {action} on {resource}{condition}; before, it could not",
            best.subject
        ),
    };
    Some(Witness {
        subject: best.subject.clone(),
        action,
        resource,
        scope: scope.to_owned(),
        api_group: None,
        explanation,
    })
}
