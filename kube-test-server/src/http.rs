//! Request handling. Every HTTP request enters [`handle`]: control API
//! first, then authentication and impersonation, then either discovery or a
//! resource request. A resource request is parsed from its path (kube's
//! irregular URL grammar), has faults injected and is authorized (`authz.rs`),
//! and is dispatched to the read paths here (get/list/watch, served from
//! pre-serialized objects) or the write paths in `ops.rs`; its outcome is
//! audited and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::audit::{Audit, Record};
use crate::auth::{self, Action, Authenticator, DenyRule, Identity};
use crate::authz;
use crate::control::{self, Stats};
use crate::discovery;
use crate::error::ApiError;
use crate::faults::{Decision, Faults};
use crate::kinds::KindDef;
use crate::ops::{self, Ctx, PatchType};
use crate::rbac::Attributes;
use crate::selector::{FieldSelector, Filter, LabelSelector, extra_fields};
use crate::store::{Obj, Store, StoreError, WatchStart};
use crate::table::{self, Include};
use crate::watch::{self, WatchOpts};

/// Bodies above this are refused (a 100k-object List is far below it).
const MAX_BODY: usize = 512 * 1024 * 1024;

/// Shared server state.
pub struct App {
    store: RwLock<Store>,
    pub auth: Authenticator,
    pub deny: RwLock<Vec<DenyRule>>,
    /// what authorizes beyond the deny list
    pub authorizer: authz::Mode,
    /// RBAC objects parsed for `--authorizer rbac` (see `authz.rs`)
    pub rbac_cache: Mutex<Option<Arc<crate::rbac::Index>>>,
    pub faults: Faults,
    pub audit: Audit,
    pub stats: Stats,
    pub bookmark_interval: Duration,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub server_addr: String,
    /// `major.minor` reported by /version
    pub server_version: String,
    /// `--webhook-service` targets for admission webhooks (`admission.rs`)
    pub webhook_services: crate::admission::Services,
    /// served at /metrics
    pub metrics: crate::metrics::Metrics,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        auth: Authenticator,
        deny: Vec<DenyRule>,
        authorizer: authz::Mode,
        faults: Faults,
        audit: Audit,
        bookmark_interval: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
        server_addr: String,
        server_version: String,
        webhook_services: crate::admission::Services,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        App {
            store: RwLock::new(store),
            auth,
            deny: RwLock::new(deny),
            authorizer,
            rbac_cache: Mutex::new(None),
            faults,
            audit,
            stats: Stats::default(),
            bookmark_interval,
            shutdown,
            server_addr,
            server_version,
            webhook_services,
            metrics,
        }
    }

    // A panic while holding the lock cannot leave a half-written store
    // (writes are single inserts), so a poisoned lock is still usable.
    pub fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write_store(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn json_response(code: u16, content_type: &str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

pub fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, "application/json", to_bytes(&e.status()));
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

/// A parsed resource URL.
#[derive(Debug, Clone)]
struct Info {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
    legacy_watch: bool,
}

fn parse_path(path: &str) -> Option<Info> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, mut rest) = match s.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    let mk = |ns: Option<&str>, res: &str, name: Option<&&str>, sub: Option<&&str>| Info {
        group: group.to_string(),
        version: version.to_string(),
        namespace: ns.map(str::to_string),
        resource: res.to_string(),
        name: name.map(|s| s.to_string()),
        subresource: sub.map(|s| s.to_string()),
        legacy_watch,
    };
    match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            Some(mk(None, "namespaces", Some(ns), Some(sub)))
        }
        ["namespaces", ns, res, tail @ ..] if tail.len() <= 2 => {
            Some(mk(Some(ns), res, tail.first(), tail.get(1)))
        }
        [res] => Some(mk(None, res, None, None)),
        [res, name] => Some(mk(None, res, Some(name), None)),
        [res, name, sub] => Some(mk(None, res, Some(name), Some(sub))),
        _ => None,
    }
    .filter(|i| !i.resource.is_empty() && i.name.as_deref() != Some(""))
}

/// Everything about the request the handlers need.
struct Req {
    method: Method,
    uri: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    user_agent: String,
    peer: SocketAddr,
    received: jiff::Timestamp,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn wants_table(&self) -> bool {
        self.accept()
            .split(',')
            .any(|p| p.contains("as=Table") && p.contains("g=meta.k8s.io"))
    }

    /// fieldManager, or the user agent up to its first '/', as the real server does.
    fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }
}

/// A completed non-streaming answer.
struct Done {
    code: u16,
    content_type: &'static str,
    body: Bytes,
    /// the object (or list/Status) to audit as responseObject for writes
    audit_response: Option<Value>,
    /// resourceVersion and name of the object written, for objectRef
    rv: Option<String>,
    name: Option<String>,
}

