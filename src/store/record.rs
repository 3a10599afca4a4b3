//! Journal records as bytes: what one line of `journal.jsonl` holds, how its
//! hash is computed, and how a whole journal is checked.
//!
//! Everything here is pure (bytes and strings in, records and verdicts out),
//! so the chain rules are tested without touching a disk. A record's hash is
//! `sha256(prev + "\n" + canonical JSON of the record without "hash")`, where
//! canonical JSON is compact with object keys sorted by their UTF-8 bytes.
//! The line on disk puts fields in a readable order (`seq`, `at`, `kind`,
//! `source`, `body`, `prev`, `mac`, `hash`); verification re-canonicalises
//! what it parsed, so the order on the line carries no meaning.
//!
//! Keyed records: a store opened with a [`JournalKey`] adds
//! `mac = HMAC-SHA256(key, prev + "\n" + canonical JSON without "hash" and
//! "mac")`, and the hash then covers the `mac` field like any other, so the
//! chain (and a head published elsewhere) pins the MACs too. Records written
//! before a key existed have no `mac` and hash exactly as they always did. Once
//! a record carries a MAC, every later one must: a missing MAC after the first
//! is tampering, and is found without the key.

use super::key::JournalKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry. The store does not interpret `body`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first record, then consecutive.
    pub seq: u64,
    /// RFC 3339 time given by the caller (the store reads no clock).
    pub at: String,
    /// `snapshot`, `baseline`, `change`, `note`, ...: lower-case letters, digits, `-`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A JSON object.
    pub body: Value,
    /// Hash of the previous record ([`ZERO_HASH`] for the first).
    pub prev: String,
    /// HMAC of the record under the journal key (absent when written without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub hash: String,
}

/// Why a line could not be taken as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not JSON at all (or cut short): on the last line, the trace of a torn write.
    Syntax(String),
    /// JSON, but not a record, or a record that breaks the chain.
    Invalid(String),
    /// A well-formed record whose MAC does not verify under the key.
    Forged(String),
}

/// A journal that stops being trustworthy at `line`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// 1-based line of `journal.jsonl` (equal to the seq expected there).
    pub line: u64,
    /// The seq the line claims, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub reason: String,
    /// Evidence of a deliberate change rather than damage: a MAC that does
    /// not verify or is missing, or a journal shorter than the store's own
    /// record of its head.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tampered: bool,
}

/// An incomplete last line: what a crash in the middle of an append leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub line: u64,
    /// Bytes after the last complete record.
    pub bytes: u64,
    pub reason: String,
}

/// The outcome of reading a journal's bytes.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every record before the first problem, in order.
    pub records: Vec<Record>,
    /// Length of the prefix holding `records` (where a torn tail is cut).
    pub good_len: u64,
    /// A torn last line, not part of `records`.
    pub tail: Option<Tail>,
    /// The first record that breaks the chain (nothing after it was read).
    pub broken: Option<Broken>,
    /// Seq of the first record carrying a MAC: every later one must carry one.
    pub first_mac: Option<u64>,
}

impl Scan {
    /// Hash of the last good record ([`ZERO_HASH`] for an empty journal).
    pub fn head(&self) -> &str {
        self.records.last().map_or(ZERO_HASH, |r| r.hash.as_str())
    }
}

/// Compact JSON with object keys sorted: the text that gets hashed.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    // Sorted here rather than trusting the map's order: serde_json keeps
    // insertion order when any crate in the build enables `preserve_order`.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(key, out);
        out.push(':');
        if let Some(v) = map.get(key) {
            write_canonical(v, out);
        }
    }
    out.push('}');
}

/// A JSON string literal, escaped the way serde_json writes it.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    // Copy runs that need no escaping in one go: bodies can hold long text.
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// SHA-256 of `prev`, a newline and the canonical record text, in hex.
pub fn chain_hash(prev: &str, canonical_without_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical_without_hash.as_bytes());
    hex::encode(h.finalize())
}

/// The record's fields other than `hash`, as the JSON object that is hashed
/// (the MAC covers the same object without `mac`).
fn unhashed(record: &Record) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::from(record.seq));
    m.insert("at".into(), Value::from(record.at.as_str()));
    m.insert("kind".into(), Value::from(record.kind.as_str()));
    if let Some(source) = &record.source {
        m.insert("source".into(), Value::from(source.as_str()));
    }
    m.insert("body".into(), record.body.clone());
    m.insert("prev".into(), Value::from(record.prev.as_str()));
    if let Some(mac) = &record.mac {
        m.insert("mac".into(), Value::from(mac.as_str()));
    }
    m
}

