//! Command-line flags of `shimmer` and what each subcommand calls.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Cargo features this binary was built with.
pub fn features() -> Vec<String> {
    let mut features = Vec::new();
    if cfg!(feature = "fused-kernels") {
        features.push("fused-kernels".to_string());
    }
    if cfg!(feature = "cuda") {
        features.push("cuda".to_string());
    }
    features
}

/// The build of this binary, as runs record it.
pub fn host_build() -> shimmer_train::provenance::HostBuild {
    shimmer_train::provenance::HostBuild {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("SHIMMER_GIT_COMMIT").to_string(),
        features: features(),
    }
}

/// `shimmer --version`: version, git commit, build features and the CPU
/// kernels this machine gets.
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let build = host_build();
        format!(
            "{} (commit {}; features: {}; CPU: {})",
            build.version,
            build.commit,
            if build.features.is_empty() {
                "none".to_string()
            } else {
                build.features.join(", ")
            },
            shimmer_nn::ops::Ops::describe_cpu()
        )
    })
}

/// Train and inspect Global Workspace models.
#[derive(Debug, Parser)]
#[command(name = "shimmer", version = version_text(), about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with domain plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Train an experiment: validate, log to TensorBoard, checkpoint, then
    /// validate and test the best checkpoint.
    Run(RunArgs),
    /// Check an experiment (config, plugins, data, model) without training.
    Validate(ValidateArgs),
    /// Print an experiment's resolved config with every default, as a run
    /// records it in its config.yaml (layers, overrides and `${...}` applied).
    Config(ValidateArgs),
    /// Print a shell completion script: `shimmer completions bash >
    /// ~/.local/share/bash-completion/completions/shimmer`.
    Completions(CompletionsArgs),
    /// Evaluate a run's checkpoint on its validation or test set.
    Test(EvalArgs),
    /// Write a run's predictions (workspace states, translations, ...) on a set.
    Predict(PredictArgs),
    /// Write a run's weights as one safetensors state dict that shimmer's
    /// `GlobalWorkspace2Domains` / `GlobalWorkspace` loads with
    /// `load_state_dict(strict=True)`: GW, domain modules, `loss_mod.*` aliases.
    Export(ExportArgs),
    /// Replay training steps on given batches from given weights (parity checks).
    Replay(ReplayArgs),
    /// Run an experiment's `sweep:` trials locally or as a Slurm job array;
    /// inspect, summarize or resume a sweep folder.
    Sweep(SweepArgs),
    /// Time training steps of an experiment on preloaded batches (steps/s,
    /// samples/s, peak memory); threads from `RAYON_NUM_THREADS`.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The run folder.
    run_dir: PathBuf,
    /// Which weights: `best`, `last`, or a checkpoint file (default: best,
    /// else last).
    #[arg(long)]
    checkpoint: Option<String>,
    /// Output file (default: `<run>/shimmer-state-dict.safetensors`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Export although a frozen domain model's checkpoint changed since the
    /// run was trained.
    #[arg(long)]
    allow_changed_checkpoints: bool,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Experiment YAML file.
    experiment: PathBuf,
    /// Settings that override the file, as `key.path=value`.
    overrides: Vec<String>,
    /// Timed optimiser steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Distinct training batches loaded before timing, cycled over.
    #[arg(long, default_value_t = 8)]
    preload: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn bench(a: BenchArgs) -> Result<()> {
    use anyhow::Context;
    let opts = crate::bench::BenchOptions {
        experiment: a.experiment,
        overrides: a.overrides,
        steps: a.steps,
        warmup: a.warmup,
        preload: a.preload,
    };
    let report = crate::bench::run(&opts)?;
    println!("{}", report.describe());
    println!("{}", report.to_json());
    if let Some(path) = &a.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Experiment YAML file.
    #[arg(required_unless_present = "resume")]
    experiment: Option<PathBuf>,
    /// Settings that override the file, as `key.path=value` (e.g. `optim.lr=3e-4`).
    overrides: Vec<String>,
    /// Exact run folder (default: `runs/<experiment>/<date>_<time>/`).
    #[arg(long, conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// Continue a run from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Run one training and one validation batch end to end.
    #[arg(long)]
    fast_dev_run: bool,
    /// Watch the run's plugin files; swap a rebuilt, compatible plugin in
    /// between steps (its cached latents are re-encoded first).
    #[arg(long)]
    watch: bool,
    /// With --resume: continue with another plugin for a domain, as
    /// DOMAIN=PLUGIN (name or library path; same latent size), recorded in
    /// the run's config.yaml (repeatable).
    #[arg(long = "set-plugin", value_name = "DOMAIN=PLUGIN", requires = "resume")]
    set_plugins: Vec<String>,
    /// With --resume: go on although a frozen domain model's checkpoint
    /// changed since the run started (the run's provenance.json records it).
    #[arg(long, requires = "resume")]
    allow_changed_checkpoints: bool,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// The run folder.
    run_dir: PathBuf,
    /// Weights to use (default: the run's best checkpoint, else its last).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Which set: `val` or `test`.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: shimmer_plugin_api::Split,
    /// Evaluate although a frozen domain model's checkpoint changed since
    /// the run was trained (the run's provenance.json records it).
    #[arg(long)]
    allow_changed_checkpoints: bool,
}

