//! Finding the input files under a directory.
//!
//! A directory path goes in; the `.yaml`, `.yml`, `.json` and `.xml` regular
//! files under it come out in path order, with what was passed over. Each
//! directory and each file is visited once, by (device, inode), so symbolic
//! links that loop back (`ln -s . again`) or repeat a tree add nothing.
//! Hidden entries are passed over; so are FIFOs, devices and sockets, which
//! could block or never end, with a warning. The walk keeps its own stack,
//! so depth costs no call stack.

use super::InputError;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub(super) struct Found {
    pub files: Vec<PathBuf>,
    /// Files with other extensions.
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

fn is_input_name(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("yaml" | "yml" | "json" | "xml"))
}

pub(super) fn walk(root: &Path) -> Result<Found, InputError> {
    let mut found = Found::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    // Paths still to visit, the next one last.
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let io = |source| InputError::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // A dangling link with another extension is passed over like
            // any other file of that name; one that should be input is an error.
            Err(_) if path != root && !is_input_name(&path) => {
                found.skipped.push(path.display().to_string());
                continue;
            }
            Err(e) => return Err(io(e)),
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(io)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            entries.retain(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            });
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if !is_input_name(&path) {
            found.skipped.push(path.display().to_string());
        } else if meta.is_file() {
            found.files.push(path);
        } else {
            found.warnings.push(format!(
                "{}: not a regular file (a FIFO, device or socket); skipped",
                path.display()
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_back_up_the_tree_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("a.yaml"), "").unwrap();
        std::fs::write(d.join("sub/b.json"), "").unwrap();
        std::fs::write(d.join("notes.txt"), "").unwrap();
        std::os::unix::fs::symlink(".", d.join("again")).unwrap();
        std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("a.yaml", d.join("z.yaml")).unwrap();
        let found = walk(d).unwrap();
        let names: Vec<_> = found
            .files
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.yaml", "sub/b.json"]);
        assert_eq!(found.skipped.len(), 1);
    }
}