enum Reply {
    Done(Done),
    Stream(Response),
}

const TABLE_CT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

pub async fn handle(app: Arc<App>, peer: SocketAddr, req: Request) -> Response {
    let received = jiff::Timestamp::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("request body could not be read: {e}"),
            ));
        }
    };
    let path = parts.uri.path().to_string();
    if path == "/_testserver" || path.starts_with("/_testserver/") {
        return control::handle(&app, &parts.method, &path, &body);
    }
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Typed kubectl clients send protobuf; everything else here is JSON.
    let body = if ct.starts_with("application/vnd.kubernetes.protobuf") && !body.is_empty() {
        match crate::proto::decode(&body) {
            Ok(v) => to_bytes(&v),
            Err(e) => {
                return error_response(&ApiError::new(415, "UnsupportedMediaType", e.to_string()));
            }
        }
    } else {
        body
    };
    let r = Req {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| path.clone()),
        query: parse_query(parts.uri.query()),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        headers: parts.headers,
        body,
        peer,
        received,
    };
    let started = std::time::Instant::now();
    let resp = serve(&app, &r, &path).await;
    tracing::debug!(
        "{} {} -> {} ({:?})",
        r.method,
        r.uri,
        resp.status().as_u16(),
        started.elapsed()
    );
    resp
}

async fn serve(app: &Arc<App>, r: &Req, path: &str) -> Response {
    let user = match app.auth.authenticate(&r.headers, r.received) {
        Ok(u) => u,
        Err(e) => {
            let anon = auth::UserInfo::anonymous();
            audit_simple(app, r, &anon, None, "unknown", None, &e);
            return error_response(&e);
        }
    };
    let impersonated = auth::impersonation(&r.headers);
    if let Some(imp) = &impersonated {
        for (resource, namespace, name) in auth::impersonation_targets(&r.headers, imp) {
            let attrs = Attributes::Resource {
                verb: "impersonate",
                group: "",
                resource,
                subresource: "",
                namespace: &namespace,
                name: &name,
            };
            if !app.authorize(&user, &attrs).allowed {
                let action = Action {
                    verb: "impersonate",
                    group: "",
                    resource,
                    namespace: &namespace,
                    name: &name,
                };
                let e = auth::forbidden(&user, &action);
                audit_simple(app, r, &user, None, "impersonate", None, &e);
                return error_response(&e);
            }
        }
    }
    let ident = Identity { user, impersonated };
    match parse_path(path) {
        Some(info) => resource_request(app, r, &ident, info).await,
        None => nonresource(app, r, path),
    }
}

fn nonresource(app: &App, r: &Req, path: &str) -> Response {
    app.stats.count_request("discovery");
    let p = path.trim_end_matches('/');
    let ok = |v: Value| {
        let b = to_bytes(&v);
        app.stats.add_bytes("discovery", b.len());
        json_response(200, "application/json", b)
    };
    if r.method != Method::GET && r.method != Method::HEAD {
        return error_response(&ApiError::method_not_allowed());
    }
    let reg = app.read_store().kinds.clone();
    let aggregated = discovery::wants_aggregated(r.accept());
    match p {
        "/version" => ok(discovery::version(&app.server_version)),
        "/healthz" | "/livez" | "/readyz" => (StatusCode::OK, "ok").into_response(),
        "/metrics" => {
            let mut resp = app.metrics.render().into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/api" | "/apis" => match aggregated {
            Some(ct) => {
                let b = to_bytes(&discovery::aggregated(&reg, p == "/api", ct));
                app.stats.add_bytes("discovery", b.len());
                json_response(200, ct, b)
            }
            None if p == "/api" => ok(discovery::core_versions(&app.server_addr)),
            None => ok(discovery::group_list(&reg)),
        },
        "/openapi/v3" => ok(discovery::openapi_index(&reg)),
        _ => {
            if let Some(gv) = p.strip_prefix("/openapi/v3/") {
                return match discovery::openapi_gv(&reg, gv) {
                    Some(v) => ok(v),
                    None => error_response(&ApiError::path_not_found()),
                };
            }
            let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            let found = match segs.as_slice() {
                ["api", v] => discovery::resource_list(&reg, "", v),
                ["apis", g] => discovery::group(&reg, g),
                ["apis", g, v] => discovery::resource_list(&reg, g, v),
                _ => None,
            };
            match found {
                Some(v) => ok(v),
                None => error_response(&ApiError::path_not_found()),
            }
        }
    }
}

