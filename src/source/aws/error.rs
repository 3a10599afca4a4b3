//! The AWS source's error type, and the translation of SDK failures into it:
//! every SDK error that leaves an API call passes through `classify`, which
//! decides whether the user must log in, grant a permission, fix an endpoint,
//! or simply retry later, and says so.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};

/// Everything that can stop a live IAM snapshot. An error always means no
/// document: a partial snapshot would read as deleted entities.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsSourceError {
    #[error("aws source: invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },

    #[error(
        "aws source: no usable aws credentials{}: run `aws sso login{}` (or `aws configure`), \
         pass --profile NAME for a configured profile, or set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY ({detail})",
        in_profile(.profile), profile_flag(.profile)
    )]
    NoCredentials {
        profile: Option<String>,
        detail: String,
    },

    #[error(
        "aws source: the aws credentials{} have expired ({operation} answered {code}: {message}): \
         refresh them with `aws sso login{}` or pick others with --profile",
        in_profile(.profile), profile_flag(.profile)
    )]
    ExpiredCredentials {
        operation: &'static str,
        profile: Option<String>,
        code: String,
        message: String,
    },

    #[error(
        "aws source: {operation} rejected the aws credentials{} ({code}: {message}): check the \
         access key (`aws configure`), log in again with `aws sso login`, or pick others with --profile",
        in_profile(.profile)
    )]
    InvalidCredentials {
        operation: &'static str,
        profile: Option<String>,
        code: String,
        message: String,
    },

    #[error(
        "aws source: access denied calling {operation} ({message}): the caller needs the IAM \
         permission `{action}` (the AWS managed policy IAMReadOnlyAccess grants it)"
    )]
    AccessDenied {
        operation: &'static str,
        action: &'static str,
        message: String,
    },

    #[error(
        "aws source: could not assume role {role_arn} ({detail}): check that the base credentials \
         are valid and allowed `sts:AssumeRole` on it, and that the role's trust policy trusts them"
    )]
    AssumeRole { role_arn: String, detail: String },

    #[error(
        "aws source: cannot reach the aws endpoint {endpoint} for {operation} ({detail}): check \
         --endpoint-url, network access and proxy settings"
    )]
    Unreachable {
        operation: &'static str,
        endpoint: String,
        detail: String,
    },

    #[error(
        "aws source: {operation} was still throttled after {attempts} attempts ({message}): \
         retry later or raise --max-attempts"
    )]
    Throttled {
        operation: &'static str,
        attempts: u32,
        message: String,
    },

    #[error("aws source: {operation} failed with {code} (http {status}): {message}")]
    Service {
        operation: &'static str,
        code: String,
        status: u16,
        message: String,
    },

    #[error(
        "aws source: could not read the {operation} response ({detail}): check that \
         --endpoint-url points at an AWS IAM endpoint"
    )]
    InvalidResponse {
        operation: &'static str,
        detail: String,
    },

    #[error(
        "aws source: {operation} stopped after page {pages} ({reason}); refusing to return a \
         partial snapshot, run the fetch again"
    )]
    Incomplete {
        operation: &'static str,
        pages: u32,
        reason: String,
    },

    #[error(
        "aws source: cannot tell which aws account this is: sts:GetCallerIdentity failed \
         ({detail}) and no user, group, role or customer managed policy ARN names it; \
         allow `sts:GetCallerIdentity` for the caller"
    )]
    AccountUnknown { detail: String },

    #[error("aws source: {operation} failed: {detail}")]
    Sdk {
        operation: &'static str,
        detail: String,
    },
}

fn in_profile(profile: &Option<String>) -> String {
    profile
        .as_deref()
        .map(|p| format!(" for profile {p}"))
        .unwrap_or_default()
}

fn profile_flag(profile: &Option<String>) -> String {
    profile
        .as_deref()
        .map(|p| format!(" --profile {p}"))
        .unwrap_or_default()
}

/// What `classify` needs to know about the call that failed.
pub(crate) struct CallContext<'a> {
    pub operation: &'static str,
    /// The IAM permission the operation needs.
    pub action: &'static str,
    pub profile: Option<&'a str>,
    pub assume_role: Option<&'a str>,
    /// The last URL a request went to, or the configured endpoint.
    pub endpoint: String,
    pub max_attempts: u32,
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

