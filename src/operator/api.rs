//! The authenticated API: the only way in that changes what the operator
//! holds.
//!
//! A request comes in over TLS (`tls`, `serve`) with a credential: a
//! Kubernetes bearer token, checked with the cluster's TokenReview and
//! authorised with a SubjectAccessReview (verb `accept` on
//! `baselines.permdrift.dev`, named by the source), or a statement signed
//! with a configured ed25519 key (`signature`). Only then is the command
//! passed to the source's loop. Every outcome, accepted or refused, is
//! counted and journaled with the caller as authenticated and the peer
//! address; refusals are journaled at a bounded rate so that a flood of bad
//! requests cannot fill the disk (the counter still sees every one).

use super::Command;
use super::store::StoreHandle;
use crate::metrics::Metrics;
use crate::signature::{self, Action, Expected, PublicKey, ReplayGuard, Signed};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The journal kind of API request records.
pub const API_REQUEST: &str = super::records::API_REQUEST;
/// The RBAC group and resource callers need `accept` on, named by the source.
pub const RBAC_GROUP: &str = "permdrift.dev";
pub const BASELINES: &str = "baselines";
/// The resource callers need `approve` on, named by the source.
pub const WIDENINGS: &str = "widenings";
/// The action approvals are counted and journaled under.
pub const APPROVE: &str = "approve";
/// How long a TokenReview or SubjectAccessReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusals journaled per minute at most; the rest are counted and summed up.
const REFUSALS_PER_MINUTE: u32 = 60;

pub use super::records::Caller;

/// Why a request was refused: the HTTP status, a metric label and a message
/// for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// One journal record per API request.
pub type ApiRequestRecord = super::records::ApiRequestBody;

/// How callers are authenticated.
pub struct Authenticator {
    /// The cluster asked for TokenReview and SubjectAccessReview.
    pub kube: Option<kube::Client>,
    pub keys: BTreeMap<String, PublicKey>,
    replay: Mutex<ReplayGuard>,
}

impl Authenticator {
    pub fn new(kube: Option<kube::Client>, keys: BTreeMap<String, PublicKey>) -> Self {
        Self {
            kube,
            keys,
            replay: Mutex::new(ReplayGuard::default()),
        }
    }

    /// Marks nonces of statements accepted before (by this or a previous
    /// leader, as the journal says) as used, so that a captured statement
    /// cannot be replayed after a restart or failover.
    pub fn remember_used(&self, used: impl IntoIterator<Item = (String, Timestamp)>) {
        if let Ok(mut guard) = self.replay.lock() {
            for (nonce, expires) in used {
                guard.remember(nonce, expires);
            }
        }
    }

    /// What is switched on, for the start-up log.
    pub fn describe(&self) -> String {
        let mut ways = Vec::new();
        if self.kube.is_some() {
            ways.push("kubernetes bearer tokens (TokenReview + SubjectAccessReview)".to_owned());
        }
        if !self.keys.is_empty() {
            ways.push(format!("signed requests ({} keys)", self.keys.len()));
        }
        if ways.is_empty() {
            "none: every request is refused".into()
        } else {
            ways.join(", ")
        }
    }

    /// Authenticates a bearer token with TokenReview.
    async fn authenticate(&self, token: &str) -> Result<(Caller, UserInfo), Refusal> {
        let Some(client) = &self.kube else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "no-authenticator",
                "bearer tokens are not accepted here: no cluster is configured for TokenReview \
                 (sign the request with --key instead)",
            ));
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        let reviewed =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&Default::default(), &review))
                .await
                .map_err(|_| unavailable("TokenReview timed out"))?
                .map_err(|e| unavailable(&format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    format!(
                        "the token is not valid{}",
                        status
                            .error
                            .filter(|e| !e.is_empty())
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        };
        let caller = Caller::Kubernetes {
            username: user.username.clone().unwrap_or_default(),
            uid: user.uid.clone().unwrap_or_default(),
            groups: user.groups.clone().unwrap_or_default(),
        };
        Ok((caller, user))
    }

    /// Checks with SubjectAccessReview that `user` may do `action` on the
    /// baselines named (`None`: all of them, as a reset needs).
    async fn authorize(
        &self,
        caller: &Caller,
        user: &UserInfo,
        action: Action,
        names: &[Option<String>],
    ) -> Result<(), Refusal> {
        let verb = match action {
            Action::BaselineAccept => "accept",
            Action::BaselineReset => "reset",
        };
        for name in names {
            let allowed = self
                .access_review(user, verb, BASELINES, name.as_deref())
                .await?;
            if !allowed {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "forbidden",
                    message: match name {
                        Some(source) => format!(
                            "{caller} may not {verb} the baseline of {source:?} (needs verb `{verb}` on \
                             `{BASELINES}.{RBAC_GROUP}` named {source:?}; the chart's \
                             permdrift-baseline-acceptor ClusterRole grants `accept`)"
                        ),
                        None => format!(
                            "{caller} may not {verb} the baselines (needs verb `{verb}` on \
                             `{BASELINES}.{RBAC_GROUP}`, for every name)"
                        ),
                    },
                });
            }
        }
        Ok(())
    }

    /// Asks SubjectAccessReview whether `user` may `verb` the `resource`
    /// (in `permdrift.dev`) named `name`.
    async fn access_review(
        &self,
        user: &UserInfo,
        verb: &str,
        resource: &str,
        name: Option<&str>,
    ) -> Result<bool, Refusal> {
        let Some(client) = &self.kube else {
            return Err(unavailable("no cluster to ask"));
        };
        let sar_api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(RBAC_GROUP.into()),
                    resource: Some(resource.into()),
                    name: name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, sar_api.create(&Default::default(), &sar))
                .await
                .map_err(|_| unavailable("SubjectAccessReview timed out"))?
                .map_err(|e| unavailable(&format!("SubjectAccessReview failed: {e}")))?;
        Ok(answer.status.as_ref().is_some_and(|s| s.allowed))
    }

    /// Checks a signed statement for this request.
    fn signed(&self, body: &[u8], action: Action, source: Option<&str>) -> Result<Caller, Refusal> {
        let signed: Signed = serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the body is not a signed statement: {e}"),
            )
        })?;
        let expected = Expected { action, source };
        let mut guard = self.replay.lock().map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "replay guard poisoned",
            )
        })?;
        signature::verify(&signed, &self.keys, &expected, Timestamp::now(), &mut guard).map_err(
            |e| {
                let status = match e {
                    signature::SignatureError::Malformed(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNAUTHORIZED,
                };
                Refusal::new(status, e.metric_label(), e.to_string())
            },
        )?;
        Ok(Caller::Key {
            key_id: signed.statement.key_id,
            nonce: signed.statement.nonce,
        })
    }
}

