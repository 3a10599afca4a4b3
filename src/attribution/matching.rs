//! Matching: which suggestion best explains an observed change.
//!
//! Predictions go in and are indexed by the concrete (action, resource) of
//! their gained grants, so an observed change meets only the predictions
//! that share a grant with it (plus the few whose grants are placeholders),
//! never every suggestion times every grant. A change no prediction names
//! costs one borrowed lookup per gained grant and nothing else. Each
//! candidate is scored on object identity, grant overlap both ways, time
//! window and confidence; the best wins.

use super::placeholder;
use super::predict::Prediction;
use super::{Confidence, Evidence};
use crate::report::{Change, Grant};
use rustc_hash::{FxHashMap, FxHashSet};
use std::borrow::Cow;

/// A grant as compared, borrowed from its change: latent grants lose their
/// role's name, so a role created under another name still matches on what
/// it allows.
#[derive(Clone, Debug)]
struct Key<'g> {
    subject: &'g str,
    scope: &'g str,
    action: &'g str,
    resource: &'g str,
    api_group: &'g str,
    names: Cow<'g, str>,
    effect: &'g str,
}

impl<'g> Key<'g> {
    fn of(g: &'g Grant) -> Self {
        Key {
            subject: if g.latent { "(role)" } else { &g.subject },
            scope: &g.scope,
            action: &g.action,
            resource: &g.resource,
            api_group: g.api_group.as_deref().unwrap_or_default(),
            names: match g.resource_names.as_slice() {
                [] => Cow::Borrowed(""),
                [one] => Cow::Borrowed(one.as_str()),
                many => Cow::Owned(many.join(",")),
            },
            effect: g.effect.as_deref().unwrap_or_default(),
        }
    }
}

/// Entries by action, then resource: looked up with borrowed strings, so a
/// lookup per observed grant copies nothing.
type ByGrant<T = usize> = FxHashMap<String, FxHashMap<String, Vec<T>>>;

/// A predicted grant: (prediction, pattern within it).
type PatternRef = (usize, usize);

fn lookup<'m, T>(map: &'m ByGrant<T>, action: &str, resource: &str) -> &'m [T] {
    map.get(action)
        .and_then(|m| m.get(resource))
        .map_or(&[][..], Vec::as_slice)
}

fn insert<T>(map: &mut ByGrant<T>, action: &str, resource: &str, i: T) {
    map.entry(action.to_owned())
        .or_default()
        .entry(resource.to_owned())
        .or_default()
        .push(i);
}

/// A predicted value: literal, or a glob where it held placeholders (made
/// once, when indexing, not per comparison).
#[derive(Clone, Debug)]
enum Field {
    Literal(String),
    Glob(String),
}

impl Field {
    fn of(s: &str) -> Self {
        let g = placeholder::to_glob(s);
        if g == s {
            Field::Literal(g)
        } else {
            Field::Glob(g)
        }
    }

    fn matches(&self, actual: &str) -> bool {
        match self {
            Field::Literal(l) => l == actual,
            Field::Glob(g) => crate::grants::glob::matches(g, actual),
        }
    }
}

/// A predicted grant, ready to be compared with observed ones.
#[derive(Clone, Debug)]
struct Pattern {
    subject: Field,
    scope: Field,
    action: Field,
    resource: Field,
    names: Field,
    api_group: String,
    effect: String,
}

impl Pattern {
    fn of(k: &Key<'_>) -> Self {
        Pattern {
            subject: Field::of(k.subject),
            scope: Field::of(k.scope),
            action: Field::of(k.action),
            resource: Field::of(k.resource),
            names: Field::of(&k.names),
            api_group: k.api_group.to_owned(),
            effect: k.effect.to_owned(),
        }
    }

