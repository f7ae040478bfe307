//! Opening files a user named: only regular files (never a device, a FIFO
//! or a folder, which would be read until memory runs out or block
//! forever), read whole under a size cap, or memory-mapped.

// Memory-mapping a file is `unsafe` in Rust; the one block says why it holds.
#![allow(unsafe_code)]

use crate::error::{FormatError, Result, io_text};
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symbolic links are
/// followed) and returns it with its size in bytes. The file is opened
/// without blocking, so a FIFO is refused instead of waiting for a writer.
///
/// # Errors
/// A missing or unreadable file, or one that is not a regular file (the
/// message says what it is).
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FormatError::new(path, format!("cannot open: {}", io_text(&e))))?;
    let meta = file.metadata().map_err(|e| {
        FormatError::new(path, format!("cannot read its metadata: {}", io_text(&e)))
    })?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(FormatError::new(
            path,
            format!("is {}, not a regular file", kind_of(kind)),
        ));
    }
    Ok((file, meta.len()))
}

/// What a file that is not a regular one is, for a message (`a FIFO`,
/// `a folder`, `a character device`, ...).
pub fn kind_of(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Reads the whole regular file at `path`, refusing one larger than
/// `max_bytes` before reading it.
///
/// # Errors
/// As [`open_regular`], a file over the cap, or a read error.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(FormatError::new(
            path,
            format!(
                "is {} bytes, over the {} bytes allowed for this kind of file",
                len, max_bytes
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` keeps the cap even if the file grows while it is read.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FormatError::new(path, format!("cannot read: {}", io_text(&e))))?;
    if bytes.len() as u64 > max_bytes {
        return Err(FormatError::new(
            path,
            format!("grew over the {max_bytes} bytes allowed while it was read"),
        ));
    }
    Ok(bytes)
}

/// Reads the regular file at `path` as UTF-8 text, under a size cap.
///
/// # Errors
/// As [`read_regular`], or text that is not UTF-8.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String> {
    String::from_utf8(read_regular(path, max_bytes)?)
        .map_err(|e| FormatError::new(path, format!("is not UTF-8 text: {}", e.utf8_error())))
}

/// Maps the regular file at `path` into memory, read-only: its pages are
/// read from the page cache when touched, never copied whole. An empty file
/// maps to no bytes.
///
/// Data files must not be truncated while a run maps them (the kernel would
/// end the process on the next read of a lost page); rewriting them in
/// place changes what later reads see.
///
/// # Errors
/// As [`open_regular`], or a failed mapping.
pub fn map_regular(path: &Path) -> Result<Mapped> {
    let (file, len) = open_regular(path)?;
    if len == 0 {
        return Ok(Mapped { map: None });
    }
    // SAFETY: the map is read-only and private to this process; the
    // documented rule above is that data files are not modified while in use.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| FormatError::new(path, format!("cannot map into memory: {}", io_text(&e))))?;
    Ok(Mapped { map: Some(map) })
}

/// The bytes of a memory-mapped file.
#[derive(Debug)]
pub struct Mapped {
    map: Option<Mmap>,
}

impl Mapped {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_and_folders_are_refused_by_name() {
        let err = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/dev/zero: is a character device, not a regular file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_regular(dir.path(), 10).unwrap_err();
        assert!(err.message().contains("is a folder"), "{err}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Would block forever if opened without O_NONBLOCK.
        let err = map_regular(&fifo).unwrap_err();
        assert!(err.message().contains("is a FIFO"), "{err}");
    }

    #[test]
    fn symlinks_are_followed_to_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ckpt.safetensors");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(
            read_regular(&link, 1 << 20)
                .unwrap_err()
                .message()
                .contains("character device")
        );
        let real = dir.path().join("real");
        std::fs::write(&real, b"abc").unwrap();
        let link2 = dir.path().join("link2");
        std::os::unix::fs::symlink(&real, &link2).unwrap();
        assert_eq!(read_regular(&link2, 3).unwrap(), b"abc");
    }

    #[test]
    fn size_cap_is_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![0u8; 100]).unwrap();
        let err = read_regular(&f, 99).unwrap_err();
        assert!(err.message().contains("100 bytes, over the 99"), "{err}");
        assert_eq!(read_regular(&f, 100).unwrap().len(), 100);
        assert_eq!(map_regular(&f).unwrap().bytes().len(), 100);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(map_regular(&empty).unwrap().bytes().is_empty());
    }

    #[test]
    fn missing_file_message_says_it_once() {
        let err = open_regular(Path::new("/nonexistent/x.npy"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/nonexistent/x.npy: cannot open: No such file or directory"
        );
    }
}
