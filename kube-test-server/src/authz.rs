//! Whether an identity may do something. A user and a request's attributes
//! go in; the run-time deny list is checked first (a match always refuses),
//! then, under `--authorizer rbac`, the privileged group `system:masters`
//! and RBAC over the stored objects (`rbac.rs`); under the default
//! `--authorizer deny-list` everything not denied is allowed. Out comes a
//! [`Verdict`], which the HTTP layer turns into a 403 or an access review's
//! `status`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::auth::{Action, UserInfo};
use crate::http::App;
use crate::rbac::{self, Attributes};

/// `--authorizer`: what decides beyond the deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// allow everything not on the deny list (an open dev server)
    DenyList,
    /// RBAC over the stored objects, as a real cluster authorizes
    Rbac,
}

/// Members of this group may do anything, as on a real API server.
pub const MASTERS: &str = "system:masters";

const DENY_REASON: &str = "denied by the kube-test-server deny list";
const OPEN_REASON: &str = "kube-test-server allows everything not on its deny list";

/// An authorization decision, in `SubjectAccessReviewStatus` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// refused outright (the deny list), not merely not allowed
    pub denied: bool,
    pub reason: String,
    pub evaluation_error: String,
}

impl Verdict {
    /// The `status` of a SubjectAccessReview (empty fields omitted, as the
    /// real server does).
    pub fn status(&self) -> Value {
        let mut m = Map::new();
        m.insert("allowed".into(), json!(self.allowed));
        if self.denied {
            m.insert("denied".into(), json!(true));
        }
        if !self.reason.is_empty() {
            m.insert("reason".into(), json!(self.reason));
        }
        if !self.evaluation_error.is_empty() {
            m.insert("evaluationError".into(), json!(self.evaluation_error));
        }
        Value::Object(m)
    }
}

/// The deny list sees resource and subresource as one `plural/sub` string,
/// and a non-resource path as the resource.
fn deny_action<'a>(a: &Attributes<'a>, combined: &'a str) -> Action<'a> {
    match *a {
        Attributes::Resource {
            verb,
            group,
            namespace,
            name,
            ..
        } => Action {
            verb,
            group,
            resource: combined,
            namespace,
            name,
        },
        Attributes::NonResource { verb, .. } => Action {
            verb,
            group: "",
            resource: combined,
            namespace: "",
            name: "",
        },
    }
}

impl App {
    /// Decides whether `u` may do `a`.
    pub fn authorize(&self, u: &UserInfo, a: &Attributes) -> Verdict {
        let combined = match *a {
            Attributes::Resource {
                resource,
                subresource: "",
                ..
            } => resource.to_string(),
            Attributes::Resource {
                resource,
                subresource,
                ..
            } => format!("{resource}/{subresource}"),
            Attributes::NonResource { path, .. } => path.to_string(),
        };
        let action = deny_action(a, &combined);
        let denied = self
            .deny
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|rule| rule.matches(u, &action));
        let verdict = |allowed: bool, reason: &str, errors: &[String]| Verdict {
            allowed,
            denied: false,
            reason: reason.to_string(),
            // joined like the real server's aggregate error
            evaluation_error: match errors {
                [] => String::new(),
                [one] => one.clone(),
                many => format!("[{}]", many.join(", ")),
            },
        };
        if denied {
            return Verdict {
                allowed: false,
                denied: true,
                reason: DENY_REASON.into(),
                evaluation_error: String::new(),
            };
        }
        match self.authorizer {
            Mode::DenyList => verdict(true, OPEN_REASON, &[]),
            // the real privileged-group authorizer gives no reason
            Mode::Rbac if u.groups.iter().any(|g| g == MASTERS) => verdict(true, "", &[]),
            Mode::Rbac => {
                let out = self.rbac_index().evaluate(u, a);
                verdict(out.allowed, &out.reason, &out.errors)
            }
        }
    }

    /// The parsed RBAC objects, rebuilt after roles or bindings changed.
    fn rbac_index(&self) -> Arc<rbac::Index> {
        let st = self.read_store();
        let mut cache = self.rbac_cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some(ix) if ix.version() == st.rbac_version() => ix.clone(),
            _ => {
                let ix = Arc::new(rbac::Index::build(&st));
                *cache = Some(ix.clone());
                ix
            }
        }
    }
}
