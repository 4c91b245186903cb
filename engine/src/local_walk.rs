//! Walks a local directory the way a listing of it reads it: every entry,
//! symlinks followed (a dangling one skipped, as a listing skips it), each
//! directory once; each entry with where it really leads.
//!
//! The location sandbox checks where each entry leads
//! ([`crate::sandbox::LocationSandbox`]); a kept plan lists its tables'
//! files with the same walk, checked on the way, so that one pass over the
//! directory serves both ([`crate::kept_plan`]).

use std::collections::HashSet;
use std::fs::DirEntry;
use std::ops::ControlFlow;
use std::path::Path;

use datafusion::error::Result;

/// One entry under the walked directory.
pub struct WalkedEntry<'a> {
    /// The path as a listing returns it (under the directory as given).
    pub path: &'a Path,
    /// Where it leads: its directory's resolved path joined with its name,
    /// or a symlink's target with every symlink followed.
    pub resolved: &'a Path,
    /// Whether it is (or leads to) a directory, walked next.
    pub is_dir: bool,
    /// The entry as the directory read it.
    pub entry: &'a DirEntry,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Every entry was read and visited.
    Complete,
    /// A directory or an entry could not be read and was left out.
    Incomplete,
    /// The visitor stopped it.
    Stopped,
}

/// Shows `visit` every entry under `dir`, whose resolved (canonical) path
/// is `resolved`; an error from `visit` ends the walk with it.
pub fn walk(
    dir: &Path,
    resolved: &Path,
    mut visit: impl FnMut(&WalkedEntry<'_>) -> Result<ControlFlow<()>>,
) -> Result<Walked> {
    // Each directory as listed, and where it leads.
    let mut pending = vec![(dir.to_path_buf(), resolved.to_path_buf())];
    let mut visited = HashSet::new();
    let mut walked = Walked::Complete;
    while let Some((dir, resolved)) = pending.pop() {
        if !visited.insert(resolved.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            walked = Walked::Incomplete;
            continue;
        };
        for entry in entries {
            let Ok(entry) = entry else {
                walked = Walked::Incomplete;
                continue;
            };
            let path = entry.path();
            // An entry that is not a symlink is where its name says, in the
            // resolved directory (no system call needed); a symlink is
            // followed.
            let (target, is_dir) = match entry.file_type() {
                Ok(kind) if !kind.is_symlink() => (resolved.join(entry.file_name()), kind.is_dir()),
                _ => match path.canonicalize() {
                    Ok(target) => {
                        let is_dir = target.is_dir();
                        (target, is_dir)
                    }
                    Err(_) => continue,
                },
            };
            let walked_entry = WalkedEntry {
                path: &path,
                resolved: &target,
                is_dir,
                entry: &entry,
            };
            if visit(&walked_entry)?.is_break() {
                return Ok(Walked::Stopped);
            }
            if is_dir {
                pending.push((path.clone(), target.clone()));
            }
        }
    }
    Ok(walked)
}
