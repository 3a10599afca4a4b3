//! The IAM reverter: runs planned [`IamOp`]s with aws-sdk-iam.
//!
//! Operations from src/revert/plan.rs go in; each becomes exactly one IAM
//! call from the closed list [`IamCall`] (which docs/approvals.md prints as
//! the minimal IAM policy for enforce mode, and a test keeps the two equal);
//! the result, or a typed [`IamRevertError`] saying whether a retry can
//! help, comes out. A thin async adapter: it decides nothing.

use super::Retry;
use super::plan::{IamOp, PrincipalRef};
use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;

/// Every IAM call the reverter can make. Adding an operation means adding
/// its call here, and to the documented policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IamCall {
    AddUserToGroup,
    AttachGroupPolicy,
    AttachRolePolicy,
    AttachUserPolicy,
    CreatePolicyVersion,
    DeleteGroupPolicy,
    DeleteRolePermissionsBoundary,
    DeleteRolePolicy,
    DeleteUserPermissionsBoundary,
    DeleteUserPolicy,
    DetachGroupPolicy,
    DetachRolePolicy,
    DetachUserPolicy,
    PutGroupPolicy,
    PutRolePermissionsBoundary,
    PutRolePolicy,
    PutUserPermissionsBoundary,
    PutUserPolicy,
    RemoveUserFromGroup,
    SetDefaultPolicyVersion,
    UpdateAssumeRolePolicy,
}

impl IamCall {
    pub const ALL: [IamCall; 21] = [
        IamCall::AddUserToGroup,
        IamCall::AttachGroupPolicy,
        IamCall::AttachRolePolicy,
        IamCall::AttachUserPolicy,
        IamCall::CreatePolicyVersion,
        IamCall::DeleteGroupPolicy,
        IamCall::DeleteRolePermissionsBoundary,
        IamCall::DeleteRolePolicy,
        IamCall::DeleteUserPermissionsBoundary,
        IamCall::DeleteUserPolicy,
        IamCall::DetachGroupPolicy,
        IamCall::DetachRolePolicy,
        IamCall::DetachUserPolicy,
        IamCall::PutGroupPolicy,
        IamCall::PutRolePermissionsBoundary,
        IamCall::PutRolePolicy,
        IamCall::PutUserPermissionsBoundary,
        IamCall::PutUserPolicy,
        IamCall::RemoveUserFromGroup,
        IamCall::SetDefaultPolicyVersion,
        IamCall::UpdateAssumeRolePolicy,
    ];

    /// The IAM policy action this call needs (`iam:DetachRolePolicy`).
    pub fn action(self) -> String {
        format!("iam:{self:?}")
    }
}

/// The principal kinds IAM write calls are split by.
#[derive(Clone, Copy)]
enum Who {
    User,
    Group,
    Role,
}

fn who(p: &PrincipalRef) -> Result<Who, IamRevertError> {
    match p.kind.as_str() {
        "User" => Ok(Who::User),
        "Group" => Ok(Who::Group),
        "Role" => Ok(Who::Role),
        other => Err(IamRevertError::Unsupported(format!(
            "{other} {} has no such IAM call",
            p.name
        ))),
    }
}

