//! Folders one process owns at a time: an advisory lock on a `.lock` file
//! inside (`flock`, which the kernel drops when the process dies, however it
//! dies), holding the owner's pid for the message a second process gets.
//! Run folders and sweep folders take one, so two runs, resumes or sweeps
//! can never write one folder at once.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive hold on a folder, released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes the folder `folder` (which must exist) for this process;
    /// `what` names it in the refusal (`run folder`, `sweep folder`).
    ///
    /// # Errors
    /// `{what} X is in use (pid N)` when another process holds it, or why
    /// the lock file cannot be opened.
    pub fn acquire(folder: &Path, what: &str) -> Result<Self> {
        let path = folder.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let by = if owner.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {owner}")
                };
                bail!(
                    "{what} {} is in use ({by}): wait for it to end, or use another folder",
                    folder.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// Whether `dir` exists and holds anything besides a lock file (a folder
/// already in use, or someone else's).
///
/// # Errors
/// When it exists but cannot be read.
pub fn holds_more_than_a_lock(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .any(|e| e.file_name() != LOCK_FILE))
}

/// Removes the temporary files an interrupted atomic write left in
/// `folder` (`.<name>.<random>.tmp`, see [`crate::fs::write_atomic`]), and
/// returns how many bytes it freed. Call it only while holding the
/// folder's [`FolderLock`]: then no write is in flight.
pub fn remove_stale_temp_files(folder: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_temp = name.starts_with('.') && name.ends_with(".tmp");
        let Ok(meta) = entry.metadata() else { continue };
        if is_temp && meta.is_file() && std::fs::remove_file(entry.path()).is_ok() {
            freed += meta.len();
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_with_the_owner_pid_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = FolderLock::acquire(dir.path(), "run folder").unwrap();
        let err = FolderLock::acquire(dir.path(), "run folder").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "run folder {} is in use (pid {}): wait for it to end, or use another folder",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
        assert!(FolderLock::acquire(dir.path(), "run folder").is_ok());
    }

    #[test]
    fn only_temporary_files_of_atomic_writes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".last.safetensors.ab12.tmp"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("last.safetensors"), [0u8; 3]).unwrap();
        std::fs::write(dir.path().join("notes.tmp"), [0u8; 3]).unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()), 10);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["last.safetensors", "notes.tmp"]);
    }
}
