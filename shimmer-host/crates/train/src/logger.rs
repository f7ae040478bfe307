//! Everything a run logs goes to TensorBoard and, line by line, to
//! `scalars.jsonl` in the run folder (easy to read from scripts and
//! notebooks without TensorBoard).

use anyhow::{Context, Result};
use shimmer_tensorboard::{EventWriter, HParam, SessionStatus};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// File name of the plain scalar log.
pub const SCALARS_FILE: &str = "scalars.jsonl";

/// Writes scalars to the event file and to `scalars.jsonl`.
pub struct RunLogger {
    tb: EventWriter,
    jsonl: BufWriter<File>,
    jsonl_path: PathBuf,
}

impl RunLogger {
    /// Opens a new event file and appends to `scalars.jsonl` in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let tb = EventWriter::create(dir)?;
        let jsonl_path = dir.join(SCALARS_FILE);
        let file = File::options()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .with_context(|| format!("cannot open {}", jsonl_path.display()))?;
        Ok(Self {
            tb,
            jsonl: BufWriter::new(file),
            jsonl_path,
        })
    }

    /// Logs a scalar.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.tb.scalar(tag, step, value)?;
        let line = serde_json::json!({ "step": step, "tag": tag, "value": value });
        writeln!(self.jsonl, "{line}")
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))
    }

    /// Logs a PNG-encoded RGB image (TensorBoard only).
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.tb.image(tag, step, png, width, height)
    }

    /// Logs text (TensorBoard only).
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> Result<()> {
        self.tb.text(tag, step, text)
    }

    /// Records hyperparameters (TensorBoard only).
    pub fn hparams(&mut self, hparams: &[(String, HParam)], metrics: &[String]) -> Result<()> {
        self.tb.hparams(hparams, metrics)
    }

    /// Marks a resume at `step` in both logs.
    pub fn restart_at(&mut self, step: i64) -> Result<()> {
        self.tb.restart_at(step)?;
        let line = serde_json::json!({ "step": step, "restart": true });
        writeln!(self.jsonl, "{line}")
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))
    }

    /// Marks the end of the run.
    pub fn session_end(&mut self, status: SessionStatus) -> Result<()> {
        self.tb.session_end(status)
    }

    /// Pushes everything to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.jsonl
            .flush()
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        self.tb.flush()
    }
}
