//! Command-line flags of `shimmer` and what each subcommand calls.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Train and inspect Global Workspace models.
#[derive(Debug, Parser)]
#[command(name = "shimmer", version, about)]
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
    /// Replay training steps on given batches from given weights (parity checks).
    Replay(ReplayArgs),
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
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Experiment YAML file.
    experiment: PathBuf,
    /// Settings that override the file, as `key.path=value`.
    overrides: Vec<String>,
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
    /// Domain config handed to every domain kind, as JSON.
    #[arg(long, default_value = "{}")]
    config: String,
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
        Command::Plugins(PluginsCommand::Inspect(a)) => {
            shimmer_host::plugin::inspect::run(&a.plugin, &a.config, a.kind.as_deref(), a.json)
        }
        Command::Run(a) => {
            let opts = shimmer_host::train::RunOptions {
                experiment: a.experiment.unwrap_or_default(),
                overrides: a.overrides,
                run_dir: a.run_dir,
                resume: a.resume,
                fast_dev_run: a.fast_dev_run,
            };
            shimmer_host::train::run(&opts).map(|_| ())
        }
        Command::Validate(a) => {
            let report = shimmer_host::train::validate(&a.experiment, &a.overrides)?;
            print!("{report}");
            Ok(())
        }
        Command::Replay(a) => shimmer_host::replay::run(&shimmer_host::replay::ReplayOptions {
            experiment: a.experiment,
            init: a.init,
            batches: a.batches,
            out: a.out,
            final_weights: a.final_weights,
        }),
    }
}

/// An error and its causes as one paragraph: `what: because: because`.
pub fn one_paragraph(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
