//! Builds the SDK configuration and clients the AWS source talks through: the
//! standard credential chain (profile, SSO, env, IMDS...), an optional assumed
//! role, region and endpoint overrides, retries, and a tap that counts every
//! HTTP attempt and remembers where it went (for request totals and for naming
//! the endpoint when it cannot be reached).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::config::interceptors::{BeforeTransmitInterceptorContextRef, InterceptorContext};
use aws_sdk_iam::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_iam::error::BoxError;

use super::{AwsSourceError, AwsSourceOptions};

/// IAM is a global service; any region signs for it, this one is its home.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// Resolves credentials and region the way the AWS CLI does, then applies the
/// caller's overrides.
pub(crate) async fn load_sdk_config(opts: &AwsSourceOptions) -> Result<SdkConfig, AwsSourceError> {
    if opts.max_attempts == 0 {
        return Err(AwsSourceError::InvalidOption {
            option: "max_attempts",
            reason: "must be at least 1 (1 means no retries)".into(),
        });
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts));
    if let Some(profile) = non_empty(&opts.profile, "profile")? {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = non_empty(&opts.region, "region")? {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(url) = non_empty(&opts.endpoint_url, "endpoint_url")? {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;

    let mut builder = config.to_builder();
    if config.region().is_none() {
        builder.set_region(Some(Region::from_static(DEFAULT_REGION)));
    }
    // One cache for the IAM and STS clients, so credentials (and an assumed
    // role's session) are resolved once per fetch, not once per client.
    builder.set_identity_cache(Some(IdentityCache::lazy().build()));
    let config = builder.build();

    let Some(role_arn) = non_empty(&opts.assume_role, "assume_role")? else {
        return Ok(config);
    };
    let provider = AssumeRoleProvider::builder(role_arn)
        .session_name("permdrift")
        .configure(&config)
        .build()
        .await;
    let mut builder = config.to_builder();
    builder.set_credentials_provider(Some(
        aws_credential_types::provider::SharedCredentialsProvider::new(provider),
    ));
    Ok(builder.build())
}

fn non_empty<'a>(
    value: &'a Option<String>,
    option: &'static str,
) -> Result<Option<&'a str>, AwsSourceError> {
    match value.as_deref() {
        Some(v) if v.trim().is_empty() => Err(AwsSourceError::InvalidOption {
            option,
            reason: "is empty; leave it out to use the default".into(),
        }),
        other => Ok(other),
    }
}

pub(crate) fn iam_client(config: &SdkConfig, tap: &RequestTap) -> aws_sdk_iam::Client {
    let conf = aws_sdk_iam::config::Builder::from(config)
        .interceptor(tap.clone())
        .retry_classifier(BackOffOn429)
        .retry_classifier(FailFastWhenRefused)
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

pub(crate) fn sts_client(config: &SdkConfig, tap: &RequestTap) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::config::Builder::from(config)
        .interceptor(tap.clone())
        .retry_classifier(BackOffOn429)
        .retry_classifier(FailFastWhenRefused)
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

/// Counts HTTP attempts (retries included) and records the last URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestTap(Arc<TapState>);

#[derive(Debug, Default)]
struct TapState {
    attempts: AtomicU32,
    last_url: Mutex<Option<String>>,
}

impl RequestTap {
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    pub fn last_url(&self) -> Option<String> {
        self.0.last_url.lock().ok().and_then(|url| url.clone())
    }
}

impl Intercept for RequestTap {
    fn name(&self) -> &'static str {
        "permdrift::RequestTap"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        let uri = context.request().uri();
        // Query strings never matter for naming the endpoint.
        let url = uri.split('?').next().unwrap_or(uri).to_owned();
        if let Ok(mut last) = self.0.last_url.lock() {
            *last = Some(url);
        }
        Ok(())
    }
}

/// The SDK retries `Throttling` codes and 500/502/503/504, but not a bare 429
/// (a proxy or gateway in front of IAM may send one without an AWS error code).
#[derive(Debug)]
struct BackOffOn429;

impl ClassifyRetry for BackOffOn429 {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(response) if response.status().as_u16() == 429 => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "permdrift::BackOffOn429"
    }
}

/// Nothing listening at the endpoint will not change within a backoff window;
/// without this, a wrong --endpoint-url takes every attempt's backoff to report.
#[derive(Debug)]
struct FailFastWhenRefused;

impl ClassifyRetry for FailFastWhenRefused {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(connector) = err.as_connector_error() else {
            return RetryAction::NoActionIndicated;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(connector);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return RetryAction::RetryForbidden;
            }
            next = e.source();
        }
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "permdrift::FailFastWhenRefused"
    }
}
