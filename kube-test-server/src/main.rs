//! Dev-only Kubernetes API test server. Command-line flags become the shared
//! [`http::App`] (store preloaded from `--load`, credentials, authorizer,
//! audit sinks, faults); the server binds, announces `listening on http://ADDR` as its
//! first stdout line, and serves until SIGTERM/SIGINT.

mod aggregate;
mod audit;
mod auth;
mod authz;
mod control;
mod discovery;
mod error;
mod faults;
mod http;
mod kinds;
mod load;
mod managed;
mod ops;
mod patch;
mod proto;
mod rbac;
mod selector;
mod serve;
mod store;
mod table;
mod tokens;
mod watch;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;

/// A small, fast, in-memory Kubernetes API server for tests and benchmarks.
///
/// Serves RBAC, core (Namespace, ServiceAccount, Event, ConfigMap, Secret),
/// events.k8s.io Events, Leases and CustomResourceDefinitions (and the kinds
/// they define) well enough for kubectl and kube-runtime. State lives in
/// memory only. Test controls (faults, deny list, stats) are under
/// /_testserver/; see docs/kube-test-server.md.
#[derive(Debug, Parser)]
#[command(name = "kube-test-server", version, about, long_about)]
struct Args {
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

    /// POST audit.k8s.io/v1 EventList batches to URL (http:// only).
    #[arg(long, value_name = "URL")]
    audit_webhook: Option<String>,

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

    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    bookmark_interval: u64,
}

fn json_arg(s: &str) -> anyhow::Result<serde_json::Value> {
    let text = match s.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => s.to_string(),
    };
    serde_json::from_str(&text).context("parsing JSON")
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let auth = auth::Authenticator::new(
        &args.tokens,
        &args.basic,
        args.anonymous,
        args.api_audiences.clone(),
    )?;
    let fault_cfg = match &args.faults {
        Some(f) => {
            faults::FaultConfig::parse(json_arg(f).context("--faults")?).context("--faults")?
        }
        None => faults::FaultConfig::default(),
    };
    let deny = match &args.deny {
        Some(d) => auth::parse_rules(json_arg(d).context("--deny")?).context("--deny")?,
        None => Vec::new(),
    };
    let audit = audit::Audit::new(args.audit_log.as_deref(), args.audit_webhook.as_deref())?;

    let mut st = store::Store::new(args.history, args.seed);
    let now = http::now_rfc3339();
    let ns_kd = st
        .kinds
        .get("", "namespaces")
        .context("namespaces missing from the kind table")?;
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
        .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {}", e.message))?;
    }
    if !args.load.is_empty() {
        let t = Instant::now();
        let n = load::load(&mut st, &args.load, &now)?;
        tracing::info!("loaded {n} objects in {:?}", t.elapsed());
        eprintln!("loaded {n} objects in {:.2?}", t.elapsed());
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
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
    ));
    let tls = serve::acceptor()?;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }

    serve::run(listener, app, tls, shutdown_signal()).await;
    // End open watch streams, then give in-flight responses a moment.
    let _ = shutdown_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
