//! The hyperparameters a run reports to TensorBoard's HParams tab: every
//! scalar setting of the resolved experiment, by its dotted key path.

use anyhow::Result;
use serde_json::Value;
use shimmer_config::Experiment;
use shimmer_tensorboard::HParam;

/// Flattens an experiment's settings into `key.path -> value` pairs.
pub fn of(exp: &Experiment) -> Result<Vec<(String, HParam)>> {
    let mut out = Vec::new();
    flatten("", &serde_json::to_value(exp)?, &mut out);
    Ok(out)
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, HParam)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) => {
            if items.iter().all(|x| !x.is_object() && !x.is_array()) {
                out.push((prefix.to_string(), HParam::Text(v.to_string())));
            } else {
                for (i, x) in items.iter().enumerate() {
                    flatten(&key(&i.to_string()), x, out);
                }
            }
        }
        Value::Number(n) => out.push((
            prefix.to_string(),
            HParam::Number(n.as_f64().unwrap_or(0.0)),
        )),
        Value::Bool(b) => out.push((prefix.to_string(), HParam::Bool(*b))),
        Value::String(s) => out.push((prefix.to_string(), HParam::Text(s.clone()))),
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_settings() {
        let mut out = Vec::new();
        let v = serde_json::json!({"optim": {"lr": 0.001, "betas": [0.9, 0.999]}, "seed": 3, "x": null});
        flatten("", &v, &mut out);
        assert!(out.contains(&("optim.lr".into(), HParam::Number(0.001))));
        assert!(out.contains(&("optim.betas".into(), HParam::Text("[0.9,0.999]".into()))));
        assert!(out.contains(&("seed".into(), HParam::Number(3.0))));
        assert_eq!(out.len(), 3);
    }
}
