//! `shimmer bench`: times optimiser steps of an experiment's model (a GW,
//! or the domain model a pretraining experiment trains) on
//! preloaded batches, for comparisons between builds, devices, thread counts
//! and the PyTorch reference (`scripts/reference/gw_reference.py`).
//!
//! The experiment is built exactly as `shimmer run` builds it (plugins, data
//! pipeline with its latent cache, domain models, GW, losses, AdamW with its
//! schedule). A few training batches are loaded once; then `warmup` steps
//! run untimed and `steps` steps are timed, cycling over those batches.
//! Each step is what the training loop does: the batch goes to the device,
//! forward pass and metrics (read back to the host), the loss read back,
//! backward pass, AdamW update and scheduler step. No logging, validation or
//! checkpointing. The schedule spans `warmup + steps` steps.
//!
//! ```no_run
//! use crate::bench::{BenchOptions, run};
//! let report = run(&BenchOptions::new("experiments/bench/w1.yaml", 100, 10))?;
//! println!("{}", report.to_json());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! CPU threads come from the environment: candle's CPU backend (its
//! elementwise thread pool, which the fused kernels of [`shimmer_nn::ops`]
//! share) reads `RAYON_NUM_THREADS` (`CANDLE_NUM_THREADS`, if set,
//! overrides it). `SHIMMER_CPU_KERNELS=off` times candle's composed ops
//! instead of the fused kernels.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use shimmer_data::batch::HostBatch;
use shimmer_nn::device;
use shimmer_nn::optim::Optimizer;
use shimmer_train::task::Task;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `shimmer bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Experiment file.
    pub experiment: PathBuf,
    /// `key.path=value` overrides, applied after the YAML layers.
    pub overrides: Vec<String>,
    /// Timed optimiser steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// Distinct training batches loaded before timing (cycled over).
    pub preload: usize,
}

/// Timings of one benchmark; [`BenchReport::to_json`] has the same fields
/// as the PyTorch reference's output.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Which implementation measured (`shimmer-rs`).
    pub implementation: String,
    /// Experiment name.
    pub workload: String,
    /// Device of the step (`cpu`, `cuda:0`).
    pub device: String,
    /// Matrix-product precision (`f32`, `bf16`).
    pub precision: String,
    /// Instruction set of the fused CPU kernels (`avx512`, `avx2`,
    /// `baseline`; `off` when `SHIMMER_CPU_KERNELS=off`).
    pub cpu_kernels: String,
    /// CPU threads candle uses (from `RAYON_NUM_THREADS`, else the cores).
    pub threads: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Rows per step, summed over the batch's groups.
    pub samples_per_step: usize,
    /// Seconds of the timed steps.
    pub seconds: f64,
    /// Optimiser steps per second.
    pub steps_per_s: f64,
    /// Rows per second.
    pub samples_per_s: f64,
    /// Peak resident memory of the process (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory once the data was loaded, before the first step, MiB.
    pub rss_before_steps_mib: f64,
    /// Device memory used by this process after the timed steps (MiB, from
    /// `nvidia-smi`); `None` on CPU or when it cannot be read.
    pub device_mem_mib: Option<f64>,
    /// Seconds to build plugins, data (latent cache included) and model.
    pub setup_s: f64,
    /// Last training loss (a sanity check, not a result).
    pub last_loss: f32,
    /// Where the timed seconds went, host wall time summed over the steps:
    /// forward pass with the loss and metrics read back, backward pass,
    /// optimiser update (on a GPU, queued work is charged to whichever
    /// phase waits for it).
    pub phases_s: Phases,
}

/// Seconds spent in each phase of the timed steps.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Phases {
    /// Forward pass, loss and metrics read back.
    pub forward: f64,
    /// `loss.backward()`.
    pub backward: f64,
    /// AdamW update and scheduler step.
    pub optimizer: f64,
}

impl BenchReport {
    /// One-line JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Human-readable lines.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} ({}, {} thread(s)): {} steps in {:.3} s after {} warm-up\n  \
             {:.2} steps/s, {:.0} samples/s ({} per step)\n  \
             peak RSS {:.0} MiB (before the steps {:.0} MiB), device memory {}\n  \
             setup {:.2} s, last loss {:.5}\n  \
             per step: forward {:.2} ms, backward {:.2} ms, optimiser {:.2} ms",
            self.workload,
            self.device,
            self.precision,
            self.threads,
            self.steps,
            self.seconds,
            self.warmup,
            self.steps_per_s,
            self.samples_per_s,
            self.samples_per_step,
            self.peak_rss_mib,
            self.rss_before_steps_mib,
            self.device_mem_mib
                .map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB")),
            self.setup_s,
            self.last_loss,
            self.phases_s.forward * 1e3 / self.steps as f64,
            self.phases_s.backward * 1e3 / self.steps as f64,
            self.phases_s.optimizer * 1e3 / self.steps as f64,
        )
    }
}

/// Builds the experiment, loads the batches and times the steps.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    if opts.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let exp = shimmer_config::load(&opts.experiment, &opts.overrides)?.config;
    let device_name = match device::resolve(exp.device)?.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    };
    let base_dir = opts.experiment.parent().unwrap_or(Path::new("."));

    let started = Instant::now();
    let (pipeline, mut task) = shimmer_train::build(&exp, base_dir)?;
    let total = opts.warmup + opts.steps;
    let batches = preload(&pipeline.train, opts.preload.clamp(1, total))?;
    drop(pipeline);
    let mut optimizer = Optimizer::new(task.params().params(), &exp.optim, Some(total))?;
    let setup_s = started.elapsed().as_secs_f64();
    let rss_before_steps_mib = memory_mib(|s| s.rss_kib);
    let mut timing = Timing {
        task: task.as_mut(),
        optimizer: &mut optimizer,
        batches: &batches,
        warmup: opts.warmup,
        phases: Phases::default(),
        last_loss: f32::NAN,
    };
    for k in 0..opts.warmup {
        timing.step(k)?;
    }
    let t = Instant::now();
    for k in opts.warmup..total {
        timing.step(k)?;
    }
    let seconds = t.elapsed().as_secs_f64();
    let (phases, last_loss) = (timing.phases, timing.last_loss);
    let samples_per_step = batches[0].groups.values().map(|g| g.rows()).sum();
    let device_mem_mib = if device_name == "cpu" {
        None
    } else {
        nvidia_smi_own_mib()
    };
    Ok(BenchReport {
        implementation: "shimmer-rs".to_string(),
        workload: exp.name.clone(),
        device: device_name,
        precision: exp.precision.name().to_string(),
        cpu_kernels: shimmer_nn::ops::Ops::cpu_level().to_string(),
        threads: candle_core::utils::get_num_threads(),
        steps: opts.steps,
        warmup: opts.warmup,
        samples_per_step,
        seconds,
        steps_per_s: opts.steps as f64 / seconds,
        samples_per_s: (opts.steps * samples_per_step) as f64 / seconds,
        peak_rss_mib: memory_mib(|s| s.peak_rss_kib),
        rss_before_steps_mib,
        device_mem_mib,
        setup_s,
        last_loss,
        phases_s: phases,
    })
}

/// The first `n` training batches, over as many epochs as that takes.
fn preload(train: &shimmer_data::DataLoader, n: usize) -> Result<Vec<HostBatch>> {
    let mut batches: Vec<HostBatch> = Vec::new();
    let mut epoch = 0;
    while batches.len() < n {
        let before = batches.len();
        for b in train.epoch(epoch)? {
            batches.push(b.with_context(|| format!("loading training epoch {epoch}"))?);
            if batches.len() >= n {
                break;
            }
        }
        if batches.len() == before {
            bail!(
                "an epoch of the training set has no batch: every group needs at least \
                 `data.batch_size` items (or `data.drop_last: false`)"
            );
        }
        epoch += 1;
    }
    Ok(batches)
}

/// Timed training steps over preloaded batches, cycled.
struct Timing<'a> {
    task: &'a mut dyn Task,
    optimizer: &'a mut Optimizer,
    batches: &'a [HostBatch],
    warmup: usize,
    phases: Phases,
    last_loss: f32,
}

impl Timing<'_> {
    /// Step `k`: forward, backward and optimiser, each timed after warm-up.
    fn step(&mut self, k: usize) -> Result<()> {
        let batch = &self.batches[k % self.batches.len()];
        let t0 = Instant::now();
        let out = self.task.train_step(batch)?;
        let loss = out.loss_value;
        if !loss.is_finite() {
            bail!("the training loss became {loss} at step {k}");
        }
        let t1 = Instant::now();
        let grads = out.loss.backward()?;
        let t2 = Instant::now();
        self.optimizer.step(&grads)?;
        let t3 = Instant::now();
        if k >= self.warmup {
            self.phases.forward += (t1 - t0).as_secs_f64();
            self.phases.backward += (t2 - t1).as_secs_f64();
            self.phases.optimizer += (t3 - t2).as_secs_f64();
        }
        self.last_loss = loss;
        Ok(())
    }
}

/// A memory figure of this process in MiB; NaN where `/proc` cannot be read.
fn memory_mib(field: impl Fn(&shimmer_sys::proc::ProcessStats) -> u64) -> f64 {
    shimmer_sys::proc::ProcessStats::read().map_or(f64::NAN, |s| field(&s) as f64 / 1024.0)
}

/// GPU memory this process holds, as `nvidia-smi` reports it (MiB).
fn nvidia_smi_own_mib() -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let pid = std::process::id().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(p, _)| p.trim() == pid)
        .filter_map(|(_, m)| m.trim().parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
