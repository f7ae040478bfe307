//! Command-line overrides: `key.path=value`, the value read as YAML.

use super::error::{ConfigError, ErrorKind};
use super::merge::merge;
use super::node::{Entry, Node, Seg, Value, check_key_depth, show};
use super::origin::Origin;
use super::parse::{Source, parse};

/// Applies one override to the merged document. The value is YAML
/// (`3e-4`, `[a, b]`, `{dim: 8}`, `'quoted'`; nothing after `=` is null);
/// a mapping value merges into an existing mapping like any other layer.
/// Missing keys along the path are created (unknown ones are rejected when
/// the document is deserialized); a number steps into a list
/// (`data.groups.0.split=val`).
///
/// As in Hydra, `~key.path` deletes a key (an inherited one, say),
/// `+key.path=value` adds a key that must not be set yet, and
/// `++key.path=value` sets a key whatever it held (a mapping replaces the
/// mapping instead of merging into it).
pub(crate) fn apply(root: &mut Node, text: &str) -> Result<(), ConfigError> {
    let origin = Origin::Override {
        text: text.to_string(),
    };
    let fail =
        |message: String| ConfigError::new(ErrorKind::Override, message).at(Some(origin.clone()));
    if let Some(key) = text.strip_prefix('~') {
        if key.contains('=') {
            return Err(fail(format!(
                "`~` deletes a key: write `~{}`, without a value",
                key.split('=').next().unwrap_or("").trim()
            )));
        }
        check_key_depth(key).map_err(fail)?;
        return delete(root, key.trim()).map_err(fail);
    }
    let (mode, text_rest) = if let Some(rest) = text.strip_prefix("++") {
        (Mode::Force, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (Mode::Add, rest)
    } else {
        (Mode::Set, text)
    };
    let Some((key, value)) = text_rest.split_once('=') else {
        return Err(fail(
            "expected `key.path=value`, e.g. `optim.lr=3e-4`".to_string(),
        ));
    };
    check_key_depth(key).map_err(fail)?;
    if mode == Mode::Add
        && let Some(existing) = find(root, key.trim())
    {
        return Err(fail(format!(
            "`+{}` adds a key, but it is already set (at {}): drop the `+` to change it",
            key.trim(),
            existing.origin
        )));
    }
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|seg| seg.is_empty()) {
        return Err(fail(format!(
            "`{}` is not a key path: write keys separated by single dots, e.g. `optim.lr`",
            key.trim()
        )));
    }
    let value = parse(value, Source::Override(text))?.unwrap_or_else(|| Node::null(origin.clone()));
    let mut node = root;
    let mut done: Vec<Seg> = Vec::new();
    let value_is_map = matches!(value.value, Value::Map(_));
    let last = path.len() - 1;
    for (i, seg) in path.into_iter().enumerate() {
        // The key set takes the override's origin unless a mapping merges
        // into a mapping (as in file layers).
        let retag = i == last && !value_is_map;
        let (next, stepped) =
            step(node, seg, &done, &origin, retag).map_err(|m| fail(m).key(show(&done)))?;
        node = next;
        done.push(stepped);
    }
    if mode == Mode::Force {
        *node = value;
    } else {
        merge(node, value);
    }
    Ok(())
}

/// How an override sets its key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `key=value`: set, a mapping merging into a mapping.
    Set,
    /// `+key=value`: add a key not yet set.
    Add,
    /// `++key=value`: set, replacing whatever was there.
    Force,
}

/// The node at the dotted `key`, if the document has one.
fn find<'a>(root: &'a Node, key: &str) -> Option<&'a Node> {
    let mut node = root;
    for seg in key.split('.') {
        node = match &node.value {
            Value::Map(map) => &map.get(seg)?.node,
            Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
            Value::Scalar(_) => return None,
        };
    }
    Some(node)
}

/// Removes the dotted `key` (`~key`), which must exist.
fn delete(root: &mut Node, key: &str) -> Result<(), String> {
    let path: Vec<&str> = key.split('.').collect();
    if key.is_empty() || path.iter().any(|seg| seg.is_empty()) {
        return Err(format!("`~{key}` does not name a key: write e.g. `~sweep`"));
    }
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| format!("`~{key}` names no key"))?;
    let mut node = root;
    for seg in parents {
        node = match &mut node.value {
            Value::Map(map) => map.get_mut(*seg).map(|e| &mut e.node),
            Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            Value::Scalar(_) => None,
        }
        .ok_or_else(|| format!("there is no `{key}` to delete"))?;
    }
    let removed = match &mut node.value {
        Value::Map(map) => map.shift_remove(*last).is_some(),
        Value::Seq(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        Value::Scalar(_) => false,
    };
    if removed {
        Ok(())
    } else {
        Err(format!("there is no `{key}` to delete"))
    }
}

/// Steps from `node` into `seg`, creating a mapping entry if needed, and
/// says which kind of step it was.
fn step<'a>(
    node: &'a mut Node,
    seg: &str,
    done: &[Seg],
    origin: &Origin,
    retag: bool,
) -> Result<(&'a mut Node, Seg), String> {
    if node.is_null() {
        *node = Node::empty_map(origin.clone());
    }
    let described = node.describe();
    let set_at = node.origin.to_string();
    match &mut node.value {
        Value::Map(map) => {
            let entry = map.entry(seg.to_string()).or_insert_with(|| Entry {
                key_origin: origin.clone(),
                key_plain: true,
                node: Node::null(origin.clone()),
            });
            if retag || !matches!(entry.node.value, Value::Map(_)) {
                entry.key_origin = origin.clone();
            }
            Ok((&mut entry.node, Seg::Key(seg.to_string())))
        }
        Value::Seq(items) => {
            let len = items.len();
            let index = seg.parse::<usize>().ok().filter(|i| *i < len);
            match index.and_then(|i| Some((i, items.get_mut(i)?))) {
                Some((i, item)) => Ok((item, Seg::Index(i))),
                None => Err(format!(
                    "`{}` is a list of {len} items: `{seg}` is not an index in it",
                    show(done)
                )),
            }
        }
        Value::Scalar(_) => Err(format!(
            "cannot set a key inside `{}`: it is {described}, not a mapping (set at {set_at})",
            show(done)
        )),
    }
}
