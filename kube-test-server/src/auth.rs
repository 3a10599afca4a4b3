//! Who is calling and whether they may. Request headers become an
//! [`Identity`] (bearer token from the token table in `tokens.rs`, basic
//! auth or anonymous, then `Impersonate-*` headers); the run-time deny list
//! here (and RBAC under `--authorizer rbac`, see `authz.rs`) then decides
//! whether that identity may perform the verb, answering 403 in the real
//! server's words.

use std::collections::HashMap;

use axum::http::HeaderMap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::tokens::Tokens;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    /// empty when unknown (omitted from JSON)
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("username".into(), json!(self.username));
        if !self.uid.is_empty() {
            m.insert("uid".into(), json!(self.uid));
        }
        m.insert("groups".into(), json!(self.groups));
        Value::Object(m)
    }

    pub fn anonymous() -> Self {
        UserInfo {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// `(namespace, name)` when the user is a service account.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        self.username
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
    }
}

/// The authenticated user and, when impersonating, the impersonated one.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserInfo,
    pub impersonated: Option<UserInfo>,
}

impl Identity {
    /// The user requests are authorized and attributed as.
    pub fn effective(&self) -> &UserInfo {
        self.impersonated.as_ref().unwrap_or(&self.user)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("--token {0:?}: expected TOKEN=USER[:GROUP,GROUP...]")]
    Token(String),
    #[error("--basic {0:?}: expected USER:PASSWORD[:GROUP,GROUP...]")]
    Basic(String),
}

/// An authenticated user: the given groups, plus `system:authenticated`
/// and, for a service account `system:serviceaccount:NS:NAME`, the groups
/// `system:serviceaccounts` and `system:serviceaccounts:NS`, as the real
/// service-account authenticator adds them.
pub fn user<'a>(name: &str, groups: impl IntoIterator<Item = &'a str>) -> UserInfo {
    let mut u = UserInfo {
        username: name.to_string(),
        uid: String::new(),
        groups: Vec::new(),
    };
    let mut implied = vec!["system:authenticated".to_string()];
    if let Some((ns, _)) = u.service_account() {
        implied.push("system:serviceaccounts".into());
        implied.push(format!("system:serviceaccounts:{ns}"));
    }
    for g in groups
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .chain(implied)
    {
        if !u.groups.contains(&g) {
            u.groups.push(g);
        }
    }
    u
}

fn split_groups(groups: Option<&str>) -> impl Iterator<Item = &str> {
    groups.unwrap_or_default().split(',')
}

/// Credentials accepted by this server.
#[derive(Debug)]
pub struct Authenticator {
    pub tokens: Tokens,
    basic: HashMap<String, (String, UserInfo)>,
    anonymous: bool,
}

impl Authenticator {
    /// Anonymous access is allowed with `--anonymous`, or when no
    /// credentials are configured at all (an open dev server, like
    /// `kubectl proxy`).
    pub fn new(
        tokens: &[String],
        basic: &[String],
        anonymous: bool,
        api_audiences: Vec<String>,
    ) -> Result<Self, AuthConfigError> {
        let mut a = Authenticator {
            tokens: Tokens::new(api_audiences),
            basic: HashMap::new(),
            anonymous: anonymous || (tokens.is_empty() && basic.is_empty()),
        };
        for t in tokens {
            let (tok, rest) = t
                .split_once('=')
                .ok_or_else(|| AuthConfigError::Token(t.clone()))?;
            let (name, groups) = match rest.split_once(':') {
                Some((n, g)) => (n, Some(g)),
                None => (rest, None),
            };
            if tok.is_empty() || name.is_empty() {
                return Err(AuthConfigError::Token(t.clone()));
            }
            a.tokens
                .insert_static(tok, user(name, split_groups(groups)));
        }
        for b in basic {
            let mut parts = b.splitn(3, ':');
            let (Some(name), Some(pw)) = (parts.next(), parts.next()) else {
                return Err(AuthConfigError::Basic(b.clone()));
            };
            if name.is_empty() {
                return Err(AuthConfigError::Basic(b.clone()));
            }
            a.basic.insert(
                name.to_string(),
                (pw.to_string(), user(name, split_groups(parts.next()))),
            );
        }
        Ok(a)
    }

