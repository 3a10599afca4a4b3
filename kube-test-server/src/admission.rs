//! Validating admission webhooks, as kube-apiserver calls them. A write
//! (create, update, patch, delete) arrives here after authorization with
//! the object it would store and the object it replaces (computed by a dry
//! run of the same write, so patches, defaults and validation errors are
//! exactly the write's own); the stored `ValidatingWebhookConfiguration`s
//! whose webhooks match it (`rules`, `scope`, `matchPolicy`,
//! `namespaceSelector`, `objectSelector`) are called in parallel with an
//! `AdmissionReview` v1 over HTTPS, and their answers come out as a
//! refusal (a denial's status, or "failed calling webhook" under
//! `failurePolicy: Fail`) or the warnings to send back. Every call is
//! counted under kube-apiserver's metric names (`metrics.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value, json};

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::kinds::KindDef;
use crate::metrics::Metrics;
use crate::store::{Obj, Store};

pub const GROUP: &str = "admissionregistration.k8s.io";
pub const VWC: &str = "validatingwebhookconfigurations";

/// Largest AdmissionReview response read from a webhook.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;

/// One write, as admission sees it.
pub struct Attributes<'a> {
    pub kd: &'a KindDef,
    /// the version the request addressed
    pub version: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: String,
    /// CREATE, UPDATE or DELETE
    pub operation: &'static str,
    pub user: &'a UserInfo,
    pub object: Option<Value>,
    pub old_object: Option<Value>,
    pub dry_run: bool,
    pub options: Value,
}

/// `Service` references resolved to URLs: the test server has no cluster
/// network, so `--webhook-service NS/NAME=https://HOST:PORT` says where a
/// service is; the service's `path` is appended.
pub type Services = BTreeMap<(String, String), String>;

/// A webhook of a stored configuration, with what matching needs.
pub struct Hook {
    name: String,
    config: String,
    spec: Value,
    fail_open: bool,
    timeout: Duration,
}

/// Why a webhook could not be used; `failurePolicy` decides what follows.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("failed to call webhook: {0}")]
    Call(String),
    #[error("received invalid webhook response: {0}")]
    Invalid(String),
    #[error("failed to call webhook: Post {url:?}: context deadline exceeded")]
    Timeout { url: String },
}

/// A webhook's answer.
struct Answer {
    allowed: bool,
    status: Value,
    warnings: Vec<String>,
    code: u16,
}

/// The webhooks that match `a`, each with the version its rules matched
/// (read from the store; nothing is called yet).
pub fn plan(store: &Store, a: &Attributes<'_>) -> Vec<(Hook, String)> {
    // As kube-apiserver: webhook configurations are never subject to webhooks,
    // so a bad webhook can always be removed.
    if a.kd.group == GROUP {
        return Vec::new();
    }
    matching(store, a)
}

/// Calls the `hooks` of [`plan`] in parallel. `Ok` holds the warnings to
/// send back; `Err` is the refusal, with the warnings gathered with it.
pub async fn admit(
    hooks: Vec<(Hook, String)>,
    services: &Services,
    metrics: &Metrics,
    a: &Attributes<'_>,
) -> Result<Vec<String>, (ApiError, Vec<String>)> {
    let mut warnings = Vec::new();
    for (hook, _) in &hooks {
        let side_effects = hook.spec["sideEffects"].as_str().unwrap_or_default();
        if a.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            let e = ApiError::bad_request(format!(
                "admission webhook {:?} does not support dry run",
                hook.name
            ));
            return Err((e, warnings));
        }
    }
    let calls = hooks.iter().map(|(hook, version)| async move {
        let started = Instant::now();
        let result = call(services, hook, a, version).await;
        (hook, result, started.elapsed())
    });
    let results = futures_util::future::join_all(calls).await;
    let mut refusal = None;
    for (hook, result, elapsed) in results {
        match result {
            Ok(answer) => {
                metrics.observe(
                    &hook.name,
                    a.operation,
                    !answer.allowed,
                    answer.code,
                    elapsed,
                );
                warnings.extend(answer.warnings);
                if !answer.allowed {
                    let e = denial(&hook.name, &answer.status);
                    metrics.rejected(&hook.name, a.operation, "no_error", e.code);
                    refusal.get_or_insert(e);
                }
            }
            Err(e) => {
                let code = 0;
                metrics.observe(&hook.name, a.operation, !hook.fail_open, code, elapsed);
                if hook.fail_open {
                    tracing::warn!(
                        "failed calling webhook {:?} of {}, failing open: {e}",
                        hook.name,
                        hook.config
                    );
                    metrics.failed_open(&hook.name);
                    continue;
                }
                metrics.rejected(&hook.name, a.operation, "calling_webhook_error", 0);
                refusal.get_or_insert(ApiError::new(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: failed calling webhook {:?}: {e}",
                        hook.name
                    ),
                ));
            }
        }
    }
    match refusal {
        Some(e) => Err((e, warnings)),
        None => Ok(warnings),
    }
}

