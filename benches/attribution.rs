//! Cost of attribution in a manual diff: the synthetic 100,000-object
//! cluster of benches/diff.rs against a copy with 1% of objects changed,
//! diffed by the real `permdrift diff` binary pinned to one core, with and
//! without 100 agent suggestions (`--suggestions`), runs interleaved in the
//! same process so both see the same machine load. The figure is the ratio
//! of the medians; the target (issue 10) is at most 1.10.
//!
//! Run: `cargo bench --bench attribution` (knobs: BENCH_RUNS, default 3;
//! BENCH_SUGGESTIONS, default 100). Results go to stdout and to
//! .bench-out/attribution.json.

mod synth;

use permdrift::index::k8s::{K8sModel, K8sObject};
use permdrift::snapshot::format::{self, Format};
use permdrift::snapshot::{Snapshot, SourceSnapshot};
use serde_json::{Value, json};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

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

/// One answer in forum style; the forms rotate through commands, YAML,
/// heredocs and aggregation labels, and a quarter of them name objects the
/// mutation really added, so matching has real work to do.
fn suggestion(i: usize, added: &[(String, String, String)]) -> String {
    let mut s = format!(
        "---\nid: bench-{i}\nagent: devhelper\nat: 2026-11-20T09:00:00Z\n---\n\
         **Q:** team-{i} cannot deploy. **devhelper:** This is a common RBAC gap; try this.\n\n"
    );
    match i % 4 {
        0 => {
            let (ns, name, role) = &added[i % added.len().max(1)];
            let _ = writeln!(
                s,
                "```sh\nkubectl create rolebinding {name} -n {ns} --clusterrole={role} --group=team-{i}-devs\n```\n\nCaveat: `{role}` is broad."
            );
        }
        1 => {
            let _ = writeln!(
                s,
                "```yaml\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: deployer-{i}\n  namespace: team-{i}\nrules:\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, list, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer-{i}\n  namespace: team-{i}\nsubjects:\n- kind: ServiceAccount\n  name: sa-0\n  namespace: team-{i}\nroleRef:\n  kind: Role\n  name: deployer-{i}\n  apiGroup: rbac.authorization.k8s.io\n```"
            );
        }
        2 => {
            let _ = writeln!(
                s,
                "```bash\nkubectl apply -f - <<EOF\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: readers-extra-{i}\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: <group>\nroleRef:\n  kind: ClusterRole\n  name: view\n  apiGroup: rbac.authorization.k8s.io\nEOF\n```"
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "```sh\nkubectl label clusterrole op{}-aggregate-to-view rbac.authorization.k8s.io/aggregate-to-edit=true\n```",
                i % 40
            );
        }
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Wall time of one pinned run.
fn run(args: &[String]) -> f64 {
    let started = std::time::Instant::now();
    let o = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_permdrift")])
        .args(args)
        .output()
        .expect("run permdrift");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let count: usize = std::env::var("BENCH_SUGGESTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".bench-out");
    std::fs::create_dir_all(&dir).expect("bench output dir");
    let cluster = synth::cluster(&synth::ClusterShape::large(), 42);
    let changed = synth::mutate(&cluster, 10, 7);
    let added: Vec<(String, String, String)> = changed
        .iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("added-"))
        })
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["roleRef"]["name"].as_str().unwrap_or("view").to_owned(),
            )
        })
        .collect();
    let (old, new) = (kube_snapshot(&cluster), kube_snapshot(&changed));
    let write = |name: &str, s: &Snapshot| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format::to_string(s, Format::Json).expect("render")).expect("write");
        p
    };
    let (a, b) = (
        write("attribution-old.json", &old),
        write("attribution-new.json", &new),
    );
    let suggestions = dir.join("attribution-suggestions");
    let _ = std::fs::remove_dir_all(&suggestions);
    std::fs::create_dir_all(&suggestions).expect("suggestions dir");
    for i in 0..count {
        std::fs::write(
            suggestions.join(format!("answer-{i:03}.md")),
            suggestion(i, &added),
        )
        .expect("write suggestion");
    }
    let out = dir.join("attribution-report.json");
    let base: Vec<String> = [
        "diff",
        &a.display().to_string(),
        &b.display().to_string(),
        "--format",
        "json",
        "-o",
        &out.display().to_string(),
        "-q",
        "--fail-on",
        "never",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut with = base.clone();
    with.extend(["--suggestions".into(), suggestions.display().to_string()]);
    let (mut plain_t, mut with_t) = (Vec::new(), Vec::new());
    for i in 0..runs {
        plain_t.push(run(&base));
        with_t.push(run(&with));
        eprintln!(
            "run {}: without {:.3} s, with {:.3} s",
            i + 1,
            plain_t[i],
            with_t[i]
        );
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
        .unwrap_or_default();
    let changes = report["changes"].as_array().cloned().unwrap_or_default();
    let attributed = changes
        .iter()
        .filter(|c| c["attribution"]["suggestion"].is_string())
        .count();
    let (p, w) = (median(plain_t), median(with_t));
    let summary = json!({
        "objects": old.object_count(),
        "changes": changes.len(),
        "suggestions": count,
        "attributed": attributed,
        "without_seconds": p,
        "with_seconds": w,
        "ratio": w / p,
        "runs": runs,
    });
    std::fs::write(
        dir.join("attribution.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .expect("write summary");
    println!("| objects | changes | suggestions | attributed | without | with | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {count} | {attributed} | {p:.3} s | {w:.3} s | {:.3} |",
        old.object_count(),
        changes.len(),
        w / p
    );
}