#[derive(Debug, Args)]
struct PredictArgs {
    #[command(flatten)]
    eval: EvalArgs,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

fn parse_split(s: &str) -> Result<shimmer_plugin_api::Split, String> {
    match s {
        "val" => Ok(shimmer_plugin_api::Split::Val),
        "test" => Ok(shimmer_plugin_api::Split::Test),
        other => Err(format!(
            "`{other}` is not a set to evaluate: use `val` or `test`"
        )),
    }
}

impl EvalArgs {
    fn options(self) -> shimmer_train::EvalOptions {
        shimmer_train::EvalOptions {
            run_dir: self.run_dir,
            checkpoint: self.checkpoint,
            split: self.split,
            allow_changed_checkpoints: self.allow_changed_checkpoints,
        }
    }
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Experiment YAML file.
    experiment: PathBuf,
    /// Settings that override the file, as `key.path=value`.
    overrides: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("sweep_action")
    .args(["experiment", "resume", "summary", "status", "run_trial"])))]
struct SweepArgs {
    /// Experiment YAML file with a `sweep:` section.
    experiment: Option<PathBuf>,
    /// Settings that override the file before the sweep is expanded, as
    /// `key.path=value` (also `sweep.samples=8`); every trial gets them.
    #[arg(requires = "experiment")]
    overrides: Vec<String>,
    /// Run the trials that did not finish in this sweep folder.
    #[arg(long, value_name = "SWEEP_DIR")]
    resume: Option<PathBuf>,
    /// Print the trials ranked by the monitored metric, and write summary.csv.
    #[arg(long, value_name = "SWEEP_DIR")]
    summary: Option<PathBuf>,
    /// Print each trial's state (from the run folders, squeue and sacct).
    #[arg(long, value_name = "SWEEP_DIR")]
    status: Option<PathBuf>,
    /// Run one trial of a sweep folder (what each Slurm array task does).
    #[arg(long, num_args = 2, value_names = ["SWEEP_DIR", "INDEX"], hide = true)]
    run_trial: Option<Vec<String>>,
    /// Exact sweep folder (default: `runs/<experiment>/sweep-<date>_<time>/`).
    #[arg(long, requires = "experiment")]
    sweep_dir: Option<PathBuf>,
    /// Where trials run (default: `sweep.launcher.kind`, else local).
    #[arg(long, value_enum)]
    launcher: Option<shimmer_sweep::LauncherKind>,
    /// Local launcher: trials at once (default: `sweep.launcher.jobs`, else 1).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print the trials, or the Slurm script, and run nothing.
    #[arg(long, requires = "experiment")]
    dry_run: bool,
    /// Slurm: `--partition` of each task.
    #[arg(long, help_heading = "Slurm")]
    partition: Option<String>,
    /// Slurm: `--time` limit of each task (`02:00:00`).
    #[arg(long, help_heading = "Slurm")]
    time: Option<String>,
    /// Slurm: `--cpus-per-task`.
    #[arg(long, help_heading = "Slurm")]
    cpus: Option<u32>,
    /// Slurm: `--gpus` per task.
    #[arg(long, help_heading = "Slurm")]
    gpus: Option<u32>,
    /// Slurm: `--mem` per task (`16G`).
    #[arg(long, help_heading = "Slurm")]
    mem: Option<String>,
    /// Slurm: at most N tasks at once (`--array=...%N`).
    #[arg(long, value_name = "N", help_heading = "Slurm")]
    max_parallel: Option<u32>,
    /// Slurm: another `#SBATCH` option, e.g. `--sbatch=--account=lab` (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", help_heading = "Slurm")]
    sbatch: Vec<String>,
}

impl SweepArgs {
    fn slurm(&self) -> shimmer_sweep::SlurmConfig {
        shimmer_sweep::SlurmConfig {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus: self.cpus,
            gpus: self.gpus,
            mem: self.mem.clone(),
            max_parallel: self.max_parallel,
            extra: self.sbatch.clone(),
            ..Default::default()
        }
    }
}

