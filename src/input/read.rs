//! Reading one input's bytes into memory, never more than the size limit.
//!
//! A regular file is refused by its size before it is read. Anything else
//! (standard input, a pipe or FIFO, a device such as `/dev/zero`, a file still
//! growing) is read until the limit and refused as soon as it passes it, so
//! an endless stream costs at most the limit in memory. A FIFO is opened like
//! `cat` opens it: that waits for a writer, and a writer that never writes
//! keeps the read waiting, bounded in memory but not in time.

use super::InputError;
use std::io::Read;
use std::path::Path;

/// Reads the file at `path` (which may be a FIFO or a device) into `bytes`.
pub(super) fn file(path: &Path, limit: u64, bytes: &mut Vec<u8>) -> Result<(), InputError> {
    let name = path.display().to_string();
    let io = |source| InputError::Io {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() {
        if meta.len() > limit {
            return Err(InputError::TooLarge {
                path: name,
                size: meta.len(),
                limit,
            });
        }
        bytes.reserve(usize::try_from(meta.len()).unwrap_or(0));
    }
    stream(file, &name, limit, bytes)
}

/// Reads `reader` to its end into `bytes`, refusing it past `limit` bytes.
pub(super) fn stream(
    reader: impl Read,
    name: &str,
    limit: u64,
    bytes: &mut Vec<u8>,
) -> Result<(), InputError> {
    let start = bytes.len();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(bytes)
        .map_err(|source| InputError::Io {
            path: name.to_owned(),
            source,
        })?;
    if (bytes.len() - start) as u64 > limit {
        return Err(InputError::StreamTooLarge {
            path: name.to_owned(),
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_stops_one_byte_past_the_limit() {
        let mut bytes = Vec::new();
        let endless = std::io::repeat(b'x');
        let err = stream(endless, "<stdin>", 1000, &mut bytes).unwrap_err();
        assert_eq!(bytes.len(), 1001);
        assert_eq!(
            err.to_string(),
            "<stdin>: more than 1000 bytes, over the 1000-byte limit (raise it with --max-input-size)"
        );
        let mut bytes = Vec::new();
        stream(&b"exactly"[..], "s", 7, &mut bytes).unwrap();
        assert_eq!(bytes, b"exactly");
    }
}
