//! Placeholders: the stand-ins an answer writes where the reader fills in a
//! value (`<ns>`, `${NS}`, `$NS`, `YOUR_ACCOUNT_ID`, `my-role`, `example-*`).
//!
//! A suggested string goes in; a glob comes out in which each placeholder is
//! `*`, so a suggested name matches whatever value was actually applied.

use crate::grants::glob;

/// Whether `s` holds any placeholder.
pub fn has_placeholder(s: &str) -> bool {
    to_glob(s) != s
}

/// `s` with each placeholder replaced by `*`. Segments are split at the
/// separators of names, ARNs and paths (`:`, `/`, `.`, `@`), and each
/// segment is a placeholder as a whole (`my-role`, `example-bucket`,
/// `YOUR_ACCOUNT_ID`) or holds one (`<ns>`, `${NS}`, `$NS`).
pub fn to_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut segment = String::new();
    for c in s.chars() {
        if matches!(c, ':' | '/' | '@' | ',' | ' ') {
            out.push_str(&segment_glob(&segment));
            segment.clear();
            out.push(c);
        } else {
            segment.push(c);
        }
    }
    out.push_str(&segment_glob(&segment));
    out
}

fn whole_placeholder(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    (lower.starts_with("my-") && lower.len() > 3)
        || (lower.starts_with("example-") && lower.len() > 8)
        || lower == "example"
        || (seg.starts_with("YOUR_") || seg.starts_with("YOUR-"))
        || seg.starts_with("your-")
        || seg == "123456789012"
        || seg == "ACCOUNT_ID"
        || seg == "AWS_ACCOUNT_ID"
}

fn segment_glob(seg: &str) -> String {
    if seg.is_empty() {
        return String::new();
    }
    if whole_placeholder(seg) {
        return "*".into();
    }
    let mut out = String::new();
    let mut rest = seg;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        let skip = match c {
            '<' => after.find('>').map(|end| end + 2),
            '$' if after.starts_with('{') => after.find('}').map(|end| end + 2),
            '$' => {
                let n = after
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (n > 0).then_some(n + 1)
            }
            _ => None,
        };
        match skip {
            Some(n) => {
                if !out.ends_with('*') {
                    out.push('*');
                }
                rest = &rest[n..];
            }
            None => {
                out.push(c);
                rest = after;
            }
        }
    }
    out
}

/// Whether the suggested value `suggested` (placeholders in it) stands for
/// the applied value `actual`. A literal `*` in `suggested` that is not a
/// placeholder is compared literally only when `actual` has one too, which
/// the glob does anyway (a `*` in a pattern matches a `*` in the text).
pub fn matches(suggested: &str, actual: &str) -> bool {
    if suggested == actual {
        return true;
    }
    let pattern = to_glob(suggested);
    pattern != suggested && glob::matches(&pattern, actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_wildcards() {
        assert_eq!(to_glob("<ns>"), "*");
        assert_eq!(to_glob("${NS}-reader"), "*-reader");
        assert_eq!(to_glob("$NS"), "*");
        assert_eq!(
            to_glob("arn:aws:iam::YOUR_ACCOUNT_ID:role/my-role"),
            "arn:aws:iam::*:role/*"
        );
        assert_eq!(to_glob("example-bucket"), "*");
        assert_eq!(to_glob("engineering"), "engineering");
        assert!(!has_placeholder("system:serviceaccount:payments:deployer"));
    }

    #[test]
    fn matching_is_literal_without_placeholders() {
        assert!(matches("<ns>", "payments"));
        assert!(matches(
            "arn:aws:iam::YOUR_ACCOUNT_ID:role/x",
            "arn:aws:iam::1:role/x"
        ));
        assert!(!matches(
            "arn:aws:iam::YOUR_ACCOUNT_ID:role/x",
            "arn:aws:iam::1:role/y"
        ));
        assert!(!matches("payments", "billing"));
        // A real wildcard in an answer is not a placeholder for anything.
        assert!(!matches("*", "secrets"));
    }

    use proptest::prelude::*;

    proptest! {
        /// A placeholder anywhere in a name stands for any value there, and
        /// the rest of the name still has to match.
        #[test]
        fn a_placeholder_stands_for_any_value(
            prefix in "[a-z]{0,6}",
            value in "[a-z0-9][a-z0-9-]{0,12}",
            suffix in "[a-z]{0,6}",
            form in 0usize..3,
        ) {
            let placeholder = ["<name>", "${NAME}", "$NAME"][form];
            let suggested = format!("{prefix}{placeholder}-{suffix}");
            let actual = format!("{prefix}{value}-{suffix}");
            prop_assert!(matches(&suggested, &actual), "{suggested} vs {actual}");
            let other = format!("{prefix}{value}-{suffix}x");
            prop_assert!(!matches(&suggested, &other), "{suggested} vs {other}");
        }

        /// Without placeholders, matching is equality.
        #[test]
        fn literal_names_match_only_themselves(a in "[a-z][a-z0-9-]{0,15}", b in "[a-z][a-z0-9-]{0,15}") {
            prop_assume!(!a.starts_with("my-") && !a.starts_with("example"));
            prop_assert_eq!(matches(&a, &b), a == b);
        }
    }
}
