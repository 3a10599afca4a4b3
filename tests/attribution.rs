//! Attribution end to end through the `permdrift` binary: the corpus in
//! tests/data/attribution (every case's expected attribution, and the
//! corpus's precision and recall), the incident replay, and bad input.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> PathBuf {
    root().join("tests/data/attribution")
}

fn permdrift<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run permdrift")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The display name of a change's object, as case.yaml keys it.
fn object_key(c: &Value) -> String {
    let o = &c["object"];
    let kind = o["kind"].as_str().unwrap();
    match (o["namespace"].as_str(), o["arn"].as_str()) {
        (Some(ns), _) => format!("{kind}/{ns}/{}", o["name"].as_str().unwrap()),
        (None, Some(arn)) => format!("{kind} {arn}"),
        (None, None) => format!("{kind}/{}", o["name"].as_str().unwrap()),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Runs one case: OLD is the base, NEW the base with the case's `new/`
/// files laid over it. Returns the report's changes.
fn run_case(dir: &Path, case: &Value) -> Vec<Value> {
    let new = tempfile::tempdir().unwrap();
    copy_dir(&corpus().join("base"), new.path());
    copy_dir(&dir.join("new"), new.path());
    let mut args: Vec<String> = vec![
        "diff".into(),
        corpus().join("base").display().to_string(),
        new.path().display().to_string(),
        "--format".into(),
        "json".into(),
        "--fail-on".into(),
        "never".into(),
        "-q".into(),
        "--agents".into(),
        corpus().join("agents.yaml").display().to_string(),
        "--suggestions".into(),
        dir.join("suggestions").display().to_string(),
    ];
    let extra = case["args"].as_array().cloned().unwrap_or_default();
    for (i, a) in extra.iter().enumerate() {
        let a = a.as_str().unwrap();
        // Flags' values are paths relative to the case.
        args.push(if i % 2 == 1 {
            dir.join(a).display().to_string()
        } else {
            a.to_owned()
        });
    }
    let o = permdrift(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}: {}",
        dir.display(),
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    report["changes"].as_array().unwrap().clone()
}

/// What differs between the expected and the actual attribution, if anything.
fn mismatch(expected: &Value, actual: &Value) -> Option<String> {
    if expected.is_null() {
        return (!actual.is_null()).then(|| format!("expected null, got {actual}"));
    }
    if actual.is_null() {
        return Some(format!("expected {expected}, got null"));
    }
    let mut wrong = Vec::new();
    for (field, want) in expected.as_object().unwrap() {
        let got = match field.as_str() {
            "beyond" => Value::from(actual["beyond"].as_array().unwrap().len()),
            "actor" => {
                let a = &actual["actor"];
                a.get("username")
                    .or_else(|| a.get("arn"))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
            f => actual[f].clone(),
        };
        if &got != want {
            wrong.push(format!("{field}: expected {want}, got {got}"));
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[test]
fn corpus_attributions_match_and_precision_and_recall_are_reported() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "the corpus has {} cases", dirs.len());
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    let mut changes_seen = 0;
    for dir in &dirs {
        let case: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("case.yaml")).unwrap()).unwrap();
        let expect: BTreeMap<String, Value> =
            serde_json::from_value(case["expect"].clone()).unwrap();
        let changes = run_case(dir, &case);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut keys: Vec<String> = Vec::new();
        for c in &changes {
            changes_seen += 1;
            let key = object_key(c);
            keys.push(key.clone());
            let Some(want) = expect.get(&key) else {
                failures.push(format!("{name}: unexpected change {key}"));
                continue;
            };
            let got = &c["attribution"];
            let want_s = want.get("suggestion").and_then(Value::as_str);
            let got_s = got.get("suggestion").and_then(Value::as_str);
            match (want_s, got_s) {
                (Some(w), Some(g)) if w == g => tp += 1,
                (_, Some(_)) => {
                    fp += 1;
                    if want_s.is_some() {
                        fn_ += 1;
                    }
                }
                (Some(_), None) => fn_ += 1,
                (None, None) => {}
            }
            if let Some(m) = mismatch(want, got) {
                failures.push(format!("{name}: {key}: {m}"));
            }
        }
        for key in expect.keys() {
            if !keys.contains(key) {
                failures.push(format!("{name}: expected change {key} not in the diff"));
            }
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    println!(
        "attribution corpus: {} cases, {changes_seen} changes; suggestion precision {precision:.3} ({tp}/{}), recall {recall:.3} ({tp}/{})",
        dirs.len(),
        tp + fp,
        tp + fn_
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
