//! Effective IAM permission sets and their algebra.
//!
//! Policy statements come in; [`AwsPerms`] come out: for each
//! (resource pattern, condition) the set of allowed actions as catalog ids,
//! plus unknown action patterns kept literally, and the same for explicit
//! denies. Coverage: resource globs by syntactic
//! containment, an unconditional grant covers a conditional one, an identical
//! condition covers itself.

use super::catalog::Catalog;
use super::glob;
pub use super::resource_pattern::ResourcePattern;
use crate::model::iam_policy::{ActionSpec, Effect, PolicyDocument, ResourceSpec, Statement};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A set of actions: catalog ids, plus patterns the catalog does not know.
/// `patterns` remembers the policy spellings that produced the set, so output
/// can show `s3:Get*` rather than every action it expands to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionSet {
    pub ids: RoaringBitmap,
    pub unknown: BTreeSet<String>,
    pub patterns: BTreeSet<String>,
}

impl ActionSet {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.unknown.is_empty()
    }

    pub fn union_with(&mut self, other: &ActionSet) {
        self.ids |= &other.ids;
        self.unknown.extend(other.unknown.iter().cloned());
        self.patterns.extend(other.patterns.iter().cloned());
    }

    /// What `self` has that `cover` does not, keeping the patterns that still contribute.
    pub fn minus(&self, cover: &ActionSet) -> ActionSet {
        let ids = &self.ids - &cover.ids;
        let unknown: BTreeSet<String> = self
            .unknown
            .iter()
            .filter(|u| !cover.covers_unknown(u))
            .cloned()
            .collect();
        ActionSet {
            ids,
            unknown,
            patterns: self.patterns.clone(),
        }
    }

    pub fn intersect(&self, other: &ActionSet) -> ActionSet {
        ActionSet {
            ids: &self.ids & &other.ids,
            unknown: self.unknown.intersection(&other.unknown).cloned().collect(),
            patterns: self.patterns.clone(),
        }
    }

    /// The actions both sets allow, spelled by the patterns of either side
    /// that lie wholly inside the result, and by name for the rest, so the
    /// output never shows a pattern wider than what is allowed.
    pub fn intersect_exact(&self, other: &ActionSet, compiler: &mut AwsCompiler<'_>) -> ActionSet {
        let ids = &self.ids & &other.ids;
        let unknown: BTreeSet<String> = self
            .unknown
            .iter()
            .filter(|u| other.covers_unknown(u))
            .chain(other.unknown.iter().filter(|u| self.covers_unknown(u)))
            .cloned()
            .collect();
        let mut patterns = BTreeSet::new();
        let mut spelled = RoaringBitmap::new();
        for p in self.patterns.iter().chain(&other.patterns) {
            if unknown.contains(&p.to_ascii_lowercase()) {
                patterns.insert(p.clone());
                continue;
            }
            let expansion = compiler.pattern_ids(p);
            if !expansion.is_empty() && expansion.is_subset(&ids) {
                spelled |= &expansion;
                patterns.insert(p.clone());
            }
        }
        let catalog = compiler.catalog();
        for id in &ids - &spelled {
            if let Some(action) = catalog.action(id) {
                patterns.insert(action.name.clone());
            }
        }
        ActionSet {
            ids,
            unknown,
            patterns,
        }
    }

    fn covers_unknown(&self, action: &str) -> bool {
        self.unknown.contains(action)
            || self
                .patterns
                .iter()
                .any(|p| !p.starts_with('!') && glob::matches(&p.to_ascii_lowercase(), action))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    pub resource: ResourcePattern,
    pub condition: Option<String>,
}

impl GrantKey {
    /// Whether an allow under `self` allows everything an allow under `inner` does.
    pub fn covers(&self, inner: &GrantKey) -> bool {
        condition_covers(self.condition.as_deref(), inner.condition.as_deref())
            && self.resource.covers(&inner.resource)
    }
}

/// The condition blocks of a canonical condition: one block, or the list a
/// boundary's intersection makes (all of which must hold).
fn condition_blocks(condition: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(condition) {
        Ok(serde_json::Value::Array(blocks)) => blocks.iter().map(|b| b.to_string()).collect(),
        Ok(block) => vec![block.to_string()],
        // Not JSON (a pseudo-condition such as `NotPrincipal=`): opaque.
        Err(_) => vec![condition.to_owned()],
    }
}

/// Whether a grant under `outer` applies whenever one under `inner` does:
/// no condition, the same one, or a subset of inner's blocks.
pub fn condition_covers(outer: Option<&str>, inner: Option<&str>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(o), Some(i)) if o == i => true,
        (Some(o), Some(i)) if i.starts_with('[') => {
            let inner = condition_blocks(i);
            condition_blocks(o).iter().all(|b| inner.contains(b))
        }
        _ => false,
    }
}

