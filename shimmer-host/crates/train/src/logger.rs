//! Everything a run logs goes to TensorBoard and, line by line, to
//! `scalars.jsonl` in the run folder (easy to read from scripts and
//! notebooks without TensorBoard).

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_tensorboard::{EventWriter, HParam, SessionStatus};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// File name of the plain scalar log.
pub const SCALARS_FILE: &str = "scalars.jsonl";

/// How far the logs of a run were written when a checkpoint was saved:
/// what a resume from that checkpoint keeps, so each step is logged exactly
/// once across kills and resumes. Saved in the checkpoint as `trainer.log.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPosition {
    /// File name of the event file being written.
    pub events_file: String,
    /// Its length.
    pub events_len: u64,
    /// Length of `scalars.jsonl`.
    pub jsonl_len: u64,
}

const EVENTS_FILE: &str = "trainer.log.events_file";
const EVENTS_LEN: &str = "trainer.log.events_len";
const JSONL_LEN: &str = "trainer.log.jsonl_len";

impl LogPosition {
    /// As checkpoint entries.
    pub fn to_tensors(&self) -> Result<IndexMap<String, Tensor>> {
        let cpu = Device::Cpu;
        let name = self.events_file.as_bytes().to_vec();
        let len = name.len();
        Ok([
            (EVENTS_FILE.to_string(), Tensor::from_vec(name, len, &cpu)?),
            (
                EVENTS_LEN.to_string(),
                Tensor::new(&[self.events_len as i64], &cpu)?,
            ),
            (
                JSONL_LEN.to_string(),
                Tensor::new(&[self.jsonl_len as i64], &cpu)?,
            ),
        ]
        .into())
    }

    /// From checkpoint entries; `None` for checkpoints without them.
    pub fn from_tensors(t: &HashMap<String, Tensor>) -> Option<Self> {
        let int = |k: &str| -> Option<u64> {
            Some(t.get(k)?.to_vec1::<i64>().ok()?.first().copied()? as u64)
        };
        let name = t.get(EVENTS_FILE)?.to_vec1::<u8>().ok()?;
        Some(Self {
            events_file: String::from_utf8(name).ok()?,
            events_len: int(EVENTS_LEN)?,
            jsonl_len: int(JSONL_LEN)?,
        })
    }
}

/// Writes scalars to the event file and to `scalars.jsonl`.
pub struct RunLogger {
    /// `None` for a fast dev run, which TensorBoard never sees (as
    /// Lightning's `fast_dev_run` disables its loggers).
    tb: Option<EventWriter>,
    jsonl: BufWriter<File>,
    jsonl_path: PathBuf,
}

