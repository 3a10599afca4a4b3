//! Starts the `kube-test-server` binary for a test and tears it down on drop.
//!
//! ```ignore
//! let srv = KubeTestServer::start();                  // token "test-token" = user "tester"
//! let out = srv.kubectl(&["get", "clusterroles", "-o", "json"]);
//! let client = srv.client().await;                    // kube::Client
//! srv.control("POST", "/_testserver/faults", r#"{"error_rate":1.0,"times":1}"#);
//! ```
//!
//! The server listens on a free port (HTTP and HTTPS on the same port).
//! [`KubeTestServer::kubeconfig`] points kubectl at `https://` with the test
//! CA, because kubectl only sends tokens over TLS; [`KubeTestServer::client`]
//! uses plain `http://`.
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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// The CA that signed the test server's certificate.
pub const CA_PEM: &str = include_str!("../../src/bin/kube-test-server/tls/ca.crt");

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

/// A running kube-test-server; killed (by PID) when dropped.
pub struct KubeTestServer {
    child: Child,
    _stdout: BufReader<ChildStdout>,
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

impl KubeTestServer {
    /// A server with token [`TOKEN`] for user [`USER`] (group `testers`).
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit_log = opts.audit.then(|| dir.path().join("audit.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-test-server"));
        let groups = if opts.rbac {
            "testers,system:masters"
        } else {
            "testers"
        };
        cmd.args(["--listen", "127.0.0.1:0", "--token"])
            .arg(format!("{TOKEN}={USER}:{groups}"))
            .args(&opts.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(a) = &audit_log {
            cmd.arg("--audit-log").arg(a);
        }
        if opts.rbac {
            cmd.args(["--authorizer", "rbac"]);
        }
        let mut child = cmd.spawn().expect("spawn kube-test-server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let url = format!("http://127.0.0.1:{port}");
        let https_url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        let kubeconfig_http = dir.path().join("kubeconfig-http");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&https_url, true)).expect("kubeconfig");
        std::fs::write(&kubeconfig_http, kubeconfig_yaml(&url, false)).expect("kubeconfig");
        KubeTestServer {
            child,
            _stdout: stdout,
            port,
            url,
            https_url,
            dir,
            kubeconfig,
            kubeconfig_http,
            audit_log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for KubeTestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A raw HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Newline-delimited JSON values (watch streams).
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("watch line is JSON"))
            .collect()
    }
}

/// A minimal blocking HTTP/1.1 client (plain http to 127.0.0.1), enough for
/// raw requests, control calls and short watches (use `timeoutSeconds`).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    // A dropped (faulted) stream ends with an error; keep what arrived.
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        rest = dechunk(&rest);
    }
    Response {
        status,
        headers,
        body: rest,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            out.extend_from_slice(&data[(eol + 2).min(data.len())..]);
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}