fn unavailable(message: &str) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "review-failed", message)
}

/// A rate cap on journaled refusals (a sliding minute).
#[derive(Debug, Default)]
struct RefusalBudget {
    minute: i64,
    used: u32,
    suppressed: u32,
}

impl RefusalBudget {
    /// Whether a refusal at `now` may be journaled, and how many were
    /// suppressed in the minute before, to sum up once.
    fn take(&mut self, now: Timestamp) -> (bool, u32) {
        let minute = now.as_second() / 60;
        let mut carried = 0;
        if minute != self.minute {
            carried = std::mem::take(&mut self.suppressed);
            self.minute = minute;
            self.used = 0;
        }
        if self.used < REFUSALS_PER_MINUTE {
            self.used += 1;
            (true, carried)
        } else {
            self.suppressed += 1;
            (false, carried)
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub metrics: Metrics,
    pub store: StoreHandle,
    pub commands: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
    pub auth: Arc<Authenticator>,
    budget: Arc<Mutex<RefusalBudget>>,
    max_body_bytes: usize,
    /// The approval rules (`approvals` in the config); None: approvals are refused.
    approval_rules: Option<Arc<crate::approval::Rules>>,
    /// Signatures of approvals already counted, so the same bytes cannot be
    /// posted again to pass for another approval.
    used_approvals: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Suggestions and audit events for attribution; None: both refused.
    attribution: Option<Arc<super::attribution::Hub>>,
    /// Suggestions posted per caller in the current minute.
    suggest_rate: Arc<Mutex<SuggestRate>>,
}

impl ApiState {
    pub fn new(
        metrics: Metrics,
        store: StoreHandle,
        commands: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
        auth: Arc<Authenticator>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            metrics,
            store,
            commands,
            auth,
            budget: Arc::default(),
            max_body_bytes,
            approval_rules: None,
            used_approvals: Arc::default(),
            attribution: None,
            suggest_rate: Arc::default(),
        }
    }

    /// Accepts suggestions and audit batches into `hub`, at most
    /// `per_minute` suggestions per caller per minute.
    pub fn with_attribution(mut self, hub: Arc<super::attribution::Hub>, per_minute: u32) -> Self {
        self.attribution = Some(hub);
        if let Ok(mut rate) = self.suggest_rate.lock() {
            rate.limit = per_minute;
        }
        self
    }

    /// Accepts approvals on `POST /api/v1/approvals`, checked with `rules`.
    pub fn with_approvals(mut self, rules: crate::approval::Rules) -> Self {
        self.approval_rules = Some(Arc::new(rules));
        self
    }
}

/// What a handler tells the journaling layer about its request.
#[derive(Clone, Debug)]
struct Handled {
    action: &'static str,
    source: Option<String>,
    caller: Option<Caller>,
    reason: &'static str,
    accepted: Option<usize>,
}

impl Handled {
    /// A request for `action` not yet authenticated.
    fn new(action: Action, source: Option<String>) -> Self {
        Handled {
            action: action.as_str(),
            source,
            caller: None,
            reason: "accepted",
            accepted: None,
        }
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/baseline/accept", post(accept))
        .route("/api/v1/baseline/reset", post(reset))
        .route("/api/v1/approvals", post(approve))
        .route(SUGGESTIONS_PATH, post(suggest))
        .route(AUDIT_PATH, post(audit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            state.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), journal))
        .with_state(state)
}

/// The API with the admission webhook beside it (`admission`): the webhook
/// counts and journals its own `admission` records rather than an
/// `api-request` per review. Every other request goes to the API whole (a
/// fallback, not merged routes), so its layers still journal unknown paths.
pub fn router_with_admission(
    state: ApiState,
    admission: super::admission::AdmissionState,
) -> Router {
    super::admission::router(admission).fallback_service(router(state))
}

/// Counts and journals every request's outcome, including those refused
/// before a handler ran (oversized bodies, unknown paths).
async fn journal(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let status = response.status();
    let handled = response.extensions_mut().remove::<Handled>();
    let mut approval = response.extensions_mut().remove::<ApprovalRejected>();
    if approval.is_none() && handled.is_none() && path == APPROVALS_PATH && !status.is_success() {
        // Refused before the handler ran (an oversized body): still an
        // approval rejected, and journaled as one.
        approval = Some(ApprovalRejected(super::approvals::rejected_body(
            None,
            &Default::default(),
            None,
            &peer.to_string(),
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "oversized"
            } else {
                "other"
            },
            status.canonical_reason().unwrap_or(""),
        )));
    }
    let (action, source, caller, reason, accepted) = match handled {
        Some(h) => (h.action, h.source, h.caller, h.reason, h.accepted),
        None => (
            action_of(&path),
            None,
            None,
            match status {
                StatusCode::PAYLOAD_TOO_LARGE => "oversized",
                StatusCode::REQUEST_TIMEOUT => "timeout",
                StatusCode::NOT_FOUND => "not-found",
                StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
                _ => "other",
            },
            None,
        ),
    };
    let outcome = if status.is_success() {
        "accepted"
    } else {
        "refused"
    };
    s.metrics
        .api_requests
        .with_label_values(&[action, outcome, reason])
        .inc();
    let message = if status.is_success() {
        String::new()
    } else {
        format!("{path}: {}", status.canonical_reason().unwrap_or(""))
    };
    let record = ApiRequestRecord {
        action: action.to_owned(),
        source,
        outcome: outcome.to_owned(),
        status: status.as_u16(),
        reason: reason.to_owned(),
        message,
        caller,
        remote: peer.to_string(),
        accepted,
    };
    let now = super::now();
    let (write, suppressed) = if status.is_success() && action == AUDIT {
        // Audit batches arrive all the time (the operator's own reviews are
        // audited too): counted, not journaled; the actors they carry reach
        // the journal in `change` and `attribution` records.
        (false, 0)
    } else if status.is_success() {
        (true, 0)
    } else {
        s.budget
            .lock()
            .map(|mut b| b.take(now))
            .unwrap_or((true, 0))
    };
    if suppressed > 0 {
        let summary = ApiRequestRecord {
            action: "unknown".into(),
            source: None,
            outcome: "refused".into(),
            status: 429,
            reason: "suppressed".into(),
            message: format!(
                "{suppressed} more refusals in the minute before were counted but not journaled"
            ),
            caller: None,
            remote: String::new(),
            accepted: None,
        };
        append(&s.store, summary, now).await;
    }
    let log = (
        record.remote.clone(),
        record.caller.as_ref().map(ToString::to_string),
    );
    if write {
        append(&s.store, record, now).await;
        if let Some(ApprovalRejected(mut body)) = approval {
            body.remote = peer.to_string();
            s.metrics
                .approvals
                .with_label_values(&[
                    body.source.as_deref().unwrap_or(""),
                    "rejected",
                    &body.reason,
                ])
                .inc();
            if let Err(e) = s
                .store
                .append_global(&super::records::Body::Approval(body), now)
                .await
            {
                tracing::warn!(error = %e, "approval rejection not journaled");
            }
        }
    } else if let Some(ApprovalRejected(body)) = approval {
        s.metrics
            .approvals
            .with_label_values(&[
                body.source.as_deref().unwrap_or(""),
                "rejected",
                &body.reason,
            ])
            .inc();
    }
    if !status.is_success() {
        tracing::warn!(remote = %log.0, action, reason, status = status.as_u16(),
            caller = log.1.unwrap_or_default(),
            "API request refused");
    }
    response
}

