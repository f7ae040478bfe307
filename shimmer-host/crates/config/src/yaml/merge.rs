//! Layered merge: mappings merge key by key, everything else is replaced.

use super::node::{Node, Value};

/// Lays `over` on top of `base`. Where both are mappings, keys merge
/// recursively (new keys are appended, existing ones keep their place);
/// otherwise `over` replaces `base`, origin included.
pub(crate) fn merge(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(into), Value::Map(from)) => {
            for (key, entry) in from {
                match into.get_mut(&key) {
                    Some(existing) => {
                        // A mapping merged into a mapping keeps the place
                        // that introduced it; a replaced value takes the
                        // overlay's.
                        let both_maps = matches!(
                            (&existing.node.value, &entry.node.value),
                            (Value::Map(_), Value::Map(_))
                        );
                        if !both_maps {
                            existing.key_origin = entry.key_origin;
                            existing.key_plain = entry.key_plain;
                        }
                        merge(&mut existing.node, entry.node);
                    }
                    None => {
                        into.insert(key, entry);
                    }
                }
            }
            base.origin = over.origin;
        }
        (_, value) => {
            *base = Node {
                value,
                origin: over.origin,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse::{Source, parse};
    use std::path::Path;

    fn doc(text: &str, file: &str) -> Node {
        parse(text, Source::File(Path::new(file))).unwrap().unwrap()
    }

    #[test]
    fn mappings_merge_and_the_rest_is_replaced() {
        let mut base = doc("a: {x: 1, y: [1, 2]}\nb: 1\n", "base.yaml");
        merge(&mut base, doc("a: {y: [3], z: 2}\nc: 3\n", "exp.yaml"));
        let Value::Map(top) = &base.value else {
            panic!("not a map")
        };
        assert_eq!(top.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let a = &top["a"];
        assert_eq!(a.key_origin.to_string(), "base.yaml:1:1");
        let Value::Map(a) = &a.node.value else {
            panic!("not a map")
        };
        assert_eq!(a.keys().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(a["x"].key_origin.to_string(), "base.yaml:1:5");
        assert_eq!(a["y"].key_origin.to_string(), "exp.yaml:1:5");
        assert!(matches!(&a["y"].node.value, Value::Seq(items) if items.len() == 1));
    }
}
