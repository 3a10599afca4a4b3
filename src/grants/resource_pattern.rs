//! IAM resource patterns and their set algebra.
//!
//! A statement's `Resource` list gives one glob pattern per entry, a
//! `NotResource` list one complement; a permissions boundary intersects them
//! with its own. Containment, overlap and intersection are decided on the
//! globs alone (`glob`): exactly where one glob contains the other or the two
//! are disjoint; otherwise the intersection is kept as a conjunction
//! ([`ResourcePattern::Within`]), exact as a set of ARNs but not one glob, and
//! comparisons with it are sound but may miss a containment. Such a pattern
//! is "undecided" and reported as a possible grant.

use super::glob;

/// A set of resource ARNs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourcePattern {
    /// One glob (`Resource`).
    Any(String),
    /// Everything but these globs (`NotResource`).
    Not(Vec<String>),
    /// What every glob of `all` matches and no glob of `except` does: an
    /// intersection that no single glob or complement spells.
    Within {
        all: Vec<String>,
        except: Vec<String>,
    },
}

impl ResourcePattern {
    /// The globs all of which match, and those none of which match.
    fn parts(&self) -> (&[String], &[String]) {
        match self {
            ResourcePattern::Any(g) => (std::slice::from_ref(g), &[]),
            ResourcePattern::Not(except) => (&[], except),
            ResourcePattern::Within { all, except } => (all, except),
        }
    }

    /// Whether the pattern matches one concrete ARN. Exact.
    pub fn matches(&self, arn: &str) -> bool {
        let (all, except) = self.parts();
        all.iter().all(|g| glob::matches(g, arn)) && !except.iter().any(|e| glob::matches(e, arn))
    }

    /// Whether every ARN `inner` matches, `self` matches too. Sound: `true`
    /// is certain; `false` may be a containment globs cannot show.
    pub fn covers(&self, inner: &ResourcePattern) -> bool {
        let (all, except) = self.parts();
        let (inner_all, inner_except) = inner.parts();
        // Each of self's globs holds all of inner: "*", or one of inner's globs within it.
        all.iter()
            .all(|g| g == "*" || inner_all.iter().any(|i| glob::covers(g, i)))
            // Each of self's exclusions misses inner: disjoint from one of
            // inner's globs, or within one of inner's own exclusions.
            && except.iter().all(|e| {
                inner_all.iter().any(|i| glob::disjoint(e, i))
                    || inner_except.iter().any(|i| glob::covers(i, e))
            })
    }

    /// Whether the two may share an ARN (`false` only when certainly not).
    pub fn overlaps(&self, other: &ResourcePattern) -> bool {
        self.intersect(other).is_some()
    }

    /// The ARNs both match, or `None` when they certainly share none. Exact
    /// as a set; simplified to one glob or a complement whenever the globs
    /// decide it.
    pub fn intersect(&self, other: &ResourcePattern) -> Option<ResourcePattern> {
        let (a_all, a_except) = self.parts();
        let (b_all, b_except) = other.parts();
        let mut all: Vec<&str> = a_all
            .iter()
            .chain(b_all)
            .map(String::as_str)
            .filter(|g| *g != "*")
            .collect();
        all.sort_unstable();
        all.dedup();
        for (i, a) in all.iter().enumerate() {
            if all[i + 1..].iter().any(|b| glob::disjoint(a, b)) {
                return None;
            }
        }
        // A glob containing another adds nothing to the conjunction.
        let mut kept: Vec<&str> = Vec::with_capacity(all.len());
        for (i, g) in all.iter().enumerate() {
            let wider = all.iter().enumerate().any(|(j, other)| {
                j != i && glob::covers(g, other) && (j > i || kept.contains(other))
            });
            if !wider {
                kept.push(g);
            }
        }
        let mut except: Vec<&str> = a_except
            .iter()
            .chain(b_except)
            .map(String::as_str)
            .collect();
        if except
            .iter()
            .any(|e| *e == "*" || kept.iter().any(|g| glob::covers(e, g)))
        {
            return None;
        }
        // An exclusion the globs never reach is moot; one within another is redundant.
        except.retain(|e| !kept.iter().any(|g| glob::disjoint(e, g)));
        except.sort_unstable();
        except.dedup();
        let mut narrow: Vec<&str> = Vec::with_capacity(except.len());
        for (i, e) in except.iter().enumerate() {
            let within = except.iter().enumerate().any(|(j, other)| {
                j != i && glob::covers(other, e) && (j > i || narrow.contains(other))
            });
            if !within {
                narrow.push(e);
            }
        }
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<String>>();
        Some(match (kept.len(), narrow.is_empty()) {
            (0, true) => ResourcePattern::Any("*".into()),
            (0, false) => ResourcePattern::Not(owned(narrow)),
            (1, true) => ResourcePattern::Any(kept[0].to_owned()),
            _ => ResourcePattern::Within {
                all: owned(kept),
                except: owned(narrow),
            },
        })
    }

