//! Content-addressed snapshot files: `snapshots/<sha256>.json`.
//!
//! A single-source [`SourceSnapshot`] goes in as the canonical JSON text of a
//! snapshot document holding just that source; its SHA-256 is its name, so
//! the same content is stored once. Files are written atomically (temp file,
//! fsync, rename, fsync of the directory) and checked against their name on
//! every read. Reading uses the snapshot format's raw-JSON fast path, so a
//! 100,000-object cluster loads without building value trees.

use super::{StoreError, dir_name};
use crate::snapshot::format;
use crate::snapshot::{Snapshot, SourceSnapshot};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The subdirectory holding snapshot files.
pub const DIR: &str = "snapshots";
/// Prefix of files being written; any left over belong to a crashed writer.
const TEMP_PREFIX: &str = ".tmp-";

/// SHA-256 of a snapshot's canonical text, in lower-case hex.
pub fn digest_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `s` can be a digest (and so a safe file name).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The canonical text of a snapshot holding only `source`.
pub fn canonical_text(
    source: &SourceSnapshot,
) -> Result<String, crate::snapshot::format::SnapshotError> {
    format::source_to_json(source)
}

pub(crate) fn path_of(dir: &Path, digest: &str) -> PathBuf {
    dir.join(DIR).join(format!("{digest}.json"))
}

fn file_name(digest: &str) -> String {
    format!("{DIR}/{digest}.json")
}

fn snapshot_error(dir: &Path, digest: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Snapshot {
        dir: dir_name(dir),
        file: file_name(digest),
        reason: reason.into(),
    }
}

/// Makes a completed rename (or a new file) survive a crash.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Stores `text` under `digest` unless a file of that length is already
/// there (content-addressed: same name, same bytes; a file of the wrong
/// length can only be damage, and is replaced by the one true content).
pub(crate) fn write(dir: &Path, digest: &str, text: &str) -> Result<(), StoreError> {
    let target = path_of(dir, digest);
    if fs::metadata(&target).is_ok_and(|m| m.len() == text.len() as u64) {
        return Ok(());
    }
    let snapshots = dir.join(DIR);
    let tmp = snapshots.join(format!("{TEMP_PREFIX}{digest}-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        sync_dir(&snapshots)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| StoreError::Io {
        dir: dir_name(dir),
        file: file_name(digest),
        source,
    })
}

/// Reads a snapshot file's text and checks it against its digest.
pub(crate) fn read_text(dir: &Path, digest: &str) -> Result<String, StoreError> {
    if !is_digest(digest) {
        return Err(StoreError::Invalid {
            dir: dir_name(dir),
            message: format!("`{digest}` is not a snapshot digest (64 lower-case hex digits)"),
        });
    }
    let bytes = match fs::read(path_of(dir, digest)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(snapshot_error(dir, digest, "missing"));
        }
        Err(source) => {
            return Err(StoreError::Io {
                dir: dir_name(dir),
                file: file_name(digest),
                source,
            });
        }
    };
    let found = hex::encode(Sha256::digest(&bytes));
    if found != digest {
        return Err(snapshot_error(
            dir,
            digest,
            format!("content does not match its digest (found {found})"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| snapshot_error(dir, digest, "not UTF-8 text"))
}

/// Reads and parses a stored snapshot; with `base`, unchanged objects are
/// shared with it (how the second side of a diff is read).
pub(crate) fn load(
    dir: &Path,
    digest: &str,
    base: Option<&Snapshot>,
) -> Result<SourceSnapshot, StoreError> {
    let text = read_text(dir, digest)?;
    let snapshot = match format::from_json_over(&text, base) {
        Some(s) => s,
        // The fast path gives no reasons; the general one says what is wrong.
        None => serde_json::from_str(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| format::from_value(v).map_err(|e| e.to_string()))
            .map_err(|reason| snapshot_error(dir, digest, reason))?,
    };
    let count = snapshot.sources.len();
    match snapshot.sources.into_values().next() {
        Some(source) if count == 1 => Ok(source),
        _ => Err(snapshot_error(
            dir,
            digest,
            format!("holds {count} sources, expected one"),
        )),
    }
}

/// Removes temp files a crashed writer left (only called under the lock).
pub(crate) fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir.join(DIR))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The full digest of the one stored snapshot whose digest starts with
/// `prefix` (at least 4 hex digits), as `git` resolves short hashes.
pub fn resolve_prefix(dir: &Path, prefix: &str) -> Result<String, StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        dir: dir_name(dir),
        message,
    };
    if is_digest(prefix) {
        return Ok(prefix.to_owned());
    }
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "`{prefix}` is neither a seq nor a snapshot digest (or a prefix of at least 4 hex digits)"
        )));
    }
    let prefix = prefix.to_ascii_lowercase();
    let entries = fs::read_dir(dir.join(DIR)).map_err(|source| StoreError::Io {
        dir: dir_name(dir),
        file: DIR.into(),
        source,
    })?;
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = name.strip_suffix(".json")?;
            (is_digest(digest) && digest.starts_with(&prefix)).then(|| digest.to_owned())
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(invalid(format!(
            "no snapshot digest starts with `{prefix}`"
        ))),
        n => Err(invalid(format!(
            "`{prefix}` is ambiguous: {n} snapshot digests start with it"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lower_case_sha256_hex() {
        assert_eq!(
            digest_of(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_digest(&digest_of("x")));
        assert!(!is_digest("../../etc/passwd"));
        assert!(!is_digest(&digest_of("x").to_uppercase()));
    }
}
