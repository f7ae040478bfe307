//! Reading an experiment file with its `extends` bases and the `local.yaml`
//! next to it, merged in order.

use super::error::{ConfigError, ErrorKind};
use super::merge::merge;
use super::node::{Node, Value};
use super::origin::Origin;
use super::parse::{Source, parse};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// The key naming the files an experiment file builds on.
pub(crate) const EXTENDS: &str = "extends";

/// Largest configuration file read (bytes): far above any experiment,
/// small enough that a wrong path (a device, a dataset) cannot fill memory.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The git-ignored per-machine file merged after the experiment.
pub(crate) const LOCAL: &str = "local.yaml";

/// The merged layers of an experiment file and the files read, in merge
/// order.
pub(crate) struct Layers {
    /// Bases, then the experiment, then `local.yaml`, merged.
    pub(crate) root: Node,
    /// Every file read, in the order it was merged.
    pub(crate) files: Vec<PathBuf>,
}

/// Most files one experiment is built from (each base counted once).
const MAX_FILES: usize = 64;
/// Most `extends` entries followed in all (each merges a copy of its base).
const MAX_EXTENDS: usize = 256;

/// Reads `path` with its bases (recursively) and the `local.yaml` next to
/// it, if there is one.
pub(crate) fn read_layers(path: &Path) -> Result<Layers, ConfigError> {
    let mut reader = Reader::default();
    let mut root = reader.read_file(path, None)?;
    let local = path.with_file_name(LOCAL);
    if local.is_file() && !same_file(&local, path) {
        let over = reader.read_file(&local, None)?;
        merge(&mut root, over);
    }
    Ok(Layers {
        root,
        files: reader.files,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reads files with their bases, each file once: a base named by several
/// files (a diamond, `extends: [a.yaml, b.yaml]` both on `common.yaml`) is
/// read and merged once, then its merged layers reused wherever it is
/// named, in the order `extends` gives.
#[derive(Default)]
struct Reader {
    /// Canonical and shown paths of the files extending the one being read.
    chain: Vec<(PathBuf, PathBuf)>,
    /// Every file read, in merge order.
    files: Vec<PathBuf>,
    /// Each file read, by canonical path, with its bases merged under it.
    done: HashMap<PathBuf, Node>,
    /// `extends` entries followed so far.
    followed: usize,
}

impl Reader {
    /// One file with its bases merged under it; `from` is the `extends`
    /// entry that named it. Files are read at their path as joined;
    /// messages show it with `..` folded away.
    fn read_file(&mut self, real: &Path, from: Option<&Origin>) -> Result<Node, ConfigError> {
        let shown = normalize(real);
        let path = shown.as_path();
        let cannot_read = |e: std::io::Error| {
            ConfigError::new(
                ErrorKind::Read,
                format!("cannot read `{}`: {e}", path.display()),
            )
            .at(from.cloned())
        };
        let canonical = real.canonicalize().map_err(cannot_read)?;
        if let Some(start) = self.chain.iter().position(|(c, _)| *c == canonical) {
            let names: Vec<String> = self.chain[start..]
                .iter()
                .map(|(_, shown)| shown.display().to_string())
                .chain([path.display().to_string()])
                .collect();
            let message = format!("`extends` cycle: {}", names.join(" -> "));
            return Err(ConfigError::new(ErrorKind::Extends, message).at(from.cloned()));
        }
        if let Some(done) = self.done.get(&canonical) {
            return Ok(done.clone());
        }
        if self.done.len() + self.chain.len() >= MAX_FILES {
            let shown = path.display();
            let message =
                format!("an experiment is built from at most {MAX_FILES} files: refused `{shown}`");
            return Err(ConfigError::new(ErrorKind::Extends, message).at(from.cloned()));
        }
        let text = shimmer_formats::file::read_text(real, MAX_FILE_BYTES).map_err(|e| {
            ConfigError::new(
                ErrorKind::Read,
                format!("cannot read `{}`: {}", path.display(), e.message()),
            )
            .at(from.cloned())
        })?;
        let mut node = parse(&text, Source::File(path))?
            .unwrap_or_else(|| Node::empty_map(Origin::file_start(path.to_path_buf())));
        let Value::Map(map) = &mut node.value else {
            let message = format!(
                "the top level of a configuration file must be a mapping of keys, not {}",
                node.describe()
            );
            return Err(ConfigError::new(ErrorKind::Syntax, message).at(Some(node.origin)));
        };
        let bases = map
            .shift_remove(EXTENDS)
            .map(|entry| base_paths(entry.node, real))
            .transpose()?
            .unwrap_or_default();
        let mut merged = Node::empty_map(node.origin.clone());
        self.chain.push((canonical.clone(), path.to_path_buf()));
        for (base, origin) in bases {
            self.followed += 1;
            if self.followed > MAX_EXTENDS {
                let message = format!("more than {MAX_EXTENDS} `extends` entries in all: refused");
                return Err(ConfigError::new(ErrorKind::Extends, message).at(Some(origin)));
            }
            let layer = self.read_file(&base, Some(&origin))?;
            merge(&mut merged, layer);
        }
        self.chain.pop();
        self.files.push(path.to_path_buf());
        merge(&mut merged, node);
        self.done.insert(canonical, merged.clone());
        Ok(merged)
    }
}

/// The files an `extends` value names (one path or a list), resolved
/// against the folder of the file that names them.
fn base_paths(node: Node, including: &Path) -> Result<Vec<(PathBuf, Origin)>, ConfigError> {
    let dir = including.parent().unwrap_or(Path::new(""));
    let items = match node.value {
        Value::Seq(items) => items,
        Value::Scalar(_) if node.is_null() => Vec::new(),
        Value::Scalar(_) => vec![node],
        Value::Map(_) => vec![node],
    };
    items
        .into_iter()
        .map(|item| match item.value {
            Value::Scalar(s) if !s.is_null() => Ok((dir.join(&s.text), item.origin)),
            _ => Err(ConfigError::new(
                ErrorKind::Extends,
                format!(
                    "`extends` takes a file path or a list of file paths, not {}",
                    item.describe()
                ),
            )
            .at(Some(item.origin))
            .key(EXTENDS)),
        })
        .collect()
}

/// Folds `.` and `name/..` out of a path without touching the file system,
/// so messages show `experiments/base.yaml` rather than
/// `experiments/tutorial/../base.yaml`.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_dots() {
        assert_eq!(normalize(Path::new("a/b/../c.yaml")), Path::new("a/c.yaml"));
        assert_eq!(normalize(Path::new("./a/./c.yaml")), Path::new("a/c.yaml"));
        assert_eq!(normalize(Path::new("../a.yaml")), Path::new("../a.yaml"));
        assert_eq!(normalize(Path::new("/x/../a.yaml")), Path::new("/a.yaml"));
    }
}