/// The request's verb, as audit logs and RBAC name it.
fn verb_of(r: &Req, info: &Info) -> &'static str {
    let watch = info.legacy_watch || r.q("watch").is_some_and(|w| w == "true" || w == "1");
    match (&r.method, info.name.is_some()) {
        (&Method::GET | &Method::HEAD, _) if watch => "watch",
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) => "list",
        // POST names no object; PUT and PATCH must
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

fn object_ref(kd: &KindDef, info: &Info, name: Option<&str>, rv: Option<&str>) -> Value {
    let mut o = Map::new();
    o.insert("resource".into(), json!(kd.plural));
    if let Some(ns) = &info.namespace {
        o.insert("namespace".into(), json!(ns));
    }
    if let Some(n) = name.or(info.name.as_deref()) {
        o.insert("name".into(), json!(n));
    }
    if !kd.group.is_empty() {
        o.insert("apiGroup".into(), json!(kd.group));
    }
    o.insert("apiVersion".into(), json!(info.version));
    if let Some(rv) = rv {
        o.insert("resourceVersion".into(), json!(rv));
    }
    if let Some(s) = &info.subresource {
        o.insert("subresource".into(), json!(s));
    }
    Value::Object(o)
}

fn audit_simple(
    app: &App,
    r: &Req,
    user: &auth::UserInfo,
    impersonated: Option<&auth::UserInfo>,
    verb: &str,
    object_ref: Option<Value>,
    e: &ApiError,
) {
    app.audit.emit(&Record {
        level: "Metadata",
        stage: "ResponseComplete",
        request_uri: &r.uri,
        verb,
        user,
        impersonated,
        source_ip: r.peer.ip().to_string(),
        user_agent: &r.user_agent,
        object_ref,
        code: e.code,
        status: Some(e.status()),
        request_object: None,
        response_object: None,
        received: r.received,
        decision: if e.code == 403 || e.code == 401 {
            "forbid"
        } else {
            "allow"
        },
    });
}

fn request_object(r: &Req) -> Option<Value> {
    if r.body.is_empty() {
        return None;
    }
    match ops::parse_body(&r.body) {
        Ok(v) => Some(v),
        Err(_) => Some(json!(String::from_utf8_lossy(&r.body))),
    }
}

