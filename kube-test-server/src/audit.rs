//! Audit trail. Each handled API request is described by an [`Record`],
//! turned into an `audit.k8s.io/v1` `Event`, and written as one JSON line to
//! `--audit-log` (flushed before the response is sent, so a test can read
//! it right after its request) and queued for the `--audit-webhook` sender,
//! a background task that POSTs `EventList` batches and never blocks the API.
//! The webhook may be `https://` (trusting the CA of `--audit-webhook-ca`)
//! and may send a bearer token (`--audit-webhook-token`), as kube-apiserver
//! does with its webhook kubeconfig.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::auth::UserInfo;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("audit webhook URL {0:?}: only http(s)://HOST:PORT/PATH is supported")]
    Url(String),
    #[error("audit webhook CA {path}: {message}")]
    Ca { path: String, message: String },
}

/// Everything known about one request when it completes.
pub struct Record<'a> {
    pub level: &'static str,
    pub stage: &'static str,
    pub request_uri: &'a str,
    pub verb: &'a str,
    pub user: &'a UserInfo,
    pub impersonated: Option<&'a UserInfo>,
    pub source_ip: String,
    pub user_agent: &'a str,
    pub object_ref: Option<Value>,
    pub code: u16,
    /// the Status of a failed request
    pub status: Option<Value>,
    pub request_object: Option<Value>,
    pub response_object: Option<Value>,
    pub received: jiff::Timestamp,
    pub decision: &'static str,
}

pub fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A random UID in the 8-4-4-4-12 form (audit IDs, AdmissionReview uids).
pub fn audit_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Record<'_> {
    pub fn to_event(&self) -> Value {
        let mut e = Map::new();
        e.insert("kind".into(), json!("Event"));
        e.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        e.insert("level".into(), json!(self.level));
        e.insert("auditID".into(), json!(audit_id()));
        e.insert("stage".into(), json!(self.stage));
        e.insert("requestURI".into(), json!(self.request_uri));
        e.insert("verb".into(), json!(self.verb));
        e.insert("user".into(), self.user.to_json());
        if let Some(i) = self.impersonated {
            e.insert("impersonatedUser".into(), i.to_json());
        }
        e.insert("sourceIPs".into(), json!([self.source_ip]));
        e.insert("userAgent".into(), json!(self.user_agent));
        if let Some(o) = &self.object_ref {
            e.insert("objectRef".into(), o.clone());
        }
        let mut rs = Map::new();
        rs.insert("metadata".into(), json!({}));
        if let Some(Value::Object(s)) = &self.status {
            for k in ["status", "message", "reason", "details"] {
                if let Some(v) = s.get(k) {
                    rs.insert(k.into(), v.clone());
                }
            }
        }
        rs.insert("code".into(), json!(self.code));
        e.insert("responseStatus".into(), Value::Object(rs));
        if let Some(o) = &self.request_object {
            e.insert("requestObject".into(), o.clone());
        }
        if let Some(o) = &self.response_object {
            e.insert("responseObject".into(), o.clone());
        }
        e.insert(
            "requestReceivedTimestamp".into(),
            json!(micro_time(self.received)),
        );
        e.insert(
            "stageTimestamp".into(),
            json!(micro_time(jiff::Timestamp::now())),
        );
        e.insert(
            "annotations".into(),
            json!({"authorization.k8s.io/decision": self.decision}),
        );
        Value::Object(e)
    }
}

/// Where audit events go.
pub struct Audit {
    file: Option<Mutex<BufWriter<File>>>,
    webhook: Option<UnboundedSender<Value>>,
}

/// How the webhook sender authenticates the operator and itself.
#[derive(Default, Clone)]
pub struct WebhookAuth {
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// PEM CA certificates trusted for an `https://` webhook.
    pub ca: Option<std::path::PathBuf>,
}