    /// Whether the pattern is an intersection of globs neither of which
    /// contains the other: its grants are reported as possible.
    pub fn is_undecided(&self) -> bool {
        matches!(self, ResourcePattern::Within { all, .. } if all.len() > 1)
    }

    pub fn display(&self) -> String {
        match self {
            ResourcePattern::Any(r) => r.clone(),
            ResourcePattern::Not(list) => format!("NOT {}", list.join(", ")),
            ResourcePattern::Within { all, except } if except.is_empty() => all.join(" AND "),
            ResourcePattern::Within { all, except } => {
                format!("{} AND NOT {}", all.join(" AND "), except.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any(g: &str) -> ResourcePattern {
        ResourcePattern::Any(g.into())
    }

    #[test]
    fn intersections_simplify_where_globs_decide() {
        let bucket = any("arn:aws:s3:::acme-dev-*");
        assert_eq!(any("*").intersect(&bucket), Some(bucket.clone()));
        assert_eq!(
            bucket.intersect(&any("arn:aws:s3:::acme-dev-*/x")),
            Some(any("arn:aws:s3:::acme-dev-*/x"))
        );
        assert_eq!(bucket.intersect(&any("arn:aws:s3:::prod/*")), None);
        assert_eq!(
            ResourcePattern::Not(vec!["arn:aws:s3:::acme-*".into()]).intersect(&bucket),
            None
        );
        assert_eq!(
            ResourcePattern::Not(vec!["arn:aws:iam::*".into()]).intersect(&bucket),
            Some(bucket.clone())
        );
        let both = any("arn:aws:s3:::a*")
            .intersect(&any("arn:aws:s3:::*z"))
            .unwrap();
        assert!(both.is_undecided());
        assert!(both.matches("arn:aws:s3:::abz") && !both.matches("arn:aws:s3:::ab"));
        assert_eq!(both.display(), "arn:aws:s3:::*z AND arn:aws:s3:::a*");
    }

    fn glob_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab*?]{0,4}").unwrap()
    }

    fn pattern() -> impl Strategy<Value = ResourcePattern> {
        prop_oneof![
            glob_strategy().prop_map(ResourcePattern::Any),
            proptest::collection::vec(glob_strategy(), 1..3).prop_map(ResourcePattern::Not),
            (
                proptest::collection::vec(glob_strategy(), 2..3),
                proptest::collection::vec(glob_strategy(), 0..2)
            )
                .prop_map(|(all, except)| ResourcePattern::Within { all, except }),
        ]
    }

    proptest! {
        // The intersection matches exactly what both match; `None` only when nothing does.
        #[test]
        fn intersection_is_exact(a in pattern(), b in pattern(), w in "[ab]{0,5}") {
            let both = a.matches(&w) && b.matches(&w);
            match a.intersect(&b) {
                Some(i) => prop_assert_eq!(i.matches(&w), both),
                None => prop_assert!(!both),
            }
        }

        #[test]
        fn covers_is_sound(a in pattern(), b in pattern(), w in "[ab]{0,5}") {
            if a.covers(&b) && b.matches(&w) {
                prop_assert!(a.matches(&w));
            }
        }
    }
}
