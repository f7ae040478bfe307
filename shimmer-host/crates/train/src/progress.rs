//! Progress display: a bar with step, loss and samples/s on a terminal,
//! plain log lines otherwise (CI logs, Slurm output files).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Reports training progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    samples: u64,
    last_line: Instant,
}

impl Progress {
    /// Starts reporting for a run of `total` steps, `done` of them already done.
    pub fn new(total: u64, done: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            samples: 0,
            last_line: Instant::now(),
        }
    }

    /// Records one step of `samples` items that reached `loss`.
    pub fn step(&mut self, step: u64, loss: f32, samples: usize) {
        self.samples += samples as u64;
        let rate = self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(format!("loss {loss:.4}  {rate:.0} samples/s"));
            }
            None => {
                if self.last_line.elapsed().as_secs_f64() >= 10.0 || step == self.total {
                    self.last_line = Instant::now();
                    eprintln!(
                        "step {step}/{}  loss {loss:.4}  {rate:.0} samples/s",
                        self.total
                    );
                }
            }
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
