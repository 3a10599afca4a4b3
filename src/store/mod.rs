//! The operator's store: an append-only, hash-chained journal plus
//! content-addressed snapshot files, in one directory.
//!
//! Records (snapshots taken, baselines, changes, verdicts, notes) flow in
//! through [`Store::append`] and come back out, in order and verified, through
//! [`Store::records`], [`read_records`] and [`verify`]; single-source snapshots
//! flow through [`Store::put_snapshot`] and [`Store::get_snapshot`]. Layout:
//!
//! ```text
//! DIR/journal.jsonl            one record per line, append-only
//! DIR/snapshots/<sha256>.json  canonical snapshot JSON of one source, named by its hash
//! DIR/lock                     held (flock) by the one writer; holds its pid
//! ```
//!
//! Durability: `append` returns after the line is written and fsynced;
//! `put_snapshot` after the file and its directory entry are. A crash can only
//! leave a torn last line, which the next writer's `open` cuts away with a
//! warning; anything wrong earlier in the journal is refused, never repaired.
//! The pure parts (hashing, line parsing, chain checking) live in [`record`].

pub mod record;
pub mod snapshots;

pub use record::{Broken, Record, Scan, ZERO_HASH};

use crate::snapshot::SourceSnapshot;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal's file name.
pub const JOURNAL: &str = "journal.jsonl";
/// The writer's lock file name.
pub const LOCK: &str = "lock";

/// Record kinds whose body `digest` names a snapshot file that must exist.
const SNAPSHOT_KINDS: [&str; 2] = ["snapshot", "baseline"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {dir}: no such directory")]
    NotFound { dir: String },
    #[error("store {dir}: not a permdrift store (no {JOURNAL})")]
    NotAStore { dir: String },
    #[error("store {dir} is in use by another permdrift ({})", pid_note(*.pid))]
    Locked { dir: String, pid: Option<u32> },
    #[error("store {dir}: {file}: {source}")]
    Io {
        dir: String,
        file: String,
        source: io::Error,
    },
    /// The journal is damaged before its last line; nothing is repaired.
    #[error("store {dir}: {JOURNAL} line {line}: {reason}")]
    Corrupt {
        dir: String,
        line: u64,
        reason: String,
    },
    #[error("store {dir}: {file}: {reason}")]
    Snapshot {
        dir: String,
        file: String,
        reason: String,
    },
    /// Bad arguments (kind, time, body, digest) or a record that does not exist.
    #[error("store {dir}: {message}")]
    Invalid { dir: String, message: String },
    /// An append failed in a way that leaves the file's state unknown.
    #[error(
        "store {dir}: {JOURNAL}: refusing to append after an earlier failure ({reason}); open the store again to recover"
    )]
    Poisoned { dir: String, reason: String },
}

fn pid_note(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid} from the lock file"),
        None => "no pid in the lock file".into(),
    }
}

pub(crate) fn dir_name(dir: &Path) -> String {
    dir.display().to_string()
}

fn io_error(dir: &Path, file: &str) -> impl FnOnce(io::Error) -> StoreError {
    let dir = dir_name(dir);
    let file = file.to_owned();
    move |source| StoreError::Io { dir, file, source }
}

/// The single writer of a store directory. Holds the directory's lock until
/// dropped; readers ([`read_records`], [`verify`]) need no lock.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: File,
    /// Kept open: the flock lives as long as this file description.
    _lock: File,
    /// Bytes of the journal holding complete records.
    len: u64,
    last_seq: u64,
    last_hash: String,
    poisoned: Option<String>,
}

impl Store {
    /// Opens `dir` for writing, creating it (mode 0700) if missing. Fails
    /// with [`StoreError::Locked`] when another writer holds it. Returns
    /// warnings about what was recovered (a torn last record, leftover temp
    /// files); the caller may want to journal them as a `note`.
    pub fn open(dir: &Path) -> Result<(Store, Vec<String>), StoreError> {
        if create_private_dir(dir).map_err(io_error(dir, "."))? {
            // A new directory's own entry must survive a crash too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                snapshots::sync_dir(parent).map_err(io_error(dir, ".."))?;
            }
        }
        if create_private_dir(&dir.join(snapshots::DIR)).map_err(io_error(dir, snapshots::DIR))? {
            snapshots::sync_dir(dir).map_err(io_error(dir, "."))?;
        }
        let lock = lock(dir)?;
        let mut warnings = Vec::new();

