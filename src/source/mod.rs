//! Live sources: read access-control state from running systems and hand it on
//! in the same document shape the file inputs use, so the pure core never knows
//! whether a snapshot came from an API or from a file.

pub mod aws;
pub mod k8s;

/// An error and its causes as one line, for a user: each cause's text passes
/// through `clean` (which drops a client library's wrapper words, or the
/// whole text with `None`), and a cause that repeats its parent is left out.
pub(crate) fn chain_text(
    err: &(dyn std::error::Error + 'static),
    clean: impl Fn(String) -> Option<String>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        next = e.source();
        let Some(text) = clean(e.to_string()) else {
            continue;
        };
        let repeats = parts.last().is_some_and(|last| last.contains(&text));
        if !text.is_empty() && !repeats {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        return "no details".into();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    /// An error with a text and an optional cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |cause, text| Some(Layer(text, cause.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn causes_are_joined_without_wrappers_repeats_or_blanks() {
        let err = chain(&[
            "cannot list roles",
            "dispatch failure",
            "",
            "connection refused (os error 111)",
            "connection refused",
        ]);
        let text = chain_text(&err, |t| (t != "dispatch failure").then_some(t));
        assert_eq!(text, "cannot list roles: connection refused (os error 111)");
        let strip = chain_text(&chain(&["HyperError: tls handshake"]), |t| {
            Some(t.trim_start_matches("HyperError: ").to_owned())
        });
        assert_eq!(strip, "tls handshake");
        assert_eq!(chain_text(&chain(&["other"]), |_| None), "no details");
    }
}
