//! Actions: what a suggestion's code would do to the state, parsed from its
//! blocks.
//!
//! Blocks go in (shell with kubectl and aws commands, heredocs, YAML
//! manifests, IAM policy JSON); typed [`Action`]s come out, each with the
//! place it was written, plus a list of what looked like an action but was
//! not understood. Commands are split with shell-words and never run.

use super::suggestion::Block;
use crate::model::aws::AwsKind;
use crate::model::k8s::{RBAC_GROUP, RbacKind};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Where an action was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `FILE:LINE`.
    pub location: String,
    /// The command, or a manifest's first line.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub origin: Origin,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Create or replace this Kubernetes object.
    KubeApply(Value),
    /// Set (`Some`) or remove (`None`) labels.
    KubeLabel {
        kind: RbacKind,
        namespace: Option<String>,
        name: String,
        labels: Vec<(String, Option<String>)>,
    },
    /// A JSON merge patch (`kubectl patch --type merge|strategic`).
    KubePatch {
        kind: RbacKind,
        namespace: Option<String>,
        name: String,
        patch: Value,
    },
    /// `kubectl set subject`: subjects added to a binding.
    KubeAddSubjects {
        kind: RbacKind,
        namespace: Option<String>,
        name: String,
        subjects: Vec<Value>,
    },
    Aws(AwsOp),
}

#[derive(Clone, Debug, PartialEq)]
pub enum AwsOp {
    AttachPolicy {
        kind: AwsKind,
        name: String,
        policy_arn: String,
    },
    PutPolicy {
        kind: AwsKind,
        name: String,
        policy_name: String,
        document: Value,
    },
    UpdateTrust {
        role: String,
        document: Value,
    },
    CreateRole {
        role: String,
        document: Value,
    },
    CreatePolicy {
        name: String,
        document: Value,
    },
    CreatePolicyVersion {
        policy_arn: String,
        document: Value,
    },
    AddUserToGroup {
        user: String,
        group: String,
    },
    DeleteBoundary {
        kind: AwsKind,
        name: String,
    },
    /// Policy JSON on its own: granted to some principal the answer leaves open.
    BarePolicy {
        document: Value,
    },
}

/// Fence languages that mark a block as shell, whatever it contains (a
/// heredoc holds YAML).
const SHELL_LANGS: [&str; 6] = ["sh", "bash", "shell", "console", "zsh", "shell-session"];

/// A JSON document found in the answer, for `file://` references.
struct JsonDoc {
    value: Value,
    line: usize,
    preceding: String,
    used: bool,
}

struct Parser<'a> {
    file: &'a str,
    actions: Vec<Action>,
    skipped: Vec<String>,
    docs: Vec<JsonDoc>,
    /// Files written by `cat > NAME <<EOF` in the answer.
    written: BTreeMap<String, String>,
}

/// Parses every block of one suggestion.
pub fn parse_blocks(file: &str, blocks: &[Block]) -> (Vec<Action>, Vec<String>) {
    let mut p = Parser {
        file,
        actions: Vec::new(),
        skipped: Vec::new(),
        docs: Vec::new(),
        written: BTreeMap::new(),
    };
    // JSON first: a command may refer to a document shown after it.
    for b in blocks {
        let t = b.text.trim_start();
        if (b.lang == "json" || t.starts_with('{'))
            && let Ok(value) = serde_json::from_str::<Value>(&b.text)
        {
            if value.get("kind").is_some() && value.get("apiVersion").is_some() {
                p.manifest(value, b.line);
            } else {
                p.docs.push(JsonDoc {
                    value,
                    line: b.line,
                    preceding: b.preceding.clone(),
                    used: false,
                });
            }
        }
    }
    for b in blocks {
        let lang = b.lang.to_ascii_lowercase();
        let t = b.text.trim_start();
        if lang == "json" || t.starts_with('{') {
            if serde_json::from_str::<Value>(&b.text).is_err() {
                p.skip(b.line, "JSON block that does not parse");
            }
        } else if matches!(lang.as_str(), "hcl" | "terraform" | "tf")
            || b.text.contains("resource \"aws_iam_")
            || b.text.contains("resource \"kubernetes_")
        {
            p.skip(
                b.line,
                "Terraform block (Terraform resources are not parsed)",
            );
        } else if matches!(lang.as_str(), "yaml" | "yml")
            || (!SHELL_LANGS.contains(&lang.as_str())
                && b.text.lines().any(|l| l.starts_with("apiVersion:")))
        {
            p.yaml(&b.text, b.line);
        } else {
            p.shell(&b.text, b.line);
        }
    }
    let bare: Vec<(Value, usize)> = p
        .docs
        .iter()
        .filter(|d| !d.used && d.value.get("Statement").is_some())
        .map(|d| (d.value.clone(), d.line))
        .collect();
    for (document, line) in bare {
        let op = if is_trust(&document) {
            AwsOp::UpdateTrust {
                role: "<role>".into(),
                document,
            }
        } else {
            AwsOp::BarePolicy { document }
        };
        p.push(line, "IAM policy document".into(), Op::Aws(op));
    }
    (p.actions, p.skipped)
}