/// The action a path asks for, for requests refused before their handler ran.
fn action_of(path: &str) -> &'static str {
    match path {
        "/api/v1/baseline/accept" => Action::BaselineAccept.as_str(),
        "/api/v1/baseline/reset" => Action::BaselineReset.as_str(),
        APPROVALS_PATH => APPROVE,
        SUGGESTIONS_PATH => SUGGEST,
        AUDIT_PATH => AUDIT,
        _ => "unknown",
    }
}

/// The nonces of signed statements the journal shows accepted, each with
/// the latest time its statement could still be valid.
pub fn used_nonces(records: &[(Timestamp, ApiRequestRecord)]) -> Vec<(String, Timestamp)> {
    records
        .iter()
        .filter(|(_, body)| body.outcome == "accepted")
        .filter_map(|(at, body)| match &body.caller {
            Some(Caller::Key { nonce, .. }) => {
                Some((nonce.clone(), at.checked_add(signature::MAX_LIFETIME).ok()?))
            }
            _ => None,
        })
        .collect()
}

async fn append(store: &StoreHandle, record: ApiRequestRecord, now: Timestamp) {
    let reason = record.reason.clone();
    let body = super::records::Body::ApiRequest(record);
    if let Err(e) = store.append_global(&body, now).await {
        // A follower has no store open; its refusals are in its log and metrics.
        tracing::warn!(error = %e, reason = %reason, "API request not journaled");
    }
}

