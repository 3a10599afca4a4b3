//! Diffing two snapshots into a classified [`Report`].
//!
//! Sources are paired (by name, or by platform when each side has exactly
//! one); within a pair, objects whose normal forms differ are the changes.
//! Each change gets its permission effect (`kube`, `iam`), its
//! classification, a unified text diff of the object and a fingerprint.
//! Objects that may merely be unreadable in an incomplete snapshot are never
//! reported as removed or added unless asked.

pub mod aws;
pub mod k8s;
pub mod text;

use crate::classify;
use crate::grants::aws_perm::{ActionSet, AwsCompiler};
use crate::grants::catalog::Catalog;
use crate::grants::k8s_perm::{ByAddressFirst, Perm};
use crate::index::aws::AwsModel;
use crate::index::k8s::{K8sModel, K8sObject};
use crate::model;
use crate::model::aws::{AwsKey, AwsKind};
use crate::model::iam_policy::Effect;
use crate::model::k8s::RbacKey;
use crate::model::k8s::Subject;
use crate::report::{
    Change, ChangeKind, Direction, Grant, Incomplete, ObjectRef, Report, SCHEMA, SubjectDelta,
};
use crate::snapshot::{MissingPart, Platform, Snapshot, SourceData, SourceSnapshot};
use aws::{AwsDiffer, AwsGrant};
use k8s::{K8sDiffer, K8sGrant};
use rustc_hash::FxHashMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// List concrete catalog actions instead of the policy's patterns.
    pub expand_actions: bool,
    /// Report objects absent from an incomplete side as removed or added.
    pub missing_as_removed: bool,
    /// Most grants listed per change and per subject (0: all); counts are always exact.
    pub max_grants: usize,
    /// List each subject's grants (not just their counts).
    pub subject_grants: bool,
}

/// Enough to review; a change reaching a hundred thousand subjects lists the first ones.
pub const DEFAULT_MAX_GRANTS: usize = 1000;

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            expand_actions: false,
            missing_as_removed: false,
            max_grants: DEFAULT_MAX_GRANTS,
            subject_grants: true,
        }
    }
}

/// What the per-platform diffs produce.
#[derive(Default)]
struct Sink {
    changes: Vec<Change>,
    subjects: Vec<SubjectDelta>,
    incomplete: Vec<Incomplete>,
    warnings: Vec<String>,
}

/// The first `cap` of a list (all when `cap` is 0) and its full length.
fn capped<T>(items: impl Iterator<Item = T>, cap: usize) -> (Vec<T>, usize) {
    let mut kept = Vec::new();
    let mut total = 0;
    for item in items {
        if cap == 0 || total < cap {
            kept.push(item);
        }
        total += 1;
    }
    (kept, total)
}

/// Diffs two snapshots. Pure: everything it needs is passed in.
pub fn diff(old: &Snapshot, new: &Snapshot, catalog: &Catalog, options: &DiffOptions) -> Report {
    let mut sink = Sink::default();
    for (o, n) in pair_sources(old, new, &mut sink.incomplete, &mut sink.warnings) {
        match (&o.data, &n.data) {
            (SourceData::Kubernetes(om), SourceData::Kubernetes(nm)) => {
                diff_kube(o, n, om, nm, options, &mut sink)
            }
            (SourceData::Aws(om), SourceData::Aws(nm)) => {
                diff_iam(o, n, om, nm, catalog, options, &mut sink)
            }
            _ => sink.incomplete.push(Incomplete {
                source: n.name.clone(),
                reason: format!(
                    "platform changed from {} to {}; not compared",
                    o.platform(),
                    n.platform()
                ),
                objects_not_compared: o.object_count() + n.object_count(),
            }),
        }
    }
    let mut changes = sink.changes;
    changes.sort_by(compare_changes);
    let mut subjects = sink.subjects;
    subjects.sort_by(|a, b| {
        (&a.source, a.platform, &a.subject).cmp(&(&b.source, b.platform, &b.subject))
    });
    Report {
        schema: SCHEMA.into(),
        summary: Report::summarize(&changes),
        changes,
        subjects,
        incomplete: sink.incomplete,
        warnings: sink.warnings,
    }
}

/// Most severe first, then by source and object, so output is stable.
fn compare_changes(a: &Change, b: &Change) -> Ordering {
    b.severity
        .cmp(&a.severity)
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.object.kind.cmp(&b.object.kind))
        .then_with(|| a.object.namespace.cmp(&b.object.namespace))
        .then_with(|| a.object.name.cmp(&b.object.name))
        .then_with(|| a.object.arn.cmp(&b.object.arn))
}

