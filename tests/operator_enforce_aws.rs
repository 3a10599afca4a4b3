//! Enforce mode on an AWS account: a real `permdrift run` polling moto
//! through the real aws-sdk-iam, reverting each widening with the IAM
//! reverter (src/revert/aws.rs) after the poll that judged it, and telling
//! the story in the journal (change, revert-intent, revert-result, close as
//! `reverted` once a later poll reads the baseline again).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::moto::{self, Moto};
use support::operator::{Operator, assert_store_verifies, journal, scratch};

const WAIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";

fn story(store: &Path, object: &str) -> Vec<String> {
    journal(store)
        .iter()
        .filter(|r| r["body"]["object"] == object)
        .map(|r| {
            let kind = r["kind"].as_str().unwrap_or_default();
            match kind {
                "close" | "revert-result" => {
                    format!(
                        "{kind}:{}",
                        r["body"]["reason"].as_str().unwrap_or_default()
                    )
                }
                _ => kind.to_owned(),
            }
        })
        .collect()
}

fn ops_of(store: &Path, object: &str) -> Vec<Value> {
    journal(store)
        .into_iter()
        .filter(|r| r["kind"] == "revert-intent" && r["body"]["object"] == object)
        .map(|r| r["body"]["ops"].clone())
        .collect()
}

/// Polls moto (an independent reader) until `done`; how long it took.
fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn enforce_reverts_an_attached_admin_policy_an_inline_star_and_an_opened_trust() {
    moto::aws_env();
    let moto = Moto::start(&[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    rt.block_on(async {
        for role in ["app", "worker", "api"] {
            iam.create_role()
                .role_name(role)
                .assume_role_policy_document(trust.to_string())
                .send()
                .await
                .expect("create role");
        }
    });
    let dir = scratch("operator-enforce-aws");
    let store = dir.join("store");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    mode: enforce\n    aws: {{profile: {profile}, endpointUrl: \"{endpoint}\", pollInterval: 1s}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    let mut windows = Vec::new();
    rt.block_on(async {
        // 1. AdministratorAccess attached: detached.
        iam.attach_role_policy()
            .role_name("app")
            .policy_arn(ADMIN)
            .send()
            .await
            .expect("attach");
    });
    windows.push(until("AdministratorAccess detached", || {
        rt.block_on(async {
            let attached = iam
                .list_attached_role_policies()
                .role_name("app")
                .send()
                .await
                .expect("list");
            attached.attached_policies().is_empty()
        })
    }));
    rt.block_on(async {
        // 2. An inline `*:*`: deleted.
        iam.put_role_policy()
            .role_name("worker")
            .policy_name("wide")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("put inline");
    });
    windows.push(until("the inline policy deleted", || {
        rt.block_on(async {
            let names = iam
                .list_role_policies()
                .role_name("worker")
                .send()
                .await
                .expect("list");
            names.policy_names().is_empty()
        })
    }));
    rt.block_on(async {
        // 3. Trust opened to every AWS principal: restored.
        let open = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]});
        iam.update_assume_role_policy()
            .role_name("api")
            .policy_document(open.to_string())
            .send()
            .await
            .expect("open trust");
    });
    windows.push(until("the trust policy restored", || {
        rt.block_on(async {
            let role = iam
                .get_role()
                .role_name("api")
                .send()
                .await
                .expect("get role");
            let doc = role
                .role()
                .and_then(|r| r.assume_role_policy_document())
                .unwrap_or_default();
            // IAM returns policy documents URL-encoded.
            let doc = percent_encoding::percent_decode_str(doc).decode_utf8_lossy();
            let doc: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
            doc["Statement"][0]["Principal"] == json!({"Service": "ec2.amazonaws.com"})
        })
    }));

    let role = |name: &str| format!("Role arn:aws:iam::{}:role/{name}", moto::ACCOUNT_ID);
    for (name, op_kind) in [
        ("app", "detach-policy"),
        ("worker", "delete-inline-policy"),
        ("api", "update-trust-policy"),
    ] {
        let object = role(name);
        op.wait_for(&format!("{object} closed"), WAIT, |_| {
            story(&store, &object).last().map(String::as_str) == Some("close:reverted")
        });
        assert_eq!(
            story(&store, &object),
            [
                "change",
                "revert-intent",
                "revert-result:reverted",
                "close:reverted"
            ],
            "{object}"
        );
        let ops = ops_of(&store, &object);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0][0]["op"], op_kind, "{ops:?}");
    }
    assert_eq!(
        op.metric("permdrift_reverts_total{outcome=\"reverted\",source=\"acct\"}"),
        Some(3.0)
    );
    op.terminate();
    assert_store_verifies(&store);
    let mut ms: Vec<f64> = windows.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "IAM exposure window (write acknowledged to restored, seen by polling moto; poll interval 1 s): p50 {:.0} ms, max {:.0} ms over {} cases",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}

