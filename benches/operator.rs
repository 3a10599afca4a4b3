//! Operator benchmark: detection latency, per-event cost and memory of
//! `permdrift run` (release build) watching the project's Kubernetes API test
//! server preloaded with synthetic clusters of about 10,000 and 100,000 RBAC
//! objects (`synth::cluster`, `ClusterShape::medium()` / `large()`, seed 42),
//! under a background churn of 50 writes per second; and the AWS poll cycle
//! for an account of 5,000 roles in moto.
//!
//! Detection latency is measured from the moment the API server's answer to
//! a write reaches the writer (acknowledged) to the moment the operator's
//! verdict for it is in the journal (a `change` or `close` record, read by
//! tailing `journal.jsonl` every millisecond). The churn mixes three writes,
//! each judged and recorded once: a new RoleBinding to `edit` (a widening), the
//! deletion of a binding created 25 writes earlier (closes that widening), and
//! a Role whose rules are replaced. Writes go out on a fixed 20 ms schedule
//! from one connection, whatever the operator does.
//!
//! Per-event cost is the operator process's CPU time (utime + stime from
//! /proc) during the churn divided by the watch events it applied: everything
//! the process does (HTTP, JSON, judging, fsynced journal appends, Events)
//! counts. Memory is VmRSS after the churn (steady state) and VmHWM (peak,
//! including the initial list). Separately, after the servers stop, the same
//! churn is applied in process to the pure core (parse, index update, diff,
//! classify, decide; no HTTP, journal or Events), timed per write: the part
//! of an event's cost that is permdrift's own computation.
//!
//! Beside it, in the same run, what a user without the operator would run:
//! a poll, `kubectl get clusterroles,clusterrolebindings,roles,rolebindings
//! -A -o json` then `permdrift diff` against the state before the churn. One
//! such cycle is the least a poll-based check can take to notice a change.
//!
//! Run: `cargo bench --bench operator`. Knobs (environment): `BENCH_SIZES`
//! (`10k,100k`), `BENCH_CHURN_SECONDS` (30), `BENCH_AWS` (1: run the AWS
//! part), `BENCH_ROLES` (5000). A JSON summary goes to `.bench-out/operator.json`.

mod synth;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_test_server::harness::{KubeTestServer, Options, TOKEN, http_request};
use permdrift_test_support::moto;
use permdrift_test_support::operator::{Operator, metric_value, scratch};
use serde_json::{Value, json};

fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn knob_n(name: &str, default: usize) -> usize {
    knob(name, &default.to_string()).parse().unwrap_or(default)
}

/// `(utime + stime)` of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    ticks / 100.0
}

