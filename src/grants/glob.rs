//! IAM-style globs (`*` any run, `?` one character): matching a string, and
//! deciding syntactically whether one glob's language contains another's.
//! Used for action patterns (case-insensitive, callers lower-case) and ARN
//! patterns (case-sensitive).
//!
//! Containment, and matching of long strings, run the pattern as an
//! automaton over the other string with one bit per pattern position, a
//! machine word holding 64 of them: the cost is `len(a) * len(b) / 64` word
//! operations and `len(a) / 8` bytes per distinct byte of `b`, never a
//! `len(a) * len(b)` table. Inputs bound the lengths
//! (`model::iam_policy::MAX_PATTERN_LEN`), which bounds the cost.

/// Below this many `pattern * text` bytes the single-backtrack loop is
/// cheaper than building the automaton.
const SMALL_MATCH: usize = 4096;

/// Whether `pattern` matches `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    if p.len().saturating_mul(t.len()) > SMALL_MATCH {
        Automaton::new(p, t, Text::Literal).accepts(t)
    } else {
        matches_backtracking(p, t)
    }
}

/// Classic wildcard matching with a single backtrack point; quadratic in
/// the worst case, hence only for short inputs.
fn matches_backtracking(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A pattern `*` is always a wildcard, even facing a `*` in the text.
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
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
    let i = inner.as_bytes();
    Automaton::new(outer.as_bytes(), i, Text::Glob).accepts(i)
}

/// How the string an [`Automaton`] reads is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// Every byte is itself (matching).
    Literal,
    /// `*` and `?` are wildcards (containment): a `*` is absorbed only by a
    /// pattern `*`, a `?` by a pattern `?` or `*`.
    Glob,
}

/// A pattern as a nondeterministic automaton whose state set is a bit
/// vector: bit `j` set means the pattern's first `j` tokens (after merging
/// runs of `*`) account for everything read so far.
struct Automaton {
    words: usize,
    /// Number of pattern tokens; bit `len` is the accepting state.
    len: usize,
    /// Positions holding `*` (never two in a row).
    star: Vec<u64>,
    /// Positions holding `?`.
    any: Vec<u64>,
    /// For each byte of the text (by `slot`), the positions holding it.
    literal: Vec<u64>,
    slot: [u16; 256],
    text: Text,
}

const NO_SLOT: u16 = u16::MAX;

impl Automaton {
    fn new(pattern: &[u8], text_bytes: &[u8], text: Text) -> Self {
        // `**` accepts what `*` does; merged, a `*` is never followed by
        // another, so one step closes the state set over empty matches.
        let mut tokens: Vec<u8> = Vec::with_capacity(pattern.len());
        for &b in pattern {
            if !(b == b'*' && tokens.last() == Some(&b'*')) {
                tokens.push(b);
            }
        }
        let len = tokens.len();
        let words = len / 64 + 1;
        let mut slot = [NO_SLOT; 256];
        let mut distinct: u16 = 0;
        for &b in text_bytes {
            if slot[usize::from(b)] == NO_SLOT {
                slot[usize::from(b)] = distinct;
                distinct += 1;
            }
        }
        let mut star = vec![0u64; words];
        let mut any = vec![0u64; words];
        let mut literal = vec![0u64; usize::from(distinct) * words];
        for (j, &b) in tokens.iter().enumerate() {
            let (w, bit) = (j / 64, 1u64 << (j % 64));
            match b {
                b'*' => star[w] |= bit,
                b'?' => any[w] |= bit,
                _ => {
                    let s = slot[usize::from(b)];
                    if s != NO_SLOT {
                        literal[usize::from(s) * words + w] |= bit;
                    }
                }
            }
        }
        Self {
            words,
            len,
            star,
            any,
            literal,
            slot,
            text,
        }
    }