        let path = dir.join(JOURNAL);
        let existed = path.exists();
        let mut journal = open_options_private()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error(dir, JOURNAL))?;
        if !existed {
            snapshots::sync_dir(dir).map_err(io_error(dir, "."))?;
        }
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(io_error(dir, JOURNAL))?;
        let scan = record::scan(&bytes);
        if let Some(b) = scan.broken {
            return Err(StoreError::Corrupt {
                dir: dir_name(dir),
                line: b.line,
                reason: b.reason,
            });
        }
        if let Some(tail) = &scan.tail {
            // Only ever the bytes after the last complete record.
            journal
                .set_len(scan.good_len)
                .and_then(|()| journal.sync_all())
                .map_err(io_error(dir, JOURNAL))?;
            warnings.push(format!(
                "store {}: {JOURNAL} line {}: dropped an incomplete last record ({} bytes, {}) left by an interrupted write; all {} earlier records are intact",
                dir_name(dir),
                tail.line,
                tail.bytes,
                tail.reason,
                scan.records.len()
            ));
        }
        let removed = snapshots::remove_temp_files(dir).map_err(io_error(dir, snapshots::DIR))?;
        if removed > 0 {
            warnings.push(format!(
                "store {}: removed {removed} unfinished snapshot file{} left by an interrupted write",
                dir_name(dir),
                if removed == 1 { "" } else { "s" }
            ));
        }
        Ok((
            Store {
                dir: dir.to_path_buf(),
                journal,
                _lock: lock,
                len: scan.good_len,
                last_seq: scan.records.last().map_or(0, |r| r.seq),
                last_hash: scan.head().to_owned(),
                poisoned: None,
            },
            warnings,
        ))
    }

    /// As [`Store::open`], but while another writer holds the store, checks
    /// `give_up` and sleeps `poll` between attempts; returns the lock error
    /// once `give_up` says so. Blocking: from async code, run it in
    /// `spawn_blocking`, or call [`Store::open`] in a loop with an async
    /// sleep, retrying on [`StoreError::Locked`].
    pub fn open_wait(
        dir: &Path,
        poll: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<(Store, Vec<String>), StoreError> {
        loop {
            match Store::open(dir) {
                Err(StoreError::Locked { .. }) if !give_up() => std::thread::sleep(poll),
                other => return other,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seq of the last record (0 when the journal is empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Hash of the last record ([`ZERO_HASH`] when empty): anchor it elsewhere
    /// (a log line, a metric) to make rewriting the whole tail detectable.
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Appends one record and returns it once it is on disk (written and
    /// fsynced). `kind` is lower-case letters, digits and `-`; `at` is an RFC
    /// 3339 time; `body` a JSON object. A failed append leaves the journal as
    /// it was (the partial line is cut off) and its seq unused.
    pub fn append(
        &mut self,
        kind: &str,
        source: Option<&str>,
        body: Value,
        at: &str,
    ) -> Result<Record, StoreError> {
        if let Some(reason) = &self.poisoned {
            return Err(StoreError::Poisoned {
                dir: dir_name(&self.dir),
                reason: reason.clone(),
            });
        }
        if let Err(message) = check_fields(kind, source, &body, at) {
            return Err(StoreError::Invalid {
                dir: dir_name(&self.dir),
                message,
            });
        }
        let mut record = Record {
            seq: self.last_seq + 1,
            at: at.to_owned(),
            kind: kind.to_owned(),
            source: source.map(str::to_owned),
            body,
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record::record_hash(&record);
        let mut line = record::record_line(&record);
        line.push('\n');
        // One write of the whole line, then fsync: a crash leaves at most a
        // torn last line, which the next open cuts away.
        let written = (&self.journal).write_all(line.as_bytes());
        let synced = written.and_then(|()| self.journal.sync_data());
        if let Err(e) = synced {
            // Cut back to the last complete record; after a failed fsync the
            // page cache cannot be trusted, so refuse further appends either way.
            let undo = self
                .journal
                .set_len(self.len)
                .and_then(|()| self.journal.sync_data());
            self.poisoned = Some(match undo {
                Ok(()) => e.to_string(),
                Err(u) => format!("{e}; cutting the partial line failed too: {u}"),
            });
            return Err(io_error(&self.dir, JOURNAL)(e));
        }
        self.len += line.len() as u64;
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        Ok(record)
    }

    /// Every record, oldest first, verified (the operator replays them at start).
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let bytes = read_journal_bytes(&self.dir)?;
        let end = usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let scan = record::scan(&bytes[..end]);
        if let Some(b) = scan.broken {
            return Err(StoreError::Corrupt {
                dir: dir_name(&self.dir),
                line: b.line,
                reason: b.reason,
            });
        }
        if scan.records.len() as u64 != self.last_seq {
            return Err(StoreError::Corrupt {
                dir: dir_name(&self.dir),
                line: scan.records.len() as u64 + 1,
                reason: format!(
                    "journal changed under the writer: {} records on disk, {} written",
                    scan.records.len(),
                    self.last_seq
                ),
            });
        }
        Ok(scan.records)
    }

    /// Stores a single-source snapshot and returns its digest; durable when
    /// it returns, so a record naming the digest can be appended next. The
    /// same content is stored once.
    pub fn put_snapshot(&mut self, source: &SourceSnapshot) -> Result<String, StoreError> {
        let text = snapshots::canonical_text(source).map_err(|e| StoreError::Invalid {
            dir: dir_name(&self.dir),
            message: format!("cannot write snapshot of source {:?}: {e}", source.name),
        })?;
        let digest = snapshots::digest_of(&text);
        snapshots::write(&self.dir, &digest, &text)?;
        Ok(digest)
    }

    /// Reads a stored snapshot, checking its content against `digest`.
    pub fn get_snapshot(&self, digest: &str) -> Result<SourceSnapshot, StoreError> {
        snapshots::load(&self.dir, digest, None)
    }
}

/// Reads a stored snapshot without opening the store for writing.
pub fn read_snapshot(dir: &Path, digest: &str) -> Result<SourceSnapshot, StoreError> {
    require_store(dir)?;
    snapshots::load(dir, digest, None)
}

/// Why `kind`, `source`, `body` or `at` cannot go into a record.
fn check_fields(kind: &str, source: Option<&str>, body: &Value, at: &str) -> Result<(), String> {
    let kind_ok = kind.len() <= 64
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !kind_ok {
        return Err(format!(
            "record kind `{kind}` must be lower-case letters, digits and `-`, starting with a letter"
        ));
    }
    if let Some(s) = source
        && (s.is_empty() || s.chars().any(char::is_control))
    {
        return Err(format!("record source {s:?} must be non-empty text"));
    }
    if !body.is_object() {
        return Err("record body must be a JSON object".into());
    }
    if at.parse::<jiff::Timestamp>().is_err() {
        return Err(format!("record time `{at}` is not an RFC 3339 timestamp"));
    }
    Ok(())
}

/// Creates `path` (and missing parents) readable by the owner only; an
/// existing directory keeps the mode its owner chose. True if created.
fn create_private_dir(path: &Path) -> io::Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)?;
    Ok(true)
}

fn open_options_private() -> OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        o.mode(0o600);
        o
    }
    #[cfg(not(unix))]
    OpenOptions::new()
}

/// Takes the store's exclusive lock and records our pid in the lock file.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    // Not truncated on open: the pid in it belongs to whoever holds the lock.
    let mut file = open_options_private()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(dir, LOCK))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::Locked {
                dir: dir_name(dir),
                pid: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_error(dir, LOCK)(e)),
    }
    // The pid is informational (for the error above), so it is not fsynced.
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(io_error(dir, LOCK))?;
    Ok(file)
}

