//! Kubernetes snapshot benchmark: `permdrift snapshot --kube` versus what a
//! user would otherwise run, `kubectl get clusterroles,clusterrolebindings,
//! roles,rolebindings,serviceaccounts -A -o json`, side by side against one
//! kube-test-server (release build) preloaded with a synthetic cluster of
//! about 100,000 RBAC objects and ServiceAccounts (`synth::cluster` with
//! `ClusterShape::large()`, seed 42, each object given one managedFields
//! entry as real objects have).
//!
//! Both tools talk HTTPS with a bearer token (kubectl sends tokens only over
//! TLS) and write their output to a file. Per run: wall time and peak RSS
//! from `/usr/bin/time -f '%e %M'`, requests from the server's
//! `/_testserver/stats`. The bench checks that both read the same objects
//! (kind, namespace, name, resourceVersion).
//!
//! Run: `cargo bench --bench kube_snapshot`. Knobs (environment):
//! `BENCH_RUNS` (runs per tool, 3), `BENCH_UNCHUNKED` (also time kubectl
//! `--chunk-size=0`, 1). A JSON summary goes to `.bench-out/kube_snapshot.json`.

mod synth;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kube_test_server::harness::{KubeTestServer, Options};
use serde::Deserialize;
use serde_json::{Value, json};

const KINDS: &str = "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The synthetic cluster as a `List` for `--load`.
fn write_cluster(path: &Path) -> usize {
    synth::write_cluster_list(&synth::ClusterShape::large(), 42, path)
}

#[derive(Debug, Clone)]
struct Run {
    seconds: f64,
    peak_kib: u64,
    requests: u64,
    by_request: Value,
}

/// Runs `cmd` under `/usr/bin/time`, stdout to `out`, and reads the
/// server's request counters.
fn timed(
    srv: &KubeTestServer,
    program: &str,
    args: &[&str],
    env: &[(&str, &Path)],
    out: &Path,
) -> Run {
    srv.control("DELETE", "/_testserver/stats", "");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %M", program]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd
        .stdout(Stdio::from(
            std::fs::File::create(out).expect("output file"),
        ))
        .output()
        .expect("run under /usr/bin/time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stderr}"
    );
    let (seconds, peak_kib) = synth::gnu_time(&stderr);
    let (seconds, peak_kib) = (seconds.expect("elapsed"), peak_kib.expect("max rss"));
    let stats = srv.control("GET", "/_testserver/stats", "");
    Run {
        seconds,
        peak_kib,
        requests: stats["total_requests"].as_u64().unwrap_or(0),
        by_request: stats["requests"].clone(),
    }
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

#[derive(Deserialize)]
struct Item {
    kind: String,
    metadata: Meta,
}

fn identities(items: Vec<Item>) -> BTreeSet<String> {
    items
        .into_iter()
        .map(|i| {
            format!(
                "{}/{}/{}@{}",
                i.kind,
                i.metadata.namespace.unwrap_or_default(),
                i.metadata.name,
                i.metadata.resource_version
            )
        })
        .collect()
}

fn kubectl_objects(path: &Path) -> BTreeSet<String> {
    #[derive(Deserialize)]
    struct List {
        items: Vec<Item>,
    }
    let text = std::fs::read(path).expect("kubectl output");
    identities(
        serde_json::from_slice::<List>(&text)
            .expect("kubectl JSON")
            .items,
    )
}

fn permdrift_objects(path: &Path) -> BTreeSet<String> {
    #[derive(Deserialize)]
    struct Source {
        objects: Vec<Item>,
        complete: bool,
    }
    #[derive(Deserialize)]
    struct Snapshot {
        sources: Vec<Source>,
    }
    let text = std::fs::read(path).expect("snapshot");
    let mut snapshot: Snapshot = serde_json::from_slice(&text).expect("snapshot JSON");
    let source = snapshot.sources.pop().expect("one source");
    assert!(source.complete, "the snapshot is complete");
    identities(source.objects)
}

fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn describe(runs: &[Run]) -> String {
    let times: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.seconds)).collect();
    format!(
        "{:.2} s (median of {}), peak {:.0} MiB, {} requests",
        median(runs, |r| r.seconds),
        times.join(", "),
        median(runs, |r| r.peak_kib as f64) / 1024.0,
        runs[0].requests
    )
}

