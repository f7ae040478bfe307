//! `${a.b}` and `${env:NAME,default}` interpolation over the merged
//! document.
//!
//! A string that is exactly one `${a.b}` becomes the value at `a.b`, type
//! included (a number, a list, a mapping); `${a.b}` inside longer text is
//! replaced by the value's text. `${env:NAME}` reads an environment
//! variable (an error if unset), `${env:NAME,default}` falls back to
//! `default`; a whole-string one is typed like a plain YAML scalar
//! (`${env:SEED,0}` is a number). `${path:RELATIVE}` is the absolute path
//! of `RELATIVE` taken from the folder of the file the value is written in
//! (the working folder for a command-line override), so an experiment can
//! name its data beside itself and still run from any folder (and resume
//! from its run folder). References may lead to other references, at most
//! [`MAX_DEPTH`] in a chain (and the resolved tree at most [`MAX_DEPTH`]
//! deep); loops are errors. `\${` writes a literal `${`.

use super::error::{ConfigError, ErrorKind};
use super::layers::normalize;
use super::node::{
    Entry, MAX_DEPTH, MAX_TEXT, MAX_VALUES, Map, Node, Scalar, Seg, Value, check_key_depth, show,
};
use super::origin::Origin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Resolves every interpolation of `root`, returning the resolved copy.
pub(crate) fn interpolate(root: &Node) -> Result<Node, ConfigError> {
    let mut resolver = Resolver {
        root,
        stack: Vec::new(),
        done: HashMap::new(),
        spent: 0,
        depth: 0,
    };
    resolver.tree(root, &mut Vec::new())
}

/// One piece of a string with interpolations.
#[derive(Debug, PartialEq)]
enum Part {
    /// Text kept as is.
    Text(String),
    /// The inside of a `${...}`.
    Ref(String),
}

