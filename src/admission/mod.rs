//! The review gate at admission: one `AdmissionReview` v1 request (an RBAC
//! write the API server is about to store) and the live [`K8sModel`] come
//! in; a [`Decision`] comes out, carrying the `AdmissionReview` response
//! (uid echoed, `allowed`, `status.code/message`, `warnings`) and the
//! classified [`Change`] for the journal.
//!
//! The widening is the one `permdrift diff` would report between the live
//! model and the model with the request applied (`diff::k8s_object_change`
//! and `diff::k8s_change`, so aggregation, risk tags, severity and the
//! witness are judged exactly as everywhere else). Then, in order:
//! exempt requesters (the clusterrole-aggregation-controller, the
//! operator's own service account, configured exemptions) are allowed; so
//! is anything that does not widen, anything an [`AllowRule`] covers
//! (`decide::Policy::allowed_by`), and anything approved by content. What
//! is left is an unapproved widening: in `enforce` mode it is denied (403)
//! at or above the configured severity, with the risk tags, the witness and
//! the `permdrift approve` command in the message; otherwise it is allowed
//! with an admission warning.
//!
//! Approval by content: [`content_digest`] is `sha256:` and the approval
//! grants digest of the change (src/approval/digest.rs: the gained grants,
//! diffed with no cap, sorted and hashed), the digest `permdrift approve`
//! and the operator's approvals name. It names what is granted, not how
//! the object spells it, so a reordered or relabelled manifest keeps its
//! approval. [`Approvals::is_approved`] gets the source, the object key and
//! that digest.
//!
//! Pure: no I/O, no clock.

pub mod review;

use crate::config::{AllowRule, Mode};
use crate::decide::Policy;
use crate::diff::{self, DiffOptions};
use crate::grants::glob;
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::k8s::{RbacKey, RbacKind};
use crate::report::{Change, Severity};
use review::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

/// The service account of kube-controller-manager's aggregation loop: it
/// rewrites aggregated ClusterRoles' rules and must never be refused, or
/// aggregation stalls.
pub const AGGREGATION_CONTROLLER: &str =
    "system:serviceaccount:kube-system:clusterrole-aggregation-controller";

/// The API group whose writes the gate judges.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Why an `AdmissionReview` could not be read. The webhook answers these
/// with HTTP 400; the API server then applies its `failurePolicy`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("AdmissionReview: {path}: {message}")]
    Json { path: String, message: String },
    #[error("AdmissionReview: apiVersion {0:?} is not admission.k8s.io/v1")]
    ApiVersion(String),
    #[error("AdmissionReview: kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview: request: missing")]
    NoRequest,
}

/// Reads an `AdmissionReview` v1 request body; errors name the field.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let review: AdmissionReview =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ReviewError::Json {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    if review.api_version != review::API_VERSION {
        return Err(ReviewError::ApiVersion(review.api_version));
    }
    if review.kind != review::KIND {
        return Err(ReviewError::Kind(review.kind));
    }
    review.request.ok_or(ReviewError::NoRequest)
}

/// Whether content is approved: source, object and [`content_digest`].
pub trait Approvals {
    fn is_approved(&self, source: &str, object: &RbacKey, digest: &str) -> bool;
}

impl<F: Fn(&str, &RbacKey, &str) -> bool> Approvals for F {
    fn is_approved(&self, source: &str, object: &RbacKey, digest: &str) -> bool {
        self(source, object, digest)
    }
}

/// No approvals at all.
pub struct NoApprovals;

impl Approvals for NoApprovals {
    fn is_approved(&self, _: &str, _: &RbacKey, _: &str) -> bool {
        false
    }
}

/// What the gate enforces for one source (one cluster).
#[derive(Clone, Debug)]
pub struct Gate<'a> {
    pub source: &'a str,
    pub mode: Mode,
    /// In `enforce` mode, unapproved widening at or above this is denied;
    /// below it is allowed with a warning.
    pub deny_at: Severity,
    pub allow: &'a [AllowRule],
    /// The operator's own service account (`system:serviceaccount:NS:NAME`):
    /// its reverts are never refused.
    pub operator: Option<&'a str>,
    /// Globs over the requester's username never refused.
    pub exempt_users: &'a [String],
    /// Globs over the requester's groups never refused.
    pub exempt_groups: &'a [String],
}