/// The hash a record should carry, given its other fields (`mac` included).
pub fn record_hash(record: &Record) -> String {
    let mut text = String::new();
    write_object(&unhashed(record), &mut text);
    chain_hash(&record.prev, &text)
}

/// Fills in `mac` (under `key`, or none without one) and then `hash`.
pub fn seal(record: &mut Record, key: Option<&JournalKey>) {
    record.mac = key.map(|k| {
        let mut m = unhashed(record);
        m.remove("mac");
        let mut text = String::new();
        write_object(&m, &mut text);
        k.mac(&record.prev, &text)
    });
    record.hash = record_hash(record);
}

/// The record as one compact line (without the newline): fields in reading
/// order, the body canonical.
pub fn record_line(record: &Record) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"seq\":");
    out.push_str(&record.seq.to_string());
    out.push_str(",\"at\":");
    write_str(&record.at, &mut out);
    out.push_str(",\"kind\":");
    write_str(&record.kind, &mut out);
    if let Some(source) = &record.source {
        out.push_str(",\"source\":");
        write_str(source, &mut out);
    }
    out.push_str(",\"body\":");
    write_canonical(&record.body, &mut out);
    out.push_str(",\"prev\":");
    write_str(&record.prev, &mut out);
    if let Some(mac) = &record.mac {
        out.push_str(",\"mac\":");
        write_str(mac, &mut out);
    }
    out.push_str(",\"hash\":");
    write_str(&record.hash, &mut out);
    out.push('}');
    out
}

/// Parses one line (without its newline) and checks that its hash matches its
/// content and, with a key, that its MAC (if it has one) verifies. Chain
/// position (seq, prev) and missing MACs are checked by [`scan`].
pub fn parse_line(line: &[u8], key: Option<&JournalKey>) -> Result<Record, LineError> {
    let mut value: Value =
        serde_json::from_slice(line).map_err(|e| LineError::Syntax(format!("not JSON: {e}")))?;
    let record = Record::deserialize(&value)
        .map_err(|e| LineError::Invalid(format!("not a journal record: {e}")))?;
    if !record.body.is_object() {
        return Err(LineError::Invalid("body is not a JSON object".into()));
    }
    // Hash what the line holds, not what the struct kept: an added or
    // re-typed field must change the hash too.
    let Some(map) = value.as_object_mut() else {
        return Err(LineError::Invalid("not a JSON object".into()));
    };
    map.remove("hash");
    let mut text = String::new();
    write_object(map, &mut text);
    let expected = chain_hash(&record.prev, &text);
    if expected != record.hash {
        return Err(LineError::Invalid(format!(
            "hash mismatch (expected {expected}, found {})",
            record.hash
        )));
    }
    if let (Some(key), Some(tag)) = (key, &record.mac) {
        map.remove("mac");
        text.clear();
        write_object(map, &mut text);
        if !key.verify(&record.prev, &text, tag) {
            return Err(LineError::Forged(
                "MAC mismatch: the record was changed (or re-hashed) without the journal key, or the key is not the one it was written with".into(),
            ));
        }
    }
    Ok(record)
}

