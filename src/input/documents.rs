//! Splitting one file's text into parsed documents, each with the location
//! it starts at: a JSON value or a stream of them, the documents of a
//! multi-document YAML file, or a raw XML API response.

use super::{InputError, xml};
use serde_json::Value;

pub struct Document {
    /// Where the document starts, e.g. `line 12`; empty for a whole-file document.
    pub location: String,
    pub value: Value,
}

pub fn parse(name: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let body = text.trim_start_matches('\u{feff}');
    let first = body.trim_start().chars().next();
    match first {
        None => Ok(Vec::new()),
        Some('{' | '[') => parse_json(name, body),
        Some('<') => Ok(vec![Document {
            location: String::new(),
            value: xml::parse(name, body)?,
        }]),
        Some(_) if body.len() > MAX_YAML_SIZE => Err(InputError::YamlTooLarge {
            path: name.to_owned(),
            size: body.len(),
            limit: MAX_YAML_SIZE,
        }),
        Some(_) => parse_yaml(name, body),
    }
}

/// Largest YAML text read. The YAML parser holds every event of a document
/// before building its value, some 30 times the text in memory (a 64 MiB
/// list peaks near 2 GB); JSON is read item by item and has no such limit
/// beyond `--max-input-size`. 64 MiB holds a 100,000-object cluster export.
pub const MAX_YAML_SIZE: usize = 64 * 1024 * 1024;

fn parse_json(name: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let mut out = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for (i, item) in stream.enumerate() {
        let value = item.map_err(|e| InputError::Syntax {
            path: name.to_owned(),
            line: e.line(),
            column: e.column(),
            message: json_message(&e),
        })?;
        out.push(Document {
            location: if i == 0 {
                String::new()
            } else {
                format!("document {}", i + 1)
            },
            value,
        });
    }
    if out.len() > 1 {
        out[0].location = "document 1".into();
    }
    Ok(out)
}

/// serde_json's message without its own " at line X column Y" suffix.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

/// A line that starts a new YAML document.
fn is_document_start(line: &str) -> bool {
    line == "---"
        || line.starts_with("--- ")
        || line.starts_with("---\t")
        || line.starts_with("---\r")
}

fn is_document_end(line: &str) -> bool {
    line == "..." || line.starts_with("... ") || line.starts_with("...\r")
}

/// Lines that carry nothing but directives, comments and blanks.
fn only_preamble(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_document_end(t)
    })
}

/// [`only_preamble`] once every `---` is taken out, line by line so the
/// text is not copied whole.
fn only_preamble_or_markers(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        if l.contains("---") {
            only_preamble(&l.replace("---", ""))
        } else {
            only_preamble(l)
        }
    })
}

/// Deepest flow nesting accepted; serde_yaml itself stops at 128 but only
/// after libyaml has spent quadratic time on the events.
const MAX_FLOW_DEPTH: usize = 128;

/// Finds the first flow collection (`[` or `{`) nested deeper than
/// [`MAX_FLOW_DEPTH`], skipping quoted scalars and comments. Brackets inside
/// plain scalars (`a[0]`) do not start collections and are not counted.
fn excessive_flow_depth(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut prev = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let node_start = matches!(prev, b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?');
        match c {
            b'[' | b'{' if node_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(super::line_column(bytes, i));
                }
            }
            // Inside a plain scalar: not an indicator, and not a node start for what follows.
            b'[' | b'{' => {
                prev = b'x';
                i += 1;
                continue;
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b'"' | b'\'' if node_start => {
                // Skip the quoted scalar ('' escapes a single quote, \ a double one).
                let quote = c;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\\' && quote == b'"' {
                        i += 1;
                    } else if bytes[i] == quote {
                        if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'#' if matches!(prev, b' ' | b'\t' | b'\n') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                i += 1;
                continue;
            }
            _ => {}
        }
        if !matches!(c, b' ' | b'\t' | b'\r') || prev == b'\n' && c != b' ' {
            prev = c;
        }
        if c == b'\n' {
            prev = b'\n';
        }
        i += 1;
    }
    None
}

fn parse_yaml(name: &str, text: &str) -> Result<Vec<Document>, InputError> {
    if let Some((line, column)) = excessive_flow_depth(text) {
        return Err(InputError::Syntax {
            path: name.to_owned(),
            line,
            column,
            message: format!("nesting deeper than {MAX_FLOW_DEPTH} levels"),
        });
    }
    // Split on document markers ourselves so every error and every object can
    // be given the line its document starts at. Chunks borrow the text: a
    // copy would cost its whole size again.
    let mut chunks: Vec<(usize, &str)> = Vec::new();
    let mut chunk_start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_document_start(bare) {
            // Directives or comments before the first marker belong to the next document.
            if !only_preamble(&text[chunk_start..offset]) {
                chunks.push((start_line, &text[chunk_start..offset]));
            }
            chunk_start = offset;
            start_line = i + 1;
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[chunk_start..]));
    let mut out = Vec::new();
    for (start, chunk) in chunks {
        if only_preamble_or_markers(chunk) {
            continue;
        }
        let value: Value = serde_yaml::from_str(chunk).map_err(|e| {
            let (line, column) = e.location().map_or((start, 1), |l| {
                (start + l.line().saturating_sub(1), l.column())
            });
            InputError::Syntax {
                path: name.to_owned(),
                line,
                column,
                message: yaml_message(&e),
            }
        })?;
        out.push(Document {
            location: format!("line {start}"),
            value,
        });
    }
    Ok(out)
}

/// serde_yaml's message without its own location suffix.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let full = e.to_string();
    match full.find(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_know_their_start_line() {
        let docs = parse("f", "%YAML 1.1\n---\na: 1\n---\n# c\nb: 2\n...\n---\n").unwrap();
        let locs: Vec<_> = docs.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(locs, ["line 2", "line 4"]);
        assert_eq!(docs[1].value["b"], 2);
    }

    #[test]
    fn yaml_error_lines_are_absolute() {
        let Err(InputError::Syntax { line, .. }) = parse("f", "a: 1\n---\nb: 2\nc: [\n") else {
            panic!()
        };
        assert!(line >= 4, "{line}");
    }

    #[test]
    fn json_stream_and_errors() {
        let docs = parse("f", "{\"a\":1}\n{\"b\":2}").unwrap();
        assert_eq!(docs.len(), 2);
        let Err(InputError::Syntax { line, message, .. }) =
            parse("f", "{\n  \"a\": 1,\n  \"b\" 2\n}")
        else {
            panic!()
        };
        assert_eq!(line, 3);
        assert!(message.contains("expected"), "{message}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(matches!(parse("f", &deep), Err(InputError::Syntax { .. })));
        let deep_yaml = format!("a: {}", "[".repeat(100_000));
        let Err(InputError::Syntax { line, column, .. }) = parse("f", &deep_yaml) else {
            panic!()
        };
        assert_eq!((line, column), (1, 4 + MAX_FLOW_DEPTH));
        // Brackets inside plain or quoted scalars are not nesting.
        let fine = format!(
            "a: x{}\nb: \"{}\"\nc: [[1], {{d: [2]}}]\n",
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(parse("f", &fine).is_ok());
    }
}
