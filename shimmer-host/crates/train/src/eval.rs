//! Averaging metrics over an evaluation epoch as Lightning does: each
//! batch's value weighted by its batch size.

use indexmap::IndexMap;

/// Running weighted means of named metrics, in first-seen order.
#[derive(Debug, Default)]
pub struct MetricMeans {
    sums: IndexMap<String, (f64, f64)>,
}

impl MetricMeans {
    /// Adds one batch's values with weight `batch_size`.
    pub fn add<'a>(&mut self, values: impl IntoIterator<Item = (&'a str, f32)>, batch_size: usize) {
        let w = batch_size as f64;
        for (name, v) in values {
            let e = self.sums.entry(name.to_string()).or_insert((0.0, 0.0));
            e.0 += f64::from(v) * w;
            e.1 += w;
        }
    }

    /// The means, names prefixed with `prefix/`.
    pub fn means(&self, prefix: &str) -> IndexMap<String, f64> {
        self.sums
            .iter()
            .filter(|(_, (_, w))| *w > 0.0)
            .map(|(k, (s, w))| (format!("{prefix}/{k}"), s / w))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_by_batch_size() {
        let mut m = MetricMeans::default();
        m.add([("loss", 1.0), ("a", 2.0)], 3);
        m.add([("loss", 3.0)], 1);
        let means = m.means("val");
        assert_eq!(means["val/loss"], 1.5);
        assert_eq!(means["val/a"], 2.0);
        assert_eq!(means.keys().collect::<Vec<_>>(), ["val/loss", "val/a"]);
    }
}
