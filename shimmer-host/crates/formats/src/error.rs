//! The one error type of the readers: the file and what is wrong with it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A file that cannot be read as asked: which file, and why, in words a
/// user can act on (`data/train_latent.npy: truncated: the header promises
/// 3072 bytes of data, the file holds 1024`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    path: PathBuf,
    message: String,
}

impl FormatError {
    /// An error about `path`.
    pub fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong, without the file name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for FormatError {}

/// Result of the readers.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// The text of an I/O error without its repeated `(os error N)` suffix
/// glued to a kind description (`No such file or directory`).
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
