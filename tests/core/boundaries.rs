//! Permissions boundaries cap resources and conditions, not only actions:
//! `who-can` and the diff against IAM's own evaluation (an identity allow
//! and a boundary allow must both match, and no deny), on a hand-made account.

use crate::support::*;
use permdrift::grants::aws::AwsCache;
use permdrift::grants::catalog::Catalog;
use permdrift::index::aws::{AwsModel, AwsObject};
use permdrift::model::aws::{AwsKey, AwsKind};
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const ACCOUNT: &str = "111122223333";
const BOUNDARY: &str = "arn:aws:iam::111122223333:policy/lambda-builder-boundary";

fn builder_inline() -> Value {
    json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Action":["lambda:*","logs:*","s3:*","dynamodb:*","iam:PassRole"],"Resource":"*"}]})
}

fn builder_boundary() -> Value {
    json!({"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["lambda:*","logs:*"],"Resource":"*"},
        {"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::acme-dev-*"},
        {"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::111122223333:role/lambda-exec-*"}]})
}

/// The role `lambda-builder`, with or without its boundary.
fn lambda_builder(bounded: bool) -> Value {
    let mut role = json!({"RoleName":"lambda-builder","Arn":format!("arn:aws:iam::{ACCOUNT}:role/lambda-builder"),
        "AssumeRolePolicyDocument":{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]},
        "RolePolicyList":[{"PolicyName":"build","PolicyDocument":builder_inline()}],
        "AttachedManagedPolicies":[]});
    if bounded {
        role["PermissionsBoundary"] =
            json!({"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":BOUNDARY});
    }
    account(
        vec![role],
        vec![],
        vec![managed_policy(BOUNDARY, builder_boundary())],
    )
}

/// The requests asked of the account: (action, resource ARN).
const REQUESTS: [(&str, &str); 9] = [
    ("s3:PutObject", "arn:aws:s3:::acme-customer-data/x"),
    ("s3:PutObject", "arn:aws:s3:::acme-dev-builds/x"),
    ("s3:ListBucket", "arn:aws:s3:::acme-dev-builds"),
    ("iam:PassRole", "arn:aws:iam::111122223333:role/admin"),
    (
        "iam:PassRole",
        "arn:aws:iam::111122223333:role/lambda-exec-orders",
    ),
    (
        "lambda:CreateFunction",
        "arn:aws:lambda:eu-west-1:111122223333:function:f",
    ),
    (
        "logs:PutLogEvents",
        "arn:aws:logs:eu-west-1:111122223333:log-group:g",
    ),
    (
        "dynamodb:GetItem",
        "arn:aws:dynamodb:eu-west-1:111122223333:table/orders",
    ),
    (
        "ec2:RunInstances",
        "arn:aws:ec2:eu-west-1:111122223333:instance/*",
    ),
];

/// A glob as IAM matches it (`*` any run, `?` one character), written
/// here from the definition rather than taken from the crate under test.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, _) => text.is_empty(),
        (Some((b'*', rest)), _) => {
            glob(rest, text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some((p, rest)), Some((t, more))) => (*p == b'?' || p == t) && glob(rest, more),
        (Some(_), None) => false,
    }
}

