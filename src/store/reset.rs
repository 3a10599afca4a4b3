//! Starting a new chain on purpose: the one way past a journal the store
//! refuses (damaged, tampered) or a history to be left behind.
//!
//! The old journal, whatever its state, is set aside under a new name and
//! never deleted; the new journal's first record is a `reset` saying who did
//! it, why, and what the old journal's head was, and carries a MAC when the
//! store has a key. A crash part-way leaves either the old journal in place
//! (and perhaps an extra name for it) or the new one, whose reset record
//! names the old head, so `open` accepts the head file lagging behind it.

use super::head::{self, Head, RESET_KIND};
use super::record::{self, Record, ZERO_HASH};
use super::{
    JOURNAL, JournalKey, Store, StoreError, against_evidence, check_fields, dir_name, io_error,
    lock, open_options_private, prepare_dir, require_dir, snapshots,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// The first record of a journal started over: why, by whom, and what was
/// set aside (records, head, file, problems found).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResetBody {
    pub reason: String,
    pub actor: String,
    pub previous: Map<String, Value>,
}

/// The new journal is written here, then renamed over `journal.jsonl`.
pub(super) const TEMP: &str = "journal.reset.tmp";

/// The name the `n`th set-aside journal gets.
fn archive_name(n: u32) -> String {
    format!("journal.reset-{n}.jsonl")
}

impl Store {
    /// Sets the journal of `dir` aside (as `journal.reset-N.jsonl`) and
    /// starts a new chain whose first record, kind `reset`, holds `reason`,
    /// `actor` and the previous head; returns the store open for writing
    /// and that record. Works on a journal `open` refuses; needs `key` when
    /// the old journal's records carry MACs, and MACs the new chain with it.
    pub fn reset(
        dir: &Path,
        key: Option<&JournalKey>,
        reason: &str,
        actor: &str,
        at: &str,
    ) -> Result<(Store, Record), StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            dir: dir_name(dir),
            message,
        };
        for (field, text) in [("reason", reason), ("actor", actor)] {
            if text.trim().is_empty() {
                return Err(invalid(format!("a reset needs a non-empty {field}")));
            }
        }
        require_dir(dir)?;
        prepare_dir(dir)?;
        let lock = lock(dir)?;
        head::remove_temp(dir).map_err(io_error(dir, head::HEAD_FILE))?;

        let mut previous = Map::new();
        let mut problems = Vec::new();
        let kept = match head::read(dir) {
            Ok(kept) => kept,
            Err(StoreError::Tampered { reason, .. }) => {
                problems.push(reason);
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(h) = &kept {
            previous.insert("headFile".into(), Value::from(h.to_string()));
        }
        let path = dir.join(JOURNAL);
        let old = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                problems.push(format!("{JOURNAL} was missing"));
                None
            }
            Err(e) => return Err(io_error(dir, JOURNAL)(e)),
        };
        if let Some(bytes) = &old {
            let scan = record::scan(bytes, key);
            if let (Some(seq), None) = (scan.first_mac, key) {
                return Err(StoreError::KeyRequired {
                    dir: dir_name(dir),
                    seq,
                });
            }
            if let Some(b) = &scan.broken {
                problems.push(format!("{JOURNAL} line {}: {}", b.line, b.reason));
            } else if let Some(reason) = against_evidence(dir, &scan, kept.as_ref()) {
                problems.push(reason);
            } else if let Some(t) = &scan.tail {
                problems.push(format!(
                    "{JOURNAL} line {}: incomplete ({})",
                    t.line, t.reason
                ));
            }
            previous.insert("records".into(), Value::from(scan.records.len()));
            previous.insert(
                "head".into(),
                Value::from(Head::of(&scan.records).to_string()),
            );
            previous.insert(
                "journal".into(),
                Value::from(set_aside(dir, &path).map_err(io_error(dir, JOURNAL))?),
            );
        }
        if !problems.is_empty() {
            previous.insert("problem".into(), Value::from(problems.join("; ")));
        }
        let body = ResetBody {
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            previous,
        };
        let body = serde_json::to_value(&body).map_err(|e| invalid(e.to_string()))?;
        check_fields(RESET_KIND, None, &body, at).map_err(invalid)?;
        let mut first = Record {
            seq: 1,
            at: at.to_owned(),
            kind: RESET_KIND.into(),
            source: None,
            body,
            prev: ZERO_HASH.into(),
            mac: None,
            hash: String::new(),
        };
        record::seal(&mut first, key);
        let mut line = record::record_line(&first);
        line.push('\n');
        replace_journal(dir, &line).map_err(io_error(dir, JOURNAL))?;
        let now = Head {
            seq: 1,
            hash: first.hash.clone(),
        };
        let head_file = head::create(dir, &now).map_err(io_error(dir, head::HEAD_FILE))?;
        let mut journal = open_options_private()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error(dir, JOURNAL))?;
        // Read back what the rename put in place, so the writer's length is
        // the file's, not an assumption.
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(io_error(dir, JOURNAL))?;
        Ok((
            Store {
                dir: dir.to_path_buf(),
                journal,
                _lock: lock,
                head_file,
                len: bytes.len() as u64,
                last_seq: now.seq,
                last_hash: now.hash,
                poisoned: None,
                key: key.cloned(),
            },
            first,
        ))
    }
}

/// Gives the journal a second name no earlier reset used (a hard link
/// never replaces an existing file) and makes it durable; returns the name.
fn set_aside(dir: &Path, path: &Path) -> io::Result<String> {
    for n in 1..=u32::MAX {
        let name = archive_name(n);
        match fs::hard_link(path, dir.join(&name)) {
            Ok(()) => {
                snapshots::sync_dir(dir)?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name to set the journal aside"))
}

/// Puts a new journal holding `line` in place: temp file, fsync, rename,
/// fsync of the directory.
fn replace_journal(dir: &Path, line: &str) -> io::Result<()> {
    let tmp = dir.join(TEMP);
    let mut f = open_options_private()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(JOURNAL))?;
    snapshots::sync_dir(dir)
}

/// Removes a new journal a crashed reset left unrenamed.
pub(super) fn remove_temp(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(TEMP)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