impl RunLogger {
    /// Opens a new event file and appends to `scalars.jsonl` in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        Self::open(dir, Some(EventWriter::create(dir)?))
    }

    /// Logs of a fast dev run: `scalars.jsonl` only, so that the check
    /// shows up in no TensorBoard comparison.
    pub fn without_tensorboard(dir: &Path) -> Result<Self> {
        Self::open(dir, None)
    }

    fn open(dir: &Path, tb: Option<EventWriter>) -> Result<Self> {
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

    /// Reopens the logs of a resumed run. With the [`LogPosition`] of the
    /// checkpoint it resumes from, both logs are cut back to it (event
    /// files begun after it are removed) and appended to: each step ends
    /// up logged exactly once. Without one (a checkpoint of an older
    /// version), `scalars.jsonl` only loses a cut-off last line and a new
    /// event file marks the restart for TensorBoard. `scalars.jsonl` then
    /// gets a `{"step": N, "restart": true}` line.
    pub fn resume(dir: &Path, position: Option<&LogPosition>, step: i64) -> Result<Self> {
        let jsonl_path = dir.join(SCALARS_FILE);
        let jsonl_len = position.map(|p| p.jsonl_len);
        cut_jsonl(&jsonl_path, jsonl_len)?;
        let reopened = position.and_then(|p| {
            let path = dir.join(&p.events_file);
            path.is_file().then_some((path, p.events_len))
        });
        let tb = match reopened {
            Some((path, len)) => {
                remove_later_event_files(dir, &path)?;
                EventWriter::reopen(&path, len)?
            }
            None => {
                let mut tb = EventWriter::create(dir)?;
                tb.restart_at(step)?;
                tb
            }
        };
        let mut logger = Self::open(dir, Some(tb))?;
        let line = serde_json::json!({ "step": step, "restart": true });
        writeln!(logger.jsonl, "{line}")
            .with_context(|| format!("cannot write {}", logger.jsonl_path.display()))?;
        logger.flush()?;
        Ok(logger)
    }

    /// Flushes both logs and says how far they are written.
    pub fn position(&mut self) -> Result<LogPosition> {
        self.jsonl
            .flush()
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        let jsonl_len = self
            .jsonl
            .get_ref()
            .metadata()
            .with_context(|| format!("cannot read {}", self.jsonl_path.display()))?
            .len();
        let (events_file, events_len) = match &mut self.tb {
            Some(tb) => (
                tb.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                tb.flushed_len()?,
            ),
            None => (String::new(), 0),
        };
        Ok(LogPosition {
            events_file,
            events_len,
            jsonl_len,
        })
    }

    /// Logs a scalar.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        if let Some(tb) = &mut self.tb {
            tb.scalar(tag, step, value)?;
        }
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
        self.tb
            .as_mut()
            .map_or(Ok(()), |tb| tb.image(tag, step, png, width, height))
    }

    /// Logs text (TensorBoard only).
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> Result<()> {
        self.tb
            .as_mut()
            .map_or(Ok(()), |tb| tb.text(tag, step, text))
    }

    /// Records the run's hyperparameters as an HParams session
    /// (TensorBoard only).
    pub fn hparams(&mut self, hparams: &[(String, HParam)]) -> Result<()> {
        self.tb
            .as_mut()
            .map_or(Ok(()), |tb| tb.session_start(hparams))
    }

    /// Marks the end of the run.
    pub fn session_end(&mut self, status: SessionStatus) -> Result<()> {
        self.tb.as_mut().map_or(Ok(()), |tb| tb.session_end(status))
    }

    /// Pushes everything to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.jsonl
            .flush()
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        self.tb.as_mut().map_or(Ok(()), EventWriter::flush)
    }
}

/// Cuts `scalars.jsonl` back to `len` bytes when given (and longer), then
/// drops a cut-off last line (a write interrupted by a full disk or a
/// kill), so the next line starts on a line of its own.
fn cut_jsonl(path: &Path, len: Option<u64>) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let found = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let keep = end_of_last_line(&mut file, len.map_or(found, |l| l.min(found)))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if keep < found {
        file.set_len(keep)
            .with_context(|| format!("cannot repair {}", path.display()))?;
    }
    Ok(())
}

/// Where the last whole line of `file`'s first `limit` bytes ends (just
/// after its newline; 0 without one), found reading backwards from
/// `limit`: a resume of a long run does not read its whole log.
fn end_of_last_line(file: &mut File, limit: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = limit;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Removes the event files of `dir` that sort after `current` (begun by a
/// resume that was killed before its first checkpoint: what they hold is
/// logged again).
fn remove_later_event_files(dir: &Path, current: &Path) -> Result<()> {
    let Some(current) = current.file_name() else {
        return Ok(());
    };
    for file in shimmer_tensorboard::event_files(dir)? {
        if file.file_name().is_some_and(|name| name > current) {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_last_line_is_dropped_and_a_position_cuts_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SCALARS_FILE);
        std::fs::write(&path, "{\"a\": 1}\n{\"b\": 2}\n{\"c\"").unwrap();
        cut_jsonl(&path, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\": 1}\n{\"b\": 2}\n"
        );
        cut_jsonl(&path, Some(10)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
        cut_jsonl(&path, Some(4)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn the_last_whole_line_is_found_across_read_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SCALARS_FILE);
        let long = "x".repeat(200_000);
        std::fs::write(&path, format!("{long}\n{long}")).unwrap();
        cut_jsonl(&path, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 200_001);
        std::fs::write(&path, &long).unwrap();
        cut_jsonl(&path, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_resume_keeps_exactly_what_the_checkpoint_saw() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(dir.path()).unwrap();
        log.scalar("train/loss", 0, 1.0).unwrap();
        let pos = log.position().unwrap();
        log.scalar("train/loss", 1, 2.0).unwrap();
        log.flush().unwrap();
        drop(log);
        let mut log = RunLogger::resume(dir.path(), Some(&pos), 1).unwrap();
        log.scalar("train/loss", 1, 3.0).unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join(SCALARS_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].contains("\"restart\":true") && lines[2].contains("3.0"),
            "{text}"
        );
        let events: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("events."))
            .collect();
        assert_eq!(events.len(), 1);
    }
}