impl Audit {
    /// Opens the log (appending) and starts the webhook sender, which
    /// authenticates with `auth`.
    pub fn new(
        log: Option<&Path>,
        webhook: Option<&str>,
        auth: WebhookAuth,
    ) -> Result<Self, AuditError> {
        let file = match log {
            Some(p) => Some(Mutex::new(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| AuditError::File {
                        path: p.display().to_string(),
                        source,
                    })?,
            ))),
            None => None,
        };
        let webhook = match webhook {
            Some(url) => {
                let mut target = parse_url(url).ok_or_else(|| AuditError::Url(url.to_string()))?;
                target.token = auth.token.clone();
                if target.tls {
                    target.tls_config = Some(std::sync::Arc::new(tls_config(auth.ca.as_deref())?));
                }
                let (tx, rx) = unbounded_channel();
                tokio::spawn(webhook_sender(target, rx));
                Some(tx)
            }
            None => None,
        };
        Ok(Audit { file, webhook })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.webhook.is_some()
    }

    pub fn emit(&self, rec: &Record) {
        if self.enabled() {
            self.emit_event(rec.to_event());
        }
    }

    /// Writes an already built event (e.g. a watch's ResponseComplete).
    pub fn emit_event(&self, ev: Value) {
        if !self.enabled() {
            return;
        }
        if let Some(f) = &self.file {
            let mut w = f.lock().unwrap_or_else(|e| e.into_inner());
            let line = serde_json::to_vec(&ev).unwrap_or_default();
            let res = w
                .write_all(&line)
                .and_then(|_| w.write_all(b"\n"))
                .and_then(|_| w.flush());
            if let Err(e) = res {
                tracing::warn!("audit log write failed: {e}");
            }
        }
        if let Some(tx) = &self.webhook {
            let _ = tx.send(ev);
        }
    }
}

struct Url {
    host_port: String,
    path: String,
    tls: bool,
    token: Option<String>,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Trust for an https webhook: the CA file, else the test server's own CA.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, AuditError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let err = |message: String| AuditError::Ca {
        path: ca.map(|p| p.display().to_string()).unwrap_or_default(),
        message,
    };
    let pem = match ca {
        Some(p) => std::fs::read(p).map_err(|e| err(e.to_string()))?,
        None => crate::serve::CA_PEM.as_bytes().to_vec(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(e.to_string()))
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

fn parse_url(url: &str) -> Option<Url> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host_port.is_empty() {
        return None;
    }
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else if tls {
        format!("{host_port}:443")
    } else {
        format!("{host_port}:80")
    };
    Some(Url {
        host_port,
        path: path.to_string(),
        tls,
        token: None,
        tls_config: None,
    })
}

/// Batches events and POSTs them as an `EventList`; failures are logged and
/// the batch dropped, like a best-effort webhook backend.
async fn webhook_sender(target: Url, mut rx: UnboundedReceiver<Value>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Let a burst accumulate briefly so requests become one POST.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        let body = json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": batch,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        match tokio::time::timeout(Duration::from_secs(5), post(&target, &bytes)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => {}
            Ok(Ok(code)) => tracing::warn!("audit webhook answered HTTP {code}"),
            Ok(Err(e)) => tracing::warn!("audit webhook failed: {e}"),
            Err(_) => tracing::warn!("audit webhook timed out"),
        }
    }
}

/// A minimal HTTP/1.1 POST, over TLS for an https URL; returns the status code.
async fn post(target: &Url, body: &[u8]) -> std::io::Result<u16> {
    let tcp = TcpStream::connect(&target.host_port).await?;
    match &target.tls_config {
        Some(config) => {
            let host = target
                .host_port
                .rsplit_once(':')
                .map_or(target.host_port.as_str(), |(h, _)| h)
                .trim_matches(['[', ']'])
                .to_string();
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            post_on(tls, target, body).await
        }
        None => post_on(tcp, target, body).await,
    }
}

async fn post_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    target: &Url,
    body: &[u8],
) -> std::io::Result<u16> {
    let auth = target
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: kube-test-server\r\n{auth}Connection: close\r\n\r\n",
        target.path,
        target.host_port,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 1024];
    // Only the status line matters; read until it is complete.
    while !resp.contains(&b'\n') {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&resp);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}