fn pair_sources<'a>(
    old: &'a Snapshot,
    new: &'a Snapshot,
    incomplete: &mut Vec<Incomplete>,
    warnings: &mut Vec<String>,
) -> Vec<(&'a SourceSnapshot, &'a SourceSnapshot)> {
    let mut pairs = Vec::new();
    let mut old_only: Vec<&SourceSnapshot> = Vec::new();
    let new_only: Vec<&SourceSnapshot> = new
        .sources
        .values()
        .filter(|s| !old.sources.contains_key(&s.name))
        .collect();
    for (name, o) in &old.sources {
        match new.sources.get(name) {
            Some(n) => pairs.push((o, n)),
            None => old_only.push(o),
        }
    }
    // A lone unmatched source per platform on each side is the same source renamed
    // (a cluster snapshot diffed against a manifest directory, say).
    for platform in [Platform::Kubernetes, Platform::Aws] {
        let os: Vec<usize> = (0..old_only.len())
            .filter(|i| old_only[*i].platform() == platform)
            .collect();
        let ns: Vec<usize> = (0..new_only.len())
            .filter(|i| new_only[*i].platform() == platform)
            .collect();
        if let ([oi], [ni]) = (os.as_slice(), ns.as_slice()) {
            let (o, n) = (old_only[*oi], new_only[*ni]);
            warnings.push(format!(
                "comparing source {:?} in OLD with source {:?} in NEW",
                o.name, n.name
            ));
            pairs.push((o, n));
        }
    }
    let paired: BTreeSet<(&str, &str)> = pairs
        .iter()
        .map(|(o, n)| (o.name.as_str(), n.name.as_str()))
        .collect();
    for o in old_only {
        if !paired.iter().any(|(on, _)| *on == o.name) {
            incomplete.push(Incomplete {
                source: o.name.clone(),
                reason: "only in OLD; its objects are not treated as removed".into(),
                objects_not_compared: o.object_count(),
            });
        }
    }
    for n in new_only {
        if !paired.iter().any(|(_, nn)| *nn == n.name) {
            incomplete.push(Incomplete {
                source: n.name.clone(),
                reason: "only in NEW; its objects are not treated as added".into(),
                objects_not_compared: n.object_count(),
            });
        }
    }
    pairs
}

fn kube_missing(missing: &[MissingPart], key: &RbacKey) -> bool {
    missing.iter().any(|m| {
        (m.resource == "*" || m.resource == key.kind.resource())
            && (m.namespace.is_none() || m.namespace == key.namespace)
    })
}

fn missing_reason(missing: &[MissingPart]) -> String {
    missing
        .iter()
        .map(|m| match &m.namespace {
            Some(ns) => format!("{} in {ns}: {}", m.resource, m.reason),
            None => format!("{}: {}", m.resource, m.reason),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Walks two sorted maps together, yielding keys with their presence on each side.
fn merge_keys<'a, K: Ord + 'a, V: ?Sized + 'a>(
    old: impl Iterator<Item = (&'a K, &'a V)>,
    new: impl Iterator<Item = (&'a K, &'a V)>,
) -> Vec<(&'a K, Option<&'a V>, Option<&'a V>)> {
    // Keys of an object both sides share are one key, equal without a compare.
    let order = |a: &K, b: &K| {
        if std::ptr::eq(a, b) {
            Ordering::Equal
        } else {
            a.cmp(b)
        }
    };
    let mut out = Vec::new();
    let mut old = old.peekable();
    let mut new = new.peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => {
                if let Some((k, v)) = old.next() {
                    out.push((k, Some(v), None));
                }
            }
            (None, Some(_)) => {
                if let Some((k, v)) = new.next() {
                    out.push((k, None, Some(v)));
                }
            }
            (Some((ok, _)), Some((nk, _))) => match order(ok, nk) {
                Ordering::Less => {
                    if let Some((k, v)) = old.next() {
                        out.push((k, Some(v), None));
                    }
                }
                Ordering::Greater => {
                    if let Some((k, v)) = new.next() {
                        out.push((k, None, Some(v)));
                    }
                }
                Ordering::Equal => {
                    if let (Some((k, ov)), Some((_, nv))) = (old.next(), new.next()) {
                        out.push((k, Some(ov), Some(nv)));
                    }
                }
            },
        }
    }
    out
}

