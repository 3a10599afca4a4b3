//! Label and field selectors. Query strings of list/watch/deletecollection
//! requests are parsed into a [`Filter`], which the store applies to every
//! object it would return or fan out to a watcher.

use serde_json::Value;

use crate::store::Obj;

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid field selector: {0}")]
    FieldSyntax(String),
    #[error("field label not supported: {0}")]
    FieldUnsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(s: &str) -> Result<Vec<String>, SelectorError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Label(format!("expected (values) got {s:?}")))?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if vals.iter().any(|v| !valid_value(v)) {
        return Err(SelectorError::Label(format!("invalid value in {s:?}")));
    }
    Ok(vals)
}

fn parse_requirement(r: &str) -> Result<Requirement, SelectorError> {
    let r = r.trim();
    if let Some(k) = r.strip_prefix('!') {
        let k = k.trim();
        if !valid_key(k) {
            return Err(SelectorError::Label(format!("invalid key {k:?}")));
        }
        return Ok(Requirement {
            key: k.into(),
            op: Op::NotExists,
        });
    }
    // set-based forms: "key in (a,b)", "key notin (a,b)"
    let words: Vec<&str> = r.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        for (kw, neg) in [("notin", true), ("in", false)] {
            if let Some(set) = rest.strip_prefix(kw)
                && set.trim_start().starts_with('(')
            {
                let key = words[0];
                if !valid_key(key) {
                    return Err(SelectorError::Label(format!("invalid key {key:?}")));
                }
                let vals = parse_set(set)?;
                let op = if neg { Op::NotIn(vals) } else { Op::In(vals) };
                return Ok(Requirement {
                    key: key.into(),
                    op,
                });
            }
        }
    }
    for (tok, kind) in [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
        if let Some((k, v)) = r.split_once(tok) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) {
                return Err(SelectorError::Label(format!("invalid key {k:?}")));
            }
            let op = match kind {
                0 | 1 => {
                    if !valid_value(v) {
                        return Err(SelectorError::Label(format!("invalid value {v:?}")));
                    }
                    if kind == 0 {
                        Op::NotEq(v.into())
                    } else {
                        Op::Eq(v.into())
                    }
                }
                _ => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| SelectorError::Label(format!("{v:?} is not an integer")))?;
                    if kind == 2 { Op::Gt(n) } else { Op::Lt(n) }
                }
            };
            return Ok(Requirement { key: k.into(), op });
        }
    }
    if valid_key(r) {
        return Ok(Requirement {
            key: r.into(),
            op: Op::Exists,
        });
    }
    Err(SelectorError::Label(format!("{r:?}")))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let reqs = split_top(s)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, obj: &Obj) -> bool {
        self.reqs.iter().all(|r| {
            let v = obj.label(&r.key);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// A parsed `fieldSelector`: `path=value`, `path==value`, `path!=value`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    /// `extra` lists the paths this kind supports besides metadata.name/namespace.
    pub fn parse(s: &str, extra: &[&str]) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError::FieldSyntax(part.to_string()));
            };
            let path = path.trim();
            let supported = matches!(path, "metadata.name" | "metadata.namespace")
                || extra.iter().any(|e| {
                    *e == path || (e.ends_with('*') && path.starts_with(&e[..e.len() - 1]))
                });
            if !supported {
                return Err(SelectorError::FieldUnsupported(path.to_string()));
            }
            reqs.push((
                path.split('.').map(str::to_string).collect(),
                eq,
                value.trim().to_string(),
            ));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, obj: &Obj) -> bool {
        // Paths other than name/namespace need the parsed object; parse once.
        let mut parsed: Option<Value> = None;
        self.reqs.iter().all(|(path, eq, want)| {
            let got = match (
                path.first().map(String::as_str),
                path.get(1).map(String::as_str),
                path.len(),
            ) {
                (Some("metadata"), Some("name"), 2) => obj.name.clone(),
                (Some("metadata"), Some("namespace"), 2) => obj.namespace.clone(),
                _ => {
                    let v = parsed.get_or_insert_with(|| obj.value());
                    let mut cur = Some(&*v);
                    for p in path {
                        cur = cur.and_then(|c| c.get(p));
                    }
                    match cur {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    }
                }
            };
            (got == *want) == *eq
        })
    }
}

/// Everything that narrows a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// None = all namespaces (or a cluster-scoped kind)
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Obj) -> bool {
        if let Some(ns) = &self.namespace
            && obj.namespace != *ns
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Extra field-selector paths per kind, as far as the real server offers them.
pub fn extra_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "events") => &[
            "involvedObject.*",
            "reason",
            "type",
            "source",
            "reportingComponent",
        ],
        ("events.k8s.io", "events") => &["regarding.*", "reason", "type", "reportingController"],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        _ => &[],
    }
}