fn main() {
    let runs = knob("BENCH_RUNS", 3).max(1);
    let unchunked = knob("BENCH_UNCHUNKED", 1) > 0;
    let work = tempfile::tempdir().expect("tempdir");
    let cluster = work.path().join("cluster.json");
    let started = Instant::now();
    let objects = write_cluster(&cluster);
    eprintln!(
        "kube_snapshot: {objects} objects generated in {:.1}s; starting the test server",
        started.elapsed().as_secs_f64()
    );
    let srv = KubeTestServer::start_with(
        Options::default()
            .arg("--load")
            .arg(cluster.to_str().expect("path")),
    );
    let kubeconfig = srv.kubeconfig.clone(); // https, test CA, token
    let home = work.path().join("home");
    let cache = work.path().join("kube-cache");
    std::fs::create_dir_all(&home).expect("home");
    let snapshot_out = work.path().join("snapshot.json");
    let kubectl_out = work.path().join("kubectl.json");
    let permdrift = env!("CARGO_BIN_EXE_permdrift");
    let cache_arg = cache.to_str().expect("path").to_owned();
    let kubeconfig_arg = kubeconfig.to_str().expect("path").to_owned();
    let kubectl_args: Vec<&str> = vec!["--cache-dir", &cache_arg, "get", KINDS, "-A", "-o", "json"];
    let mut unchunked_args = kubectl_args.clone();
    unchunked_args.push("--chunk-size=0");
    let permdrift_args = [
        "snapshot",
        "--kube",
        "--kubeconfig",
        &kubeconfig_arg,
        "-o",
        snapshot_out.to_str().expect("path"),
    ];
    let env = [
        ("KUBECONFIG", kubeconfig.as_path()),
        ("HOME", home.as_path()),
    ];

    // Warm kubectl's discovery cache, as a user's would be.
    let warm = Command::new("kubectl")
        .args(["--cache-dir", &cache_arg, "api-resources", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", &home)
        .output()
        .expect("kubectl api-resources");
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 1..=runs {
        let p = timed(
            &srv,
            permdrift,
            &permdrift_args,
            &env,
            &work.path().join("permdrift.stdout"),
        );
        eprintln!(
            "kube_snapshot: run {run}: permdrift {:.2}s, {} MiB, {} requests",
            p.seconds,
            p.peak_kib / 1024,
            p.requests
        );
        ours.push(p);
        let k = timed(&srv, "kubectl", &kubectl_args, &env, &kubectl_out);
        eprintln!(
            "kube_snapshot: run {run}: kubectl {:.2}s, {} MiB, {} requests",
            k.seconds,
            k.peak_kib / 1024,
            k.requests
        );
        theirs.push(k);
    }
    let unchunked_run = unchunked.then(|| {
        let u = timed(
            &srv,
            "kubectl",
            &unchunked_args,
            &env,
            &work.path().join("kubectl-unchunked.json"),
        );
        eprintln!(
            "kube_snapshot: kubectl --chunk-size=0 {:.2}s, {} MiB, {} requests",
            u.seconds,
            u.peak_kib / 1024,
            u.requests
        );
        u
    });

    let a = permdrift_objects(&snapshot_out);
    let b = kubectl_objects(&kubectl_out);
    assert_eq!(a.len(), b.len(), "both read every object");
    assert!(a == b, "permdrift and kubectl read the same objects");

    let ratio = median(&theirs, |r| r.seconds) / median(&ours, |r| r.seconds);
    let memory_ratio =
        median(&theirs, |r| r.peak_kib as f64) / median(&ours, |r| r.peak_kib as f64);
    println!(
        "Kubernetes snapshot of {} objects ({} loaded), https + token, against one kube-test-server",
        a.len(),
        objects
    );
    println!("  permdrift snapshot --kube:        {}", describe(&ours));
    println!("  kubectl get {KINDS} -A -o json: {}", describe(&theirs));
    if let Some(u) = &unchunked_run {
        println!(
            "  kubectl ... --chunk-size=0:       {}",
            describe(std::slice::from_ref(u))
        );
    }
    println!(
        "  ratio kubectl / permdrift: {ratio:.1}x the wall time, {memory_ratio:.2}x the peak memory"
    );
    println!("  permdrift requests: {}", ours[0].by_request);
    println!("  kubectl requests:   {}", theirs[0].by_request);

    let summary = json!({
        "objects": a.len(),
        "loaded": objects,
        "runs": runs,
        "permdrift": ours.iter().map(|r| json!({"seconds": r.seconds, "peak_kib": r.peak_kib, "requests": r.requests})).collect::<Vec<_>>(),
        "kubectl": theirs.iter().map(|r| json!({"seconds": r.seconds, "peak_kib": r.peak_kib, "requests": r.requests})).collect::<Vec<_>>(),
        "kubectl_unchunked": unchunked_run.as_ref().map(|r| json!({"seconds": r.seconds, "peak_kib": r.peak_kib, "requests": r.requests})),
        "permdrift_requests": ours[0].by_request,
        "kubectl_requests": theirs[0].by_request,
        "ratio_time": ratio,
        "ratio_memory": memory_ratio,
    });
    let _ = std::fs::create_dir_all(".bench-out");
    std::fs::write(
        ".bench-out/kube_snapshot.json",
        serde_json::to_string_pretty(&summary).expect("summary JSON"),
    )
    .expect("write summary");
}
