//! Runs a kube-test-server in-process for a test and tears it down on drop.
//!
//! ```ignore
//! let srv = KubeTestServer::start();                  // token "test-token" = user "tester"
//! let out = srv.kubectl(&["get", "clusterroles", "-o", "json"]);
//! let client = srv.client().await;                    // kube::Client
//! srv.control("POST", "/_testserver/faults", r#"{"error_rate":1.0,"times":1}"#);
//! ```
//!
//! Options (the binary's flags) go in; a [`KubeTestServer`] comes out: the
//! [`crate::Server`] on its own thread and tokio runtime, listening on a free
//! port (HTTP and HTTPS on the same port), and a temp dir with kubeconfigs.
//! [`KubeTestServer::kubeconfig`] points kubectl at `https://` with the test
//! CA, because kubectl only sends tokens over TLS; [`KubeTestServer::client`]
//! uses plain `http://`. Dropping it closes every open connection at once,
//! as killing a server process would.
//!
//! With [`Options::authorizer_rbac`] the server authorizes by RBAC over its
//! stored objects; the default user [`USER`] is then in `system:masters`
//! (the test's admin), and [`KubeTestServer::add_token`] makes other users
//! whose access the test grants with bindings:
//!
//! ```ignore
//! let srv = KubeTestServer::start_with(Options::default().authorizer_rbac());
//! srv.add_token("alice-token", "alice", &["eng"], None);
//! let out = srv.kubectl_as("alice-token", &["get", "roles"]);   // 403 until bound
//! let status = srv.token_review("alice-token", &[]);            // {"authenticated": true, ...}
//! ```
//!
//! This is test support: every failure panics with its cause, as an
//! assertion does, so that tests read as the steps they take.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use base64::Engine;
use clap::Parser;
use serde_json::Value;

pub use crate::CA_PEM;
pub use crate::raw_http::{Response, http_request};
use crate::{Args, Server};

/// Default credentials of a started server.
pub const TOKEN: &str = "test-token";
pub const USER: &str = "tester";

/// Options for [`KubeTestServer::start_with`].
#[derive(Default, Clone)]
pub struct Options {
    /// extra command-line arguments
    pub args: Vec<String>,
    /// write `--audit-log` into the temp dir (see [`KubeTestServer::audit_events`])
    pub audit: bool,
    /// `--authorizer rbac`, with [`USER`] in `system:masters`
    pub rbac: bool,
}

impl Options {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// Authorize by RBAC over the stored objects (`--authorizer rbac`); the
    /// default user [`USER`] is in `system:masters`, so the test itself may
    /// do anything, while users added with [`KubeTestServer::add_token`]
    /// need bindings.
    pub fn authorizer_rbac(mut self) -> Self {
        self.rbac = true;
        self
    }
}

/// A running in-process kube-test-server; stopped when dropped.
pub struct KubeTestServer {
    running: Option<Running>,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `https://127.0.0.1:PORT`
    pub https_url: String,
    pub dir: tempfile::TempDir,
    /// kubeconfig for kubectl (https, test CA, token)
    pub kubeconfig: PathBuf,
    /// kubeconfig over plain http (token), for kube clients
    pub kubeconfig_http: PathBuf,
    pub audit_log: Option<PathBuf>,
}

/// How the server thread is asked to end.
enum Stop {
    /// End watch streams and let in-flight responses finish (SIGTERM).
    Graceful,
    /// Drop every connection now (a killed process).
    Kill,
}

/// The server's thread and the way to stop it.
struct Running {
    stop: tokio::sync::oneshot::Sender<Stop>,
    thread: JoinHandle<()>,
}

