//! IAM reverts end to end on a real moto server through the real
//! aws-sdk-iam: each widening made with the SDK, planned from the state the
//! source reads back, run by the reverter and read back again; the reverter
//! run as a user holding only the documented minimal policy, with IAM
//! authorization enforced; and the documented policy equal to the
//! reverter's closed list of calls.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use permdrift::diff::{DiffOptions, diff};
use permdrift::grants::catalog::Catalog;
use permdrift::input::{InputOptions, account_source};
use permdrift::report::Report;
use permdrift::revert::Retry;
use permdrift::revert::aws::{IamCall, IamRevertError, call_of, execute_all};
use permdrift::revert::plan::{IamOp, Ops, Outcome, PlanRules, Planned, PrincipalRef, plan_source};
use permdrift::snapshot::{Snapshot, SourceSnapshot};
use permdrift::source::aws::{AwsSourceOptions, fetch_account};
use serde_json::{Value, json};
use support::moto::{self, ACCOUNT_ID, Moto};

async fn state(opts: &AwsSourceOptions) -> SourceSnapshot {
    let fetch = fetch_account(opts, &|_| {}).await.unwrap();
    account_source(&fetch.account_id, &fetch.document, InputOptions::default()).unwrap()
}

fn report(baseline: &SourceSnapshot, current: &SourceSnapshot) -> Report {
    let one = |s: &SourceSnapshot| {
        let mut snapshot = Snapshot::new();
        snapshot.sources.insert(s.name.clone(), s.clone());
        snapshot
    };
    let options = DiffOptions {
        max_grants: 0,
        ..DiffOptions::default()
    };
    diff(&one(baseline), &one(current), Catalog::embedded(), &options)
}

fn arn(kind: &str, name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:{kind}/{name}")
}

fn iam_ops<'a>(planned: &'a [Planned], object: &str) -> &'a [IamOp] {
    let p = planned
        .iter()
        .find(|p| p.object == object)
        .unwrap_or_else(|| panic!("{object} not planned: {planned:#?}"));
    match &p.outcome {
        Outcome::Revert(Ops::Iam(ops)) => ops,
        other => panic!("{object}: expected IAM ops, got {other:?}"),
    }
}

