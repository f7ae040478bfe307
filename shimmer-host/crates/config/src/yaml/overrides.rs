//! Command-line overrides: `key.path=value`, the value read as YAML.

use super::error::{ConfigError, ErrorKind};
use super::merge::merge;
use super::node::{Entry, Node, Seg, Value, show};
use super::origin::Origin;
use super::parse::{Source, parse};

/// Applies one override to the merged document. The value is YAML
/// (`3e-4`, `[a, b]`, `{dim: 8}`, `'quoted'`; nothing after `=` is null);
/// a mapping value merges into an existing mapping like any other layer.
/// Missing keys along the path are created (unknown ones are rejected when
/// the document is deserialized); a number steps into a list
/// (`data.groups.0.split=val`).
pub(crate) fn apply(root: &mut Node, text: &str) -> Result<(), ConfigError> {
    let origin = Origin::Override {
        text: text.to_string(),
    };
    let fail =
        |message: String| ConfigError::new(ErrorKind::Override, message).at(Some(origin.clone()));
    let Some((key, value)) = text.split_once('=') else {
        return Err(fail(
            "expected `key.path=value`, e.g. `optim.lr=3e-4`".to_string(),
        ));
    };
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
    merge(node, value);
    Ok(())
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
