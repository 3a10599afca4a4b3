//! The operator's configuration file (`permdrift run --config FILE`).
//!
//! YAML text comes in; a validated [`Config`] with defaults filled in comes
//! out, or an error naming the field path (`sources[1].aws.pollInterval`).
//! Nothing starts on an invalid file. The format is documented in
//! `docs/operator.md` and rendered by the Helm chart.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

pub const API_VERSION: &str = "permdrift.dev/v1alpha1";
pub const KIND: &str = "Config";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Field {
        file: String,
        path: String,
        message: String,
    },
}

/// A duration written with a unit: `500ms`, `30s`, `5m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (write e.g. 500ms, 30s, 5m, 1h)"))?;
    // Checked: a huge count of minutes or hours must be an error, not a
    // panic (debug) or a silently wrapped duration (release).
    let seconds = |per_unit: u64| {
        n.checked_mul(per_unit)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long a duration"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{text:?} has no known unit (ms, s, m, h)")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Detect,
    /// Journal the exact revert plan enforce mode would run (docs/approvals.md).
    #[serde(rename = "dry-run")]
    DryRun,
    Enforce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store")]
    pub path: PathBuf,
    /// A file (a mounted Secret) holding the journal's MAC key: raw bytes,
    /// or hex or base64 text, at least 32 bytes. See `docs/journal.md`.
    #[serde(default)]
    pub journal_key_file: Option<PathBuf>,
}

fn default_store() -> PathBuf {
    PathBuf::from("./permdrift-store")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store(),
            journal_key_file: None,
        }
    }
}

/// The plain listener: `/metrics` and the probes, read-only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub limits: ServerLimits,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            limits: ServerLimits::default(),
        }
    }
}

/// What one listener tolerates from its clients, so that slow or idle
/// connections cannot starve the probes or exhaust file descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerLimits {
    /// Open connections at once; more are closed as they arrive.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// A client must send a request's headers (and the TLS handshake) within
    /// this long, idle keep-alive connections included.
    #[serde(default = "header_timeout")]
    pub header_timeout: Dur,
    /// A whole request, body and answer included.
    #[serde(default = "request_timeout")]
    pub request_timeout: Dur,
    /// Largest request body accepted (bytes); larger ones get 413.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
}

fn max_connections() -> usize {
    4096
}
fn header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn request_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn max_body_bytes() -> usize {
    64 * 1024
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: max_connections(),
            header_timeout: header_timeout(),
            request_timeout: request_timeout(),
            max_body_bytes: max_body_bytes(),
        }
    }
}

/// The authenticated API: every request that changes what the operator holds
/// (`baseline accept`, later approvals) comes in here, over TLS, and only
/// from an authenticated and authorised caller (docs/operator.md, "API").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_api_listen")]
    pub listen: String,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub limits: ServerLimits,
}

fn default_api_listen() -> String {
    "127.0.0.1:8443".into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_api_listen(),
            tls: TlsConfig::default(),
            authentication: Authentication::default(),
            limits: ServerLimits::default(),
        }
    }
}

/// The API's certificate: files (a mounted Secret, e.g. from cert-manager),
/// or, when none are given, a self-signed one made at start whose SHA-256
/// fingerprint is logged (clients pin it with `--fingerprint`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Extra names for a generated certificate (`permdrift.permdrift.svc`);
    /// `localhost` and `127.0.0.1` are always in it.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Who may call the API.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// Bearer tokens checked with the cluster's TokenReview and authorised
    /// with SubjectAccessReview: `auto` uses them when a cluster is
    /// configured or the operator runs in one.
    #[serde(default)]
    pub token_review: TokenReview,
    /// The cluster asked (default: in-cluster, else the kubeconfig's current context).
    #[serde(default)]
    pub kubernetes: Option<K8sAccess>,
    /// ed25519 public keys whose signed requests are accepted, for installs
    /// without Kubernetes.
    #[serde(default)]
    pub keys: Vec<ApiKey>,
}

