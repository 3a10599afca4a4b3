//! The Kubernetes source's error type, and the translation of `kube` client
//! failures into it. Every failure that stops a cluster read passes through
//! [`classify`], which decides whether the user must fix the kubeconfig, log
//! in again, grant a permission, or check that the server is reachable, and
//! says so, naming the source (kubeconfig context) and the server URL.
//!
//! A 403 on one resource is not an error: the snapshot records it as a
//! missing part and goes on (see [`forbidden_reason`]).

use std::path::PathBuf;

/// Everything that can stop reading a cluster (or resolving which clusters
/// to read). Messages are lower-case and end with what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sSourceError {
    #[error(
        "kube source: no kubeconfig found ({tried}): pass --kubeconfig FILE, set KUBECONFIG, \
         or run inside a cluster (--in-cluster)"
    )]
    NoKubeconfig { tried: String },

    #[error("kube source: cannot read kubeconfig {}: {detail}; check the file or pass another with --kubeconfig", .path.display())]
    Kubeconfig { path: PathBuf, detail: String },

    #[error(
        "kube source: context {context:?} is not in {origin} (contexts: {available}); \
         pick one with --context NAME or use --all-contexts"
    )]
    NoSuchContext {
        context: String,
        origin: String,
        available: String,
    },

    #[error(
        "kube source: {origin} has no current-context; pick one with --context NAME or use --all-contexts"
    )]
    NoCurrentContext { origin: String },

    #[error("kube source: {origin} defines no contexts; add one with `kubectl config set-context`")]
    NoContexts { origin: String },

    #[error(
        "kube source {source_name:?}: cannot use the kubeconfig settings of context {context:?}: {detail}; \
         check its cluster, user and credentials (`kubectl config view --minify --context {context}`)"
    )]
    ContextConfig {
        source_name: String,
        context: String,
        detail: String,
    },

    #[error(
        "kube source \"in-cluster\": cannot load the in-cluster configuration ({detail}); \
         outside a pod, use a kubeconfig (--kubeconfig FILE or --context NAME)"
    )]
    InCluster { detail: String },

    #[error(
        "kube source {source_name:?}: cannot build a client for {server}: {detail}; check the \
         cluster's certificate-authority and client certificate settings in the kubeconfig"
    )]
    Client {
        source_name: String,
        server: String,
        detail: String,
    },

    #[error(
        "kube source {source_name:?}: cannot reach the api server {server} ({detail}): check that \
         the cluster is up, that the kubeconfig's server url is right, and network or proxy access"
    )]
    Unreachable {
        source_name: String,
        server: String,
        detail: String,
    },

    #[error(
        "kube source {source_name:?}: the api server {server} did not accept its tls connection \
         ({detail}): check the cluster's certificate-authority in the kubeconfig"
    )]
    Tls {
        source_name: String,
        server: String,
        detail: String,
    },

    #[error(
        "kube source {source_name:?}: the api server {server} rejected the credentials (401 \
         Unauthorized: {message}): the token or certificate is wrong or has expired; log in again \
         (re-run your cluster login command, or update the user in the kubeconfig)"
    )]
    Unauthorized {
        source_name: String,
        server: String,
        message: String,
    },

    #[error(
        "kube source {source_name:?}: cannot get credentials for {server} ({detail}): log in \
         again or fix the user's exec/auth-provider/token settings in the kubeconfig"
    )]
    Credentials {
        source_name: String,
        server: String,
        detail: String,
    },

    #[error(
        "kube source {source_name:?}: listing {resource} on {server} failed with http {code} \
         ({reason}: {message}) after {attempts} attempt(s); retry later"
    )]
    Api {
        source_name: String,
        server: String,
        resource: String,
        code: u16,
        reason: String,
        message: String,
        attempts: u32,
    },

    #[error(
        "kube source {source_name:?}: could not read the {resource} list from {server} ({detail}) \
         after {attempts} attempt(s); check that the server url points at a Kubernetes api server"
    )]
    InvalidResponse {
        source_name: String,
        server: String,
        resource: String,
        detail: String,
        attempts: u32,
    },

    #[error(
        "kube source {source_name:?}: listing {resource} on {server} kept restarting ({reason}); \
         the server's list snapshots expire faster than they can be read; retry, or read a quieter cluster"
    )]
    Restarts {
        source_name: String,
        server: String,
        resource: String,
        reason: String,
    },
}

/// What [`classify`] needs to know about the call that failed.
pub(crate) struct Call<'a> {
    pub source_name: &'a str,
    pub server: &'a str,
    pub resource: &'a str,
    pub attempts: u32,
}

/// How a failed list request should be handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 403: record a missing part and go on with the other resources.
    Forbidden(String),
    /// 404: the server does not serve this resource; record a missing part.
    NotServed(String),
    /// 410 on a continue token: the list snapshot expired; start the resource again.
    Expired(String),
    /// 5xx, 429, garbled bodies, dropped connections: try the page again.
    Transient(K8sSourceError),
    /// Nothing a retry can fix.
    Fatal(K8sSourceError),
}

