//! Reading access-control state from files, directories and standard input.
//!
//! Paths come in; one [`Snapshot`] comes out, with a report of what was read
//! and skipped. Each file is recognised by content, not name: `kubectl get -o
//! yaml|json` lists, multi-document manifests, `aws iam
//! get-account-authorization-details` output (decoded or URL-encoded
//! documents, JSON or the raw XML API response, one page or many), and
//! permdrift snapshots, and Terraform plans (`terraform show -json`, read as
//! the state before or after them, or applied to a live state). Kinds other
//! than RBAC and ServiceAccount are skipped and counted. Every error names
//! the file and the line or field.

mod documents;
pub mod managed;
mod read;
pub mod terraform;
mod walk;
mod xml;

use crate::index::aws::{AwsModel, AwsObject};
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model::aws::AwsKind;
use crate::model::k8s::{self, RbacKind};
use crate::snapshot::format as snapshot_format;
use crate::snapshot::{Snapshot, SourceSnapshot};
use documents::Document;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default cap on one input file; a 100,000-object cluster export is ~60 MB of JSON.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct InputOptions {
    /// Name of the Kubernetes source built from manifest files.
    pub kube_source: String,
    /// Name of the AWS source built from authorization details (default: the account id).
    pub aws_source: Option<String>,
    pub max_file_size: u64,
    /// Namespace for namespaced manifests that name none (as `kubectl apply -n` would).
    pub default_namespace: String,
    /// Which state of a Terraform plan to read.
    pub plan_side: terraform::PlanSide,
    /// AWS managed policies for plans, instead of the shipped set.
    pub managed_policies: Option<std::sync::Arc<managed::ManagedPolicies>>,
}

impl Default for InputOptions {
    fn default() -> Self {
        Self {
            kube_source: "kubernetes".into(),
            aws_source: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            default_namespace: "default".into(),
            plan_side: terraform::PlanSide::default(),
            managed_policies: None,
        }
    }
}

impl InputOptions {
    fn managed(&self) -> &managed::ManagedPolicies {
        match &self.managed_policies {
            Some(set) => set,
            None => managed::ManagedPolicies::embedded(),
        }
    }
}

/// Where an object was read from: a file and line, or a Terraform resource address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: Option<usize>,
    /// Terraform resource addresses that define the object.
    pub addresses: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error(
        "{path}: is {size} bytes, over the {limit}-byte limit (raise it with --max-input-size)"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error(
        "{path}: more than {limit} bytes, over the {limit}-byte limit (raise it with --max-input-size)"
    )]
    StreamTooLarge { path: String, limit: u64 },
    #[error(
        "{path}: is {size} bytes of YAML, over the {limit}-byte limit for YAML (reading YAML takes \
         some 30 times its size in memory); give it as JSON instead: `kubectl get ... -o json`, \
         `aws ... --output json`, or write snapshots with `-o FILE.json`"
    )]
    YamlTooLarge {
        path: String,
        size: usize,
        limit: usize,
    },
    #[error("{path}:{line}:{column}: not valid UTF-8 text")]
    Utf8 {
        path: String,
        line: usize,
        column: usize,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {location}: {message}")]
    Content {
        path: String,
        location: String,
        message: String,
    },
    #[error("{path}: no .yaml, .yml or .json files found")]
    NoFiles { path: String },
}

/// What was read, for progress and summary lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    pub documents: usize,
    pub objects: usize,
    /// Skipped non-RBAC kinds: `kind (apiVersion)` -> count.
    pub skipped_kinds: BTreeMap<String, usize>,
    /// Files in directories that were not YAML or JSON.
    pub skipped_files: Vec<String>,
    pub warnings: Vec<String>,
    /// Object (as `ObjectRef::display` writes it) -> where it was read.
    pub origins: BTreeMap<String, Origin>,
    /// Values of Terraform plans known only after apply.
    pub unknown: Vec<terraform::Unknown>,
}