    /// Whether this predicted grant stands for the observed one.
    fn covers(&self, o: &Key<'_>, any_subject: bool) -> bool {
        self.api_group == o.api_group
            && self.effect == o.effect
            && self.action.matches(o.action)
            && self.resource.matches(o.resource)
            && (any_subject || (self.subject.matches(o.subject) && self.scope.matches(o.scope)))
            && self.names.matches(&o.names)
    }
}

struct Indexed<'a> {
    p: &'a Prediction,
    grants: Vec<Pattern>,
    added: Vec<String>,
    removed: Vec<String>,
}

impl Indexed<'_> {
    fn new<'p>(p: &'p Prediction, keys: &[Key<'_>]) -> Indexed<'p> {
        Indexed {
            p,
            grants: keys.iter().map(Pattern::of).collect(),
            added: diff_lines(&p.change.text_diff, '+'),
            removed: diff_lines(&p.change.text_diff, '-'),
        }
    }
}

pub struct Index<'a> {
    items: Vec<Indexed<'a>>,
    /// Predictions by the grants they give a named subject: most answers
    /// name theirs, and an observed grant of another subject cannot be theirs.
    by_subject: FxHashMap<String, ByGrant>,
    /// Predictions whose subjects are placeholders (or any subject), by grant.
    by_grant: ByGrant,
    /// Every predicted grant with a literal action and resource, by its
    /// subject where that is literal (and the prediction names subjects)...
    patterns_by_subject: FxHashMap<String, ByGrant<PatternRef>>,
    /// ... else by grant alone; those with a placeholder in the action or
    /// resource are in `patterns_globbed`. An observed grant meets only the
    /// patterns that could cover it, once for all candidates.
    patterns_by_grant: ByGrant<PatternRef>,
    patterns_globbed: Vec<PatternRef>,
    by_name: FxHashMap<(String, String), Vec<usize>>,
    /// Predictions with placeholders in an action or resource, or in the
    /// object's name: always candidates.
    wild: Vec<usize>,
    agents: Vec<Option<String>>,
    ids: Vec<String>,
    times: Vec<Option<jiff::Timestamp>>,
}

/// Confidence, same object, grants matched, predicted grants missed (fewer
/// is better): compared in that order.
type Score = (Confidence, bool, usize, std::cmp::Reverse<usize>);

/// What one candidate covers of a change: per gained grant, and per
/// predicted grant of its own.
struct Cover {
    covered: Vec<bool>,
    hit: Vec<bool>,
}

/// The best explanation found for a change.
#[derive(Clone, Debug)]
pub struct Match {
    pub suggestion: String,
    pub agent: Option<String>,
    pub confidence: Confidence,
    pub evidence: Vec<Evidence>,
    pub beyond: Vec<Grant>,
}

fn diff_lines(text: &str, sign: char) -> Vec<String> {
    let header = if sign == '+' { "+++" } else { "---" };
    text.lines()
        .filter(|l| l.starts_with(sign) && !l.starts_with(header))
        .map(|l| l[1..].trim().to_owned())
        .collect()
}

/// Same lines, each predicted one standing for a distinct observed one.
fn same_lines(predicted: &[String], observed: &[String]) -> bool {
    if predicted.len() != observed.len() {
        return false;
    }
    let mut used = vec![false; observed.len()];
    predicted.iter().all(|p| {
        let hit = observed
            .iter()
            .enumerate()
            .find(|(i, o)| !used[*i] && placeholder::matches(p, o));
        match hit {
            Some((i, _)) => {
                used[i] = true;
                true
            }
            None => false,
        }
    })
}

