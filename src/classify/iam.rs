//! Risk tags, severity and witnesses for IAM permission changes.
//!
//! The widening part of an IAM effect comes in (gained allows, dropped
//! denies, trust grants); the tags of DESIGN.md, a severity and a concrete
//! witness come out. Action-based tags are decided on catalog ids, so
//! `iam:*`, `iam:Attach*` and `iam:AttachRolePolicy` all count alike.

use crate::diff::iam::{IamEffect, IamGrant};
use crate::grants::catalog::{AccessLevel, Catalog};
use crate::grants::iam_perm::{ResourcePattern, account_of};
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
            data,
            permissions_management,
            read_only,
            all: catalog.len() as u64,
        }
    }

    fn is_write(&self, grant: &IamGrant) -> bool {
        !grant.actions.unknown.is_empty() || !(&grant.actions.ids - &self.read_only).is_empty()
    }
}

/// Tags one widening grant earns. `wildcard_pattern` says whether a glob
/// spelling produced it (known only to the caller, which has the patterns).
pub fn grant_risks(
    g: &IamGrant,
    sets: &RiskSets,
    role_account: Option<&str>,
    wildcard_pattern: bool,
) -> BTreeSet<Risk> {
    let mut risks = BTreeSet::new();
    if g.trust {
        risks.insert(Risk::TrustWidened);
        if g.subject == "*" {
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
    if ids.len() == sets.all
        && g.key.resource == ResourcePattern::Any("*".into())
        && g.key.condition.is_none()
    {
        risks.insert(Risk::Admin);
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
    effect: &IamEffect,
    sets: &RiskSets,
    role_account: Option<&str>,
    mut wildcard_pattern: impl FnMut(&IamGrant) -> bool,
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
    }
}

/// The most telling widening request: the most severe grant, and in it the
/// most dangerous action.
pub fn witness(
    effect: &IamEffect,
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
    let who = if best.subject == "*" {
        "any AWS principal (*)".to_owned()
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
