//! Starting and stopping the operator.
//!
//! A validated configuration comes in; the tasks come up: leader election
//! (or permanent leadership when disabled), a supervisor that opens the
//! store while this replica leads (only then does it record), one loop per
//! source, and the HTTP server. A shutdown signal stops them in order and
//! releases the Lease.

use super::api::{self, ApiState, Authenticator};
use super::http::{self, HttpState};
use super::leader::{self, LeaderConfig};
use super::serve::{self, Serve};
use super::source::{SourceCtx, aws_loop};
use super::store::StoreHandle;
use super::{Command, Health, StoreStatus, k8s_loop, supervise};
use crate::classify::aws::RiskSets;
use crate::config::{ApiConfig, Config, K8sAccess, TokenReview};
use crate::grants::catalog::Catalog;
use crate::metrics::Metrics;
use crate::source::k8s::watch_cluster;
use crate::source::k8s::{K8sOptions, resolve_clusters};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What `run` fails with (the one operator error).
pub type OperatorError = super::Error;

/// A client for a cluster, from the pod's service account or a kubeconfig.
pub async fn kube_client(access: &K8sAccess) -> Result<Client, OperatorError> {
    let options = K8sOptions {
        kubeconfig: access.kubeconfig.clone(),
        contexts: access.context.iter().cloned().collect(),
        all_contexts: false,
        in_cluster: access.in_cluster,
    };
    let targets = resolve_clusters(&options).await?;
    let target = targets.first().ok_or(OperatorError::NoCluster)?;
    Ok(target.client()?)
}

fn identity(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("permdrift-{}", std::process::id()))
}

/// How long a leader waits before it tries again to open a store it could
/// not open (a corrupt journal needs a person; a full disk or a slow
/// volume may recover by itself).
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(10);
/// A previous leader's lock goes when its process does: retry soon.
const HELD_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Opens the store while this replica leads and closes it when it stops
/// leading; `recording` is true exactly while both hold. A leader that
/// cannot open the store says so in the log and in `permdrift_recording`
/// (the PermdriftNotRecording alert), and keeps trying.
async fn supervise_store(
    store: StoreHandle,
    metrics: Metrics,
    health: Health,
    read_back: ReadBack,
    mut leading_rx: watch::Receiver<bool>,
    recording_tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let leading = *leading_rx.borrow_and_update();
        metrics.leader.set(if leading { 1.0 } else { 0.0 });
        let mut retry = None;
        if leading && !store.is_open().await {
            match store.open().await {
                Ok(warnings) => {
                    for w in warnings {
                        tracing::warn!(store = %store.dir().display(), "{w}");
                    }
                    store.checkpoint("opened").await;
                    // Before anything can be accepted here: statements a
                    // previous leader accepted are used up.
                    if let Some(auth) = &read_back.auth {
                        match store.api_requests().await {
                            Ok(records) => auth.remember_used(api::used_nonces(&records)),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read used statement nonces")
                            }
                        }
                    }
                    restore_suggestions(&store, &read_back.hub);
                    health.set_store(StoreStatus::Open);
                    recording_tx.send_replace(true);
                }
                Err(OperatorError::StoreHeld) => {
                    tracing::info!(store = %store.dir().display(),
                        "store is held by another process (a previous leader letting go); waiting");
                    retry = Some(HELD_RETRY);
                }
                Err(e) => {
                    tracing::error!(store = %store.dir().display(), error = %e,
                        "cannot open the store: this leader judges and records nothing until it can");
                    health.set_store(StoreStatus::Failed(format!("cannot open the store: {e}")));
                    retry = Some(STORE_RETRY);
                }
            }
        } else if !leading {
            recording_tx.send_replace(false);
            health.set_store(StoreStatus::Closed);
            store.close().await;
        }
        tokio::select! {
            changed = leading_rx.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            _ = shutdown.changed() => break,
        }
    }
    recording_tx.send_replace(false);
    health.set_store(StoreStatus::Closed);
    store.close().await;
}

/// Who takes back what the journal holds each time the store opens: the
/// authenticator its used nonces, the attribution hub its suggestions.
struct ReadBack {
    auth: Option<Arc<Authenticator>>,
    hub: Arc<super::attribution::Hub>,
}

/// Holds again the suggestions the journal keeps (posted to this or a
/// previous leader); the hub drops those past the window or the count.
fn restore_suggestions(store: &StoreHandle, hub: &super::attribution::Hub) {
    let records = match tokio::task::block_in_place(|| crate::store::read_records(store.dir())) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read suggestions back from the journal");
            return;
        }
    };
    for r in records
        .iter()
        .filter(|r| r.kind == super::records::SUGGESTION)
    {
        let body = match super::records::Body::of_record(r) {
            Ok(Some(super::records::Body::Suggestion(b))) => b,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "suggestion record not read");
                continue;
            }
        };
        let received = r.at.parse().unwrap_or(body.at);
        match crate::attribution::suggestion::parse(&body.file, &body.id, body.text.as_bytes()) {
            Ok(s) => hub.add_suggestion(s, received),
            Err(e) => tracing::warn!(seq = r.seq, error = %e, "suggestion record not parsed"),
        }
    }
    tracing::info!(
        suggestions = hub.suggestion_count(),
        "suggestions held for attribution"
    );
}

