//! Suggestions: the text an agent produced (a forum answer, a chat reply),
//! and the actions it proposes.
//!
//! Text goes in (bounded, never executed); out come the metadata from the
//! optional YAML front matter, the code blocks and inline commands found by
//! pulldown-cmark, the actions parsed from them (`actions`), and what could
//! not be parsed, reported rather than guessed.

use super::actions::{self, Action};
use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use serde::Deserialize;

/// Largest suggestion accepted: an answer is prose and a few blocks.
pub const MAX_SUGGESTION_BYTES: usize = 256 * 1024;
/// Most actions taken from one suggestion; the rest are reported as skipped.
pub const MAX_ACTIONS: usize = 500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SuggestionError {
    #[error("{name}: {size} bytes, over the {max}-byte limit for a suggestion")]
    TooLarge {
        name: String,
        size: usize,
        max: usize,
    },
    #[error("{name}: binary content (not UTF-8 text), refused")]
    Binary { name: String },
    #[error("{name}: front matter line {line}: {message}")]
    FrontMatter {
        name: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    id: Option<String>,
    agent: Option<String>,
    at: Option<jiff::Timestamp>,
    url: Option<String>,
}

/// A block of code (or an inline command) and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The fence's info string (`sh`, `yaml`, `json`), empty when none.
    pub lang: String,
    pub text: String,
    /// 1-based line of the block's first line in the file.
    pub line: usize,
    /// The prose just before the block (for `file://x.json` look-ups).
    pub preceding: String,
    pub inline: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    pub id: String,
    /// File name as given, for evidence locations.
    pub file: String,
    pub agent: Option<String>,
    pub at: Option<jiff::Timestamp>,
    pub url: Option<String>,
    pub actions: Vec<Action>,
    /// Commands and blocks that look like actions but were not understood.
    pub skipped: Vec<String>,
}

/// Parses one suggestion. `file` names it in errors and evidence; `stem`
/// is the id when the front matter gives none.
pub fn parse(file: &str, stem: &str, bytes: &[u8]) -> Result<Suggestion, SuggestionError> {
    if bytes.len() > MAX_SUGGESTION_BYTES {
        return Err(SuggestionError::TooLarge {
            name: file.to_owned(),
            size: bytes.len(),
            max: MAX_SUGGESTION_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| SuggestionError::Binary {
            name: file.to_owned(),
        })?;
    let (front, body, body_line) = split_front_matter(file, text)?;
    let blocks = blocks(body, body_line);
    let (actions, mut skipped) = actions::parse_blocks(file, &blocks);
    let mut actions = actions;
    if actions.len() > MAX_ACTIONS {
        skipped.push(format!(
            "{} actions past the first {MAX_ACTIONS} ignored",
            actions.len() - MAX_ACTIONS
        ));
        actions.truncate(MAX_ACTIONS);
    }
    Ok(Suggestion {
        id: front.id.unwrap_or_else(|| stem.to_owned()),
        file: file.to_owned(),
        agent: front.agent,
        at: front.at,
        url: front.url,
        actions,
        skipped,
    })
}

/// The front matter (between `---` lines at the very start), the body, and
/// the body's first line number.
fn split_front_matter<'t>(
    file: &str,
    text: &'t str,
) -> Result<(FrontMatter, &'t str, usize), SuggestionError> {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok((FrontMatter::default(), text, 1));
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            let front: FrontMatter = if yaml.trim().is_empty() {
                FrontMatter::default()
            } else {
                serde_yaml::from_str(yaml).map_err(|e| SuggestionError::FrontMatter {
                    name: file.to_owned(),
                    // +1 for the opening `---`.
                    line: e.location().map_or(1, |l| l.line() + 1),
                    message: e.to_string(),
                })?
            };
            let body_line = 2 + yaml.lines().count() + 1;
            return Ok((front, body, body_line));
        }
        offset += line.len();
    }
    Err(SuggestionError::FrontMatter {
        name: file.to_owned(),
        line: 1,
        message: "`---` opens front matter that no `---` line closes".into(),
    })
}