/// Both conditions at once: IAM ANDs the blocks of the policies it
/// evaluates, so an identity statement capped by a boundary statement holds
/// under both. Several blocks are kept as a sorted JSON list.
pub fn both_conditions(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => Some(c.to_owned()),
        (Some(x), Some(y)) if x == y => Some(x.to_owned()),
        (Some(x), Some(y)) => {
            let mut blocks = condition_blocks(x);
            blocks.extend(condition_blocks(y));
            blocks.sort();
            blocks.dedup();
            let values: Vec<serde_json::Value> = blocks
                .iter()
                .map(|b| {
                    serde_json::from_str(b).unwrap_or_else(|_| serde_json::Value::String(b.clone()))
                })
                .collect();
            Some(serde_json::Value::Array(values).to_string())
        }
    }
}

/// What one principal (or one document) allows and explicitly denies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsPerms {
    pub allow: BTreeMap<GrantKey, ActionSet>,
    pub deny: BTreeMap<GrantKey, ActionSet>,
}

impl AwsPerms {
    pub fn is_empty(&self) -> bool {
        self.allow.values().all(ActionSet::is_empty) && self.deny.values().all(ActionSet::is_empty)
    }

    pub fn merge(&mut self, other: &AwsPerms) {
        for (k, v) in &other.allow {
            self.allow.entry(k.clone()).or_default().union_with(v);
        }
        for (k, v) in &other.deny {
            self.deny.entry(k.clone()).or_default().union_with(v);
        }
    }

    /// Removes from the allows what an unconditional deny over a covering
    /// resource takes away. Partial denies stay in `deny` only.
    pub fn apply_denies(&mut self) {
        let full: Vec<(&GrantKey, &ActionSet)> = self
            .deny
            .iter()
            .filter(|(k, _)| k.condition.is_none())
            .collect();
        if full.is_empty() {
            return;
        }
        for (key, set) in self.allow.iter_mut() {
            for (dk, dset) in &full {
                if dk.resource.covers(&key.resource) {
                    set.ids -= &dset.ids;
                    set.unknown.retain(|u| !dset.covers_unknown(u));
                }
            }
        }
        self.allow.retain(|_, s| !s.is_empty());
    }

    /// Caps the allows by a permissions boundary, as IAM evaluates one: a
    /// request is allowed only if an identity allow and a boundary allow
    /// both match it, so each pair of statements gives the intersection of
    /// their actions, of their resources and of their conditions. The
    /// boundary's own denies apply like any explicit deny.
    pub fn cap_by(&mut self, boundary: &AwsPerms, compiler: &mut AwsCompiler<'_>) {
        let mut capped: BTreeMap<GrantKey, ActionSet> = BTreeMap::new();
        for (key, set) in &self.allow {
            for (bk, bset) in &boundary.allow {
                let Some(resource) = key.resource.intersect(&bk.resource) else {
                    continue;
                };
                let actions = set.intersect_exact(bset, compiler);
                if actions.is_empty() {
                    continue;
                }
                let key = GrantKey {
                    resource,
                    condition: both_conditions(key.condition.as_deref(), bk.condition.as_deref()),
                };
                capped.entry(key).or_default().union_with(&actions);
            }
        }
        self.allow = capped;
        for (k, v) in &boundary.deny {
            self.deny.entry(k.clone()).or_default().union_with(v);
        }
        self.apply_denies();
    }

    /// Allows in `self` not allowed by `before`.
    pub fn allows_beyond(&self, before: &AwsPerms) -> BTreeMap<GrantKey, ActionSet> {
        diff_sets(&self.allow, &before.allow, GrantKey::covers)
    }

    /// Denies in `self` that `after` no longer has (a removed deny widens).
    pub fn denies_dropped_in(&self, after: &AwsPerms) -> BTreeMap<GrantKey, ActionSet> {
        // A deny is kept if a deny over a covering resource applies at least as
        // often: unconditional, or under the same condition.
        diff_sets(&self.deny, &after.deny, |outer, inner| {
            (outer.condition.is_none() || outer.condition == inner.condition)
                && outer.resource.covers(&inner.resource)
        })
    }
}

fn diff_sets(
    from: &BTreeMap<GrantKey, ActionSet>,
    cover: &BTreeMap<GrantKey, ActionSet>,
    key_covers: impl Fn(&GrantKey, &GrantKey) -> bool,
) -> BTreeMap<GrantKey, ActionSet> {
    let mut out = BTreeMap::new();
    for (key, set) in from {
        let mut covering = ActionSet::default();
        if let Some(same) = cover.get(key) {
            covering.union_with(same);
        }
        for (ck, cset) in cover {
            if ck != key && key_covers(ck, key) {
                covering.union_with(cset);
            }
        }
        let rest = set.minus(&covering);
        if !rest.is_empty() {
            out.insert(key.clone(), rest);
        }
    }
    out
}