    fn accepts(&self, text: &[u8]) -> bool {
        let mut state = vec![0u64; self.words];
        state[0] = 1;
        self.close(&mut state);
        // Only words `low..=high` can matter. A state moves one position at
        // a time, so every later match through an earlier position passes the
        // highest `*` reached, and that `*` stays reached (it absorbs
        // anything): words below it are redundant and never read again
        // (`low`). Positions rise by at most one per byte (`high`). The
        // window is the longest run without `*`, which makes ordinary ARN
        // globs linear.
        let mut low = 0;
        let mut high = 0;
        for &byte in text {
            // Which positions step forward on this byte: a `?` (unless the
            // text has a `*` here) and the positions holding this literal.
            let (any, literal) = match (self.text, byte) {
                (Text::Glob, b'*') => (false, None),
                (Text::Glob, b'?') => (true, None),
                _ => {
                    let s = self.slot[usize::from(byte)];
                    (true, (s != NO_SLOT).then(|| usize::from(s) * self.words))
                }
            };
            let mut carry = 0u64;
            let mut star_carry = 0u64;
            let (mut new_low, mut new_high) = (low, None);
            let top = (high + 1).min(self.words - 1);
            for (w, word) in state.iter_mut().enumerate().take(top + 1).skip(low) {
                let current = *word;
                let mut step = if any { self.any[w] } else { 0 };
                if let Some(base) = literal {
                    step |= self.literal[base + w];
                }
                let moved = current & step;
                let mut next = (moved << 1) | carry | (current & self.star[w]);
                carry = moved >> 63;
                // A `*` reached may match nothing: its successor is reached too.
                let stars = next & self.star[w];
                next |= (stars << 1) | star_carry;
                star_carry = stars >> 63;
                *word = next;
                if stars != 0 {
                    new_low = w;
                }
                if next != 0 {
                    new_high = Some(w);
                }
            }
            let Some(h) = new_high else {
                return false;
            };
            (low, high) = (new_low, h);
        }
        let (w, bit) = (self.len / 64, self.len % 64);
        w <= high && state[w] & (1u64 << bit) != 0
    }

    fn close(&self, state: &mut [u64]) {
        let mut star_carry = 0u64;
        for (w, word) in state.iter_mut().enumerate() {
            let stars = *word & self.star[w];
            *word |= (stars << 1) | star_carry;
            star_carry = stars >> 63;
        }
    }
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
        assert!(matches("*", "**"));
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

    /// The containment table this module used before the automaton:
    /// `memo[oi][ii]` = `outer[oi..]` covers `inner[ii..]`. Quadratic, and
    /// the definition the automaton must agree with.
    fn covers_reference(outer: &str, inner: &str) -> bool {
        let o = outer.as_bytes();
        let i = inner.as_bytes();
        let width = i.len() + 1;
        let mut memo = vec![false; (o.len() + 1) * width];
        memo[o.len() * width + i.len()] = true;
        for oi in (0..o.len()).rev() {
            for ii in (0..=i.len()).rev() {
                let value = if o[oi] == b'*' {
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

    #[test]
    fn long_globs_compare_without_a_quadratic_table() {
        // 6 KB each, IAM-sized: the old table was 36 M cells per comparison.
        let prefix = "arn:aws:s3:::bucket/";
        let outer = format!("{prefix}{}", "a*b".repeat(2_000));
        let inner = format!("{prefix}{}", "a?b".repeat(2_000));
        assert!(covers(&outer, &inner));
        assert!(!covers(&outer, &format!("{inner}*")));
        assert!(!covers(&inner, &outer));
        // Word boundaries: a star exactly at bit 63 and 64 of the state.
        for n in 60..70 {
            let outer = format!("{}*", "a".repeat(n));
            assert!(covers(&outer, &format!("{}?*", "a".repeat(n))), "{n}");
            assert!(!covers(&outer, &"a".repeat(n - 1)), "{n}");
        }
    }

    #[test]
    fn long_texts_match_by_automaton() {
        let text = format!("{}b", "a".repeat(10_000));
        assert!(matches(&format!("*{}b", "a".repeat(5_000)), &text));
        assert!(!matches(&format!("*{}c", "a".repeat(5_000)), &text));
        assert!(matches("a*a?b", &text));
    }

    fn glob() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab*?]{0,5}").unwrap()
    }
    /// Longer globs, so states span several 64-bit words.
    fn long_glob() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab*?]{0,12}|[a*]{60,140}|[ab?]{60,140}[*]?").unwrap()
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

        // The automaton decides containment exactly as the table did.
        #[test]
        fn covers_agrees_with_the_reference(outer in glob(), inner in glob()) {
            prop_assert_eq!(covers(&outer, &inner), covers_reference(&outer, &inner));
        }

        #[test]
        fn covers_agrees_with_the_reference_across_words(outer in long_glob(), inner in long_glob()) {
            prop_assert_eq!(covers(&outer, &inner), covers_reference(&outer, &inner));
        }

        // Both matchers agree, whichever `matches` picks by size.
        #[test]
        fn automaton_matching_agrees_with_backtracking(p in long_glob(), t in "[ab*?]{0,150}") {
            let automaton = Automaton::new(p.as_bytes(), t.as_bytes(), Text::Literal).accepts(t.as_bytes());
            prop_assert_eq!(automaton, matches_backtracking(p.as_bytes(), t.as_bytes()));
        }

        #[test]
        fn literal_patterns_cover_exactly_themselves(a in word(), b in word()) {
            prop_assert_eq!(covers(&a, &b), a == b);
        }
    }
}