/// A `/proc/PID/status` field in MiB (`VmRSS`, `VmHWM`).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Tails the journal; records when each record for an object appeared.
struct Tail {
    seen: Arc<Mutex<BTreeMap<String, Vec<Instant>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tail {
    fn start(journal: PathBuf) -> Tail {
        let seen: Arc<Mutex<BTreeMap<String, Vec<Instant>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut offset = std::fs::metadata(&journal).map_or(0, |m| m.len());
                let mut partial = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut f) = std::fs::File::open(&journal)
                        && f.seek(SeekFrom::Start(offset)).is_ok()
                    {
                        let mut buf = Vec::new();
                        let n = f.read_to_end(&mut buf).unwrap_or(0);
                        let now = Instant::now();
                        offset += n as u64;
                        partial.extend_from_slice(&buf);
                        while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = partial.drain(..=nl).collect();
                            let Ok(record) = serde_json::from_slice::<Value>(&line) else {
                                continue;
                            };
                            if record["kind"] == "change" || record["kind"] == "close" {
                                let object = record["body"]["object"].as_str().unwrap_or_default();
                                if let Ok(mut seen) = seen.lock() {
                                    seen.entry(object.to_owned()).or_default().push(now);
                                }
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Tail {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn records(&self) -> BTreeMap<String, Vec<Instant>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One write of the churn: what was written and when the server answered.
struct Write {
    object: String,
    /// Which write to this object it was (0 = first), to match the n-th record.
    nth: usize,
    acked: Instant,
}

fn rbac(path: &str) -> String {
    format!("/apis/rbac.authorization.k8s.io/v1/{path}")
}

fn request(port: u16, method: &str, path: &str, content_type: &str, body: Option<String>) {
    let auth = format!("Bearer {TOKEN}");
    let r = http_request(
        port,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        body.as_deref().map(str::as_bytes),
    );
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.text()
    );
}

/// One planned write of the churn.
enum Planned {
    /// A new RoleBinding to `edit` for a new user (a widening).
    Create { namespace: String, body: Value },
    /// Deletes a binding the churn created earlier (closes its widening).
    Delete { namespace: String, name: String },
    /// Replaces a Role's rules (merge patch).
    PatchRules {
        namespace: String,
        name: String,
        rules: Value,
    },
}

impl Planned {
    fn object(&self) -> String {
        match self {
            Planned::Create { namespace, body } => {
                format!(
                    "RoleBinding/{namespace}/{}",
                    body["metadata"]["name"].as_str().unwrap_or_default()
                )
            }
            Planned::Delete { namespace, name } => format!("RoleBinding/{namespace}/{name}"),
            Planned::PatchRules {
                namespace, name, ..
            } => format!("Role/{namespace}/{name}"),
        }
    }

    /// Which write to the object this is (0 = first), to match the n-th record.
    fn nth(&self) -> usize {
        usize::from(matches!(self, Planned::Delete { .. }))
    }
}

/// The churn's writes, in order: a create, a delete of the binding created 25
/// writes earlier (once 8 are pending) and a Role rules patch, repeating.
fn plan(namespaces: usize, total: usize) -> Vec<Planned> {
    let mut created: Vec<(String, String)> = Vec::new();
    let mut role_patches = 0usize;
    (0..total)
        .map(|i| match i % 3 {
            0 => {
                let namespace = format!("team-{}", (i * 7) % namespaces);
                let name = format!("churn-{i}");
                let body = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": namespace},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("agent-{i}")}]});
                created.push((namespace.clone(), name));
                Planned::Create { namespace, body }
            }
            1 if created.len() > 8 => {
                let (namespace, name) = created.remove(0);
                Planned::Delete { namespace, name }
            }
            _ => {
                let namespace = format!("team-{}", role_patches % namespaces);
                let name = format!("role-{}", (role_patches / namespaces) % 8);
                role_patches += 1;
                let rules = json!([
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "update", "patch"]}]);
                Planned::PatchRules { namespace, name, rules }
            }
        })
        .collect()
}

/// 50 writes per second for `seconds`, on a fixed schedule.
fn churn(port: u16, namespaces: usize, seconds: usize) -> Vec<Write> {
    let start = Instant::now();
    let planned = plan(namespaces, seconds * 50);
    let mut writes = Vec::with_capacity(planned.len());
    for (i, write) in planned.iter().enumerate() {
        let due = start + Duration::from_millis(20 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match write {
            Planned::Create { namespace, body } => request(
                port,
                "POST",
                &rbac(&format!("namespaces/{namespace}/rolebindings")),
                "application/json",
                Some(body.to_string()),
            ),
            Planned::Delete { namespace, name } => request(
                port,
                "DELETE",
                &rbac(&format!("namespaces/{namespace}/rolebindings/{name}")),
                "application/json",
                None,
            ),
            Planned::PatchRules {
                namespace,
                name,
                rules,
            } => request(
                port,
                "PATCH",
                &rbac(&format!("namespaces/{namespace}/roles/{name}")),
                "application/merge-patch+json",
                Some(json!({"rules": rules}).to_string()),
            ),
        }
        writes.push(Write {
            object: write.object(),
            nth: write.nth(),
            acked: Instant::now(),
        });
    }
    writes
}

/// The pure core's share of an event, in process and single-threaded: the
/// same churn applied to an in-memory model (parse, index update) and judged
/// against the baseline (diff, classify, decide), with no HTTP, journal or
/// Events. Returns (mean, p50, p99) milliseconds per write.
fn core_cost(label: &str, shape: &synth::ClusterShape, writes: usize) -> (f64, f64, f64) {
    use permdrift::decide::{Policy, SourceState};
    use permdrift::index::k8s::{K8sModel, K8sObject};
    use permdrift::model::k8s::{RbacKey, RbacKind};
    use permdrift::snapshot::SourceSnapshot;
    let mut model = K8sModel::new();
    for object in synth::cluster(shape, 42) {
        if let Ok(o) = K8sObject::from_raw(object) {
            model.insert(o);
        }
    }
    let mut state = SourceState::new(SourceSnapshot::kubernetes("bench", model.clone()));
    let options = permdrift::operator::source::judge_options();
    let policy = Policy {
        source: "bench",
        mode: Default::default(),
        allow: &[],
    };
    let mut samples = Vec::with_capacity(writes);
    for (i, write) in plan(shape.namespaces, writes).into_iter().enumerate() {
        let clock = Instant::now();
        let key = match write {
            Planned::Create { body, .. } => {
                let o = K8sObject::from_raw(body).expect("churn binding parses");
                let key = o.parsed.key.clone();
                model.insert(o);
                key
            }
            Planned::Delete { namespace, name } => {
                let key = RbacKey::new(RbacKind::RoleBinding, Some(&namespace), &name);
                model.remove(&key);
                key
            }
            Planned::PatchRules {
                namespace,
                name,
                rules,
            } => {
                let key = RbacKey::new(RbacKind::Role, Some(&namespace), &name);
                let mut value = model.get(&key).expect("churn role exists").value();
                value["rules"] = rules;
                model.insert(K8sObject::from_raw(value).expect("patched role parses"));
                key
            }
        };
        std::hint::black_box(state.judge_k8s(&model, &key, &policy, second(i), &options));
        samples.push(clock.elapsed().as_secs_f64() * 1000.0);
    }
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    samples.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    eprintln!(
        "[{label}] pure core per event (parse, index, judge; in process): mean {mean:.3} ms, p50 {p50:.3} ms, p99 {p99:.3} ms over {writes} writes"
    );
    (mean, p50, p99)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn kube_config(dir: &Path, server: &KubeTestServer) -> String {
    format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: bench\n    kubernetes: {{kubeconfig: \"{}\"}}\n\
         events: {{enabled: true}}\nlogging: {{format: json, level: info}}\n",
        dir.join("store").display(),
        server.kubeconfig.display()
    )
}

/// One timed command: wall seconds and peak RSS (MiB) from /usr/bin/time.
fn timed(args: &[&str], stdout: Option<&Path>, env: &[(&str, &Path)]) -> (f64, f64) {
    let report = std::env::temp_dir().join(format!("permdrift-bench-time-{}", std::process::id()));
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%e %M").arg("-o").arg(&report).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(out) = stdout {
        cmd.stdout(std::fs::File::create(out).expect("output file"));
    } else {
        cmd.stdout(std::process::Stdio::null());
    }
    let status = cmd.status().expect("run /usr/bin/time");
    // permdrift diff exits 1 when it finds widening: that is a result here.
    assert!(matches!(status.code(), Some(0 | 1)), "{args:?}: {status}");
    let text = std::fs::read_to_string(&report).expect("time report");
    let (secs, kib) = synth::gnu_time(&text);
    let (secs, kib) = (secs.unwrap_or(f64::NAN), kib.map_or(f64::NAN, |k| k as f64));
    (secs, kib / 1024.0)
}

/// `i` seconds after the Unix epoch: the pure core's clock in the replay.
fn second(i: usize) -> jiff::Timestamp {
    jiff::Timestamp::from_second(i as i64).expect("a small time")
}

fn kube_size(label: &str, shape: &synth::ClusterShape, churn_seconds: usize) -> Value {
    let dir = scratch(&format!("bench-operator-{label}"));
    let list = dir.join("cluster.json");
    let objects = synth::write_cluster_list(shape, 42, &list);
    eprintln!("[{label}] {objects} objects; starting the test server");
    let server = KubeTestServer::start_with(
        Options::default()
            .arg("--load")
            .arg(list.display().to_string())
            .arg("--history")
            .arg("100000"),
    );
    let started = Instant::now();
    let op = Operator::start(&dir, "operator", &kube_config(&dir, &server));
    op.wait_for("readiness", Duration::from_secs(900), Operator::is_ready);
    let journal = dir.join("store/journal.jsonl");
    op.wait_for("the baseline", Duration::from_secs(300), |_| {
        std::fs::read_to_string(&journal).is_ok_and(|j| j.contains("\"kind\":\"baseline\""))
    });
    let ready = started.elapsed().as_secs_f64();
    eprintln!("[{label}] operator ready with a baseline in {ready:.2}s");
    let rss_ready = status_mib(op.pid(), "VmRSS");

    let tail = Tail::start(journal.clone());
    let events = |op: &Operator| {
        let page = op.metrics();
        ["apply", "delete"]
            .iter()
            .filter_map(|t| {
                metric_value(
                    &page,
                    &format!("permdrift_watch_events_total{{source=\"bench\",type=\"{t}\"}}"),
                )
            })
            .sum::<f64>()
    };
    let (cpu0, events0) = (cpu_seconds(op.pid()), events(&op));
    eprintln!("[{label}] churn: 50 writes/s for {churn_seconds}s");
    // BENCH_PERF=FILE: profile the operator during the churn (for development).
    let perf = std::env::var("BENCH_PERF").ok().map(|file| {
        std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "999",
                "--call-graph",
                "dwarf,16384",
                "-o",
                &file,
                "-p",
                &op.pid().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf")
    });
    let writes = churn(server.port, shape.namespaces, churn_seconds);
    if let Some(perf) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait_with_output();
    }
    // Let the last verdicts land.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = tail.records();
        let matched = writes
            .iter()
            .filter(|w| seen.get(&w.object).is_some_and(|v| v.len() > w.nth))
            .count();
        if matched == writes.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cpu1, events1) = (cpu_seconds(op.pid()), events(&op));
    let rss_steady = status_mib(op.pid(), "VmRSS");
    let rss_peak = status_mib(op.pid(), "VmHWM");
    let seen = tail.records();
    let mut latencies: Vec<f64> = Vec::new();
    let mut unmatched = 0;
    for w in &writes {
        match seen.get(&w.object).and_then(|v| v.get(w.nth)) {
            Some(at) => {
                latencies.push(at.saturating_duration_since(w.acked).as_secs_f64() * 1000.0)
            }
            None => unmatched += 1,
        }
    }
    // BENCH_TRACE=FILE: each write's offset into the churn and its latency, in
    // write order (for finding when stalls happen, during development).
    if let (Ok(file), Some(first)) = (std::env::var("BENCH_TRACE"), writes.first()) {
        let rows: String = writes
            .iter()
            .map(|w| {
                let latency = seen
                    .get(&w.object)
                    .and_then(|v| v.get(w.nth))
                    .map(|at| at.saturating_duration_since(w.acked).as_secs_f64() * 1000.0);
                format!(
                    "{:.1},{}\n",
                    w.acked.saturating_duration_since(first.acked).as_secs_f64() * 1000.0,
                    latency.map_or("-".to_owned(), |l| format!("{l:.1}"))
                )
            })
            .collect();
        std::fs::write(file, rows).expect("trace file");
    }
    latencies.sort_by(f64::total_cmp);
    let event_count = events1 - events0;
    let per_event_ms = (cpu1 - cpu0) * 1000.0 / event_count.max(1.0);
    eprintln!(
        "[{label}] latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} writes ({unmatched} unmatched); \
         {per_event_ms:.3} ms CPU per event over {event_count} events; RSS {rss_steady:.0} MiB steady, {rss_peak:.0} MiB peak",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    drop(tail);

    // What a user would otherwise run: one poll cycle, kubectl + diff.
    let after = dir.join("after.json");
    let kubeconfig = server.kubeconfig.clone();
    let home = dir.join("kubectl-home");
    std::fs::create_dir_all(&home).expect("kubectl home");
    let (kubectl_s, kubectl_mib) = timed(
        &[
            "kubectl",
            "get",
            "clusterroles,clusterrolebindings,roles,rolebindings",
            "-A",
            "-o",
            "json",
            "--request-timeout=0",
        ],
        Some(&after),
        &[("KUBECONFIG", &kubeconfig), ("HOME", &home)],
    );
    let (diff_s, diff_mib) = timed(
        &[
            env!("CARGO_BIN_EXE_permdrift"),
            "-q",
            "diff",
            "--format",
            "json",
            list.to_str().unwrap_or_default(),
            after.to_str().unwrap_or_default(),
        ],
        None,
        &[],
    );
    let cycle = kubectl_s + diff_s;
    let p99 = percentile(&latencies, 99.0);
    eprintln!(
        "[{label}] poll alternative: kubectl {kubectl_s:.2}s ({kubectl_mib:.0} MiB) + permdrift diff {diff_s:.2}s = {cycle:.2}s per cycle, {:.0}x our p99",
        cycle * 1000.0 / p99
    );
    op.terminate();
    drop(server);
    let (core_mean, core_p50, core_p99) = core_cost(label, shape, writes.len());
    json!({
        "objects": objects,
        "core_ms_per_event": {"mean": core_mean, "p50": core_p50, "p99": core_p99},
        "ready_seconds": ready,
        "writes": writes.len(),
        "unmatched": unmatched,
        "latency_ms": {"p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0),
                        "p99": p99, "max": latencies.last()},
        "cpu_ms_per_event": per_event_ms,
        "events": event_count,
        "rss_mib": {"ready": rss_ready, "steady": rss_steady, "peak": rss_peak},
        "poll_alternative": {"kubectl_seconds": kubectl_s, "kubectl_peak_mib": kubectl_mib,
                             "diff_seconds": diff_s, "diff_peak_mib": diff_mib, "cycle_seconds": cycle,
                             "ratio_to_p99": cycle * 1000.0 / p99},
    })
}

fn aws_part(roles: usize) -> Value {
    moto::aws_env();
    let moto = moto::Moto::start(&[]);
    let iam = moto.iam();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let populate = Instant::now();
    rt.block_on(async {
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let mut arns = Vec::new();
        for p in 0..100 {
            let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": [format!("s3:Get{p}*"), "dynamodb:Query"], "Resource": format!("arn:aws:s3:::bucket-{p}/*")}]});
            let out = iam.create_policy().policy_name(format!("p{p}")).policy_document(doc.to_string()).send().await.expect("create policy");
            arns.push(out.policy().and_then(|p| p.arn()).unwrap_or_default().to_owned());
        }
        let arns = Arc::new(arns);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (iam, arns, next) = (iam.clone(), arns.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= roles {
                        break;
                    }
                    let name = format!("role-{r}");
                    iam.create_role().role_name(&name).assume_role_policy_document(trust).send().await.expect("create role");
                    let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": format!("arn:aws:sqs:us-east-1:123456789012:q{r}")}]});
                    iam.put_role_policy().role_name(&name).policy_name("inline").policy_document(doc.to_string()).send().await.expect("put role policy");
                    iam.attach_role_policy().role_name(&name).policy_arn(&arns[r % arns.len()]).send().await.expect("attach");
                }
            }));
        }
        for t in tasks {
            t.await.expect("populate task");
        }
    });
    eprintln!(
        "[aws] {roles} roles populated in {:.0}s",
        populate.elapsed().as_secs_f64()
    );
    let dir = scratch("bench-operator-aws");
    let config = format!(
        "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore: {{path: \"{}\"}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\napi: {{listen: \"127.0.0.1:0\"}}\nleaderElection: {{enabled: false}}\n\
         sources:\n  - name: acct\n    aws: {{profile: {}, endpointUrl: \"{}\", pollInterval: 1s}}\n\
         logging: {{format: json, level: debug}}\n",
        dir.join("store").display(),
        moto::PROFILE,
        moto.endpoint()
    );
    let op = Operator::start(&dir, "operator", &config);
    op.wait_for("readiness", Duration::from_secs(300), Operator::is_ready);
    let journal = dir.join("store/journal.jsonl");
    let tail = Tail::start(journal);
    // Five widenings, one per cycle or so.
    let mut writes = Vec::new();
    for w in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        let name = format!("role-{}", w * 997 % roles);
        rt.block_on(async {
            let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]});
            iam.put_role_policy().role_name(&name).policy_name("agent-suggested").policy_document(doc.to_string()).send().await.expect("widen");
        });
        writes.push((
            format!("Role arn:aws:iam::123456789012:role/{name}"),
            Instant::now(),
        ));
    }
    op.wait_for("the five verdicts", Duration::from_secs(120), |_| {
        let seen = tail.records();
        writes.iter().all(|(o, _)| seen.contains_key(o))
    });
    let seen = tail.records();
    let latencies: Vec<f64> = writes
        .iter()
        .filter_map(|(o, at)| {
            Some(
                seen.get(o)?
                    .first()?
                    .saturating_duration_since(*at)
                    .as_secs_f64(),
            )
        })
        .collect();
    let lines = op.log_lines();
    let fetch: Vec<f64> = lines
        .iter()
        .filter(|l| l["message"] == "polled")
        .filter_map(|l| l["fetch_seconds"].as_f64())
        .collect();
    let judge: Vec<f64> = lines
        .iter()
        .filter(|l| l["message"] == "poll judged")
        .filter_map(|l| l["judge_seconds"].as_f64())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rss = status_mib(op.pid(), "VmRSS");
    eprintln!(
        "[aws] poll cycle: fetch {:.2}s + judge {:.3}s (means of {} and {} polls); detection latency {:?} s; RSS {rss:.0} MiB",
        mean(&fetch),
        mean(&judge),
        fetch.len(),
        judge.len(),
        latencies
            .iter()
            .map(|l| (l * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    drop(tail);
    op.terminate();
    json!({"roles": roles, "fetch_seconds_mean": mean(&fetch), "judge_seconds_mean": mean(&judge),
           "polls": fetch.len(), "latency_seconds": latencies, "rss_mib": rss})
}

fn main() {
    let churn_seconds = knob_n("BENCH_CHURN_SECONDS", 30);
    let mut summary = serde_json::Map::new();
    for size in knob("BENCH_SIZES", "10k,100k").split(',') {
        let shape = match size.trim() {
            "10k" => synth::ClusterShape::medium(),
            "100k" => synth::ClusterShape::large(),
            other => panic!("BENCH_SIZES: unknown size {other:?} (10k, 100k)"),
        };
        summary.insert(
            size.trim().to_owned(),
            kube_size(size.trim(), &shape, churn_seconds),
        );
    }
    if knob("BENCH_AWS", "1") == "1" {
        summary.insert("aws".into(), aws_part(knob_n("BENCH_ROLES", 5000)));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(".bench-out");
    let _ = std::fs::create_dir_all(&out);
    let text = serde_json::to_string_pretty(&Value::Object(summary)).unwrap_or_default();
    let _ = std::fs::write(out.join("operator.json"), &text);
    println!("{text}");
}
