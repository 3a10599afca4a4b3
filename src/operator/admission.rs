//! The validating admission webhook the operator serves: `POST
//! /api/v1/admission/SOURCE` on the API listener (TLS), for the cluster
//! `SOURCE` names.
//!
//! An `AdmissionReview` v1 comes in from the API server; the handler reads
//! it (`crate::admission::parse_review`), hands it to the source's loop as
//! a [`Command::Admit`] with a reply channel and a deadline, and the loop
//! answers with the pure review (`crate::admission::review`) against its
//! live index and its counted approvals. The handler sends the
//! `AdmissionReview` response back, counts it
//! (`permdrift_admission_reviews_total{source,decision}`, the
//! `permdrift_admission_review_duration_seconds` histogram) and journals it
//! as a typed `admission` record with `userInfo` as the actor. When the
//! loop cannot judge (not the leader, not synced, busy past the deadline,
//! stopped) the write is allowed with a warning that says so: the gate
//! never denies blindly.

use super::records::{AdmissionBody, Body};
use super::store::StoreHandle;
use super::{Command, now};
use crate::admission::review::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use crate::admission::{self, Approvals, Decision, Gate, Outcome};
use crate::config::{AdmissionConfig, AdmissionMode, AllowRule, Mode};
use crate::decide::ObjectKey;
use crate::index::k8s::K8sModel;
use crate::index::k8s_live::ObjectChange;
use crate::metrics::Metrics;
use crate::model::k8s::RbacKey;
use crate::report::Severity;
use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The webhook's path; `{source}` names the configured Kubernetes source.
pub const PATH: &str = "/api/v1/admission/{source}";

/// How long the loop has to answer before the write is allowed unjudged.
/// Well under the chart's default `timeoutSeconds` (5), so the API server
/// always hears an answer from us rather than timing out.
pub const JUDGE_WITHIN: Duration = Duration::from_secs(2);

/// The largest AdmissionReview read. The API server accepts objects up to
/// 3 MiB and a review of an update carries the object twice; the API's own
/// (much smaller) body limit is for its small JSON commands.
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// The requester as journaled: the AdmissionReview's `userInfo`.
pub type Actor = crate::admission::review::UserInfo;

/// One source's gate, as configured, owned so it can travel to the loop.
#[derive(Clone, Debug)]
pub struct GateConfig {
    pub source: String,
    pub mode: AdmissionMode,
    pub deny_at: Severity,
    pub allow: Arc<Vec<AllowRule>>,
    /// `system:serviceaccount:NS:NAME` of the operator itself.
    pub operator: Option<String>,
    pub exempt_users: Vec<String>,
    pub exempt_groups: Vec<String>,
}

impl GateConfig {
    pub fn new(
        source: &str,
        config: &AdmissionConfig,
        allow: Arc<Vec<AllowRule>>,
        operator: Option<String>,
    ) -> Self {
        Self {
            source: source.to_owned(),
            mode: config.mode,
            deny_at: config.min_severity,
            allow,
            operator,
            exempt_users: config
                .exempt
                .iter()
                .filter_map(|e| e.user.clone())
                .collect(),
            exempt_groups: config
                .exempt
                .iter()
                .filter_map(|e| e.group.clone())
                .collect(),
        }
    }

    pub fn gate(&self) -> Gate<'_> {
        Gate {
            source: &self.source,
            mode: match self.mode {
                AdmissionMode::Detect => Mode::Detect,
                AdmissionMode::Enforce => Mode::Enforce,
            },
            deny_at: self.deny_at,
            allow: &self.allow,
            operator: self.operator.as_deref(),
            exempt_users: &self.exempt_users,
            exempt_groups: &self.exempt_groups,
        }
    }

    fn mode_str(&self) -> &'static str {
        match self.mode {
            AdmissionMode::Detect => "detect",
            AdmissionMode::Enforce => "enforce",
        }
    }
}

/// The operator's own service account, from the pod's environment (the
/// chart sets `POD_NAMESPACE` and `POD_SERVICE_ACCOUNT` from the downward API).
pub fn operator_user() -> Option<String> {
    let ns = std::env::var("POD_NAMESPACE").ok()?;
    let sa = std::env::var("POD_SERVICE_ACCOUNT").ok()?;
    (!ns.is_empty() && !sa.is_empty()).then(|| format!("system:serviceaccount:{ns}:{sa}"))
}

