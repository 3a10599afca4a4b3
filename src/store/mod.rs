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
//! DIR/head                     SEQ:HASH of the last record, rewritten after each append
//! DIR/journal.reset-<n>.jsonl  a journal set aside by `Store::reset`, never deleted
//! DIR/snapshots/<sha256>.json  canonical snapshot JSON of one source, named by its hash
//! DIR/lock                     held (flock) by the one writer; holds its pid
//! ```
//!
//! Durability: `append` returns after the line is written and fsynced and
//! the head file rewritten (not fsynced: see [`head::overwrite`]);
//! `put_snapshot` after the file and its directory entry are. A crash can
//! only leave an unterminated last line, which the next writer's `open` cuts
//! away with a warning, or a head file behind the journal.
//! Anything else is refused, never repaired: a bad complete line
//! ([`StoreError::Corrupt`]), and a journal shorter than the head file, an
//! emptied one beside snapshot files, or a MAC that fails
//! ([`StoreError::Tampered`]). Starting over is an explicit [`Store::reset`].
//! With a [`JournalKey`] every record carries a MAC. The pure parts (hashing,
//! MACs, line parsing, chain and head checking) live in [`record`], [`key`]
//! and [`head`]; `docs/journal.md` says what each check proves.

pub mod head;
pub mod key;
pub mod record;
mod reset;
pub mod snapshots;

pub use head::{ExpectedHead, Head};
pub use key::{JournalKey, KeyError};
pub use record::{Broken, Record, Scan, ZERO_HASH};
pub use reset::ResetBody;

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
    /// The journal is damaged: a complete line that is not a good record,
    /// or a chain that does not link. Nothing is repaired.
    #[error("store {dir}: {JOURNAL} line {line}: {reason}")]
    Corrupt {
        dir: String,
        line: u64,
        reason: String,
    },
    /// Evidence of a deliberate change that no crash leaves: a MAC that
    /// fails or is missing, or a journal emptied, shortened or rewritten
    /// behind the store's head file. Nothing is repaired; starting over is
    /// an explicit reset (`permdrift history reset`).
    #[error("store {dir}: tampered: {reason}")]
    Tampered { dir: String, reason: String },
    /// The journal's records carry MACs, and appending without the key
    /// would break that.
    #[error(
        "store {dir}: {JOURNAL} records carry a MAC from seq {seq} on, so writing needs the journal key (store.journalKeyFile, or --key-file)"
    )]
    KeyRequired { dir: String, seq: u64 },
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
    /// `DIR/head`, rewritten after each append.
    head_file: File,
    /// Bytes of the journal holding complete records.
    len: u64,
    last_seq: u64,
    last_hash: String,
    poisoned: Option<String>,
    /// MACs every appended record when set.
    key: Option<JournalKey>,
}