impl Default for Authentication {
    fn default() -> Self {
        Self {
            token_review: TokenReview::Auto,
            kubernetes: None,
            keys: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenReview {
    #[default]
    Auto,
    On,
    Off,
}

/// A signer of API requests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKey {
    /// The name requests are signed under and journaled with.
    pub id: String,
    /// The ed25519 public key: base64 of its 32 bytes, as `permdrift keygen` prints it.
    pub public_key: String,
}

/// How to reach a Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sAccess {
    /// Use the pod's service account.
    #[serde(default)]
    pub in_cluster: bool,
    /// A kubeconfig context (default: the current one).
    #[serde(default)]
    pub context: Option<String>,
    /// A kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "default_lease")]
    pub lease_name: String,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default = "lease_duration")]
    pub lease_duration: Dur,
    #[serde(default = "renew_deadline")]
    pub renew_deadline: Dur,
    #[serde(default = "retry_period")]
    pub retry_period: Dur,
    /// Where the Lease lives (default: in-cluster, else the current context).
    #[serde(default)]
    pub kubernetes: Option<K8sAccess>,
}

fn yes() -> bool {
    true
}
fn default_lease() -> String {
    "permdrift".into()
}
fn lease_duration() -> Dur {
    Dur(Duration::from_secs(15))
}
fn renew_deadline() -> Dur {
    Dur(Duration::from_secs(10))
}
fn retry_period() -> Dur {
    Dur(Duration::from_secs(2))
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            enabled: true,
            namespace: None,
            lease_name: default_lease(),
            identity: None,
            lease_duration: lease_duration(),
            renew_deadline: renew_deadline(),
            retry_period: retry_period(),
            kubernetes: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsAccess {
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub assume_role: Option<String>,
    #[serde(default = "poll_interval")]
    pub poll_interval: Dur,
}

fn poll_interval() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub kubernetes: Option<K8sAccess>,
    #[serde(default)]
    pub aws: Option<AwsAccess>,
    /// The review gate at admission for this cluster (docs/admission.md).
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
}

/// How a cluster's RBAC writes are judged at admission (docs/admission.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionConfig {
    #[serde(default)]
    pub mode: AdmissionMode,
    /// In `enforce` mode, unapproved widening at or above this is denied.
    #[serde(default = "admission_min_severity")]
    pub min_severity: crate::report::Severity,
    /// Requesters never refused, besides the aggregation controller and the
    /// operator's own service account.
    #[serde(default)]
    pub exempt: Vec<AdmissionExempt>,
}

fn admission_min_severity() -> crate::report::Severity {
    crate::report::Severity::High
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// Allow with an admission warning (and a journal record).
    #[default]
    Detect,
    /// Deny unapproved widening at or above `minSeverity`.
    Enforce,
}

/// One exemption: a glob over the requester's username or over one of its groups.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionExempt {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

impl SourceConfig {
    /// The platform this source reads; validation allows exactly one of
    /// `kubernetes` and `aws`.
    pub fn platform(&self) -> crate::snapshot::Platform {
        if self.kubernetes.is_some() {
            crate::snapshot::Platform::Kubernetes
        } else {
            crate::snapshot::Platform::Aws
        }
    }
}

/// A known, legitimate standing widening.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowRule {
    pub name: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Glob over a grant's subject (`ServiceAccount:argocd:*`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Glob over the changed object (`ClusterRoleBinding/argocd-*`, or an ARN).
    #[serde(default)]
    pub object: Option<String>,
    /// Only changes whose risk tags are all in this list.
    #[serde(default)]
    pub risks: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub level: LogLevel,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub leader_election: LeaderElection,
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub approvals: ApprovalConfig,
    #[serde(default)]
    pub revert: RevertConfig,
    /// Known agents and the identities they act as (docs/attribution.md),
    /// the same list as `permdrift diff --agents FILE`.
    #[serde(default)]
    pub agents: Vec<crate::attribution::agents::Agent>,
    /// Agent suggestions posted to the API and kept for attribution.
    #[serde(default)]
    pub suggestions: SuggestionsConfig,
}

/// How many agent suggestions the operator holds for attribution, for how
/// long, and how fast one caller may post them (docs/attribution.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuggestionsConfig {
    /// How long after a suggestion a change may still be attributed to it.
    #[serde(default = "suggestion_window")]
    pub window: Dur,
    /// Most suggestions held; the oldest go first.
    #[serde(default = "max_suggestions")]
    pub max_count: usize,
    /// Suggestions one caller may post per minute.
    #[serde(default = "suggestions_per_minute")]
    pub per_caller_per_minute: u32,
}