#[derive(Deserialize)]
struct AcceptQuery {
    source: Option<String>,
}

fn refuse(refusal: Refusal, handled: Handled) -> Response {
    let mut response = (refusal.status, format!("{}\n", refusal.message)).into_response();
    if refusal.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"permdrift\""),
        );
    }
    response.extensions_mut().insert(Handled {
        reason: refusal.reason,
        ..handled
    });
    response
}

fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = value.to_str().map_err(|_| ());
    Some(text.and_then(|t| {
        let (scheme, token) = t.trim().split_once(' ').ok_or(())?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
            .then_some(token)
            .ok_or(())
    }))
}

/// The request body, at most `api.limits.maxBodyBytes`; a larger one is
/// refused as `oversized` before anything else is looked at.
async fn read_body(s: &ApiState, body: Body) -> Result<axum::body::Bytes, Refusal> {
    axum::body::to_bytes(body, s.max_body_bytes)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "oversized",
                format!("the body is larger than {} bytes", s.max_body_bytes),
            )
        })
}

/// Reads the body and authenticates the caller: a bearer token through
/// TokenReview (then `user` is set, for SubjectAccessReview), or a signed
/// statement for `action` on `source`. Who is asking comes first: nothing
/// about the operator (not even its source names) is told to an
/// unauthenticated caller.
async fn authenticate(
    s: &ApiState,
    headers: &HeaderMap,
    body: Body,
    action: Action,
    source: Option<&str>,
) -> Result<(Caller, Option<UserInfo>), Refusal> {
    let bytes = read_body(s, body).await?;
    match bearer_token(headers) {
        Some(Ok(token)) => s.auth.authenticate(token).await.map(|(c, u)| (c, Some(u))),
        Some(Err(())) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the Authorization header is not `Bearer TOKEN`",
        )),
        None if !bytes.is_empty() => s.auth.signed(&bytes, action, source).map(|c| (c, None)),
        None => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no credentials: send a Kubernetes bearer token (permdrift uses your kubeconfig's, \
             or --token) or a signed statement (--key)",
        )),
    }
}

async fn accept(
    State(s): State<ApiState>,
    Query(q): Query<AcceptQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut handled = Handled::new(Action::BaselineAccept, q.source.clone());
    let (caller, user) = match authenticate(
        &s,
        &headers,
        body,
        Action::BaselineAccept,
        q.source.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(refusal) => return refuse(refusal, handled),
    };
    handled.caller = Some(caller.clone());
    let sources: Vec<String> = match &q.source {
        Some(name) if s.commands.contains_key(name) => vec![name.clone()],
        Some(name) => {
            let known: Vec<&str> = s.commands.keys().map(String::as_str).collect();
            return refuse(
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    "unknown-source",
                    format!("no source {name:?} (configured: {})", known.join(", ")),
                ),
                handled,
            );
        }
        None => s.commands.keys().cloned().collect(),
    };
    // A signed statement's key is a configured approver and the statement
    // names its source; a Kubernetes identity needs RBAC for each source.
    let names: Vec<Option<String>> = sources.iter().cloned().map(Some).collect();
    if let Some(user) = &user
        && let Err(refusal) = s
            .auth
            .authorize(&caller, user, Action::BaselineAccept, &names)
            .await
    {
        return refuse(refusal, handled);
    }
    let by = caller.to_string();
    let mut lines = Vec::new();
    let mut total = 0;
    for name in &sources {
        let Some(tx) = s.commands.get(name) else {
            continue;
        };
        let (reply, answer) = oneshot::channel();
        let sent = tx
            .send(Command::AcceptBaseline {
                by: by.clone(),
                reply,
            })
            .await;
        let outcome = match sent {
            Ok(()) => answer.await.map_err(|_| "stopped".to_owned()),
            Err(_) => Err("is not running".to_owned()),
        };
        match outcome {
            Ok(Ok(n)) => {
                total += n;
                lines.push(format!(
                    "{name}: accepted {n} open widening(s) into the baseline"
                ));
            }
            Ok(Err(e)) => {
                handled.accepted = Some(total);
                return refuse(
                    Refusal::new(
                        StatusCode::CONFLICT,
                        "not-recording",
                        format!("{name}: {e}"),
                    ),
                    handled,
                );
            }
            Err(e) => {
                handled.accepted = Some(total);
                return refuse(
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "source-down",
                        format!("source {name:?} {e}"),
                    ),
                    handled,
                );
            }
        }
    }
    handled.accepted = Some(total);
    let mut response = (StatusCode::OK, format!("{}\n", lines.join("\n"))).into_response();
    response.extensions_mut().insert(handled);
    response
}

