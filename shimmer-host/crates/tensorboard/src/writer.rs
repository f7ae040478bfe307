//! Appending events to one TensorBoard event file.

use super::proto::{self, Event, Summary, SummaryMetadata, SummaryValue, event, summary_value};
use super::record::write_record;
use anyhow::{Context, Result};
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A hyperparameter value as the HParams tab shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    /// A number (learning rate, sizes, coefficients).
    Number(f64),
    /// A string (flavour, selection).
    Text(String),
    /// A boolean.
    Bool(bool),
}

/// A hyperparameter column of an HParams experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct HParamColumn {
    /// Its key (`optim.lr`), as the sessions record it.
    pub name: String,
    /// One of its values, which gives the column's type.
    pub sample: HParam,
    /// Whether its value differs between the runs.
    pub differs: bool,
}

/// How a run ended, for the HParams tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Finished normally.
    Success,
    /// Stopped on an error.
    Failure,
}

/// How the names of event files begin (TensorBoard reads those files).
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";

/// The event files directly in `dir`, in name order (the order TensorBoard
/// reads them in).
///
/// # Errors
/// When `dir` cannot be read.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(EVENT_FILE_PREFIX)
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Writes one `events.out.tfevents.*` file in a run folder.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn plugin_metadata(plugin: &str, content: Vec<u8>) -> Option<SummaryMetadata> {
    Some(SummaryMetadata {
        plugin_data: Some(proto::PluginData {
            plugin_name: plugin.to_string(),
            content,
        }),
        ..Default::default()
    })
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing), named as
    /// TensorBoard expects, and writes the file-version record.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create TensorBoard folder {}", dir.display()))?;
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        let secs = now() as u64;
        let mut n = 0;
        let (file, path) = loop {
            let path = dir.join(format!(
                "{EVENT_FILE_PREFIX}{secs}.{host}.{}.{n}",
                std::process::id()
            ));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create event file {}", path.display()));
                }
            }
        };
        let mut writer = Self {
            out: BufWriter::new(file),
            path,
        };
        writer.write_event(Event {
            wall_time: now(),
            step: 0,
            what: Some(event::What::FileVersion("brain.Event:2".to_string())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// Reopens the event file at `path` to append to it, first cutting it
    /// back to its first `len` bytes: a resumed run drops what was logged
    /// after the checkpoint it resumes from (and logs it again).
    ///
    /// # Errors
    /// When the file cannot be opened, or is shorter than `len` (it is not
    /// the file the checkpoint saw).
    pub fn reopen(path: &Path, len: u64) -> Result<Self> {
        let file = File::options()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open event file {}", path.display()))?;
        let found = file
            .metadata()
            .with_context(|| format!("cannot read event file {}", path.display()))?
            .len();
        anyhow::ensure!(
            found >= len,
            "event file {} has {found} bytes, fewer than the {len} its checkpoint saw",
            path.display()
        );
        file.set_len(len)
            .with_context(|| format!("cannot cut event file {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Bytes written so far, everything flushed first.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn flushed_len(&mut self) -> Result<u64> {
        self.flush()?;
        Ok(self
            .out
            .get_ref()
            .metadata()
            .with_context(|| format!("cannot read event file {}", self.path.display()))?
            .len())
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, event: Event) -> Result<()> {
        write_record(&mut self.out, &event.encode_to_vec())
            .with_context(|| format!("cannot write to event file {}", self.path.display()))
    }

    fn write_summary(&mut self, step: i64, value: SummaryValue) -> Result<()> {
        self.write_event(Event {
            wall_time: now(),
            step,
            what: Some(event::What::Summary(Summary { value: vec![value] })),
        })
    }

    /// Marks a restart at `step` (a resumed run): TensorBoard drops the
    /// events at steps `>= step` logged before it, which the resumed run
    /// logs again.
    pub fn restart_at(&mut self, step: i64) -> Result<()> {
        self.write_event(Event {
            wall_time: now(),
            step,
            what: Some(event::What::SessionLog(proto::SessionLog {
                status: proto::SESSION_START,
                checkpoint_path: String::new(),
                msg: "resumed".to_string(),
            })),
        })
    }

    /// Logs a scalar under `tag` at `step` (as a `simple_value`, the form
    /// PyTorch's and Lightning's loggers write).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.write_summary(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary_value::Value::SimpleValue(value)),
            },
        )
    }

    /// Logs an RGB image, PNG-encoded, of `width x height` pixels under
    /// `tag` at `step` (TensorBoard's Images tab).
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.write_summary(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary_value::Value::Image(proto::SummaryImage {
                    height: i32::try_from(height)?,
                    width: i32::try_from(width)?,
                    colorspace: 3,
                    encoded_image_string: png.to_vec(),
                })),
            },
        )
    }

    /// Logs markdown text under `tag` (TensorBoard's Text tab).
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> Result<()> {
        self.write_summary(
            step,
            SummaryValue {
                tag: tag.to_string(),
                metadata: plugin_metadata("text", Vec::new()),
                value: Some(summary_value::Value::Tensor(proto::TensorProto {
                    dtype: proto::DT_STRING,
                    tensor_shape: Some(proto::TensorShapeProto {
                        dim: vec![proto::TensorShapeDim { size: 1 }],
                    }),
                    string_val: vec![text.as_bytes().to_vec()],
                    ..Default::default()
                })),
            },
        )
    }

    fn hparams_record(&mut self, tag: &str, data: proto::hparams_plugin_data::Data) -> Result<()> {
        let content = proto::HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        self.write_summary(
            0,
            SummaryValue {
                tag: tag.to_string(),
                metadata: plugin_metadata("hparams", content),
                value: Some(summary_value::Value::Tensor(proto::TensorProto {
                    dtype: proto::DT_FLOAT,
                    tensor_shape: Some(proto::TensorShapeProto::default()),
                    float_val: vec![0.0],
                    ..Default::default()
                })),
            },
        )
    }

    /// Declares an HParams experiment: the hyperparameters to show as
    /// columns and the scalar tags to
    /// show as metrics. Written once, at the top of a folder that holds
    /// several runs (a sweep), so TensorBoard shows what the sweep varied
    /// rather than every setting of every run.
    pub fn hparams_experiment(
        &mut self,
        hparams: &[HParamColumn],
        metrics: &[String],
    ) -> Result<()> {
        use proto::hparams_plugin_data::Data;
        let infos = hparams
            .iter()
            .map(|c| proto::HParamInfo {
                name: c.name.clone(),
                r#type: match c.sample {
                    HParam::Text(_) => 1,
                    HParam::Bool(_) => 2,
                    HParam::Number(_) => 3,
                },
                differs: c.differs,
            })
            .collect();
        let metric_infos = metrics
            .iter()
            .map(|tag| proto::MetricInfo {
                name: Some(proto::MetricName {
                    group: String::new(),
                    tag: tag.clone(),
                }),
            })
            .collect();
        self.hparams_record(
            "_hparams_/experiment",
            Data::Experiment(proto::HParamsExperiment {
                time_created_secs: now(),
                hparam_infos: infos,
                metric_infos,
                ..Default::default()
            }),
        )
    }

    /// Records one run's hyperparameter values (an HParams session). Without
    /// an experiment above it, TensorBoard builds one from all sessions and
    /// marks which values differ between them.
    pub fn session_start(&mut self, hparams: &[(String, HParam)]) -> Result<()> {
        use proto::hparams_plugin_data::Data;
        use proto::proto_value::Kind;
        let values = hparams
            .iter()
            .map(|(name, v)| {
                let kind = match v {
                    HParam::Number(x) => Kind::NumberValue(*x),
                    HParam::Text(s) => Kind::StringValue(s.clone()),
                    HParam::Bool(b) => Kind::BoolValue(*b),
                };
                (name.clone(), proto::ProtoValue { kind: Some(kind) })
            })
            .collect();
        self.hparams_record(
            "_hparams_/session_start_info",
            Data::SessionStartInfo(proto::SessionStartInfo {
                hparams: values,
                group_name: String::new(),
                start_time_secs: now(),
            }),
        )
    }

    /// Marks the run's end in the HParams tab.
    pub fn session_end(&mut self, status: SessionStatus) -> Result<()> {
        self.hparams_record(
            "_hparams_/session_end_info",
            proto::hparams_plugin_data::Data::SessionEndInfo(proto::SessionEndInfo {
                status: match status {
                    SessionStatus::Success => 1,
                    SessionStatus::Failure => 2,
                },
                end_time_secs: now(),
            }),
        )
    }

    /// Pushes buffered events to disk, so TensorBoard sees them now.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .with_context(|| format!("cannot write to event file {}", self.path.display()))
    }
}