fn suggestion_window() -> Dur {
    Dur(Duration::from_secs(7 * 24 * 3600))
}
fn max_suggestions() -> usize {
    1000
}
fn suggestions_per_minute() -> u32 {
    30
}

impl Default for SuggestionsConfig {
    fn default() -> Self {
        Self {
            window: suggestion_window(),
            max_count: max_suggestions(),
            per_caller_per_minute: suggestions_per_minute(),
        }
    }
}

/// Who may approve a widening and for how long (docs/approvals.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Approvers' ed25519 public keys, for signed approvals.
    #[serde(default)]
    pub keys: Vec<ApproverKey>,
    /// Identities (globs) of agents: automation that never approves.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Validity of an approval that names none.
    #[serde(default = "default_approval_expiry")]
    pub default_expiry: Dur,
    /// The longest an approval may be valid.
    #[serde(default = "max_approval_expiry")]
    pub max_expiry: Dur,
    /// How far clocks may disagree when checking issue and expiry times.
    #[serde(default = "approval_clock_skew")]
    pub clock_skew: Dur,
    /// Distinct approvers a critical widening needs.
    #[serde(default = "critical_approvals")]
    pub critical_approvals: usize,
}

fn default_approval_expiry() -> Dur {
    Dur(Duration::from_secs(8 * 3600))
}
fn max_approval_expiry() -> Dur {
    Dur(Duration::from_secs(7 * 24 * 3600))
}
fn approval_clock_skew() -> Dur {
    Dur(Duration::from_secs(60))
}
fn critical_approvals() -> usize {
    2
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            agents: Vec::new(),
            default_expiry: default_approval_expiry(),
            max_expiry: max_approval_expiry(),
            clock_skew: approval_clock_skew(),
            critical_approvals: critical_approvals(),
        }
    }
}

/// An approver's signing key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproverKey {
    /// The name approvals are signed under and journaled with.
    pub id: String,
    /// The ed25519 public key: base64 of its 32 bytes (`permdrift keygen`).
    pub public_key: String,
    /// Who holds the key, as audit logs name them (`alice@example.com`, an
    /// IAM ARN), so an approval of one's own change is caught; default: `id`.
    #[serde(default)]
    pub identity: Option<String>,
}

/// What enforce and dry-run modes may revert, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevertConfig {
    /// Objects never reverted, as globs over `Kind/name`, `Kind/ns/name` or
    /// an ARN, on top of the built-in ones (the operator's own RBAC, `system:*`).
    #[serde(default)]
    pub protected: Vec<String>,
    /// Most reverts per source within `rateWindow`.
    #[serde(default = "revert_rate_limit")]
    pub rate_limit: usize,
    #[serde(default = "revert_rate_window")]
    pub rate_window: Dur,
    /// The same object reverted `flappingCount` times within
    /// `flappingWindow` is left alone and alerted (a GitOps tug-of-war).
    #[serde(default = "flapping_count")]
    pub flapping_count: usize,
    #[serde(default = "flapping_window")]
    pub flapping_window: Dur,
    /// Also revert widenings nobody holds today (latent grants only).
    #[serde(default)]
    pub latent: bool,
}

fn revert_rate_limit() -> usize {
    10
}
fn revert_rate_window() -> Dur {
    Dur(Duration::from_secs(60))
}
fn flapping_count() -> usize {
    3
}
fn flapping_window() -> Dur {
    Dur(Duration::from_secs(600))
}

impl Default for RevertConfig {
    fn default() -> Self {
        Self {
            protected: Vec::new(),
            rate_limit: revert_rate_limit(),
            rate_window: revert_rate_window(),
            flapping_count: flapping_count(),
            flapping_window: flapping_window(),
            latent: false,
        }
    }
}

