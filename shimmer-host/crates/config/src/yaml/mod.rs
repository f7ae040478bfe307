//! Experiment files and command-line overrides to a typed configuration,
//! with errors that say where: file, line, column and key path.
//!
//! Layers, last one wins (mappings merge key by key; scalars and lists are
//! replaced):
//! 1. the files named by `extends: base.yaml` or `extends: [a.yaml, b.yaml]`
//!    (relative to the file naming them, each with its own bases first);
//! 2. the experiment file itself;
//! 3. `local.yaml` next to the experiment file, if present (git-ignored:
//!    per-machine paths and devices);
//! 4. command-line overrides `key.path=value`, the value read as YAML
//!    (`optim.lr=3e-4`, `data.groups=[a, b]`, `domains.v.config={dim: 8}`,
//!    `data.groups.0.split=val`).
//!
//! Then `${a.b}` and `${env:NAME,default}` are resolved (see
//! [Interpolation](#interpolation)), and the result is deserialized
//! into the caller's type. Any error names where the offending key was
//! last set:
//!
//! ```text
//! experiments/tutorial/gw.yaml:12:5: workspace.dims: unknown field `dims`, expected one of `flavour`, `dim`, ...
//! command-line override `optim.lr=fast`: optim.lr: invalid type: string "fast", expected f64
//! ```
//!
//! # Interpolation
//!
//! A string that is exactly `${a.b}` becomes the value at `a.b`, type
//! included; `${a.b}` inside longer text is replaced by the value's text.
//! `${env:NAME}` reads an environment variable (an error if unset) and
//! `${env:NAME,default}` falls back to `default`; as a whole value it is
//! typed like plain YAML (`seed: ${env:SEED,0}` is a number).
//! `${path:data/x.npy}` is the absolute path of `data/x.npy` taken from the
//! folder of the file that says it (the working folder for an override).
//! `\${` is a literal `${`.
//!
//! An experiment is loaded (and checked) by [`crate::load`]; this module
//! reads any serde type the same way:
//!
//! ```no_run
//! use shimmer_config::Experiment;
//! use std::path::Path;
//!
//! let overrides = vec!["optim.lr=3e-4".to_string()];
//! let loaded = shimmer_config::yaml::load::<Experiment>(Path::new("experiments/tutorial/gw.yaml"), &overrides)?;
//! println!("{}", loaded.resolved_yaml);
//! # Ok::<(), shimmer_config::yaml::ConfigError>(())
//! ```

mod de;
mod emit;
mod error;
mod interpolate;
mod layers;
mod locate;
mod merge;
mod node;
mod origin;
mod overrides;
mod parse;
mod scalar;

pub use error::{ConfigError, ErrorKind};
pub(crate) use node::check_key_depth;
pub use origin::Origin;

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration read and checked by [`load`].
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    /// The typed configuration.
    pub config: T,
    /// The merged, resolved document as YAML: what the run actually used,
    /// written next to its results.
    pub resolved_yaml: String,
    /// The merged document, to place later errors at their key.
    pub document: Document,
}

impl<T> Loaded<T> {
    /// Every file read, in merge order (bases, experiment, `local.yaml`).
    pub fn files(&self) -> &[PathBuf] {
        self.document.files()
    }

    /// An error about the value at the dotted key path `key`, placed where
    /// that key was set (for checks made after loading, e.g. of metric
    /// names only a built model knows).
    pub fn invalid_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.document.invalid_at(key, message)
    }
}

/// Reads the experiment at `path` with its layers and `overrides`, and
/// deserializes it into `T`.
///
/// # Errors
/// A [`ConfigError`] naming the file, line, column and key path of the
/// problem: unreadable file, YAML syntax, `extends` cycle, malformed
/// override, unresolvable `${...}`, or a value that does not fit `T`.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    overrides: &[String],
) -> Result<Loaded<T>, ConfigError> {
    let document = Document::load(path, overrides)?;
    Ok(Loaded {
        config: document.deserialize()?,
        resolved_yaml: document.to_yaml()?,
        document,
    })
}

