//! SARIF 2.1.0 output for code scanning (GitHub, GitLab).
//!
//! A diff [`Report`] and where each object was read (file and line, or a
//! Terraform resource address) come in; one SARIF log comes out, with one
//! result per widening change (widening or mixed): the rule is its leading
//! risk tag (`widening` when it has none), the level follows its severity,
//! and the other tags ride along as properties. Values a Terraform plan
//! knows only after apply that could grant access become `possible-widening`
//! results. Pure: no I/O. Spec: https://docs.oasis-open.org/sarif/sarif/v2.1.0/.

use crate::input::Origin;
use crate::report::{Change, Report, Risk, Severity};
use serde::Serialize;
use std::collections::BTreeMap;

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// Rule of a widening without a risk tag.
const WIDENING: &str = "widening";
/// Rule of a value that could grant access but is unknown until apply.
pub const POSSIBLE_WIDENING: &str = "possible-widening";

#[derive(Serialize)]
pub struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Run {
    tool: Tool,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: String,
    short_description: Text,
    default_configuration: Configuration,
}

#[derive(Serialize)]
struct Configuration {
    level: Level,
}

#[derive(Serialize)]
struct Text {
    text: String,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Error,
    Warning,
    Note,
}

impl Level {
    fn of(s: Severity) -> Self {
        match s {
            Severity::Critical | Severity::High => Level::Error,
            Severity::Medium => Level::Warning,
            Severity::Low | Severity::Info => Level::Note,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: String,
    rule_index: usize,
    level: Level,
    message: Text,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<Location>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    partial_fingerprints: BTreeMap<&'static str, String>,
    properties: Properties,
}

#[derive(Serialize)]
struct Properties {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<Severity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    physical_location: Option<PhysicalLocation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logical_locations: Vec<LogicalLocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogicalLocation {
    fully_qualified_name: String,
    kind: &'static str,
}

/// A file path as a SARIF URI reference (relative paths stay relative, so
/// code scanning resolves them against the repository root).
fn uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    percent_encoding::utf8_percent_encode(path, URI_ESCAPE).to_string()
}

/// Characters escaped in a URI path: controls, space and the few that would
/// end or re-mean the path (RFC 3986 section 3.3).
const URI_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn location(origin: Option<&Origin>) -> Vec<Location> {
    let Some(origin) = origin.filter(|o| !o.file.is_empty() && !o.file.starts_with('<')) else {
        return Vec::new();
    };
    vec![Location {
        physical_location: Some(PhysicalLocation {
            artifact_location: ArtifactLocation {
                uri: uri(&origin.file),
            },
            region: origin.line.map(|start_line| Region { start_line }),
        }),
        logical_locations: origin
            .addresses
            .iter()
            .map(|a| LogicalLocation {
                fully_qualified_name: a.clone(),
                kind: "resource",
            })
            .collect(),
    }]
}

fn message(c: &Change) -> String {
    let mut text = format!(
        "{} {} {} ({}, {}) in {}",
        c.object.display(),
        c.change.as_str(),
        c.direction.as_str(),
        c.severity.as_str(),
        if c.risks.is_empty() {
            "no risk tag".to_owned()
        } else {
            c.risks
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
        c.source
    );
    if let Some(w) = &c.witness {
        text.push_str(&format!(": {}", w.explanation));
    } else if c.gained_count > 0 {
        text.push_str(&format!(": {} grants gained", c.gained_count));
    }
    text
}

/// Tags that name a change best when it has several, most telling first: a
/// code-scanning alert shows one rule, and `admin` says more than the
/// `wildcard-resource` that comes with it. Other tags follow in their order.
const LEADING: [Risk; 16] = [
    Risk::ClusterAdmin,
    Risk::Admin,
    Risk::TrustPublic,
    Risk::PrivilegeEscalation,
    Risk::Escalate,
    Risk::Impersonate,
    Risk::Bind,
    Risk::NodesProxy,
    Risk::SecretsRead,
    Risk::PodExec,
    Risk::PodCreate,
    Risk::ServiceaccountTokenCreate,
    Risk::CredentialsExposure,
    Risk::Passrole,
    Risk::TrustCrossAccount,
    Risk::ResourceExposure,
];

/// The rule of a widening change.
pub fn rule_of(c: &Change) -> String {
    LEADING
        .iter()
        .find(|r| c.risks.contains(r))
        .or(c.risks.first())
        .map_or_else(|| WIDENING.to_owned(), |r| r.as_str())
}

/// An unknown value that could grant access, for a `possible-widening` result.
#[derive(Clone, Debug)]
pub struct PossibleWidening {
    pub file: String,
    pub address: String,
    pub message: String,
}

/// The SARIF log of a report.
pub fn log(
    report: &Report,
    origins: &BTreeMap<String, Origin>,
    possible: &[PossibleWidening],
) -> Log {
    let mut rules: BTreeMap<String, Severity> = BTreeMap::new();
    let mut pending = Vec::new();
    for c in report.changes.iter().filter(|c| c.direction.widens()) {
        let rule = rule_of(c);
        let level = rules.entry(rule.clone()).or_insert(c.severity);
        *level = (*level).max(c.severity);
        let display = c.object.display();
        pending.push((
            rule,
            SarifResult {
                rule_id: String::new(),
                rule_index: 0,
                level: Level::of(c.severity),
                message: Text { text: message(c) },
                locations: location(origins.get(&display)),
                partial_fingerprints: BTreeMap::from([("permdrift/v1", c.fingerprint.clone())]),
                properties: Properties {
                    tags: c.risks.iter().map(|r| r.as_str()).collect(),
                    severity: Some(c.severity),
                    source: Some(c.source.clone()),
                    object: Some(display),
                },
            },
        ));
    }
    for p in possible {
        rules
            .entry(POSSIBLE_WIDENING.to_owned())
            .or_insert(Severity::High);
        let origin = Origin {
            file: p.file.clone(),
            line: None,
            addresses: vec![p.address.clone()],
        };
        pending.push((
            POSSIBLE_WIDENING.to_owned(),
            SarifResult {
                rule_id: String::new(),
                rule_index: 0,
                level: Level::Warning,
                message: Text {
                    text: p.message.clone(),
                },
                locations: location(Some(&origin)),
                partial_fingerprints: BTreeMap::new(),
                properties: Properties {
                    tags: vec![POSSIBLE_WIDENING.to_owned()],
                    severity: None,
                    source: None,
                    object: None,
                },
            },
        ));
    }
    let index: BTreeMap<&str, usize> = rules
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let results = pending
        .into_iter()
        .map(|(rule, mut result)| {
            result.rule_index = index.get(rule.as_str()).copied().unwrap_or(0);
            result.rule_id = rule;
            result
        })
        .collect();
    let rules = rules
        .iter()
        .map(|(id, severity)| Rule {
            id: id.clone(),
            short_description: Text {
                text: match id.as_str() {
                    WIDENING => "Access widened".to_owned(),
                    POSSIBLE_WIDENING => {
                        "A value that could grant access is known only after apply".to_owned()
                    }
                    tag => format!("Access widened: {tag}"),
                },
            },
            default_configuration: Configuration {
                level: Level::of(*severity),
            },
        })
        .collect();
    Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "permdrift",
                    version: env!("CARGO_PKG_VERSION"),
                    rules,
                },
            },
            results,
        }],
    }
}

/// The SARIF log as pretty JSON text.
pub fn render(
    report: &Report,
    origins: &BTreeMap<String, Origin>,
    possible: &[PossibleWidening],
) -> String {
    let mut s = serde_json::to_string_pretty(&log(report, origins, possible)).unwrap_or_default();
    s.push('\n');
    s
}