fn blocks(body: &str, first_line: usize) -> Vec<Block> {
    let line_of = |offset: usize| first_line + body[..offset.min(body.len())].matches('\n').count();
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut current: Option<Block> = None;
    for (event, range) in Parser::new(body).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split_whitespace().next().unwrap_or("").to_owned()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                // The fence line itself comes first; the code starts below it.
                let fenced = !lang.is_empty() || body[range.clone()].starts_with("```");
                current = Some(Block {
                    lang,
                    text: String::new(),
                    line: line_of(range.start) + usize::from(fenced),
                    preceding: std::mem::take(&mut prose),
                    inline: false,
                });
            }
            Event::Text(t) => match current.as_mut() {
                Some(b) => b.text.push_str(&t),
                None => prose.push_str(&t),
            },
            Event::End(TagEnd::CodeBlock) => out.extend(current.take()),
            Event::Code(code) if current.is_none() => {
                prose.push_str(&code);
                let c = code.trim();
                if c.starts_with("kubectl ") || c.starts_with("aws iam ") {
                    out.push(Block {
                        lang: "sh".into(),
                        text: c.to_owned(),
                        line: line_of(range.start),
                        preceding: prose.clone(),
                        inline: true,
                    });
                }
            }
            Event::SoftBreak | Event::HardBreak => prose.push(' '),
            _ => {}
        }
        // Only the recent prose says what the next block is.
        if prose.len() > 2048 {
            let cut = prose.len() - 1024;
            let cut = (cut..prose.len())
                .find(|i| prose.is_char_boundary(*i))
                .unwrap_or(0);
            prose.drain(..cut);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_gives_metadata_and_the_stem_is_the_default_id() {
        let s = parse(
            "a.md",
            "a",
            b"---\nagent: devhelper\nat: 2026-11-19T11:31:00Z\n---\nhi\n",
        )
        .unwrap();
        assert_eq!(s.id, "a");
        assert_eq!(s.agent.as_deref(), Some("devhelper"));
        assert!(s.at.is_some());
        let err = parse("b.md", "b", b"---\nagnt: x\n---\n").unwrap_err();
        assert!(
            err.to_string().contains("b.md: front matter line 2"),
            "{err}"
        );
    }

    #[test]
    fn oversized_and_binary_text_is_refused() {
        let big = vec![b'a'; MAX_SUGGESTION_BYTES + 1];
        assert!(matches!(
            parse("big.md", "big", &big),
            Err(SuggestionError::TooLarge { .. })
        ));
        assert!(matches!(
            parse("bin.md", "bin", b"\x89PNG\r\n\x1a\n\0\0"),
            Err(SuggestionError::Binary { .. })
        ));
    }

    #[test]
    fn blocks_and_inline_commands_carry_their_lines() {
        let text = "Run `kubectl create ns x` or:\n\n```sh\nkubectl get pods\n```\n";
        let b = blocks(text, 1);
        assert_eq!(b.len(), 2);
        assert!(b[0].inline);
        assert_eq!(b[1].line, 4);
        assert_eq!(b[1].text, "kubectl get pods\n");
    }

    use proptest::prelude::*;

    proptest! {
        /// Any text, however broken its markdown, fences, quotes or heredocs,
        /// parses to a result without panicking, and what is parsed points
        /// inside the text.
        #[test]
        fn any_text_parses_without_panic(
            text in "(```|```sh\n|```yaml\n|kubectl create |aws iam |<<EOF\n|EOF\n|---\n|'|\"|\\\n|--verb=get |--role-name r |-n x |[a-z:=/{}\\[\\] ]{0,8}|\n){0,40}"
        ) {
            let lines = text.lines().count() + 1;
            if let Ok(s) = parse("p.md", "p", text.as_bytes()) {
                for a in &s.actions {
                    let line: usize = a.origin.location.rsplit(':').next().unwrap().parse().unwrap();
                    prop_assert!(line >= 1 && line <= lines + 1, "{} of {lines}", a.origin.location);
                }
            }
        }
    }
}