impl Running {
    /// Binds and serves `args` on a new thread with its own runtime;
    /// returns once the port is bound (or panics with why it could not be).
    fn spawn(args: Args) -> (Self, std::net::SocketAddr) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
        let thread = std::thread::Builder::new()
            .name("kube-test-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kube-test-server")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let server = match Server::bind(&args).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.local_addr()));
                    let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
                    let serving = server.serve(async {
                        let _ = graceful_rx.await;
                    });
                    tokio::pin!(serving);
                    tokio::select! {
                        () = &mut serving => {}
                        stop = stop_rx => if let Ok(Stop::Graceful) = stop {
                            let _ = graceful_tx.send(());
                            serving.await;
                        },
                    }
                });
                // Dropping the runtime drops every connection task still
                // running, so open watches end as they would if the
                // process died.
                drop(rt);
            })
            .unwrap_or_else(|e| panic!("spawn kube-test-server thread: {e}"));
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("kube-test-server: {e}"),
            Err(_) => panic!("kube-test-server thread ended before binding"),
        };
        (Running { stop, thread }, addr)
    }

    fn stop(self, how: Stop) {
        let _ = self.stop.send(how);
        if self.thread.join().is_err() && !std::thread::panicking() {
            panic!("kube-test-server thread panicked");
        }
    }
}

impl KubeTestServer {
    /// A server with token [`TOKEN`] for user [`USER`] (group `testers`).
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// A server started with `opts`; panics if its flags are invalid or it
    /// cannot start (a `--load` file that does not parse, say).
    pub fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit_log = opts.audit.then(|| dir.path().join("audit.log"));
        let groups = if opts.rbac {
            "testers,system:masters"
        } else {
            "testers"
        };
        let mut argv: Vec<std::ffi::OsString> = vec![
            "kube-test-server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--token".into(),
            format!("{TOKEN}={USER}:{groups}").into(),
        ];
        argv.extend(opts.args.iter().map(Into::into));
        if let Some(a) = &audit_log {
            argv.push("--audit-log".into());
            argv.push(a.into());
        }
        if opts.rbac {
            argv.push("--authorizer".into());
            argv.push("rbac".into());
        }
        let args = Args::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("kube-test-server options {:?}: {e}", opts.args));
        let (running, addr) = Running::spawn(args);
        let port = addr.port();
        let url = format!("http://127.0.0.1:{port}");
        let https_url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        let kubeconfig_http = dir.path().join("kubeconfig-http");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&https_url, true)).expect("kubeconfig");
        std::fs::write(&kubeconfig_http, kubeconfig_yaml(&url, false)).expect("kubeconfig");
        KubeTestServer {
            running: Some(running),
            port,
            url,
            https_url,
            dir,
            kubeconfig,
            kubeconfig_http,
            audit_log,
        }
    }

    /// A `kubectl` command using this server's kubeconfig, with HOME and the
    /// discovery cache inside the temp dir.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        self.kubectl_cmd_with(&self.kubeconfig, args)
    }

    fn kubectl_cmd_with(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args);
        c
    }

    /// Runs kubectl and returns its output (whatever its exit status).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl, asserting success and an empty stderr; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `stdin` as input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// A kubeconfig for kubectl (https, test CA) that presents `token`,
    /// written into the temp dir.
    pub fn kubeconfig_for(&self, token: &str) -> PathBuf {
        let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.path().join(format!("kubeconfig-{hex}"));
        write_kubeconfig(
            &path,
            &[KubeContext {
                name: "kts",
                server: &self.https_url,
                user: "token-user",
                token,
            }],
        );
        path
    }

    /// Runs kubectl presenting `token` (whatever its exit status).
    pub fn kubectl_as(&self, token: &str, args: &[&str]) -> Output {
        self.kubectl_cmd_with(&self.kubeconfig_for(token), args)
            .output()
            .expect("run kubectl")
    }

    /// Adds (or replaces) bearer token `token` for `user` in `groups`,
    /// expiring at `expires_at` (RFC 3339; `None`: never).
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str], expires_at: Option<&str>) {
        let body = serde_json::json!({
            "token": token, "user": user, "groups": groups, "expiresAt": expires_at,
        });
        self.control("POST", "/_testserver/tokens", &body.to_string());
    }

    /// Deletes a bearer token (it is refused from then on).
    pub fn delete_token(&self, token: &str) {
        let path = format!(
            "/_testserver/tokens/{}",
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
        );
        self.control("DELETE", &path, "");
    }

    /// One HTTP request presenting `token`; returns (status, headers, body).
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Response {
        http_request(
            self.port,
            method,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            body.map(str::as_bytes),
        )
    }

    /// The `status` of a TokenReview of `token` (for `audiences`, none: the
    /// server's own), created as [`USER`].
    pub fn token_review(&self, token: &str, audiences: &[&str]) -> Value {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        self.review("/apis/authentication.k8s.io/v1/tokenreviews", &body)
    }

    /// The `status` of a SubjectAccessReview with `spec`, created as [`USER`].
    pub fn access_review(&self, spec: Value) -> Value {
        let body = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": spec,
        });
        self.review("/apis/authorization.k8s.io/v1/subjectaccessreviews", &body)
    }

    fn review(&self, path: &str, body: &Value) -> Value {
        let r = self.request("POST", path, Some(&body.to_string()));
        assert_eq!(r.status, 201, "POST {path}: {}", r.text());
        r.json()["status"].clone()
    }

    /// A kube client for this server (plain http, bearer token).
    pub async fn client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig_http).await
    }

    /// A kube client over https with the test CA.
    pub async fn client_tls(&self) -> kube::Client {
        self.client_from(&self.kubeconfig).await
    }

    async fn client_from(&self, path: &Path) -> kube::Client {
        // Both rustls providers are compiled into this package, so kube's
        // TLS setup needs a process default; ignore "already installed".
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// One HTTP request with the default token; returns (status, headers, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        http_request(
            self.port,
            method,
            path,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            body.map(str::as_bytes),
        )
    }

    /// Calls the control API and parses its JSON answer.
    pub fn control(&self, method: &str, path: &str, body: &str) -> Value {
        let r = http_request(self.port, method, path, &[], Some(body.as_bytes()));
        assert_eq!(r.status, 200, "control {method} {path}: {}", r.text());
        r.json()
    }

    /// Audit events written so far (requires [`Options::audit`]).
    pub fn audit_events(&self) -> Vec<Value> {
        let path = self
            .audit_log
            .as_ref()
            .expect("server started without audit");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Stops the server as SIGTERM stops the binary: no new connections,
    /// open watch streams ended, in-flight responses finished. Panics if
    /// the server thread panicked.
    pub fn terminate(mut self) {
        if let Some(r) = self.running.take() {
            r.stop(Stop::Graceful);
        }
    }
}