fn is_trust(doc: &Value) -> bool {
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => Vec::new(),
    };
    statements.iter().any(|s| s.get("Principal").is_some())
}

/// Flags and positionals of one command line.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

/// Flags that take no value.
const BOOLEAN_FLAGS: &[&str] = &[
    "set-as-default",
    "no-set-as-default",
    "overwrite",
    "all",
    "dry-run",
    "no-cli-pager",
    "all-namespaces",
    "A",
];

impl Args {
    fn parse(tokens: &[String]) -> Self {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            let name = t
                .strip_prefix("--")
                .or_else(|| t.strip_prefix('-').filter(|s| !s.is_empty()));
            match name {
                Some(n) if n.contains('=') => {
                    let (k, v) = n.split_once('=').unwrap_or((n, ""));
                    flags.push((k.to_owned(), v.to_owned()));
                }
                Some(n) if BOOLEAN_FLAGS.contains(&n) || i + 1 >= tokens.len() => {
                    flags.push((n.to_owned(), "true".into()));
                }
                Some(n) => {
                    flags.push((n.to_owned(), tokens[i + 1].clone()));
                    i += 1;
                }
                None => positional.push(t.clone()),
            }
            i += 1;
        }
        Args { positional, flags }
    }

    fn get(&self, names: &[&str]) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable flag, commas split.
    fn all(&self, names: &[&str]) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(k, _)| k == name)
    }
}

fn kube_kind(word: &str) -> Option<RbacKind> {
    Some(match word.to_ascii_lowercase().as_str() {
        "clusterrole" | "clusterroles" => RbacKind::ClusterRole,
        "clusterrolebinding" | "clusterrolebindings" => RbacKind::ClusterRoleBinding,
        "role" | "roles" => RbacKind::Role,
        "rolebinding" | "rolebindings" => RbacKind::RoleBinding,
        "serviceaccount" | "serviceaccounts" | "sa" => RbacKind::ServiceAccount,
        _ => return None,
    })
}

/// `KIND NAME` or `KIND/NAME` from the positionals after the verb.
fn kind_and_name(pos: &[String]) -> Option<(RbacKind, String)> {
    let first = pos.first()?;
    if let Some((k, n)) = first.split_once('/') {
        return Some((kube_kind(k)?, n.to_owned()));
    }
    Some((kube_kind(first)?, pos.get(1)?.clone()))
}

/// RFC 7386 merge patch: ten lines, so no crate for it.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    merge_patch(target, patch)
}

/// A subject object from `--user`, `--group`, `--serviceaccount NS:NAME`.
fn subjects(args: &Args) -> Vec<Value> {
    let mut out = Vec::new();
    for u in args.all(&["user"]) {
        out.push(json!({"kind": "User", "apiGroup": RBAC_GROUP, "name": u}));
    }
    for g in args.all(&["group"]) {
        out.push(json!({"kind": "Group", "apiGroup": RBAC_GROUP, "name": g}));
    }
    for sa in args.all(&["serviceaccount"]) {
        let (ns, name) = sa.split_once(':').unwrap_or(("<namespace>", &sa));
        out.push(json!({"kind": "ServiceAccount", "namespace": ns, "name": name}));
    }
    out
}

