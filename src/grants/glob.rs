//! IAM-style globs (`*` any run, `?` one character): matching a string, and
//! deciding syntactically whether one glob's language contains another's.
//! Used for action patterns (case-insensitive, callers lower-case) and ARN
//! patterns (case-sensitive).

/// Whether `pattern` matches `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    // Classic linear-time wildcard matching with a single backtrack point.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Whether every string `inner` matches is also matched by `outer`.
/// Decided on the patterns alone: a `*` in `inner` must meet a `*` in `outer`,
/// a `?` a `?` or `*`, a literal the same literal, `?` or `*`.
pub fn covers(outer: &str, inner: &str) -> bool {
    if outer == inner || outer == "*" {
        return true;
    }
    let o = outer.as_bytes();
    let i = inner.as_bytes();
    // memo[oi][ii]: outer[oi..] covers inner[ii..]
    let width = i.len() + 1;
    let mut memo = vec![false; (o.len() + 1) * width];
    memo[o.len() * width + i.len()] = true;
    for oi in (0..o.len()).rev() {
        for ii in (0..=i.len()).rev() {
            let value = if o[oi] == b'*' {
                // The star matches nothing more, or absorbs inner's next token.
                memo[(oi + 1) * width + ii] || (ii < i.len() && memo[oi * width + ii + 1])
            } else if ii == i.len() || i[ii] == b'*' {
                false
            } else if i[ii] == b'?' {
                o[oi] == b'?' && memo[(oi + 1) * width + ii + 1]
            } else {
                (o[oi] == b'?' || o[oi] == i[ii]) && memo[(oi + 1) * width + ii + 1]
            };
            memo[oi * width + ii] = value;
        }
    }
    memo[0]
}

/// Whether two globs certainly match no common string (conservative: `false`
/// means "may overlap"). Compares the literal prefixes and suffixes.
pub fn disjoint(a: &str, b: &str) -> bool {
    let literal_prefix = |s: &str| s.find(['*', '?']).map_or(s.len(), |i| i);
    let (pa, pb) = (literal_prefix(a), literal_prefix(b));
    let n = pa.min(pb);
    if a.as_bytes()[..n] != b.as_bytes()[..n] {
        return true;
    }
    if !has_wildcard(a) && !has_wildcard(b) {
        return a != b;
    }
    let literal_suffix = |s: &str| s.rfind(['*', '?']).map_or(0, |i| i + 1);
    let (sa, sb) = (&a[literal_suffix(a)..], &b[literal_suffix(b)..]);
    let m = sa.len().min(sb.len());
    sa.as_bytes()[sa.len() - m..] != sb.as_bytes()[sb.len() - m..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matching() {
        assert!(matches("iam:get*", "iam:getuser"));
        assert!(matches("*", ""));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y"));
        assert!(!matches("arn:aws:s3:::b/*", "arn:aws:s3:::b"));
        assert!(matches("*a*b", "xaxxb"));
    }

    #[test]
    fn containment() {
        assert!(covers("arn:aws:s3:::*", "arn:aws:s3:::b/*"));
        assert!(!covers("arn:aws:s3:::b/*", "arn:aws:s3:::*"));
        assert!(covers("a*", "a?c"));
        assert!(!covers("a?c", "a*"));
        assert!(covers("*x*", "ax*x"));
        assert!(!covers("arn:aws:s3:::b", "arn:aws:s3:::b/*"));
    }

    #[test]
    fn disjointness() {
        assert!(disjoint("arn:aws:s3:::a/*", "arn:aws:s3:::b/*"));
        assert!(!disjoint("arn:aws:s3:::*", "arn:aws:s3:::b/*"));
        assert!(disjoint("*.json", "*.yaml"));
        assert!(!disjoint("*", "x"));
    }

    fn glob() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab*?]{0,5}").unwrap()
    }
    fn word() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab]{0,6}").unwrap()
    }

    proptest! {
        // Soundness: if outer covers inner, every word inner matches, outer matches.
        #[test]
        fn covers_is_sound(outer in glob(), inner in glob(), w in word()) {
            if covers(&outer, &inner) && matches(&inner, &w) {
                prop_assert!(matches(&outer, &w));
            }
        }

        // Disjoint globs share no word.
        #[test]
        fn disjoint_is_sound(a in glob(), b in glob(), w in word()) {
            if disjoint(&a, &b) {
                prop_assert!(!(matches(&a, &w) && matches(&b, &w)));
            }
        }

        #[test]
        fn literal_patterns_cover_exactly_themselves(a in word(), b in word()) {
            prop_assert_eq!(covers(&a, &b), a == b);
        }
    }
}
