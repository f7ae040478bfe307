//! Plugin hot-swap between steps (`shimmer run --watch`; see
//! [`shimmer_data::swap`] for what is checked and when a build is used).

use crate::callback::{Callback, FitContext, Flow, StepOutcome};
use anyhow::Result;
use shimmer_data::swap::{PluginWatcher, WatchEvent};
use std::collections::HashMap;

/// Polls the plugin watcher at each step boundary, logs what it did
/// (TensorBoard text `plugins/<domain>`, scalars
/// `plugins/<domain>/generation` and `plugins/<domain>/refused_builds`) and,
/// after a swap, asks the loop to reload the rest of the epoch: batches the
/// loader threads prepared ahead came from the old build. Only a failure
/// to write the logs is an error; a bad plugin build never is.
#[derive(Debug)]
pub struct HotSwap {
    watcher: PluginWatcher,
    started: bool,
    refused: HashMap<String, u32>,
}

impl HotSwap {
    /// Swaps what `watcher` watches.
    pub fn new(watcher: PluginWatcher) -> Self {
        Self {
            watcher,
            started: false,
            refused: HashMap::new(),
        }
    }

    fn announce(&mut self, ctx: &mut FitContext<'_>, s: i64) -> Result<()> {
        self.started = true;
        for (domain, generation) in self.watcher.generations() {
            ctx.logger.scalar(
                &format!("plugins/{domain}/generation"),
                s,
                generation as f32,
            )?;
        }
        let paths: Vec<String> = self
            .watcher
            .paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        ctx.println(&format!("hot-swap: watching {}", paths.join(", ")));
        Ok(())
    }
}

impl Callback for HotSwap {
    fn name(&self) -> &'static str {
        "hot-swap"
    }

    fn on_step_end(&mut self, ctx: &mut FitContext<'_>, _step: &StepOutcome) -> Result<Flow> {
        let step = ctx.position.global_step;
        let s = step as i64;
        if !self.started {
            self.announce(ctx, s)?;
        }
        let mut flow = Flow::Continue;
        let events = self.watcher.poll();
        for event in &events {
            let line = format!("step {step}: {event}");
            match event {
                WatchEvent::Swapped {
                    domain, generation, ..
                } => {
                    flow = Flow::ReloadEpoch;
                    ctx.logger.scalar(
                        &format!("plugins/{domain}/generation"),
                        s,
                        *generation as f32,
                    )?;
                    ctx.logger.text(&format!("plugins/{domain}"), s, &line)?;
                }
                WatchEvent::Refused { domains, .. } => {
                    for domain in domains {
                        let n = self.refused.entry(domain.clone()).or_default();
                        *n += 1;
                        let tag = format!("plugins/{domain}/refused_builds");
                        ctx.logger.scalar(&tag, s, *n as f32)?;
                        ctx.logger.text(&format!("plugins/{domain}"), s, &line)?;
                    }
                }
                WatchEvent::Released { .. } => {}
            }
            ctx.println(&line);
        }
        if !events.is_empty() {
            ctx.logger.flush()?;
        }
        Ok(flow)
    }
}