impl Store {
    /// Opens `dir` for writing, creating it (mode 0700) if missing, with
    /// the journal key if the store has one (records then carry a MAC from
    /// the next append on). Fails with [`StoreError::Locked`] when another
    /// writer holds it, [`StoreError::Corrupt`] or [`StoreError::Tampered`]
    /// when the journal cannot be trusted, and [`StoreError::KeyRequired`]
    /// when its records carry MACs and no key is given. Returns warnings
    /// about what was recovered (a torn last record, leftover temp files, a
    /// head file started for an older store); the caller may want to
    /// journal them as a `note`.
    pub fn open(dir: &Path, key: Option<&JournalKey>) -> Result<(Store, Vec<String>), StoreError> {
        prepare_dir(dir)?;
        let lock = lock(dir)?;
        let mut warnings = Vec::new();
        head::remove_temp(dir).map_err(io_error(dir, head::HEAD_FILE))?;
        reset::remove_temp(dir).map_err(io_error(dir, reset::TEMP))?;
        let kept = head::read(dir)?;

        let path = dir.join(JOURNAL);
        let existed = path.exists();
        if !existed && let Some(reason) = missing_journal(dir, kept.as_ref()) {
            return Err(StoreError::Tampered {
                dir: dir_name(dir),
                reason,
            });
        }
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
        let scan = record::scan(&bytes, key);
        if let Some(b) = scan.broken {
            return Err(broken_error(dir, b));
        }
        // Checked before anything is cut: a torn line below the head is a
        // truncation, not a crash.
        if let Some(reason) = against_evidence(dir, &scan, kept.as_ref()) {
            return Err(StoreError::Tampered {
                dir: dir_name(dir),
                reason,
            });
        }
        if let (Some(seq), None) = (scan.first_mac, key) {
            return Err(StoreError::KeyRequired {
                dir: dir_name(dir),
                seq,
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
        let now = Head::of(&scan.records);
        let head_file = if kept.as_ref() == Some(&now) {
            head::open(dir)
        } else {
            head::create(dir, &now)
        }
        .map_err(io_error(dir, head::HEAD_FILE))?;
        if kept.is_none() && now.seq > 0 {
            warnings.push(format!(
                "store {}: started {} at {now}: this journal was written before stores kept their head, so records removed before now cannot be told from never written",
                dir_name(dir),
                head::HEAD_FILE
            ));
        }
        Ok((
            Store {
                dir: dir.to_path_buf(),
                journal,
                _lock: lock,
                head_file,
                len: scan.good_len,
                last_seq: now.seq,
                last_hash: now.hash,
                poisoned: None,
                key: key.cloned(),
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
        key: Option<&JournalKey>,
        poll: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<(Store, Vec<String>), StoreError> {
        loop {
            match Store::open(dir, key) {
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

    /// Hash of the last record ([`ZERO_HASH`] when empty).
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Seq and hash of the last record, as of the last append. Publish it
    /// (a log line with `SEQ:HASH`, a gauge with the seq) and keep it
    /// outside the store: `permdrift history verify --expect-head SEQ:HASH`
    /// then finds a journal shortened or rewritten, even with the store's
    /// own head file rewritten to match.
    pub fn head(&self) -> Head {
        Head {
            seq: self.last_seq,
            hash: self.last_hash.clone(),
        }
    }

    /// Whether appended records carry a MAC.
    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }

    /// Appends one record and returns it once it is on disk (written and
    /// fsynced, and the head file rewritten). `kind` is lower-case letters,
    /// digits and `-`; `at` is an RFC 3339 time; `body` a JSON object. A
    /// failed append leaves the journal as it was (the partial line is cut
    /// off) and its seq unused; [`Store::head`] is the new head after it.
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
            mac: None,
            hash: String::new(),
        };
        record::seal(&mut record, self.key.as_ref());
        let mut line = record::record_line(&record);
        line.push('\n');
        // One write of the whole line, then fsync: a crash leaves at most a
        // torn last line, which the next open cuts away.
        let written = (&self.journal).write_all(line.as_bytes());
        let synced = written.and_then(|()| self.journal.sync_data());
        if let Err(e) = synced {
            return Err(self.undo_append(e, JOURNAL));
        }
        // The head file follows the journal, never leads it: a crash in
        // between leaves it behind, which open accepts.
        let head = Head {
            seq: record.seq,
            hash: record.hash.clone(),
        };
        if let Err(e) = head::overwrite(&self.head_file, &head) {
            return Err(self.undo_append(e, head::HEAD_FILE));
        }
        self.len += line.len() as u64;
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        Ok(record)
    }

    /// Cuts the journal back to its last complete record after a failed
    /// append; after a failed fsync the page cache cannot be trusted, so
    /// further appends are refused either way.
    fn undo_append(&mut self, e: io::Error, file: &str) -> StoreError {
        let undo = self
            .journal
            .set_len(self.len)
            .and_then(|()| self.journal.sync_data());
        self.poisoned = Some(match undo {
            Ok(()) => format!("{file}: {e}"),
            Err(u) => format!("{file}: {e}; cutting the partial line failed too: {u}"),
        });
        io_error(&self.dir, file)(e)
    }

    /// Every record, oldest first, verified (the operator replays them at start).
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let bytes = read_journal_bytes(&self.dir)?;
        let end = usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let scan = record::scan(&bytes[..end], self.key.as_ref());
        if let Some(b) = scan.broken {
            return Err(broken_error(&self.dir, b));
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

/// Creates the store directory and its snapshot directory if missing, and
/// makes their entries durable.
fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    if create_private_dir(dir).map_err(io_error(dir, "."))? {
        // A new directory's own entry must survive a crash too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            snapshots::sync_dir(parent).map_err(io_error(dir, ".."))?;
        }
    }
    if create_private_dir(&dir.join(snapshots::DIR)).map_err(io_error(dir, snapshots::DIR))? {
        snapshots::sync_dir(dir).map_err(io_error(dir, "."))?;
    }
    Ok(())
}

/// The error for a journal broken at `b`.
fn broken_error(dir: &Path, b: Broken) -> StoreError {
    if b.tampered {
        StoreError::Tampered {
            dir: dir_name(dir),
            reason: format!("{JOURNAL} line {}: {}", b.line, b.reason),
        }
    } else {
        StoreError::Corrupt {
            dir: dir_name(dir),
            line: b.line,
            reason: b.reason,
        }
    }
}

/// Whether any snapshot file is stored: each was written for a record.
fn has_snapshots(dir: &Path) -> bool {
    fs::read_dir(dir.join(snapshots::DIR)).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.strip_suffix(".json").is_some_and(snapshots::is_digest))
        })
    })
}

/// Why a missing journal is tampering, if the directory shows it held records.
fn missing_journal(dir: &Path, kept: Option<&Head>) -> Option<String> {
    match kept {
        Some(h) if h.seq > 0 => Some(format!(
            "{JOURNAL} is missing, but the store's {} says seq {} was written",
            head::HEAD_FILE,
            h.seq
        )),
        _ if has_snapshots(dir) => Some(format!(
            "{JOURNAL} is missing, but snapshot files are stored (records named them)"
        )),
        _ => None,
    }
}

/// Why an intact chain disagrees with what the directory says it held:
/// the head file (when there is one), else MACs or snapshot files that a
/// store writes only with a head file or a record beside them.
fn against_evidence(dir: &Path, scan: &Scan, kept: Option<&Head>) -> Option<String> {
    match kept {
        Some(h) => head::check(
            &scan.records,
            &h.into(),
            &format!("the store's {} file", head::HEAD_FILE),
        )
        .filter(|_| !head::reset_pending(&scan.records, h)),
        None => match scan.first_mac {
            Some(seq) => Some(format!(
                "records carry a MAC from seq {seq} on, but the {} file a keyed store always writes is missing",
                head::HEAD_FILE
            )),
            None if scan.records.is_empty() && has_snapshots(dir) => Some(format!(
                "{JOURNAL} is empty, but snapshot files are stored (records named them) and the {} file is missing",
                head::HEAD_FILE
            )),
            None => None,
        },
    }
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

fn require_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StoreError::NotFound { dir: dir_name(dir) })
    }
}