impl Drop for KubeTestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop(Stop::Kill);
        }
    }
}

/// One context of a kubeconfig written by [`write_kubeconfig`].
pub struct KubeContext<'a> {
    pub name: &'a str,
    /// `http://...` or `https://...` (https entries get the test CA)
    pub server: &'a str,
    pub user: &'a str,
    pub token: &'a str,
}

/// Writes a kubeconfig with `contexts` (each with its own cluster and
/// user); the first one is the current context.
pub fn write_kubeconfig(path: &Path, contexts: &[KubeContext<'_>]) {
    let ca = base64::engine::general_purpose::STANDARD.encode(CA_PEM);
    let mut clusters = String::new();
    let mut users = String::new();
    let mut ctxs = String::new();
    for c in contexts {
        let ca_line = if c.server.starts_with("https://") {
            format!("\n    certificate-authority-data: {ca}")
        } else {
            String::new()
        };
        clusters.push_str(&format!(
            "- name: {n}-cluster\n  cluster:\n    server: {s}{ca_line}\n",
            n = c.name,
            s = c.server
        ));
        users.push_str(&format!(
            "- name: {n}-{u}\n  user:\n    token: {t}\n",
            n = c.name,
            u = c.user,
            t = c.token
        ));
        ctxs.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}-cluster\n    user: {n}-{u}\n",
            n = c.name,
            u = c.user
        ));
    }
    let current = contexts.first().map(|c| c.name).unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{ctxs}current-context: {current}\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

fn kubeconfig_yaml(server: &str, tls: bool) -> String {
    let ca = if tls {
        format!(
            "\n    certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(CA_PEM)
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kts\n  cluster:\n    server: {server}{ca}\nusers:\n- name: {USER}\n  user:\n    token: {TOKEN}\ncontexts:\n- name: kts\n  context:\n    cluster: kts\n    user: {USER}\n    namespace: default\ncurrent-context: kts\n"
    )
}
