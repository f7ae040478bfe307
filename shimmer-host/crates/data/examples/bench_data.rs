//! Data loader benchmark on the large config of issue 4: three
//! random-vectors domains (latent dims 12, 11, 768), 100 000 unpaired items
//! each plus 5 000 paired, groups `{a}`, `{b}`, `{c}`, `{a,b,c}`, batch 2048.
//!
//! ```text
//! bench_data --plugin target/release/librandom_vectors.so [--workers 2]
//!            [--cache on|off] [--epochs 1] [--trainer STEPS]
//! ```
//!
//! Prints batches/s of the training loader (after its setup, which includes
//! filling the latent cache), setup time and peak memory (VmHWM). With
//! `--trainer`, also times that many GW training steps (fusion flavour, on
//! preloaded batches, CPU) and prints steps/s. Run through `scripts/bench-data`.

use anyhow::{Context, Result, bail};
use candle_core::Device;
use shimmer_config::{Experiment, LossConfig, OptimConfig, WorkspaceConfig};
use shimmer_data::{DataPipeline, HostBatch, open_sources};
use shimmer_nn::optim::Optimizer;
use shimmer_nn::{DomainSpec, GlobalWorkspace};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    plugin: PathBuf,
    workers: usize,
    cache: bool,
    epochs: u64,
    trainer: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        plugin: PathBuf::new(),
        workers: 2,
        cache: false,
        epochs: 1,
        trainer: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--plugin" => args.plugin = value()?.into(),
            "--workers" => args.workers = value()?.parse()?,
            "--cache" => args.cache = value()? == "on",
            "--epochs" => args.epochs = value()?.parse()?,
            "--trainer" => args.trainer = value()?.parse()?,
            other => bail!("unknown argument `{other}`"),
        }
    }
    if args.plugin.as_os_str().is_empty() {
        bail!("--plugin PATH (the random-vectors library) is required");
    }
    Ok(args)
}

fn experiment(a: &Args) -> Result<Experiment> {
    let lib = a.plugin.display();
    let domain = |dim: usize, seed: u64| {
        format!(
            "{{ plugin: \"{lib}\", config: {{ dim: {dim}, seed: {seed}, train: 105000, val: 0, test: 0 }} }}"
        )
    };
    let yaml = format!(
        r#"
name: bench-data
domains:
  a: {a}
  b: {b}
  c: {c}
workspace: {{ flavour: fusion, dim: 12, encoders: {{ hidden: 256 }}, decoders: {{ hidden: 256 }} }}
loss:
  coefs: {{ demi_cycles: 1.0, cycles: 1.0, translations: 1.0, contrastives: 0.01, fused: 1.0 }}
data:
  batch_size: 2048
  workers: {workers}
  prefetch: {prefetch}
  mode: min_size
  cache: {{ enabled: {cache} }}
  groups:
    - {{ domains: [a, b, c], items: {{ range: [0, 5000] }} }}
    - {{ domains: [a], items: {{ range: [5000, 105000] }} }}
    - {{ domains: [b], items: {{ range: [5000, 105000] }} }}
    - {{ domains: [c], items: {{ range: [5000, 105000] }} }}
  val: []
  test: []
"#,
        a = domain(12, 1),
        b = domain(11, 2),
        c = domain(768, 3),
        workers = a.workers,
        prefetch = 2 * a.workers.max(1),
        cache = a.cache,
    );
    Ok(shimmer_config::parse(&yaml, Path::new("bench-data.yaml"))?)
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let exp = experiment(&a)?;
    let t = Instant::now();
    let sources = open_sources(&exp)?;
    let data = DataPipeline::build(&exp.data, &sources, exp.seed, None)?;
    let setup = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut batches = 0usize;
    let mut checksum = 0u64;
    let mut kept: Vec<HostBatch> = Vec::new();
    for e in 0..a.epochs {
        for b in data.train.epoch(e)? {
            let b = b?;
            checksum ^= b.groups["a,b,c"].items[0];
            batches += 1;
            if a.trainer > 0 && kept.len() < 4 {
                kept.push(b);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "loader  workers={} cache={:<3} setup={setup:.2}s batches={batches} time={secs:.2}s \
         batches_per_s={:.2} peak_rss={:.0}MiB (check {checksum})",
        a.workers,
        if a.cache { "on" } else { "off" },
        batches as f64 / secs,
        peak_rss_mib()
    );

    if a.trainer > 0 {
        let device = Device::Cpu;
        let specs: Vec<DomainSpec> = sources
            .iter()
            .map(|(n, s)| DomainSpec::mse(n, s.latent_dim()))
            .collect();
        let ws: &WorkspaceConfig = exp
            .workspace
            .as_ref()
            .context("the bench experiment has a workspace")?;
        let loss: &LossConfig = &exp.loss;
        let gw = GlobalWorkspace::new(ws, loss, &specs, &device, 0)?;
        let mut opt = Optimizer::new(gw.params().params(), &OptimConfig::default(), Some(1000))?;
        let step = |opt: &mut Optimizer, b: &HostBatch| -> Result<()> {
            let batch = b.to_gw_batch(&device)?;
            let out = gw.step_loss(&batch)?;
            let grads = out.loss.backward()?;
            opt.step(&grads)
        };
        step(&mut opt, &kept[0])?; // warm-up
        let t = Instant::now();
        for s in 0..a.trainer {
            step(&mut opt, &kept[s % kept.len()])?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "trainer steps={} time={secs:.2}s steps_per_s={:.3} (fusion GW, dim 12, hidden 256, CPU)",
            a.trainer,
            a.trainer as f64 / secs
        );
    }
    Ok(())
}
