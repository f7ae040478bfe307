//! Data loader benchmark, on two sources of the same shape of workload:
//!
//! * `--source vectors` (issue 4): three random-vectors domains (latent
//!   dims 12, 11, 768), 100 000 unpaired items each plus 5 000 paired;
//! * `--source arrays`: two `.npy` files read by the `arrays` plugin, a
//!   100 000 x 768 float32 array (about 300 MB) and a 100 000 x 11 one,
//!   5 000 items paired and the rest alone (the files are written into
//!   `--data DIR` on first use).
//!
//! Groups: every domain alone over items 5 000..N, all domains paired over
//! items 0..5 000; batch 2048.
//!
//! ```text
//! bench_data --plugin target/release/librandom_vectors.so [--source vectors]
//! bench_data --plugin target/release/libarrays.so --source arrays --data DIR
//!            [--workers 2] [--cache on|off] [--epochs 1] [--trainer STEPS]
//! ```
//!
//! Prints batches/s of the training loader (after its setup, which includes
//! filling the latent cache), setup time, peak resident memory (VmHWM) and,
//! at the end, resident anonymous memory (what the process allocated) and
//! file-backed memory (mapped files, i.e. page cache). With `--trainer`,
//! also times that many steps of a W3-sized GW (fusion, workspace 12, hidden
//! 256, on preloaded batches, CPU) and prints steps/s. Run through
//! `scripts/bench-data`.

use anyhow::{Context, Result, bail};
use candle_core::Device;
use npyz::WriterBuilder;
use shimmer_config::{Experiment, LossConfig, OptimConfig, WorkspaceConfig};
use shimmer_data::{DataPipeline, HostBatch, open_sources};
use shimmer_nn::optim::Optimizer;
use shimmer_nn::{DomainSpec, GlobalWorkspace};
use shimmer_sys::proc::ProcessStats;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Items per domain: 5 000 paired plus 100 000 alone for random vectors;
/// 100 000 in all for the arrays files.
const VECTOR_ITEMS: u64 = 105_000;
const ARRAY_ITEMS: u64 = 100_000;
const PAIRED: u64 = 5_000;

#[derive(PartialEq)]
enum SourceKind {
    Vectors,
    Arrays,
}

struct Args {
    plugin: PathBuf,
    source: SourceKind,
    data: Option<PathBuf>,
    workers: usize,
    cache: bool,
    epochs: u64,
    trainer: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        plugin: PathBuf::new(),
        source: SourceKind::Vectors,
        data: None,
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
            "--source" => {
                args.source = match value()?.as_str() {
                    "vectors" => SourceKind::Vectors,
                    "arrays" => SourceKind::Arrays,
                    other => bail!("unknown source `{other}`: vectors or arrays"),
                }
            }
            "--data" => args.data = Some(value()?.into()),
            "--workers" => args.workers = value()?.parse()?,
            "--cache" => args.cache = value()? == "on",
            "--epochs" => args.epochs = value()?.parse()?,
            "--trainer" => args.trainer = value()?.parse()?,
            other => bail!("unknown argument `{other}`"),
        }
    }
    if args.plugin.as_os_str().is_empty() {
        bail!("--plugin PATH (the random-vectors or arrays library) is required");
    }
    if args.source == SourceKind::Arrays && args.data.is_none() {
        bail!("--source arrays needs --data DIR (where the .npy files are, or are written)");
    }
    Ok(args)
}