/// What the gate decided, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not an RBAC object write the gate judges (another kind, a subresource, CONNECT).
    NotJudged,
    /// The requester is exempt.
    Exempt,
    /// Nothing widens.
    NotWidening,
    AllowListed,
    Approved,
    /// Unapproved widening let through with a warning (detect mode, or below `deny_at`).
    Warned,
    Denied,
    /// The object could not be read as RBAC: let through with a warning
    /// (the API server's own validation refuses malformed RBAC objects).
    Unreadable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotJudged => "not-judged",
            Outcome::Exempt => "exempt",
            Outcome::NotWidening => "not-widening",
            Outcome::AllowListed => "allow-listed",
            Outcome::Approved => "approved",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
            Outcome::Unreadable => "unreadable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub outcome: Outcome,
    pub response: AdmissionResponse,
    /// The object the request writes, when it is an RBAC object.
    pub object: Option<RbacKey>,
    /// The classified change, when the write changes the object.
    pub change: Option<Change>,
    /// [`content_digest`] of `change`.
    pub digest: Option<String>,
    /// The requester (`userInfo.username`), for attribution.
    pub actor: String,
}

impl Decision {
    /// The `AdmissionReview` to send back.
    pub fn to_review(&self) -> AdmissionReview {
        AdmissionReview::answer(self.response.clone())
    }
}

/// `sha256:` and the approval grants digest of the change (see the module
/// doc); the change is diffed with no grant cap, so the list is whole.
pub fn content_digest(change: &Change) -> String {
    format!(
        "sha256:{}",
        crate::approval::digest::digest_of(&change.gained)
    )
}

/// The command that approves this content, quoted for a POSIX shell.
pub fn approve_command(source: &str, object: &RbacKey) -> String {
    let manifest = match &object.namespace {
        Some(ns) => format!("{}-{ns}-{}.yaml", object.kind.as_str(), object.name),
        None => format!("{}-{}.yaml", object.kind.as_str(), object.name),
    }
    .to_lowercase();
    shell_words::join([
        "permdrift",
        "approve",
        "--source",
        source,
        "--manifest",
        &manifest,
    ])
}

fn exempt(gate: &Gate<'_>, request: &AdmissionRequest) -> bool {
    let user = &request.user_info.username;
    user == AGGREGATION_CONTROLLER
        || gate.operator.is_some_and(|op| op == user)
        || gate.exempt_users.iter().any(|p| glob::matches(p, user))
        || request
            .user_info
            .groups
            .iter()
            .any(|g| gate.exempt_groups.iter().any(|p| glob::matches(p, g)))
}

/// The object key a request writes, when it is an RBAC write the gate judges.
fn rbac_key(request: &AdmissionRequest) -> Option<RbacKey> {
    if request.kind.group != RBAC_GROUP
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        || request.operation == Operation::Connect
    {
        return None;
    }
    let kind = RbacKind::from_kind(&request.kind.kind)?;
    if kind == RbacKind::ServiceAccount {
        return None;
    }
    let namespaced = matches!(kind, RbacKind::Role | RbacKind::RoleBinding);
    let name = request
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(|n| n.as_str())
        })?;
    let namespace = if namespaced {
        request.namespace.as_deref()
    } else {
        None
    };
    Some(RbacKey::new(kind, namespace, name))
}

/// What a request does to the model.
enum Write {
    Put(K8sObject),
    Remove,
}