/// Why the loop did not judge a review.
pub type Unjudged = &'static str;

/// A review for a source's loop. The loop owns the live index, so the
/// review runs there rather than on a copy shared with the watch: the
/// review is pure and takes about as long as judging one watch event, the
/// watch stream waits at most for that, and the handler never waits
/// longer than the deadline (then the write is allowed unjudged).
#[derive(Debug)]
pub struct Admit {
    pub request: AdmissionRequest,
    pub gate: Arc<GateConfig>,
    pub deadline: tokio::time::Instant,
    pub reply: oneshot::Sender<Result<Decision, Unjudged>>,
}

/// The loop's copy of its live model for reviews: each review applies its
/// write to the copy and restores it (`admission::review_on_copy`), so no
/// review copies the model (a copy costs milliseconds at 100,000 objects).
/// Made on the first review; it follows the index's object changes after
/// that, and is dropped on anything else (a re-list, a failure) to be made
/// again. The copy shares every object with the live model: it costs the
/// model's maps, not its objects.
#[derive(Debug, Default)]
pub struct ReviewCopy(Option<K8sModel>);

impl ReviewCopy {
    /// Follows one watch event's effect on the index: `changes` when the
    /// event was a plain apply or delete (`in_step`), else the copy is dropped.
    pub fn follow(&mut self, in_step: bool, changes: &[ObjectChange]) {
        let Some(copy) = self.0.as_mut() else {
            return;
        };
        if !in_step {
            self.0 = None;
            return;
        }
        for change in changes {
            match &change.current {
                Some(object) => {
                    copy.insert(object.clone());
                }
                None => {
                    copy.remove(&change.key);
                }
            }
        }
    }

    /// The copy of `live`, made now if there is none or it has drifted.
    fn of(&mut self, live: &K8sModel) -> &mut K8sModel {
        if self.0.as_ref().is_some_and(|c| c.len() != live.len()) {
            self.0 = None;
        }
        self.0.get_or_insert_with(|| live.clone())
    }
}

/// The loop's side: the review against `live` (None: the loop is not
/// recording or not synced), sent back unless the handler gave up. Pure
/// apart from the send.
pub fn answer(
    admit: Admit,
    live: Option<&K8sModel>,
    copy: &mut ReviewCopy,
    approvals: &dyn Approvals,
) {
    if admit.reply.is_closed() || tokio::time::Instant::now() >= admit.deadline {
        return;
    }
    let result = match live {
        Some(model) => Ok(admission::review_on_copy(
            model,
            copy.of(model),
            &admit.gate.gate(),
            approvals,
            &admit.request,
        )),
        None => Err("this replica is not recording the cluster (not the leader, or not synced)"),
    };
    let _ = admit.reply.send(result);
}

/// Whether counted, unexpired approvals of `key` name `digest` (the gate's
/// `sha256:HEX`; approvals hold the bare hex, src/approval/digest.rs).
pub fn held_approves(
    held: &super::approvals::HeldApprovals,
    key: &RbacKey,
    digest: &str,
    now: Timestamp,
) -> bool {
    let bare = digest.strip_prefix("sha256:").unwrap_or(digest);
    let object = ObjectKey::K8s(key.clone());
    let needed = held.needed.get(&object).copied().unwrap_or(1);
    held.by_object.get(&object).is_some_and(|hs| {
        let who: std::collections::BTreeSet<&str> = hs
            .iter()
            .filter(|h| h.expires > now && h.digest == bare)
            .map(|h| h.identity.as_str())
            .collect();
        !who.is_empty() && who.len() >= needed
    })
}

/// Refusals journaled per minute at most (a flood of garbage must not fill
/// the disk); the counter still sees every one.
const REFUSALS_PER_MINUTE: u32 = 60;

#[derive(Debug, Default)]
struct Budget {
    minute: i64,
    used: u32,
}

impl Budget {
    fn take(&mut self, t: Timestamp) -> bool {
        let minute = t.as_second() / 60;
        if minute != self.minute {
            self.minute = minute;
            self.used = 0;
        }
        self.used += 1;
        self.used <= REFUSALS_PER_MINUTE
    }
}