/// Splits a string into text and `${...}` references.
fn split(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('\\') {
            literal.push_str(&rest[..at - 1]);
            literal.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        literal.push_str(&rest[..at]);
        let inner_start = at + 2;
        let Some(len) = rest[inner_start..].find('}') else {
            return Err(format!("`${{` without a closing `}}` in `{text}`"));
        };
        let inner = &rest[inner_start..inner_start + len];
        if inner.contains("${") {
            return Err(format!("nested `${{...}}` in `{text}` is not supported"));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(Part::Ref(inner.trim().to_string()));
        rest = &rest[inner_start + len + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

/// A key path as written in `${a.b.0}`.
fn ref_path(inner: &str) -> Option<Vec<Seg>> {
    inner
        .split('.')
        .map(|seg| match seg {
            "" => None,
            _ => Some(match seg.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(seg.to_string()),
            }),
        })
        .collect()
}

struct Resolver<'a> {
    root: &'a Node,
    /// Paths of the strings being resolved, outermost first.
    stack: Vec<Vec<Seg>>,
    /// Strings already resolved, by path.
    done: HashMap<Vec<Seg>, Node>,
    /// Weight of every value references copied so far (see [`MAX_VALUES`]).
    spent: usize,
    /// Calls of [`Resolver::tree`] under way (see [`MAX_WALK`]).
    depth: usize,
}

/// Deepest walk through references and the values they name (a chain of
/// references each inside a deep mapping), well within the stack.
const MAX_WALK: usize = 4 * MAX_DEPTH;

impl<'a> Resolver<'a> {
    /// `node` (at `path`) with every interpolation inside it resolved.
    fn tree(&mut self, node: &'a Node, path: &mut Vec<Seg>) -> Result<Node, ConfigError> {
        if self.depth >= MAX_WALK {
            let message = format!("`${{...}}` references nest more than {MAX_WALK} deep: refused");
            return Err(self.error(node, path, message));
        }
        self.depth += 1;
        let resolved = self.walk(node, path);
        self.depth -= 1;
        resolved
    }

    /// [`Resolver::tree`] below its depth check.
    fn walk(&mut self, node: &'a Node, path: &mut Vec<Seg>) -> Result<Node, ConfigError> {
        let value = match &node.value {
            Value::Scalar(s) => return self.scalar(node, s, path),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    let resolved = self.tree(item, path);
                    path.pop();
                    out.push(resolved?);
                }
                Value::Seq(out)
            }
            Value::Map(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, entry) in map {
                    path.push(Seg::Key(key.clone()));
                    let resolved = self.tree(&entry.node, path);
                    path.pop();
                    out.insert(
                        key.clone(),
                        Entry {
                            node: resolved?,
                            ..entry.clone()
                        },
                    );
                }
                Value::Map(out)
            }
        };
        Ok(Node {
            value,
            origin: node.origin.clone(),
        })
    }

    fn error(&self, node: &Node, path: &[Seg], message: String) -> ConfigError {
        ConfigError::new(ErrorKind::Interpolation, message)
            .at(Some(node.origin.clone()))
            .key(show(path))
    }

    /// A scalar with its interpolations resolved.
    fn scalar(&mut self, node: &'a Node, s: &Scalar, path: &[Seg]) -> Result<Node, ConfigError> {
        if !s.text.contains("${") {
            return Ok(node.clone());
        }
        if let Some(done) = self.done.get(path) {
            return Ok(done.clone());
        }
        if let Some(start) = self.stack.iter().position(|p| p == path) {
            let chain: Vec<String> = self.stack[start..]
                .iter()
                .chain([&path.to_vec()])
                .map(|p| format!("`{}`", show(p)))
                .collect();
            let message = format!("interpolation cycle: {}", chain.join(" -> "));
            return Err(self.error(node, path, message));
        }
        if self.stack.len() >= MAX_DEPTH {
            let first = self.stack.first().map(|p| show(p)).unwrap_or_default();
            let message = format!(
                "`${{...}}` references chain through more than {MAX_DEPTH} values (from \
                 `{first}` to here): a chain is at most {MAX_DEPTH} long"
            );
            return Err(self.error(node, path, message));
        }
        let parts = split(&s.text).map_err(|m| self.error(node, path, m))?;
        self.stack.push(path.to_vec());
        let resolved = self.parts(node, path, parts);
        self.stack.pop();
        let resolved = resolved?;
        self.done.insert(path.to_vec(), resolved.clone());
        Ok(resolved)
    }

    fn parts(
        &mut self,
        node: &'a Node,
        path: &[Seg],
        parts: Vec<Part>,
    ) -> Result<Node, ConfigError> {
        if let [Part::Ref(inner)] = parts.as_slice() {
            let mut value = self.reference(node, path, inner)?;
            let depth = path.len() + value.depth();
            if depth > MAX_DEPTH {
                let message = format!(
                    "`${{{inner}}}` makes the configuration {depth} levels deep here: it nests \
                     at most {MAX_DEPTH} deep"
                );
                return Err(self.error(node, path, message));
            }
            self.spend(node, path, value.weight())?;
            value.origin = node.origin.clone();
            return Ok(value);
        }
        let mut text = String::new();
        for part in parts {
            let piece = match part {
                Part::Text(t) => t,
                Part::Ref(inner) => {
                    let value = self.reference(node, path, &inner)?;
                    match value.value {
                        Value::Scalar(v) if v.text.is_empty() && v.is_null() => "null".to_string(),
                        Value::Scalar(v) => v.text,
                        _ => {
                            let message = format!(
                                "`${{{inner}}}` is {} and cannot be embedded in text; \
                                 use it as the whole value instead",
                                value.describe()
                            );
                            return Err(self.error(node, path, message));
                        }
                    }
                }
            };
            if text.len() + piece.len() > MAX_TEXT {
                let message = format!(
                    "interpolation makes a string of more than {MAX_TEXT} characters: refused"
                );
                return Err(self.error(node, path, message));
            }
            text.push_str(&piece);
        }
        self.spend(node, path, 1 + text.len() / 64)?;
        Ok(Node::scalar(text, true, node.origin.clone()))
    }

    /// Counts what a reference copied, refusing a configuration whose
    /// references expand it past [`MAX_VALUES`] (each doubling the last).
    fn spend(&mut self, node: &Node, path: &[Seg], weight: usize) -> Result<(), ConfigError> {
        self.spent = self.spent.saturating_add(weight);
        if self.spent > MAX_VALUES {
            let message = format!(
                "`${{...}}` references expand the configuration past {MAX_VALUES} values: refused"
            );
            return Err(self.error(node, path, message));
        }
        Ok(())
    }

    /// The value `${inner}` stands for, fully resolved.
    fn reference(
        &mut self,
        node: &'a Node,
        path: &[Seg],
        inner: &str,
    ) -> Result<Node, ConfigError> {
        if let Some(env) = inner.strip_prefix("env:") {
            return self.env(node, path, inner, env);
        }
        if let Some(relative) = inner.strip_prefix("path:") {
            return self.path(node, path, relative);
        }
        check_key_depth(inner).map_err(|m| self.error(node, path, m))?;
        let Some(target) = ref_path(inner) else {
            let message = format!(
                "`${{{inner}}}` is not a key path: write `${{a.b}}`, `${{env:NAME}}` or `${{path:file}}`"
            );
            return Err(self.error(node, path, message));
        };
        self.lookup(node, path, inner, &target)
    }

    fn env(
        &mut self,
        node: &Node,
        path: &[Seg],
        inner: &str,
        spec: &str,
    ) -> Result<Node, ConfigError> {
        let (name, default) = match spec.split_once(',') {
            Some((name, default)) => (name.trim(), Some(default.trim())),
            None => (spec.trim(), None),
        };
        if name.is_empty() {
            let message = format!("`${{{inner}}}` names no environment variable");
            return Err(self.error(node, path, message));
        }
        let text = match (std::env::var(name), default) {
            (Ok(value), _) => value,
            (Err(std::env::VarError::NotPresent), Some(default)) => default.to_string(),
            (Err(std::env::VarError::NotPresent), None) => {
                let message = format!(
                    "environment variable `{name}` is not set; set it or give a default: \
                     `${{env:{name},default}}`"
                );
                return Err(self.error(node, path, message));
            }
            (Err(std::env::VarError::NotUnicode(_)), _) => {
                let message = format!("environment variable `{name}` is not valid UTF-8");
                return Err(self.error(node, path, message));
            }
        };
        Ok(Node::scalar(text, false, node.origin.clone()))
    }

    /// `${path:relative}`: `relative` from the folder of the file `node`
    /// was written in, made absolute and with `.` and `..` folded away.
    fn path(&self, node: &Node, path: &[Seg], relative: &str) -> Result<Node, ConfigError> {
        let relative = Path::new(relative.trim());
        let base = match &node.origin {
            Origin::File { path, .. } => path.parent().map(Path::to_path_buf).unwrap_or_default(),
            Origin::Override { .. } => PathBuf::new(),
        };
        let mut joined = base.join(relative);
        if joined.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| {
                self.error(
                    node,
                    path,
                    format!(
                        "cannot resolve `${{path:...}}`: the working folder is unreadable: {e}"
                    ),
                )
            })?;
            joined = cwd.join(joined);
        }
        let text = normalize(&joined).to_string_lossy().into_owned();
        Ok(Node::scalar(text, true, node.origin.clone()))
    }

    /// The resolved value at `target`, stepping through references met on
    /// the way (`${a.b}` where `a` is itself `${c}`).
    fn lookup(
        &mut self,
        node: &'a Node,
        path: &[Seg],
        inner: &str,
        target: &[Seg],
    ) -> Result<Node, ConfigError> {
        let mut at: &'a Node = self.root;
        for (i, seg) in target.iter().enumerate() {
            let Some(child) = at.child(seg) else {
                return Err(self.missing(node, path, inner, at, &target[..i]));
            };
            if let Value::Scalar(s) = &child.value
                && s.text.contains("${")
                && i + 1 < target.len()
            {
                let resolved = self.scalar(child, s, &target[..=i])?;
                let rest = &target[i + 1..];
                return match resolved.get(rest) {
                    Some(found) => Ok(found.clone()),
                    None => Err(self.missing(node, path, inner, &resolved, &target[..=i])),
                };
            }
            at = child;
        }
        self.tree(at, &mut target.to_vec())
    }

    fn missing(
        &self,
        node: &Node,
        path: &[Seg],
        inner: &str,
        parent: &Node,
        parent_path: &[Seg],
    ) -> ConfigError {
        let known = match &parent.value {
            Value::Map(map) if !map.is_empty() => {
                let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
                let name = match parent_path {
                    [] => "the top level".to_string(),
                    p => format!("`{}`", show(p)),
                };
                format!(" ({name} has {})", keys.join(", "))
            }
            Value::Seq(items) => format!(" (`{}` has {} items)", show(parent_path), items.len()),
            _ => String::new(),
        };
        let message = format!("`${{{inner}}}`: no such key in the configuration{known}");
        self.error(node, path, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_references() {
        assert_eq!(
            split("a ${x.y} b").unwrap(),
            [
                Part::Text("a ".into()),
                Part::Ref("x.y".into()),
                Part::Text(" b".into())
            ]
        );
        assert_eq!(split(r"\${x}").unwrap(), [Part::Text("${x}".into())]);
        assert!(split("${x").is_err());
        assert!(split("${a${b}}").is_err());
    }
}