impl<'a> Index<'a> {
    pub fn new(
        predictions: &'a [Prediction],
        suggestions: &[super::suggestion::Suggestion],
    ) -> Self {
        let mut items = Vec::with_capacity(predictions.len());
        let mut by_grant = ByGrant::default();
        let mut by_subject: FxHashMap<String, ByGrant> = FxHashMap::default();
        let mut patterns_by_subject: FxHashMap<String, ByGrant<PatternRef>> = FxHashMap::default();
        let mut patterns_by_grant: ByGrant<PatternRef> = ByGrant::default();
        let mut patterns_globbed = Vec::new();
        let mut by_name: FxHashMap<(String, String), Vec<usize>> = FxHashMap::default();
        let mut wild = Vec::new();
        for (i, p) in predictions.iter().enumerate() {
            let grants: Vec<Key> = p.change.gained.iter().map(Key::of).collect();
            let mut is_wild = false;
            let mut seen = FxHashSet::default();
            for g in &grants {
                if placeholder::has_placeholder(g.action)
                    || placeholder::has_placeholder(g.resource)
                {
                    is_wild = true;
                } else if p.any_subject || placeholder::has_placeholder(g.subject) {
                    if seen.insert((None, g.action, g.resource)) {
                        insert(&mut by_grant, g.action, g.resource, i);
                    }
                } else if seen.insert((Some(g.subject), g.action, g.resource)) {
                    let grants = by_subject.entry(g.subject.to_owned()).or_default();
                    insert(grants, g.action, g.resource, i);
                }
            }
            let name = p
                .change
                .object
                .arn
                .clone()
                .unwrap_or_else(|| p.change.object.name.clone());
            if placeholder::has_placeholder(&name) {
                // Met through its grants when it has indexable ones.
                is_wild |= seen.is_empty();
            } else {
                by_name
                    .entry((p.change.object.kind.clone(), name))
                    .or_default()
                    .push(i);
            }
            if is_wild {
                wild.push(i);
            }
            let item = Indexed::new(p, &grants);
            for (j, pattern) in item.grants.iter().enumerate() {
                match (&pattern.action, &pattern.resource, &pattern.subject) {
                    (Field::Literal(a), Field::Literal(r), Field::Literal(subject))
                        if !p.any_subject =>
                    {
                        let grants = patterns_by_subject.entry(subject.clone()).or_default();
                        insert(grants, a, r, (i, j));
                    }
                    (Field::Literal(a), Field::Literal(r), _) => {
                        insert(&mut patterns_by_grant, a, r, (i, j));
                    }
                    _ => patterns_globbed.push((i, j)),
                }
            }
            items.push(item);
        }
        Index {
            items,
            by_subject,
            by_grant,
            patterns_by_subject,
            patterns_by_grant,
            patterns_globbed,
            by_name,
            wild,
            agents: suggestions.iter().map(|s| s.agent.clone()).collect(),
            ids: suggestions.iter().map(|s| s.id.clone()).collect(),
            times: suggestions.iter().map(|s| s.at).collect(),
        }
    }

    /// Which of `change`'s gained grants each candidate covers, and which of
    /// its own grants were observed: one pass over the gained grants, each
    /// meeting only the patterns that could cover it (its subject's, the
    /// placeholder subjects', the globbed), not one pass per candidate.
    fn cover(&self, change: &Change, candidates: &[usize]) -> Vec<Cover> {
        let slot: FxHashMap<usize, usize> = candidates
            .iter()
            .enumerate()
            .map(|(slot, &i)| (i, slot))
            .collect();
        let mut covers: Vec<Cover> = candidates
            .iter()
            .map(|&i| Cover {
                covered: vec![false; change.gained.len()],
                hit: vec![false; self.items[i].grants.len()],
            })
            .collect();
        for (g, grant) in change.gained.iter().enumerate() {
            let o = Key::of(grant);
            let by_subject = self
                .patterns_by_subject
                .get(o.subject)
                .map_or(&[][..], |m| lookup(m, o.action, o.resource));
            let by_grant = lookup(&self.patterns_by_grant, o.action, o.resource);
            for &(i, j) in by_subject
                .iter()
                .chain(by_grant)
                .chain(&self.patterns_globbed)
            {
                let Some(&slot) = slot.get(&i) else { continue };
                let item = &self.items[i];
                if item.grants[j].covers(&o, item.p.any_subject) {
                    covers[slot].covered[g] = true;
                    covers[slot].hit[j] = true;
                }
            }
        }
        covers
    }