#[derive(Clone)]
pub struct AdmissionState {
    pub metrics: Metrics,
    pub store: StoreHandle,
    pub commands: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
    /// The sources with an `admission` section.
    pub gates: Arc<BTreeMap<String, Arc<GateConfig>>>,
    pub max_body_bytes: usize,
    budget: Arc<Mutex<Budget>>,
}

impl AdmissionState {
    pub fn new(
        metrics: Metrics,
        store: StoreHandle,
        commands: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
        gates: BTreeMap<String, Arc<GateConfig>>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            metrics,
            store,
            commands,
            gates: Arc::new(gates),
            max_body_bytes,
            budget: Arc::default(),
        }
    }
}

pub fn router(state: AdmissionState) -> Router {
    Router::new().route(PATH, post(admit)).with_state(state)
}

/// What the handler ends with, before it is counted and journaled.
struct Reviewed {
    review: AdmissionReview,
    decision: &'static str,
    /// Journal it (see docs/admission.md: what is counted only).
    journal: bool,
    body: AdmissionBody,
}

/// Outcomes that are counted but not journaled: nothing widens, the write
/// is not one the gate judges, or the requester is exempt (the aggregation
/// controller writes often, and its writes are judged by the watch anyway).
fn counted_only(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::NotJudged | Outcome::NotWidening | Outcome::Exempt
    )
}

async fn admit(
    State(s): State<AdmissionState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(source): Path<String>,
    body: HttpBody,
) -> Response {
    let started = Instant::now();
    let bytes = match axum::body::to_bytes(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let message = format!("the body is larger than {} bytes", s.max_body_bytes);
            return refuse(
                &s,
                &source,
                peer,
                StatusCode::PAYLOAD_TOO_LARGE,
                "oversized",
                message,
            )
            .await;
        }
    };
    let Some(gate) = s.gates.get(&source).cloned() else {
        let message = format!("no source {source:?} has an admission gate");
        return refuse(
            &s,
            &source,
            peer,
            StatusCode::NOT_FOUND,
            "unknown-source",
            message,
        )
        .await;
    };
    let request = match admission::parse_review(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &s,
                &source,
                peer,
                StatusCode::BAD_REQUEST,
                "malformed",
                e.to_string(),
            )
            .await;
        }
    };
    let deadline = tokio::time::Instant::now() + JUDGE_WITHIN;
    let (reply, answer) = oneshot::channel();
    let admit = Admit {
        request: request.clone(),
        gate: gate.clone(),
        deadline,
        reply,
    };
    let asked = async {
        let tx = s
            .commands
            .get(&source)
            .ok_or("the source's loop is not running")?;
        tx.send(Command::Admit(Box::new(admit)))
            .await
            .map_err(|_| "the source's loop has stopped")?;
        answer
            .await
            .map_err(|_| "the source's loop dropped the review")?
    };
    let judged = match tokio::time::timeout_at(deadline, asked).await {
        Ok(result) => result,
        Err(_) => Err("the source's loop did not answer in time"),
    };
    let seconds = started.elapsed().as_secs_f64();
    let reviewed = match judged {
        Ok(decision) => judged_review(&gate, &request, decision, peer, seconds),
        Err(why) => unjudged_review(&gate, &request, why, peer, seconds),
    };
    s.metrics
        .admission_reviews
        .with_label_values(&[source.as_str(), reviewed.decision])
        .inc();
    s.metrics
        .admission_duration
        .with_label_values(&[source.as_str()])
        .observe(seconds);
    if reviewed.journal {
        let b = &reviewed.body;
        tracing::info!(source = %source, object = b.object.as_deref().unwrap_or(""),
            outcome = %b.outcome, allowed = b.allowed,
            actor = b.actor.as_ref().map(|a| a.username.as_str()).unwrap_or(""),
            "admission review");
        append(&s.store, &source, reviewed.body).await;
    }
    axum::Json(reviewed.review).into_response()
}

fn base_body(gate: &GateConfig, request: &AdmissionRequest, peer: SocketAddr) -> AdmissionBody {
    AdmissionBody {
        uid: request.uid.clone(),
        object: None,
        operation: request.operation.as_str().to_owned(),
        outcome: String::new(),
        allowed: true,
        mode: gate.mode_str().to_owned(),
        actor: Some(request.user_info.clone()),
        severity: None,
        risks: Vec::new(),
        witness: None,
        digest: None,
        message: String::new(),
        dry_run: request.dry_run.unwrap_or(false),
        remote: peer.to_string(),
        seconds: 0.0,
    }
}