impl Parser<'_> {
    fn push(&mut self, line: usize, text: String, op: Op) {
        self.actions.push(Action {
            origin: Origin {
                location: format!("{}:{line}", self.file),
                text,
            },
            op,
        });
    }

    fn skip(&mut self, line: usize, why: &str) {
        self.skipped.push(format!("{}:{line}: {why}", self.file));
    }

    fn manifest(&mut self, value: Value, line: usize) {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "List" {
            if let Some(items) = value.get("items").and_then(Value::as_array) {
                for item in items.clone() {
                    self.manifest(item, line);
                }
            }
            return;
        }
        if RbacKind::from_kind(kind).is_none() {
            // Deployments and the like grant nothing; not an error.
            return;
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let text = format!("{kind} {name}");
        self.push(line, text, Op::KubeApply(value));
    }

    fn yaml(&mut self, text: &str, line: usize) {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            match <Value as serde::Deserialize>::deserialize(doc) {
                Ok(Value::Null) => {}
                Ok(v) if v.get("kind").is_some() => self.manifest(v, line),
                Ok(_) => {}
                Err(e) => {
                    let at = e.location().map_or(line, |l| line + l.line() - 1);
                    self.skip(at, &format!("YAML document {} does not parse: {e}", i + 1));
                    return;
                }
            }
        }
    }

    fn shell(&mut self, text: &str, first_line: usize) {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let start = i;
            let mut logical = String::new();
            loop {
                let l = lines[i].trim_end();
                match l.strip_suffix('\\') {
                    Some(head) if i + 1 < lines.len() => {
                        logical.push_str(head);
                        logical.push(' ');
                        i += 1;
                    }
                    _ => {
                        logical.push_str(l);
                        break;
                    }
                }
            }
            i += 1;
            let trimmed = logical.trim();
            let command = trimmed
                .strip_prefix("$ ")
                .or_else(|| {
                    trimmed
                        .strip_prefix("# ")
                        .filter(|c| c.starts_with("kubectl "))
                })
                .unwrap_or(trimmed)
                .trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            // A heredoc's body is the lines up to its delimiter.
            let mut heredoc = None;
            if let Some(pos) = command.find("<<") {
                let delim: String = command[pos + 2..]
                    .trim_start_matches('-')
                    .trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !delim.is_empty() {
                    let mut body = String::new();
                    while i < lines.len() && lines[i].trim() != delim {
                        body.push_str(lines[i]);
                        body.push('\n');
                        i += 1;
                    }
                    i += 1;
                    heredoc = Some((body, first_line + start + 1));
                }
            }
            self.command(command, first_line + start, heredoc);
        }
    }

    fn command(&mut self, command: &str, line: usize, heredoc: Option<(String, usize)>) {
        let looks_like_action = command.starts_with("kubectl ") || command.starts_with("aws ");
        let tokens = match shell_words::split(command) {
            Ok(t) => t,
            Err(e) => {
                if looks_like_action {
                    self.skip(line, &format!("command does not split ({e}): {command}"));
                }
                return;
            }
        };
        let mut segment = Vec::new();
        let mut segments = Vec::new();
        for t in tokens {
            if matches!(t.as_str(), "|" | "&&" | "||" | ";") {
                segments.push(std::mem::take(&mut segment));
            } else {
                segment.push(t);
            }
        }
        segments.push(segment);
        for seg in segments {
            // `sudo`, `env X=1`: what follows is the command.
            let start = seg
                .iter()
                .position(|t| t == "kubectl" || t == "aws" || t == "cat")
                .unwrap_or(seg.len());
            let seg = &seg[start..];
            match seg.first().map(String::as_str) {
                Some("kubectl") => self.kubectl(&seg[1..], command, line, heredoc.as_ref()),
                Some("aws") => self.aws(&seg[1..], command, line),
                Some("cat") => {
                    if let (Some(pos), Some((body, _))) =
                        (seg.iter().position(|t| t == ">"), heredoc.as_ref())
                        && let Some(name) = seg.get(pos + 1)
                    {
                        self.written.insert(basename(name), body.clone());
                    }
                }
                _ => {}
            }
        }
    }

    fn kubectl(
        &mut self,
        args: &[String],
        text: &str,
        line: usize,
        heredoc: Option<&(String, usize)>,
    ) {
        let a = Args::parse(args);
        let ns = a.get(&["n", "namespace"]).map(str::to_owned);
        let verb = a.positional.first().map(String::as_str).unwrap_or("");
        let rest = a.positional.get(1..).unwrap_or(&[]);
        match verb {
            "create" => self.kubectl_create(&a, rest, ns, text, line, heredoc),
            "apply" | "replace" => match (a.get(&["f", "filename"]), heredoc) {
                (Some("-"), Some((body, body_line))) => {
                    let body = body.clone();
                    self.yaml(&body, *body_line)
                }
                // Piped from a `create --dry-run` (the create is the action), or
                // a file shown as a YAML block (parsed as one).
                (Some(f), _) if f.starts_with("http://") || f.starts_with("https://") => {
                    self.skip(line, &format!("remote manifest not fetched: {f}"))
                }
                _ => {}
            },
            "label" => {
                let Some((kind, name)) = kind_and_name(rest) else {
                    return self.skip(line, &format!("kubectl label of an unknown object: {text}"));
                };
                let skip = if rest.first().is_some_and(|r| r.contains('/')) {
                    1
                } else {
                    2
                };
                let labels = rest[skip.min(rest.len())..]
                    .iter()
                    .filter_map(|l| match l.split_once('=') {
                        Some((k, v)) => Some((k.to_owned(), Some(v.to_owned()))),
                        None => l.strip_suffix('-').map(|k| (k.to_owned(), None)),
                    })
                    .collect();
                self.push(
                    line,
                    text.to_owned(),
                    Op::KubeLabel {
                        kind,
                        namespace: ns,
                        name,
                        labels,
                    },
                );
            }
            "patch" => {
                let Some((kind, name)) = kind_and_name(rest) else {
                    return self.skip(line, &format!("kubectl patch of an unknown object: {text}"));
                };
                let ty = a.get(&["type"]).unwrap_or("strategic");
                let patch = a.get(&["p", "patch"]).map(serde_json::from_str::<Value>);
                match (ty, patch) {
                    ("merge" | "strategic", Some(Ok(patch))) => self.push(
                        line,
                        text.to_owned(),
                        Op::KubePatch {
                            kind,
                            namespace: ns,
                            name,
                            patch,
                        },
                    ),
                    ("json", _) => self.skip(line, &format!("JSON patches are not parsed: {text}")),
                    _ => self.skip(
                        line,
                        &format!("kubectl patch without a readable -p: {text}"),
                    ),
                }
            }
            "set" if rest.first().map(String::as_str) == Some("subject") => {
                let Some((kind, name)) = kind_and_name(&rest[1..]) else {
                    return self.skip(
                        line,
                        &format!("kubectl set subject of an unknown object: {text}"),
                    );
                };
                let subjects = subjects(&a);
                self.push(
                    line,
                    text.to_owned(),
                    Op::KubeAddSubjects {
                        kind,
                        namespace: ns,
                        name,
                        subjects,
                    },
                );
            }
            _ => {}
        }
    }

    fn kubectl_create(
        &mut self,
        a: &Args,
        rest: &[String],
        ns: Option<String>,
        text: &str,
        line: usize,
        heredoc: Option<&(String, usize)>,
    ) {
        let (Some(kind_word), Some(name)) = (rest.first(), rest.get(1)) else {
            if let (Some("-"), Some((body, body_line))) = (a.get(&["f", "filename"]), heredoc) {
                let body = body.clone();
                self.yaml(&body, *body_line);
            }
            return;
        };
        let Some(kind) = kube_kind(kind_word) else {
            return;
        };
        let mut metadata = json!({"name": name});
        if kind.is_namespaced() {
            metadata["namespace"] = json!(ns.clone().unwrap_or_else(|| "<namespace>".into()));
        }
        let api_version = if kind == RbacKind::ServiceAccount {
            "v1".to_owned()
        } else {
            format!("{RBAC_GROUP}/v1")
        };
        let mut obj =
            json!({"apiVersion": api_version, "kind": kind.as_str(), "metadata": metadata});
        match kind {
            RbacKind::ClusterRole | RbacKind::Role => {
                let verbs = a.all(&["verb"]);
                let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in a.all(&["resource"]) {
                    // `deployments.apps` is resource `deployments` in group `apps`;
                    // a subresource stays with its resource (`pods/exec`).
                    let (res, sub) = match r.split_once('/') {
                        Some((res, sub)) => (res.to_owned(), Some(sub.to_owned())),
                        None => (r.clone(), None),
                    };
                    let (res, group) = match res.split_once('.') {
                        Some((res, group)) => (res.to_owned(), group.to_owned()),
                        None => (res, String::new()),
                    };
                    let full = match sub {
                        Some(sub) => format!("{res}/{sub}"),
                        None => res,
                    };
                    by_group.entry(group).or_default().push(full);
                }
                let names = a.all(&["resource-name"]);
                let mut rules: Vec<Value> = by_group
                    .into_iter()
                    .map(|(g, rs)| {
                        let mut rule = json!({"apiGroups": [g], "resources": rs, "verbs": verbs});
                        if !names.is_empty() {
                            rule["resourceNames"] = json!(names);
                        }
                        rule
                    })
                    .collect();
                let urls = a.all(&["non-resource-url"]);
                if !urls.is_empty() {
                    rules.push(json!({"nonResourceURLs": urls, "verbs": verbs}));
                }
                if rules.is_empty() && !a.has("aggregation-rule") {
                    return self.skip(
                        line,
                        &format!("kubectl create {kind_word} without --resource: {text}"),
                    );
                }
                obj["rules"] = json!(rules);
                if let Some(rule) = a.get(&["aggregation-rule"]) {
                    let labels: Map<String, Value> = rule
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), json!(v)))
                        .collect();
                    obj["aggregationRule"] =
                        json!({"clusterRoleSelectors": [{"matchLabels": labels}]});
                }
            }
            RbacKind::ClusterRoleBinding | RbacKind::RoleBinding => {
                let (role_kind, role) = match (a.get(&["clusterrole"]), a.get(&["role"])) {
                    (Some(r), _) => ("ClusterRole", r),
                    (None, Some(r)) => ("Role", r),
                    (None, None) => {
                        return self.skip(
                            line,
                            &format!("binding without --clusterrole or --role: {text}"),
                        );
                    }
                };
                obj["roleRef"] = json!({"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role});
                obj["subjects"] = json!(subjects(a));
            }
            RbacKind::ServiceAccount => {}
        }
        self.push(line, text.to_owned(), Op::KubeApply(obj));
    }

    /// A policy document: inline JSON, or `file://NAME` found in the answer.
    fn document(&mut self, value: &str, line: usize) -> Option<Value> {
        let Some(path) = value.strip_prefix("file://") else {
            return serde_json::from_str(value).ok();
        };
        let name = basename(path);
        if let Some(text) = self.written.get(&name) {
            return serde_json::from_str(text).ok();
        }
        let named = self
            .docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.preceding.contains(&name))
            .min_by_key(|(_, d)| d.line.abs_diff(line))
            .map(|(i, _)| i);
        let only = (self.docs.len() == 1).then_some(0);
        let i = named.or(only)?;
        self.docs[i].used = true;
        Some(self.docs[i].value.clone())
    }

    fn aws(&mut self, args: &[String], text: &str, line: usize) {
        let a = Args::parse(args);
        if a.positional.first().map(String::as_str) != Some("iam") {
            return;
        }
        let sub = a.positional.get(1).map(String::as_str).unwrap_or("");
        let principal = |a: &Args| -> Option<(AwsKind, String)> {
            if let Some(n) = a.get(&["role-name"]) {
                Some((AwsKind::Role, n.to_owned()))
            } else if let Some(n) = a.get(&["user-name"]) {
                Some((AwsKind::User, n.to_owned()))
            } else {
                a.get(&["group-name"])
                    .map(|n| (AwsKind::Group, n.to_owned()))
            }
        };
        let op = match sub {
            "attach-role-policy" | "attach-user-policy" | "attach-group-policy" => {
                match (principal(&a), a.get(&["policy-arn"])) {
                    (Some((kind, name)), Some(arn)) => Some(AwsOp::AttachPolicy {
                        kind,
                        name,
                        policy_arn: arn.to_owned(),
                    }),
                    _ => None,
                }
            }
            "put-role-policy" | "put-user-policy" | "put-group-policy" => {
                let doc = a.get(&["policy-document"]).map(str::to_owned);
                let doc = doc.and_then(|d| self.document(&d, line));
                match (principal(&a), a.get(&["policy-name"]), doc) {
                    (Some((kind, name)), Some(p), Some(document)) => Some(AwsOp::PutPolicy {
                        kind,
                        name,
                        policy_name: p.to_owned(),
                        document,
                    }),
                    _ => None,
                }
            }
            "update-assume-role-policy" | "create-role" => {
                let flag = if sub == "create-role" {
                    "assume-role-policy-document"
                } else {
                    "policy-document"
                };
                let doc = a.get(&[flag]).map(str::to_owned);
                let doc = doc.and_then(|d| self.document(&d, line));
                match (a.get(&["role-name"]), doc) {
                    (Some(r), Some(document)) if sub == "create-role" => Some(AwsOp::CreateRole {
                        role: r.to_owned(),
                        document,
                    }),
                    (Some(r), Some(document)) => Some(AwsOp::UpdateTrust {
                        role: r.to_owned(),
                        document,
                    }),
                    _ => None,
                }
            }
            "create-policy" => {
                let doc = a.get(&["policy-document"]).map(str::to_owned);
                let doc = doc.and_then(|d| self.document(&d, line));
                match (a.get(&["policy-name"]), doc) {
                    (Some(n), Some(document)) => Some(AwsOp::CreatePolicy {
                        name: n.to_owned(),
                        document,
                    }),
                    _ => None,
                }
            }
            "create-policy-version" => {
                let doc = a.get(&["policy-document"]).map(str::to_owned);
                let doc = doc.and_then(|d| self.document(&d, line));
                match (a.get(&["policy-arn"]), doc) {
                    // Without --set-as-default the new version grants nothing.
                    (Some(arn), Some(document)) if a.has("set-as-default") => {
                        Some(AwsOp::CreatePolicyVersion {
                            policy_arn: arn.to_owned(),
                            document,
                        })
                    }
                    (Some(_), Some(_)) => return,
                    _ => None,
                }
            }
            "add-user-to-group" => match (a.get(&["user-name"]), a.get(&["group-name"])) {
                (Some(u), Some(g)) => Some(AwsOp::AddUserToGroup {
                    user: u.to_owned(),
                    group: g.to_owned(),
                }),
                _ => None,
            },
            "delete-role-permissions-boundary" | "delete-user-permissions-boundary" => {
                principal(&a).map(|(kind, name)| AwsOp::DeleteBoundary { kind, name })
            }
            _ => return,
        };
        match op {
            Some(op) => self.push(line, text.to_owned(), Op::Aws(op)),
            None => self.skip(
                line,
                &format!("aws iam {sub} with missing or unreadable arguments: {text}"),
            ),
        }
    }
}