impl Config {
    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let syntax = |message: String| ConfigError::Syntax {
            file: file.to_owned(),
            message,
        };
        let field = |path: &str, message: String| ConfigError::Field {
            file: file.to_owned(),
            path: path.to_owned(),
            message,
        };
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        if value.is_null() {
            return Err(syntax("the file is empty".into()));
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            field(
                if path == "." { "(top level)" } else { &path },
                e.inner().to_string(),
            )
        })?;
        if config.api_version != API_VERSION {
            return Err(field("apiVersion", format!("must be {API_VERSION:?}")));
        }
        if config.kind != KIND {
            return Err(field("kind", format!("must be {KIND:?}")));
        }
        if config.sources.is_empty() {
            return Err(field("sources", "at least one source is needed".into()));
        }
        let mut names = BTreeSet::new();
        for (i, s) in config.sources.iter().enumerate() {
            let valid = !s.name.is_empty()
                && s.name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if !valid {
                return Err(field(
                    &format!("sources[{i}].name"),
                    format!("{:?} must match [a-z0-9][a-z0-9.-]*", s.name),
                ));
            }
            if !names.insert(s.name.clone()) {
                return Err(field(
                    &format!("sources[{i}].name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            match (&s.kubernetes, &s.aws) {
                (Some(_), Some(_)) => {
                    return Err(field(
                        &format!("sources[{i}]"),
                        "has both `kubernetes` and `aws`; one source reads one system".into(),
                    ));
                }
                (None, None) => {
                    return Err(field(
                        &format!("sources[{i}]"),
                        "needs `kubernetes` or `aws`".into(),
                    ));
                }
                (Some(k), None)
                    if k.in_cluster && (k.context.is_some() || k.kubeconfig.is_some()) =>
                {
                    return Err(field(
                        &format!("sources[{i}].kubernetes"),
                        "`inCluster: true` excludes `context` and `kubeconfig`".into(),
                    ));
                }
                (None, Some(a)) if a.poll_interval.0 < Duration::from_secs(1) => {
                    return Err(field(
                        &format!("sources[{i}].aws.pollInterval"),
                        "must be at least 1s".into(),
                    ));
                }
                _ => {}
            }
            validate_admission(s).map_err(|(p, m)| field(&format!("sources[{i}]{p}"), m))?;
        }
        for (i, rule) in config.allow.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return Err(field(
                    &format!("allow[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if let Some(source) = &rule.source
                && !names.contains(source)
            {
                return Err(field(
                    &format!("allow[{i}].source"),
                    format!("{source:?} is not a configured source"),
                ));
            }
            if rule.subject.is_none() && rule.object.is_none() && rule.risks.is_none() {
                return Err(field(
                    &format!("allow[{i}]"),
                    "matches everything; give at least one of subject, object or risks".into(),
                ));
            }
            for (j, risk) in rule.risks.iter().flatten().enumerate() {
                let known = crate::report::Risk::ALL.iter().any(|r| r.as_str() == *risk);
                if !known {
                    return Err(field(
                        &format!("allow[{i}].risks[{j}]"),
                        format!("{risk:?} is not a risk tag"),
                    ));
                }
            }
        }
        let le = &config.leader_election;
        if le.enabled {
            if le.renew_deadline.0 >= le.lease_duration.0 {
                return Err(field(
                    "leaderElection.renewDeadline",
                    "must be shorter than leaseDuration".into(),
                ));
            }
            if le.retry_period.0 >= le.renew_deadline.0 {
                return Err(field(
                    "leaderElection.retryPeriod",
                    "must be shorter than renewDeadline".into(),
                ));
            }
        }
        if config.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(field(
                "http.listen",
                format!("{:?} is not host:port", config.http.listen),
            ));
        }
        if config.api.enabled && config.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(field(
                "api.listen",
                format!("{:?} is not host:port", config.api.listen),
            ));
        }
        for (name, limits) in [("http", &config.http.limits), ("api", &config.api.limits)] {
            if limits.max_connections == 0 {
                return Err(field(
                    &format!("{name}.limits.maxConnections"),
                    "must be at least 1".into(),
                ));
            }
            if limits.header_timeout.0.is_zero() || limits.request_timeout.0.is_zero() {
                return Err(field(
                    &format!("{name}.limits"),
                    "timeouts must be longer than 0".into(),
                ));
            }
        }
        if !config.api.enabled
            && let Some(i) = config.sources.iter().position(|s| s.admission.is_some())
        {
            return Err(field(
                &format!("sources[{i}].admission"),
                "needs api.enabled: the webhook is served on the API listener".into(),
            ));
        }
        let tls = &config.api.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(field(
                "api.tls",
                "give both certFile and keyFile, or neither (a certificate is then generated)"
                    .into(),
            ));
        }
        let mut key_ids = BTreeSet::new();
        for (i, key) in config.api.authentication.keys.iter().enumerate() {
            if key.id.trim().is_empty() || !key_ids.insert(key.id.as_str()) {
                return Err(field(
                    &format!("api.authentication.keys[{i}].id"),
                    format!("{:?} must be non-empty and unique", key.id),
                ));
            }
            if let Err(e) = crate::signature::PublicKey::parse(&key.public_key) {
                return Err(field(
                    &format!("api.authentication.keys[{i}].publicKey"),
                    e.to_string(),
                ));
            }
        }
        validate_approvals(&config.approvals, &config.revert).map_err(|(p, m)| field(&p, m))?;
        for (i, agent) in config.agents.iter().enumerate() {
            if agent.name.trim().is_empty() {
                return Err(field(
                    &format!("agents[{i}].name"),
                    "must not be empty".into(),
                ));
            }
        }
        if config.suggestions.max_count == 0 || config.suggestions.per_caller_per_minute == 0 {
            return Err(field(
                "suggestions",
                "maxCount and perCallerPerMinute must be at least 1".into(),
            ));
        }
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Syntax {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&file, &text)
    }
}

