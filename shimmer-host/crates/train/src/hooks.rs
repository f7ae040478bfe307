//! What the trainer calls around each step: the batch trace and the plugin
//! watcher.

use crate::logger::RunLogger;
use crate::trace::BatchTrace;
use anyhow::Result;
use shimmer_data::HostBatch;
use shimmer_data::swap::{PluginWatcher, WatchEvent};
use std::collections::HashMap;

/// The trainer's per-step hooks; [`Default`] does nothing.
#[derive(Debug, Default)]
pub struct StepHooks {
    watcher: Option<PluginWatcher>,
    trace: Option<BatchTrace>,
    started: bool,
    refused: HashMap<String, u32>,
    swapped: bool,
}

impl StepHooks {
    /// Hooks with an optional plugin watcher (`shimmer run --watch`) and
    /// the batch trace of [`crate::trace::TRACE_ENV`] when it is set.
    pub fn new(watcher: Option<PluginWatcher>) -> Result<Self> {
        Ok(Self {
            watcher,
            trace: BatchTrace::from_env()?,
            ..Self::default()
        })
    }

    /// Called with each training batch before its step (`step` is the
    /// global step it is used for).
    pub fn before_step(
        &mut self,
        step: u64,
        epoch: u64,
        batch_in_epoch: usize,
        batch: &HostBatch,
    ) -> Result<()> {
        match &mut self.trace {
            Some(t) => t.record(step, epoch, batch_in_epoch, batch),
            None => Ok(()),
        }
    }

    /// Whether a plugin was swapped since the last call: batches the loader
    /// threads prepared ahead came from the old build, so the trainer
    /// restarts the epoch's loading at the next batch.
    pub fn take_swap(&mut self) -> bool {
        std::mem::take(&mut self.swapped)
    }

    /// Called at each step boundary, when `step` steps are done: polls the
    /// watcher and logs what it did (TensorBoard text `plugins/<domain>`,
    /// scalars `plugins/<domain>/generation` and
    /// `plugins/<domain>/refused_builds`). Returns the console lines.
    /// Only a failure to write the logs is an error; a bad plugin build
    /// never is.
    pub fn after_step(&mut self, step: u64, tb: &mut RunLogger) -> Result<Vec<String>> {
        let Some(watcher) = &mut self.watcher else {
            return Ok(Vec::new());
        };
        let s = step as i64;
        let mut lines = Vec::new();
        if !self.started {
            self.started = true;
            for (domain, generation) in watcher.generations() {
                tb.scalar(
                    &format!("plugins/{domain}/generation"),
                    s,
                    generation as f32,
                )?;
            }
            lines.push(format!(
                "hot-swap: watching {}",
                watcher
                    .paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for event in watcher.poll() {
            let line = format!("step {step}: {event}");
            if matches!(event, WatchEvent::Swapped { .. }) {
                self.swapped = true;
            }
            match &event {
                WatchEvent::Swapped {
                    domain, generation, ..
                } => {
                    tb.scalar(
                        &format!("plugins/{domain}/generation"),
                        s,
                        *generation as f32,
                    )?;
                    tb.text(&format!("plugins/{domain}"), s, &line)?;
                }
                WatchEvent::Refused { domains, .. } => {
                    for domain in domains {
                        let n = self.refused.entry(domain.clone()).or_default();
                        *n += 1;
                        tb.scalar(&format!("plugins/{domain}/refused_builds"), s, *n as f32)?;
                        tb.text(&format!("plugins/{domain}"), s, &line)?;
                    }
                }
                WatchEvent::Released { .. } => {}
            }
            lines.push(line);
        }
        if !lines.is_empty() {
            tb.flush()?;
        }
        Ok(lines)
    }
}
