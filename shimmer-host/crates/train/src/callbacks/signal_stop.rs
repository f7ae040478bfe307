//! Stopping at the next step boundary when a signal asks for it.

use crate::callback::{Callback, FitContext, Flow, StepOutcome, StopReason};
use crate::stop::StopRequest;
use anyhow::Result;

/// Ends the fit after the step in flight when its [`StopRequest`] is set
/// (SIGINT, SIGTERM, SIGHUP): the checkpoint callback then saves `last`
/// and the run ends as interrupted, to be resumed. A request that arrives
/// during the last step changes nothing: the run finishes.
#[derive(Debug)]
pub struct SignalStop {
    stop: StopRequest,
}

impl SignalStop {
    /// Watches `stop`.
    pub fn new(stop: StopRequest) -> Self {
        Self { stop }
    }
}

impl Callback for SignalStop {
    fn name(&self) -> &'static str {
        "signal-stop"
    }

    fn on_step_end(&mut self, ctx: &mut FitContext<'_>, _step: &StepOutcome) -> Result<Flow> {
        Ok(match self.stop.asked() {
            Some(signal) if !ctx.is_last_step() => Flow::Stop(StopReason::Interrupted { signal }),
            _ => Flow::Continue,
        })
    }
}