async fn resource_request(app: &Arc<App>, r: &Req, ident: &Identity, info: Info) -> Response {
    let verb = verb_of(r, &info);
    let kd = app
        .read_store()
        .kinds
        .lookup(&info.group, &info.version, &info.resource);
    let user = ident.effective();
    let Some(kd) = kd else {
        app.stats
            .count_request(&format!("{verb} {}", info.resource));
        let e = ApiError::path_not_found();
        return error_response(&e);
    };
    let stats_key = format!("{verb} {}", kd.plural);
    app.stats.count_request(&stats_key);
    let fail = |e: &ApiError| {
        let resp = error_response(e);
        app.stats.add_bytes(&stats_key, to_bytes(&e.status()).len());
        resp
    };
    let sub_ok = match info.subresource.as_deref() {
        None => true,
        Some("status") => kd.status_subresource,
        Some("finalize") => kd.plural == "namespaces" && kd.group.is_empty(),
        Some(_) => false,
    };
    let scope_ok = (kd.namespaced || info.namespace.is_none())
        && !(kd.namespaced
            && info.namespace.is_none()
            && (info.name.is_some() || verb == "create"));
    if !sub_ok || !scope_ok || verb == "unknown" {
        let e = if verb == "unknown" {
            ApiError::method_not_allowed()
        } else {
            ApiError::path_not_found()
        };
        return fail(&e);
    }

    let is_write = matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    let rv_param = r.q("resourceVersion").unwrap_or_default();
    let rv_request = match verb {
        "watch" => !rv_param.is_empty() && rv_param != "0",
        "list" => {
            (!rv_param.is_empty() && rv_param != "0")
                || r.q("continue").is_some_and(|c| !c.is_empty())
        }
        _ => false,
    };
    let decision = app.faults.decide(verb, &kd.plural, rv_request);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let oref = |name: Option<&str>, rv: Option<&str>| object_ref(&kd, &info, name, rv);
    let audit_err = |e: &ApiError| {
        let level = if is_write {
            "RequestResponse"
        } else {
            "Metadata"
        };
        app.audit.emit(&Record {
            level,
            stage: "ResponseComplete",
            request_uri: &r.uri,
            verb,
            user: &ident.user,
            impersonated: ident.impersonated.as_ref(),
            source_ip: r.peer.ip().to_string(),
            user_agent: &r.user_agent,
            object_ref: Some(oref(None, None)),
            code: e.code,
            status: Some(e.status()),
            request_object: if is_write { request_object(r) } else { None },
            response_object: if is_write { Some(e.status()) } else { None },
            received: r.received,
            decision: if e.code == 403 { "forbid" } else { "allow" },
        });
    };
    if let Some(e) = injected_error(&decision) {
        audit_err(&e);
        return fail(&e);
    }

    let resource = match &info.subresource {
        Some(s) => format!("{}/{s}", kd.plural),
        None => kd.plural.clone(),
    };
    let action = Action {
        verb,
        group: &kd.group,
        resource: &resource,
        namespace: info.namespace.as_deref().unwrap_or_default(),
        name: info.name.as_deref().unwrap_or_default(),
    };
    let attrs = Attributes::Resource {
        verb,
        group: &kd.group,
        resource: &kd.plural,
        subresource: info.subresource.as_deref().unwrap_or_default(),
        namespace: action.namespace,
        name: action.name,
    };
    let verdict = app.authorize(user, &attrs);
    // The bootstrap ClusterRole system:basic-user lets every authenticated
    // user ask what they may do, whatever else RBAC says.
    let self_review = kd.kind == "SelfSubjectAccessReview"
        && !verdict.denied
        && user.groups.iter().any(|g| g == "system:authenticated");
    if !verdict.allowed && !self_review {
        let e = auth::forbidden(user, &action);
        audit_err(&e);
        return fail(&e);
    }

    let mut warnings = Vec::new();
    if is_write && !kd.review {
        match admission_check(app, r, &kd, &info, verb, ident).await {
            Ok(w) => warnings = w,
            Err((e, w)) => {
                audit_err(&e);
                let mut resp = fail(&e);
                add_warnings(&mut resp, &w);
                return resp;
            }
        }
    }

    let watch_audit = watch::AuditSlot::default();
    let result = match verb {
        _ if kd.review => review(app, r, &kd, ident, verb),
        "get" => get(app, r, &kd, &info),
        "list" => list(app, r, &kd, &info, &decision),
        "watch" => watch(
            app,
            r,
            &kd,
            &info,
            &decision,
            &stats_key,
            watch_audit.clone(),
        ),
        _ => write(app, r, &kd, &info, verb),
    };
    match result {
        Err(e) => {
            audit_err(&e);
            let mut resp = fail(&e);
            add_warnings(&mut resp, &warnings);
            resp
        }
        Ok(Reply::Stream(resp)) => {
            let ev = Record {
                level: "Metadata",
                stage: "ResponseStarted",
                request_uri: &r.uri,
                verb,
                user: &ident.user,
                impersonated: ident.impersonated.as_ref(),
                source_ip: r.peer.ip().to_string(),
                user_agent: &r.user_agent,
                object_ref: Some(oref(None, None)),
                code: 200,
                status: None,
                request_object: None,
                response_object: None,
                received: r.received,
                decision: "allow",
            }
            .to_event();
            if app.audit.enabled() {
                // the stream emits ResponseComplete (same auditID) when it ends
                *watch_audit.lock().unwrap_or_else(|e| e.into_inner()) = Some(ev.clone());
                app.audit.emit_event(ev);
            }
            resp
        }
        Ok(Reply::Done(d)) => {
            app.audit.emit(&Record {
                level: if is_write {
                    "RequestResponse"
                } else {
                    "Metadata"
                },
                stage: "ResponseComplete",
                request_uri: &r.uri,
                verb,
                user: &ident.user,
                impersonated: ident.impersonated.as_ref(),
                source_ip: r.peer.ip().to_string(),
                user_agent: &r.user_agent,
                object_ref: Some(oref(d.name.as_deref(), d.rv.as_deref())),
                code: d.code,
                status: None,
                request_object: if is_write { request_object(r) } else { None },
                response_object: if is_write { d.audit_response } else { None },
                received: r.received,
                decision: "allow",
            });
            let body = if decision.garbage {
                Bytes::from(app.faults.garble(&d.body))
            } else {
                d.body
            };
            app.stats.add_bytes(&stats_key, body.len());
            let mut resp = json_response(d.code, d.content_type, body);
            add_warnings(&mut resp, &warnings);
            resp
        }
    }
}

/// Admission warnings as `Warning: 299 - "..."` headers, which kubectl prints.
fn add_warnings(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&crate::admission::warning_header(w)) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