/// A merged and resolved configuration document that still knows where
/// each value was set: for callers that deserialize it more than once or
/// into several types (e.g. a sweep's trials).
#[derive(Clone, Debug)]
pub struct Document {
    root: node::Node,
    files: Vec<PathBuf>,
}

/// Makes the folders of `plugins.paths` absolute, each relative one taken
/// from the folder of the file that says it (as `${path:...}` and item-list
/// files are), or from the working folder for a command-line override: an
/// experiment then finds its plugins from wherever it is run.
fn anchor_plugin_paths(root: &mut node::Node) {
    let node::Value::Map(top) = &mut root.value else {
        return;
    };
    let Some(plugins) = top.get_mut("plugins") else {
        return;
    };
    let node::Value::Map(plugins) = &mut plugins.node.value else {
        return;
    };
    let Some(paths) = plugins.get_mut("paths") else {
        return;
    };
    let node::Value::Seq(items) = &mut paths.node.value else {
        return;
    };
    for item in items {
        let node::Value::Scalar(scalar) = &mut item.value else {
            continue;
        };
        let path = Path::new(&scalar.text);
        if path.is_absolute() || scalar.text.is_empty() {
            continue;
        }
        let base = match &item.origin {
            origin::Origin::File { path, .. } => {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            origin::Origin::Override { .. } => PathBuf::new(),
        };
        let joined = base.join(path);
        let joined = std::path::absolute(&joined).unwrap_or(joined);
        scalar.text = layers::normalize(&joined).to_string_lossy().into_owned();
        scalar.quoted = true;
    }
}

impl Document {
    /// Reads `path` with its `extends` bases and `local.yaml`, applies
    /// `overrides` in order, and resolves interpolations.
    ///
    /// # Errors
    /// As [`load`], except for type mismatches, which [`Document::deserialize`]
    /// reports.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let layers = layers::read_layers(path)?;
        let mut root = layers.root;
        for text in overrides {
            overrides::apply(&mut root, text)?;
        }
        let mut root = interpolate::interpolate(&root)?;
        anchor_plugin_paths(&mut root);
        Ok(Document {
            root,
            files: layers.files,
        })
    }

    /// A document from YAML text alone (no `extends`, no `local.yaml`), its
    /// positions named after `path`: for configurations built in code.
    ///
    /// # Errors
    /// As [`Document::load`].
    pub fn from_text(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let root = parse::parse(text, parse::Source::File(path))?
            .unwrap_or_else(|| node::Node::empty_map(Origin::file_start(path.to_path_buf())));
        Ok(Document {
            root: interpolate::interpolate(&root)?,
            files: vec![path.to_path_buf()],
        })
    }

    /// An error of kind [`ErrorKind::Invalid`] about the value at the dotted
    /// key path `key` (`training.monitor`, `data.groups.0.items`), placed
    /// where that key was last set (or its nearest parent that exists).
    pub fn invalid_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let mut node = &self.root;
        let mut origin = self.root.origin.clone();
        for part in key.split('.').filter(|p| !p.is_empty()) {
            let next = match &node.value {
                node::Value::Map(map) => map.get(part).map(|e| (&e.node, e.key_origin.clone())),
                node::Value::Seq(items) => part
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .map(|n| (n, n.origin.clone())),
                _ => None,
            };
            let Some((child, at)) = next else { break };
            node = child;
            origin = at;
        }
        ConfigError::new(ErrorKind::Invalid, message)
            .at(Some(origin))
            .key(key)
    }

    /// The document as `T`.
    ///
    /// # Errors
    /// A [`ConfigError`] of kind [`ErrorKind::Invalid`] naming where the
    /// offending key or value was last set, with serde's explanation (for
    /// unknown keys and variants, the allowed ones).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(&self.root).map_err(|e| locate::locate(&self.root, e))
    }

    /// The document as YAML text, plain values typed.
    ///
    /// # Errors
    /// Only if the YAML writer fails.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        emit::to_yaml(&self.root)
    }

    /// Every file read, in merge order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}
