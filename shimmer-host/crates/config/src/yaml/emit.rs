//! The merged, resolved document written back as YAML text (the run's
//! resolved config).

use super::error::{ConfigError, ErrorKind};
use super::node::{Node, Value};
use super::scalar::{Typed, typed};
use serde_norway::{Mapping, Number};

/// `node` as a `serde_norway` value, plain scalars typed.
pub(crate) fn to_value(node: &Node) -> serde_norway::Value {
    match &node.value {
        Value::Scalar(s) => scalar(&s.text, s.quoted),
        Value::Seq(items) => serde_norway::Value::Sequence(items.iter().map(to_value).collect()),
        Value::Map(map) => {
            let mut out = Mapping::with_capacity(map.len());
            for (key, entry) in map {
                out.insert(scalar(key, !entry.key_plain), to_value(&entry.node));
            }
            serde_norway::Value::Mapping(out)
        }
    }
}

fn scalar(text: &str, quoted: bool) -> serde_norway::Value {
    match typed(text, quoted) {
        Typed::Null => serde_norway::Value::Null,
        Typed::Bool(b) => serde_norway::Value::Bool(b),
        Typed::Unsigned(n) => serde_norway::Value::Number(Number::from(n)),
        Typed::Signed(n) => serde_norway::Value::Number(Number::from(n)),
        Typed::Float(x) => serde_norway::Value::Number(Number::from(x)),
        Typed::Str(s) => serde_norway::Value::String(s.to_string()),
    }
}

/// `node` as YAML text.
pub(crate) fn to_yaml(node: &Node) -> Result<String, ConfigError> {
    serde_norway::to_string(&to_value(node)).map_err(|e| {
        ConfigError::new(
            ErrorKind::Invalid,
            format!("cannot write the resolved configuration as YAML: {e}"),
        )
    })
}
