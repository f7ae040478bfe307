//! Which key of a plugin's config a plugin's parse error is about. The host
//! hands a plugin its config as one line of JSON; a plugin that parses it
//! with serde reports `... at line 1 column N`, which means nothing to the
//! user, who wrote YAML. This maps the column back to the key path inside
//! the config (`parts.0.columns`), so the error can name the YAML key.

use serde_json::Value;

/// One value's place in the compact JSON text: byte columns `[start, end)`
/// and its key path inside the config.
struct Span {
    start: usize,
    end: usize,
    path: String,
}

fn join(path: &str, part: &str) -> String {
    if path.is_empty() {
        part.to_string()
    } else {
        format!("{path}.{part}")
    }
}

fn len_of(v: &impl serde::Serialize) -> usize {
    serde_json::to_string(v).map_or(0, |s| s.len())
}

/// Walks `v` as `serde_json::to_string` writes it, recording every value's
/// span.
fn walk(v: &Value, path: &str, pos: &mut usize, spans: &mut Vec<Span>) {
    let start = *pos;
    match v {
        Value::Object(map) => {
            *pos += 1;
            for (i, (k, x)) in map.iter().enumerate() {
                if i > 0 {
                    *pos += 1;
                }
                *pos += len_of(k) + 1;
                walk(x, &join(path, k), pos, spans);
            }
            *pos += 1;
        }
        Value::Array(items) => {
            *pos += 1;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    *pos += 1;
                }
                walk(x, &join(path, &i.to_string()), pos, spans);
            }
            *pos += 1;
        }
        scalar => *pos += len_of(scalar),
    }
    spans.push(Span {
        start,
        end: *pos,
        path: path.to_string(),
    });
}

/// The key path (relative to the config, `""` for the config itself) of
/// the innermost value of `config` (as compact JSON) around the 1-based
/// `column` a serde error names.
pub fn key_at_column(config: &Value, column: usize) -> String {
    let mut spans = Vec::new();
    walk(config, "", &mut 0, &mut spans);
    // Serde's column is that of the last byte it read.
    let at = column.saturating_sub(1);
    spans
        .iter()
        .filter(|s| s.start <= at && at < s.end)
        .min_by_key(|s| s.end - s.start)
        .map(|s| s.path.clone())
        .unwrap_or_default()
}

/// When `message` ends a serde error on one-line JSON (`... at line 1
/// column N`), the key path it is about and the message without the
/// position.
pub fn locate(config: &Value, message: &str) -> Option<(String, String)> {
    let (text, position) = message.rsplit_once(" at line 1 column ")?;
    let column: usize = position.trim().parse().ok()?;
    Some((key_at_column(config, column), text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column serde reports for `text` parsed as `T`.
    fn column_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> usize {
        serde_json::from_str::<T>(text).unwrap_err().column()
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Part {
        file: String,
        columns: Vec<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Config {
        dim: usize,
        parts: Vec<Part>,
    }

    #[test]
    fn serde_columns_map_back_to_their_keys() {
        let bad_type =
            serde_json::json!({"dim": 3, "parts": [{"file": "a.npy", "columns": [1, "x"]}]});
        let text = bad_type.to_string();
        let col = column_of::<Config>(&text);
        assert_eq!(
            key_at_column(&bad_type, col),
            "parts.0.columns.1",
            "{text} {col}"
        );
        let bad_dim = serde_json::json!({"dim": "x", "parts": []});
        let col = column_of::<Config>(&bad_dim.to_string());
        assert_eq!(key_at_column(&bad_dim, col), "dim");
        let missing = serde_json::json!({"parts": []});
        let col = column_of::<Config>(&missing.to_string());
        assert_eq!(key_at_column(&missing, col), "");
        let (key, text) = locate(&bad_dim, "invalid config: bad at line 1 column 10").unwrap();
        assert_eq!(
            (key.as_str(), text.as_str()),
            ("dim", "invalid config: bad")
        );
        assert!(locate(&bad_dim, "no position").is_none());
    }
}
