//! Stopping a training run cleanly on SIGINT, SIGTERM or SIGHUP: Ctrl-C,
//! `kill`, Slurm's time limit (SIGTERM, then SIGKILL after `KillWait`), a
//! sweep launcher stopping or dying. The run finishes the step in flight,
//! writes its last checkpoint and ends with an error that says how to
//! resume; nothing since the last checkpoint is lost. A second Ctrl-C ends
//! the process at once; repeated SIGTERMs do not (under Slurm a trial gets
//! one from Slurm and one from its sweep launcher at the same moment).

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Exit status when a second Ctrl-C ends the process at once (128 + SIGINT,
/// the shell's convention).
const FORCED_EXIT: i32 = 130;

/// Whether a stop was asked for, and by which signal.
#[derive(Clone, Debug, Default)]
pub struct StopRequest {
    asked: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl StopRequest {
    /// A request nothing sets (library use, tests): the run goes to its end.
    pub fn never() -> Self {
        Self::default()
    }

    /// Handles SIGINT, SIGTERM and SIGHUP for the rest of the process: each
    /// sets the request; a SIGINT after any of them ends the process.
    pub fn on_signals() -> Result<Self> {
        let stop = Self::default();
        // Registered before the flag is set, so it sees the flag as an
        // earlier signal left it: the first Ctrl-C only asks.
        signal_hook::flag::register_conditional_shutdown(SIGINT, FORCED_EXIT, stop.asked.clone())
            .context("cannot handle SIGINT")?;
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(sig, stop.signal.clone(), sig as usize)
                .and_then(|_| signal_hook::flag::register(sig, stop.asked.clone()))
                .with_context(|| format!("cannot handle signal {sig}"))?;
        }
        Ok(stop)
    }

    /// The name of the signal that asked for a stop, if one did.
    pub fn asked(&self) -> Option<&'static str> {
        if !self.asked.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.signal.load(Ordering::SeqCst) as i32 {
            SIGINT => "SIGINT (Ctrl-C)",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
            _ => "a stop request",
        })
    }

    /// Asks for a stop as a signal would (for embedding code and tests).
    pub fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
    }
}

/// The error a stopped run ends with: where it stopped and how to go on.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped by {signal} after step {step}; the last checkpoint is saved: continue with \
     `shimmer run --resume {run_dir}`"
)]
pub struct Stopped {
    /// What asked for the stop.
    pub signal: &'static str,
    /// Optimiser steps done.
    pub step: u64,
    /// The run folder.
    pub run_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_seen_once_asked() {
        let stop = StopRequest::never();
        assert_eq!(stop.asked(), None);
        stop.clone().ask();
        assert_eq!(stop.asked(), Some("a stop request"));
    }
}
