//! Atomic file writes: readers see the old file or the whole new one, a
//! crash leaves no half-written file, and what was written is on disk when
//! the call returns.
//!
//! Built on `tempfile` (already what the host uses for scratch files):
//! the temporary file is created beside the target with mode `0666`
//! filtered by the process's umask, as a plain `File::create` would be, so
//! lab-mates in the same group read checkpoints when the umask says so.

use anyhow::{Context, Result};
use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically (see the module doc).
///
/// # Errors
/// When the folder is not writable or the disk is full; `path` is then
/// unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |_, file| {
        std::io::Write::write_all(file, bytes).map_err(anyhow::Error::from)
    })
}

/// Atomically replaces `path` with what `fill` writes, given the temporary
/// file's path and the open file (for writers that take either).
///
/// # Errors
/// `fill`'s error, or a failure to create, sync or rename the file; `path`
/// is then unchanged and the temporary file removed.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&Path, &mut File) -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let tmp_path = tmp.path().to_path_buf();
    fill(&tmp_path, tmp.as_file_mut())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A path-based writer wrote through its own handle: reopen to sync it.
    File::open(&tmp_path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp_path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The rename itself is durable once the folder is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))?;
    Ok(())
}

/// SHA-256 of a file's bytes, in lowercase hex: which build of a plugin or
/// which version of a checkpoint a run used.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn files_replace_whole_and_follow_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        // The umask of this process, read without changing it.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        let mode = std::fs::metadata(&file).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}, umask {umask:o}");
        // Nothing but the file is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        write_atomic(&file, b"old").unwrap();
        let err = write_atomic_with(&file, |_, _| anyhow::bail!("disk full")).unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn path_based_writers_are_synced_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.bin");
        write_atomic_with(&file, |tmp, _| Ok(std::fs::write(tmp, b"xyz")?)).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"xyz");
    }
}