#[derive(Deserialize)]
struct ResetQuery {
    reason: Option<String>,
}

/// Starts the journal over, only when the store refuses to open (emptied,
/// shortened, rewritten or unreadable): the old journal is set aside, never
/// deleted, and the new chain's first record names the reason, the caller
/// and the previous head. A journal that opens is never reset from here:
/// that would absorb every open widening.
async fn reset(
    State(s): State<ApiState>,
    Query(q): Query<ResetQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut handled = Handled::new(Action::BaselineReset, None);
    let (caller, user) = match authenticate(&s, &headers, body, Action::BaselineReset, None).await {
        Ok(c) => c,
        Err(refusal) => return refuse(refusal, handled),
    };
    handled.caller = Some(caller.clone());
    if let Some(user) = &user
        && let Err(refusal) = s
            .auth
            .authorize(&caller, user, Action::BaselineReset, &[None])
            .await
    {
        return refuse(refusal, handled);
    }
    let Some(reason) = q.reason.filter(|r| !r.trim().is_empty()) else {
        return refuse(
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "say why: ?reason=TEXT (kept in the new chain's first record)",
            ),
            handled,
        );
    };
    match s
        .store
        .reset_refused(&reason, &caller.to_string(), super::now())
        .await
    {
        Ok(head) => {
            tracing::warn!(caller = %caller, reason = %reason, previous = %head,
                "journal reset: a new chain starts; the leader opens it within seconds");
            let mut response = (
                StatusCode::OK,
                format!("reset: the old journal is set aside ({head}); a new chain starts\n"),
            )
                .into_response();
            response.extensions_mut().insert(handled);
            response
        }
        Err(e) => refuse(
            Refusal::new(StatusCode::CONFLICT, "not-resettable", e.to_string()),
            handled,
        ),
    }
}

/// Where approvals are posted.
pub const APPROVALS_PATH: &str = "/api/v1/approvals";

/// An approval the API rejected before the source loop saw it, for the
/// journaling layer to record (bounded like every refusal).
#[derive(Clone, Debug)]
struct ApprovalRejected(super::records::ApprovalBody);

/// Refuses an approval: the API request record, and an approval record
/// naming what the offer named (as far as it could be read).
fn refuse_approval(
    refusal: Refusal,
    handled: Handled,
    parts: &super::approvals::Parts,
) -> Response {
    let body = super::approvals::rejected_body(
        handled.source.as_deref(),
        parts,
        handled.caller.clone(),
        "",
        refusal.reason,
        &refusal.message,
    );
    let mut response = refuse(refusal, handled);
    response.extensions_mut().insert(ApprovalRejected(body));
    response
}