fn sweep(a: SweepArgs) -> Result<()> {
    use shimmer_sweep as sweep;
    if let Some(dir) = &a.summary {
        return sweep::summary(dir);
    }
    if let Some(dir) = &a.status {
        return sweep::status(dir);
    }
    if let Some(dir) = &a.resume {
        return sweep::resume(dir, a.launcher, a.jobs, &a.slurm());
    }
    if let Some([dir, index]) = a.run_trial.as_deref() {
        let index = index
            .parse()
            .map_err(|_| anyhow::anyhow!("trial index must be a number, got `{index}`"))?;
        return sweep::run_trial(std::path::Path::new(dir), index);
    }
    let Some(experiment) = a.experiment.clone() else {
        anyhow::bail!(
            "give an experiment file with a `sweep:` section, or a sweep folder \
             with --resume, --status or --summary (see `shimmer sweep --help`)"
        );
    };
    let opts = sweep::SweepOptions {
        experiment,
        overrides: a.overrides.clone(),
        sweep_dir: a.sweep_dir.clone(),
        launcher: a.launcher,
        jobs: a.jobs,
        slurm: a.slurm(),
        dry_run: a.dry_run,
    };
    sweep::start(&opts)
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Print a plugin's name, version, ABI and domains.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// Path of the plugin library, or its name (searched on SHIMMER_PLUGIN_PATH
    /// and beside this binary).
    plugin: String,
    /// Domain config handed to every domain kind, as JSON (without it,
    /// kinds that need one say what they need).
    #[arg(long)]
    config: Option<String>,
    /// Only this domain kind.
    #[arg(long)]
    kind: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Experiment YAML giving the model, losses and optimiser.
    experiment: PathBuf,
    /// Initial weights (safetensors, shimmer names).
    #[arg(long)]
    init: PathBuf,
    /// Batches of latents (safetensors, keys `step{k}/{group}/{domain}`).
    #[arg(long)]
    batches: PathBuf,
    /// Where to write one JSON line of metrics per step.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the weights after the last step.
    #[arg(long = "final")]
    final_weights: Option<PathBuf>,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Plugins(PluginsCommand::Inspect(a)) => shimmer_plugin_host::inspect::run(
            &a.plugin,
            a.config.as_deref(),
            a.kind.as_deref(),
            a.json,
        ),
        Command::Run(a) => {
            let (experiment, overrides) = match (&a.resume, a.experiment) {
                // `--resume RUN key=value ...`: the first setting lands in
                // the experiment slot; it is a setting too.
                (Some(_), Some(first)) => {
                    let mut all = vec![first.to_string_lossy().into_owned()];
                    all.extend(a.overrides);
                    (PathBuf::new(), all)
                }
                (_, experiment) => (experiment.unwrap_or_default(), a.overrides),
            };
            let opts = shimmer_train::RunOptions {
                experiment,
                overrides,
                run_dir: a.run_dir,
                resume: a.resume,
                fast_dev_run: a.fast_dev_run,
                watch: a.watch,
                set_plugins: a.set_plugins,
                allow_changed_checkpoints: a.allow_changed_checkpoints,
                stop: shimmer_train::stop::StopRequest::on_signals()?,
            };
            shimmer_train::run(&opts).map(|_| ())
        }
        Command::Config(a) => {
            let exp = shimmer_config::load(&a.experiment, &a.overrides)?;
            print!("{}", exp.resolved_yaml);
            Ok(())
        }
        Command::Export(a) => {
            let run = shimmer_train::RunDir::open(&a.run_dir)?;
            let checkpoint = a.checkpoint.as_deref().map(|c| match c {
                "best" => run.best_checkpoint(),
                "last" => run.last_checkpoint(),
                path => PathBuf::from(path),
            });
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| a.run_dir.join("shimmer-state-dict.safetensors"));
            let opts = shimmer_train::EvalOptions {
                run_dir: a.run_dir,
                checkpoint,
                split: shimmer_plugin_api::Split::Val,
                allow_changed_checkpoints: a.allow_changed_checkpoints,
            };
            let (n, from) = shimmer_train::export(&opts, &out)?;
            println!("{} ({n} tensors, from {})", out.display(), from.display());
            Ok(())
        }
        Command::Completions(a) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut command, "shimmer", &mut std::io::stdout());
            Ok(())
        }
        Command::Validate(a) => {
            let report = shimmer_train::validate(&a.experiment, &a.overrides)?;
            print!("{report}");
            Ok(())
        }
        Command::Test(a) => {
            for (name, value) in shimmer_train::test(&a.options())? {
                println!("{name:<48} {value:.6}");
            }
            Ok(())
        }
        Command::Predict(a) => {
            let out = a.out.clone();
            let rows = shimmer_train::predict(&a.eval.options(), &out)?;
            println!("{rows} rows written to {}", out.display());
            Ok(())
        }
        Command::Replay(a) => shimmer_nn::replay::run(&shimmer_nn::replay::ReplayOptions {
            experiment: a.experiment,
            init: a.init,
            batches: a.batches,
            out: a.out,
            final_weights: a.final_weights,
        }),
        Command::Sweep(a) => sweep(a),
        Command::Bench(a) => bench(a),
    }
}

/// An error and its causes as one paragraph: `what: because: because`.
pub fn one_paragraph(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