fn basename(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lang: &str, text: &str, preceding: &str) -> Block {
        Block {
            lang: lang.into(),
            text: text.into(),
            line: 10,
            preceding: preceding.into(),
            inline: false,
        }
    }

    #[test]
    fn kubectl_create_commands_become_manifests() {
        let (actions, skipped) = parse_blocks(
            "f.md",
            &[block(
                "sh",
                "kubectl create clusterrole r --verb=get,list --resource=secrets,deployments.apps\n\
                 kubectl create rolebinding b -n <ns> --clusterrole=r --serviceaccount=<ns>:ci \\\n  --user alice\n",
                "",
            )],
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(actions.len(), 2);
        let Op::KubeApply(role) = &actions[0].op else {
            panic!()
        };
        assert_eq!(role["rules"][0]["resources"], json!(["secrets"]));
        assert_eq!(role["rules"][1]["apiGroups"], json!(["apps"]));
        let Op::KubeApply(rb) = &actions[1].op else {
            panic!()
        };
        assert_eq!(rb["metadata"]["namespace"], json!("<ns>"));
        assert_eq!(rb["subjects"].as_array().unwrap().len(), 2);
        assert_eq!(actions[1].origin.location, "f.md:11");
    }

    #[test]
    fn file_references_find_the_json_block_and_heredocs_are_read() {
        let (actions, skipped) = parse_blocks(
            "f.md",
            &[
                block(
                    "sh",
                    "aws iam update-assume-role-policy --role-name r --policy-document file://trust.json",
                    "",
                ),
                block(
                    "json",
                    r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#,
                    "with trust.json:",
                ),
                block(
                    "bash",
                    "kubectl apply -f - <<'EOF'\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nEOF\n",
                    "",
                ),
            ],
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[0].op, Op::Aws(AwsOp::UpdateTrust { role, .. }) if role == "r"));
        assert!(matches!(&actions[1].op, Op::KubeApply(v) if v["kind"] == "ServiceAccount"));
    }

    #[test]
    fn what_is_not_understood_is_reported() {
        let (actions, skipped) = parse_blocks(
            "f.md",
            &[
                block(
                    "sh",
                    "kubectl patch clusterrole x --type json -p '[]'\naws iam put-role-policy --role-name r\n",
                    "",
                ),
                block("hcl", "resource \"aws_iam_role\" \"x\" {}", ""),
            ],
        );
        assert!(actions.is_empty());
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].starts_with("f.md:10: JSON patches"));
    }
}