fn doc(statements: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn allow_all() -> String {
    doc(json!([{"Effect": "Allow", "Action": "*", "Resource": "*"}]))
}

const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";
/// moto loads AWS managed policies (AdministratorAccess) only when asked.
const MANAGED: (&str, &str) = ("MOTO_IAM_LOAD_MANAGED_POLICIES", "true");

async fn run(client: &aws_sdk_iam::Client, planned: &[Planned]) -> Vec<IamCall> {
    let mut calls = Vec::new();
    for p in planned {
        if let Outcome::Revert(Ops::Iam(ops)) = &p.outcome {
            calls.extend(
                execute_all(client, ops)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", p.object)),
            );
        }
    }
    calls
}

/// The six widenings of the issue, each in its own entity.
async fn baseline_entities(iam: &aws_sdk_iam::Client) {
    iam.create_group()
        .group_name("admins")
        .send()
        .await
        .unwrap();
    iam.attach_group_policy()
        .group_name("admins")
        .policy_arn(ADMIN)
        .send()
        .await
        .unwrap();
    for user in ["carol", "dave", "frank"] {
        iam.create_user().user_name(user).send().await.unwrap();
    }
    let s3_read = doc(json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]));
    for name in ["s3-read-boundary", "reports"] {
        iam.create_policy()
            .policy_name(name)
            .policy_document(&s3_read)
            .send()
            .await
            .unwrap();
    }
    iam.attach_user_policy()
        .user_name("frank")
        .policy_arn(arn("policy", "reports"))
        .send()
        .await
        .unwrap();
    let ec2 = doc(
        json!([{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]),
    );
    for role in ["app", "trusted", "bounded"] {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(&ec2)
            .send()
            .await
            .unwrap();
    }
    // moto implements boundaries for roles only (not PutUserPermissionsBoundary).
    iam.put_role_policy()
        .role_name("bounded")
        .policy_name("s3-all")
        .policy_document(doc(
            json!([{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]),
        ))
        .send()
        .await
        .unwrap();
    iam.put_role_permissions_boundary()
        .role_name("bounded")
        .permissions_boundary(arn("policy", "s3-read-boundary"))
        .send()
        .await
        .unwrap();
}

async fn widen(iam: &aws_sdk_iam::Client) {
    iam.attach_user_policy()
        .user_name("dave")
        .policy_arn(ADMIN)
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("app")
        .policy_name("oops")
        .policy_document(allow_all())
        .send()
        .await
        .unwrap();
    iam.create_policy_version()
        .policy_arn(arn("policy", "reports"))
        .policy_document(allow_all())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    iam.update_assume_role_policy()
        .role_name("trusted")
        .policy_document(doc(json!([{"Effect": "Allow", "Principal": {"AWS": "*"},
            "Action": "sts:AssumeRole"}])))
        .send()
        .await
        .unwrap();
    iam.add_user_to_group()
        .user_name("carol")
        .group_name("admins")
        .send()
        .await
        .unwrap();
    iam.delete_role_permissions_boundary()
        .role_name("bounded")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn each_iam_widening_is_reverted_to_the_baseline() {
    let moto = Moto::start(&[MANAGED]);
    let iam = moto.iam();
    let opts = moto.source_options();
    baseline_entities(&iam).await;
    let baseline = state(&opts).await;
    widen(&iam).await;
    let current = state(&opts).await;
    let planned = plan_source(
        &baseline,
        &current,
        &PlanRules::default(),
        Catalog::embedded(),
    );

    let user = |n: &str| PrincipalRef {
        kind: "User".into(),
        name: n.into(),
    };
    assert_eq!(
        iam_ops(&planned, &format!("User {}", arn("user", "dave"))),
        [IamOp::DetachPolicy {
            principal: user("dave"),
            policy_arn: ADMIN.into()
        }]
    );
    assert_eq!(
        iam_ops(&planned, &format!("Role {}", arn("role", "app"))),
        [IamOp::DeleteInlinePolicy {
            principal: PrincipalRef {
                kind: "Role".into(),
                name: "app".into()
            },
            name: "oops".into()
        }]
    );
    assert_eq!(
        iam_ops(&planned, &format!("Policy {}", arn("policy", "reports"))),
        [IamOp::SetDefaultPolicyVersion {
            policy_arn: arn("policy", "reports"),
            version_id: "v1".into()
        }]
    );
    assert!(matches!(
        iam_ops(&planned, &format!("Role {}", arn("role", "trusted"))),
        [IamOp::UpdateTrustPolicy { role, .. }] if role == "trusted"
    ));
    assert_eq!(
        iam_ops(&planned, &format!("User {}", arn("user", "carol"))),
        [IamOp::RemoveUserFromGroup {
            user: "carol".into(),
            group: "admins".into()
        }]
    );
    assert_eq!(
        iam_ops(&planned, &format!("Role {}", arn("role", "bounded"))),
        [IamOp::PutPermissionsBoundary {
            principal: PrincipalRef {
                kind: "Role".into(),
                name: "bounded".into()
            },
            policy_arn: arn("policy", "s3-read-boundary")
        }]
    );

    let calls = run(&iam, &planned).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    // Read back: the account is at its baseline again.
    let after = state(&opts).await;
    let left: Vec<String> = report(&baseline, &after)
        .changes
        .iter()
        .map(|c| format!("{} {}", c.object.display(), c.direction.as_str()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The trust policy is the baseline's, not just equivalent.
    let role = iam.get_role().role_name("trusted").send().await.unwrap();
    let trust = role.role().unwrap().assume_role_policy_document().unwrap();
    let trust = percent_encoding::percent_decode_str(trust)
        .decode_utf8()
        .unwrap();
    assert!(
        trust.contains("ec2.amazonaws.com") && !trust.contains("\"*\""),
        "{trust}"
    );
}

/// The Action list of the JSON block under "Minimal IAM policy for enforce mode".
fn documented_actions() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/approvals.md")).unwrap();
    let section = text
        .split("### Minimal IAM policy for enforce mode")
        .nth(1)
        .unwrap();
    let block = section
        .split("```json")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let policy: Value = serde_json::from_str(block).unwrap();
    let mut actions: Vec<String> = policy["Statement"][0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    actions.sort();
    actions
}

#[test]
fn the_documented_policy_is_exactly_the_calls_the_reverter_can_make() {
    let mut calls: Vec<String> = IamCall::ALL.iter().map(|c| c.action()).collect();
    calls.sort();
    assert_eq!(documented_actions(), calls);
    // Every operation, for every principal kind it applies to, maps into that list.
    let p = |kind: &str| PrincipalRef {
        kind: kind.into(),
        name: "x".into(),
    };
    let mut ops = vec![
        IamOp::UpdateTrustPolicy {
            role: "x".into(),
            document: "{}".into(),
        },
        IamOp::RemoveUserFromGroup {
            user: "x".into(),
            group: "g".into(),
        },
        IamOp::AddUserToGroup {
            user: "x".into(),
            group: "g".into(),
        },
        IamOp::SetDefaultPolicyVersion {
            policy_arn: "a".into(),
            version_id: "v1".into(),
        },
        IamOp::CreatePolicyVersion {
            policy_arn: "a".into(),
            document: "{}".into(),
        },
    ];
    for kind in ["User", "Group", "Role"] {
        ops.extend([
            IamOp::DetachPolicy {
                principal: p(kind),
                policy_arn: "a".into(),
            },
            IamOp::AttachPolicy {
                principal: p(kind),
                policy_arn: "a".into(),
            },
            IamOp::DeleteInlinePolicy {
                principal: p(kind),
                name: "n".into(),
            },
            IamOp::PutInlinePolicy {
                principal: p(kind),
                name: "n".into(),
                document: "{}".into(),
            },
        ]);
    }
    for kind in ["User", "Role"] {
        ops.extend([
            IamOp::PutPermissionsBoundary {
                principal: p(kind),
                policy_arn: "a".into(),
            },
            IamOp::DeletePermissionsBoundary { principal: p(kind) },
        ]);
    }
    let mut used: Vec<IamCall> = ops.iter().map(|op| call_of(op).unwrap()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used, IamCall::ALL);
}

/// A policy document allowing `actions`.
fn allowing(actions: &[String]) -> String {
    doc(json!([{"Effect": "Allow", "Action": actions, "Resource": "*"}]))
}

async fn user_with_keys(iam: &aws_sdk_iam::Client, name: &str, policy: &str) -> (String, String) {
    iam.create_user().user_name(name).send().await.unwrap();
    iam.put_user_policy()
        .user_name(name)
        .policy_name("only")
        .policy_document(policy)
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    (key.access_key_id.clone(), key.secret_access_key.clone())
}

#[tokio::test]
async fn the_reverter_needs_nothing_beyond_the_documented_policy() {
    // moto enforcing IAM authorization after the three calls that make an admin.
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3"), MANAGED]);
    let root = moto.iam();
    root.create_user()
        .user_name("root-admin")
        .send()
        .await
        .unwrap();
    root.put_user_policy()
        .user_name("root-admin")
        .policy_name("all")
        .policy_document(allow_all())
        .send()
        .await
        .unwrap();
    let key = root
        .create_access_key()
        .user_name("root-admin")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let admin = moto.iam_with_keys(&key.access_key_id, &key.secret_access_key);
    moto::set_process_credentials(&key.access_key_id, &key.secret_access_key);
    let opts = AwsSourceOptions {
        profile: Some(moto::PROCESS_PROFILE.into()),
        ..moto.source_options()
    };

    baseline_entities(&admin).await;
    let documented = documented_actions();
    let (id, secret) = user_with_keys(&admin, "permdrift-reverter", &allowing(&documented)).await;
    let missing: Vec<String> = documented
        .iter()
        .filter(|a| *a != "iam:DetachUserPolicy")
        .cloned()
        .collect();
    let (weak_id, weak_secret) =
        user_with_keys(&admin, "permdrift-weak", &allowing(&missing)).await;
    let baseline = state(&opts).await;
    widen(&admin).await;
    let current = state(&opts).await;
    let planned = plan_source(
        &baseline,
        &current,
        &PlanRules::default(),
        Catalog::embedded(),
    );

    // Without one documented action, its call is refused, and not retried.
    let weak = moto.iam_with_keys(&weak_id, &weak_secret);
    let dave = iam_ops(&planned, &format!("User {}", arn("user", "dave")));
    let err = execute_all(&weak, dave).await.unwrap_err();
    assert!(
        matches!(
            err,
            IamRevertError::AccessDenied {
                call: IamCall::DetachUserPolicy,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "forbidden");
    assert_eq!(err.retry(), Retry::Permanent);

    // With exactly the documented policy, every revert goes through.
    let reverter = moto.iam_with_keys(&id, &secret);
    let calls = run(&reverter, &planned).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    let after = state(&opts).await;
    let left: Vec<String> = report(&baseline, &after)
        .changes
        .iter()
        .map(|c| c.object.display())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
