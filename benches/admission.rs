//! Admission review latency: every RBAC write in a cluster waits for the
//! gate (src/admission/), so this measures one review, from the
//! AdmissionReview bytes to the decision, against synthetic live models of
//! about 10,000 and 100,000 objects (benches/synth). The requests are the
//! writes `synth::mutate` makes (1% of objects: bindings added, subjects
//! added and removed, rules added, deletions, an operator's aggregated role
//! widened) plus a cluster-admin binding, each reviewed alone against the
//! unchanged live model, in enforce mode, by an `admission::Reviewer` (the
//! live model and a copy each review changes and restores). The cost of
//! copying the model, which one-off `admission::review` pays per call, is
//! reported beside it.
//!
//! Run: `cargo bench --bench admission` (knobs: BENCH_ROUNDS, default 3:
//! each request is reviewed that many times). Results go to stdout as a
//! markdown table and to .bench-out/admission.json.

mod synth;

use permdrift::admission::{self, Gate, NoApprovals, Outcome};
use permdrift::config::Mode;
use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::model::k8s::{RbacKey, RbacKind};
use permdrift::report::Severity;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

fn key_of(v: &Value) -> Option<RbacKey> {
    let o = K8sObject::from_raw(v.clone()).ok()?;
    (o.parsed.key.kind != RbacKind::ServiceAccount).then(|| o.parsed.key.clone())
}

fn review_bytes(op: &str, object: Option<&Value>, old: Option<&Value>, n: usize) -> Vec<u8> {
    let src = object.or(old).expect("an object");
    let kind = src["kind"].as_str().unwrap_or_default();
    let mut r = json!({
        "uid": format!("bench-{n}"),
        "kind": {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": kind},
        "resource": {"group": "rbac.authorization.k8s.io", "version": "v1",
                     "resource": format!("{}s", kind.to_lowercase())},
        "name": src["metadata"]["name"],
        "operation": op,
        "userInfo": {"username": "alice", "groups": ["engineering", "system:authenticated"]},
        "dryRun": false,
    });
    if let Some(ns) = src["metadata"].get("namespace") {
        r["namespace"] = ns.clone();
    }
    if let Some(o) = object {
        r["object"] = o.clone();
    }
    if let Some(o) = old {
        r["oldObject"] = o.clone();
    }
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r}),
    )
    .expect("review JSON")
}

fn requests(objects: &[Value]) -> Vec<Vec<u8>> {
    let before: BTreeMap<RbacKey, &Value> = objects
        .iter()
        .filter_map(|o| Some((key_of(o)?, o)))
        .collect();
    let mutated = synth::mutate(objects, 10, 7);
    let after: BTreeMap<RbacKey, &Value> = mutated
        .iter()
        .filter_map(|o| Some((key_of(o)?, o)))
        .collect();
    let mut out = Vec::new();
    for (key, new) in &after {
        match before.get(key) {
            None => out.push(review_bytes("CREATE", Some(new), None, out.len())),
            Some(old) if old != new => {
                out.push(review_bytes("UPDATE", Some(new), Some(old), out.len()))
            }
            Some(_) => {}
        }
    }
    for (key, old) in &before {
        if !after.contains_key(key) {
            out.push(review_bytes("DELETE", None, Some(old), out.len()));
        }
    }
    let admin = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "eng-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "engineering"}]});
    out.push(review_bytes("CREATE", Some(&admin), None, out.len()));
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    label: &'static str,
    objects: usize,
    requests: usize,
    denied: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    clone_ms: f64,
}

fn measure(label: &'static str, shape: &synth::ClusterShape, rounds: usize) -> Row {
    let objects = synth::cluster(shape, 1);
    let mut live = K8sModel::new();
    for o in &objects {
        live.insert(K8sObject::from_raw(o.clone()).expect("synthetic object parses"));
    }
    let mut reviewer = admission::Reviewer::new(live.clone());
    let reqs = requests(&objects);
    let gate = Gate {
        source: "bench",
        mode: Mode::Enforce,
        deny_at: Severity::High,
        allow: &[],
        operator: None,
        exempt_users: &[],
        exempt_groups: &[],
    };
    let mut samples = Vec::new();
    let mut denied = 0;
    for round in 0..rounds {
        for bytes in &reqs {
            let t = Instant::now();
            let request = admission::parse_review(bytes).expect("bench review parses");
            let decision = reviewer.review(&gate, &NoApprovals, &request);
            let body = serde_json::to_vec(&decision.to_review()).expect("response JSON");
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(body);
            if round == 0 && decision.outcome == Outcome::Denied {
                denied += 1;
            }
        }
    }
    let t = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(live.clone());
    }
    let clone_ms = t.elapsed().as_secs_f64() * 1000.0 / 20.0;
    samples.sort_by(f64::total_cmp);
    let row = Row {
        label,
        objects: live.len(),
        requests: reqs.len(),
        denied,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
        clone_ms,
    };
    eprintln!(
        "  {label}: {} objects, {} requests x {rounds}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (model clone {:.3} ms)",
        row.objects, row.requests, row.p50_ms, row.p99_ms, row.max_ms, row.clone_ms
    );
    row
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rows = [
        measure("medium (~10k)", &synth::ClusterShape::medium(), rounds),
        measure("large (~100k)", &synth::ClusterShape::large(), rounds),
    ];
    println!(
        "| cluster | RBAC objects | requests | denied | p50 ms | p99 ms | max ms | model clone ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut json_rows = Vec::new();
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.label, r.objects, r.requests, r.denied, r.p50_ms, r.p99_ms, r.max_ms, r.clone_ms
        );
        json_rows.push(
            json!({"cluster": r.label, "objects": r.objects, "requests": r.requests,
            "denied": r.denied, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
            "clone_ms": r.clone_ms, "rounds": rounds}),
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".bench-out");
    std::fs::create_dir_all(&dir).expect(".bench-out");
    std::fs::write(
        dir.join("admission.json"),
        serde_json::to_vec_pretty(&json_rows).expect("JSON"),
    )
    .expect("write .bench-out/admission.json");
}