/// Runs the validating admission webhooks for a write: the object it would
/// store comes from a dry run of the same write (so validation errors come
/// first, as in kube-apiserver), the webhooks are called without the store
/// lock held, and the real write follows only if they all let it through.
/// deletecollection is not sent to webhooks.
async fn admission_check(
    app: &App,
    r: &Req,
    kd: &Arc<KindDef>,
    info: &Info,
    verb: &str,
    ident: &Identity,
) -> Result<Vec<String>, (ApiError, Vec<String>)> {
    if !matches!(verb, "create" | "update" | "patch" | "delete") {
        return Ok(Vec::new());
    }
    let no_warnings = |e: ApiError| (e, Vec::new());
    let now = now_rfc3339();
    let manager = r.manager();
    let ctx = Ctx {
        kd,
        version: &info.version,
        namespace: info.namespace.as_deref(),
        manager: &manager,
        now: &now,
        dry_run: true,
        preload: false,
    };
    let name = info.name.clone().unwrap_or_default();
    let sub = info.subresource.as_deref().unwrap_or_default();
    let res = (kd.group.clone(), kd.plural.clone());
    let key = |n: &str| {
        (
            if kd.namespaced {
                info.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            n.to_string(),
        )
    };
    let mut options = json!({"apiVersion": "meta.k8s.io/v1"});
    if let Some(m) = r.q("fieldManager").filter(|m| !m.is_empty()) {
        options["fieldManager"] = json!(m);
    }
    if r.dry_run() {
        options["dryRun"] = json!(["All"]);
    }
    let vwc = (crate::admission::GROUP.into(), crate::admission::VWC.into());
    if app.read_store().count_of(&vwc) == 0 {
        return Ok(Vec::new());
    }
    let (hooks, attrs) = {
        let mut st = app.write_store();
        let old = if verb == "create" {
            None
        } else {
            st.get(&res, &key(&name)).map(|o| o.value())
        };
        let (operation, object, obj_name) = match verb {
            "create" => {
                let body = ops::parse_body(&r.body).map_err(no_warnings)?;
                let w = ops::create(&mut st, &ctx, body).map_err(no_warnings)?;
                options["kind"] = json!("CreateOptions");
                ("CREATE", Some(w.obj.value()), w.obj.name.clone())
            }
            "update" | "patch" => {
                let w = if verb == "update" {
                    let body = ops::parse_body(&r.body).map_err(no_warnings)?;
                    ops::update(&mut st, &ctx, &name, body, sub).map_err(no_warnings)?
                } else {
                    let ct = r
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let ptype = PatchType::from_content_type(ct)
                        .ok_or_else(|| no_warnings(ApiError::unsupported_media_type(ct)))?;
                    let force = r.q("force") == Some("true");
                    ops::patch(&mut st, &ctx, &name, ptype, &r.body, force, sub)
                        .map_err(no_warnings)?
                };
                let op = if w.created { "CREATE" } else { "UPDATE" };
                options["kind"] = json!(if w.created {
                    "CreateOptions"
                } else {
                    "UpdateOptions"
                });
                (op, Some(w.obj.value()), name.clone())
            }
            _ => {
                // A missing object: the write itself answers 404.
                if old.is_none() {
                    return Ok(Vec::new());
                }
                if !r.body.iter().all(u8::is_ascii_whitespace)
                    && let Ok(Value::Object(m)) = ops::parse_body(&r.body)
                {
                    for (k, v) in m {
                        options[k] = v;
                    }
                }
                options["kind"] = json!("DeleteOptions");
                options["apiVersion"] = json!("meta.k8s.io/v1");
                ("DELETE", None, name.clone())
            }
        };
        let attrs = crate::admission::Attributes {
            kd,
            version: &info.version,
            subresource: info.subresource.as_deref(),
            namespace: if kd.namespaced {
                info.namespace.as_deref()
            } else {
                None
            },
            name: obj_name,
            operation,
            user: ident.effective(),
            old_object: if operation == "CREATE" { None } else { old },
            object,
            dry_run: r.dry_run(),
            options,
        };
        (crate::admission::plan(&st, &attrs), attrs)
    };
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    crate::admission::admit(hooks, &app.webhook_services, &app.metrics, &attrs).await
}

fn injected_error(d: &Decision) -> Option<ApiError> {
    if let Some(code) = d.error {
        let (reason, msg) = match code {
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request (injected fault)",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted (injected fault)",
            ),
            _ => (
                "InternalError",
                "an error on the server (\"injected fault\") has prevented the request from succeeding",
            ),
        };
        return Some(ApiError::new(code, reason, msg).with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "injected fault"}]})));
    }
    if let Some(secs) = d.throttle {
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(json!({"retryAfterSeconds": secs}));
        e.retry_after = Some(secs);
        return Some(e);
    }
    None
}

fn build_filter(r: &Req, kd: &KindDef, info: &Info) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut fs = r.q("fieldSelector").unwrap_or_default().to_string();
    if let Some(name) = &info.name {
        // watching one object (legacy /watch/.../name or ?watch on an item)
        if !fs.is_empty() {
            fs.push(',');
        }
        fs.push_str(&format!("metadata.name={name}"));
    }
    let fields = FieldSelector::parse(&fs, extra_fields(&kd.group, &kd.plural))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Filter {
        namespace: if kd.namespaced {
            info.namespace.clone()
        } else {
            None
        },
        labels,
        fields,
    })
}

