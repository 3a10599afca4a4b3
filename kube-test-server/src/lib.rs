//! Dev-only Kubernetes API test server, as a library. Command-line flags
//! ([`Args`]) become a bound [`Server`]: the shared `http::App` (store
//! preloaded from `--load`, credentials, authorizer, audit sinks, faults)
//! behind one listening port; [`Server::serve`] answers requests until its
//! stop future resolves. The `kube-test-server` binary (`main.rs`) runs one
//! until SIGTERM; [`harness`] runs one in-process for a test, with the
//! kubeconfigs kubectl and kube clients need.

#![forbid(unsafe_code)]

mod admission;
mod aggregate;
mod audit;
mod auth;
mod authz;
mod control;
mod discovery;
mod error;
mod faults;
pub mod harness;
mod http;
mod kinds;
mod load;
mod managed;
mod metrics;
mod ops;
mod patch;
mod proto;
pub mod raw_http;
mod rbac;
mod selector;
mod serve;
mod store;
mod table;
mod tokens;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

pub use serve::CA_PEM;

/// The server's TLS acceptor (the fixed test certificate for 127.0.0.1,
/// ::1 and localhost, signed by [`CA_PEM`]): tests serve HTTPS with it, for
/// example an admission webhook whose `caBundle` is [`CA_PEM`].
pub fn tls_acceptor() -> Result<tokio_rustls::TlsAcceptor, serve::TlsError> {
    serve::acceptor()
}

/// A small, fast, in-memory Kubernetes API server for tests and benchmarks.
///
/// Serves RBAC, core (Namespace, ServiceAccount, Event, ConfigMap, Secret),
/// events.k8s.io Events, Leases and CustomResourceDefinitions (and the kinds
/// they define) well enough for kubectl and kube-runtime. State lives in
/// memory only. Test controls (faults, deny list, stats) are under
/// /_testserver/; see docs/kube-test-server.md.
#[derive(Debug, Parser)]
#[command(name = "kube-test-server", version, about, long_about)]
pub struct Args {
    /// Address to listen on, for plain HTTP and HTTPS (built-in test
    /// certificate) alike; port 0 picks a free port. The first line on
    /// stdout is `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,

    /// Accept bearer token TOKEN as USER (in the given groups). Repeatable.
    #[arg(long = "token", value_name = "TOKEN=USER[:GROUP,GROUP...]")]
    tokens: Vec<String>,

    /// Audiences the server identifies as: a token is good for requests
    /// here, and a TokenReview without `spec.audiences` succeeds, only if the
    /// token's audiences include one of them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "https://kubernetes.default.svc.cluster.local",
        value_name = "AUD,..."
    )]
    api_audiences: Vec<String>,

    /// What authorizes requests and access reviews beyond the deny list:
    /// `deny-list` allows everything else; `rbac` evaluates the stored
    /// Roles, ClusterRoles and bindings (system:masters may do anything).
    #[arg(long, value_enum, default_value_t = authz::Mode::DenyList)]
    authorizer: authz::Mode,

    /// Accept basic auth USER:PASSWORD (in the given groups). Repeatable.
    #[arg(long = "basic", value_name = "USER:PASSWORD[:GROUP,...]")]
    basic: Vec<String>,

    /// Serve requests without credentials as system:anonymous. Without it,
    /// such requests get 401, unless no --token/--basic is given at all
    /// (then the server is open).
    #[arg(long)]
    anonymous: bool,

    /// Append an audit.k8s.io/v1 Event per request to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,

    /// POST audit.k8s.io/v1 EventList batches to URL (http:// or https://).
    #[arg(long, value_name = "URL")]
    audit_webhook: Option<String>,

    /// Bearer token the audit webhook sends.
    #[arg(long, value_name = "TOKEN", requires = "audit_webhook")]
    audit_webhook_token: Option<String>,

    /// PEM CA trusted for an https audit webhook [default: the server's own CA].
    #[arg(long, value_name = "FILE", requires = "audit_webhook")]
    audit_webhook_ca: Option<PathBuf>,

    /// Watch events kept for watches and paged lists that resume from an
    /// older resourceVersion; older ones get 410 Expired.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    history: usize,

    /// Preload objects from a YAML/JSON file (List, JSON array or
    /// multi-document YAML). Repeatable.
    #[arg(long = "load", value_name = "FILE")]
    load: Vec<PathBuf>,

    /// Initial fault configuration: JSON text, or @FILE (see the docs).
    #[arg(long, value_name = "JSON")]
    faults: Option<String>,

    /// Initial deny list: JSON rule or array of rules, or @FILE.
    #[arg(long, value_name = "JSON")]
    deny: Option<String>,

    /// Seed for faults, UIDs and generated names.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,

    /// Kubernetes version (major.minor) reported by /version. The gcloud
    /// kubectl dispatcher runs the kubectl release matching it (1.32 is the
    /// kubectl the project targets).
    #[arg(long, default_value = "1.32", value_name = "MAJOR.MINOR")]
    server_version: String,

    /// Where the Service NS/NAME named by an admission webhook's
    /// clientConfig.service answers: `NS/NAME=https://HOST:PORT` (the
    /// service's path is appended). Repeatable.
    #[arg(long = "webhook-service", value_name = "NS/NAME=URL")]
    webhook_services: Vec<String>,

    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    bookmark_interval: u64,
}