/// `POST /api/v1/approvals`: a signed approval (`permdrift approve -o`), or
/// with a Kubernetes bearer token the approval's fields (`permdrift approve
/// --server`), authorized with verb `approve` on `widenings.permdrift.dev`
/// named by the source. The source's loop checks it against the open
/// widening and journals the outcome (`approvals`).
async fn approve(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use super::approvals::{Offer, Offered, Parts, PersonApproval};
    use crate::approval::SignedApproval;
    let mut handled = Handled {
        action: APPROVE,
        source: None,
        caller: None,
        reason: "accepted",
        accepted: None,
    };
    let none = Parts::default();
    let bytes = match read_body(&s, body).await {
        Ok(b) => b,
        Err(refusal) => return refuse_approval(refusal, handled, &none),
    };
    let Some(rules) = s.approval_rules.clone() else {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-approvals",
            "this operator takes no approvals",
        );
        return refuse_approval(refusal, handled, &none);
    };
    let malformed = |e: String| Refusal::new(StatusCode::BAD_REQUEST, "malformed", e);
    let text = String::from_utf8_lossy(&bytes);
    let (offered, caller, user) = match bearer_token(&headers) {
        Some(Ok(token)) => {
            let (caller, user) = match s.auth.authenticate(token).await {
                Ok(c) => c,
                Err(refusal) => return refuse_approval(refusal, handled, &none),
            };
            handled.caller = Some(caller.clone());
            let mut de = serde_json::Deserializer::from_str(&text);
            let fields: PersonApproval = match serde_path_to_error::deserialize(&mut de) {
                Ok(f) => f,
                Err(e) => {
                    let refusal = malformed(format!(
                        "the body is not an approval: {}: {}",
                        e.path(),
                        e.inner()
                    ));
                    return refuse_approval(refusal, handled, &none);
                }
            };
            let username = user.username.clone().unwrap_or_default();
            (Offered::Person { fields, username }, caller, Some(user))
        }
        Some(Err(())) => {
            let refusal = Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the Authorization header is not `Bearer TOKEN`",
            );
            return refuse_approval(refusal, handled, &none);
        }
        None if !bytes.is_empty() => {
            let signed = match SignedApproval::parse("body", &text) {
                Ok(a) => a,
                Err(e) => return refuse_approval(malformed(e.to_string()), handled, &none),
            };
            let parts = Parts {
                object: Some(signed.approval.object.clone()),
                digest: Some(signed.approval.digest.clone()),
                approver: Some(signed.approval.approver.clone()),
                expires: Some(signed.approval.expires),
            };
            handled.source = Some(signed.approval.source.clone());
            // A signed approval authenticates by its signature: the key must
            // be a configured approver's and the signature must verify
            // before anything else is told.
            let a = &signed.approval;
            let Some(approver) = rules.approvers.get(&a.approver) else {
                let refusal = Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown-key",
                    crate::approval::Rejection::UnknownKey(a.approver.clone()).to_string(),
                );
                return refuse_approval(refusal, handled, &parts);
            };
            if !approver
                .key
                .verifies(&a.canonical_bytes(), &signed.signature)
            {
                let refusal = Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "forged",
                    crate::approval::Rejection::Forged(a.approver.clone()).to_string(),
                );
                return refuse_approval(refusal, handled, &parts);
            }
            let caller = Caller::Key {
                key_id: a.approver.clone(),
                nonce: signed.signature.clone(),
            };
            handled.caller = Some(caller.clone());
            let replayed = s
                .used_approvals
                .lock()
                .map(|used| used.contains(&signed.signature))
                .unwrap_or(true);
            if replayed {
                let refusal = Refusal::new(
                    StatusCode::CONFLICT,
                    "replayed",
                    "this signed approval was already counted; sign a new one",
                );
                return refuse_approval(refusal, handled, &parts);
            }
            (Offered::Signed(Box::new(signed)), caller, None)
        }
        None => {
            let refusal = Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "no credentials: send a signed approval (permdrift approve --key -o) or a \
                 Kubernetes bearer token with the approval's fields (permdrift approve --server)",
            );
            return refuse_approval(refusal, handled, &none);
        }
    };
    let offer = Offer {
        offered,
        caller: caller.clone(),
        remote: peer.to_string(),
        rules,
    };
    let parts = super::approvals::offer_parts(&offer);
    let source = offer.source().to_owned();
    handled.source = Some(source.clone());
    let Some(tx) = s.commands.get(&source) else {
        let refusal = Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown-source",
            format!("no source {source:?}"),
        );
        return refuse_approval(refusal, handled, &parts);
    };
    if let Some(user) = &user {
        match s
            .auth
            .access_review(user, APPROVE, WIDENINGS, Some(&source))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let refusal = Refusal::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "{caller} may not approve widenings of {source:?} (needs verb `approve` on \
                         `{WIDENINGS}.{RBAC_GROUP}` named {source:?}; the chart's \
                         permdrift-approver ClusterRole grants it)"
                    ),
                );
                return refuse_approval(refusal, handled, &parts);
            }
            Err(refusal) => return refuse_approval(refusal, handled, &parts),
        }
    }
    let signature = match &offer.offered {
        Offered::Signed(a) => Some(a.signature.clone()),
        Offered::Person { .. } => None,
    };
    let (reply, answer) = oneshot::channel();
    let sent = tx
        .send(Command::Approve {
            offer: Box::new(offer),
            reply,
        })
        .await;
    let outcome = match sent {
        Ok(()) => answer.await.ok(),
        Err(_) => None,
    };
    // The loop journaled and counted what it decided.
    let loop_refusal = |status: StatusCode, reason: &'static str, message: String| {
        let mut response = (status, format!("{message}\n")).into_response();
        response.extensions_mut().insert(Handled {
            reason,
            ..handled.clone()
        });
        response
    };
    match outcome {
        Some(Ok(Ok(counted))) => {
            if let (Some(sig), Ok(mut used)) = (signature, s.used_approvals.lock()) {
                used.insert(sig);
            }
            handled.accepted = Some(usize::from(counted.approved));
            let state = if counted.approved {
                format!(
                    "approved until {}",
                    counted
                        .until
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                )
            } else {
                format!(
                    "{} of {} approvals",
                    counted.approvers.len(),
                    counted.needed
                )
            };
            let mut response = (
                StatusCode::OK,
                format!("{source}: {}: counted; {state}\n", counted.object),
            )
                .into_response();
            response.extensions_mut().insert(handled);
            response
        }
        Some(Ok(Err(refused))) => {
            let status = match refused {
                super::approvals::Refused::NoWidening(_) => StatusCode::NOT_FOUND,
                super::approvals::Refused::Replayed => StatusCode::CONFLICT,
                _ => StatusCode::FORBIDDEN,
            };
            loop_refusal(status, refused.label(), format!("{source}: {refused}"))
        }
        Some(Err(e)) => loop_refusal(
            StatusCode::CONFLICT,
            "not-recording",
            format!("{source}: {e}"),
        ),
        None => loop_refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "source-down",
            format!("source {source:?} is not running"),
        ),
    }
}