/// Sorts a failed list request into what to do about it.
pub(crate) fn classify(err: kube::Error, call: &Call<'_>) -> Failure {
    let source_name = call.source_name.to_owned();
    let server = call.server.to_owned();
    match err {
        kube::Error::Api(status) => {
            let code = status.code;
            let message = status.message.clone();
            let reason = status.reason.clone();
            match code {
                401 => Failure::Fatal(K8sSourceError::Unauthorized {
                    source_name,
                    server,
                    message: if message.is_empty() {
                        "Unauthorized".into()
                    } else {
                        message
                    },
                }),
                403 => Failure::Forbidden(message),
                404 => Failure::NotServed(message),
                410 => Failure::Expired(message),
                _ => {
                    let api = K8sSourceError::Api {
                        source_name,
                        server,
                        resource: call.resource.to_owned(),
                        code,
                        reason,
                        message,
                        attempts: call.attempts,
                    };
                    if code == 429 || code >= 500 {
                        Failure::Transient(api)
                    } else {
                        Failure::Fatal(api)
                    }
                }
            }
        }
        kube::Error::SerdeError(e) => Failure::Transient(K8sSourceError::InvalidResponse {
            source_name,
            server,
            resource: call.resource.to_owned(),
            detail: e.to_string(),
            attempts: call.attempts,
        }),
        kube::Error::FromUtf8(e) => Failure::Transient(K8sSourceError::InvalidResponse {
            source_name,
            server,
            resource: call.resource.to_owned(),
            detail: e.to_string(),
            attempts: call.attempts,
        }),
        kube::Error::Auth(e) => Failure::Fatal(K8sSourceError::Credentials {
            source_name,
            server,
            detail: chain_text(&e),
        }),
        other => {
            let detail = chain_text(&other);
            if looks_like_tls(&detail) {
                Failure::Fatal(K8sSourceError::Tls {
                    source_name,
                    server,
                    detail,
                })
            } else {
                Failure::Transient(K8sSourceError::Unreachable {
                    source_name,
                    server,
                    detail,
                })
            }
        }
    }
}

fn looks_like_tls(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|w| d.contains(w))
}

/// The missing-part reason for a 403 on `verb` (`list`, `watch`) of `resource`
/// (`rolebindings.rbac.authorization.k8s.io`): who was refused and what to grant.
pub(crate) fn forbidden_reason(verb: &str, resource: &str, message: &str) -> String {
    let user = quoted_after(message, "User \"")
        .or_else(|| quoted_after(message, "user \""))
        .map(|u| format!("user {u:?}"))
        .unwrap_or_else(|| "the caller".into());
    format!(
        "forbidden to {verb} {resource} at cluster scope ({user}); grant get/list/watch on it or \
         expect an incomplete snapshot"
    )
}

/// The text between `prefix` and the next `"`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let end = start + message[start..].find('"')?;
    Some(message[start..end].to_owned())
}

/// The error and its causes as one line, without kube's own wrapper words
/// (which say nothing to a user) or causes that repeat their parent.
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    const PREFIXES: &[&str] = &["ServiceError: ", "HyperError: "];
    crate::source::chain_text(err, |text| {
        Some(match PREFIXES.iter().find_map(|p| text.strip_prefix(p)) {
            Some(rest) => rest.to_owned(),
            None => text,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_reason_names_the_user_and_what_to_grant() {
        let msg = "rolebindings.rbac.authorization.k8s.io is forbidden: User \"viewer\" cannot \
                   list resource \"rolebindings\" in API group \"rbac.authorization.k8s.io\" at \
                   the cluster scope";
        assert_eq!(
            forbidden_reason("list", "rolebindings.rbac.authorization.k8s.io", msg),
            "forbidden to list rolebindings.rbac.authorization.k8s.io at cluster scope (user \
             \"viewer\"); grant get/list/watch on it or expect an incomplete snapshot"
        );
        assert!(forbidden_reason("list", "serviceaccounts", "nope").contains("(the caller)"));
    }

    #[test]
    fn status_codes_sort_into_what_to_do() {
        let call = Call {
            source_name: "prod",
            server: "https://10.0.0.1",
            resource: "clusterroles.rbac.authorization.k8s.io",
            attempts: 1,
        };
        let status = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("boom", "Reason")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(matches!(
            classify(status(403), &call),
            Failure::Forbidden(_)
        ));
        assert!(matches!(classify(status(410), &call), Failure::Expired(_)));
        assert!(matches!(
            classify(status(503), &call),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(status(404), &call),
            Failure::NotServed(_)
        ));
        match classify(status(401), &call) {
            Failure::Fatal(e) => {
                let m = e.to_string();
                assert!(
                    m.starts_with("kube source \"prod\": the api server https://10.0.0.1 rejected"),
                    "{m}"
                );
                assert!(m.contains("log in again"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(status(422), &call), Failure::Fatal(_)));
    }
}