/// Writes a `rows x cols` float32 `.npy` of reproducible values, row by
/// row (never whole in memory), unless it is already there.
fn write_npy(path: &Path, rows: u64, cols: u64) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let tmp = path.with_extension("npy.part");
    let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[rows, cols])
        .writer(file)
        .begin_nd()?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..rows * cols {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.push(&((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5))?;
    }
    w.finish()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The domains (name, YAML) and their item count.
fn domains(a: &Args) -> Result<(Vec<(&'static str, String)>, u64)> {
    let lib = a.plugin.display();
    match a.source {
        SourceKind::Vectors => {
            let domain = |dim: usize, seed: u64| {
                format!(
                    "{{ plugin: \"{lib}\", config: {{ dim: {dim}, seed: {seed}, train: {VECTOR_ITEMS}, val: 0, test: 0 }} }}"
                )
            };
            Ok((
                vec![
                    ("a", domain(12, 1)),
                    ("b", domain(11, 2)),
                    ("c", domain(768, 3)),
                ],
                VECTOR_ITEMS,
            ))
        }
        SourceKind::Arrays => {
            let dir = a.data.as_deref().context("--data")?;
            std::fs::create_dir_all(dir)?;
            write_npy(&dir.join("train_t.npy"), ARRAY_ITEMS, 768)?;
            write_npy(&dir.join("train_attr.npy"), ARRAY_ITEMS, 11)?;
            let domain = |stem: &str| {
                format!(
                    "{{ plugin: \"{lib}\", config: {{ root: \"{}\", splits: [train], parts: [{{ npy: \"train_{stem}.npy\" }}] }} }}",
                    dir.display()
                )
            };
            Ok((
                vec![("t", domain("t")), ("attr", domain("attr"))],
                ARRAY_ITEMS,
            ))
        }
    }
}

fn experiment(a: &Args) -> Result<Experiment> {
    let (domains, items) = domains(a)?;
    let names: Vec<&str> = domains.iter().map(|(n, _)| *n).collect();
    let mut yaml = String::from("name: bench-data\ndomains:\n");
    for (name, d) in &domains {
        yaml.push_str(&format!("  {name}: {d}\n"));
    }
    yaml.push_str(&format!(
        r#"workspace: {{ flavour: fusion, dim: 12, encoders: {{ hidden: 256 }}, decoders: {{ hidden: 256 }} }}
loss:
  coefs: {{ demi_cycles: 1.0, cycles: 1.0, translations: 1.0, contrastives: 0.01, fused: 1.0 }}
data:
  batch_size: 2048
  workers: {workers}
  prefetch: {prefetch}
  mode: min_size
  cache: {{ enabled: {cache} }}
  val: []
  test: []
  groups:
    - {{ domains: [{all}], items: {{ range: [0, {PAIRED}] }} }}
"#,
        workers = a.workers,
        prefetch = 2 * a.workers.max(1),
        cache = a.cache,
        all = names.join(", "),
    ));
    for name in &names {
        yaml.push_str(&format!(
            "    - {{ domains: [{name}], items: {{ range: [{PAIRED}, {items}] }} }}\n"
        ));
    }
    Ok(shimmer_config::parse(&yaml, Path::new("bench-data.yaml"))?)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let exp = experiment(&a)?;
    let t = Instant::now();
    let sources = open_sources(&exp)?;
    let data = DataPipeline::build(&exp.data, &sources, exp.seed, None)?;
    let setup = t.elapsed().as_secs_f64();
    let paired = exp.data.groups[0].domains.join(",");

    let t = Instant::now();
    let mut batches = 0usize;
    let mut checksum = 0u64;
    let mut kept: Vec<HostBatch> = Vec::new();
    for e in 0..a.epochs {
        for b in data.train.epoch(e)? {
            let b = b?;
            checksum ^= b.groups[paired.as_str()].items[0];
            batches += 1;
            if a.trainer > 0 && kept.len() < 4 {
                kept.push(b);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let mem = ProcessStats::read()?;
    println!(
        "loader  source={} workers={} cache={:<3} setup={setup:.2}s batches={batches} time={secs:.2}s \
         batches_per_s={:.2} peak_rss={:.0}MiB anon={:.0}MiB file={:.0}MiB (check {checksum})",
        if a.source == SourceKind::Arrays {
            "arrays"
        } else {
            "vectors"
        },
        a.workers,
        if a.cache { "on" } else { "off" },
        batches as f64 / secs,
        mib(mem.peak_rss_kib),
        mib(mem.rss_anon_kib),
        mib(mem.rss_file_kib),
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
