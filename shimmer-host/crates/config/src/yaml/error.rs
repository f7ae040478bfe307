//! The one error type of configuration loading.

use super::origin::Origin;
use std::fmt;

/// What kind of problem a [`ConfigError`] reports, for callers that react
/// differently to each (tests, `shimmer validate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read.
    Read,
    /// A file or override value is not valid YAML, or has a shape the
    /// loader does not accept (duplicate key, top level not a mapping, ...).
    Syntax,
    /// An `extends` entry is malformed or forms a cycle.
    Extends,
    /// A command-line override is malformed or cannot be applied.
    Override,
    /// A `${...}` interpolation names a missing key or variable, or loops.
    Interpolation,
    /// The merged document does not fit the configuration type: unknown
    /// key, wrong type, missing field, unknown variant.
    Invalid,
}

/// A configuration error that says where it happened: the file, line and
/// column (or the command-line override) and the key path, then what is
/// wrong.
///
/// Displayed as `file:line:col: key.path: message`, e.g.
/// ``gw.yaml:12:5: workspace.dims: unknown field `dims`, expected one of `flavour`, `dim` ``.
#[derive(Debug)]
pub struct ConfigError {
    kind: ErrorKind,
    origin: Option<Origin>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error of `kind` with `message` and no position yet.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            origin: None,
            key: None,
            message: message.into(),
        }
    }

    /// Sets where the error happened.
    pub(crate) fn at(mut self, origin: Option<Origin>) -> Self {
        self.origin = origin;
        self
    }

    /// Sets the key path the error is about; an empty path means the root
    /// and is not shown.
    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.key = (!key.is_empty()).then_some(key);
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where the offending value was set, when known.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The dotted key path of the offending value (`optim.betas[1]`), when
    /// the error is about one.
    pub fn key_path(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, without position or key path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