/// The decision for a request, when it is settled without a diff (not
/// judged, exempt, unreadable); otherwise the object key and the write.
fn prepare(gate: &Gate<'_>, request: &AdmissionRequest) -> Result<(RbacKey, Write), Box<Decision>> {
    let mut decision = Decision {
        outcome: Outcome::NotJudged,
        response: AdmissionResponse::allow(&request.uid),
        object: None,
        change: None,
        digest: None,
        actor: request.user_info.username.clone(),
    };
    let Some(key) = rbac_key(request) else {
        return Err(Box::new(decision));
    };
    decision.object = Some(key.clone());
    if exempt(gate, request) {
        decision.outcome = Outcome::Exempt;
        return Err(Box::new(decision));
    }
    let unreadable = |mut decision: Decision, why: String| {
        decision.outcome = Outcome::Unreadable;
        decision
            .response
            .warnings
            .push(format!("permdrift could not judge this write: {why}"));
        Err(Box::new(decision))
    };
    match (request.operation, &request.object) {
        (Operation::Delete, _) => Ok((key, Write::Remove)),
        (_, Some(object)) => match K8sObject::from_raw(object.clone()) {
            Ok(o) if o.parsed.key == key => Ok((key, Write::Put(o))),
            Ok(o) => unreadable(
                decision,
                format!("the object is {}, the request names {key}", o.parsed.key),
            ),
            Err(e) => unreadable(decision, format!("request.object: {e}")),
        },
        (_, None) => unreadable(
            decision,
            format!(
                "request.object is missing for {}",
                request.operation.as_str()
            ),
        ),
    }
}

/// Applies `write` to `model`, returning what it replaced (to undo it).
fn apply(model: &mut K8sModel, key: &RbacKey, write: Write) -> Option<K8sObject> {
    match write {
        Write::Put(object) => model.insert(object),
        Write::Remove => model.remove(key),
    }
}

/// Reviews one request against the live model. Costs a copy of the model
/// per call (milliseconds at 100,000 objects); a webhook serving many
/// reviews keeps a [`Reviewer`] instead.
pub fn review(
    live: &K8sModel,
    gate: &Gate<'_>,
    approvals: &dyn Approvals,
    request: &AdmissionRequest,
) -> Decision {
    let (key, write) = match prepare(gate, request) {
        Ok(prepared) => prepared,
        Err(decision) => return *decision,
    };
    let mut next = live.clone();
    apply(&mut next, &key, write);
    conclude(live, &next, gate, approvals, request, key)
}

/// The live model and a second copy of it that each review changes and
/// restores, so no review copies the model: the copies share every object,
/// and keeping both current costs one more insert or remove per watch event.
pub struct Reviewer {
    live: K8sModel,
    scratch: K8sModel,
}

impl Reviewer {
    pub fn new(live: K8sModel) -> Self {
        let scratch = live.clone();
        Self { live, scratch }
    }

    pub fn live(&self) -> &K8sModel {
        &self.live
    }

    /// An object added or changed in the cluster.
    pub fn insert(&mut self, object: K8sObject) {
        self.scratch.insert(object.clone());
        self.live.insert(object);
    }

    /// An object deleted from the cluster.
    pub fn remove(&mut self, key: &RbacKey) {
        self.scratch.remove(key);
        self.live.remove(key);
    }

    /// The same decision as [`review`] against [`Reviewer::live`].
    pub fn review(
        &mut self,
        gate: &Gate<'_>,
        approvals: &dyn Approvals,
        request: &AdmissionRequest,
    ) -> Decision {
        review_on_copy(&self.live, &mut self.scratch, gate, approvals, request)
    }
}

/// The same decision as [`review`], with `scratch` (a model equal to
/// `live`, sharing its objects) changed by the write and restored after,
/// so nothing is copied. For callers that own the live model elsewhere and
/// keep `scratch` in step with it themselves.
pub fn review_on_copy(
    live: &K8sModel,
    scratch: &mut K8sModel,
    gate: &Gate<'_>,
    approvals: &dyn Approvals,
    request: &AdmissionRequest,
) -> Decision {
    let (key, write) = match prepare(gate, request) {
        Ok(prepared) => prepared,
        Err(decision) => return *decision,
    };
    let previous = apply(scratch, &key, write);
    let decision = conclude(live, scratch, gate, approvals, request, key.clone());
    match previous {
        Some(object) => {
            scratch.insert(object);
        }
        None => {
            scratch.remove(&key);
        }
    }
    decision
}

