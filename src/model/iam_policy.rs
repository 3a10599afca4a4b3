//! IAM policy documents: decoding (URL-encoded, JSON text or plain JSON), the
//! typed statement model the grant computation reads, and the order-insensitive
//! normal form used to decide whether a document changed at all.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action` or its complement `NotAction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionSpec {
    Action(Vec<String>),
    NotAction(Vec<String>),
}

/// `Resource` or its complement `NotResource`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceSpec {
    Resource(Vec<String>),
    NotResource(Vec<String>),
}

/// A `Principal` block: `"*"` or a map of principal type to identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Principals {
    pub any: bool,
    pub by_type: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: ActionSpec,
    pub resources: Option<ResourceSpec>,
    pub principal: Option<Principals>,
    pub not_principal: Option<Principals>,
    /// The condition block in canonical JSON, compared as an opaque predicate.
    pub condition: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy document is not valid JSON after URL-decoding: {0}")]
    Encoding(String),
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

/// Longest action or resource pattern accepted, in bytes: IAM's largest
/// identity policy (a role's inline policies together) is 10,240 characters,
/// so no real pattern is longer, and glob containment costs the product of
/// two patterns' lengths.
pub const MAX_PATTERN_LEN: usize = 10_240;

/// `string_list` for Action/NotAction/Resource/NotResource: each at most [`MAX_PATTERN_LEN`].
fn pattern_list(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    let list = string_list(v, path)?;
    if let Some((i, long)) = list
        .iter()
        .enumerate()
        .find(|(_, p)| p.len() > MAX_PATTERN_LEN)
    {
        let at = if matches!(v, Value::Array(_)) {
            format!("{path}[{i}]")
        } else {
            path.to_owned()
        };
        return Err(field(
            at,
            format!(
                "pattern is {} bytes, over the {MAX_PATTERN_LEN}-byte limit (IAM's own policy size limit)",
                long.len()
            ),
        ));
    }
    Ok(list)
}

fn field(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        path: path.into(),
        message: message.into(),
    }
}

/// Turns a document as found in any input into JSON: real IAM returns
/// URL-encoded text, the CLI and some emulators plain JSON text or objects.
pub fn decode_document(raw: &Value) -> Result<Value, PolicyError> {
    match raw {
        Value::String(text) => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('{') {
                return serde_json::from_str(trimmed)
                    .map_err(|e| PolicyError::Encoding(e.to_string()));
            }
            let decoded = percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map_err(|e| PolicyError::Encoding(e.to_string()))?;
            match serde_json::from_str(&decoded) {
                Ok(v) => Ok(v),
                // Form encoding writes spaces as '+'.
                Err(first) => serde_json::from_str(&decoded.replace('+', " "))
                    .map_err(|_| PolicyError::Encoding(first.to_string())),
            }
        }
        Value::Object(_) => Ok(raw.clone()),
        other => Err(field(
            "",
            format!("expected a policy document, found {}", type_name(other)),
        )),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string_list(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    field(
                        format!("{path}[{i}]"),
                        format!("expected a string, found {}", type_name(item)),
                    )
                })
            })
            .collect(),
        other => Err(field(
            path,
            format!(
                "expected a string or a list of strings, found {}",
                type_name(other)
            ),
        )),
    }
}

fn principals(v: &Value, path: &str) -> Result<Principals, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals {
            any: true,
            by_type: BTreeMap::new(),
        }),
        Value::Object(map) => {
            let mut by_type = BTreeMap::new();
            for (kind, ids) in map {
                let mut ids = string_list(ids, &format!("{path}.{kind}"))?;
                ids.sort();
                ids.dedup();
                by_type.insert(kind.clone(), ids);
            }
            let any = by_type
                .get("AWS")
                .is_some_and(|ids| ids.iter().any(|i| i == "*"));
            Ok(Principals { any, by_type })
        }
        other => Err(field(
            path,
            format!(
                "expected \"*\" or a map of principal types, found {}",
                type_name(other)
            ),
        )),
    }
}

/// Canonical text of a condition block: operators and keys sorted, each value a sorted list.
fn canonical_condition(v: &Value) -> String {
    normalize_condition(v).to_string()
}

