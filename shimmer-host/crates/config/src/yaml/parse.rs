//! YAML text to a [`Node`] tree whose every value knows its file, line and
//! column, built on `saphyr-parser`'s event stream (which carries spans).

use super::error::{ConfigError, ErrorKind};
use super::node::{Entry, MAX_DEPTH, MAX_VALUES, Map, Node, Value};
use super::origin::Origin;
use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Where the text being parsed comes from, to stamp origins on its nodes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// A file: nodes get its path and their line and column.
    File(&'a Path),
    /// The value of a command-line override (the whole override given):
    /// nodes get the override itself.
    Override(&'a str),
}

impl Source<'_> {
    fn origin(&self, mark: Marker) -> Origin {
        match self {
            Source::File(path) => Origin::File {
                path: path.to_path_buf(),
                line: mark.line(),
                column: mark.col() + 1,
            },
            Source::Override(text) => Origin::Override {
                text: (*text).to_string(),
            },
        }
    }
}

/// Parses one YAML document; `None` for a text with no document (empty or
/// only comments). More than one document is an error.
pub(crate) fn parse(text: &str, source: Source<'_>) -> Result<Option<Node>, ConfigError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        source,
        anchors: HashMap::new(),
        values: 0,
    };
    builder.stream()
}

struct Builder<'input> {
    parser: Parser<'input, StrInput<'input>>,
    source: Source<'input>,
    /// Anchored nodes and how many values each holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Values built so far, aliases expanded.
    values: usize,
}

impl<'input> Builder<'input> {
    fn syntax(&self, mark: Marker, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        if let Source::Override(_) = self.source {
            message = format!("{message} (value column {})", mark.col() + 1);
        }
        ConfigError::new(ErrorKind::Syntax, message).at(Some(self.source.origin(mark)))
    }

    fn scan_error(&self, e: &ScanError) -> ConfigError {
        self.syntax(*e.marker(), e.info())
    }