/// Where agent suggestions are posted (docs/attribution.md).
pub const SUGGESTIONS_PATH: &str = "/api/v1/suggestions";
/// Where the API server's audit webhook posts `EventList` batches.
pub const AUDIT_PATH: &str = "/api/v1/audit";
/// The resources callers need `create` on.
pub const SUGGESTIONS: &str = "suggestions";
pub const AUDITS: &str = "audits";
/// The actions suggestions and audit batches are counted and journaled under.
pub const SUGGEST: &str = "suggest";
pub const AUDIT: &str = "audit";

/// Suggestions counted per caller in the current minute.
#[derive(Debug, Default)]
struct SuggestRate {
    limit: u32,
    minute: i64,
    used: BTreeMap<String, u32>,
}

impl SuggestRate {
    /// Whether `caller` may post one more at `now`.
    fn take(&mut self, caller: &str, now: Timestamp) -> bool {
        let minute = now.as_second() / 60;
        if minute != self.minute {
            self.minute = minute;
            self.used.clear();
        }
        let used = self.used.entry(caller.to_owned()).or_default();
        if *used >= self.limit {
            return false;
        }
        *used += 1;
        true
    }
}

/// Authenticates a bearer token (TokenReview) and authorises verb `create`
/// on `resource` (SubjectAccessReview): the only credential taken for
/// suggestions and audit batches, whose bodies are not signed statements.
async fn bearer_create(
    s: &ApiState,
    headers: &HeaderMap,
    resource: &str,
    handled: &mut Handled,
) -> Result<Caller, Refusal> {
    let token = match bearer_token(headers) {
        Some(Ok(token)) => token,
        Some(Err(())) => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the Authorization header is not `Bearer TOKEN`",
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "no credentials: send a Kubernetes bearer token",
            ));
        }
    };
    let (caller, user) = s.auth.authenticate(token).await?;
    handled.caller = Some(caller.clone());
    if !s
        .auth
        .access_review(&user, "create", resource, None)
        .await?
    {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{caller} may not create {resource} (needs verb `create` on `{resource}.{RBAC_GROUP}`)"
            ),
        ));
    }
    Ok(caller)
}

#[derive(Deserialize)]
struct SuggestQuery {
    /// The file name the suggestion was posted from: its stem is the id
    /// when the front matter names none.
    name: Option<String>,
}

/// `POST /api/v1/suggestions`: an agent suggestion (markdown or text with
/// optional front matter, the parser of `permdrift diff --suggestions`),
/// from a caller with verb `create` on `suggestions.permdrift.dev`, at most
/// `suggestions.perCallerPerMinute` per caller. Journaled as a
/// `suggestion` record, then held for attribution.
async fn suggest(
    State(s): State<ApiState>,
    Query(q): Query<SuggestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use crate::attribution::suggestion::{self, SuggestionError};
    let mut handled = Handled {
        action: SUGGEST,
        source: None,
        caller: None,
        reason: "accepted",
        accepted: None,
    };
    let bytes = match read_body(&s, body).await {
        Ok(b) => b,
        Err(refusal) => return refuse(refusal, handled),
    };
    let Some(hub) = s.attribution.clone() else {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-attribution",
            "this operator takes no suggestions",
        );
        return refuse(refusal, handled);
    };
    let caller = match bearer_create(&s, &headers, SUGGESTIONS, &mut handled).await {
        Ok(c) => c,
        Err(refusal) => return refuse(refusal, handled),
    };
    let now = super::now();
    let within = s
        .suggest_rate
        .lock()
        .map(|mut r| r.take(&caller.to_string(), now))
        .unwrap_or(false);
    if !within {
        let refusal = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over-rate",
            format!(
                "{caller} posted too many suggestions this minute (suggestions.perCallerPerMinute)"
            ),
        );
        return refuse(refusal, handled);
    }
    // Only the last path segment: the name is the caller's, and ends up in evidence.
    let file = q
        .name
        .as_deref()
        .and_then(|n| n.rsplit(['/', '\\']).next())
        .filter(|n| !n.trim().is_empty())
        .map(str::to_owned);
    let stem = match &file {
        Some(f) => std::path::Path::new(f)
            .file_stem()
            .map_or_else(|| f.clone(), |x| x.to_string_lossy().into_owned()),
        None => {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(&bytes));
            format!("suggestion-{}", &digest[..12])
        }
    };
    let file = file.unwrap_or_else(|| stem.clone());
    let parsed = match suggestion::parse(&file, &stem, &bytes) {
        Ok(p) => p,
        Err(e) => {
            let (status, reason) = match &e {
                SuggestionError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "oversized"),
                SuggestionError::Binary { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "binary"),
                SuggestionError::FrontMatter { .. } => (StatusCode::BAD_REQUEST, "malformed"),
            };
            return refuse(Refusal::new(status, reason, e.to_string()), handled);
        }
    };
    // The same id again (the same post replayed, or another caller's under
    // its id) must not replace what a change may already be attributed to.
    if hub.holds(&parsed.id) {
        let refusal = Refusal::new(
            StatusCode::CONFLICT,
            "replayed",
            format!(
                "suggestion {} is already held; post it under a new id",
                parsed.id
            ),
        );
        return refuse(refusal, handled);
    }
    let record = super::records::SuggestionBody {
        id: parsed.id.clone(),
        agent: parsed.agent.clone(),
        at: parsed.at.unwrap_or(now),
        url: parsed.url.clone(),
        caller,
        file,
        // Parsing checked it is UTF-8.
        text: String::from_utf8_lossy(&bytes).into_owned(),
        actions: parsed.actions.len(),
        skipped: parsed.skipped.clone(),
    };
    if let Err(e) = s
        .store
        .append_global(&super::records::Body::Suggestion(record), now)
        .await
    {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-recording",
            format!("not journaled: {e}"),
        );
        return refuse(refusal, handled);
    }
    let reply = format!(
        "suggestion {}: {} action(s) understood, {} not parsed{}\n",
        parsed.id,
        parsed.actions.len(),
        parsed.skipped.len(),
        parsed
            .skipped
            .iter()
            .map(|x| format!("\n  not parsed: {x}"))
            .collect::<String>()
    );
    handled.accepted = Some(parsed.actions.len());
    hub.add_suggestion(parsed, now);
    let mut response = (StatusCode::OK, reply).into_response();
    response.extensions_mut().insert(handled);
    response
}