fn require_store(dir: &Path) -> Result<(), StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::NotFound { dir: dir_name(dir) });
    }
    if !dir.join(JOURNAL).is_file() {
        return Err(StoreError::NotAStore { dir: dir_name(dir) });
    }
    Ok(())
}

fn read_journal_bytes(dir: &Path) -> Result<Vec<u8>, StoreError> {
    require_store(dir)?;
    fs::read(dir.join(JOURNAL)).map_err(io_error(dir, JOURNAL))
}

/// Reads the journal without the lock: every good record, the first broken
/// one if any, and an incomplete last line (possibly an append in progress),
/// which is left alone.
pub fn read_journal(dir: &Path) -> Result<Scan, StoreError> {
    Ok(record::scan(&read_journal_bytes(dir)?))
}

/// Every record, oldest first; refuses a journal broken anywhere. An
/// incomplete last line is skipped (a writer may be in the middle of it).
pub fn read_records(dir: &Path) -> Result<Vec<Record>, StoreError> {
    let scan = read_journal(dir)?;
    match scan.broken {
        Some(b) => Err(StoreError::Corrupt {
            dir: dir_name(dir),
            line: b.line,
            reason: b.reason,
        }),
        None => Ok(scan.records),
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Records that verified (all of them when intact).
    pub records: u64,
    /// Distinct snapshot files checked against their digests.
    pub snapshots_checked: u64,
    /// Hash of the last verified record.
    pub head: String,
    /// The first broken record: bad JSON, wrong seq, prev or hash mismatch,
    /// or a missing or altered snapshot file.
    pub first_broken: Option<Broken>,
    /// Not breakage: an incomplete last line (an append in progress or a
    /// crash the next open will recover).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Checks the whole chain, and for `snapshot` and `baseline` records whose
/// body has a `digest`, that the snapshot file exists and matches it.
/// Errors only when the store cannot be read at all.
pub fn verify(dir: &Path) -> Result<VerifyReport, StoreError> {
    let scan = read_journal(dir)?;
    let mut checked = BTreeSet::new();
    let mut first_broken = None;
    let mut good = 0u64;
    for r in &scan.records {
        if let Some(reason) = check_snapshot_ref(dir, r, &mut checked)? {
            first_broken = Some(Broken {
                line: good + 1,
                seq: Some(r.seq),
                reason,
            });
            break;
        }
        good += 1;
    }
    let first_broken = first_broken.or(scan.broken);
    let mut warnings = Vec::new();
    if let Some(t) = &scan.tail
        && first_broken.is_none()
    {
        warnings.push(format!(
            "{JOURNAL} line {}: incomplete last record ({} bytes, {}): an append in progress, or a crash the next open will recover",
            t.line, t.bytes, t.reason
        ));
    }
    let head = scan
        .records
        .iter()
        .take_while(|r| r.seq <= good)
        .last()
        .map_or(ZERO_HASH, |r| r.hash.as_str())
        .to_owned();
    Ok(VerifyReport {
        records: good,
        snapshots_checked: checked.len() as u64,
        head,
        first_broken,
        warnings,
    })
}

/// Why a record's snapshot reference is broken, if it is.
fn check_snapshot_ref(
    dir: &Path,
    r: &Record,
    checked: &mut BTreeSet<String>,
) -> Result<Option<String>, StoreError> {
    if !SNAPSHOT_KINDS.contains(&r.kind.as_str()) {
        return Ok(None);
    }
    let Some(digest) = r.body.get("digest") else {
        return Ok(None);
    };
    let Some(digest) = digest.as_str().filter(|d| snapshots::is_digest(d)) else {
        return Ok(Some(format!(
            "body digest {digest} is not a snapshot digest (64 lower-case hex digits)"
        )));
    };
    if checked.contains(digest) {
        return Ok(None);
    }
    match snapshots::read_text(dir, digest) {
        Ok(_) => {
            checked.insert(digest.to_owned());
            Ok(None)
        }
        Err(StoreError::Snapshot { file, reason, .. }) => {
            Ok(Some(format!("snapshot {digest}: {file}: {reason}")))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked() {
        let body = serde_json::json!({});
        let at = "2026-11-19T11:40:02Z";
        assert!(check_fields("baseline-patch", Some("prod"), &body, at).is_ok());
        assert!(check_fields("Change", None, &body, at).is_err());
        assert!(check_fields("", None, &body, at).is_err());
        assert!(check_fields("note", Some(""), &body, at).is_err());
        assert!(check_fields("note", None, &serde_json::json!([1]), at).is_err());
        assert!(check_fields("note", None, &body, "yesterday").is_err());
        assert!(check_fields("note", None, &body, "2026-11-19T12:40:02+01:00").is_ok());
    }

    #[test]
    fn lock_error_names_the_pid() {
        let e = StoreError::Locked {
            dir: "/var/lib/permdrift".into(),
            pid: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "store /var/lib/permdrift is in use by another permdrift (pid 42 from the lock file)"
        );
    }
}