    /// Authenticates a request (401 on bad, expired or missing credentials).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        now: jiff::Timestamp,
    ) -> Result<UserInfo, ApiError> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match auth {
            None | Some("") => {
                if self.anonymous {
                    Ok(UserInfo::anonymous())
                } else {
                    Err(ApiError::unauthorized())
                }
            }
            Some(h) => {
                if let Some(tok) = strip_scheme(h, "bearer") {
                    return self.tokens.authenticate(tok.trim(), now).map_err(|e| {
                        tracing::debug!("bearer token refused: {e}");
                        ApiError::unauthorized()
                    });
                }
                if let Some(b64) = strip_scheme(h, "basic") {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(ApiError::unauthorized)?;
                    let (name, pw) = decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
                    return match self.basic.get(name) {
                        Some((want, u)) if want == pw => Ok(u.clone()),
                        _ => Err(ApiError::unauthorized()),
                    };
                }
                Err(ApiError::unauthorized())
            }
        }
    }
}

fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = h.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn impersonate_groups(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// The user named by `Impersonate-User` / `Impersonate-Group` headers. As
/// in the real server, a service account impersonated without groups gets
/// its service-account groups, and everyone but `system:anonymous` gets
/// `system:authenticated`.
pub fn impersonation(headers: &HeaderMap) -> Option<UserInfo> {
    let name = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())?
        .to_string();
    let mut u = UserInfo {
        username: name,
        uid: String::new(),
        groups: impersonate_groups(headers),
    };
    if u.username == "system:anonymous" {
        return Some(u);
    }
    if u.groups.is_empty()
        && let Some((ns, _)) = u.service_account()
    {
        let ns_group = format!("system:serviceaccounts:{ns}");
        u.groups.push("system:serviceaccounts".into());
        u.groups.push(ns_group);
    }
    if !u.groups.iter().any(|g| g == "system:authenticated") {
        u.groups.push("system:authenticated".into());
    }
    Some(u)
}

/// What impersonating `imp` needs the `impersonate` verb on, as
/// (resource, namespace, name): `users` NAME, or `serviceaccounts` NS/NAME
/// for a service account, and `groups` G for each `Impersonate-Group` header.
pub fn impersonation_targets(
    headers: &HeaderMap,
    imp: &UserInfo,
) -> Vec<(&'static str, String, String)> {
    let mut out = vec![match imp.service_account() {
        Some((ns, name)) => ("serviceaccounts", ns.to_string(), name.to_string()),
        None => ("users", String::new(), imp.username.clone()),
    }];
    out.extend(
        impersonate_groups(headers)
            .into_iter()
            .map(|g| ("groups", String::new(), g)),
    );
    out
}

/// One deny rule: who (users/groups; both empty = everyone) may not do
/// what (verbs, resources, apiGroups, namespaces, names; empty or "*" = any).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DenyRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

fn any_of(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == "*" || x == v)
}

/// What a request wants to do, for authorization.
pub struct Action<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// plural, or `plural/subresource`
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl DenyRule {
    pub fn matches(&self, u: &UserInfo, a: &Action) -> bool {
        let who = (self.users.is_empty() && self.groups.is_empty())
            || self.users.iter().any(|x| x == &u.username || x == "*")
            || self.groups.iter().any(|g| u.groups.contains(g));
        let base = a.resource.split('/').next().unwrap_or_default();
        who && any_of(&self.verbs, a.verb)
            && (any_of(&self.resources, a.resource) || any_of(&self.resources, base))
            && any_of(&self.api_groups, a.group)
            && any_of(&self.namespaces, a.namespace)
            && any_of(&self.names, a.name)
    }
}

/// Parses a rule or a list of rules.
pub fn parse_rules(v: Value) -> Result<Vec<DenyRule>, serde_json::Error> {
    match v {
        Value::Array(_) => serde_json::from_value(v),
        Value::Object(ref m) if m.contains_key("rules") => {
            serde_json::from_value(m.get("rules").cloned().unwrap_or(Value::Null))
        }
        other => Ok(vec![serde_json::from_value(other)?]),
    }
}

/// The real server's 403.
pub fn forbidden(u: &UserInfo, a: &Action) -> ApiError {
    let (plural, sub) = match a.resource.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (a.resource, None),
    };
    let qualified = if a.group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{}", a.group)
    };
    let named = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let res_word = match sub {
        Some(s) => format!("{plural}/{s}"),
        None => plural.to_string(),
    };
    let msg = format!(
        "{named} is forbidden: User \"{}\" cannot {} resource \"{res_word}\" in API group \"{}\" {scope}",
        u.username, a.verb, a.group
    );
    let mut d = Map::new();
    if !a.name.is_empty() {
        d.insert("name".into(), json!(a.name));
    }
    if !a.group.is_empty() {
        d.insert("group".into(), json!(a.group));
    }
    d.insert("kind".into(), json!(plural));
    ApiError::new(403, "Forbidden", msg).with_details(Value::Object(d))
}
