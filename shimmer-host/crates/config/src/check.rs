//! The error of a semantic check, naming the key at fault.

/// A semantic check that failed: the dotted key path at fault
/// (`pretrain.domain`, `loss.coefs.cycels`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CheckError {
    /// Dotted path of the key at fault, as written in the YAML.
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl CheckError {
    /// A failure of the value at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
