//! A per-step record of the batches the trainer used, for tests and
//! debugging: which items, and the first value of each row of each domain.

use crate::callback::{Callback, FitContext};
use anyhow::{Context, Result};
use shimmer_data::HostBatch;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Environment variable naming a file to which `shimmer run` appends one
/// JSON line per training step: `{"step", "epoch", "batch", "groups":
/// {group: {"items": [...], "first": {domain: [first value of each row]}}}}`.
pub const TRACE_ENV: &str = "SHIMMER_TRACE_BATCHES";

/// Appends one JSON line per training batch to a file (a callback: before
/// each step, the batch it uses).
pub struct BatchTrace {
    out: BufWriter<File>,
    path: PathBuf,
}

impl std::fmt::Debug for BatchTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTrace")
            .field("path", &self.path)
            .finish()
    }
}

impl BatchTrace {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the batch trace {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        })
    }

    /// The trace named by [`TRACE_ENV`], if set and not empty.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(TRACE_ENV) {
            Some(p) if !p.is_empty() => Self::open(Path::new(&p)).map(Some),
            _ => Ok(None),
        }
    }

    /// Records the batch of training step `step` (batch `batch` of `epoch`).
    /// Written through at once, so a reader sees every finished step.
    pub fn record(&mut self, step: u64, epoch: u64, batch: usize, b: &HostBatch) -> Result<()> {
        let groups: serde_json::Map<String, serde_json::Value> = b
            .groups
            .iter()
            .map(|(name, g)| {
                let first: serde_json::Map<String, serde_json::Value> = g
                    .domains
                    .iter()
                    .map(|(d, db)| {
                        let firsts: Vec<f32> = db
                            .data()
                            .chunks(db.dim().max(1))
                            .map(|row| row[0])
                            .collect();
                        (d.clone(), serde_json::json!(firsts))
                    })
                    .collect();
                (
                    name.clone(),
                    serde_json::json!({ "items": &*g.items, "first": first }),
                )
            })
            .collect();
        let line = serde_json::json!({
            "step": step, "epoch": epoch, "batch": batch, "groups": groups,
        });
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .with_context(|| format!("cannot write the batch trace {}", self.path.display()))
    }
}

impl Callback for BatchTrace {
    fn name(&self) -> &'static str {
        "batch-trace"
    }

    fn on_batch_start(
        &mut self,
        ctx: &mut FitContext<'_>,
        batch: &HostBatch,
        batch_in_epoch: usize,
    ) -> Result<()> {
        let (step, epoch) = (ctx.position.global_step, ctx.position.epoch);
        self.record(step, epoch, batch_in_epoch, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shimmer_data::{DomainBatch, GroupBatch};

    #[test]
    fn the_trace_records_items_and_first_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut trace = BatchTrace::open(&path).unwrap();
        let mut b = HostBatch::new(2, 0, 5);
        let a = DomainBatch::new(vec![1.0, 9.0, 2.0, 9.0], 2, 2);
        b.groups.insert(
            "a".into(),
            GroupBatch::new(vec![4, 7].into(), [("a".into(), a)].into_iter().collect()),
        );
        trace.record(11, 2, 5, &b).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"step": 11, "epoch": 2, "batch": 5,
                "groups": {"a": {"items": [4, 7], "first": {"a": [1.0, 2.0]}}}})
        );
    }
}