fn judged_review(
    gate: &GateConfig,
    request: &AdmissionRequest,
    decision: Decision,
    peer: SocketAddr,
    seconds: f64,
) -> Reviewed {
    let mut body = base_body(gate, request, peer);
    body.object = decision.object.as_ref().map(ToString::to_string);
    body.outcome = decision.outcome.as_str().to_owned();
    body.allowed = decision.response.allowed;
    body.seconds = seconds;
    if let Some(change) = &decision.change {
        body.severity = Some(change.severity);
        body.risks = change.risks.clone();
        body.witness = change.witness.as_ref().map(|w| w.explanation.clone());
    }
    body.digest = decision.digest.clone();
    body.message = match &decision.response.status {
        Some(status) => status.message.clone().unwrap_or_default(),
        None => decision.response.warnings.join("\n"),
    };
    Reviewed {
        review: decision.to_review(),
        decision: decision.outcome.as_str(),
        journal: !counted_only(decision.outcome),
        body,
    }
}

fn unjudged_review(
    gate: &GateConfig,
    request: &AdmissionRequest,
    why: Unjudged,
    peer: SocketAddr,
    seconds: f64,
) -> Reviewed {
    let mut response = AdmissionResponse::allow(&request.uid);
    let warning = format!("permdrift could not judge this write ({why}); it is allowed unreviewed");
    response.warnings.push(warning.clone());
    let mut body = base_body(gate, request, peer);
    body.outcome = "unjudged".into();
    body.message = warning;
    body.seconds = seconds;
    body.object = request.name.as_ref().map(|n| match &request.namespace {
        Some(ns) => format!("{}/{ns}/{n}", request.kind.kind),
        None => format!("{}/{n}", request.kind.kind),
    });
    Reviewed {
        review: AdmissionReview::answer(response),
        decision: "unjudged",
        journal: true,
        body,
    }
}