/// The decision on a write, given the model before (`live`) and after (`next`) it.
fn conclude(
    live: &K8sModel,
    next: &K8sModel,
    gate: &Gate<'_>,
    approvals: &dyn Approvals,
    request: &AdmissionRequest,
    key: RbacKey,
) -> Decision {
    let uid = &request.uid;
    let mut decision = Decision {
        outcome: Outcome::NotWidening,
        response: AdmissionResponse::allow(uid),
        object: Some(key.clone()),
        change: None,
        digest: None,
        actor: request.user_info.username.clone(),
    };
    let Some(object_change) = diff::k8s_object_change(live, next, &key) else {
        decision.outcome = Outcome::NotWidening;
        return decision;
    };
    let (change, _) = {
        let mut differ = diff::k8s::K8sDiffer::new(live, next);
        let mut classifier = crate::classify::k8s::Classifier::new();
        diff::k8s_change(
            &mut differ,
            &mut classifier,
            gate.source,
            object_change,
            // No grant cap: the digest must cover every gained grant, as
            // approvals do (src/operator/approvals.rs, `uncapped_change`).
            &DiffOptions {
                max_grants: 0,
                subject_grants: false,
                ..DiffOptions::default()
            },
        )
    };
    let digest = content_digest(&change);
    decision.outcome = judge(gate, approvals, &key, &change, &digest);
    match decision.outcome {
        Outcome::Denied => {
            decision.response = AdmissionResponse::deny(
                uid,
                403,
                "Forbidden",
                denial_message(gate, &key, &change, &digest),
            );
        }
        Outcome::Warned => decision
            .response
            .warnings
            .push(warning(gate, &key, &change)),
        _ => {}
    }
    decision.change = Some(change);
    decision.digest = Some(digest);
    decision
}

fn judge(
    gate: &Gate<'_>,
    approvals: &dyn Approvals,
    key: &RbacKey,
    change: &Change,
    digest: &str,
) -> Outcome {
    if !change.direction.widens() {
        return Outcome::NotWidening;
    }
    let policy = Policy {
        source: gate.source,
        mode: gate.mode,
        allow: gate.allow,
    };
    if policy.allowed_by(change).is_some() {
        return Outcome::AllowListed;
    }
    if approvals.is_approved(gate.source, key, digest) {
        return Outcome::Approved;
    }
    if gate.mode == Mode::Enforce && change.severity >= gate.deny_at {
        Outcome::Denied
    } else {
        Outcome::Warned
    }
}

fn risks(change: &Change) -> String {
    if change.risks.is_empty() {
        return "none".into();
    }
    // The API server shows the whole message on one line: a cluster-admin
    // grant carries twenty tags, so name the first few (the broadest come
    // first) and count the rest.
    const SHOWN: usize = 5;
    let mut text = change
        .risks
        .iter()
        .take(SHOWN)
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if change.risks.len() > SHOWN {
        text.push_str(&format!(" and {} more", change.risks.len() - SHOWN));
    }
    text
}

fn witness(change: &Change) -> String {
    change
        .witness
        .as_ref()
        .map(|w| format!(" {}.", w.explanation))
        .unwrap_or_default()
}

fn denial_message(gate: &Gate<'_>, key: &RbacKey, change: &Change, digest: &str) -> String {
    format!(
        "permdrift: unapproved {} widening of {key} (risks: {}).{} To approve this exact content: {} ({digest})",
        change.severity.as_str(),
        risks(change),
        witness(change),
        approve_command(gate.source, key),
    )
}

fn warning(gate: &Gate<'_>, key: &RbacKey, change: &Change) -> String {
    format!(
        "permdrift: unapproved {} widening of {key} (risks: {}).{} Approve: {}",
        change.severity.as_str(),
        risks(change),
        witness(change),
        approve_command(gate.source, key),
    )
}