/// A trust principal, in a stable spelling: an ARN (accounts as `:root`),
/// `service:NAME`, `federated:NAME`, `canonicaluser:ID`, or `*` for anyone.
pub fn trust_principal(kind: &str, id: &str) -> String {
    match kind {
        "AWS" if id == "*" => "*".to_owned(),
        "AWS" if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) => {
            format!("arn:aws:iam::{id}:root")
        }
        "AWS" => id.to_owned(),
        other => format!("{}:{id}", other.to_ascii_lowercase()),
    }
}

/// The account number in an ARN, if it has one.
pub fn account_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// Turns documents into [`AwsPerms`], caching pattern expansion.
pub struct AwsCompiler<'c> {
    catalog: &'c Catalog,
    expansions: HashMap<String, RoaringBitmap>,
}

impl<'c> AwsCompiler<'c> {
    pub fn new(catalog: &'c Catalog) -> Self {
        Self {
            catalog,
            expansions: HashMap::new(),
        }
    }

    pub fn catalog(&self) -> &'c Catalog {
        self.catalog
    }

    pub fn expand(&mut self, pattern: &str) -> &RoaringBitmap {
        let catalog = self.catalog;
        self.expansions
            .entry(pattern.to_ascii_lowercase())
            .or_insert_with(|| catalog.expand(pattern))
    }

    /// The catalog ids a recorded spelling stands for: a pattern, or a
    /// NotAction list (`!a,b`) as its complement.
    pub fn pattern_ids(&mut self, pattern: &str) -> RoaringBitmap {
        match pattern.strip_prefix('!') {
            Some(list) => {
                let mut excluded = RoaringBitmap::new();
                for p in list.split(',') {
                    excluded |= self.expand(p);
                }
                &self.catalog.all() - &excluded
            }
            None => self.expand(pattern).clone(),
        }
    }

    fn pattern_set(&mut self, pattern: &str) -> ActionSet {
        let ids = self.expand(pattern).clone();
        let mut set = ActionSet {
            patterns: [pattern.to_owned()].into_iter().collect(),
            ..ActionSet::default()
        };
        if ids.is_empty() {
            set.unknown.insert(pattern.to_ascii_lowercase());
        } else {
            set.ids = ids;
        }
        set
    }

    pub fn actions(&mut self, spec: &ActionSpec) -> ActionSet {
        match spec {
            ActionSpec::Action(list) => {
                let mut set = ActionSet::default();
                for p in list {
                    set.union_with(&self.pattern_set(p));
                }
                set
            }
            ActionSpec::NotAction(list) => {
                let mut excluded = RoaringBitmap::new();
                for p in list {
                    excluded |= self.expand(p);
                }
                ActionSet {
                    ids: &self.catalog.all() - &excluded,
                    unknown: BTreeSet::new(),
                    patterns: [format!("!{}", list.join(","))].into_iter().collect(),
                }
            }
        }
    }

    fn add_statement(
        &mut self,
        perms: &mut AwsPerms,
        s: &Statement,
        resources: &[ResourcePattern],
    ) {
        let actions = self.actions(&s.actions);
        if actions.is_empty() {
            return;
        }
        let target = match s.effect {
            Effect::Allow => &mut perms.allow,
            Effect::Deny => &mut perms.deny,
        };
        for r in resources {
            target
                .entry(GrantKey {
                    resource: r.clone(),
                    condition: s.condition.clone(),
                })
                .or_default()
                .union_with(&actions);
        }
    }

    /// An identity-based document (inline or managed policy).
    pub fn document(&mut self, doc: &PolicyDocument) -> AwsPerms {
        let mut perms = AwsPerms::default();
        for s in &doc.statements {
            let resources = resource_patterns(s.resources.as_ref());
            self.add_statement(&mut perms, s, &resources);
        }
        perms
    }

    /// A role's trust policy: per trusted principal, the actions it may perform on the role.
    pub fn trust(&mut self, doc: &PolicyDocument, role_arn: &str) -> BTreeMap<String, AwsPerms> {
        let mut out: BTreeMap<String, AwsPerms> = BTreeMap::new();
        let resource = [ResourcePattern::Any(role_arn.to_owned())];
        for s in &doc.statements {
            let mut principals: Vec<String> = Vec::new();
            let mut statement = s.clone();
            if let Some(p) = &s.principal {
                if p.any {
                    principals.push("*".into());
                }
                for (kind, ids) in &p.by_type {
                    principals.extend(ids.iter().map(|id| trust_principal(kind, id)));
                }
            } else if let Some(np) = &s.not_principal {
                // Everyone except the listed: model as anyone, under a pseudo-condition.
                principals.push("*".into());
                let excluded: Vec<String> = np
                    .by_type
                    .iter()
                    .flat_map(|(k, ids)| ids.iter().map(|id| trust_principal(k, id)))
                    .collect();
                let extra = format!("NotPrincipal={}", excluded.join(","));
                statement.condition = Some(match &s.condition {
                    Some(c) => format!("{c} {extra}"),
                    None => extra,
                });
            }
            principals.sort();
            principals.dedup();
            for principal in principals {
                let perms = out.entry(principal).or_default();
                self.add_statement(perms, &statement, &resource);
            }
        }
        for perms in out.values_mut() {
            perms.apply_denies();
        }
        out.retain(|_, p| !p.is_empty());
        out
    }
}