/// A request that is not an AdmissionReview this webhook answers: an HTTP
/// error (the API server then applies `failurePolicy`), counted, and
/// journaled at a bounded rate.
async fn refuse(
    s: &AdmissionState,
    source: &str,
    peer: SocketAddr,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response {
    // Only configured names become metric labels: a caller must not be
    // able to mint label values.
    let label = if s.gates.contains_key(source) {
        source
    } else {
        ""
    };
    s.metrics
        .admission_reviews
        .with_label_values(&[label, reason])
        .inc();
    tracing::warn!(remote = %peer, reason, status = status.as_u16(), error = %message,
        "admission request refused");
    let t = now();
    let journal = s.budget.lock().map(|mut b| b.take(t)).unwrap_or(true);
    if journal {
        let body = AdmissionBody {
            uid: String::new(),
            object: None,
            operation: String::new(),
            outcome: reason.to_owned(),
            allowed: false,
            mode: String::new(),
            actor: None,
            severity: None,
            risks: Vec::new(),
            witness: None,
            digest: None,
            message: message.clone(),
            dry_run: false,
            remote: peer.to_string(),
            seconds: 0.0,
        };
        let record = Body::Admission(Box::new(body));
        let appended = if label.is_empty() {
            s.store.append_global(&record, t).await
        } else {
            s.store.append(label, &record, t).await
        };
        if let Err(e) = appended {
            tracing::warn!(error = %e, reason, "admission refusal not journaled");
        }
    }
    let mut response = (status, format!("{message}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn append(store: &StoreHandle, source: &str, body: AdmissionBody) {
    let record = Body::Admission(Box::new(body));
    match store.append(source, &record, now()).await {
        Ok(_) => {}
        // A follower has no store open; its reviews are in its log and metrics.
        Err(super::Error::NotLeading) => {
            tracing::debug!("admission review not journaled: not the leader")
        }
        Err(e) => tracing::warn!(error = %e, "admission review not journaled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::approvals::{Held, HeldApprovals};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn held_approvals_approve_their_digest_until_they_expire() {
        let key = RbacKey::new(
            crate::model::k8s::RbacKind::ClusterRoleBinding,
            None,
            "eng-admin",
        );
        let mut held = HeldApprovals::default();
        held.by_object.insert(
            ObjectKey::K8s(key.clone()),
            vec![Held {
                identity: "alice".into(),
                digest: "abc".into(),
                expires: ts("2026-12-03T12:00:00Z"),
            }],
        );
        let before = ts("2026-12-03T11:00:00Z");
        assert!(held_approves(&held, &key, "sha256:abc", before));
        assert!(!held_approves(&held, &key, "sha256:abd", before));
        assert!(!held_approves(
            &held,
            &key,
            "sha256:abc",
            ts("2026-12-03T12:00:00Z")
        ));
        held.needed.insert(ObjectKey::K8s(key.clone()), 2);
        assert!(!held_approves(&held, &key, "sha256:abc", before));
    }

    fn crb(name: &str, role: &str, group: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]})
    }

    fn live() -> K8sModel {
        let mut m = K8sModel::new();
        let admin = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        m.insert(crate::index::k8s::K8sObject::from_raw(admin).unwrap());
        m
    }

    fn admit(
        deadline: tokio::time::Instant,
    ) -> (Admit, oneshot::Receiver<Result<Decision, Unjudged>>) {
        let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1",
              "kind": {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": "ClusterRoleBinding"},
              "resource": {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterrolebindings"},
              "name": "eng-admin", "operation": "CREATE",
              "userInfo": {"username": "alice", "groups": ["engineering"]},
              "object": crb("eng-admin", "cluster-admin", "engineering")}});
        let request = admission::parse_review(review.to_string().as_bytes()).unwrap();
        let config = AdmissionConfig {
            mode: AdmissionMode::Enforce,
            min_severity: Severity::High,
            exempt: Vec::new(),
        };
        let gate = Arc::new(GateConfig::new("prod", &config, Arc::default(), None));
        let (reply, rx) = oneshot::channel();
        (
            Admit {
                request,
                gate,
                deadline,
                reply,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn the_loop_judges_on_its_copy_and_never_denies_unjudged() {
        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        let model = live();
        let mut copy = ReviewCopy::default();
        // Judged: denied, and the copy is back to the live model after.
        let (a, mut rx) = admit(later);
        answer(a, Some(&model), &mut copy, &admission::NoApprovals);
        let decision = rx.try_recv().unwrap().unwrap();
        assert_eq!(decision.outcome, Outcome::Denied);
        assert_eq!(copy.0.as_ref().map(K8sModel::len), Some(model.len()));
        // Not recording: an error the handler turns into "allowed unjudged".
        let (a, mut rx) = admit(later);
        answer(a, None, &mut copy, &admission::NoApprovals);
        assert!(
            rx.try_recv()
                .unwrap()
                .unwrap_err()
                .contains("not recording")
        );
        // Past the deadline the handler has answered already: nothing is judged.
        let (a, mut rx) = admit(tokio::time::Instant::now() - Duration::from_millis(1));
        answer(a, Some(&model), &mut copy, &admission::NoApprovals);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_review_copy_follows_changes_and_is_dropped_on_anything_else() {
        let mut model = live();
        let mut copy = ReviewCopy::default();
        copy.of(&model);
        let object =
            crate::index::k8s::K8sObject::from_raw(crb("b", "cluster-admin", "g")).unwrap();
        let change = ObjectChange {
            key: object.parsed.key.clone(),
            previous: None,
            current: Some(object.clone()),
            origin: crate::index::k8s_live::ChangeOrigin::Watch,
            resource_version: None,
        };
        model.insert(object);
        copy.follow(true, std::slice::from_ref(&change));
        assert_eq!(copy.0.as_ref().map(K8sModel::len), Some(model.len()));
        copy.follow(false, &[]);
        assert!(copy.0.is_none());
        // A copy that drifted (here: one object short) is made again.
        copy.0 = Some(live());
        assert_eq!(copy.of(&model).len(), model.len());
    }

    #[test]
    fn refusals_are_journaled_at_a_bounded_rate() {
        let mut b = Budget::default();
        let t = ts("2026-12-03T11:00:00Z");
        let taken = (0..100).filter(|_| b.take(t)).count();
        assert_eq!(taken, REFUSALS_PER_MINUTE as usize);
        assert!(b.take(ts("2026-12-03T11:01:00Z")));
    }
}