/// Who may call the API: a cluster for TokenReview when configured (or when
/// running in one), and the configured keys.
async fn authenticator(api: &ApiConfig) -> Result<Authenticator, OperatorError> {
    let auth = &api.authentication;
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").is_ok();
    let access = match (auth.token_review, &auth.kubernetes) {
        (TokenReview::Off, _) => None,
        (_, Some(access)) => Some(access.clone()),
        (TokenReview::On, None) => Some(K8sAccess {
            in_cluster,
            ..K8sAccess::default()
        }),
        (TokenReview::Auto, None) if in_cluster => Some(K8sAccess {
            in_cluster: true,
            ..K8sAccess::default()
        }),
        (TokenReview::Auto, None) => None,
    };
    let kube = match access {
        Some(access) => Some(kube_client(&access).await.map_err(|e| {
            OperatorError::Authentication(format!(
                "cannot reach the cluster for TokenReview: {e} (set tokenReview: off to use signed requests only)"
            ))
        })?),
        None => None,
    };
    let mut keys = BTreeMap::new();
    for key in &auth.keys {
        let public = crate::signature::PublicKey::parse(&key.public_key)
            .map_err(|e| OperatorError::Authentication(format!("key {:?}: {e}", key.id)))?;
        keys.insert(key.id.clone(), public);
    }
    Ok(Authenticator::new(kube, keys))
}

/// The admission webhook's state: a gate per source with an `admission` section.
fn admission_state(
    config: &Config,
    metrics: &Metrics,
    store: &StoreHandle,
    commands: &Arc<BTreeMap<String, mpsc::Sender<Command>>>,
    allow: Arc<Vec<crate::config::AllowRule>>,
) -> super::admission::AdmissionState {
    let operator = super::admission::operator_user();
    let gates = config
        .sources
        .iter()
        .filter_map(|s| {
            let a = s.admission.as_ref()?;
            let gate =
                super::admission::GateConfig::new(&s.name, a, allow.clone(), operator.clone());
            Some((s.name.clone(), Arc::new(gate)))
        })
        .collect();
    super::admission::AdmissionState::new(
        metrics.clone(),
        store.clone(),
        commands.clone(),
        gates,
        super::admission::MAX_REVIEW_BYTES,
    )
}

async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, String), OperatorError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: addr.to_owned(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_owned());
    Ok((listener, bound))
}

