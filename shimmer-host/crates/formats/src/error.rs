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

/// Characters of untrusted text [`excerpt`] keeps.
pub const EXCERPT_CHARS: usize = 80;

/// `text`, read from a file a user gave, as an error may quote it: whole
/// when it is at most [`EXCERPT_CHARS`] characters, else its first
/// [`EXCERPT_CHARS`] characters followed by `… (N bytes)`. Control
/// characters are escaped, so a quote stays on one line. A hostile file can
/// hold a name or number of megabytes; an error that quoted it whole would
/// bury the cause (and cost the memory twice).
pub fn excerpt(text: &str) -> String {
    quote(text, text.len(), false)
}

/// [`excerpt`] of bytes that may not be UTF-8 (invalid sequences shown as
/// U+FFFD); only the first bytes are decoded.
pub(crate) fn excerpt_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(4 * EXCERPT_CHARS)];
    quote(
        &String::from_utf8_lossy(head),
        bytes.len(),
        head.len() < bytes.len(),
    )
}

/// The first [`EXCERPT_CHARS`] characters of `text`, then `… (total
/// bytes)` when more followed (in `text` or, when `cut`, after it).
fn quote(text: &str, total: usize, cut: bool) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(EXCERPT_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut || chars.next().is_some() {
        out.push_str(&format!("\u{2026} ({total} bytes)"));
    }
    out
}

/// The text of an I/O error without its repeated `(os error N)` suffix
/// glued to a kind description (`No such file or directory`).
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_keep_short_text_and_cut_long_text() {
        assert_eq!(excerpt("(2, 3)"), "(2, 3)");
        let long = "7".repeat(2_000_000);
        let e = excerpt(&long);
        assert_eq!(e, format!("{}\u{2026} (2000000 bytes)", "7".repeat(80)));
        assert_eq!(excerpt("a\nb"), "a\\nb");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let bytes = vec![b'9'; 1 << 20];
        assert_eq!(
            excerpt_bytes(&bytes),
            format!("{}\u{2026} (1048576 bytes)", "9".repeat(80))
        );
        assert_eq!(excerpt_bytes(b"ab\xffc"), "ab\u{fffd}c");
    }
}