/// Why a [`Server`] could not start; each names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Credentials(#[from] auth::AuthConfigError),
    #[error("--faults: {0}")]
    Faults(JsonArgError),
    #[error("--deny: {0}")]
    Deny(JsonArgError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error("--load {0}")]
    Load(#[from] load::LoadError),
    #[error("creating namespace {namespace}: {message}")]
    Namespace { namespace: String, message: String },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] serve::TlsError),
    #[error("--webhook-service {0:?}: expected NS/NAME=URL")]
    WebhookService(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A `--faults`/`--deny` value that is neither JSON nor a readable `@FILE`
/// of JSON, or JSON of the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum JsonArgError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn json_arg(s: &str) -> Result<serde_json::Value, JsonArgError> {
    let text = match s.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|source| JsonArgError::Read {
            path: path.to_string(),
            source,
        })?,
        None => s.to_string(),
    };
    Ok(serde_json::from_str(&text)?)
}

/// A configured server bound to its port, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<http::App>,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: tokio::sync::watch::Sender<bool>,
    addr: SocketAddr,
    loaded: Option<(usize, Duration)>,
}

impl Server {
    /// Builds the store (the four namespaces every cluster has, then the
    /// `--load` files), credentials, authorizer, audit sinks and faults of
    /// `args`, and binds `--listen`.
    pub async fn bind(args: &Args) -> Result<Self, Error> {
        let auth = auth::Authenticator::new(
            &args.tokens,
            &args.basic,
            args.anonymous,
            args.api_audiences.clone(),
        )?;
        let fault_cfg = match &args.faults {
            Some(f) => faults::FaultConfig::parse(json_arg(f).map_err(Error::Faults)?)
                .map_err(|e| Error::Faults(e.into()))?,
            None => faults::FaultConfig::default(),
        };
        let deny = match &args.deny {
            Some(d) => auth::parse_rules(json_arg(d).map_err(Error::Deny)?)
                .map_err(|e| Error::Deny(e.into()))?,
            None => Vec::new(),
        };
        let audit = audit::Audit::new(
            args.audit_log.as_deref(),
            args.audit_webhook.as_deref(),
            audit::WebhookAuth {
                token: args.audit_webhook_token.clone(),
                ca: args.audit_webhook_ca.clone(),
            },
        )?;
        let mut webhook_services = admission::Services::new();
        for s in &args.webhook_services {
            let parsed = s.split_once('=').and_then(|(svc, url)| {
                let (ns, name) = svc.split_once('/')?;
                (!ns.is_empty() && !name.is_empty() && !url.is_empty())
                    .then(|| ((ns.to_string(), name.to_string()), url.to_string()))
            });
            let (key, url) = parsed.ok_or_else(|| Error::WebhookService(s.clone()))?;
            webhook_services.insert(key, url);
        }

        let mut st = store::Store::new(args.history, args.seed);
        let now = http::now_rfc3339();
        let ns_kd = st
            .kinds
            .get("", "namespaces")
            .ok_or_else(|| Error::Namespace {
                namespace: "default".into(),
                message: "namespaces missing from the kind table".into(),
            })?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let c = ops::Ctx {
                kd: &ns_kd,
                version: "v1",
                namespace: None,
                manager: "kube-apiserver",
                now: &now,
                dry_run: false,
                preload: false,
            };
            ops::create(
                &mut st,
                &c,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .map_err(|e| Error::Namespace {
                namespace: ns.into(),
                message: e.message,
            })?;
        }
        let mut loaded = None;
        if !args.load.is_empty() {
            let t = Instant::now();
            let n = load::load(&mut st, &args.load, &now)?;
            tracing::info!("loaded {n} objects in {:?}", t.elapsed());
            loaded = Some((n, t.elapsed()));
        }

        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: args.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: args.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let app = Arc::new(http::App::new(
            st,
            auth,
            deny,
            args.authorizer,
            faults::Faults::new(fault_cfg, args.seed),
            audit,
            Duration::from_secs(args.bookmark_interval.clamp(1, 86_400)),
            shutdown_rx,
            addr.to_string(),
            args.server_version.clone(),
            webhook_services,
            metrics::Metrics::new()?,
        ));
        let tls = serve::acceptor()?;
        Ok(Server {
            listener,
            app,
            tls,
            shutdown,
            addr,
            loaded,
        })
    }

    /// The bound address (the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Objects preloaded from `--load` and how long that took, if any.
    pub fn loaded(&self) -> Option<(usize, Duration)> {
        self.loaded
    }

    /// Serves plain HTTP and HTTPS on the bound port until `stop` resolves,
    /// then ends open watch streams and gives in-flight responses a moment.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        serve::run(self.listener, self.app, self.tls, stop).await;
        let _ = self.shutdown.send(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
