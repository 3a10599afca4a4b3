//! Manual snapshot diff at scale: a synthetic 100,000-object cluster (and a
//! 5,000-role IAM account) diffed against a copy with 1% of objects changed,
//! through the real `permdrift diff` binary pinned to one core, side by side
//! with `diff -u` of the same canonical files.
//!
//! Run: `cargo bench --bench diff` (knobs: BENCH_RUNS, default 3).
//! Results go to stdout as a markdown table and to .bench-out/diff.json.

mod synth;

use permdrift::index::aws::{AwsModel, AwsObject};
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::model::aws::AwsKind;
use permdrift::snapshot::format::{self, Format};
use permdrift::snapshot::{Snapshot, SourceSnapshot};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Measure {
    seconds: f64,
    peak_kib: Option<u64>,
}

/// Runs a command pinned to CPU 0 under GNU time, returning the median wall time and peak RSS.
fn measure(label: &str, program: &str, args: &[&str], runs: usize, expect: &[i32]) -> Measure {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let output = Command::new("taskset")
            .args(["-c", "0", "/usr/bin/time", "-f", "%e %M", program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let code = output.status.code().unwrap_or(-1);
        assert!(
            expect.contains(&code),
            "{label} exited {code}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let (seconds, kib) = synth::gnu_time(&stderr);
        let seconds = seconds.unwrap_or(f64::NAN);
        samples.push((seconds, kib));
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (seconds, peak_kib) = samples[samples.len() / 2];
    eprintln!(
        "  {label}: {seconds:.3} s, peak {} MiB",
        peak_kib.map_or(0, |k| k / 1024)
    );
    Measure { seconds, peak_kib }
}

fn kube_snapshot(objects: &[Value]) -> Snapshot {
    let mut model = K8sModel::new();
    for o in objects {
        model.insert(K8sObject::from_raw(o.clone()).expect("synthetic object parses"));
    }
    let mut s = Snapshot::new();
    s.sources.insert(
        "synthetic".into(),
        SourceSnapshot::kubernetes("synthetic", model),
    );
    s
}

fn iam_snapshot(doc: &Value) -> Snapshot {
    let mut model = AwsModel::new();
    for kind in AwsKind::ALL {
        for item in doc[kind.list_name()].as_array().into_iter().flatten() {
            let (key, object) = AwsObject::canonical(kind, item.clone()).expect("entity parses");
            model.insert(key, object);
        }
    }
    let mut s = Snapshot::new();
    s.sources.insert(
        "444455556666".into(),
        SourceSnapshot::aws("444455556666", model),
    );
    s
}

fn write(dir: &Path, name: &str, snapshot: &Snapshot, format: Format) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format::to_string(snapshot, format).expect("render"))
        .expect("write snapshot");
    path
}

/// One case: the same pair diffed three ways (JSON snapshots to a text
/// report, the main interactive use; JSON snapshots to the full JSON report;
/// YAML snapshots to a text report), beside `diff -u` of the same files.
fn case(dir: &Path, label: &str, old: &Snapshot, new: &Snapshot, runs: usize) -> Value {
    let bin = env!("CARGO_BIN_EXE_permdrift");
    let mut results = json!({"case": label, "objects": old.object_count()});
    for (format, ext) in [(Format::Json, "json"), (Format::Yaml, "yaml")] {
        let a = write(dir, &format!("{label}-old.{ext}"), old, format);
        let b = write(dir, &format!("{label}-new.{ext}"), new, format);
        let size = std::fs::metadata(&a).map(|m| m.len()).unwrap_or(0);
        let (a, b) = (a.display().to_string(), b.display().to_string());
        let report = |report_format: &str| {
            let out = dir.join(format!("{label}-report-{ext}.{report_format}"));
            let out = out.display().to_string();
            let m = measure(
                &format!("{label} permdrift diff ({ext} snapshots, {report_format} report)"),
                bin,
                &[
                    "diff",
                    &a,
                    &b,
                    "--format",
                    report_format,
                    "-o",
                    &out,
                    "-q",
                    "--fail-on",
                    "never",
                ],
                runs,
                &[0],
            );
            (m, out)
        };
        let (text, _) = report("text");
        results[format!("text_{ext}")] =
            json!({"seconds": text.seconds, "peak_mib": text.peak_kib.map(|k| k / 1024)});
        if ext == "json" {
            let (full, out) = report("json");
            results["json_json"] =
                json!({"seconds": full.seconds, "peak_mib": full.peak_kib.map(|k| k / 1024)});
            let report: Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
                    .unwrap_or_default();
            let deltas: u64 = report["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    c["gained_count"].as_u64().unwrap_or(0) + c["lost_count"].as_u64().unwrap_or(0)
                })
                .sum();
            results["changes"] = report["summary"]["changes"].clone();
            results["widening"] = report["summary"]["widening"].clone();
            results["grant_deltas"] = json!(deltas);
            results["report_mib"] =
                json!(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0);
        }
        let plain = measure(
            &format!("{label} diff -u ({ext})"),
            "diff",
            &["-u", &a, &b],
            runs,
            &[0, 1],
        );
        results[format!("diff_u_{ext}")] = json!(plain.seconds);
        results[format!("{ext}_file_mib")] = json!(size as f64 / 1048576.0);
    }
    let ours = results["text_json"]["seconds"].as_f64().unwrap_or(f64::NAN);
    let floor = results["diff_u_yaml"]
        .as_f64()
        .unwrap_or(f64::NAN)
        .max(0.001);
    results["ratio_vs_diff_u_yaml"] = json!(ours / floor);
    results
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".bench-out");
    std::fs::create_dir_all(&dir).expect("bench output dir");

    let mut cases = Vec::new();
    for (label, shape) in [
        ("rbac-100k", synth::ClusterShape::large()),
        (
            "rbac-100k-heavy-aggregation",
            synth::ClusterShape::large_heavy_aggregation(),
        ),
    ] {
        let started = Instant::now();
        let cluster = synth::cluster(&shape, 42);
        let changed = synth::mutate(&cluster, 10, 7);
        let (old, new) = (kube_snapshot(&cluster), kube_snapshot(&changed));
        eprintln!(
            "{label}: generated {} and {} RBAC objects in {:.1?}",
            old.object_count(),
            new.object_count(),
            started.elapsed()
        );
        cases.push(case(&dir, label, &old, &new, runs));
    }
    let started = Instant::now();
    let account = synth::account(5_000, 42);
    let changed = synth::mutate_account(&account, 10, 7);
    let (old, new) = (iam_snapshot(&account), iam_snapshot(&changed));
    eprintln!(
        "iam: generated an account of {} entities in {:.1?}",
        old.object_count(),
        started.elapsed()
    );
    cases.push(case(&dir, "iam-5000-roles", &old, &new, runs));

    let summary = json!({"runs": runs, "cases": cases});
    std::fs::write(
        dir.join("diff.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .expect("write summary");
    println!(
        "| case | objects | changes (widening) | grant deltas | permdrift, JSON snapshots, text report | same, JSON report | same, YAML snapshots | `diff -u` YAML | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in summary["cases"].as_array().into_iter().flatten() {
        let cell = |k: &str| {
            format!(
                "{:.2} s / {} MiB",
                c[k]["seconds"].as_f64().unwrap_or_default(),
                c[k]["peak_mib"]
            )
        };
        println!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {:.2} s | {:.1}x |",
            c["case"].as_str().unwrap_or_default(),
            c["objects"],
            c["changes"],
            c["widening"],
            c["grant_deltas"],
            cell("text_json"),
            cell("json_json"),
            cell("text_yaml"),
            c["diff_u_yaml"].as_f64().unwrap_or_default(),
            c["ratio_vs_diff_u_yaml"].as_f64().unwrap_or_default(),
        );
    }
}