fn get(app: &App, r: &Req, kd: &Arc<KindDef>, info: &Info) -> Result<Reply, ApiError> {
    let name = info.name.clone().unwrap_or_default();
    let key = (info.namespace.clone().unwrap_or_default(), name.clone());
    let obj = app
        .read_store()
        .get(&(kd.group.clone(), kd.plural.clone()), &key)
        .ok_or_else(|| {
            ApiError::not_found(&crate::error::Target {
                group: &kd.group,
                resource: &kd.plural,
                name: &name,
            })
        })?;
    let av = kd.api_version(&info.version);
    let (ct, body) = if r.wants_table() {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(obj.rv.to_string()));
        let t = table::table(
            kd,
            std::iter::once(obj.value()),
            Include::parse(r.q("includeObject")),
            meta,
        );
        (TABLE_CT, to_bytes(&t))
    } else {
        ("application/json", obj.render(&av))
    };
    Ok(Reply::Done(Done {
        code: 200,
        content_type: ct,
        body,
        audit_response: None,
        rv: Some(obj.rv.to_string()),
        name: None,
    }))
}

#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(rv: u64, key: (String, String)) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        ns: key.0,
        name: key.1,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    serde_json::from_slice(&raw).map_err(|_| bad("incorrect encoding"))
}

fn too_old_list() -> ApiError {
    ApiError::expired("The resourceVersion for the provided list is too old.")
}

/// Which resourceVersion a list is served at.
fn list_rv(st: &Store, r: &Req, has_limit: bool) -> Result<u64, ApiError> {
    let cur = st.current_rv();
    let rv = r.q("resourceVersion").unwrap_or_default();
    let m = r.q("resourceVersionMatch").unwrap_or_default();
    if rv.is_empty() {
        if !m.is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        return Ok(cur);
    }
    let n: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
    if !matches!(m, "" | "Exact" | "NotOlderThan") {
        return Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
        )));
    }
    if n == 0 {
        if m == "Exact" {
            return Err(ApiError::bad_request(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        return Ok(cur);
    }
    if n > cur {
        return Err(ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {n}, current: {cur}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        })));
    }
    let exact = m == "Exact" || (m.is_empty() && has_limit);
    if !exact {
        return Ok(cur);
    }
    if n < st.oldest_rv() {
        return Err(too_old_list());
    }
    Ok(n)
}

fn list(
    app: &App,
    r: &Req,
    kd: &Arc<KindDef>,
    info: &Info,
    decision: &Decision,
) -> Result<Reply, ApiError> {
    let filter = build_filter(r, kd, info)?;
    let limit = match r.q("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        ),
        None => None,
    };
    let cont = r.q("continue").filter(|c| !c.is_empty());
    let res = (kd.group.clone(), kd.plural.clone());
    let st = app.read_store();
    let (at, after) = match cont {
        Some(c) => {
            let t = decode_continue(c)?;
            if decision.expire || t.rv < st.oldest_rv() {
                let mut e = ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
                e.continue_token = Some(encode_continue(st.current_rv(), (t.ns, t.name)));
                return Err(e);
            }
            (t.rv, Some((t.ns, t.name)))
        }
        None => {
            if decision.expire {
                return Err(too_old_list());
            }
            (list_rv(&st, r, limit.is_some())?, None)
        }
    };
    let page = st.page(&res, &filter, at, after.as_ref(), limit);
    drop(st);
    let next = page.next.map(|k| encode_continue(at, k));
    let av = kd.api_version(&info.version);
    if r.wants_table() {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(at.to_string()));
        if let Some(n) = &next {
            meta.insert("continue".into(), json!(n));
        }
        let t = table::table(
            kd,
            page.items.iter().map(|o| o.value()),
            Include::parse(r.q("includeObject")),
            meta,
        );
        return Ok(Reply::Done(Done {
            code: 200,
            content_type: TABLE_CT,
            body: to_bytes(&t),
            audit_response: None,
            rv: None,
            name: None,
        }));
    }
    Ok(Reply::Done(Done {
        code: 200,
        content_type: "application/json",
        body: list_body(&kd.list_kind, &av, at, next.as_deref(), &page.items),
        audit_response: None,
        rv: None,
        name: None,
    }))
}