/// `POST /api/v1/audit`: the API server's audit webhook, an
/// `audit.k8s.io/v1` `EventList`, from a caller with verb `create` on
/// `audits.permdrift.dev`. A malformed batch is refused whole with what is
/// wrong and journaled like every refusal; nothing else changes.
async fn audit(State(s): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let mut handled = Handled {
        action: AUDIT,
        source: None,
        caller: None,
        reason: "accepted",
        accepted: None,
    };
    let bytes = match read_body(&s, body).await {
        Ok(b) => b,
        Err(refusal) => return refuse(refusal, handled),
    };
    let Some(hub) = s.attribution.clone() else {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-attribution",
            "this operator takes no audit events",
        );
        return refuse(refusal, handled);
    };
    if let Err(refusal) = bearer_create(&s, &headers, AUDITS, &mut handled).await {
        return refuse(refusal, handled);
    }
    let mut events = crate::attribution::actors::Events::default();
    let n = match events.add_audit_list("the audit batch", &bytes) {
        Ok(n) => n,
        Err(e) => {
            return refuse(
                Refusal::new(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
                handled,
            );
        }
    };
    hub.add_audit(events, super::now());
    handled.accepted = Some(n);
    let mut response = (StatusCode::OK, format!("{n} audit event(s) kept\n")).into_response();
    response.extensions_mut().insert(handled);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_rate_limited_per_caller_and_minute() {
        let mut r = SuggestRate {
            limit: 2,
            ..SuggestRate::default()
        };
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        assert!(r.take("a", t0) && r.take("a", t0));
        assert!(!r.take("a", t0));
        assert!(r.take("b", t0), "another caller has its own budget");
        let t1: Timestamp = "2026-12-03T10:01:00Z".parse().unwrap();
        assert!(r.take("a", t1));
    }

    /// Only statements the journal shows accepted use up their nonce, until
    /// the statement could no longer be valid.
    #[test]
    fn used_nonces_come_from_accepted_signed_requests() {
        let at: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let request = |outcome: &str, caller: Caller| ApiRequestRecord {
            action: "baseline-accept".into(),
            source: None,
            outcome: outcome.into(),
            status: 200,
            reason: String::new(),
            message: String::new(),
            caller: Some(caller),
            remote: String::new(),
            accepted: None,
        };
        let key = |nonce: &str| Caller::Key {
            key_id: "ops".into(),
            nonce: nonce.into(),
        };
        let person = Caller::Kubernetes {
            username: "alice".into(),
            uid: String::new(),
            groups: Vec::new(),
        };
        let records = [
            (at, request("accepted", key("n1"))),
            (at, request("refused", key("n2"))),
            (at, request("accepted", person)),
        ];
        let until = at.checked_add(signature::MAX_LIFETIME).unwrap();
        assert_eq!(used_nonces(&records), vec![("n1".to_owned(), until)]);
    }

    #[test]
    fn the_refusal_budget_caps_each_minute_and_carries_the_rest_over() {
        let mut b = RefusalBudget::default();
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let written = (0..100).filter(|_| b.take(t0).0).count();
        assert_eq!(written, REFUSALS_PER_MINUTE as usize);
        let t1: Timestamp = "2026-12-03T10:01:00Z".parse().unwrap();
        assert_eq!(b.take(t1), (true, 100 - REFUSALS_PER_MINUTE));
        assert_eq!(b.take(t1), (true, 0));
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Ok("abc")));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Err(())));
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Err(())));
    }

    #[test]
    fn callers_are_journaled_as_typed_records() {
        let caller = Caller::Kubernetes {
            username: "alice".into(),
            uid: String::new(),
            groups: vec!["admins".into()],
        };
        let v = serde_json::to_value(&caller).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"by": "kubernetes", "username": "alice", "groups": ["admins"]})
        );
        assert_eq!(caller.to_string(), "kubernetes:alice");
    }
}