/// Decides which keys changed, leaving out what an incomplete side may just not have read.
/// `same` is a cheap first check (raw equality); only objects that fail it
/// are normalised and compared in their normal form.
fn changed_keys<'a, K: Ord + Clone, V: ?Sized>(
    merged: Vec<(&'a K, Option<&'a V>, Option<&'a V>)>,
    same: impl Fn(&V, &V) -> bool,
    normalize: impl Fn(&K, &V) -> Value,
    old_missing: impl Fn(&K) -> bool,
    new_missing: impl Fn(&K) -> bool,
    options: &DiffOptions,
    not_compared: &mut usize,
) -> Vec<(K, ChangeKind, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    for (key, o, n) in merged {
        match (o, n) {
            (Some(o), Some(n)) => {
                if !same(o, n) {
                    let (on, nn) = (normalize(key, o), normalize(key, n));
                    if on != nn {
                        out.push((key.clone(), ChangeKind::Modified, Some(on), Some(nn)));
                    }
                }
            }
            (Some(o), None) => {
                if new_missing(key) && !options.missing_as_removed {
                    *not_compared += 1;
                } else {
                    out.push((
                        key.clone(),
                        ChangeKind::Removed,
                        Some(normalize(key, o)),
                        None,
                    ));
                }
            }
            (None, Some(n)) => {
                if old_missing(key) && !options.missing_as_removed {
                    *not_compared += 1;
                } else {
                    out.push((
                        key.clone(),
                        ChangeKind::Added,
                        None,
                        Some(normalize(key, n)),
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn note_incomplete(
    o: &SourceSnapshot,
    n: &SourceSnapshot,
    not_compared: usize,
    incomplete: &mut Vec<Incomplete>,
) {
    if o.is_complete() && n.is_complete() {
        return;
    }
    let mut reasons = Vec::new();
    if !o.is_complete() {
        reasons.push(format!(
            "OLD incomplete ({})",
            missing_reason(&o.meta.missing)
        ));
    }
    if !n.is_complete() {
        reasons.push(format!(
            "NEW incomplete ({})",
            missing_reason(&n.meta.missing)
        ));
    }
    incomplete.push(Incomplete {
        source: n.name.clone(),
        reason: reasons.join("; "),
        objects_not_compared: not_compared,
    });
}

fn fingerprint(source: &str, object: &str, old: Option<&Value>, new: Option<&Value>) -> String {
    let body = serde_json::json!([source, object, old, new]);
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

fn diff_kube(
    o: &SourceSnapshot,
    n: &SourceSnapshot,
    om: &K8sModel,
    nm: &K8sModel,
    options: &DiffOptions,
    sink: &mut Sink,
) {
    let merged = merge_keys(om.objects(), nm.objects());
    let mut not_compared = 0;
    let changed = changed_keys(
        merged,
        // The same shared object on both sides (most of them) is equal
        // without comparing its text.
        |a: &K8sObject, b: &K8sObject| a == b,
        |_, v: &K8sObject| model::k8s::normalize(&v.value()),
        |k| kube_missing(&o.meta.missing, k),
        |k| kube_missing(&n.meta.missing, k),
        options,
        &mut not_compared,
    );
    note_incomplete(o, n, not_compared, &mut sink.incomplete);
    let mut differ = K8sDiffer::new(om, nm);
    let mut classifier = classify::k8s::Classifier::new();
    let mut effects = Vec::with_capacity(changed.len());
    for (key, kind, old_norm, new_norm) in changed {
        if let Some(role) = nm.get(&key).and_then(K8sObject::role) {
            sink.warnings
                .extend(unmatchable_warnings(&key, &role.rules));
        }
        let change = ObjectChange {
            key: &key,
            kind,
            old: old_norm,
            new: new_norm,
        };
        let (change, effect) = k8s_change(&mut differ, &mut classifier, &n.name, change, options);
        sink.changes.push(change);
        effects.push(effect);
    }
    kube_subject_deltas(&n.name, &effects, options, &mut sink.subjects);
}

/// Warnings for the words of a changed role's rules that match nothing
/// (`GET`, `Secrets`): they grant nothing, so the change may be neutral
/// while its author meant a widening.
fn unmatchable_warnings(key: &RbacKey, rules: &[model::k8s::PolicyRule]) -> Vec<String> {
    crate::grants::k8s_perm::unmatchable(rules)
        .into_iter()
        .map(|(i, field, word)| {
            format!(
                "{} rules[{i}].{field}: {word:?} matches nothing and grants nothing \
                 (the API server compares {field} case-sensitively; requests use lower case)",
                classify::k8s::role_path(key)
            )
        })
        .collect()
}

/// One changed object: its key, how it changed and its two normal forms.
pub struct ObjectChange<'k, K> {
    pub key: &'k K,
    pub kind: ChangeKind,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl<'k, K> ObjectChange<'k, K> {
    /// The change between two normal forms, if they differ.
    fn between(key: &'k K, old: Option<Value>, new: Option<Value>) -> Option<Self> {
        let kind = match (&old, &new) {
            (None, None) => return None,
            (Some(a), Some(b)) if a == b => return None,
            (Some(_), Some(_)) => ChangeKind::Modified,
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Removed,
        };
        Some(ObjectChange {
            key,
            kind,
            old,
            new,
        })
    }
}

/// Effect, classification, witness, text diff and fingerprint of one changed
/// Kubernetes object: what `permdrift diff` reports and the operator judges.
pub fn k8s_change<'m>(
    differ: &mut K8sDiffer<'m>,
    classifier: &mut classify::k8s::Classifier<'m>,
    source: &str,
    change: ObjectChange<'_, RbacKey>,
    options: &DiffOptions,
) -> (Change, k8s::K8sEffect<'m>) {
    let ObjectChange {
        key,
        kind,
        old,
        new,
    } = change;
    let effect = differ.effect(key);
    let cx = classify::k8s::K8sContext {
        aggregated_into: &effect.aggregated_into,
        aggregation_label: effect.aggregation_label,
        changed: &key.name,
    };
    let (risks, severity) = classifier.classify_effect(&effect, &cx);
    let direction = Direction::from_parts(
        !effect.gained.is_empty()
            || !effect.latent_gained.is_empty()
            || !effect.dangling.is_empty(),
        !effect.lost.is_empty()
            || !effect.latent_lost.is_empty()
            || !effect.dangling_lost.is_empty(),
    );
    let witness = if !direction.widens() {
        None
    } else if !effect.gained.is_empty() {
        let old_cache = differ.old_cache();
        classifier.witness(&effect.gained, |s, ns, p| {
            old_cache.subject_covers(s, crate::grants::k8s_perm::Scope::from_namespace(ns), p)
        })
    } else if !effect.latent_gained.is_empty() {
        let new_model = differ.new_cache().model();
        let old_cache = differ.old_cache();
        classifier.latent_witness(
            &effect.latent_gained,
            |role, p| crate::grants::k8s_perm::covers(&old_cache.role(role), p),
            |role| new_model.bindings_of_role(role).next().is_some(),
        )
    } else {
        effect.dangling.first().map(|d| {
            let cluster_role = d.role.kind == model::k8s::RbacKind::Role
                && differ
                    .new_cache()
                    .model()
                    .get(&RbacKey::cluster_role(&d.role.name))
                    .is_some();
            classify::k8s::dangling_witness(d, cluster_role)
        })
    };
    let label = key.to_string();
    let (gained, gained_count) = kube_change_output(
        &effect.gained,
        &effect.latent_gained,
        &effect.dangling,
        options.max_grants,
    );
    let (lost, lost_count) = kube_change_output(
        &effect.lost,
        &effect.latent_lost,
        &effect.dangling_lost,
        options.max_grants,
    );
    let change = Change {
        source: source.to_owned(),
        platform: Platform::Kubernetes,
        object: ObjectRef {
            kind: key.kind.as_str().into(),
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            arn: None,
        },
        change: kind,
        direction,
        severity,
        risks: risks.into_iter().collect(),
        gained_count,
        gained,
        lost_count,
        lost,
        witness,
        text_diff: text::object_diff(&label, old.as_ref(), new.as_ref()),
        fingerprint: fingerprint(source, &label, old.as_ref(), new.as_ref()),
        attribution: None,
    };
    (change, effect)
}

/// How one Kubernetes object differs between two models, or `None` when its
/// normal forms are equal (including both absent).
pub fn k8s_object_change<'k>(
    old: &K8sModel,
    new: &K8sModel,
    key: &'k RbacKey,
) -> Option<ObjectChange<'k, RbacKey>> {
    let norm = |m: &K8sModel| m.get(key).map(|o| model::k8s::normalize(&o.value()));
    let (o, n) = (old.get(key), new.get(key));
    if let (Some(o), Some(n)) = (o, n)
        && o == n
    {
        return None;
    }
    let (old_norm, new_norm) = (norm(old), norm(new));
    ObjectChange::between(key, old_norm, new_norm)
}

/// Per-subject totals across changes. Each change's grants are sorted by
/// subject, so a subject's grants in one change are one run; a subject seen
/// in a single change needs no further work, several runs are merged.
fn kube_subject_deltas(
    source: &str,
    effects: &[k8s::K8sEffect<'_>],
    options: &DiffOptions,
    out: &mut Vec<SubjectDelta>,
) {
    type Runs<'e, 'm> = FxHashMap<&'m Subject, (Vec<&'e [K8sGrant<'m>]>, Vec<&'e [K8sGrant<'m>]>)>;
    let mut runs: Runs<'_, '_> = FxHashMap::default();
    for effect in effects {
        for (list, lost) in [(&effect.gained, false), (&effect.lost, true)] {
            for run in list.chunk_by(|a, b| a.subject == b.subject) {
                let entry = runs.entry(run[0].subject).or_default();
                if lost {
                    entry.1.push(run);
                } else {
                    entry.0.push(run);
                }
            }
        }
    }
    let cap = if options.subject_grants {
        options.max_grants
    } else {
        usize::MAX
    };
    let output = |grants: &[K8sGrant<'_>]| {
        if options.subject_grants {
            kube_output(grants, cap)
        } else {
            (Vec::new(), grants.chunk_by(same_output_grant).count())
        }
    };
    let total = |list: &[&[K8sGrant<'_>]]| -> (Vec<Grant>, usize) {
        match list {
            [] => (Vec::new(), 0),
            [one] => output(one),
            many => output(&merge_runs(many)),
        }
    };
    for (subject, (gained_runs, lost_runs)) in runs {
        let (gained, gained_count) = total(&gained_runs);
        let (lost, lost_count) = total(&lost_runs);
        out.push(SubjectDelta {
            source: source.to_owned(),
            platform: Platform::Kubernetes,
            subject: subject.to_string(),
            gained_count,
            gained,
            lost_count,
            lost,
        });
    }
}

/// The union of sorted, duplicate-free runs of one subject's grants, sorted
/// and without duplicates; merged pairwise in linear passes (a subject is
/// reached by a few changes, each a sorted run).
fn merge_runs<'m>(runs: &[&[K8sGrant<'m>]]) -> Vec<K8sGrant<'m>> {
    // One subject throughout, so scope and perm decide the order.
    let order =
        |a: &K8sGrant<'_>, b: &K8sGrant<'_>| (a.namespace, a.perm).cmp(&(b.namespace, b.perm));
    let mut merged: Vec<K8sGrant<'m>> = Vec::new();
    for run in runs {
        let mut out = Vec::with_capacity(merged.len() + run.len());
        let (mut a, mut b) = (merged.iter().peekable(), run.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match order(x, y) {
                Ordering::Less => out.extend(a.next().copied()),
                Ordering::Greater => out.extend(b.next().copied()),
                Ordering::Equal => {
                    out.extend(a.next().copied());
                    b.next();
                }
            }
        }
        out.extend(a.copied());
        out.extend(b.copied());
        merged = out;
    }
    merged
}

/// A change's output grants: its subjects' first, then the roles' own
/// (latent) and the dangling subjects'; at most `cap` listed (all when 0)
/// and how many there are in all.
fn kube_change_output(
    grants: &[K8sGrant<'_>],
    latent: &[k8s::RoleGrant<'_>],
    dangling: &[k8s::Dangling<'_>],
    cap: usize,
) -> (Vec<Grant>, usize) {
    let (mut out, subjects) = kube_output(grants, cap);
    let latent_total = latent.chunk_by(same_latent_output).count();
    let room = if cap == 0 {
        usize::MAX
    } else {
        cap.saturating_sub(out.len())
    };
    out.extend(
        latent
            .chunk_by(same_latent_output)
            .map(latent_grant)
            .chain(dangling.iter().map(dangling_grant))
            .take(room),
    );
    (out, subjects + latent_total + dangling.len())
}

/// Whether two of a role's sorted perms fold into one output grant (names merged).
fn same_latent_output(a: &k8s::RoleGrant<'_>, b: &k8s::RoleGrant<'_>) -> bool {
    std::ptr::eq(a.role, b.role)
        && match (a.perm, b.perm) {
            (
                Perm::Resource {
                    group,
                    resource,
                    verb,
                    name: Some(_),
                },
                Perm::Resource {
                    group: g,
                    resource: r,
                    verb: v,
                    name: Some(_),
                },
            ) => (group, resource, verb) == (g, r, v),
            _ => false,
        }
}

/// One output grant of a role's own perms (one perm, or one perm over several names).
fn latent_grant(chunk: &[k8s::RoleGrant<'_>]) -> Grant {
    let first = chunk[0];
    let (api_group, resource, action) = match first.perm {
        Perm::Resource {
            group,
            resource,
            verb,
            ..
        } => (Some(group.to_owned()), resource.to_owned(), verb.to_owned()),
        Perm::NonResource { url, verb } => (None, url.to_owned(), verb.to_owned()),
    };
    Grant {
        subject: classify::k8s::role_label(first.role),
        scope: match &first.role.namespace {
            Some(ns) => format!("namespace:{ns}"),
            None => "cluster".into(),
        },
        action,
        resource,
        api_group,
        resource_names: chunk
            .iter()
            .filter_map(|g| match g.perm {
                Perm::Resource { name: Some(n), .. } => Some(n.to_owned()),
                _ => None,
            })
            .collect(),
        condition: None,
        effect: None,
        latent: true,
        possible: false,
    }
}

/// A subject bound to a missing role: `*` on that role, whatever it will grant.
fn dangling_grant(d: &k8s::Dangling<'_>) -> Grant {
    Grant {
        subject: d.subject.to_string(),
        scope: match d.namespace {
            Some(ns) => format!("namespace:{ns}"),
            None => "cluster".into(),
        },
        action: "*".into(),
        resource: classify::k8s::role_path(d.role),
        api_group: None,
        resource_names: Vec::new(),
        condition: None,
        effect: None,
        latent: true,
        possible: false,
    }
}

/// The first `cap` output grants of sorted atomic grants (all when `cap` is 0)
/// and how many there are in all; only the listed ones are built.
fn kube_output(grants: &[K8sGrant<'_>], cap: usize) -> (Vec<Grant>, usize) {
    let total = grants.chunk_by(same_output_grant).count();
    let take = if cap == 0 { usize::MAX } else { cap };
    (k8s_grant_groups(grants).take(take).collect(), total)
}

/// Whether two sorted grants fold into one output grant (same subject, scope,
/// group, resource and verb, names merged).
fn same_output_grant(a: &K8sGrant<'_>, b: &K8sGrant<'_>) -> bool {
    // Only grants naming objects merge; an all-names grant stands alone.
    let same = |x: &str, y: &str| ByAddressFirst(x) == ByAddressFirst(y);
    match (a.perm, b.perm) {
        (
            Perm::Resource {
                group,
                resource,
                verb,
                name: Some(_),
            },
            Perm::Resource {
                group: other_group,
                resource: other_resource,
                verb: other_verb,
                name: Some(_),
            },
        ) => {
            same(verb, other_verb)
                && same(resource, other_resource)
                && same(group, other_group)
                && a.same_subject_and_scope(b)
        }
        _ => false,
    }
}

/// Output grants from sorted atomic grants, one per (subject, scope, group,
/// resource, verb), resource names merged; lazily, so a cap stops early.
pub fn k8s_grant_groups<'a>(grants: &'a [K8sGrant<'a>]) -> impl Iterator<Item = Grant> + 'a {
    grants.chunk_by(same_output_grant).map(|chunk| {
        let first = chunk[0];
        let scope = match first.namespace {
            Some(ns) => format!("namespace:{ns}"),
            None => "cluster".into(),
        };
        let (api_group, resource, action) = match first.perm {
            Perm::Resource {
                group,
                resource,
                verb,
                ..
            } => (Some(group.to_owned()), resource.to_owned(), verb.to_owned()),
            Perm::NonResource { url, verb } => (None, url.to_owned(), verb.to_owned()),
        };
        let resource_names = chunk
            .iter()
            .filter_map(|g| match g.perm {
                Perm::Resource { name: Some(n), .. } => Some(n.to_owned()),
                _ => None,
            })
            .collect();
        Grant {
            subject: first.subject.to_string(),
            scope,
            action,
            resource,
            api_group,
            resource_names,
            condition: None,
            effect: None,
            latent: false,
            possible: false,
        }
    })
}

/// The spellings of `set` that produced its ids (`!a,b` stands for a NotAction list).
fn contributing_patterns(set: &ActionSet, compiler: &mut AwsCompiler<'_>) -> Vec<String> {
    set.patterns
        .iter()
        .filter(|p| {
            if p.starts_with('!') {
                return !set.ids.is_empty();
            }
            set.unknown.contains(&p.to_ascii_lowercase())
                || !(compiler.expand(p) & &set.ids).is_empty()
        })
        .cloned()
        .collect()
}

fn iam_grants(
    list: &[AwsGrant],
    scope: &str,
    expand: bool,
    compiler: &mut AwsCompiler<'_>,
) -> Vec<Grant> {
    let catalog = compiler.catalog();
    let mut out = BTreeSet::new();
    for g in list {
        let patterns = contributing_patterns(&g.actions, compiler);
        let actions: Vec<String> = if expand || patterns.is_empty() {
            g.actions
                .ids
                .iter()
                .filter_map(|id| catalog.action(id).map(|a| a.name.clone()))
                .chain(g.actions.unknown.iter().cloned())
                .collect()
        } else {
            patterns
                .into_iter()
                .map(|p| match p.strip_prefix('!') {
                    Some(list) => format!("NotAction:{list}"),
                    None => p,
                })
                .collect()
        };
        let condition = g
            .key
            .condition
            .as_ref()
            .map(|c| serde_json::from_str(c).unwrap_or_else(|_| Value::String(c.clone())));
        for action in actions {
            out.insert(Grant {
                subject: g.subject.clone(),
                scope: scope.to_owned(),
                action,
                resource: g.key.resource.display(),
                api_group: None,
                resource_names: Vec::new(),
                condition: condition.clone(),
                effect: (g.effect == Effect::Deny).then(|| "deny".to_owned()),
                latent: false,
                possible: g.key.resource.is_undecided(),
            });
        }
    }
    out.into_iter().collect()
}

/// Effect, classification, witness, text diff and fingerprint of one changed
/// IAM entity, with every grant (the change lists at most `max_grants`).
pub fn aws_change(
    differ: &mut AwsDiffer<'_, '_>,
    sets: &classify::aws::RiskSets,
    catalog: &Catalog,
    source: &str,
    scope: &str,
    change: ObjectChange<'_, AwsKey>,
    options: &DiffOptions,
) -> (Change, Vec<Grant>, Vec<Grant>) {
    let ObjectChange {
        key,
        kind,
        old: old_norm,
        new: new_norm,
    } = change;
    let effect = differ.effect(key);
    let role_account = crate::grants::aws_perm::account_of(&key.arn).map(str::to_owned);
    let compiler = differ.new_cache().compiler();
    let flags: Vec<bool> = effect
        .widening()
        .map(|g| {
            contributing_patterns(&g.actions, compiler)
                .iter()
                .any(|p| p.starts_with('!') || crate::grants::glob::has_wildcard(p))
        })
        .collect();
    let mut index = 0;
    let (risks, severity) = classify::aws::classify(&effect, sets, role_account.as_deref(), |_| {
        let w = flags.get(index).copied().unwrap_or(false);
        index += 1;
        w
    });
    let direction = Direction::from_parts(
        effect.widening().next().is_some(),
        effect.narrowing().next().is_some(),
    );
    let witness = classify::aws::witness(&effect, sets, catalog, role_account.as_deref(), scope);
    let name = match (old_norm.as_ref(), new_norm.as_ref()) {
        (_, Some(v)) | (Some(v), None) => model::aws::name_of(key.kind, v),
        (None, None) => String::new(),
    };
    let label = format!("{} {}", key.kind, key.arn);
    let compiler = differ.new_cache().compiler();
    let gained_all = iam_grants(&effect.gained, scope, options.expand_actions, compiler);
    let lost_all = iam_grants(&effect.lost, scope, options.expand_actions, compiler);
    let (gained, gained_count) = capped(gained_all.iter().cloned(), options.max_grants);
    let (lost, lost_count) = capped(lost_all.iter().cloned(), options.max_grants);
    let change = Change {
        source: source.to_owned(),
        platform: Platform::Aws,
        object: ObjectRef {
            kind: key.kind.as_str().into(),
            name,
            namespace: None,
            arn: Some(key.arn.clone()),
        },
        change: kind,
        direction,
        severity,
        risks: risks.into_iter().collect(),
        gained_count,
        gained,
        lost_count,
        lost,
        witness,
        text_diff: text::object_diff(&label, old_norm.as_ref(), new_norm.as_ref()),
        fingerprint: fingerprint(source, &label, old_norm.as_ref(), new_norm.as_ref()),
        attribution: None,
    };
    (change, gained_all, lost_all)
}

/// How one IAM entity differs between two models, or `None` when equal.
pub fn aws_object_change<'k>(
    old: &AwsModel,
    new: &AwsModel,
    key: &'k AwsKey,
) -> Option<ObjectChange<'k, AwsKey>> {
    let (o, n) = (old.get(key), new.get(key));
    if let (Some(o), Some(n)) = (o, n)
        && o.raw == n.raw
    {
        return None;
    }
    let norm = |x: Option<&crate::index::aws::AwsObject>| {
        x.map(|o| model::aws::normalize(key.kind, &o.raw))
    };
    let (old_norm, new_norm) = (norm(o), norm(n));
    ObjectChange::between(key, old_norm, new_norm)
}

fn diff_iam(
    o: &SourceSnapshot,
    n: &SourceSnapshot,
    om: &AwsModel,
    nm: &AwsModel,
    catalog: &Catalog,
    options: &DiffOptions,
    sink: &mut Sink,
) {
    let mut per_subject: BTreeMap<String, (BTreeSet<Grant>, BTreeSet<Grant>)> = BTreeMap::new();
    let merged = merge_keys(
        om.objects().map(|(k, v)| (k, &v.raw)),
        nm.objects().map(|(k, v)| (k, &v.raw)),
    );
    let mut not_compared = 0;
    let changed = changed_keys(
        merged,
        |a: &Value, b: &Value| a == b,
        |k: &AwsKey, v: &Value| model::aws::normalize(k.kind, v),
        |_| !o.is_complete(),
        |_| !n.is_complete(),
        options,
        &mut not_compared,
    );
    note_incomplete(o, n, not_compared, &mut sink.incomplete);
    let account = n
        .meta
        .account_id
        .clone()
        .or_else(|| nm.account_id().map(str::to_owned))
        .or_else(|| om.account_id().map(str::to_owned));
    let scope = format!("account:{}", account.as_deref().unwrap_or("unknown"));
    let sets = classify::aws::RiskSets::new(catalog);
    let mut differ = AwsDiffer::new(om, nm, catalog);
    for (key, kind, old_norm, new_norm) in changed {
        let change = ObjectChange {
            key: &key,
            kind,
            old: old_norm,
            new: new_norm,
        };
        let (change, gained_all, lost_all) = aws_change(
            &mut differ,
            &sets,
            catalog,
            &n.name,
            &scope,
            change,
            options,
        );
        for (list, lost) in [(&gained_all, false), (&lost_all, true)] {
            for g in list {
                let acc = per_subject.entry(g.subject.clone()).or_default();
                if lost {
                    acc.1.insert(g.clone());
                } else {
                    acc.0.insert(g.clone());
                }
            }
        }
        sink.changes.push(change);
        if key.kind == AwsKind::Policy
            && kind == ChangeKind::Removed
            && nm.users_of_policy(&key.arn).next().is_some()
        {
            sink.warnings.push(format!(
                "{} was removed but is still attached in NEW",
                key.arn
            ));
        }
    }
    let cap = if options.subject_grants {
        options.max_grants
    } else {
        usize::MAX
    };
    for (subject, (gained, lost)) in per_subject {
        let (mut gained, gained_count) = capped(gained.into_iter(), cap);
        let (mut lost, lost_count) = capped(lost.into_iter(), cap);
        if !options.subject_grants {
            gained.clear();
            lost.clear();
        }
        sink.subjects.push(SubjectDelta {
            source: n.name.clone(),
            platform: Platform::Aws,
            subject,
            gained_count,
            gained,
            lost_count,
            lost,
        });
    }
    for arn in differ.missing_policies() {
        sink.warnings.push(format!(
            "managed policy {arn} is attached but not in the snapshot; its permissions are shown as `attached-policy:{arn}`"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merged_runs_are_the_sorted_union(
            runs in proptest::collection::vec(
                proptest::collection::btree_set((0usize..1, 0usize..2, 0usize..4), 0..12),
                0..4,
            )
        ) {
            let subjects = [Subject::user("a"), Subject::group("b"), Subject::user("c")];
            let namespaces = [None, Some("team")];
            let verbs = ["get", "list", "watch", "*"];
            let grant = |&(s, n, v): &(usize, usize, usize)| K8sGrant {
                subject: &subjects[s],
                namespace: namespaces[n],
                perm: Perm::Resource { group: "", resource: "pods", verb: verbs[v], name: None },
            };
            let runs: Vec<Vec<K8sGrant<'_>>> = runs
                .iter()
                .map(|run| {
                    let mut grants: Vec<_> = run.iter().map(grant).collect();
                    grants.sort();
                    grants.dedup();
                    grants
                })
                .collect();
            let slices: Vec<&[K8sGrant<'_>]> = runs.iter().map(Vec::as_slice).collect();
            let mut expected: Vec<K8sGrant<'_>> = runs.iter().flatten().copied().collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(merge_runs(&slices), expected);
        }
    }
}