/// Serializes a list by concatenating the stored objects' JSON.
fn list_body(list_kind: &str, av: &str, rv: u64, cont: Option<&str>, items: &[Arc<Obj>]) -> Bytes {
    let cap = items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 256;
    let mut b: Vec<u8> = Vec::with_capacity(cap);
    let s = |b: &mut Vec<u8>, v: &str| {
        let _ = serde_json::to_writer(&mut *b, v);
    };
    b.extend_from_slice(b"{\"kind\":");
    s(&mut b, list_kind);
    b.extend_from_slice(b",\"apiVersion\":");
    s(&mut b, av);
    b.extend_from_slice(b",\"metadata\":{\"resourceVersion\":");
    s(&mut b, &rv.to_string());
    if let Some(c) = cont {
        b.extend_from_slice(b",\"continue\":");
        s(&mut b, c);
    }
    b.extend_from_slice(b"},\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(&o.render(av));
    }
    b.extend_from_slice(b"]}");
    Bytes::from(b)
}

fn watch(
    app: &Arc<App>,
    r: &Req,
    kd: &Arc<KindDef>,
    info: &Info,
    decision: &Decision,
    stats_key: &str,
    audit_end: watch::AuditSlot,
) -> Result<Reply, ApiError> {
    let filter = build_filter(r, kd, info)?;
    let rv = r.q("resourceVersion").unwrap_or_default();
    let streaming = r.q("sendInitialEvents") == Some("true");
    let start = if streaming {
        WatchStart::StreamingList
    } else if rv.is_empty() || rv == "0" {
        WatchStart::Initial
    } else {
        WatchStart::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        )
    };
    let timeout = match r.q("timeoutSeconds").filter(|t| !t.is_empty()) {
        // capped so deadlines stay representable
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?
                .min(86_400 * 365),
        ),
        None => Duration::from_secs(1800),
    };
    let ct = if r.wants_table() {
        TABLE_CT
    } else {
        "application/json"
    };
    let too_old = |requested: u64, oldest: u64| {
        let e = ApiError::expired(format!("too old resource version: {requested} ({oldest})"));
        let body = watch::error_body(&e.status());
        app.stats.add_bytes(stats_key, body.len());
        Ok(Reply::Stream(json_response(200, ct, body)))
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let mut st = app.write_store();
        if decision.expire {
            let requested = rv.parse::<u64>().unwrap_or(0);
            return too_old(requested, st.current_rv());
        }
        if let Err(StoreError::TooOld { requested, oldest }) =
            st.watch(&(kd.group.clone(), kd.plural.clone()), filter, start, tx)
        {
            return too_old(requested, oldest);
        }
    }
    let opts = WatchOpts {
        bookmarks: r.q("allowWatchBookmarks") == Some("true"),
        timeout,
        drop_after: decision.drop_watch_after,
        api_version: kd.api_version(&info.version),
        kind: kd.kind.clone(),
        table: r
            .wants_table()
            .then(|| (kd.clone(), Include::parse(r.q("includeObject")))),
        stats_key: stats_key.to_string(),
        audit_end,
    };
    let mut resp = Response::new(watch::body(app.clone(), rx, opts));
    if let Ok(v) = HeaderValue::from_str(ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(Reply::Stream(resp))
}

/// A `TokenReview` or an access review: answered (201, like the real
/// server) and never stored.
fn review(
    app: &App,
    r: &Req,
    kd: &KindDef,
    ident: &Identity,
    verb: &str,
) -> Result<Reply, ApiError> {
    if verb != "create" {
        return Err(ApiError::method_not_allowed());
    }
    let mut body = ops::parse_body(&r.body)?;
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let status = if kd.kind == "TokenReview" {
        token_review(app, kd, &spec, r.received)?
    } else {
        access_review(app, kd, &spec, ident)?
    };
    if let Some(m) = body.as_object_mut() {
        m.insert("apiVersion".into(), json!(kd.api_version("v1")));
        m.insert("kind".into(), json!(kd.kind));
        m.insert("status".into(), status);
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(Reply::Done(Done {
        code: 201,
        content_type: "application/json",
        body: to_bytes(&body),
        audit_response: Some(body),
        rv: None,
        name: None,
    }))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A TokenReview's status, from the token table.
fn token_review(
    app: &App,
    kd: &KindDef,
    spec: &Value,
    now: jiff::Timestamp,
) -> Result<Value, ApiError> {
    let token = spec
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::invalid(
            &kd.kind,
            &kd.group,
            "",
            "spec.token",
            "FieldValueRequired",
            "a TokenReview needs the token to review",
        ));
    }
    let audiences = strings(spec.get("audiences"));
    Ok(match app.auth.tokens.review(token, &audiences, now) {
        Ok((user, audiences)) => {
            json!({"authenticated": true, "user": user.to_json(), "audiences": audiences})
        }
        Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
    })
}