thread_local! {
    /// One buffer for the files this thread reads: the second large snapshot
    /// of a diff reuses the memory the first one paid to map.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Returns the read buffer's memory once no more files are coming.
pub fn release_read_buffer() {
    READ_BUFFER.with_borrow_mut(|buffer| *buffer = Vec::new());
}

/// The source snapshot of one account's `GetAccountAuthorizationDetails`
/// document, named by its account id. An account that yields no entity is an
/// error, never an empty account: an empty state would read as everything
/// deleted.
pub fn account_source(
    account_id: &str,
    document: &Value,
    options: InputOptions,
) -> Result<crate::snapshot::SourceSnapshot, InputError> {
    let origin = format!("aws account {account_id}");
    let mut loader = Loader::new(options);
    loader.add_authorization_details(&origin, document)?;
    let (mut snapshot, _) = loader.finish()?;
    let mut source = snapshot
        .sources
        .pop_first()
        .map(|(_, s)| s)
        .ok_or_else(|| InputError::Content {
            path: origin,
            location: "document".into(),
            message: "no IAM entities read".into(),
        })?;
    source.name = account_id.to_owned();
    source.meta.account_id = Some(account_id.to_owned());
    Ok(source)
}

/// Accumulates state from many files into one snapshot.
pub struct Loader<'b> {
    options: InputOptions,
    /// A snapshot whose unchanged objects may be reused (the OLD side of a diff).
    base: Option<&'b Snapshot>,
    kube: K8sModel,
    /// File each object was read from, and where exactly.
    kube_origin: BTreeMap<k8s::RbacKey, (String, String)>,
    /// Namespaced objects that named no namespace.
    defaulted_namespace: usize,
    /// (earlier file, later file) -> objects the later one redefined.
    duplicates: BTreeMap<(String, String), Vec<String>>,
    iam: AwsModel,
    iam_seen: bool,
    snapshots: Vec<(String, Snapshot)>,
    pub report: LoadReport,
}

impl<'b> Loader<'b> {
    pub fn new(options: InputOptions) -> Self {
        Self::over(options, None)
    }

    /// A loader that shares the unchanged objects of `base` instead of parsing them again.
    pub fn over(options: InputOptions, base: Option<&'b Snapshot>) -> Self {
        Self {
            options,
            base,
            kube: K8sModel::new(),
            kube_origin: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            defaulted_namespace: 0,
            iam: AwsModel::new(),
            iam_seen: false,
            snapshots: Vec::new(),
            report: LoadReport::default(),
        }
    }

