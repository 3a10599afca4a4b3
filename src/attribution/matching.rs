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

/// Indices by action, then resource: looked up with borrowed strings, so a
/// lookup per observed grant copies nothing.
type ByGrant = FxHashMap<String, FxHashMap<String, Vec<usize>>>;

fn lookup<'m>(map: &'m ByGrant, action: &str, resource: &str) -> &'m [usize] {
    map.get(action)
        .and_then(|m| m.get(resource))
        .map_or(&[][..], Vec::as_slice)
}

fn insert(map: &mut ByGrant, action: &str, resource: &str, i: usize) {
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
    /// Patterns by literal (action, resource); the rest are in `globbed`.
    by_action: ByGrant,
    globbed: Vec<usize>,
    added: Vec<String>,
    removed: Vec<String>,
}

impl Indexed<'_> {
    fn new<'p>(p: &'p Prediction, keys: &[Key<'_>]) -> Indexed<'p> {
        let grants: Vec<Pattern> = keys.iter().map(Pattern::of).collect();
        let mut by_action = ByGrant::default();
        let mut globbed = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            match (&g.action, &g.resource) {
                (Field::Literal(a), Field::Literal(r)) => insert(&mut by_action, a, r, i),
                _ => globbed.push(i),
            }
        }
        Indexed {
            p,
            grants,
            by_action,
            globbed,
            added: diff_lines(&p.change.text_diff, '+'),
            removed: diff_lines(&p.change.text_diff, '-'),
        }
    }

    /// Which observed grants this prediction covers, and how many of its
    /// own grants were observed: each observed grant meets only the patterns
    /// of its own (action, resource) and the globbed ones.
    fn cover(&self, observed: &[Key<'_>]) -> (Vec<bool>, usize) {
        let mut hit = vec![false; self.grants.len()];
        let covered = observed
            .iter()
            .map(|o| {
                let same = lookup(&self.by_action, o.action, o.resource);
                let mut any = false;
                for &i in same.iter().chain(&self.globbed) {
                    if self.grants[i].covers(o, self.p.any_subject) {
                        hit[i] = true;
                        any = true;
                    }
                }
                any
            })
            .collect();
        (covered, hit.iter().filter(|h| **h).count())
    }
}

pub struct Index<'a> {
    items: Vec<Indexed<'a>>,
    by_grant: ByGrant,
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
                } else if seen.insert((g.action, g.resource)) {
                    insert(&mut by_grant, g.action, g.resource, i);
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
            items.push(Indexed::new(p, &grants));
        }
        Index {
            items,
            by_grant,
            by_name,
            wild,
            agents: suggestions.iter().map(|s| s.agent.clone()).collect(),
            ids: suggestions.iter().map(|s| s.id.clone()).collect(),
            times: suggestions.iter().map(|s| s.at).collect(),
        }
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
        }
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let observed: Vec<Key> = change.gained.iter().map(Key::of).collect();
        let added = diff_lines(&change.text_diff, '+');
        let removed = diff_lines(&change.text_diff, '-');
        let mut best: Option<(Score, usize, Vec<bool>)> = None;
        for i in candidates {
            let item = &self.items[i];
            let p = item.p;
            // Time filters only where both times are known.
            if let (Some(t), Some(s)) = (at, self.times[p.suggestion])
                && (t < s || t.duration_since(s) > window)
            {
                continue;
            }
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
            let (covered, predicted_hit) = item.cover(&observed);
            let hits = covered.iter().filter(|c| **c).count();
            let exact = same_object
                && same_lines(&item.added, &added)
                && same_lines(&item.removed, &removed);
            let confidence = if exact {
                Confidence::Exact
            } else if hits > 0 && hits == observed.len() && predicted_hit == item.grants.len() {
                Confidence::Strong
            } else if hits > 0
                && (2 * predicted_hit >= item.grants.len() || 2 * hits >= observed.len())
            {
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