/// A (Self)SubjectAccessReview's status, from the authorizer.
fn access_review(
    app: &App,
    kd: &KindDef,
    spec: &Value,
    ident: &Identity,
) -> Result<Value, ApiError> {
    let s = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let invalid = |field: &str, detail: &str| {
        ApiError::invalid(&kd.kind, &kd.group, "", field, "FieldValueInvalid", detail)
    };
    let subject = if kd.kind == "SubjectAccessReview" {
        let u = auth::UserInfo {
            username: s(Some(spec), "user"),
            uid: s(Some(spec), "uid"),
            groups: strings(spec.get("groups")),
        };
        if u.username.is_empty() && u.groups.is_empty() {
            return Err(invalid(
                "spec.user",
                "\"\": at least one of user or group must be specified",
            ));
        }
        u
    } else {
        ident.effective().clone()
    };
    let ra = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let nra = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    if ra.is_some() == nra.is_some() {
        return Err(invalid(
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let fields = [
        "verb",
        "group",
        "resource",
        "subresource",
        "namespace",
        "name",
        "path",
    ];
    let [verb, group, resource, subresource, namespace, name, path] =
        fields.map(|f| s(ra.or(nra), f));
    let attrs = if ra.is_some() {
        Attributes::Resource {
            verb: &verb,
            group: &group,
            resource: &resource,
            subresource: &subresource,
            namespace: &namespace,
            name: &name,
        }
    } else {
        Attributes::NonResource {
            verb: &verb,
            path: &path,
        }
    };
    Ok(app.authorize(&subject, &attrs).status())
}

fn write(
    app: &App,
    r: &Req,
    kd: &Arc<KindDef>,
    info: &Info,
    verb: &str,
) -> Result<Reply, ApiError> {
    let now = now_rfc3339();
    let manager = r.manager();
    let ctx = Ctx {
        kd,
        version: &info.version,
        namespace: info.namespace.as_deref(),
        manager: &manager,
        now: &now,
        dry_run: r.dry_run(),
        preload: false,
    };
    let av = kd.api_version(&info.version);
    let name = info.name.clone().unwrap_or_default();
    let sub = info.subresource.as_deref().unwrap_or_default();
    let done = |code: u16, obj: &Obj| {
        let body = obj.render(&av);
        let mut audit_obj = obj.value();
        if let Some(m) = audit_obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(av));
        }
        Reply::Done(Done {
            code,
            content_type: "application/json",
            body,
            audit_response: Some(audit_obj),
            rv: Some(obj.rv.to_string()),
            name: Some(obj.name.clone()),
        })
    };
    match verb {
        "create" => {
            let body = ops::parse_body(&r.body)?;
            let w = ops::create(&mut app.write_store(), &ctx, body)?;
            Ok(done(201, &w.obj))
        }
        "update" => {
            let body = ops::parse_body(&r.body)?;
            let w = ops::update(&mut app.write_store(), &ctx, &name, body, sub)?;
            Ok(done(if w.created { 201 } else { 200 }, &w.obj))
        }
        "patch" => {
            let ct = r
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let ptype = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let force = r.q("force") == Some("true");
            if force && ptype != PatchType::Apply {
                return Err(ApiError::bad_request(
                    "force is only allowed for apply patches",
                ));
            }
            let w = ops::patch(
                &mut app.write_store(),
                &ctx,
                &name,
                ptype,
                &r.body,
                force,
                sub,
            )?;
            Ok(done(if w.created { 201 } else { 200 }, &w.obj))
        }
        "delete" => {
            let opts = if r.body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                ops::parse_body(&r.body)?
            };
            let (obj, gone) = ops::delete(&mut app.write_store(), &ctx, &name, &opts)?;
            if !gone || kd.return_deleted {
                return Ok(done(200, &obj));
            }
            let mut details = json!({"name": name, "kind": kd.plural, "uid": obj.uid});
            if !kd.group.is_empty() {
                details["group"] = json!(kd.group);
            }
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "details": details,
            });
            Ok(Reply::Done(Done {
                code: 200,
                content_type: "application/json",
                body: to_bytes(&status),
                audit_response: Some(status),
                rv: Some(obj.rv.to_string()),
                name: Some(name),
            }))
        }
        "deletecollection" => {
            let filter = build_filter(r, kd, info)?;
            let opts = if r.body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                ops::parse_body(&r.body)?
            };
            let mut st = app.write_store();
            let gone = ops::delete_collection(&mut st, &ctx, &filter, &opts)?;
            let rv = st.current_rv();
            drop(st);
            let body = list_body(&kd.list_kind, &av, rv, None, &gone);
            Ok(Reply::Done(Done {
                code: 200,
                content_type: "application/json",
                body,
                audit_response: None,
                rv: None,
                name: None,
            }))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
