//! Running the `permdrift` binary on files written for one test.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn permdrift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run permdrift")
}

pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/core/data")
        .join(path)
}

/// Writes `text` to `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test input");
    path
}

/// Kubernetes objects as a `v1` List, with one unrelated object so that
/// neither side is empty (an empty input reads as nothing listed).
pub fn manifest(objects: &[Value]) -> String {
    let mut items = vec![json!({"apiVersion":"v1","kind":"ServiceAccount",
        "metadata":{"name":"default","namespace":"default"}})];
    items.extend(objects.iter().cloned());
    json!({"apiVersion":"v1","kind":"List","items":items}).to_string()
}

/// `permdrift diff OLD NEW --format json`, which must not fail.
pub fn diff(old: &Path, new: &Path) -> Value {
    let o = permdrift(&[
        "diff",
        &old.display().to_string(),
        &new.display().to_string(),
        "--format",
        "json",
        "-q",
        "--fail-on",
        "never",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    serde_json::from_slice(&o.stdout).expect("diff JSON")
}

/// Diffs two sets of Kubernetes objects.
pub fn diff_kube(old: &[Value], new: &[Value]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "old.yaml", &manifest(old));
    let b = write(dir.path(), "new.yaml", &manifest(new));
    diff(&a, &b)
}

/// Diffs two IAM accounts given as (roles, users, policies).
pub fn diff_iam(old: &Value, new: &Value) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "old.json", &old.to_string());
    let b = write(dir.path(), "new.json", &new.to_string());
    diff(&a, &b)
}

/// The report's change of one object, by kind and name.
pub fn change<'r>(report: &'r Value, kind: &str, name: &str) -> &'r Value {
    report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["object"]["kind"] == kind && c["object"]["name"] == name)
        .unwrap_or_else(|| panic!("no change of {kind}/{name} in {report:#}"))
}

pub fn risks(change: &Value) -> Vec<String> {
    change["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The (direction, severity) of a change.
pub fn verdict(change: &Value) -> (String, String) {
    (
        change["direction"].as_str().unwrap_or_default().to_owned(),
        change["severity"].as_str().unwrap_or_default().to_owned(),
    )
}

pub fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
        "metadata":{"name":name},"rules":rules})
}

pub fn cluster_role_binding(name: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
        "metadata":{"name":name},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},
        "subjects":subjects})
}

pub fn group(name: &str) -> Value {
    json!({"kind":"Group","name":name,"apiGroup":"rbac.authorization.k8s.io"})
}

pub fn user(name: &str) -> Value {
    json!({"kind":"User","name":name,"apiGroup":"rbac.authorization.k8s.io"})
}

/// A GetAccountAuthorizationDetails response holding these entities.
pub fn account(roles: Vec<Value>, users: Vec<Value>, policies: Vec<Value>) -> Value {
    json!({"UserDetailList": users, "GroupDetailList": [], "RoleDetailList": roles, "Policies": policies})
}

pub fn managed_policy(arn: &str, document: Value) -> Value {
    let name = arn.rsplit('/').next().unwrap_or(arn);
    json!({"PolicyName": name, "Arn": arn, "DefaultVersionId": "v1",
        "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": true, "Document": document}]})
}

/// The gained grants of a change as `subject action resource` lines.
pub fn gained_lines(change: &Value) -> Vec<String> {
    change["gained"]
        .as_array()
        .expect("gained")
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                g["subject"].as_str().unwrap_or_default(),
                g["action"].as_str().unwrap_or_default(),
                g["resource"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
