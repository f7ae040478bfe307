//! The local launcher: runs a sweep's trials as child processes of this
//! `shimmer`, `jobs` at a time.
//!
//! A failing trial is recorded as failed with its error and the others go
//! on. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops the sweep cleanly: no new
//! trial starts, running ones get SIGTERM (SIGKILL after a grace period),
//! are waited for and recorded as interrupted, so `shimmer sweep --resume <sweep-dir>` picks them up (from
//! their last checkpoint) with the trials that never started.

use super::manifest::{Manifest, SweepDir, TrialState};
use super::trial;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often running trials are polled.
const POLL: Duration = Duration::from_millis(50);

/// How long a stopped trial may take to exit after SIGTERM before its
/// process group is killed: enough to finish a step and write a checkpoint
/// (Slurm's default `KillWait` is the same).
const GRACE: Duration = Duration::from_secs(30);

/// What happened to the trials a launcher was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Trials that finished.
    pub finished: usize,
    /// Trials that failed.
    pub failed: usize,
    /// Trials stopped by a signal, or never started because of it.
    pub interrupted: usize,
}

struct Running {
    index: usize,
    child: Child,
    record: super::manifest::TrialRecord,
    started: Instant,
}

/// The signal that asked the sweep to stop, set by SIGINT, SIGTERM or
/// SIGHUP from [`StopFlag::on_signals`] on: the sweep's exit status is
/// 128 + that signal, as the shell's.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicUsize>);

impl StopFlag {
    /// A flag set by SIGINT, SIGTERM or SIGHUP from now on (the last one
    /// received is kept).
    pub fn on_signals() -> Result<Self> {
        let flag = Self::default();
        for signal in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register_usize(signal, Arc::clone(&flag.0), signal as usize)
                .context("cannot install the Ctrl-C handler")?;
        }
        Ok(flag)
    }

    /// The signal received, if one was.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            s => i32::try_from(s).ok(),
        }
    }
}

/// Stops a trial and everything it started: SIGTERM to its process group
/// (each trial leads its own, see [`trial::spawn`]), SIGKILL after
/// [`GRACE`], then waits for it.
fn stop_child(child: &mut Child) {
    shimmer_sys::process::signal_group(child, false);
    let start = Instant::now();
    while start.elapsed() < GRACE {
        if let Ok(Some(_)) = child.try_wait() {
            // Reaped: anything left in the group still gets the kill.
            shimmer_sys::process::signal_group(child, true);
            return;
        }
        std::thread::sleep(POLL);
    }
    shimmer_sys::process::signal_group(child, true);
    let _ = child.wait();
}

/// Runs trials `indices` of the sweep, `jobs` at a time, printing a line
/// as each ends; stops early when `stop` is set.
pub fn run(
    manifest: &Manifest,
    dir: &SweepDir,
    indices: &[usize],
    jobs: usize,
    stop: &StopFlag,
) -> Result<Outcome> {
    let jobs = jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let user_set = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let threads = (!user_set).then(|| threads_per_trial(cores, jobs, indices.len()));
    let mut pool = Pool {
        threads,
        dir,
        total: indices.len(),
        ended: 0,
        running: Vec::new(),
        outcome: Outcome::default(),
    };
    let mut queue: VecDeque<usize> = indices.iter().copied().collect();
    while stop.signal().is_none() {
        while pool.running.len() < jobs {
            let Some(index) = queue.pop_front() else {
                break;
            };
            pool.start(manifest, index)?;
        }
        if pool.running.is_empty() {
            break;
        }
        pool.reap()?;
        std::thread::sleep(POLL);
    }
    if stop.signal().is_some() {
        pool.interrupt_all()?;
        pool.outcome.interrupted += queue.len();
    }
    Ok(pool.outcome)
}

/// CPU threads each trial gets when `jobs` of `trials` run at once on
/// `cores` cores: the cores shared out, at least one. Without this every
/// trial would start one thread per core and they would fight for them.
pub fn threads_per_trial(cores: usize, jobs: usize, trials: usize) -> usize {
    let at_once = jobs.min(trials).max(1);
    (cores / at_once).max(1)
}

/// The trials running now, and what became of the others.
struct Pool<'a> {
    /// Threads per trial (`RAYON_NUM_THREADS` of each), unless the user set them.
    threads: Option<usize>,
    dir: &'a SweepDir,
    total: usize,
    ended: usize,
    running: Vec<Running>,
    outcome: Outcome,
}

impl Pool<'_> {
    fn report(&mut self, index: usize, text: &str) {
        self.ended += 1;
        let (ended, total) = (self.ended, self.total);
        println!(
            "[{ended}/{total}] trial {} {text}",
            self.dir.trial_name(index)
        );
    }

    /// Starts trial `index`; a trial that cannot start is recorded failed.
    fn start(&mut self, manifest: &Manifest, index: usize) -> Result<()> {
        match trial::spawn(manifest, self.dir, index, self.threads) {
            Ok((child, record)) => self.running.push(Running {
                index,
                child,
                record,
                started: Instant::now(),
            }),
            Err(e) => {
                let mut record = self.dir.record(index).unwrap_or_default();
                record.state = TrialState::Failed;
                record.error = Some(format!("{e:#}"));
                self.dir.save_record(index, &record)?;
                self.outcome.failed += 1;
                self.report(index, &format!("failed to start: {e:#}"));
            }
        }
        Ok(())
    }

    /// Records the trials that ended since the last call.
    fn reap(&mut self) -> Result<()> {
        let mut k = 0;
        while k < self.running.len() {
            match self.running[k].child.try_wait() {
                Ok(None) => k += 1,
                Ok(Some(status)) => {
                    let mut r = self.running.swap_remove(k);
                    let secs = r.started.elapsed().as_secs_f64();
                    trial::finish(self.dir, r.index, &mut r.record, status, secs)?;
                    if r.record.state == TrialState::Finished {
                        self.outcome.finished += 1;
                        self.report(r.index, &format!("finished in {secs:.1} s"));
                    } else {
                        self.outcome.failed += 1;
                        let error = r.record.error.clone().unwrap_or_default();
                        self.report(r.index, &format!("failed after {secs:.1} s: {error}"));
                    }
                }
                Err(e) => {
                    let mut r = self.running.swap_remove(k);
                    stop_child(&mut r.child);
                    r.record.state = TrialState::Failed;
                    r.record.error = Some(format!("cannot wait for the trial: {e}"));
                    self.dir.save_record(r.index, &r.record)?;
                    self.outcome.failed += 1;
                    self.report(r.index, &format!("failed: cannot wait for it: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Stops every running trial and records it interrupted (a trial that
    /// ended on its own just now keeps its result).
    fn interrupt_all(&mut self) -> Result<()> {
        for mut r in std::mem::take(&mut self.running) {
            if let Ok(Some(status)) = r.child.try_wait() {
                let secs = r.started.elapsed().as_secs_f64();
                trial::finish(self.dir, r.index, &mut r.record, status, secs)?;
                if r.record.state == TrialState::Finished {
                    self.outcome.finished += 1;
                } else {
                    self.outcome.failed += 1;
                }
                continue;
            }
            stop_child(&mut r.child);
            trial::interrupt(self.dir, r.index, &mut r.record)?;
            self.outcome.interrupted += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_shared_among_the_trials_running_at_once() {
        assert_eq!(threads_per_trial(16, 4, 10), 4);
        assert_eq!(threads_per_trial(16, 4, 2), 8);
        assert_eq!(threads_per_trial(2, 4, 4), 1);
        assert_eq!(threads_per_trial(8, 1, 3), 8);
    }
}
