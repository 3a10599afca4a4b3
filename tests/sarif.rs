//! `permdrift diff --format sarif`: every log is valid against the official
//! SARIF 2.1.0 schema (tests/data/sarif), holds one result per widening with
//! the risk tag as rule and a level from the severity, and points at the
//! manifest file and line or the Terraform resource address.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `permdrift diff ARGS --format FORMAT` from the repository root.
fn diff(args: &[&str], format: &str) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .arg("diff")
        .args(args)
        .args(["--format", format, "--quiet"])
        .current_dir(root())
        .output()
        .unwrap();
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), value)
}

fn assert_valid(log: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/sarif/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{log:#}");
}

fn results(log: &Value) -> &Vec<Value> {
    log["runs"][0]["results"].as_array().unwrap()
}

fn level_of(severity: &str) -> &'static str {
    match severity {
        "critical" | "high" => "error",
        "medium" => "warning",
        _ => "note",
    }
}

#[test]
fn the_schema_itself_refuses_a_broken_log() {
    // The validation below can fail: a log without `version` is refused.
    let (_, mut log) = diff(
        &["examples/incident/before", "examples/incident/after"],
        "sarif",
    );
    log.as_object_mut().unwrap().remove("version");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/sarif/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&log));
}

#[test]
fn one_result_per_widening_with_tag_level_and_manifest_line() {
    let args = ["examples/incident/before", "examples/incident/after"];
    let (code, log) = diff(&args, "sarif");
    assert_eq!(code, 1);
    assert_valid(&log);
    let (_, report) = diff(&args, "json");
    let widenings: Vec<&Value> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["direction"] == "widening" || c["direction"] == "mixed")
        .collect();
    let results = results(&log);
    assert_eq!(results.len(), widenings.len());
    assert!(!results.is_empty());
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for (result, change) in results.iter().zip(&widenings) {
        // The rule is one of the change's tags; all of them ride along.
        assert!(
            change["risks"]
                .as_array()
                .unwrap()
                .contains(&result["ruleId"])
        );
        assert_eq!(result["properties"]["tags"], change["risks"]);
        assert_eq!(
            rules[result["ruleIndex"].as_u64().unwrap() as usize]["id"],
            result["ruleId"]
        );
        assert_eq!(
            result["level"],
            level_of(change["severity"].as_str().unwrap())
        );
        assert_eq!(
            result["partialFingerprints"]["permdrift/v1"],
            change["fingerprint"]
        );
    }
    // The ClusterRole came from an item of a `kubectl get` List: the file.
    let cluster_role = results
        .iter()
        .find(|r| r["properties"]["object"] == "ClusterRole/engineering-debug")
        .unwrap();
    let physical = &cluster_role["locations"][0]["physicalLocation"];
    assert_eq!(
        physical["artifactLocation"]["uri"],
        "examples/incident/after/cluster.yaml"
    );
    assert!(physical.get("region").is_none(), "{physical:#}");
}

#[test]
fn a_manifest_result_points_at_its_document_line() {
    let dir = root().join("tests/fixtures/sarif-manifests");
    let (code, log) = diff(
        &[
            "tests/fixtures/sarif-manifests/before.yaml",
            "tests/fixtures/sarif-manifests/after.yaml",
        ],
        "sarif",
    );
    assert_eq!(code, 1);
    assert_valid(&log);
    let results = results(&log);
    assert_eq!(results.len(), 1, "{log:#}");
    assert_eq!(results[0]["ruleId"], "pod-exec");
    let physical = &results[0]["locations"][0]["physicalLocation"];
    assert_eq!(
        physical["artifactLocation"]["uri"],
        "tests/fixtures/sarif-manifests/after.yaml"
    );
    let line = physical["region"]["startLine"].as_u64().unwrap() as usize;
    let text = std::fs::read_to_string(dir.join("after.yaml")).unwrap();
    let document: Vec<&str> = text.lines().skip(line - 1).take(6).collect();
    assert!(
        document.join("\n").contains("name: debug-exec"),
        "line {line}: {document:?}"
    );
}

#[test]
fn terraform_results_name_the_resource_address() {
    let (code, log) = diff(
        &["tests/fixtures/terraform/attach-administrator-access.json"],
        "sarif",
    );
    assert_eq!(code, 1);
    assert_valid(&log);
    let results = results(&log);
    assert_eq!(results.len(), 1);
    let location = &results[0]["locations"][0];
    assert_eq!(
        location["physicalLocation"]["artifactLocation"]["uri"],
        "tests/fixtures/terraform/attach-administrator-access.json"
    );
    let addresses: Vec<&str> = location["logicalLocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["fullyQualifiedName"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "aws_iam_role.deploy",
            "aws_iam_role_policy_attachment.deploy_admin"
        ]
    );
    assert_eq!(results[0]["level"], "error");
    assert_eq!(results[0]["ruleId"], "admin");
    insta::assert_json_snapshot!("sarif_attach_administrator_access", log);
}

#[test]
fn unknown_policy_documents_are_possible_widening_results() {
    let (code, log) = diff(&["tests/fixtures/terraform/unknown-values.json"], "sarif");
    assert_eq!(code, 1);
    assert_valid(&log);
    let possible: Vec<&Value> = results(&log)
        .iter()
        .filter(|r| r["ruleId"] == "possible-widening")
        .collect();
    let addresses: Vec<&str> = possible
        .iter()
        .map(|r| {
            r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        addresses,
        [
            "aws_iam_policy.extra",
            "aws_iam_role_policy_attachment.extra"
        ]
    );
    assert!(results(&log).iter().any(|r| r["ruleId"] == "secrets-read"));
}

#[test]
fn no_widening_is_an_empty_valid_log() {
    let (code, log) = diff(&["tests/fixtures/terraform/rename-only.json"], "sarif");
    assert_eq!(code, 0);
    assert_valid(&log);
    assert!(results(&log).is_empty());
}
