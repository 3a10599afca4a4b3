//! The journal's head (seq and hash of its last record): the store's own
//! copy of it in `DIR/head`, and a copy kept elsewhere to check against.
//!
//! After every append the store rewrites `DIR/head` (`SEQ:HASH` and a
//! newline) in place and exposes the same [`Head`] to its caller for
//! publishing. On
//! the way in, a journal is checked against a head: it must reach the
//! head's seq, and its record there must have the head's hash. The checks
//! are pure; [`read`] and [`write`] are the file's thin edge. What this local
//! copy can and cannot prove is written down in `docs/journal.md`.

use super::record::{Record, ZERO_HASH};
use super::snapshots::sync_dir;
use super::{StoreError, dir_name};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// The store's copy of its head.
pub const HEAD_FILE: &str = "head";
/// Where a new head is written before it replaces the old one.
const HEAD_TEMP: &str = "head.tmp";
/// The kind of the first record of a chain started by [`super::Store::reset`].
pub const RESET_KIND: &str = "reset";

/// Seq and hash of a journal's last record (`0` and [`ZERO_HASH`] when empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn of(records: &[Record]) -> Head {
        records.last().map_or_else(
            || Head {
                seq: 0,
                hash: ZERO_HASH.into(),
            },
            |r| Head {
                seq: r.seq,
                hash: r.hash.clone(),
            },
        )
    }
}

/// `SEQ:HASH`, the form `history verify --expect-head` takes back.
impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// A head kept elsewhere: `SEQ` alone pins the length, `SEQ:HASH` the content too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedHead {
    pub seq: u64,
    pub hash: Option<String>,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (seq, hash) = match s.split_once(':') {
            Some((seq, hash)) => (seq, Some(hash)),
            None => (s, None),
        };
        let seq = seq
            .parse()
            .map_err(|_| format!("`{s}`: expected SEQ or SEQ:HASH, and `{seq}` is not a seq"))?;
        let hash = match hash {
            None => None,
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(h) => {
                return Err(format!(
                    "`{s}`: the hash after `:` must be 64 hex digits, not `{h}`"
                ));
            }
        };
        Ok(ExpectedHead { seq, hash })
    }
}

impl From<&Head> for ExpectedHead {
    fn from(h: &Head) -> Self {
        ExpectedHead {
            seq: h.seq,
            hash: Some(h.hash.clone()),
        }
    }
}

/// Why `records` (a verified chain, seqs 1, 2, ...) do not reach `expected`,
/// if they do not; `whose` names where the expected head was kept.
pub fn check(records: &[Record], expected: &ExpectedHead, whose: &str) -> Option<String> {
    let have = records.last().map_or(0, |r| r.seq);
    let at = usize::try_from(expected.seq).ok();
    let found = match at {
        Some(0) => Some(ZERO_HASH),
        Some(n) => records.get(n - 1).map(|r| r.hash.as_str()),
        None => None,
    };
    let Some(found) = found else {
        return Some(format!(
            "the journal ends at seq {have}, but {whose} says seq {} was written: records were removed",
            expected.seq
        ));
    };
    match &expected.hash {
        Some(h) if h != found => Some(format!(
            "record {} has hash {found}, but {whose} says {h}: the journal was rewritten",
            expected.seq
        )),
        _ => None,
    }
}

/// Whether the journal is a chain [`super::Store::reset`] started whose
/// head file was not rewritten yet (a crash in between): its first record
/// is a reset naming `kept` as the previous head.
pub fn reset_pending(records: &[Record], kept: &Head) -> bool {
    let kept = kept.to_string();
    records.first().is_some_and(|r| {
        r.kind == RESET_KIND
            && ["head", "headFile"].iter().any(|k| {
                r.body
                    .get("previous")
                    .and_then(|p| p.get(k))
                    .and_then(serde_json::Value::as_str)
                    == Some(kept.as_str())
            })
    })
}