fn listed(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether one unconditional statement matches a concrete request.
fn statement_matches(s: &Value, action: &str, resource: &str) -> bool {
    let action = action.to_ascii_lowercase();
    let action_ok = |list: &[String]| {
        list.iter()
            .any(|p| glob(p.to_ascii_lowercase().as_bytes(), action.as_bytes()))
    };
    let resource_ok =
        |list: &[String]| list.iter().any(|p| glob(p.as_bytes(), resource.as_bytes()));
    let actions = match (s.get("Action"), s.get("NotAction")) {
        (Some(a), _) => action_ok(&listed(a)),
        (None, Some(n)) => !action_ok(&listed(n)),
        _ => false,
    };
    let resources = match (s.get("Resource"), s.get("NotResource")) {
        (Some(r), _) => resource_ok(&listed(r)),
        (None, Some(n)) => !resource_ok(&listed(n)),
        _ => false,
    };
    actions && resources
}

/// IAM's evaluation of one policy document: an allow matches, no deny does.
fn document_allows(doc: &Value, action: &str, resource: &str) -> bool {
    let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
    let effect = |e: &str| {
        statements
            .iter()
            .any(|s| s["Effect"] == e && statement_matches(s, action, resource))
    };
    effect("Allow") && !effect("Deny")
}

/// IAM's evaluation for a principal with one identity document and a boundary.
fn iam_allows(identity: &Value, boundary: Option<&Value>, action: &str, resource: &str) -> bool {
    document_allows(identity, action, resource)
        && boundary.is_none_or(|b| document_allows(b, action, resource))
}

fn who_can(snapshot: &std::path::Path, action: &str, resource: &str) -> BTreeSet<String> {
    let o = permdrift(&[
        "who-can",
        action,
        "--resource",
        resource,
        &snapshot.display().to_string(),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let answers: Value = serde_json::from_slice(&o.stdout).expect("who-can JSON");
    answers
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| a["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn who_can_answers_as_iam_evaluates_the_boundary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = format!("arn:aws:iam::{ACCOUNT}:role/lambda-builder");
    for bounded in [true, false] {
        let path = write(
            dir.path(),
            "account.json",
            &lambda_builder(bounded).to_string(),
        );
        let boundary = builder_boundary();
        for (action, resource) in REQUESTS {
            let expected = iam_allows(
                &builder_inline(),
                bounded.then_some(&boundary),
                action,
                resource,
            );
            let answered = who_can(&path, action, resource).contains(&builder);
            assert_eq!(
                answered, expected,
                "bounded {bounded}: {action} on {resource}"
            );
        }
    }
    // The two the reviewer found, spelled out.
    let path = write(
        dir.path(),
        "account.json",
        &lambda_builder(true).to_string(),
    );
    assert!(who_can(&path, "s3:PutObject", "arn:aws:s3:::acme-customer-data/x").is_empty());
    assert!(
        who_can(
            &path,
            "iam:PassRole",
            "arn:aws:iam::111122223333:role/admin"
        )
        .is_empty()
    );
}

#[test]
fn removing_the_boundary_reports_what_it_held_back() {
    let report = diff_iam(&lambda_builder(true), &lambda_builder(false));
    let c = change(&report, "Role", "lambda-builder");
    assert_eq!(verdict(c), ("widening".into(), "critical".into()));
    let tags = risks(c);
    for tag in [
        "passrole",
        "privilege-escalation",
        "boundary-removed",
        "wildcard-resource",
    ] {
        assert!(tags.contains(&tag.to_owned()), "{tag}: {tags:?}");
    }
    let builder = format!("arn:aws:iam::{ACCOUNT}:role/lambda-builder");
    let mut lines = gained_lines(c);
    lines.sort();
    assert_eq!(
        lines,
        ["dynamodb:*", "iam:PassRole", "s3:*"]
            .iter()
            .map(|a| format!("{builder} {a} *"))
            .collect::<Vec<_>>()
    );
}

/// The AWS managed policy PowerUserAccess (v6); see data/PROVENANCE.md.
fn power_user_access() -> Value {
    json!({"Version":"2012-10-17","Statement":[
        {"NotAction":["iam:*","organizations:*","account:*"],"Resource":"*","Effect":"Allow"},
        {"Action":["account:GetAccountInformation","account:GetPrimaryEmail","account:ListRegions",
            "iam:CreateServiceLinkedRole","iam:DeleteServiceLinkedRole","iam:ListRoles",
            "organizations:DescribeOrganization"],"Resource":"*","Effect":"Allow"}]})
}

fn power_user(boundary: &str) -> Value {
    let pu = "arn:aws:iam::aws:policy/PowerUserAccess";
    let user = json!({"UserName":"dev","Arn":format!("arn:aws:iam::{ACCOUNT}:user/dev"),
        "UserPolicyList":[],"GroupList":[],
        "AttachedManagedPolicies":[{"PolicyName":"PowerUserAccess","PolicyArn":pu}],
        "PermissionsBoundary":{"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":boundary}});
    let narrow = json!({"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"s3:*","Resource":"*"}]});
    let broad = json!({"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:*","ec2:Describe*","iam:Get*"],"Resource":"*"}]});
    account(
        vec![],
        vec![user],
        vec![
            managed_policy(pu, power_user_access()),
            managed_policy("arn:aws:iam::111122223333:policy/narrow", narrow),
            managed_policy("arn:aws:iam::111122223333:policy/broad", broad),
        ],
    )
}

#[test]
fn swapping_a_boundary_gains_only_the_new_intersection() {
    let report = diff_iam(
        &power_user("arn:aws:iam::111122223333:policy/narrow"),
        &power_user("arn:aws:iam::111122223333:policy/broad"),
    );
    let c = change(&report, "User", "dev");
    assert_eq!(verdict(c), ("widening".into(), "low".into()), "{c:#}");
    // ec2:Describe* is within PowerUserAccess; iam:Get* is not (its NotAction
    // excludes iam:*), so the broader boundary gains nothing there.
    let dev = format!("arn:aws:iam::{ACCOUNT}:user/dev");
    assert_eq!(gained_lines(c), [format!("{dev} ec2:Describe* *")]);
}

fn document(statements: Vec<Value>) -> Value {
    json!({"Version":"2012-10-17","Statement":statements})
}

const ACTIONS: &[&str] = &[
    "s3:*",
    "s3:Get*",
    "s3:PutObject",
    "iam:PassRole",
    "dynamodb:*",
    "*",
];
const RESOURCES: &[&str] = &[
    "*",
    "arn:aws:s3:::acme-*",
    "arn:aws:s3:::acme-dev-*",
    "arn:aws:s3:::*-data/*",
    "arn:aws:iam::111122223333:role/lambda-exec-*",
    "arn:aws:iam::111122223333:role/*",
];
const PROBES: [(&str, &str); 8] = [
    ("s3:GetObject", "arn:aws:s3:::acme-dev-logs/a"),
    ("s3:GetObject", "arn:aws:s3:::acme-customer-data/a"),
    ("s3:PutObject", "arn:aws:s3:::other-data/a"),
    ("s3:PutObject", "arn:aws:s3:::acme-dev-x"),
    (
        "iam:PassRole",
        "arn:aws:iam::111122223333:role/lambda-exec-1",
    ),
    ("iam:PassRole", "arn:aws:iam::111122223333:role/admin"),
    (
        "dynamodb:GetItem",
        "arn:aws:dynamodb:eu-west-1:111122223333:table/t",
    ),
    (
        "lambda:InvokeFunction",
        "arn:aws:lambda:eu-west-1:111122223333:function:f",
    ),
];

fn statement() -> impl Strategy<Value = Value> {
    (
        subsequence(ACTIONS, 1..=2),
        subsequence(RESOURCES, 1..=2),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(actions, resources, deny, not_action, not_resource)| {
            let mut s = json!({"Effect": if deny { "Deny" } else { "Allow" }});
            s[if not_action { "NotAction" } else { "Action" }] = json!(actions);
            s[if not_resource {
                "NotResource"
            } else {
                "Resource"
            }] = json!(resources);
            s
        })
}

/// Whether the effective permissions allow a concrete request.
fn effective_allows(model: &AwsModel, key: &AwsKey, action: &str, resource: &str) -> bool {
    let catalog = Catalog::embedded();
    let mut cache = AwsCache::new(model, catalog);
    let perms = cache.principal(key);
    let Some(id) = catalog.id_of(action) else {
        return false;
    };
    let allowed = perms.allow.iter().any(|(k, set)| {
        k.condition.is_none() && k.resource.matches(resource) && set.ids.contains(id)
    });
    let denied = perms.deny.iter().any(|(k, set)| {
        k.condition.is_none() && k.resource.matches(resource) && set.ids.contains(id)
    });
    allowed && !denied
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A boundary never adds a permission; and where the globs decide it,
    /// the capped principal allows exactly what IAM allows: what both the
    /// identity policy and the boundary allow.
    #[test]
    fn a_boundary_never_adds_a_permission(
        identity in proptest::collection::vec(statement(), 1..4),
        boundary in proptest::collection::vec(statement(), 1..4),
    ) {
        let (identity, boundary) = (document(identity), document(boundary));
        let role = |bounded: bool| {
            let mut r = json!({"RoleName":"r","Arn":"arn:aws:iam::111122223333:role/r",
                "RolePolicyList":[{"PolicyName":"i","PolicyDocument":identity}]});
            if bounded {
                r["PermissionsBoundary"] = json!({"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":BOUNDARY});
            }
            r
        };
        let key = AwsKey { kind: AwsKind::Role, arn: "arn:aws:iam::111122223333:role/r".into() };
        let model = |bounded: bool| {
            let mut m = AwsModel::new();
            for (kind, raw) in [(AwsKind::Role, role(bounded)), (AwsKind::Policy, managed_policy(BOUNDARY, boundary.clone()))] {
                let (k, o) = AwsObject::canonical(kind, raw).expect("valid entity");
                m.insert(k, o);
            }
            m
        };
        let (with, without) = (model(true), model(false));
        for (action, resource) in PROBES {
            let capped = effective_allows(&with, &key, action, resource);
            let free = effective_allows(&without, &key, action, resource);
            prop_assert!(!capped || free, "the boundary added {action} on {resource}");
            prop_assert_eq!(
                capped,
                iam_allows(&identity, Some(&boundary), action, resource),
                "{} on {}", action, resource
            );
        }
    }
}