    /// Reads a file, a directory (recursively) or `-` for standard input.
    pub fn add_path(&mut self, path: &Path) -> Result<(), InputError> {
        let display = path.display().to_string();
        if display == "-" {
            let mut bytes = Vec::new();
            read::stream(
                std::io::stdin().lock(),
                "<stdin>",
                self.options.max_file_size,
                &mut bytes,
            )?;
            return self.add_bytes("<stdin>", &bytes);
        }
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => InputError::NotFound {
                path: display.clone(),
            },
            _ => InputError::Io {
                path: display.clone(),
                source,
            },
        })?;
        if meta.is_dir() {
            let found = walk::walk(path)?;
            self.report.skipped_files.extend(found.skipped);
            self.report.warnings.extend(found.warnings);
            if found.files.is_empty() {
                return Err(InputError::NoFiles { path: display });
            }
            for file in found.files {
                self.add_file(&file)?;
            }
            Ok(())
        } else {
            self.add_file(path)
        }
    }

    fn add_file(&mut self, path: &Path) -> Result<(), InputError> {
        let mut bytes = READ_BUFFER.with_borrow_mut(std::mem::take);
        bytes.clear();
        let added = read::file(path, self.options.max_file_size, &mut bytes)
            .and_then(|()| self.add_bytes(&path.display().to_string(), &bytes));
        READ_BUFFER.with_borrow_mut(|buffer| *buffer = bytes);
        added
    }

    /// Reads the content of one file (no I/O; `name` is used in messages).
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), InputError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let (line, column) = line_column(bytes, e.valid_up_to());
            InputError::Utf8 {
                path: name.to_owned(),
                line,
                column,
            }
        })?;
        self.report.files += 1;
        // Fast paths for the big inputs: permdrift's own JSON snapshots and
        // kubectl's JSON lists. Any doubt falls through to the general path.
        if snapshot_format::looks_like_json_snapshot(text)
            && let Some(snapshot) = snapshot_format::from_json_over(text, self.base)
        {
            self.report.documents += 1;
            self.report.objects += snapshot.object_count();
            self.snapshots.push((name.to_owned(), snapshot));
            return Ok(());
        }
        if text.trim_start().starts_with('{') && self.add_json_list(name, text)? {
            return Ok(());
        }
        let docs = documents::parse(name, text)?;
        for doc in docs {
            self.report.documents += 1;
            self.add_document(name, doc)?;
        }
        Ok(())
    }

    fn add_document(&mut self, name: &str, doc: Document) -> Result<(), InputError> {
        let Document { location, value } = doc;
        self.add_value(name, &location, value)
    }

    fn add_value(&mut self, name: &str, location: &str, value: Value) -> Result<(), InputError> {
        let content_error = |location: &str, message: String| InputError::Content {
            path: name.to_owned(),
            location: location.to_owned(),
            message,
        };
        match value {
            Value::Null => Ok(()),
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.add_value(name, &format!("{location}[{i}]"), item)?;
                }
                Ok(())
            }
            Value::Object(_) if snapshot_format::is_snapshot(&value) => {
                let snapshot = snapshot_format::from_value(value).map_err(|e| content_error(location, e.to_string()))?;
                self.report.objects += snapshot.object_count();
                self.snapshots.push((name.to_owned(), snapshot));
                Ok(())
            }
            Value::Object(_) if terraform::is_plan(&value) => {
                let state = terraform::state(&value, self.options.plan_side, self.options.managed())
                    .map_err(|e| content_error(&at(location, &e.location), e.message))?;
                self.add_plan_state(name, state)
            }
            Value::Object(_) if xml::unwrap_gaad(&value).is_some() => {
                let details = xml::unwrap_gaad(&value).cloned().unwrap_or_default();
                self.add_gaad(name, location, details)
            }
            Value::Object(ref map) if is_list(map) => {
                let Value::Object(mut map) = value else { return Ok(()) };
                let items = match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for (i, item) in items.into_iter().enumerate() {
                    self.add_kube_object(name, &at(location, &format!("items[{i}]")), item)?;
                }
                Ok(())
            }
            Value::Object(ref map) if map.contains_key("kind") || map.contains_key("apiVersion") => {
                self.add_kube_object(name, location, value)
            }
            Value::Object(_) => Err(content_error(
                location,
                "not a Kubernetes object or list, GetAccountAuthorizationDetails output or permdrift snapshot".into(),
            )),
            other => Err(content_error(
                location,
                format!("expected an object or a list, found {}", crate::model::iam_policy::type_name(&other)),
            )),
        }
    }

    fn add_kube_object(
        &mut self,
        name: &str,
        location: &str,
        mut value: Value,
    ) -> Result<(), InputError> {
        let (api_version, kind) = match k8s::kind_of(&value) {
            Some((a, k)) => (a.to_owned(), k.to_owned()),
            None => {
                return Err(InputError::Content {
                    path: name.to_owned(),
                    location: location.to_owned(),
                    message: "missing `apiVersion` or `kind`".into(),
                });
            }
        };
        let rbac = RbacKind::from_kind(&kind).filter(|k| k.accepts_api_version(&api_version));
        if rbac.is_none() {
            *self
                .report
                .skipped_kinds
                .entry(format!("{kind} ({api_version})"))
                .or_default() += 1;
            return Ok(());
        }
        if rbac.is_some_and(RbacKind::is_namespaced)
            && namespace_missing(&value)
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert(
                "namespace".into(),
                Value::String(self.options.default_namespace.clone()),
            );
            self.defaulted_namespace += 1;
        }
        let what = snapshot_format::describe_object(&value);
        let object = K8sObject::from_raw(value).map_err(|e| InputError::Content {
            path: name.to_owned(),
            location: if location.is_empty() {
                what
            } else {
                format!("{location}, {what}")
            },
            message: e.to_string(),
        })?;
        self.insert_kube(name, location, object);
        Ok(())
    }

    /// Adds a parsed object, noting where it came from and any redefinition.
    fn insert_kube(&mut self, name: &str, location: &str, object: K8sObject) {
        let key = object.parsed.key.clone();
        let here = (name.to_owned(), location.to_owned());
        if self.kube.insert(object).is_some() {
            let (first_file, first_at) = self.kube_origin.get(&key).cloned().unwrap_or_default();
            let entry = self
                .duplicates
                .entry((first_file, name.to_owned()))
                .or_default();
            let example = if entry.is_empty() {
                format!("{key} ({first_at} and {location})")
            } else {
                key.to_string()
            };
            entry.push(example);
        } else {
            self.report.objects += 1;
        }
        self.kube_origin.insert(key, here);
    }

    /// `kubectl get -o json` output read without value trees: each item is
    /// parsed straight from its text; anything unusual (another kind, a
    /// missing namespace, an error) takes the general path for that item.
    /// Returns false when the text is not such a list.
    fn add_json_list(&mut self, name: &str, text: &str) -> Result<bool, InputError> {
        #[derive(serde::Deserialize)]
        struct ListRaw<'a> {
            #[serde(default)]
            kind: Option<String>,
            #[serde(borrow, default)]
            items: Option<Vec<&'a serde_json::value::RawValue>>,
        }
        let Ok(list) = serde_json::from_str::<ListRaw<'_>>(text) else {
            return Ok(false);
        };
        let (Some(kind), Some(items)) = (list.kind, list.items) else {
            return Ok(false);
        };
        if !kind.ends_with("List") {
            return Ok(false);
        }
        self.report.documents += 1;
        for (j, item) in items.into_iter().enumerate() {
            let location = format!("items[{j}]");
            // kubectl pretty-prints items; only compact ones are kept as text.
            let fast = if item.get().contains('\n') {
                None
            } else {
                K8sObject::from_json(item.get()).ok()
            };
            match fast {
                Some(object) => self.insert_kube(name, &location, object),
                None => {
                    let value: Value =
                        serde_json::from_str(item.get()).map_err(|e| InputError::Content {
                            path: name.to_owned(),
                            location: location.clone(),
                            message: e.to_string(),
                        })?;
                    self.add_kube_object(name, &location, value)?;
                }
            }
        }
        Ok(true)
    }

    /// Adds the objects of one state of a Terraform plan.
    fn add_plan_state(
        &mut self,
        name: &str,
        state: terraform::PlanState,
    ) -> Result<(), InputError> {
        let terraform::PlanState {
            aws,
            kube,
            addresses,
            unknown,
            ..
        } = state;
        for (kind, raw) in aws {
            self.iam_seen = true;
            let who = crate::model::aws::name_of(kind, &raw);
            let (key, object) =
                AwsObject::canonical(kind, raw).map_err(|e| InputError::Content {
                    path: name.to_owned(),
                    location: format!("{} {who}", kind.as_str()),
                    message: e.to_string(),
                })?;
            if self.iam.insert(key, object).is_none() {
                self.report.objects += 1;
            }
        }
        for raw in kube {
            let what = snapshot_format::describe_object(&raw);
            self.add_kube_object(name, &what, raw)?;
        }
        for (object, addresses) in addresses {
            let origin = self.report.origins.entry(object).or_default();
            origin.file = name.to_owned();
            origin.addresses.extend(addresses);
        }
        for u in unknown.iter().filter(|u| u.possible_widening) {
            self.report.warnings.push(u.message());
        }
        let identifiers = unknown.iter().filter(|u| !u.possible_widening).count();
        if identifiers > 0 {
            self.report.warnings.push(format!(
                "{name}: {identifiers} identifier value(s) (ids, ARNs, uids) are known only after apply"
            ));
        }
        self.report.unknown.extend(unknown);
        Ok(())
    }

    /// Adds a GetAccountAuthorizationDetails-shaped document read from a live account.
    pub fn add_authorization_details(
        &mut self,
        origin: &str,
        document: &Value,
    ) -> Result<(), InputError> {
        match xml::unwrap_gaad(document) {
            Some(details) => self.add_gaad(origin, "", details.clone()),
            None => Err(InputError::Content {
                path: origin.to_owned(),
                location: "document".into(),
                message: "not GetAccountAuthorizationDetails output".into(),
            }),
        }
    }

    fn add_gaad(
        &mut self,
        name: &str,
        location: &str,
        details: serde_json::Map<String, Value>,
    ) -> Result<(), InputError> {
        self.iam_seen = true;
        for kind in AwsKind::ALL {
            let items = match details.get(kind.list_name()) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(InputError::Content {
                        path: name.to_owned(),
                        location: at(location, kind.list_name()),
                        message: "expected a list".into(),
                    });
                }
            };
            for (i, item) in items.iter().enumerate() {
                let here = at(location, &format!("{}[{i}]", kind.list_name()));
                let who = crate::model::aws::name_of(kind, item);
                let (key, object) =
                    AwsObject::canonical(kind, item.clone()).map_err(|e| InputError::Content {
                        path: name.to_owned(),
                        location: format!("{here} ({} {who})", kind.as_str()),
                        message: e.to_string(),
                    })?;
                if self.iam.insert(key.clone(), object).is_some() {
                    self.report.warnings.push(format!(
                        "{key} appears twice in the authorization details; using the later one"
                    ));
                } else {
                    self.report.objects += 1;
                }
            }
        }
        Ok(())
    }

    /// The snapshot built from everything read.
    pub fn finish(mut self) -> Result<(Snapshot, LoadReport), InputError> {
        for ((first, later), keys) in std::mem::take(&mut self.duplicates) {
            let example = keys.first().cloned().unwrap_or_default();
            let warning = if first == later {
                format!(
                    "{later} defines {} object(s) twice, e.g. {example}; using the later definitions",
                    keys.len()
                )
            } else {
                format!(
                    "{later} redefines {} object(s) from {first}, e.g. {example}; using {later}",
                    keys.len()
                )
            };
            self.report.warnings.push(warning);
        }
        if self.defaulted_namespace > 0 {
            self.report.warnings.push(format!(
                "{} namespaced object(s) named no namespace; placed in {:?} (set --default-namespace)",
                self.defaulted_namespace, self.options.default_namespace
            ));
        }
        for (key, (file, location)) in &self.kube_origin {
            let origin = self.report.origins.entry(key.to_string()).or_default();
            if origin.addresses.is_empty() {
                origin.file = file.clone();
                // Only a whole YAML document has a line of its own; an item
                // of a List is known by its index, not its line.
                origin.line = location.strip_prefix("line ").and_then(|l| l.parse().ok());
            }
        }
        let mut snapshot = Snapshot::new();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        for (file, s) in self.snapshots {
            for (source_name, source) in s.sources {
                if let Some(first) = origins.get(&source_name) {
                    return Err(InputError::Content {
                        path: file,
                        location: format!("source {source_name:?}"),
                        message: format!(
                            "also defined in {first}; snapshot sources must have distinct names"
                        ),
                    });
                }
                origins.insert(source_name.clone(), file.clone());
                snapshot.sources.insert(source_name, source);
            }
        }
        if !self.kube.is_empty() {
            let name = self.options.kube_source.clone();
            if snapshot.sources.contains_key(&name) {
                return Err(InputError::Content {
                    path: origins.get(&name).cloned().unwrap_or_default(),
                    location: format!("source {name:?}"),
                    message: "clashes with the source built from manifest files; name that one with --source-name".into(),
                });
            }
            snapshot
                .sources
                .insert(name.clone(), SourceSnapshot::kubernetes(&name, self.kube));
        }
        if self.iam_seen {
            let account = self.iam.account_id().map(str::to_owned);
            let name = self
                .options
                .aws_source
                .clone()
                .or_else(|| account.clone())
                .unwrap_or_else(|| "aws".into());
            if snapshot.sources.contains_key(&name) {
                return Err(InputError::Content {
                    path: origins.get(&name).cloned().unwrap_or_default(),
                    location: format!("source {name:?}"),
                    message: "clashes with the source built from authorization details; name that one with --aws-source-name".into(),
                });
            }
            let mut source = SourceSnapshot::aws(&name, self.iam);
            source.meta.account_id = account;
            snapshot.sources.insert(name, source);
        }
        Ok((snapshot, self.report))
    }
}