fn resource_patterns(spec: Option<&ResourceSpec>) -> Vec<ResourcePattern> {
    match spec {
        None => vec![ResourcePattern::Any("*".into())],
        Some(ResourceSpec::Resource(list)) => {
            let mut v: Vec<ResourcePattern> =
                list.iter().cloned().map(ResourcePattern::Any).collect();
            v.sort();
            v.dedup();
            v
        }
        Some(ResourceSpec::NotResource(list)) => {
            let mut l = list.clone();
            l.sort();
            l.dedup();
            vec![ResourcePattern::Not(l)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::iam_policy::parse_document;
    use serde_json::json;

    fn perms(doc: serde_json::Value) -> AwsPerms {
        let mut c = AwsCompiler::new(Catalog::embedded());
        let mut p = c.document(&parse_document(&doc).unwrap());
        p.apply_denies();
        p
    }

    #[test]
    fn split_and_merged_statements_are_equal() {
        let merged = perms(
            json!({"Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":["arn:aws:s3:::a/*","arn:aws:s3:::b/*"]}]}),
        );
        let split = perms(json!({"Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":["arn:aws:s3:::b/*","arn:aws:s3:::a/*"]},
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::a/*"},
            {"Sid":"x","Effect":"Allow","Action":"s3:putobject","Resource":"arn:aws:s3:::b/*"}]}));
        assert!(merged.allows_beyond(&split).is_empty());
        assert!(split.allows_beyond(&merged).is_empty());
    }

    #[test]
    fn wider_resource_and_unconditional_cover() {
        let wide = perms(json!({"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}));
        let narrow = perms(
            json!({"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::a/*",
            "Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}),
        );
        assert!(narrow.allows_beyond(&wide).is_empty());
        let gained = wide.allows_beyond(&narrow);
        assert_eq!(gained.len(), 1);
    }

    #[test]
    fn condition_change_is_not_covered() {
        let a = perms(
            json!({"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}),
        );
        let b = perms(
            json!({"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}]}),
        );
        assert!(!b.allows_beyond(&a).is_empty());
    }

    #[test]
    fn deny_subtracts_and_not_action_complements() {
        let p = perms(
            json!({"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
            {"Effect":"Deny","Action":"iam:*","Resource":"*"}]}),
        );
        let c = Catalog::embedded();
        let allowed = &p.allow.values().next().unwrap().ids;
        assert!(!allowed.contains(c.id_of("iam:CreateUser").unwrap()));
        assert!(allowed.contains(c.id_of("s3:GetObject").unwrap()));
        let q = perms(json!({"Statement":[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]}));
        assert!(p.allows_beyond(&q).is_empty() && q.allows_beyond(&p).is_empty());
    }

    #[test]
    fn unknown_actions_are_literal() {
        let a = perms(
            json!({"Statement":[{"Effect":"Allow","Action":"newsvc:DoThing","Resource":"*"}]}),
        );
        let set = a.allow.values().next().unwrap();
        assert!(set.ids.is_empty());
        assert!(set.unknown.contains("newsvc:dothing"));
        let star =
            perms(json!({"Statement":[{"Effect":"Allow","Action":"newsvc:*","Resource":"*"}]}));
        assert!(a.allows_beyond(&star).is_empty());
    }

    #[test]
    fn boundary_caps() {
        let mut p = perms(json!({"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}));
        let b = perms(json!({"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}));
        p.cap_by(&b, &mut AwsCompiler::new(Catalog::embedded()));
        let c = Catalog::embedded();
        let ids = &p.allow.values().next().unwrap().ids;
        assert_eq!(ids.len(), c.expand("s3:*").len());
    }

    #[test]
    fn trust_principals() {
        let mut c = AwsCompiler::new(Catalog::embedded());
        let doc = parse_document(&json!({"Statement":[{"Effect":"Allow","Principal":{"AWS":["111122223333","arn:aws:iam::444455556666:role/x"],"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]})).unwrap();
        let t = c.trust(&doc, "arn:aws:iam::111122223333:role/r");
        let keys: Vec<_> = t.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "arn:aws:iam::111122223333:root",
                "arn:aws:iam::444455556666:role/x",
                "service:ec2.amazonaws.com"
            ]
        );
    }
}