#[test]
fn enforce_reverts_a_new_default_version_a_group_membership_and_a_deleted_boundary() {
    moto::aws_env();
    let moto = Moto::start(&[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let arn = |name: &str| format!("arn:aws:iam::{}:policy/{name}", moto::ACCOUNT_ID);
    let s3_read = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "s3:GetObject", "Resource": "*"}]})
    .to_string();
    let allow_all = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "*", "Resource": "*"}]})
    .to_string();
    rt.block_on(async {
        iam.create_group().group_name("admins").send().await.expect("group");
        iam.attach_group_policy()
            .group_name("admins")
            .policy_arn(ADMIN)
            .send()
            .await
            .expect("attach to group");
        iam.create_user().user_name("carol").send().await.expect("user");
        for name in ["reports", "s3-read-boundary"] {
            iam.create_policy()
                .policy_name(name)
                .policy_document(&s3_read)
                .send()
                .await
                .expect("policy");
        }
        iam.attach_user_policy()
            .user_name("carol")
            .policy_arn(arn("reports"))
            .send()
            .await
            .expect("attach reports");
        let ec2 = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        iam.create_role()
            .role_name("bounded")
            .assume_role_policy_document(ec2.to_string())
            .send()
            .await
            .expect("role");
        iam.put_role_policy()
            .role_name("bounded")
            .policy_name("s3-all")
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("inline");
        iam.put_role_permissions_boundary()
            .role_name("bounded")
            .permissions_boundary(arn("s3-read-boundary"))
            .send()
            .await
            .expect("boundary");
    });
    let dir = scratch("operator-enforce-aws-more");
    let store = dir.join("store");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{store}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    mode: enforce\n    aws: {{profile: {profile}, endpointUrl: \"{endpoint}\", pollInterval: 1s}}\n\
         logging: {{format: json, level: debug}}\n",
        store = store.display(),
        profile = moto::PROFILE,
        endpoint = moto.endpoint(),
    );
    let op = Operator::start(&dir, "op", &config);
    op.wait_for("the first baseline", WAIT, |_| {
        journal(&store).iter().any(|r| r["kind"] == "baseline")
    });
    rt.block_on(async {
        iam.create_policy_version()
            .policy_arn(arn("reports"))
            .policy_document(&allow_all)
            .set_as_default(true)
            .send()
            .await
            .expect("new default version");
        iam.add_user_to_group()
            .user_name("carol")
            .group_name("admins")
            .send()
            .await
            .expect("add to group");
        iam.delete_role_permissions_boundary()
            .role_name("bounded")
            .send()
            .await
            .expect("delete boundary");
    });
    until("all three restored", || {
        rt.block_on(async {
            let policy = iam
                .get_policy()
                .policy_arn(arn("reports"))
                .send()
                .await
                .expect("get");
            let default = policy
                .policy()
                .and_then(|p| p.default_version_id())
                .unwrap_or_default()
                .to_owned();
            let groups = iam
                .list_groups_for_user()
                .user_name("carol")
                .send()
                .await
                .expect("groups");
            let role = iam
                .get_role()
                .role_name("bounded")
                .send()
                .await
                .expect("role");
            let boundary = role
                .role()
                .and_then(|r| r.permissions_boundary())
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned);
            default == "v1"
                && groups.groups().is_empty()
                && boundary == Some(arn("s3-read-boundary"))
        })
    });
    for (object, op_kind) in [
        (
            format!("Policy {}", arn("reports")),
            "set-default-policy-version",
        ),
        (
            format!("User arn:aws:iam::{}:user/carol", moto::ACCOUNT_ID),
            "remove-user-from-group",
        ),
        (
            format!("Role arn:aws:iam::{}:role/bounded", moto::ACCOUNT_ID),
            "put-permissions-boundary",
        ),
    ] {
        op.wait_for(&format!("{object} closed"), WAIT, |_| {
            story(&store, &object).last().map(String::as_str) == Some("close:reverted")
        });
        let ops = ops_of(&store, &object);
        assert_eq!(ops.len(), 1, "{object}: {ops:?}");
        assert_eq!(ops[0][0]["op"], op_kind, "{object}: {ops:?}");
    }
    op.terminate();
    assert_store_verifies(&store);
}