/// The refusal for a denial, as kube-apiserver words it: the webhook's
/// status code (at least 400) and reason, its message after "admission
/// webhook NAME denied the request".
fn denial(name: &str, status: &Value) -> ApiError {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let message = status["message"].as_str().filter(|m| !m.is_empty());
    let reason = status["reason"].as_str().filter(|r| !r.is_empty());
    let denied = format!("admission webhook {name:?} denied the request");
    let text = match (message, reason) {
        (Some(m), _) => format!("{denied}: {m}"),
        (None, Some(r)) => format!("{denied}: {r}"),
        (None, None) => format!("{denied} without explanation"),
    };
    let reason = reason
        .and_then(|r| KNOWN_REASONS.iter().find(|k| **k == r).copied())
        .unwrap_or(default_reason(code));
    ApiError::new(code, reason, text)
}

/// `meta/v1` StatusReasons a webhook may answer with and this server passes on.
const KNOWN_REASONS: &[&str] = &[
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "Timeout",
    "TooManyRequests",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

fn default_reason(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500..=599 => "InternalError",
        _ => "BadRequest",
    }
}

/// The webhooks of every stored configuration that match `a`, in
/// configuration name order, each with the version its rules matched.
fn matching(store: &Store, a: &Attributes<'_>) -> Vec<(Hook, String)> {
    let mut out = Vec::new();
    store.each(&(GROUP.to_string(), VWC.to_string()), |cfg| {
        let cfg_value = cfg.value();
        let hooks = cfg_value["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for spec in hooks {
            let Some(version) = rules_match(&spec, a) else {
                continue;
            };
            if !selectors_match(store, &spec, a) {
                continue;
            }
            let timeout = spec["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30);
            out.push((
                Hook {
                    name: spec["name"].as_str().unwrap_or_default().to_string(),
                    config: cfg.name.clone(),
                    fail_open: spec["failurePolicy"].as_str() == Some("Ignore"),
                    timeout: Duration::from_secs(timeout),
                    spec,
                },
                version,
            ));
        }
    });
    out
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn listed(list: &[&str], x: &str) -> bool {
    list.iter().any(|v| *v == "*" || *v == x)
}

/// The version under which a rule of `spec` matches `a`: the requested one,
/// or with `matchPolicy: Equivalent` (the default) another version the
/// resource is served at.
fn rules_match(spec: &Value, a: &Attributes<'_>) -> Option<String> {
    let rules = spec["rules"].as_array()?;
    let resource = &a.kd.plural;
    let sub = a.subresource.unwrap_or_default();
    let matches_at = |version: &str| {
        rules.iter().any(|r| {
            let ops = strs(&r["operations"]);
            let resources = strs(&r["resources"]);
            let scope = r["scope"].as_str().unwrap_or("*");
            let scope_ok = match scope {
                "Cluster" => !a.kd.namespaced,
                "Namespaced" => a.kd.namespaced,
                _ => true,
            };
            let res_ok = resources.iter().any(|p| {
                let (pr, ps) = p.split_once('/').unwrap_or((p, ""));
                (pr == "*" || pr == resource) && (ps == "*" || ps == sub)
            });
            listed(&ops, a.operation)
                && listed(&strs(&r["apiGroups"]), &a.kd.group)
                && listed(&strs(&r["apiVersions"]), version)
                && res_ok
                && scope_ok
        })
    };
    if matches_at(a.version) {
        return Some(a.version.to_string());
    }
    if spec["matchPolicy"].as_str() == Some("Exact") {
        return None;
    }
    a.kd.versions
        .iter()
        .find(|v| *v != a.version && matches_at(v))
        .cloned()
}

/// `namespaceSelector` (the namespace's labels; a Namespace's own labels;
/// cluster-scoped objects always match) and `objectSelector` (the new or
/// the old object's labels).
fn selectors_match(store: &Store, spec: &Value, a: &Attributes<'_>) -> bool {
    let labels_of = |v: Option<&Value>| -> BTreeMap<String, String> {
        v.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ns_selector = &spec["namespaceSelector"];
    let ns_ok = if a.kd.group.is_empty() && a.kd.plural == "namespaces" {
        let labels = labels_of(a.object.as_ref().or(a.old_object.as_ref()));
        selector_matches(ns_selector, &labels)
    } else if let Some(ns) = a.namespace.filter(|_| a.kd.namespaced) {
        let ns_obj = store
            .get(
                &(String::new(), "namespaces".to_string()),
                &(String::new(), ns.to_string()),
            )
            .map(|o: Arc<Obj>| o.value());
        selector_matches(ns_selector, &labels_of(ns_obj.as_ref()))
    } else {
        true
    };
    // An absent object (the new one of a DELETE, the old one of a CREATE)
    // matches no selector but the empty one.
    let obj_selector = &spec["objectSelector"];
    let selects = |o: Option<&Value>| o.is_some() && selector_matches(obj_selector, &labels_of(o));
    let obj_ok = selector_is_empty(obj_selector)
        || selects(a.object.as_ref())
        || selects(a.old_object.as_ref());
    ns_ok && obj_ok
}

fn selector_is_empty(sel: &Value) -> bool {
    sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
}

/// A `meta/v1` `LabelSelector`; absent or empty matches everything.
fn selector_matches(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = sel["matchLabels"].as_object()
        && !ml
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    {
        return false;
    }
    sel["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values = strs(&e["values"]);
                let v = labels.get(key).map(String::as_str);
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => v.is_some_and(|v| values.contains(&v)),
                    "NotIn" => v.is_none_or(|v| !values.contains(&v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
        })
        .unwrap_or(true)
}

/// The AdmissionReview request for `a` as seen by a webhook whose rules
/// matched at `version`.
pub fn review_request(uid: &str, a: &Attributes<'_>, version: &str) -> Value {
    let gvk = |v: &str| json!({"group": a.kd.group, "version": v, "kind": a.kd.kind});
    let gvr = |v: &str| json!({"group": a.kd.group, "version": v, "resource": a.kd.plural});
    let with_version = |o: &Option<Value>| {
        o.clone().map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.insert("apiVersion".into(), json!(a.kd.api_version(version)));
            }
            o
        })
    };
    let mut user = Map::new();
    user.insert("username".into(), json!(a.user.username));
    if !a.user.uid.is_empty() {
        user.insert("uid".into(), json!(a.user.uid));
    }
    if !a.user.groups.is_empty() {
        user.insert("groups".into(), json!(a.user.groups));
    }
    let mut r = Map::new();
    r.insert("uid".into(), json!(uid));
    r.insert("kind".into(), gvk(version));
    r.insert("resource".into(), gvr(version));
    r.insert("requestKind".into(), gvk(a.version));
    r.insert("requestResource".into(), gvr(a.version));
    if let Some(s) = a.subresource {
        r.insert("subResource".into(), json!(s));
        r.insert("requestSubResource".into(), json!(s));
    }
    r.insert("name".into(), json!(a.name));
    if let Some(ns) = a.namespace {
        r.insert("namespace".into(), json!(ns));
    }
    r.insert("operation".into(), json!(a.operation));
    r.insert("userInfo".into(), Value::Object(user));
    r.insert(
        "object".into(),
        with_version(&a.object).unwrap_or(Value::Null),
    );
    r.insert(
        "oldObject".into(),
        with_version(&a.old_object).unwrap_or(Value::Null),
    );
    r.insert("dryRun".into(), json!(a.dry_run));
    r.insert("options".into(), a.options.clone());
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// Where to send the review: `clientConfig.url`, or a service resolved
/// through `--webhook-service`; kube-apiserver adds `?timeout=`.
fn target(services: &Services, hook: &Hook) -> Result<String, CallError> {
    let cc = &hook.spec["clientConfig"];
    let base = if let Some(url) = cc["url"].as_str() {
        url.to_string()
    } else if let Some(svc) = cc["service"].as_object() {
        let ns = svc
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = svc.get("name").and_then(Value::as_str).unwrap_or_default();
        let path = svc.get("path").and_then(Value::as_str).unwrap_or_default();
        let Some(url) = services.get(&(ns.to_string(), name.to_string())) else {
            return Err(CallError::Call(format!(
                "service \"{name}\" not found (no --webhook-service {ns}/{name}=URL)"
            )));
        };
        format!("{}{path}", url.trim_end_matches('/'))
    } else {
        return Err(CallError::Call(
            "clientConfig has neither url nor service".into(),
        ));
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}timeout={}s", hook.timeout.as_secs()))
}

/// Trust for the webhook: its `caBundle` (base64 PEM), or when absent the
/// test CA (the test server has no system trust store to fall back to).
fn tls_config(hook: &Hook) -> Result<rustls::ClientConfig, CallError> {
    let pem = match hook.spec["clientConfig"]["caBundle"].as_str() {
        Some(b) if !b.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| CallError::Call(format!("caBundle is not base64: {e}")))?,
        _ => crate::serve::CA_PEM.as_bytes().to_vec(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| CallError::Call(format!("caBundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| CallError::Call(format!("caBundle: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CallError::Call(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(cfg)
}

async fn call(
    services: &Services,
    hook: &Hook,
    a: &Attributes<'_>,
    version: &str,
) -> Result<Answer, CallError> {
    let accepts_v1 = hook.spec["admissionReviewVersions"]
        .as_array()
        .is_none_or(|v| v.iter().any(|x| x.as_str() == Some("v1")));
    if !accepts_v1 {
        return Err(CallError::Call(
            "webhook does not accept v1 AdmissionReview".into(),
        ));
    }
    let url = target(services, hook)?;
    let uid = crate::audit::audit_id();
    let body = serde_json::to_vec(&review_request(&uid, a, version))
        .map_err(|e| CallError::Call(e.to_string()))?;
    let post = post(hook, &url, body);
    let (code, bytes) = match tokio::time::timeout(hook.timeout, post).await {
        Ok(r) => r?,
        Err(_) => return Err(CallError::Timeout { url }),
    };
    if code != 200 {
        return Err(CallError::Call(format!(
            "Post {url:?}: the server responded with status {code}"
        )));
    }
    let review: Value =
        serde_json::from_slice(&bytes).map_err(|e| CallError::Invalid(format!("not JSON: {e}")))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(CallError::Invalid(format!(
            "expected admission.k8s.io/v1 AdmissionReview, got {}, Kind={}",
            review["apiVersion"], review["kind"]
        )));
    }
    let resp = &review["response"];
    if resp["uid"].as_str() != Some(uid.as_str()) {
        return Err(CallError::Invalid(format!(
            "expected response.uid={uid:?}, got {:?}",
            resp["uid"].as_str().unwrap_or_default()
        )));
    }
    let Some(allowed) = resp["allowed"].as_bool() else {
        return Err(CallError::Invalid("response.allowed is missing".into()));
    };
    Ok(Answer {
        allowed,
        status: resp["status"].clone(),
        warnings: strs(&resp["warnings"])
            .into_iter()
            .map(str::to_string)
            .collect(),
        code,
    })
}

/// One HTTPS POST over a fresh connection; the status and body.
async fn post(hook: &Hook, url: &str, body: Vec<u8>) -> Result<(u16, bytes::Bytes), CallError> {
    let err = |e: &dyn std::fmt::Display| CallError::Call(format!("Post {url:?}: {e}"));
    let uri: axum::http::Uri = url.parse().map_err(|e| err(&e))?;
    if uri.scheme_str() != Some("https") {
        return Err(err(&"webhook URLs must be https"));
    }
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| err(&e))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| err(&e))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(hook)?))
        .connect(name, tcp)
        .await
        .map_err(|e| err(&format!("tls: {e}")))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| err(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = axum::http::Request::post(path)
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Body::from(body))
        .map_err(|e| err(&e))?;
    let resp = send.send_request(req).await.map_err(|e| err(&e))?;
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_RESPONSE)
        .await
        .map_err(|e| err(&e))?;
    Ok((code, bytes))
}

/// A warning as an HTTP `Warning` header value (RFC 7234 code 299),
/// quoted as kube-apiserver quotes it.
pub fn warning_header(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("299 - \"{escaped}\"")
}
