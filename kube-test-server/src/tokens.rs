//! The bearer-token table. Tokens come from `--token` at start-up and from
//! the control API (`/_testserver/tokens`) at run time; each names a user
//! (uid, groups), an optional expiry and the audiences it is good for. A
//! bearer token on a request and the `spec.token` of a `TokenReview` are
//! both looked up here: an unknown, deleted or expired token, or one for
//! other audiences, authenticates nobody.

use std::collections::BTreeMap;
use std::sync::RwLock;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::UserInfo;

/// A token as the control API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSpec {
    pub token: String,
    pub user: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// RFC 3339; absent or null: the token never expires
    #[serde(default)]
    pub expires_at: Option<String>,
    /// empty: the API server's own audiences (`--api-audiences`)
    #[serde(default)]
    pub audiences: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenSpecError {
    #[error("tokens: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tokens: token: must not be empty")]
    EmptyToken,
    #[error("tokens[{token:?}].user: must not be empty")]
    EmptyUser { token: String },
    #[error("tokens[{token:?}].expiresAt: {value:?} is not an RFC 3339 timestamp: {source}")]
    ExpiresAt {
        token: String,
        value: String,
        source: jiff::Error,
    },
}

/// Why a token authenticates nobody; the text is `TokenReview`'s `status.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// never known, or deleted through the control API
    #[error("invalid bearer token, token not found")]
    Unknown,
    #[error("invalid bearer token, token expired at {0}")]
    Expired(Timestamp),
    #[error(
        "invalid bearer token, token audiences {token:?} is invalid for the target audiences {target:?}"
    )]
    Audience {
        token: Vec<String>,
        target: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    user: UserInfo,
    expires_at: Option<Timestamp>,
    /// empty: the server's own audiences
    audiences: Vec<String>,
}

/// All bearer tokens the server accepts.
#[derive(Debug)]
pub struct Tokens {
    // BTreeMap so the control API lists tokens in a stable order.
    entries: RwLock<BTreeMap<String, Entry>>,
    /// the audiences the API server itself identifies as
    api_audiences: Vec<String>,
}

impl Tokens {
    pub fn new(api_audiences: Vec<String>) -> Self {
        Tokens {
            entries: RwLock::new(BTreeMap::new()),
            api_audiences,
        }
    }

    // A panic while holding the lock leaves the map whole (single inserts
    // and removes), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a token that never expires, for `--token`.
    pub fn insert_static(&self, token: &str, user: UserInfo) {
        self.write().insert(
            token.to_string(),
            Entry {
                user,
                expires_at: None,
                audiences: Vec::new(),
            },
        );
    }

    /// Adds (or replaces) tokens from a control-API body: one token object
    /// or an array of them. Nothing is added unless all are valid.
    pub fn insert_json(&self, body: Value) -> Result<Vec<String>, TokenSpecError> {
        let specs: Vec<TokenSpec> = match body {
            Value::Array(_) => serde_json::from_value(body)?,
            other => vec![serde_json::from_value(other)?],
        };
        let mut parsed = Vec::with_capacity(specs.len());
        for s in specs {
            if s.token.is_empty() {
                return Err(TokenSpecError::EmptyToken);
            }
            if s.user.is_empty() {
                return Err(TokenSpecError::EmptyUser { token: s.token });
            }
            let expires_at =
                match &s.expires_at {
                    None => None,
                    Some(v) => Some(v.parse::<Timestamp>().map_err(|source| {
                        TokenSpecError::ExpiresAt {
                            token: s.token.clone(),
                            value: v.clone(),
                            source,
                        }
                    })?),
                };
            let mut user = crate::auth::user(&s.user, s.groups.iter().map(String::as_str));
            user.uid = s.uid;
            parsed.push((
                s.token,
                Entry {
                    user,
                    expires_at,
                    audiences: s.audiences,
                },
            ));
        }
        let names = parsed.iter().map(|(t, _)| t.clone()).collect();
        self.write().extend(parsed);
        Ok(names)
    }

    /// Deletes a token; false if it was not there.
    pub fn remove(&self, token: &str) -> bool {
        self.write().remove(token).is_some()
    }

    /// The table for `GET /_testserver/tokens`, with each token's state at `now`.
    pub fn describe(&self, now: Timestamp) -> Value {
        let tokens: Vec<Value> = self
            .read()
            .iter()
            .map(|(t, e)| {
                json!({
                    "token": t,
                    "user": e.user.username,
                    "uid": e.user.uid,
                    "groups": e.user.groups,
                    "expiresAt": e.expires_at.map(|x| x.to_string()),
                    "expired": e.expires_at.is_some_and(|x| x <= now),
                    "audiences": self.audiences_of(e),
                })
            })
            .collect();
        json!({"tokens": tokens, "apiAudiences": self.api_audiences})
    }

    fn audiences_of<'a>(&'a self, e: &'a Entry) -> &'a [String] {
        if e.audiences.is_empty() {
            &self.api_audiences
        } else {
            &e.audiences
        }
    }

    /// The user of a bearer token presented to this API server.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<UserInfo, TokenError> {
        self.review(token, &[], now).map(|(u, _)| u)
    }

    /// What a `TokenReview` answers: the user, and the requested audiences
    /// (the server's own when none are asked for) the token is good for.
    pub fn review(
        &self,
        token: &str,
        audiences: &[String],
        now: Timestamp,
    ) -> Result<(UserInfo, Vec<String>), TokenError> {
        let entries = self.read();
        let e = entries.get(token).ok_or(TokenError::Unknown)?;
        if let Some(at) = e.expires_at
            && at <= now
        {
            return Err(TokenError::Expired(at));
        }
        let target = if audiences.is_empty() {
            &self.api_audiences
        } else {
            audiences
        };
        let own = self.audiences_of(e);
        let both: Vec<String> = target.iter().filter(|a| own.contains(a)).cloned().collect();
        if both.is_empty() {
            return Err(TokenError::Audience {
                token: own.to_vec(),
                target: target.to_vec(),
            });
        }
        Ok((e.user.clone(), both))
    }
}