fn normalize_condition(v: &Value) -> Value {
    match v {
        Value::Object(ops) => Value::Object(
            ops.iter()
                .map(|(op, keys)| {
                    let keys = match keys {
                        Value::Object(k) => Value::Object(
                            k.iter()
                                .map(|(key, val)| {
                                    let mut vals = match val {
                                        Value::Array(a) => a.clone(),
                                        other => vec![other.clone()],
                                    };
                                    vals.sort_by_cached_key(|x| x.to_string());
                                    vals.dedup();
                                    (key.clone(), Value::Array(vals))
                                })
                                .collect(),
                        ),
                        other => other.clone(),
                    };
                    (op.clone(), keys)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Parses a decoded document into statements.
pub fn parse_document(doc: &Value) -> Result<PolicyDocument, PolicyError> {
    let Value::Object(map) = doc else {
        return Err(field(
            "",
            format!(
                "expected a policy document object, found {}",
                type_name(doc)
            ),
        ));
    };
    let statements = match map.get("Statement") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(_)) => vec![statement(&map["Statement"], "Statement")?],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s, &format!("Statement[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(field(
                "Statement",
                format!(
                    "expected a statement or a list of statements, found {}",
                    type_name(other)
                ),
            ));
        }
    };
    Ok(PolicyDocument { statements })
}

fn statement(v: &Value, path: &str) -> Result<Statement, PolicyError> {
    let Value::Object(s) = v else {
        return Err(field(
            path,
            format!("expected a statement object, found {}", type_name(v)),
        ));
    };
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => {
            return Err(field(
                format!("{path}.Effect"),
                format!("expected Allow or Deny, found {other:?}"),
            ));
        }
        None => return Err(field(format!("{path}.Effect"), "missing")),
    };
    let actions = match (s.get("Action"), s.get("NotAction")) {
        (Some(a), None) => ActionSpec::Action(pattern_list(a, &format!("{path}.Action"))?),
        (None, Some(a)) => ActionSpec::NotAction(pattern_list(a, &format!("{path}.NotAction"))?),
        (Some(_), Some(_)) => return Err(field(path, "has both Action and NotAction")),
        (None, None) => {
            return Err(field(
                format!("{path}.Action"),
                "missing (a statement needs Action or NotAction)",
            ));
        }
    };
    let resources = match (s.get("Resource"), s.get("NotResource")) {
        (Some(r), None) => Some(ResourceSpec::Resource(pattern_list(
            r,
            &format!("{path}.Resource"),
        )?)),
        (None, Some(r)) => Some(ResourceSpec::NotResource(pattern_list(
            r,
            &format!("{path}.NotResource"),
        )?)),
        (Some(_), Some(_)) => return Err(field(path, "has both Resource and NotResource")),
        (None, None) => None,
    };
    let principal = s
        .get("Principal")
        .map(|p| principals(p, &format!("{path}.Principal")))
        .transpose()?;
    let not_principal = s
        .get("NotPrincipal")
        .map(|p| principals(p, &format!("{path}.NotPrincipal")))
        .transpose()?;
    let condition = match s.get("Condition") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(c @ Value::Object(_)) => Some(canonical_condition(c)),
        Some(other) => {
            return Err(field(
                format!("{path}.Condition"),
                format!("expected an object, found {}", type_name(other)),
            ));
        }
    };
    Ok(Statement {
        sid: s.get("Sid").and_then(Value::as_str).map(str::to_owned),
        effect,
        actions,
        resources,
        principal,
        not_principal,
        condition,
    })
}

/// The order-insensitive form of a decoded document: one statement list,
/// single strings turned into sorted lists, conditions canonical, statements sorted.
pub fn normalize_document(doc: &Value) -> Value {
    let Value::Object(map) = doc else {
        return doc.clone();
    };
    let mut out = map.clone();
    let statements = match map.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(single @ Value::Object(_)) => vec![single.clone()],
        _ => Vec::new(),
    };
    let mut statements: Vec<Value> = statements.iter().map(normalize_statement).collect();
    statements.sort_by_cached_key(|s| s.to_string());
    statements.dedup();
    out.insert("Statement".into(), Value::Array(statements));
    Value::Object(out)
}

fn normalize_statement(s: &Value) -> Value {
    let Value::Object(map) = s else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let v = match k.as_str() {
            "Action" | "NotAction" | "Resource" | "NotResource" => {
                sorted_list(v, k.ends_with("Action"))
            }
            "Principal" | "NotPrincipal" => match v {
                Value::Object(p) => Value::Object(
                    p.iter()
                        .map(|(t, ids)| (t.clone(), sorted_list(ids, false)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "Condition" => normalize_condition(v),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn sorted_list(v: &Value, case_insensitive: bool) -> Value {
    let mut items: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    if case_insensitive {
        // Action names are case-insensitive, so `S3:getobject` is no change.
        for item in &mut items {
            if let Value::String(s) = item {
                *s = s.to_ascii_lowercase();
            }
        }
    }
    items.sort_by_cached_key(|x| x.to_string());
    items.dedup();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_all_three_encodings() {
        let plain = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]});
        let text = Value::String(plain.to_string());
        let encoded = Value::String(
            percent_encoding::utf8_percent_encode(
                &plain.to_string(),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string(),
        );
        for raw in [&plain, &text, &encoded] {
            assert_eq!(decode_document(raw).unwrap(), plain);
        }
    }

    #[test]
    fn parses_statement_shapes() {
        let doc = json!({"Statement":{"Effect":"Deny","NotAction":["iam:*"],"NotResource":"arn:aws:s3:::b/*",
            "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}});
        let d = parse_document(&doc).unwrap();
        assert_eq!(d.statements.len(), 1);
        let s = &d.statements[0];
        assert_eq!(s.effect, Effect::Deny);
        assert_eq!(s.actions, ActionSpec::NotAction(vec!["iam:*".into()]));
        assert_eq!(
            s.resources,
            Some(ResourceSpec::NotResource(vec!["arn:aws:s3:::b/*".into()]))
        );
        assert_eq!(
            s.condition.as_deref(),
            Some(r#"{"Bool":{"aws:MultiFactorAuthPresent":["false"]}}"#)
        );
    }

    #[test]
    fn errors_name_the_statement_field() {
        let doc = json!({"Statement":[{"Effect":"Allow","Action":"s3:*"},{"Effect":"Maybe","Action":"*"}]});
        assert_eq!(
            parse_document(&doc).unwrap_err().to_string(),
            "Statement[1].Effect: expected Allow or Deny, found \"Maybe\""
        );
        let doc = json!({"Statement":[{"Effect":"Allow","Action":[1]}]});
        assert!(
            parse_document(&doc)
                .unwrap_err()
                .to_string()
                .starts_with("Statement[0].Action[0]")
        );
    }

    #[test]
    fn normal_form_ignores_order_and_shape() {
        let a = json!({"Statement":[{"Effect":"Allow","Action":["s3:PutObject","s3:GetObject"],"Resource":"*"},
                                    {"Effect":"Allow","Action":"iam:GetUser","Resource":"*"}]});
        let b = json!({"Statement":[{"Effect":"Allow","Action":"IAM:GetUser","Resource":["*"]},
                                    {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":"*"}]});
        assert_eq!(normalize_document(&a), normalize_document(&b));
    }
}