/// Runs until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), OperatorError> {
    let fd_limit = serve::raise_fd_limit();
    let platforms: Vec<(String, &'static str)> = config
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.platform().as_str()))
        .collect();
    let metrics = Metrics::new(&platforms)?;
    let health = Health::new(platforms.iter().map(|(n, _)| n.clone()), metrics.clone());
    let key = match &config.store.journal_key_file {
        Some(path) => {
            Some(crate::store::JournalKey::from_file(path).map_err(OperatorError::JournalKey)?)
        }
        None => None,
    };
    let store = StoreHandle::new(config.store.path.clone(), metrics.clone()).with_key(key);
    let me = identity(config.leader_election.identity.as_deref());
    let le = &config.leader_election;
    let (leading_tx, leading_rx) = watch::channel(!le.enabled);
    let mut tasks = Vec::new();
    if le.enabled {
        let access = le.kubernetes.clone().unwrap_or_else(|| K8sAccess {
            in_cluster: std::env::var("KUBERNETES_SERVICE_HOST").is_ok(),
            ..K8sAccess::default()
        });
        let client = kube_client(&access)
            .await
            .map_err(|e| OperatorError::Leader(Box::new(e)))?;
        let namespace = le
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let cfg = LeaderConfig {
            namespace: namespace.clone(),
            name: le.lease_name.clone(),
            identity: me.clone(),
            lease_duration: le.lease_duration.0,
            renew_deadline: le.renew_deadline.0,
            retry_period: le.retry_period.0,
        };
        tracing::info!(identity = %me, lease = %cfg.name, namespace = %namespace, "leader election on");
        tasks.push(tokio::spawn(leader::run(
            Api::<Lease>::namespaced(client, &namespace),
            cfg,
            leading_tx,
            shutdown.clone(),
        )));
    }
    // Record only while leading and holding the store.
    let (recording_tx, recording_rx) = watch::channel(false);
    let auth = match config.api.enabled {
        true => Some(Arc::new(authenticator(&config.api).await?)),
        false => None,
    };
    let hub = super::attribution::Hub::new(
        crate::attribution::agents::AgentsConfig {
            agents: config.agents.clone(),
        },
        config.suggestions.window.0,
        config.suggestions.max_count,
    );
    tasks.push(tokio::spawn(supervise_store(
        store.clone(),
        metrics.clone(),
        health.clone(),
        ReadBack {
            auth: auth.clone(),
            hub: hub.clone(),
        },
        leading_rx,
        recording_tx,
        shutdown.clone(),
    )));
    let catalog: &'static Catalog = Catalog::embedded();
    // Built once: which catalog actions are risky does not change per event.
    let risk_sets = Arc::new(RiskSets::new(catalog));
    let allow = Arc::new(config.allow.clone());
    let mut commands: BTreeMap<String, mpsc::Sender<Command>> = BTreeMap::new();
    for source in &config.sources {
        let (tx, rx) = mpsc::channel(8);
        commands.insert(source.name.clone(), tx);
        let cx = SourceCtx {
            name: source.name.clone(),
            platform: source.platform(),
            mode: source.mode,
            allow: allow.clone(),
            revert: Arc::new(config.revert.clone()),
            metrics: metrics.clone(),
            store: store.clone(),
            health: health.clone(),
            recording: recording_rx.clone(),
            commands: rx,
            shutdown: shutdown.clone(),
            catalog,
            risk_sets: risk_sets.clone(),
        };
        match (&source.kubernetes, &source.aws) {
            (Some(access), _) => {
                let client = kube_client(access).await.map_err(|e| OperatorError::Kube {
                    source_name: source.name.clone(),
                    source: Box::new(e),
                })?;
                let recorder = config.events.enabled.then(|| {
                    Recorder::new(
                        client.clone(),
                        Reporter {
                            controller: "permdrift".into(),
                            instance: Some(me.clone()),
                        },
                    )
                });
                // Enforce mode reverts with the same client the watch reads with.
                let reverter =
                    (source.mode == crate::config::Mode::Enforce).then(|| client.clone());
                let stream = watch_cluster(client, Default::default());
                tasks.push(supervise::spawn_source(
                    source.name.clone(),
                    health.clone(),
                    shutdown.clone(),
                    k8s_loop::k8s_loop_with(
                        cx,
                        stream,
                        recorder,
                        k8s_loop::Extras {
                            client: reverter,
                            hub: Some(hub.clone()),
                        },
                    ),
                ));
            }
            (None, Some(access)) => tasks.push(supervise::spawn_source(
                source.name.clone(),
                health.clone(),
                shutdown.clone(),
                aws_loop(cx, access.clone()),
            )),
            (None, None) => {}
        }
    }
    let commands = Arc::new(commands);
    let (http_listener, http_bound) = bind(&config.http.listen).await?;
    let http_app = http::router(HttpState {
        metrics: metrics.clone(),
        health,
    });
    let mut servers = Vec::new();
    servers.push(tokio::spawn(serve::serve(
        http_listener,
        http_app,
        Serve {
            name: "http",
            limits: config.http.limits,
            tls: None,
            metrics: metrics.clone(),
        },
        shutdown.clone(),
    )));
    let mut api_bound = String::new();
    if let Some(auth) = auth {
        let tls = super::tls::load(&config.api.tls)?;
        let (api_listener, bound) = bind(&config.api.listen).await?;
        tracing::info!(listen = %bound, fingerprint = %tls.fingerprint, generated_certificate = tls.generated,
            authentication = %auth.describe(), "API listening (TLS)");
        api_bound = bound;
        let app = api::router_with_admission(
            ApiState::new(
                metrics.clone(),
                store.clone(),
                commands.clone(),
                auth,
                config.api.limits.max_body_bytes,
            )
            .with_approvals(
                crate::approval::Rules::from_config(&config.approvals)
                    .map_err(|e| OperatorError::Authentication(format!("approvals: {e}")))?,
            )
            .with_attribution(hub.clone(), config.suggestions.per_caller_per_minute),
            admission_state(&config, &metrics, &store, &commands, allow.clone()),
        );
        servers.push(tokio::spawn(serve::serve(
            api_listener,
            app,
            Serve {
                name: "api",
                limits: config.api.limits,
                tls: Some(tls.acceptor),
                metrics: metrics.clone(),
            },
            shutdown.clone(),
        )));
    } else {
        tracing::info!("API disabled (api.enabled: false): nothing can be accepted while running");
    }
    tracing::info!(listen = %http_bound, api = %api_bound, sources = config.sources.len(),
        fd_limit = fd_limit.unwrap_or_default(), "permdrift operator started");
    for server in servers {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "a listener stopped");
        }
    }
    for task in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
    tracing::info!("permdrift operator stopped");
    Ok(())
}
