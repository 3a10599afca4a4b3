//! API errors. Every failure a handler can hit becomes an [`ApiError`], which
//! renders as a `meta/v1` `Status` object with the `reason`, `code`, `details`
//! and message wording of the real API server, because kubectl and kube print
//! or branch on exactly those fields.

use serde_json::{Map, Value, json};

/// A failed API call, rendered as a `Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// `metadata.continue` of the Status (the 410 for an expired continue token).
    pub continue_token: Option<String>,
    /// Extra response headers (e.g. `Retry-After` on 429).
    pub retry_after: Option<u64>,
}

/// Identifies the resource an error is about, as the real server words it.
pub struct Target<'a> {
    pub group: &'a str,
    /// plural resource name
    pub resource: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    /// `clusterroles.rbac.authorization.k8s.io` or `configmaps` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = Map::new();
        if !self.name.is_empty() {
            d.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(self.resource));
        Value::Object(d)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for a URL that names no known resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn not_found(t: &Target) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", t.qualified(), t.name),
        )
        .with_details(t.details())
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::not_found(&Target {
            group: "",
            resource: "namespaces",
            name: ns,
        })
    }

    pub fn already_exists(t: &Target) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", t.qualified(), t.name),
        )
        .with_details(t.details())
    }

    /// 409 Conflict: `Operation cannot be fulfilled on X "n": <why>`.
    pub fn conflict(t: &Target, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                t.qualified(),
                t.name,
                why
            ),
        )
        .with_details(t.details())
    }

    pub fn stale(t: &Target) -> Self {
        Self::conflict(
            t,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one field cause, e.g. `metadata.name: Required value: ...`.
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        field: &str,
        cause_reason: &str,
        detail: &str,
    ) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let type_word = match cause_reason {
            "FieldValueRequired" => "Required value",
            "FieldValueForbidden" => "Forbidden",
            "FieldValueDuplicate" => "Duplicate value",
            "FieldValueNotSupported" => "Unsupported value",
            _ => "Invalid value",
        };
        // the cause carries the body without the field, as field.Error does
        let body = if detail.is_empty() {
            type_word.to_string()
        } else {
            format!("{type_word}: {detail}")
        };
        let msg = format!("{field}: {body}");
        let mut details = Map::new();
        details.insert("name".into(), json!(name));
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(kind));
        details.insert(
            "causes".into(),
            json!([{"reason": cause_reason, "message": body, "field": field}]),
        );
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {msg}"),
        )
        .with_details(Value::Object(details))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut metadata = Map::new();
        if let Some(c) = &self.continue_token {
            metadata.insert("continue".into(), json!(c));
        }
        let mut s = Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), Value::Object(metadata));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        s.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            s.insert("details".into(), d.clone());
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}