/// The one call an operation makes.
pub fn call_of(op: &IamOp) -> Result<IamCall, IamRevertError> {
    use IamCall as C;
    Ok(match op {
        IamOp::PutPermissionsBoundary { principal, .. } => match who(principal)? {
            Who::User => C::PutUserPermissionsBoundary,
            Who::Role => C::PutRolePermissionsBoundary,
            Who::Group => {
                return Err(IamRevertError::Unsupported(
                    "a group has no boundary".into(),
                ));
            }
        },
        IamOp::DeletePermissionsBoundary { principal } => match who(principal)? {
            Who::User => C::DeleteUserPermissionsBoundary,
            Who::Role => C::DeleteRolePermissionsBoundary,
            Who::Group => {
                return Err(IamRevertError::Unsupported(
                    "a group has no boundary".into(),
                ));
            }
        },
        IamOp::UpdateTrustPolicy { .. } => C::UpdateAssumeRolePolicy,
        IamOp::DetachPolicy { principal, .. } => match who(principal)? {
            Who::User => C::DetachUserPolicy,
            Who::Group => C::DetachGroupPolicy,
            Who::Role => C::DetachRolePolicy,
        },
        IamOp::AttachPolicy { principal, .. } => match who(principal)? {
            Who::User => C::AttachUserPolicy,
            Who::Group => C::AttachGroupPolicy,
            Who::Role => C::AttachRolePolicy,
        },
        IamOp::DeleteInlinePolicy { principal, .. } => match who(principal)? {
            Who::User => C::DeleteUserPolicy,
            Who::Group => C::DeleteGroupPolicy,
            Who::Role => C::DeleteRolePolicy,
        },
        IamOp::PutInlinePolicy { principal, .. } => match who(principal)? {
            Who::User => C::PutUserPolicy,
            Who::Group => C::PutGroupPolicy,
            Who::Role => C::PutRolePolicy,
        },
        IamOp::RemoveUserFromGroup { .. } => C::RemoveUserFromGroup,
        IamOp::AddUserToGroup { .. } => C::AddUserToGroup,
        IamOp::SetDefaultPolicyVersion { .. } => C::SetDefaultPolicyVersion,
        IamOp::CreatePolicyVersion { .. } => C::CreatePolicyVersion,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum IamRevertError {
    #[error("{call:?}: access denied: {message}")]
    AccessDenied { call: IamCall, message: String },
    #[error("{call:?}: throttled or unavailable ({code}): {message}")]
    Throttled {
        call: IamCall,
        code: String,
        message: String,
    },
    #[error("{call:?}: conflicting change in progress ({code}): {message}")]
    Conflict {
        call: IamCall,
        code: String,
        message: String,
    },
    #[error("{call:?}: not found: {message}")]
    NotFound { call: IamCall, message: String },
    #[error("{call:?}: refused ({code}): {message}")]
    Refused {
        call: IamCall,
        code: String,
        message: String,
    },
    #[error("unsupported operation: {0}")]
    Unsupported(String),
}

impl IamRevertError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            IamRevertError::AccessDenied { .. } => "forbidden",
            IamRevertError::Throttled { .. } => "throttled",
            IamRevertError::Conflict { .. } => "conflict",
            IamRevertError::NotFound { .. } => "not-found",
            IamRevertError::Refused { .. } => "refused",
            IamRevertError::Unsupported(_) => "unsupported",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            IamRevertError::Throttled { .. } | IamRevertError::Conflict { .. } => Retry::Retryable,
            _ => Retry::Permanent,
        }
    }

    fn from_sdk<E>(
        call: IamCall,
        e: aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = e.code().unwrap_or("").to_owned();
        let message = e.message().map(str::to_owned).unwrap_or_else(|| {
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()
        });
        // No response at all (connection, timeout) is transient.
        let Some(status) = e.raw_response().map(|r| r.status().as_u16()) else {
            return IamRevertError::Throttled {
                call,
                code: "transport".into(),
                message,
            };
        };
        // moto words some errors as <ErrorResponse><Errors><Error>, which the
        // SDK does not parse: the HTTP status decides when the code is missing.
        match (code.as_str(), status) {
            ("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation", _) | ("", 403) => {
                IamRevertError::AccessDenied { call, message }
            }
            ("Throttling" | "ThrottlingException" | "RequestLimitExceeded", _)
            | ("ServiceFailure" | "ServiceUnavailable", _)
            | (_, 429 | 500 | 502 | 503 | 504) => IamRevertError::Throttled {
                call,
                code: if code.is_empty() {
                    format!("http {status}")
                } else {
                    code
                },
                message,
            },
            ("ConcurrentModification" | "ConcurrentModificationException", _) | ("", 409) => {
                IamRevertError::Conflict {
                    call,
                    code,
                    message,
                }
            }
            ("NoSuchEntity" | "NoSuchEntityException", _) | ("", 404) => {
                IamRevertError::NotFound { call, message }
            }
            _ => IamRevertError::Refused {
                call,
                code,
                message,
            },
        }
    }
}