/// A source's `admission` checks: (field path below the source, message).
fn validate_admission(s: &SourceConfig) -> Result<(), (String, String)> {
    let Some(a) = &s.admission else {
        return Ok(());
    };
    if s.kubernetes.is_none() {
        return Err((
            ".admission".into(),
            "only a `kubernetes` source has an admission gate".into(),
        ));
    }
    for (j, e) in a.exempt.iter().enumerate() {
        match (&e.user, &e.group) {
            (Some(g), None) | (None, Some(g)) if !g.trim().is_empty() => {}
            _ => {
                return Err((
                    format!(".admission.exempt[{j}]"),
                    "give exactly one non-empty `user` or `group` glob".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The approval and revert settings' own checks: (field path, message).
fn validate_approvals(a: &ApprovalConfig, r: &RevertConfig) -> Result<(), (String, String)> {
    let mut ids = BTreeSet::new();
    for (i, key) in a.keys.iter().enumerate() {
        if key.id.trim().is_empty() || !ids.insert(key.id.as_str()) {
            return Err((
                format!("approvals.keys[{i}].id"),
                format!("{:?} must be non-empty and unique", key.id),
            ));
        }
        if let Err(e) = crate::signature::PublicKey::parse(&key.public_key) {
            return Err((format!("approvals.keys[{i}].publicKey"), e.to_string()));
        }
    }
    if a.default_expiry.0.is_zero() || a.default_expiry.0 > a.max_expiry.0 {
        return Err((
            "approvals.defaultExpiry".into(),
            "must be longer than 0 and at most maxExpiry".into(),
        ));
    }
    if a.critical_approvals == 0 {
        return Err((
            "approvals.criticalApprovals".into(),
            "must be at least 1".into(),
        ));
    }
    if r.rate_limit == 0 || r.rate_window.0.is_zero() {
        return Err((
            "revert.rateLimit".into(),
            "rateLimit and rateWindow must be more than 0".into(),
        ));
    }
    if r.flapping_count < 2 || r.flapping_window.0.is_zero() {
        return Err((
            "revert.flappingCount".into(),
            "flappingCount must be at least 2 and flappingWindow more than 0".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nsources:\n- name: prod\n  kubernetes: {context: prod}\n";

    #[test]
    fn admission_is_read_with_defaults_and_bad_sections_are_named() {
        let text = format!("{MINIMAL}  admission: {{mode: enforce, exempt: [{{group: ops}}]}}\n");
        let c = Config::parse("c.yaml", &text).unwrap();
        let a = c.sources[0].admission.as_ref().unwrap();
        assert_eq!(a.mode, AdmissionMode::Enforce);
        assert_eq!(a.min_severity, crate::report::Severity::High);
        assert_eq!(a.exempt[0].group.as_deref(), Some("ops"));
        let e = Config::parse(
            "c.yaml",
            &format!("{MINIMAL}  admission: {{exempt: [{{user: a, group: b}}]}}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources[0].admission.exempt[0]"), "{e}");
        let e = Config::parse(
            "c.yaml",
            &format!("{MINIMAL}  admission: {{minSeverity: severe}}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources[0].admission.minSeverity"), "{e}");
        let off = format!("{MINIMAL}  admission: {{mode: detect}}\napi: {{enabled: false}}\n");
        let e = Config::parse("c.yaml", &off).unwrap_err().to_string();
        assert!(
            e.contains("sources[0].admission") && e.contains("api.enabled"),
            "{e}"
        );
        let aws = "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nsources:\n- name: acct\n  aws: {}\n  admission: {mode: detect}\n";
        let e = Config::parse("c.yaml", aws).unwrap_err().to_string();
        assert!(e.contains("sources[0].admission"), "{e}");
    }

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse("c.yaml", MINIMAL).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.store.path, PathBuf::from("./permdrift-store"));
        assert!(c.leader_election.enabled);
        assert_eq!(c.leader_election.lease_duration.0, Duration::from_secs(15));
        assert_eq!(c.sources[0].mode, Mode::Detect);
    }

    #[test]
    fn errors_name_the_field_path() {
        let bad = |text: &str| Config::parse("c.yaml", text).unwrap_err().to_string();
        let e = bad(&format!(
            "{MINIMAL}- name: acct\n  aws: {{pollInterval: 30 seconds}}\n"
        ));
        assert!(e.starts_with("c.yaml: sources[1].aws.pollInterval:"), "{e}");
        let e = bad(&MINIMAL.replace("context: prod", "contxt: prod"));
        assert!(
            e.contains("sources[0].kubernetes") && e.contains("contxt"),
            "{e}"
        );
        let e = bad(&format!("{MINIMAL}- name: prod\n  aws: {{}}\n"));
        assert!(e.contains("sources[1].name") && e.contains("twice"), "{e}");
        let e = bad(&format!(
            "{MINIMAL}allow:\n- name: x\n  risks: [cluster-admn]\n"
        ));
        assert!(e.contains("allow[0].risks[0]"), "{e}");
        let e = bad("apiVersion: permdrift.dev/v1alpha1\nkind: Config\nsources: []\n");
        assert!(e.contains("sources: at least one"), "{e}");
        let e = bad(&format!("{MINIMAL}http: {{listen: nowhere}}\n"));
        assert!(e.contains("http.listen"), "{e}");
        let e = bad("kind: [");
        assert!(e.starts_with("c.yaml:"), "{e}");
    }

    #[test]
    fn agents_and_suggestion_limits() {
        let c = Config::parse("c.yaml", MINIMAL).unwrap();
        assert!(c.agents.is_empty());
        assert_eq!(c.suggestions.max_count, 1000);
        let c = Config::parse(
            "c.yaml",
            &format!(
                "{MINIMAL}agents:\n- name: devhelper\n  kubernetes: {{serviceAccounts: [agents/*]}}\n\
                 suggestions: {{window: 2h, maxCount: 5}}\n"
            ),
        )
        .unwrap();
        assert_eq!(c.agents[0].kubernetes.service_accounts, ["agents/*"]);
        assert_eq!(c.suggestions.window.0, Duration::from_secs(7200));
        assert_eq!(c.suggestions.max_count, 5);
        let e = Config::parse(
            "c.yaml",
            &format!("{MINIMAL}agents:\n- name: x\n  aws: {{arns: []}}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agents[0].aws") && e.contains("arns"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/permdrift.yaml");
        let c = Config::load(std::path::Path::new(path)).unwrap();
        assert_eq!(c.sources.len(), 3);
        assert_eq!(c.allow.len(), 1);
    }

    #[test]
    fn approval_and_revert_settings() {
        let c = Config::parse("c.yaml", MINIMAL).unwrap();
        assert_eq!(c.approvals.critical_approvals, 2);
        assert_eq!(c.approvals.default_expiry.0, Duration::from_secs(8 * 3600));
        assert!(!c.revert.latent);
        let bad = |text: &str| Config::parse("c.yaml", text).unwrap_err().to_string();
        let e = bad(&format!(
            "{MINIMAL}approvals:\n  keys:\n  - {{id: alice, publicKey: AAAA}}\n"
        ));
        assert!(e.contains("approvals.keys[0].publicKey"), "{e}");
        let e = bad(&format!(
            "{MINIMAL}approvals: {{defaultExpiry: 9h, maxExpiry: 8h}}\n"
        ));
        assert!(e.contains("approvals.defaultExpiry"), "{e}");
        let e = bad(&format!("{MINIMAL}revert: {{flappingCount: 1}}\n"));
        assert!(e.contains("revert.flappingCount"), "{e}");
        let e = bad(&MINIMAL.replace("kubernetes:", "mode: enfrce\n  kubernetes:"));
        assert!(e.contains("sources[0].mode"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
    }
}
