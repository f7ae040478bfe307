//! Where a value of the merged configuration was set.

use std::fmt;
use std::path::PathBuf;

/// Where a value of the merged configuration was set: a position in one of
/// the layered YAML files, or a command-line override.
///
/// Errors print it first, so an editor or terminal can jump to the place:
/// `experiments/tutorial/gw.yaml:12:5` or
/// ``command-line override `optim.lr=fast` `` (a long override cut short).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A position in a YAML file.
    File {
        /// The file, as reached from the experiment path (`..` folded away).
        path: PathBuf,
        /// Line, starting at 1.
        line: usize,
        /// Column, starting at 1.
        column: usize,
    },
    /// A `key.path=value` command-line override.
    Override {
        /// The whole override as given on the command line.
        text: String,
    },
}

impl Origin {
    /// The start of `path`: where the settings of an empty file come from.
    pub(crate) fn file_start(path: PathBuf) -> Self {
        Origin::File {
            path,
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Origin::Override { text } => {
                write!(
                    f,
                    "command-line override `{}`",
                    shimmer_formats::excerpt(text)
                )
            }
        }
    }
}