/// Runs one operation: exactly the call [`call_of`] names.
pub async fn execute(client: &Client, op: &IamOp) -> Result<IamCall, IamRevertError> {
    use IamCall as C;
    let call = call_of(op)?;
    macro_rules! run {
        ($req:expr) => {
            $req.send()
                .await
                .map(|_| call)
                .map_err(|e| IamRevertError::from_sdk(call, e))
        };
    }
    match (op, call) {
        (
            IamOp::PutPermissionsBoundary {
                principal,
                policy_arn,
            },
            C::PutUserPermissionsBoundary,
        ) => {
            run!(
                client
                    .put_user_permissions_boundary()
                    .user_name(&principal.name)
                    .permissions_boundary(policy_arn)
            )
        }
        (
            IamOp::PutPermissionsBoundary {
                principal,
                policy_arn,
            },
            _,
        ) => run!(
            client
                .put_role_permissions_boundary()
                .role_name(&principal.name)
                .permissions_boundary(policy_arn)
        ),
        (IamOp::DeletePermissionsBoundary { principal }, C::DeleteUserPermissionsBoundary) => {
            run!(
                client
                    .delete_user_permissions_boundary()
                    .user_name(&principal.name)
            )
        }
        (IamOp::DeletePermissionsBoundary { principal }, _) => run!(
            client
                .delete_role_permissions_boundary()
                .role_name(&principal.name)
        ),
        (IamOp::UpdateTrustPolicy { role, document }, _) => run!(
            client
                .update_assume_role_policy()
                .role_name(role)
                .policy_document(document)
        ),
        (
            IamOp::DetachPolicy {
                principal,
                policy_arn,
            },
            C::DetachUserPolicy,
        ) => run!(
            client
                .detach_user_policy()
                .user_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (
            IamOp::DetachPolicy {
                principal,
                policy_arn,
            },
            C::DetachGroupPolicy,
        ) => run!(
            client
                .detach_group_policy()
                .group_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (
            IamOp::DetachPolicy {
                principal,
                policy_arn,
            },
            _,
        ) => run!(
            client
                .detach_role_policy()
                .role_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (
            IamOp::AttachPolicy {
                principal,
                policy_arn,
            },
            C::AttachUserPolicy,
        ) => run!(
            client
                .attach_user_policy()
                .user_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (
            IamOp::AttachPolicy {
                principal,
                policy_arn,
            },
            C::AttachGroupPolicy,
        ) => run!(
            client
                .attach_group_policy()
                .group_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (
            IamOp::AttachPolicy {
                principal,
                policy_arn,
            },
            _,
        ) => run!(
            client
                .attach_role_policy()
                .role_name(&principal.name)
                .policy_arn(policy_arn)
        ),
        (IamOp::DeleteInlinePolicy { principal, name }, C::DeleteUserPolicy) => run!(
            client
                .delete_user_policy()
                .user_name(&principal.name)
                .policy_name(name)
        ),
        (IamOp::DeleteInlinePolicy { principal, name }, C::DeleteGroupPolicy) => run!(
            client
                .delete_group_policy()
                .group_name(&principal.name)
                .policy_name(name)
        ),
        (IamOp::DeleteInlinePolicy { principal, name }, _) => run!(
            client
                .delete_role_policy()
                .role_name(&principal.name)
                .policy_name(name)
        ),
        (
            IamOp::PutInlinePolicy {
                principal,
                name,
                document,
            },
            C::PutUserPolicy,
        ) => run!(
            client
                .put_user_policy()
                .user_name(&principal.name)
                .policy_name(name)
                .policy_document(document)
        ),
        (
            IamOp::PutInlinePolicy {
                principal,
                name,
                document,
            },
            C::PutGroupPolicy,
        ) => run!(
            client
                .put_group_policy()
                .group_name(&principal.name)
                .policy_name(name)
                .policy_document(document)
        ),
        (
            IamOp::PutInlinePolicy {
                principal,
                name,
                document,
            },
            _,
        ) => run!(
            client
                .put_role_policy()
                .role_name(&principal.name)
                .policy_name(name)
                .policy_document(document)
        ),
        (IamOp::RemoveUserFromGroup { user, group }, _) => run!(
            client
                .remove_user_from_group()
                .user_name(user)
                .group_name(group)
        ),
        (IamOp::AddUserToGroup { user, group }, _) => {
            run!(client.add_user_to_group().user_name(user).group_name(group))
        }
        (
            IamOp::SetDefaultPolicyVersion {
                policy_arn,
                version_id,
            },
            _,
        ) => run!(
            client
                .set_default_policy_version()
                .policy_arn(policy_arn)
                .version_id(version_id)
        ),
        (
            IamOp::CreatePolicyVersion {
                policy_arn,
                document,
            },
            _,
        ) => run!(
            client
                .create_policy_version()
                .policy_arn(policy_arn)
                .policy_document(document)
                .set_as_default(true)
        ),
    }
}

/// Runs a plan's operations in order, stopping at the first failure; returns
/// the calls made.
pub async fn execute_all(client: &Client, ops: &[IamOp]) -> Result<Vec<IamCall>, IamRevertError> {
    let mut calls = Vec::with_capacity(ops.len());
    for op in ops {
        calls.push(execute(client, op).await?);
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Action list of the JSON block under "Minimal IAM policy for
    /// enforce mode" in a document.
    fn documented(text: &str) -> Vec<String> {
        let section = text
            .split("Minimal IAM policy for enforce mode")
            .nth(1)
            .unwrap();
        let block = section
            .split("```json")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let policy: serde_json::Value = serde_json::from_str(block).unwrap();
        let mut actions: Vec<String> = policy["Statement"][0]["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        actions.sort();
        actions
    }

    #[test]
    fn the_operator_docs_list_one_action_per_call_the_reverter_makes() {
        let mut calls: Vec<String> = IamCall::ALL.iter().map(|c| c.action()).collect();
        calls.sort();
        calls.dedup();
        assert_eq!(calls.len(), IamCall::ALL.len(), "one action per call");
        for doc in [
            include_str!("../../docs/operator.md"),
            include_str!("../../docs/approvals.md"),
        ] {
            assert_eq!(documented(doc), calls);
        }
    }
}
