//! The configuration tree: YAML values that remember where they were set.

use super::origin::Origin;
use indexmap::IndexMap;
use std::fmt;

/// A YAML value and the place it was set.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The value.
    pub(crate) value: Value,
    /// Where the value was (last) set.
    pub(crate) origin: Origin,
}

/// A YAML value: scalars keep their text so that plain ones are typed only
/// when deserialized (`name: 2024` can still fill a string field).
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Map),
}

/// A mapping from key text to entries.
pub(crate) type Map = IndexMap<String, Entry>;

/// A scalar's text and whether it is a string whatever it looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scalar {
    /// The scalar's content after YAML unescaping and folding.
    pub(crate) text: String,
    /// True for quoted and block scalars (and `!!str`): always a string.
    /// Plain scalars may be null, a boolean or a number.
    pub(crate) quoted: bool,
}

/// One key of a mapping.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Where the key was (last) set.
    pub(crate) key_origin: Origin,
    /// Whether the key was written plain (it may then be typed, e.g. `1:`).
    pub(crate) key_plain: bool,
    /// The value.
    pub(crate) node: Node,
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A key path shown as `a.b[0].c`, as `serde_path_to_error` shows its paths.
pub(crate) struct PathDisplay<'a>(pub(crate) &'a [Seg]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Shows a key path.
pub(crate) fn show(path: &[Seg]) -> String {
    PathDisplay(path).to_string()
}

/// Deepest nesting of a configuration, refused past rather than risking
/// the stack: of a YAML document, of the tree once `${...}` references are
/// resolved, of a dotted key path (`a.b.c` is three deep: overrides, sweep
/// keys) and of a chain of references leading to references.
pub(crate) const MAX_DEPTH: usize = 128;

/// Refuses a dotted key path of more than [`MAX_DEPTH`] parts, before
/// anything is built from it.
pub(crate) fn check_key_depth(key: &str) -> Result<(), String> {
    let parts = key.split('.').count();
    if parts > MAX_DEPTH {
        return Err(format!(
            "the key `{}` has {parts} dotted parts: keys nest at most {MAX_DEPTH} deep \
             (as in YAML files)",
            shimmer_formats::excerpt(key)
        ));
    }
    Ok(())
}

/// Most values (scalars and collections) one configuration may hold once
/// aliases and `${...}` references are expanded, whatever its size on disk:
/// a few hundred aliases to aliases would otherwise ask for gigabytes.
pub(crate) const MAX_VALUES: usize = 200_000;

/// Most characters one interpolated string may hold.
pub(crate) const MAX_TEXT: usize = 1 << 20;

impl Node {
    /// What this tree costs against [`MAX_VALUES`]: one per value, plus
    /// one per 64 characters of its scalars.
    pub(crate) fn weight(&self) -> usize {
        match &self.value {
            Value::Scalar(s) => 1 + s.text.len() / 64,
            Value::Seq(items) => 1 + items.iter().map(Node::weight).sum::<usize>(),
            Value::Map(map) => 1 + map.values().map(|e| e.node.weight()).sum::<usize>(),
        }
    }

    /// How deep the tree goes (0 for a scalar), found without recursion.
    pub(crate) fn depth(&self) -> usize {
        let (mut deepest, mut todo) = (0, vec![(self, 0)]);
        while let Some((node, d)) = todo.pop() {
            deepest = deepest.max(d);
            match &node.value {
                Value::Scalar(_) => {}
                Value::Seq(items) => todo.extend(items.iter().map(|n| (n, d + 1))),
                Value::Map(map) => todo.extend(map.values().map(|e| (&e.node, d + 1))),
            }
        }
        deepest
    }

    /// A scalar node.
    pub(crate) fn scalar(text: impl Into<String>, quoted: bool, origin: Origin) -> Self {
        Node {
            value: Value::Scalar(Scalar {
                text: text.into(),
                quoted,
            }),
            origin,
        }
    }

    /// A null node (an empty plain scalar).
    pub(crate) fn null(origin: Origin) -> Self {
        Node::scalar("", false, origin)
    }

    /// An empty mapping.
    pub(crate) fn empty_map(origin: Origin) -> Self {
        Node {
            value: Value::Map(Map::new()),
            origin,
        }
    }

    /// Whether this is a null scalar (`~`, `null`, or nothing).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.is_null())
    }

    /// What kind of value this is, for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) if s.is_null() => "null",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The child one step down: a mapping key, or a sequence index written
    /// either way (`groups.0` or `groups[0]`).
    pub(crate) fn child(&self, seg: &Seg) -> Option<&Node> {
        match (&self.value, seg) {
            (Value::Map(m), Seg::Key(k)) => m.get(k).map(|e| &e.node),
            (Value::Map(m), Seg::Index(i)) => m.get(&i.to_string()).map(|e| &e.node),
            (Value::Seq(items), Seg::Index(i)) => items.get(*i),
            (Value::Seq(items), Seg::Key(k)) => k.parse::<usize>().ok().and_then(|i| items.get(i)),
            (Value::Scalar(_), _) => None,
        }
    }

    /// The node at `path`, if every step exists.
    pub(crate) fn get(&self, path: &[Seg]) -> Option<&Node> {
        path.iter().try_fold(self, |node, seg| node.child(seg))
    }
}

impl Scalar {
    /// Whether this scalar is YAML null.
    pub(crate) fn is_null(&self) -> bool {
        !self.quoted && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_show_like_serde_path_to_error() {
        let path = [
            Seg::Key("data".into()),
            Seg::Key("groups".into()),
            Seg::Index(0),
            Seg::Key("split".into()),
        ];
        assert_eq!(show(&path), "data.groups[0].split");
        assert_eq!(show(&[]), "");
    }
}