    /// The best explanation of `change`; `at` is when it was made, if known.
    pub fn best(
        &self,
        change: &Change,
        at: Option<jiff::Timestamp>,
        window: jiff::SignedDuration,
    ) -> Option<Match> {
        if self.items.is_empty() {
            return None;
        }
        let mut candidates: Vec<usize> = self.wild.clone();
        let name = change
            .object
            .arn
            .clone()
            .unwrap_or_else(|| change.object.name.clone());
        if let Some(v) = self.by_name.get(&(change.object.kind.clone(), name)) {
            candidates.extend(v);
        }
        for g in &change.gained {
            candidates.extend(lookup(&self.by_grant, &g.action, &g.resource));
            let subject = if g.latent {
                "(role)"
            } else {
                g.subject.as_str()
            };
            if let Some(grants) = self.by_subject.get(subject) {
                candidates.extend(lookup(grants, &g.action, &g.resource));
            }
        }
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_unstable();
        candidates.dedup();
        // Time filters only where both times are known.
        candidates.retain(|&i| {
            let s = self.times[self.items[i].p.suggestion];
            !matches!((at, s), (Some(t), Some(s)) if t < s || t.duration_since(s) > window)
        });
        let covers = self.cover(change, &candidates);
        let observed = change.gained.len();
        let added = diff_lines(&change.text_diff, '+');
        let removed = diff_lines(&change.text_diff, '-');
        let mut best: Option<(Score, usize, Vec<bool>)> = None;
        for (i, Cover { covered, hit }) in candidates.into_iter().zip(covers) {
            let item = &self.items[i];
            let p = item.p;
            let predicted_hit = hit.iter().filter(|h| **h).count();
            let same_object = p.change.object.kind == change.object.kind
                && placeholder::matches(&p.change.object.name, &change.object.name)
                && match (&p.change.object.namespace, &change.object.namespace) {
                    (Some(a), Some(b)) => placeholder::matches(a, b),
                    (None, None) => true,
                    _ => false,
                }
                && match (&p.change.object.arn, &change.object.arn) {
                    (Some(a), Some(b)) => placeholder::matches(a, b),
                    (None, None) => true,
                    _ => false,
                };
            let hits = covered.iter().filter(|c| **c).count();
            let exact = same_object
                && same_lines(&item.added, &added)
                && same_lines(&item.removed, &removed);
            let confidence = if exact {
                Confidence::Exact
            } else if hits > 0 && hits == observed && predicted_hit == item.grants.len() {
                Confidence::Strong
            } else if hits > 0 && (2 * predicted_hit >= item.grants.len() || 2 * hits >= observed) {
                Confidence::Partial
            } else {
                continue;
            };
            let missed = item.grants.len() - predicted_hit;
            let score = (confidence, same_object, hits, std::cmp::Reverse(missed));
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, i, covered));
            }
        }
        let ((mut confidence, ..), i, covered) = best?;
        // More applied than suggested is partial, however alike the object.
        if covered.iter().any(|c| !c) {
            confidence = Confidence::Partial;
        }
        let p = self.items[i].p;
        let mut matched = Vec::new();
        let mut beyond = Vec::new();
        for (g, c) in change.gained.iter().zip(covered) {
            if c {
                matched.push(g.clone());
            } else {
                beyond.push(g.clone());
            }
        }
        Some(Match {
            suggestion: self.ids[p.suggestion].clone(),
            agent: self.agents[p.suggestion].clone(),
            confidence,
            // The matched grants once, on the first action that wrote the object.
            evidence: p
                .origins
                .iter()
                .enumerate()
                .map(|(i, o)| Evidence {
                    location: o.location.clone(),
                    text: o.text.clone(),
                    grants: if i == 0 { matched.clone() } else { Vec::new() },
                })
                .collect(),
            beyond,
        })
    }
}