pub(crate) fn classify<E>(
    err: SdkError<E, aws_sdk_iam::config::http::HttpResponse>,
    call: &CallContext<'_>,
) -> AwsSourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let profile = call.profile.map(str::to_owned);
    let detail = chain_text(&err);

    // Credential resolution failures arrive wrapped in whatever SdkError variant
    // the orchestrator chose, so look for the provider's error in the chain.
    if has_credentials_error(&err) {
        return match call.assume_role {
            Some(role_arn) => AwsSourceError::AssumeRole {
                role_arn: role_arn.into(),
                detail,
            },
            None => AwsSourceError::NoCredentials { profile, detail },
        };
    }

    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let body = service
                .raw()
                .body()
                .bytes()
                .and_then(|b| std::str::from_utf8(b).ok());
            // moto wraps auth errors as <ErrorResponse><Errors><Error>, which the
            // SDK's parser does not read; fall back to the body's first tags.
            let code = err
                .code()
                .map(str::to_owned)
                .or_else(|| body.and_then(|b| xml_text(b, "Code")))
                .unwrap_or_default();
            let message = err
                .message()
                .map(str::to_owned)
                .or_else(|| body.and_then(|b| xml_text(b, "Message")))
                .unwrap_or_default();
            match code.as_str() {
                "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" => {
                    AwsSourceError::ExpiredCredentials {
                        operation: call.operation,
                        profile,
                        code,
                        message,
                    }
                }
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "InvalidAccessKeyId"
                | "IncompleteSignature"
                | "MissingAuthenticationToken" => AwsSourceError::InvalidCredentials {
                    operation: call.operation,
                    profile,
                    code,
                    message,
                },
                "AccessDenied" | "AccessDeniedException" => AwsSourceError::AccessDenied {
                    operation: call.operation,
                    action: call.action,
                    message,
                },
                c if THROTTLING_CODES.contains(&c) || status == 429 || status == 503 => {
                    AwsSourceError::Throttled {
                        operation: call.operation,
                        attempts: call.max_attempts,
                        message: if message.is_empty() {
                            format!("http {status}")
                        } else {
                            message
                        },
                    }
                }
                _ => AwsSourceError::Service {
                    operation: call.operation,
                    code: if code.is_empty() {
                        "an unnamed error".into()
                    } else {
                        code
                    },
                    status,
                    message,
                },
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => AwsSourceError::Unreachable {
            operation: call.operation,
            endpoint: call.endpoint.clone(),
            detail,
        },
        SdkError::ResponseError(_) => AwsSourceError::InvalidResponse {
            operation: call.operation,
            detail,
        },
        _ => AwsSourceError::Sdk {
            operation: call.operation,
            detail,
        },
    }
}

fn has_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<CredentialsError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error and its causes as one line, without the SDK's generic wrapper
/// words ("dispatch failure", "other", ...) or causes that repeat their parent.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    const WRAPPERS: &[&str] = &[
        "dispatch failure",
        "io error",
        "other",
        "service error",
        "response error",
        "timeout",
        "failed to construct request",
    ];
    crate::source::chain_text(err, |text| {
        (!WRAPPERS.contains(&text.as_str())).then_some(text)
    })
}

/// Text of the first `<tag>...</tag>` in an XML body, entities decoded.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    let text = body[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_reads_nested_error_shapes() {
        let moto = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code>\
                    <Message>a &amp; b</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_text(moto, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text(moto, "Message").as_deref(), Some("a & b"));
        assert_eq!(xml_text("<html></html>", "Code"), None);
    }

    #[test]
    fn messages_name_the_source_the_operation_and_the_fix() {
        let err = AwsSourceError::AccessDenied {
            operation: "iam:GetAccountAuthorizationDetails",
            action: "iam:GetAccountAuthorizationDetails",
            message: "not authorized".into(),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("aws source: access denied calling iam:GetAccountAuthorizationDetails")
        );
        assert!(msg.contains("`iam:GetAccountAuthorizationDetails`"));
        let err = AwsSourceError::NoCredentials {
            profile: Some("prod".into()),
            detail: "x".into(),
        };
        assert!(
            err.to_string()
                .contains("for profile prod: run `aws sso login --profile prod`")
        );
    }
}
