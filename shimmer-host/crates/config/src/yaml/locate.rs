//! Turning a deserialization failure into a positioned [`ConfigError`]:
//! the key path `serde_path_to_error` reports is walked in the merged tree
//! to find where the offending key or value was last set.

use super::de::DeError;
use super::error::{ConfigError, ErrorKind};
use super::node::{Node, Seg, Value, show};
use super::origin::Origin;
use serde_path_to_error::Segment;

/// A positioned error for a failure at `path` in `root`.
pub(crate) fn locate(root: &Node, failure: serde_path_to_error::Error<DeError>) -> ConfigError {
    let message = polish(&failure.inner().0);
    let mut node = root;
    let mut origin = root.origin.clone();
    let mut path: Vec<Seg> = Vec::new();
    for segment in failure.path().iter() {
        let seg = match segment {
            Segment::Seq { index } => Seg::Index(*index),
            Segment::Map { key } => Seg::Key(key.clone()),
            Segment::Enum { variant } => match &node.value {
                Value::Map(map) if map.contains_key(variant) => Seg::Key(variant.clone()),
                _ => continue,
            },
            Segment::Unknown => break,
        };
        let Some((child, at)) = step(node, &seg) else {
            break;
        };
        node = child;
        origin = at;
        path.push(seg);
    }
    // Internally tagged enums hide the inner path from serde: find the
    // offending key or value in the mapping reached.
    if let Some((key, at)) = named_in(node, &message)
        && path.last() != Some(&Seg::Key(key.clone()))
    {
        origin = at;
        path.push(Seg::Key(key));
    }
    ConfigError::new(ErrorKind::Invalid, message)
        .at(Some(origin))
        .key(show(&path))
}

/// One step down, with the place it was set: the key's position for a
/// mapping entry, the item's for a list element.
fn step<'a>(node: &'a Node, seg: &Seg) -> Option<(&'a Node, Origin)> {
    match (&node.value, seg) {
        (Value::Map(map), Seg::Key(key)) => map.get(key).map(|e| (&e.node, e.key_origin.clone())),
        (Value::Seq(items), Seg::Index(i)) => items.get(*i).map(|n| (n, n.origin.clone())),
        _ => None,
    }
}

/// The entry of `node` the message is about, when serde could not say
/// (inside internally tagged enums): for "unknown field `x`", the key `x`;
/// for "unknown variant `v`" or "invalid type: string "v"", the one entry
/// whose value is `v` (the `type: v` of a tagged enum, a bad value).
fn named_in(node: &Node, message: &str) -> Option<(String, Origin)> {
    let Value::Map(map) = &node.value else {
        return None;
    };
    if let Some(field) = between(message, "unknown field `", "`") {
        let entry = map.get(field)?;
        return Some((field.to_string(), entry.key_origin.clone()));
    }
    let value = between(message, "unknown variant `", "`").or_else(|| offending_scalar(message))?;
    let mut holding = map
        .iter()
        .filter(|(_, e)| matches!(&e.node.value, Value::Scalar(s) if s.text == value));
    match (holding.next(), holding.next()) {
        (Some((key, entry)), None) => Some((key.clone(), entry.key_origin.clone())),
        _ => None,
    }
}

/// The scalar serde quotes in "invalid type: string "x", expected ..." or
/// "invalid value: integer `5`, expected ...".
fn offending_scalar(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    between(rest, "string \"", "\", expected").or_else(|| {
        let (_, quoted) = rest.split_once(" `")?;
        quoted.split_once('`').map(|(value, _)| value)
    })
}

/// The text after `prefix` (where `message` starts with it) up to `end`.
fn between<'m>(message: &'m str, prefix: &str, end: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// serde's messages in YAML's words.
fn polish(message: &str) -> String {
    message.replace("unit value", "null")
}
