//! Writing results: atomically to a file (temp file, fsync, rename, so a
//! reader never sees half a snapshot and a failure leaves the old file), or
//! to standard output, tolerating a closed pipe.
//!
//! `-o` writes regular files only. An existing target that is a symbolic
//! link, a device, a FIFO, a socket or a directory is refused before anything
//! is written (a rename would replace the link or the device node itself);
//! shell redirection (`> FILE`) is the way to write to those. An existing
//! file keeps its permission bits (and, where allowed, its owner); a new one
//! gets the usual `0666` less the umask. The temp file beside the target is
//! created with `O_EXCL` under an unpredictable name, removed on failure, and
//! temp files that an interrupted run left behind are removed once stale.

use anyhow::{Context, bail};
use std::fs::{Metadata, Permissions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A temp file this old is left from an interrupted run: writing one takes
/// seconds, so a live run's own temp file is never this old.
const STALE_AFTER: Duration = Duration::from_secs(600);

pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let existing = regular_target(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let prefix = format!(".{file_name}.tmp-");
    remove_stale(&dir, &prefix);
    let result = (|| -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(&dir)?;
        if let Some(meta) = &existing {
            keep_mode_and_owner(tmp.as_file(), meta)?;
        }
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        // Dropped on any error above: the temp file is removed with it.
        tmp.persist(path).map_err(|e| e.error)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// The metadata of an existing regular file at `path`, `None` if nothing is
/// there, or an error naming what is there instead.
fn regular_target(path: &Path) -> anyhow::Result<Option<Metadata>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(Some(meta));
    } else if kind.is_symlink() {
        bail!(
            "cannot write {}: it is a symbolic link, and -o does not write through links \
             (name the file it points to)",
            path.display()
        );
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    bail!(
        "cannot write {}: it is {what}, and -o writes regular files only \
         (use `> {}` to write there)",
        path.display(),
        path.display()
    )
}

/// Gives the temp file the replaced file's permission bits and, where the
/// caller may, its owner (only root may give a file away; others keep theirs).
fn keep_mode_and_owner(file: &std::fs::File, meta: &Metadata) -> std::io::Result<()> {
    file.set_permissions(Permissions::from_mode(meta.mode() & 0o777))?;
    let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

/// Removes `prefix*` regular files in `dir` older than [`STALE_AFTER`]; best
/// effort, as they are only litter.
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        // `DirEntry::metadata` does not follow links: a link is never removed.
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if meta.is_file() && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Prints to stdout; a reader that went away (`| head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