/// Reads a whole journal: every record up to the first problem. Only a last
/// line without its newline can be a torn write (`tail`): the store writes
/// each line, newline included, in one write, so a complete line that is not
/// a good record is damage or tampering wherever it is (`broken`), and
/// reading stops there. With a key, every MAC is checked.
pub fn scan(bytes: &[u8], key: Option<&JournalKey>) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0usize;
    let mut line_no = 0u64;
    while pos < bytes.len() {
        line_no += 1;
        let rest = &bytes[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            out.tail = Some(Tail {
                line: line_no,
                bytes: rest.len() as u64,
                reason: "no trailing newline".into(),
            });
            break;
        };
        let line = &rest[..nl];
        let next = pos + nl + 1;
        let expected_seq = out.records.last().map_or(1, |r| r.seq + 1);
        let broken = |seq, reason, tampered| Broken {
            line: line_no,
            seq,
            reason,
            tampered,
        };
        match parse_line(line, key) {
            Err(e) => {
                let (reason, tampered) = match e {
                    LineError::Syntax(r) | LineError::Invalid(r) => (r, false),
                    LineError::Forged(r) => (r, true),
                };
                // The seq, if the line is JSON with one, helps find it.
                let seq = serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_u64));
                out.broken = Some(broken(seq, reason, tampered));
                break;
            }
            Ok(record) => {
                let prev = out.head();
                let reason = if record.seq != expected_seq {
                    Some((
                        format!("wrong seq (expected {expected_seq}, found {})", record.seq),
                        false,
                    ))
                } else if record.prev != prev {
                    Some((
                        format!(
                            "prev does not match the previous record's hash (expected {prev}, found {})",
                            record.prev
                        ),
                        false,
                    ))
                } else if let (None, Some(first)) = (&record.mac, out.first_mac) {
                    Some((
                        format!(
                            "no MAC, but records carry one from seq {first} on: a keyed record was replaced or its MAC removed"
                        ),
                        true,
                    ))
                } else {
                    None
                };
                if let Some((reason, tampered)) = reason {
                    out.broken = Some(broken(Some(record.seq), reason, tampered));
                    break;
                }
                if record.mac.is_some() && out.first_mac.is_none() {
                    out.first_mac = Some(record.seq);
                }
                out.records.push(record);
                out.good_len = next as u64;
            }
        }
        pos = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid journal of `n` records, as the store would write it.
    fn journal(n: u64) -> (Vec<Record>, String) {
        let mut records = Vec::new();
        let mut text = String::new();
        let mut prev = ZERO_HASH.to_string();
        for seq in 1..=n {
            let mut r = Record {
                seq,
                at: format!("2026-11-19T11:40:{seq:02}Z"),
                kind: "change".into(),
                source: (seq % 2 == 0).then(|| "prod".to_string()),
                body: json!({"object": format!("Role/ns/r{seq}"), "severity": "high", "n": seq}),
                prev: prev.clone(),
                mac: None,
                hash: String::new(),
            };
            r.hash = record_hash(&r);
            prev = r.hash.clone();
            text.push_str(&record_line(&r));
            text.push('\n');
            records.push(r);
        }
        (records, text)
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn join(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn key(byte: u8) -> JournalKey {
        match JournalKey::from_bytes(&[byte; 32]) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    /// Re-chains `records` from `from` on as a forger would: seqs
    /// renumbered, each `prev` the hash before it, MACs made under `key`
    /// (the forger's own) or, without one, left as they were.
    fn rechain(records: &mut [Record], from: usize, key: Option<&JournalKey>) {
        for i in from..records.len() {
            records[i].seq = i as u64 + 1;
            records[i].prev = if i == 0 {
                ZERO_HASH.into()
            } else {
                records[i - 1].hash.clone()
            };
            if let Some(k) = key {
                seal(&mut records[i], Some(k));
            } else {
                records[i].hash = record_hash(&records[i]);
            }
        }
    }

    fn text_of(records: &[Record]) -> String {
        records
            .iter()
            .map(|r| format!("{}\n", record_line(r)))
            .collect()
    }

    /// `journal(n)` with records from seq `keyed_from` on sealed under `k`.
    fn keyed_journal(n: u64, keyed_from: u64, k: &JournalKey) -> Vec<Record> {
        let (mut records, _) = journal(n);
        for i in 0..records.len() {
            if i > 0 {
                records[i].prev = records[i - 1].hash.clone();
            }
            let key = (records[i].seq >= keyed_from).then_some(k);
            seal(&mut records[i], key);
        }
        records
    }

    #[test]
    fn a_key_switched_on_later_macs_from_the_next_record() {
        let k = key(1);
        let records = keyed_journal(5, 3, &k);
        let (legacy, _) = journal(5);
        // Records written before the key hash exactly as before.
        assert_eq!(records[..2], legacy[..2]);
        assert!(
            records[2..]
                .iter()
                .all(|r| r.mac.as_ref().is_some_and(|m| m.len() == 64))
        );
        let text = text_of(&records);
        assert!(text.lines().nth(2).unwrap().contains(",\"mac\":\""));
        for key in [Some(&k), None] {
            let s = scan(text.as_bytes(), key);
            assert!(s.broken.is_none(), "{:?}", s.broken);
            assert_eq!((s.records.len(), s.first_mac), (5, Some(3)));
            assert_eq!(s.records, records);
        }
        // The wrong key fails at the first MAC.
        let b = scan(text.as_bytes(), Some(&key(2))).broken.unwrap();
        assert_eq!((b.line, b.tampered), (3, true));
        assert!(b.reason.starts_with("MAC mismatch"), "{}", b.reason);
    }

    #[test]
    fn a_missing_mac_after_the_first_is_found_without_the_key() {
        let k = key(1);
        let mut records = keyed_journal(5, 2, &k);
        records[3].mac = None;
        rechain(&mut records, 3, None);
        let b = scan(text_of(&records).as_bytes(), None).broken.unwrap();
        assert_eq!((b.line, b.seq, b.tampered), (4, Some(4), true));
        assert!(
            b.reason
                .starts_with("no MAC, but records carry one from seq 2"),
            "{}",
            b.reason
        );
    }

    proptest::proptest! {
        /// Whatever a forger without the key does to one keyed record
        /// (edits it, deletes it, strips or re-makes its MAC) and however
        /// they re-hash the chain after it, the key finds it at that line;
        /// without the key the re-hashed chain looks intact.
        #[test]
        fn rehashed_forgeries_fail_with_the_key(at in 0usize..6, how in 0u8..4) {
            let k = key(1);
            let mut records = keyed_journal(6, 1, &k);
            match how {
                0 => records[at].body = json!({"severity": "low"}),
                1 => { records.remove(at); }
                2 => {
                    records[at].body = json!({"severity": "low"});
                    seal(&mut records[at], Some(&key(9)));
                }
                _ => {
                    records[at].body = json!({"severity": "low"});
                    records[at].mac = None;
                }
            }
            let forger_key = (how == 2).then(|| key(9));
            rechain(&mut records, at, forger_key.as_ref());
            let text = text_of(&records);
            if at == records.len() {
                // The last record deleted: only a head kept elsewhere tells.
                proptest::prop_assert!(scan(text.as_bytes(), Some(&k)).broken.is_none());
                return Ok(());
            }
            let unkeyed = scan(text.as_bytes(), None).broken;
            let keyed = scan(text.as_bytes(), Some(&k)).broken;
            // A stripped first MAC is found at the next record, whose MAC
            // covers the stripped one's hash through its `prev`.
            let line = if how == 3 && at == 0 { 2 } else { at as u64 + 1 };
            proptest::prop_assert!(keyed.as_ref().is_some_and(|b| b.line == line && b.tampered), "{keyed:?}");
            if how == 3 && at > 0 {
                // A MAC missing after the first needs no key to be seen.
                proptest::prop_assert_eq!(unkeyed.map(|b| b.line), Some(line));
            } else {
                proptest::prop_assert!(unkeyed.is_none(), "{unkeyed:?}");
            }
        }
    }

    proptest::proptest! {
        /// A record the store writes verifies when read back, whatever
        /// floats its body holds (latencies and timestamps are f64): the
        /// text a float prints as must parse back to the same float.
        #[test]
        fn written_records_verify_with_any_float(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO, secs in 0.0f64..4e9) {
            let mut r = Record {
                seq: 1,
                at: "2026-11-21T13:03:59.637331Z".into(),
                kind: "change".into(),
                source: Some("acct".into()),
                body: json!({"latency_seconds": x, "detected_at": secs}),
                prev: ZERO_HASH.to_string(),
                mac: None,
                hash: String::new(),
            };
            r.hash = record_hash(&r);
            let line = record_line(&r);
            let parsed = parse_line(line.as_bytes(), None);
            proptest::prop_assert!(parsed.is_ok(), "{line}: {parsed:?}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes() {
        let v = json!({"b": [1, 2.5, null], "a": {"z": true, "y": "q\"\\\n\u{1}é"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"y":"q\"\\\n\u0001é","z":true},"b":[1,2.5,null]}"#
        );
        // Agrees with serde_json on strings, so a parsed line re-canonicalises to itself.
        let s = "tab\t cr\r bs\u{8} ff\u{c} del\u{7f} \u{1f}";
        assert_eq!(canonical_json(&json!(s)), serde_json::to_string(s).unwrap());
    }

    #[test]
    fn lines_round_trip_and_verify() {
        let (records, text) = journal(5);
        let scan = scan(text.as_bytes(), None);
        assert_eq!(scan.records, records);
        assert!(scan.broken.is_none() && scan.tail.is_none());
        assert_eq!(scan.good_len, text.len() as u64);
        assert_eq!(records[0].prev, ZERO_HASH);
        assert_eq!(records[1].prev, records[0].hash);
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(
                r#"{"seq":1,"at":"2026-11-19T11:40:01Z","kind":"change","body":{"n":1,"object""#
            ),
            "{first}"
        );
    }

    #[test]
    fn changed_body_is_a_hash_mismatch_at_its_line() {
        let (_, text) = journal(5);
        let mut l = lines(&text);
        l[2] = l[2].replace("\"high\"", "\"low\"");
        let scan = scan(join(&l).as_bytes(), None);
        let b = scan.broken.unwrap();
        assert_eq!((b.line, b.seq), (3, Some(3)));
        assert!(
            b.reason.starts_with("hash mismatch (expected "),
            "{}",
            b.reason
        );
        assert_eq!(scan.records.len(), 2);
    }

    #[test]
    fn rehashed_record_breaks_the_next_prev() {
        let (records, text) = journal(5);
        let mut l = lines(&text);
        let mut forged = records[2].clone();
        forged.body = json!({"severity": "low"});
        forged.hash = record_hash(&forged);
        l[2] = record_line(&forged);
        let b = scan(join(&l).as_bytes(), None).broken.unwrap();
        assert_eq!((b.line, b.seq), (4, Some(4)));
        assert!(b.reason.starts_with("prev does not match"), "{}", b.reason);
    }

    #[test]
    fn deleted_and_swapped_lines_are_wrong_seqs() {
        let (_, text) = journal(5);
        let mut l = lines(&text);
        l.remove(1);
        let b = scan(join(&l).as_bytes(), None).broken.unwrap();
        assert_eq!((b.line, b.seq), (2, Some(3)));
        assert_eq!(b.reason, "wrong seq (expected 2, found 3)");
        let mut l = lines(&text);
        l.swap(3, 4);
        let b = scan(join(&l).as_bytes(), None).broken.unwrap();
        assert_eq!((b.line, b.seq), (4, Some(5)));
    }

    #[test]
    fn added_field_or_null_source_changes_the_hash() {
        let (_, text) = journal(2);
        let mut l = lines(&text);
        l[0] = l[0].replacen("{\"seq\":1,", "{\"seq\":1,\"source\":null,", 1);
        let b = scan(join(&l).as_bytes(), None).broken.unwrap();
        assert!(b.reason.starts_with("hash mismatch"), "{}", b.reason);
        let mut l = lines(&text);
        l[0] = l[0].replacen("{\"seq\":1,", "{\"seq\":1,\"extra\":1,", 1);
        let b = scan(join(&l).as_bytes(), None).broken.unwrap();
        assert!(b.reason.contains("unknown field `extra`"), "{}", b.reason);
    }

    #[test]
    fn torn_last_line_is_a_tail_not_a_break() {
        let (_, text) = journal(3);
        let whole = scan(text.as_bytes(), None).good_len;
        let two = text.lines().take(2).map(|l| l.len() + 1).sum::<usize>();
        // Cut mid-line: no newline.
        let cut = &text[..two + 10];
        let s = scan(cut.as_bytes(), None);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.good_len, two as u64);
        let t = s.tail.unwrap();
        assert_eq!((t.line, t.bytes), (3, 10));
        assert!(s.broken.is_none());
        // A complete last line that is not JSON is no torn write: the store
        // writes a line and its newline at once.
        let garbage = format!("{}\0\0\0\n", &text[..two]);
        let s = scan(garbage.as_bytes(), None);
        assert_eq!(s.records.len(), 2);
        assert!(s.tail.is_none());
        let b = s.broken.unwrap();
        assert_eq!((b.line, b.tampered), (3, false));
        assert!(b.reason.starts_with("not JSON"), "{}", b.reason);
        // The same garbage in the middle is a break.
        let middle = format!("{}\0\0\0\n{}", &text[..two], &text[two..]);
        let s = scan(middle.as_bytes(), None);
        assert_eq!(s.broken.unwrap().line, 3);
        assert!(whole > two as u64);
    }

    #[test]
    fn empty_journal_is_fine() {
        let s = scan(b"", None);
        assert!(s.records.is_empty() && s.broken.is_none() && s.tail.is_none());
        assert_eq!(s.head(), ZERO_HASH);
    }

    #[test]
    fn a_valid_last_record_with_a_bad_hash_is_broken_not_torn() {
        let (_, text) = journal(2);
        let mut l = lines(&text);
        l[1] = l[1].replace("\"high\"", "\"none\"");
        let s = scan(join(&l).as_bytes(), None);
        assert!(s.tail.is_none());
        assert_eq!(s.broken.unwrap().line, 2);
    }
}