    fn next(&mut self) -> Result<(Event<'input>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => Err(ConfigError::new(
                ErrorKind::Syntax,
                "unexpected end of YAML input",
            )),
        }
    }

    fn stream(&mut self) -> Result<Option<Node>, ConfigError> {
        let mut doc = None;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(doc),
                Event::DocumentStart(_) if doc.is_some() => {
                    return Err(self.syntax(
                        span.start,
                        "a second YAML document (`---`): an experiment file holds one",
                    ));
                }
                Event::DocumentStart(_) => {
                    let (event, span) = self.next()?;
                    doc = Some(self.node(event, span, 0)?);
                }
                _ => return Err(self.syntax(span.start, "unexpected YAML event")),
            }
        }
    }

    fn node(
        &mut self,
        event: Event<'input>,
        span: Span,
        depth: usize,
    ) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(self.syntax(span.start, "nested too deeply"));
        }
        let origin = self.source.origin(span.start);
        let before = self.values;
        self.count(1, span)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(text.len() / 64, span)?;
                let quoted = self.quoted(style, tag.as_deref(), span)?;
                (Node::scalar(text.into_owned(), quoted, origin), anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.collection_tag(tag, span, "seq")?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if let Event::SequenceEnd = event {
                        break;
                    }
                    items.push(self.node(event, span, depth + 1)?);
                }
                let value = Value::Seq(items);
                (Node { value, origin }, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                self.collection_tag(tag, span, "map")?;
                let value = Value::Map(self.mapping(depth)?);
                (Node { value, origin }, anchor)
            }
            Event::Alias(id) => {
                let size = self
                    .anchors
                    .get(&id)
                    .map(|(_, size)| *size)
                    .ok_or_else(|| self.syntax(span.start, "alias to an unknown anchor"))?;
                // Counted before copying: a bomb stops here, not in memory.
                self.count(size.saturating_sub(1), span)?;
                let node = self.anchors[&id].0.clone();
                (node, 0)
            }
            _ => return Err(self.syntax(span.start, "unexpected YAML event")),
        };
        if anchor != 0 {
            self.anchors
                .insert(anchor, (node.clone(), self.values - before));
        }
        Ok(node)
    }

    /// Counts `n` more values, refusing a document that expands past
    /// [`MAX_VALUES`].
    fn count(&mut self, n: usize, span: Span) -> Result<(), ConfigError> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(self.syntax(
                span.start,
                format!(
                    "the YAML expands to more than {MAX_VALUES} values (aliases to aliases repeat \
                     what they name): refused"
                ),
            ));
        }
        Ok(())
    }

    fn mapping(&mut self, depth: usize) -> Result<Map, ConfigError> {
        let mut map = Map::new();
        loop {
            let (event, span) = self.next()?;
            let (key, key_plain) = match event {
                Event::MappingEnd => return Ok(map),
                Event::Scalar(text, style, _, tag) => {
                    let quoted = self.quoted(style, tag.as_deref(), span)?;
                    (text.into_owned(), !quoted)
                }
                _ => {
                    return Err(self.syntax(
                        span.start,
                        "a mapping key must be a scalar, not a list or mapping",
                    ));
                }
            };
            let key_origin = self.source.origin(span.start);
            if let Some(first) = map.get(&key) {
                let message = format!("duplicate key `{key}` (first set at {})", first.key_origin);
                return Err(self.syntax(span.start, message));
            }
            let (event, span) = self.next()?;
            let node = self.node(event, span, depth + 1)?;
            map.insert(
                key,
                Entry {
                    key_origin,
                    key_plain,
                    node,
                },
            );
        }
    }

    /// Whether a scalar is a string whatever its text: quoted, block, or
    /// tagged `!!str`. Other core tags are accepted; custom tags are not.
    fn quoted(
        &self,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<bool, ConfigError> {
        let styled = !matches!(style, ScalarStyle::Plain);
        match tag {
            None => Ok(styled),
            Some(tag) if tag.is_yaml_core_schema() => match tag.suffix.as_str() {
                "str" => Ok(true),
                "null" | "bool" | "int" | "float" => Ok(styled),
                _ => Err(self.unsupported_tag(tag, span)),
            },
            Some(tag) => Err(self.unsupported_tag(tag, span)),
        }
    }

    fn collection_tag(
        &self,
        tag: Option<Cow<'_, Tag>>,
        span: Span,
        ok: &str,
    ) -> Result<(), ConfigError> {
        match tag {
            Some(tag) if !(tag.is_yaml_core_schema() && tag.suffix == ok) => {
                Err(self.unsupported_tag(&tag, span))
            }
            _ => Ok(()),
        }
    }

    fn unsupported_tag(&self, tag: &Tag, span: Span) -> ConfigError {
        self.syntax(
            span.start,
            format!("unsupported YAML tag `{tag}`: write the value without a tag"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Option<Node>, ConfigError> {
        parse(text, Source::File(Path::new("t.yaml")))
    }

    #[test]
    fn records_line_and_column_of_every_key() {
        let node = file("a:\n  b: 1\n  c: [x, 'y']\n").unwrap().unwrap();
        let Value::Map(top) = &node.value else {
            panic!("not a map")
        };
        let Value::Map(a) = &top["a"].node.value else {
            panic!("not a map")
        };
        assert_eq!(a["c"].key_origin.to_string(), "t.yaml:3:3");
        let Value::Seq(items) = &a["c"].node.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].origin.to_string(), "t.yaml:3:10");
        assert!(matches!(&items[1].value, Value::Scalar(s) if s.quoted));
    }

    #[test]
    fn empty_text_has_no_document() {
        assert!(file("# nothing\n").unwrap().is_none());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = file("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Syntax);
        assert!(err.to_string().starts_with("t.yaml:"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = file("a: 1\na: 2\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "t.yaml:2:1: duplicate key `a` (first set at t.yaml:1:1)"
        );
    }

    #[test]
    fn aliases_copy_the_anchored_value() {
        let node = file("a: &x {k: 1}\nb: *x\n").unwrap().unwrap();
        let Value::Map(top) = &node.value else {
            panic!("not a map")
        };
        assert!(matches!(&top["b"].node.value, Value::Map(m) if m.contains_key("k")));
    }

    #[test]
    fn custom_tags_are_refused() {
        let err = file("a: !foo 1\n").unwrap_err().to_string();
        assert!(err.contains("unsupported YAML tag `!foo`"), "{err}");
    }
}
