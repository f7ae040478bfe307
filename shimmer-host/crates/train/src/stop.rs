//! Stopping a training run cleanly on SIGINT, SIGTERM or SIGHUP: Ctrl-C,
//! `kill`, Slurm's time limit (SIGTERM, then SIGKILL after `KillWait`), a
//! sweep launcher stopping or dying. The run finishes the step in flight,
//! writes its last checkpoint and ends with an error that says how to
//! resume; nothing since the last checkpoint is lost. Each signal says
//! what the run is waiting for (a plugin call in flight, say). A second
//! Ctrl-C ends the process at once, its summary marked interrupted;
//! repeated SIGTERMs do not (under Slurm a trial gets one from Slurm and
//! one from its sweep launcher at the same moment).

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Exit status when a second Ctrl-C ends the process at once (128 + SIGINT,
/// the shell's convention).
const FORCED_EXIT: i32 = 130;

/// What to do before the process ends on a second Ctrl-C (record in the
/// run's summary that it was cut short); returns what the user can do
/// next (empty: nothing was written yet).
#[derive(Default)]
struct LastWords(Mutex<Option<Box<dyn FnOnce() -> String + Send>>>);

impl std::fmt::Debug for LastWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastWords")
    }
}

/// Whether a stop was asked for, and by which signal.
#[derive(Clone, Debug, Default)]
pub struct StopRequest {
    asked: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
    last_words: Arc<LastWords>,
}

impl StopRequest {
    /// A request nothing sets (library use, tests): the run goes to its end.
    pub fn never() -> Self {
        Self::default()
    }

    /// Handles SIGINT, SIGTERM and SIGHUP for the rest of the process, on a
    /// thread of their own: each sets the request and says what the run is
    /// waiting for before it can stop (see [`shimmer_sys::activity`]); a
    /// SIGINT after any of them runs the last words
    /// ([`StopRequest::on_forced_exit`]) and ends the process with status 130.
    pub fn on_signals() -> Result<Self> {
        let stop = Self::default();
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("cannot handle SIGINT, SIGTERM and SIGHUP")?;
        let seen = stop.clone();
        std::thread::Builder::new()
            .name("shimmer-signals".to_string())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGINT && seen.asked.load(Ordering::SeqCst) {
                        let waiting = shimmer_sys::activity::describe();
                        let words = seen.last_words.0.lock().ok().and_then(|mut w| w.take());
                        let next = match words {
                            Some(words) => words(),
                            None => String::new(),
                        };
                        let next = if next.is_empty() {
                            "no run folder was created yet, so nothing is left to resume".to_string()
                        } else {
                            next
                        };
                        eprintln!(
                            "\nsecond Ctrl-C: ending now, without a final checkpoint (it was \
                             waiting for {waiting}); {next}"
                        );
                        std::process::exit(FORCED_EXIT);
                    }
                    seen.signal.store(sig as usize, Ordering::SeqCst);
                    seen.asked.store(true, Ordering::SeqCst);
                    // Work before the training loop (a latent cache being
                    // built) stops on this too.
                    shimmer_sys::stop::record(sig);
                    eprintln!(
                        "\n{}: stopping after {} and saving a checkpoint; Ctrl-C again ends at once",
                        seen.asked().unwrap_or("a signal"),
                        shimmer_sys::activity::describe()
                    );
                }
            })
            .context("cannot start the signal thread")?;
        Ok(stop)
    }

    /// Sets what runs before the process ends on a second Ctrl-C; it
    /// returns what the user can do next, said in the last line.
    pub fn on_forced_exit(&self, words: impl FnOnce() -> String + Send + 'static) {
        if let Ok(mut slot) = self.last_words.0.lock() {
            *slot = Some(Box::new(words));
        }
    }

    /// The name of the signal that asked for a stop, if one did.
    pub fn asked(&self) -> Option<&'static str> {
        if !self.asked.load(Ordering::SeqCst) {
            return None;
        }
        Some(shimmer_sys::stop::signal_name(
            self.signal.load(Ordering::SeqCst) as i32,
        ))
    }

    /// The number of the signal that asked for a stop, if one did (SIGINT
    /// for [`StopRequest::ask`]).
    pub fn signal(&self) -> Option<i32> {
        if !self.asked.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.signal.load(Ordering::SeqCst) as i32 {
            0 => SIGINT,
            s => s,
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