/// Reads `DIR/head`; `None` when there is none (a store from before head
/// files, or a new one). Anything else wrong with it is tampering.
pub fn read(dir: &Path) -> Result<Option<Head>, StoreError> {
    let text = match fs::read(dir.join(HEAD_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                dir: dir_name(dir),
                file: HEAD_FILE.into(),
                source,
            });
        }
    };
    let tampered = |reason: String| StoreError::Tampered {
        dir: dir_name(dir),
        reason: format!("{HEAD_FILE}: {reason}"),
    };
    let text = String::from_utf8(text).map_err(|_| tampered("not text".into()))?;
    let parsed: ExpectedHead = text.parse().map_err(tampered)?;
    match parsed.hash {
        Some(hash) => Ok(Some(Head {
            seq: parsed.seq,
            hash,
        })),
        None => Err(tampered("no hash after the seq".into())),
    }
}

/// Puts `head` in `DIR/head` (temp file, fsync, rename, fsync of the
/// directory) and returns the file open for [`overwrite`].
pub fn create(dir: &Path, head: &Head) -> io::Result<File> {
    let tmp = dir.join(HEAD_TEMP);
    let mut f = super::open_options_private()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(format!("{head}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(HEAD_FILE))?;
    sync_dir(dir)?;
    Ok(f)
}

/// Opens an existing `DIR/head` for [`overwrite`].
pub fn open(dir: &Path) -> io::Result<File> {
    fs::OpenOptions::new().write(true).open(dir.join(HEAD_FILE))
}

/// Writes `head` over the file's start, not fsynced. Safe because a head
/// only grows within a chain (the text never gets shorter), it fits in the
/// first disk sector (written whole, so never torn), and it is written only
/// after the journal line it names is fsynced: a crash can lose the update,
/// leaving an older head the journal still reaches, but never put the head
/// ahead of the journal. An fsync here would cost as much as the append's.
pub fn overwrite(file: &File, head: &Head) -> io::Result<()> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(format!("{head}\n").as_bytes())
}

/// Removes a temp head a crash left.
pub fn remove_temp(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(HEAD_TEMP)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for seq in 1..=n {
            let mut r = Record {
                seq,
                at: "2026-11-19T11:40:02Z".into(),
                kind: "note".into(),
                source: None,
                body: json!({"n": seq}),
                prev: out.last().map_or(ZERO_HASH.into(), |p| p.hash.clone()),
                mac: None,
                hash: String::new(),
            };
            super::super::record::seal(&mut r, None);
            out.push(r);
        }
        out
    }

    #[test]
    fn expected_heads_parse() {
        let h = "a".repeat(64);
        assert_eq!(
            format!("7:{}", h.to_uppercase()).parse::<ExpectedHead>(),
            Ok(ExpectedHead {
                seq: 7,
                hash: Some(h.clone())
            })
        );
        assert_eq!(
            " 12\n".parse::<ExpectedHead>(),
            Ok(ExpectedHead {
                seq: 12,
                hash: None
            })
        );
        assert!(
            "x:1"
                .parse::<ExpectedHead>()
                .unwrap_err()
                .contains("`x` is not a seq")
        );
        assert!(
            "3:abc"
                .parse::<ExpectedHead>()
                .unwrap_err()
                .contains("64 hex digits")
        );
        let head = Head { seq: 3, hash: h };
        assert_eq!(head.to_string().parse::<ExpectedHead>(), Ok((&head).into()));
    }

    #[test]
    fn a_shorter_or_different_journal_misses_the_head() {
        let records = chain(5);
        let head = Head::of(&records);
        assert_eq!(check(&records, &(&head).into(), "x"), None);
        assert_eq!(
            check(&records[..5], &ExpectedHead { seq: 3, hash: None }, "x"),
            None
        );
        let e = check(&records[..3], &(&head).into(), "the head file").unwrap();
        assert_eq!(
            e,
            "the journal ends at seq 3, but the head file says seq 5 was written: records were removed"
        );
        let e = check(&[], &ExpectedHead { seq: 1, hash: None }, "x").unwrap();
        assert!(e.starts_with("the journal ends at seq 0"), "{e}");
        let other = chain(6);
        let mut forged = records.clone();
        forged[4].body = json!({"n": 50});
        super::super::record::seal(&mut forged[4], None);
        let e = check(&forged, &(&head).into(), "x").unwrap();
        assert!(e.starts_with("record 5 has hash "), "{e}");
        assert_eq!(check(&other, &(&head).into(), "x"), None);
        assert_eq!(
            check(
                &[],
                &ExpectedHead {
                    seq: 0,
                    hash: Some(ZERO_HASH.into())
                },
                "x"
            ),
            None
        );
    }
}
