//! A real `permdrift run` process for end-to-end tests: started with a
//! config, reached over its HTTP port, stopped with SIGTERM or SIGKILL.
//! Its log (JSON lines) goes to a file the test can read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use serde_json::{Value, json};

use kube_test_server::harness::{KubeTestServer, http_request};

pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    /// The authenticated API's TLS port (0 when the config disables it).
    pub api_port: u16,
    /// The API certificate's fingerprint, as logged at start.
    pub fingerprint: String,
    pub log: PathBuf,
}

impl Operator {
    /// Writes `config` (YAML, `http.listen` must be `127.0.0.1:0`, logging
    /// JSON) to `dir/NAME.yaml`, starts the operator and waits until it
    /// listens.
    pub fn start(dir: &Path, name: &str, config: &str) -> Operator {
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).expect("write operator config");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create operator log");
        let child = Command::new(crate::permdrift_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("POD_NAME", name)
            .env("RUST_LOG", "permdrift=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn permdrift run");
        let mut op = Operator {
            child: Some(child),
            port: 0,
            api_port: 0,
            fingerprint: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = op.log_lines();
            if let Some(started) = lines
                .iter()
                .find(|l| l["message"] == "permdrift operator started")
            {
                let port = |field: &str| {
                    started[field]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0)
                };
                op.port = port("listen");
                op.api_port = port("api");
                op.fingerprint = lines
                    .iter()
                    .find(|l| l["message"] == "API listening (TLS)")
                    .and_then(|l| l["fingerprint"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                assert_ne!(op.port, 0, "listen port in {started}");
                return op;
            }
            if let Some(status) = op.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("permdrift run exited with {status}:\n{}", op.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "permdrift run did not start within 30 s:\n{}",
                op.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines that are JSON (all of them once logging is set up).
    pub fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = http_request(self.port, "GET", path, &[], None);
        (r.status, r.text())
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        let r = http_request(self.port, "POST", path, &[], None);
        (r.status, r.text())
    }

    pub fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics: {text}");
        text
    }

    /// The value of one sample, `name{labels}` written exactly as exposed
    /// (labels sorted by name), or `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    pub fn is_ready(&self) -> bool {
        self.get("/readyz").0 == 200
    }

    /// Polls `check` every 50 ms until it holds; panics with the log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Operator) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; operator log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit (panics on anything else).
    pub fn terminate(mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "permdrift run exited with {status}:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "permdrift run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of `series` in a Prometheus text page.
pub fn metric_value(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// A scratch directory under `target/tmp` that outlives the test when it
/// fails (for reading the logs), emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = crate::target_tmpdir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs the permdrift binary.
pub fn permdrift(args: &[&str]) -> std::process::Output {
    Command::new(crate::permdrift_bin())
        .args(args)
        .output()
        .expect("run permdrift")
}

/// The journal's records, read and verified by the store's reader.
pub fn journal(store: &Path) -> Vec<Value> {
    permdrift::store::read_records(store)
        .expect("journal reads back")
        .into_iter()
        .map(|r| json!({"kind": r.kind, "source": r.source, "body": r.body}))
        .collect()
}

/// `change` records by their object's display name.
pub fn changes_by_object(store: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in journal(store) {
        if r["kind"] == "change" {
            let object = r["body"]["object"].as_str().unwrap_or_default().to_owned();
            out.entry(object).or_default().push(r["body"].clone());
        }
    }
    out
}

/// How many journal records of `kind` there are.
pub fn records_of_kind(store: &Path, kind: &str) -> usize {
    journal(store).iter().filter(|r| r["kind"] == kind).count()
}

/// `permdrift history verify` passes on the store.
pub fn assert_store_verifies(store: &Path) {
    let out = permdrift(&["history", "--store", &store.display().to_string(), "verify"]);
    assert!(
        out.status.success(),
        "history verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sum of every sample of a metric family whose labels contain `with`.
pub fn metric_sum(page: &str, family: &str, with: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The events.k8s.io Events in the test server.
pub fn events(server: &KubeTestServer) -> Vec<Value> {
    let out = server.kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("event list");
    list["items"].as_array().cloned().unwrap_or_default()
}
