//! Terraform plans (`terraform show -json PLAN`) through the `permdrift`
//! binary: a plan alone (before against after), a plan applied to a live
//! account dump, AWS managed policies known by ARN only, values known only
//! after apply, and renames. Fixtures: tests/fixtures/terraform (Terraform's
//! JSON output format, format_version 1.2).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/terraform")
        .join(name)
        .display()
        .to_string()
}

fn permdrift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `diff ARGS --format json`: exit code and the report.
fn diff_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = permdrift(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn risks(change: &Value) -> Vec<&str> {
    change["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

#[test]
fn attaching_administrator_access_is_understood_without_an_account_dump() {
    let (code, report) = diff_json(&[&data("attach-administrator-access.json")]);
    assert_eq!(code, 1);
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{report:#}");
    let role = &changes[0];
    assert_eq!(
        role["object"]["arn"],
        "arn:aws:iam::111122223333:role/deploy"
    );
    assert_eq!(role["direction"], "widening");
    assert_eq!(role["severity"], "critical");
    assert!(risks(role).contains(&"admin"), "{:?}", risks(role));
    assert_eq!(
        role["witness"]["subject"],
        "arn:aws:iam::111122223333:role/deploy"
    );
    assert_eq!(role["gained"][0]["action"], "*");
    assert_eq!(role["lost_count"], 0);
}

#[test]
fn a_trust_policy_opened_to_everyone_is_critical() {
    let (code, report) = diff_json(&[&data("trust-policy-change.json")]);
    assert_eq!(code, 1);
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{report:#}");
    let role = &changes[0];
    assert_eq!(
        role["object"]["arn"],
        "arn:aws:iam::111122223333:role/customer-data-analytics"
    );
    // ec2 lost the trust, everyone gained it.
    assert_eq!(role["direction"], "mixed");
    assert_eq!(role["severity"], "critical");
    let tags = risks(role);
    assert!(
        tags.contains(&"trust-widened") && tags.contains(&"trust-public"),
        "{tags:?}"
    );
    assert_eq!(role["witness"]["subject"], "*");
    assert_eq!(role["witness"]["action"], "sts:AssumeRole");
    assert_eq!(role["lost"][0]["subject"], "service:ec2.amazonaws.com");
}

#[test]
fn unknown_values_are_reported_as_possible_widening_and_never_guessed() {
    let (code, report) = diff_json(&[&data("unknown-values.json")]);
    assert_eq!(code, 1);
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("possible widening: aws_iam_policy.extra `policy`")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("aws_iam_role_policy_attachment.extra `policy_arn`")),
        "{warnings:?}"
    );
    // Identifiers (ids, ARNs, uids) unknown until apply are not widenings.
    assert!(
        !warnings.iter().any(|w| w.contains("`policy_id`")),
        "{warnings:?}"
    );
    let changes = report["changes"].as_array().unwrap();
    // The known part: a new ClusterRole bound to a group.
    let cluster_role = changes
        .iter()
        .find(|c| c["object"]["kind"] == "ClusterRole")
        .unwrap();
    assert_eq!(cluster_role["object"]["name"], "secret-reader");
    assert_eq!(cluster_role["direction"], "widening");
    assert_eq!(risks(cluster_role), ["secrets-read"]);
    assert_eq!(cluster_role["witness"]["subject"], "Group:engineering");
    // The unknown part grants nothing here: no AWS change widens.
    for c in changes.iter().filter(|c| c["platform"] == "aws") {
        assert_eq!(c["gained_count"], 0, "{c:#}");
    }
}

#[test]
fn unknown_values_alone_still_fail_the_check() {
    // Only the unknown policy is at or above `critical`; it still fails.
    let out = permdrift(&[
        "diff",
        &data("unknown-values.json"),
        "--fail-on",
        "critical",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("possible widening: aws_iam_policy.extra"),
        "{text}"
    );
    let out = permdrift(&["diff", &data("unknown-values.json"), "--fail-on", "never"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_plan_that_only_renames_changes_nothing() {
    let (code, report) = diff_json(&[&data("rename-only.json")]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["summary"]["changes"], 0);
    assert!(report.get("warnings").is_none(), "{report:#}");
}

#[test]
fn a_plan_applied_to_a_live_account_keeps_what_terraform_does_not_manage() {
    let (code, report) = diff_json(&[
        &data("live-account.json"),
        &data("attach-administrator-access.json"),
    ]);
    assert_eq!(code, 1);
    let role = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"]["kind"] == "Role")
        .unwrap();
    assert_eq!(
        role["object"]["arn"],
        "arn:aws:iam::111122223333:role/deploy"
    );
    assert_eq!(role["direction"], "widening");
    assert!(risks(role).contains(&"admin"));
    // The inline policy added outside Terraform is still there afterwards.
    assert_eq!(role["lost_count"], 0, "{role:#}");
    assert!(
        role["text_diff"]
            .as_str()
            .unwrap()
            .contains("AdministratorAccess")
    );
    assert!(
        !role["text_diff"]
            .as_str()
            .unwrap()
            .contains("-  PolicyName: console-hotfix")
    );
}

#[test]
fn a_newer_managed_policy_set_can_be_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("managed.json");
    std::fs::write(
        &set,
        r#"[{"name":"AdministratorAccess","arn":"arn:aws:iam::aws:policy/AdministratorAccess","version_id":"v9",
             "document":{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*"}]}}]"#,
    )
    .unwrap();
    let (code, report) = diff_json(&[
        &data("attach-administrator-access.json"),
        "--managed-policies",
        set.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let role = &report["changes"][0];
    assert!(!risks(role).contains(&"admin"), "{:?}", risks(role));
    assert_eq!(role["gained"][0]["action"], "s3:ListAllMyBuckets");
    // A broken set is an error naming the file and the field.
    std::fs::write(&set, r#"[{"name":"x"}]"#).unwrap();
    let out = permdrift(&[
        "diff",
        &data("attach-administrator-access.json"),
        "--managed-policies",
        set.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("managed.json") && err.contains("[0]"), "{err}");
}

#[test]
fn a_bad_policy_document_names_the_resource_and_attribute() {
    let mut plan: Value =
        serde_json::from_str(&std::fs::read_to_string(data("trust-policy-change.json")).unwrap())
            .unwrap();
    plan["resource_changes"][0]["change"]["after"]["assume_role_policy"] = "{not json".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let out = permdrift(&["diff", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plan.json") && err.contains("aws_iam_role.analytics `assume_role_policy`"),
        "{err}"
    );
}

#[test]
fn a_single_argument_that_is_not_a_plan_is_refused() {
    let out = permdrift(&["diff", &data("live-account.json")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be a Terraform plan"), "{err}");
}

#[test]
fn snapshot_reads_a_plan_as_its_state_after() {
    let out = permdrift(&[
        "snapshot",
        "--from",
        &data("unknown-values.json"),
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("secret-reader") && text.contains("deploy-extra"),
        "{text}"
    );
}
