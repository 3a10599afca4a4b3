//! Live AWS IAM source: reads one account's complete IAM state with
//! `GetAccountAuthorizationDetails` (users, groups, roles, customer and AWS
//! managed policies), follows every page, and merges them into a single
//! document shaped like `aws iam get-account-authorization-details` output, so
//! the core parses live and file snapshots with the same reader. The account id
//! comes from `sts:GetCallerIdentity`, or from the first ARN when STS says no.

mod client;
mod document;
mod error;

use std::fmt;

use aws_sdk_iam::types::EntityType;

pub use error::AwsSourceError;

use client::RequestTap;
use document::GaadLists;
use error::{CallContext, classify};

pub(crate) const GAAD: &str = "iam:GetAccountAuthorizationDetails";
const CALLER_IDENTITY: &str = "sts:GetCallerIdentity";

/// Attempts per API call (first try plus retries) unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Largest page IAM allows; fewer round trips on big accounts.
const PAGE_SIZE: i32 = 1000;

/// Where and as whom to read. Everything left `None` comes from the standard
/// AWS configuration (environment, `~/.aws/config`, SSO, instance metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSourceOptions {
    /// A named profile from the shared AWS config files (`--profile`).
    pub profile: Option<String>,
    /// Signing region; IAM is global, so this only matters for partitions and
    /// STS. Defaults to the configured region, else `us-east-1`.
    pub region: Option<String>,
    /// Send IAM and STS calls here instead of AWS (moto, LocalStack, a proxy).
    pub endpoint_url: Option<String>,
    /// Role ARN to assume (through STS) with the resolved credentials first.
    pub assume_role: Option<String>,
    /// Attempts per call, retries with exponential backoff and jitter included.
    pub max_attempts: u32,
}

impl Default for AwsSourceOptions {
    fn default() -> Self {
        AwsSourceOptions {
            profile: None,
            region: None,
            endpoint_url: None,
            assume_role: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// One merged snapshot of an account's IAM state.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsFetch {
    /// From `sts:GetCallerIdentity`, else the account in the first entity ARN.
    pub account_id: String,
    /// `{"UserDetailList": [...], "GroupDetailList": [...], "RoleDetailList":
    /// [...], "Policies": [...]}`, all pages merged in API order.
    pub document: serde_json::Value,
    /// `GetAccountAuthorizationDetails` pages read.
    pub pages: u32,
    /// HTTP requests sent to IAM and STS, retries included (requests a
    /// credentials provider makes itself, such as AssumeRole or SSO, are not).
    pub requests: u32,
}

/// Reported after each page, for "page N: ..." progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsProgress {
    /// 1-based page number.
    pub page: u32,
    pub users: usize,
    pub groups: usize,
    pub roles: usize,
    pub policies: usize,
    /// Whether IAM said more pages follow.
    pub more: bool,
}

impl fmt::Display for AwsProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page {}: {} users, {} groups, {} roles, {} policies{}",
            self.page,
            self.users,
            self.groups,
            self.roles,
            self.policies,
            if self.more { ", more to come" } else { "" }
        )
    }
}

/// An IAM client with the source's credentials, region, endpoint and assumed
/// role, for the reverter (src/revert/aws.rs) in enforce mode.
pub async fn iam_client(opts: &AwsSourceOptions) -> Result<aws_sdk_iam::Client, AwsSourceError> {
    let config = client::load_sdk_config(opts).await?;
    Ok(client::iam_client(&config, &RequestTap::default()))
}

/// Reads the whole account, or fails: never a partial document.
///
/// `progress` is called once per page. It must be `Sync` so the returned
/// future is `Send` and can run on a spawned task.
pub async fn fetch_account(
    opts: &AwsSourceOptions,
    progress: &(dyn Fn(AwsProgress) + Sync),
) -> Result<AwsFetch, AwsSourceError> {
    let config = client::load_sdk_config(opts).await?;
    let tap = RequestTap::default();
    let iam = client::iam_client(&config, &tap);
    let sts = client::sts_client(&config, &tap);
    let call = |operation, action| CallContext {
        operation,
        action,
        profile: opts.profile.as_deref(),
        assume_role: opts.assume_role.as_deref(),
        endpoint: tap
            .last_url()
            .or_else(|| opts.endpoint_url.clone())
            .unwrap_or_else(|| "https://iam.amazonaws.com".into()),
        max_attempts: opts.max_attempts,
    };

    let mut lists = GaadLists::default();
    let mut pages = 0u32;
    let mut marker: Option<String> = None;
    let mut seen_markers = std::collections::HashSet::new();
    loop {
        let page = iam
            .get_account_authorization_details()
            .set_filter(Some(vec![
                EntityType::User,
                EntityType::Group,
                EntityType::Role,
                EntityType::LocalManagedPolicy,
                EntityType::AwsManagedPolicy,
            ]))
            .max_items(PAGE_SIZE)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| classify(e, &call(GAAD, GAAD)))?;
        pages += 1;
        let counts = lists.push_page(&page)?;
        progress(AwsProgress {
            page: pages,
            users: counts.users,
            groups: counts.groups,
            roles: counts.roles,
            policies: counts.policies,
            more: page.is_truncated,
        });
        if !page.is_truncated {
            break;
        }
        // A truncated page must say where to go on; a marker seen before
        // would loop forever. Either way the snapshot cannot be completed.
        match page.marker {
            Some(next) if !next.is_empty() => {
                if !seen_markers.insert(next.clone()) {
                    return Err(AwsSourceError::Incomplete {
                        operation: GAAD,
                        pages,
                        reason: "IAM repeated a pagination marker".into(),
                    });
                }
                marker = Some(next);
            }
            _ => {
                return Err(AwsSourceError::Incomplete {
                    operation: GAAD,
                    pages,
                    reason: "IAM said more pages follow but gave no marker".into(),
                });
            }
        }
    }

    let account_id = match sts.get_caller_identity().send().await {
        Ok(identity) => identity
            .account
            .filter(|a| !a.is_empty())
            .or_else(|| lists.first_account_id())
            .ok_or_else(|| AwsSourceError::AccountUnknown {
                detail: "it answered without an account".into(),
            })?,
        Err(e) => {
            let err = classify(e, &call(CALLER_IDENTITY, CALLER_IDENTITY));
            match lists.first_account_id() {
                Some(id) => {
                    tracing::warn!(error = %err, account_id = %id, "using the account id in the first ARN");
                    id
                }
                None => {
                    return Err(AwsSourceError::AccountUnknown {
                        detail: err.to_string(),
                    });
                }
            }
        }
    };

    Ok(AwsFetch {
        account_id,
        document: lists.into_document(),
        pages,
        requests: tap.attempts(),
    })
}