fn namespace_missing(v: &Value) -> bool {
    match v.get("metadata").and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// Joins location parts: `line 3` + `items[2]` -> `line 3, items[2]`.
fn at(base: &str, part: &str) -> String {
    match (base.is_empty(), part.is_empty()) {
        (true, _) => part.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}, {part}"),
    }
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && map
            .get("items")
            .is_some_and(|i| i.is_array() || i.is_null())
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

/// Reads paths into one snapshot (convenience for the CLI and tests).
pub fn load(
    paths: &[PathBuf],
    options: InputOptions,
) -> Result<(Snapshot, LoadReport), InputError> {
    load_over(paths, options, None)
}

/// As [`load`], sharing what is unchanged with `base` (the OLD side of a diff).
pub fn load_over(
    paths: &[PathBuf],
    options: InputOptions,
    base: Option<&Snapshot>,
) -> Result<(Snapshot, LoadReport), InputError> {
    let mut loader = Loader::over(options, base);
    for p in paths {
        loader.add_path(p)?;
    }
    loader.finish()
}

/// The Terraform plan at `path`, or `None` when the file is something else.
pub fn read_plan(path: &Path, options: &InputOptions) -> Result<Option<Value>, InputError> {
    if path.as_os_str() == "-" || !path.is_file() {
        return Ok(None);
    }
    // `terraform show -json` writes `terraform_version` among its first
    // keys; anything else is not read twice.
    let mut head = Vec::new();
    let file = std::fs::File::open(path).map_err(|source| InputError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read::stream(
        std::io::Read::take(file, 4096),
        &path.display().to_string(),
        4096,
        &mut head,
    )?;
    if !head.windows(19).any(|w| w == b"\"terraform_version\"") {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    read::file(path, options.max_file_size, &mut bytes)?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    Ok(serde_json::from_str::<Value>(text)
        .ok()
        .filter(terraform::is_plan))
}

/// `live` with a Terraform plan applied: the plan's AWS objects go to the
/// live source of its account (or the only AWS source), its RBAC objects to
/// the `--source-name` source (or the only Kubernetes source); everything
/// the plan does not touch stays as it is.
pub fn apply_plan(
    live: &Snapshot,
    name: &str,
    plan: &Value,
    options: &InputOptions,
) -> Result<(Snapshot, LoadReport), InputError> {
    let content = |e: terraform::PlanError| InputError::Content {
        path: name.to_owned(),
        location: e.location,
        message: e.message,
    };
    let account = terraform::state(plan, terraform::PlanSide::After, options.managed())
        .map_err(content)?
        .account;
    let aws_sources: Vec<&String> = live
        .sources
        .iter()
        .filter(|(_, s)| s.iam().is_some())
        .map(|(n, _)| n)
        .collect();
    let aws_name = aws_sources
        .iter()
        .find(|n| live.sources[n.as_str()].meta.account_id.as_deref() == account.as_deref())
        .or(if aws_sources.len() == 1 {
            aws_sources.first()
        } else {
            None
        })
        .map(|n| (*n).clone());
    let kube_sources: Vec<&String> = live
        .sources
        .iter()
        .filter(|(_, s)| s.kube().is_some())
        .map(|(n, _)| n)
        .collect();
    let kube_name = if kube_sources.iter().any(|n| **n == options.kube_source) {
        Some(options.kube_source.clone())
    } else if kube_sources.len() == 1 {
        kube_sources.first().map(|n| (*n).clone())
    } else {
        None
    };
    let live_aws = aws_name
        .as_ref()
        .and_then(|n| live.sources[n].iam())
        .map(|m| m.objects().map(|(k, o)| (k.kind, o.raw.clone())).collect())
        .unwrap_or_default();
    let live_kube = kube_name
        .as_ref()
        .and_then(|n| live.sources[n].kube())
        .map(|m| m.objects().map(|(_, o)| o.value()).collect())
        .unwrap_or_default();
    let state = terraform::apply(plan, live_aws, live_kube, options.managed()).map_err(content)?;
    let mut loader = Loader::new(InputOptions {
        kube_source: kube_name
            .clone()
            .unwrap_or_else(|| options.kube_source.clone()),
        aws_source: aws_name.clone().or_else(|| options.aws_source.clone()),
        ..options.clone()
    });
    loader.report.files = 1;
    loader.add_plan_state(name, state)?;
    let (applied, report) = loader.finish()?;
    let mut snapshot = live.clone();
    for (source_name, mut source) in applied.sources {
        if let Some(before) = live.sources.get(&source_name) {
            source.meta = before.meta.clone();
        }
        snapshot.sources.insert(source_name, source);
    }
    Ok((snapshot, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<(Snapshot, LoadReport), InputError> {
        let mut l = Loader::new(InputOptions::default());
        l.add_bytes("t.yaml", text.as_bytes())?;
        l.finish()
    }

    #[test]
    fn multi_document_yaml_with_other_kinds() {
        let (s, r) = load_str(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\nrules: []\n---\n",
        )
        .unwrap();
        assert_eq!(s.sources["kubernetes"].object_count(), 1);
        assert_eq!(r.skipped_kinds["ConfigMap (v1)"], 1);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e = load_str("apiVersion: v1\nkind: List\nitems:\n- a: [\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml:"), "{e}");
        let e = load_str("---\nkind: Role\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.yaml: line 1: missing `apiVersion` or `kind`");
        let e = load_str("a: 1\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.yaml: line 1: not a Kubernetes object"),
            "{e}"
        );
        let e = load_str(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: r, namespace: n}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "t.yaml: line 1, RoleBinding/n/r: missing field `roleRef`"
        );
    }

    #[test]
    fn namespaced_manifests_without_namespace_get_the_default() {
        let (s, r) =
            load_str("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n")
                .unwrap();
        let key = k8s::RbacKey::new(RbacKind::Role, Some("default"), "r");
        assert!(s.sources["kubernetes"].kube().unwrap().get(&key).is_some());
        assert!(
            r.warnings[0].contains("placed in \"default\""),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let mut l = Loader::new(InputOptions::default());
        let e = l
            .add_bytes("bad.yaml", b"a: 1\nb: \xff\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "bad.yaml:2:4: not valid UTF-8 text");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column(b"ab\ncd", 4), (2, 2));
        assert_eq!(line_column(b"ab", 0), (1, 1));
    }
}
