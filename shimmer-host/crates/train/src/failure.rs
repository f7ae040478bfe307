//! What a failed command's exit status says, so scripts and schedulers can
//! tell bad input from a training that broke, diverged or was stopped
//! (documented in the README):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the training started and then failed (I/O, a plugin error mid-run) |
//! | 2 | bad input, refused before training: config, plugin, data files, usage |
//! | 3 | the training loss became NaN or infinite |
//! | 128 + signal | stopped by a signal after saving (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) |

use crate::stop::Stopped;

/// Exit status of a run that failed after training started.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit status of input refused before anything ran.
pub const EXIT_INPUT: u8 = 2;
/// Exit status of a run whose loss became non-finite.
pub const EXIT_NON_FINITE: u8 = 3;

/// The training loss became NaN or infinite (the message says at which step,
/// and which checkpoint is kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NonFiniteLoss(pub String);

/// Marks an error that happened once training had started.
#[derive(Debug, thiserror::Error)]
#[error("training failed at step {step}")]
pub struct TrainingFailed {
    /// Optimiser steps done when it failed.
    pub step: u64,
}

/// A command other than a run (a sweep) stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    /// The signal that stopped it (the exit status is 128 + it).
    pub signal: i32,
    /// What stopped and how to go on.
    pub message: String,
}

/// A command other than a run (a sweep) whose work started and failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// The exit status for `e` (see the module doc).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(stopped) = e.downcast_ref::<Stopped>() {
        return match stopped.signal {
            s if s.starts_with("SIGTERM") => 128 + 15,
            s if s.starts_with("SIGHUP") => 128 + 1,
            _ => 128 + 2,
        };
    }
    if let Some(early) = e
        .chain()
        .find_map(|c| c.downcast_ref::<shimmer_sys::stop::StopAsked>())
    {
        return u8::try_from(128 + early.signal).unwrap_or(128 + 2);
    }
    if e.chain().any(|c| c.is::<NonFiniteLoss>()) {
        return EXIT_NON_FINITE;
    }
    if let Some(interrupted) = e.downcast_ref::<Interrupted>() {
        return u8::try_from(128 + interrupted.signal).unwrap_or(128 + 2);
    }
    if e.downcast_ref::<TrainingFailed>().is_some() || e.downcast_ref::<Failed>().is_some() {
        return EXIT_RUNTIME;
    }
    EXIT_INPUT
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn each_kind_of_failure_has_its_status() {
        let input = anyhow::anyhow!("bad key");
        assert_eq!(exit_code(&input), EXIT_INPUT);
        let runtime: anyhow::Error = Err::<(), _>(anyhow::anyhow!("disk full"))
            .context(TrainingFailed { step: 3 })
            .unwrap_err();
        assert_eq!(exit_code(&runtime), EXIT_RUNTIME);
        let nan =
            anyhow::Error::new(NonFiniteLoss("nan".into())).context(TrainingFailed { step: 3 });
        assert_eq!(exit_code(&nan), EXIT_NON_FINITE);
        let stop = |signal| {
            anyhow::Error::new(Stopped {
                signal,
                step: 1,
                run_dir: "r".into(),
            })
        };
        assert_eq!(exit_code(&stop("SIGINT (Ctrl-C)")), 130);
        assert_eq!(exit_code(&stop("SIGTERM")), 143);
        assert_eq!(exit_code(&stop("SIGHUP")), 129);
        let sweep = |signal| {
            anyhow::Error::new(Interrupted {
                signal,
                message: "sweep interrupted".into(),
            })
        };
        assert_eq!(exit_code(&sweep(2)), 130);
        assert_eq!(exit_code(&sweep(15)), 143);
        assert_eq!(exit_code(&sweep(1)), 129);
        let early = anyhow::Error::new(shimmer_sys::stop::StopAsked {
            signal: 15,
            during: "building the latent cache".into(),
        })
        .context("data: domain `v`");
        assert_eq!(exit_code(&early), 143);
    }
}