fn require_store(dir: &Path) -> Result<(), StoreError> {
    require_dir(dir)?;
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
/// which is left alone. MACs are not checked (that takes the key, see
/// [`verify`]); a MAC missing after the first is still found.
pub fn read_journal(dir: &Path) -> Result<Scan, StoreError> {
    Ok(record::scan(&read_journal_bytes(dir)?, None))
}

/// Every record, oldest first; refuses a journal broken anywhere. An
/// incomplete last line is skipped (a writer may be in the middle of it).
pub fn read_records(dir: &Path) -> Result<Vec<Record>, StoreError> {
    let scan = read_journal(dir)?;
    match scan.broken {
        Some(b) => Err(broken_error(dir, b)),
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
    /// The first broken record: bad JSON, wrong seq, prev, hash or MAC, a
    /// missing or altered snapshot file; or, past the last record, a journal
    /// that falls short of the store's head file or the expected head.
    pub first_broken: Option<Broken>,
    /// Whether MACs were checked (a key was given).
    pub macs_checked: bool,
    /// Seq of the first record carrying a MAC (none: an unkeyed journal).
    pub macs_from: Option<u64>,
    /// The store's own record of its head, if it keeps one.
    pub head_file: Option<Head>,
    /// Not breakage: an incomplete last line (an append in progress or a
    /// crash the next open will recover).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Checks the whole chain (and with `key`, every MAC); for `snapshot` and
/// `baseline` records whose body has a `digest`, that the snapshot file
/// exists and matches it; that the journal reaches the store's head file
/// and, if given, `expected` (a head kept outside the store). Errors only
/// when the store cannot be read at all.
pub fn verify(
    dir: &Path,
    key: Option<&JournalKey>,
    expected: Option<&ExpectedHead>,
) -> Result<VerifyReport, StoreError> {
    require_dir(dir)?;
    // The head file first: an append between the two reads then only
    // makes the journal longer than the head, never shorter.
    let kept = match head::read(dir) {
        Ok(h) => Ok(h),
        Err(StoreError::Tampered { reason, .. }) => Err(reason),
        Err(e) => return Err(e),
    };
    let (scan, missing) = if dir.join(JOURNAL).is_file() {
        (record::scan(&read_journal_bytes(dir)?, key), None)
    } else {
        // Reported as breakage when the directory shows it held records;
        // otherwise this is no store at all.
        match missing_journal(dir, kept.as_ref().ok().and_then(Option::as_ref)) {
            Some(reason) => (Scan::default(), Some(reason)),
            None => return Err(StoreError::NotAStore { dir: dir_name(dir) }),
        }
    };
    let mut checked = BTreeSet::new();
    let mut first_broken = None;
    let mut good = 0u64;
    for r in &scan.records {
        if let Some(reason) = check_snapshot_ref(dir, r, &mut checked)? {
            first_broken = Some(Broken {
                line: good + 1,
                seq: Some(r.seq),
                reason,
                tampered: false,
            });
            break;
        }
        good += 1;
    }
    let past_end = |reason| Broken {
        line: good + 1,
        seq: None,
        reason,
        tampered: true,
    };
    let first_broken = first_broken.or(scan.broken.clone()).or_else(|| {
        let kept = match &kept {
            Ok(k) => k.as_ref(),
            Err(reason) => return Some(past_end(reason.clone())),
        };
        missing
            .or_else(|| against_evidence(dir, &scan, kept))
            .or_else(|| expected.and_then(|e| head::check(&scan.records, e, "the expected head")))
            .map(past_end)
    });
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
        macs_checked: key.is_some(),
        macs_from: scan.first_mac,
        head_file: kept.ok().flatten(),
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
