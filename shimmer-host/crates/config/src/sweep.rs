//! The `sweep:` section of an experiment file: which keys vary, how, and
//! where the trials run.
//!
//! ```yaml
//! sweep:
//!   grid:                      # every combination, first key slowest
//!     optim.lr: [1.0e-3, 3.0e-4]
//!     workspace.dim: [8, 16]
//!   random:                    # drawn `samples` times per grid point, seeded
//!     optim.weight_decay: { uniform: [0.0, 0.1] }
//!     optim.betas.0: { loguniform: [0.8, 0.99] }
//!     workspace.encoders.hidden: { int: [16, 128] }
//!     workspace.activation: { choice: [tanh, relu] }
//!   samples: 2
//!   seed: 0
//!   launcher:
//!     kind: local              # or slurm
//!     jobs: 2                  # local: trials at once
//!     slurm: { partition: gpu, time: "02:00:00", cpus: 4, gpus: 1, mem: 16G, max_parallel: 8 }
//! ```
//!
//! Keys are written with dots (`optim.lr`) or nested (`optim: {lr: [...]}`);
//! both mean the same parameter, so a command-line override such as
//! `sweep.grid.optim.lr=[1e-2,1e-3]` replaces the file's list.

use crate::check::CheckError;
use anyhow::{Result, bail};
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_norway::Value;

/// The `sweep:` section as written; [`SweepConfig::space`] checks it and
/// turns it into the parameters to expand.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// `key.path: [values]`: every combination is a trial.
    #[serde(default)]
    pub grid: IndexMap<String, Value>,
    /// `key.path: {uniform|loguniform|int: [low, high]}` or
    /// `{choice: [values]}`: drawn independently for every trial.
    #[serde(default)]
    pub random: IndexMap<String, Value>,
    /// Random draws per grid point (ignored without `random`).
    #[serde(default = "one")]
    pub samples: usize,
    /// Seed of the random draws: the same seed gives the same trials.
    #[serde(default)]
    pub seed: u64,
    /// Where and how the trials run.
    #[serde(default)]
    pub launcher: LauncherConfig,
}

fn one() -> usize {
    1
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            grid: IndexMap::new(),
            random: IndexMap::new(),
            samples: 1,
            seed: 0,
            launcher: LauncherConfig::default(),
        }
    }
}

/// Which launcher runs the trials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LauncherKind {
    /// Child processes on this machine, `jobs` at a time.
    #[default]
    Local,
    /// One Slurm job array submitted with `sbatch`.
    Slurm,
}

/// Launcher settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherConfig {
    /// Local or Slurm.
    #[serde(default)]
    pub kind: LauncherKind,
    /// Local launcher: how many trials run at once.
    #[serde(default = "one")]
    pub jobs: usize,
    /// Slurm launcher: resources of each array task.
    #[serde(default)]
    pub slurm: SlurmConfig,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        Self {
            kind: LauncherKind::Local,
            jobs: 1,
            slurm: SlurmConfig::default(),
        }
    }
}

/// Resources of each Slurm array task (one trial), as `#SBATCH` lines.
/// Unset fields are left to the cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--time` (`"02:00:00"`, `"1-00:00:00"`, or minutes).
    #[serde(default, deserialize_with = "text")]
    pub time: Option<String>,
    /// `--cpus-per-task`.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// `--gpus` per task.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// `--mem` (`16G`, or megabytes).
    #[serde(default, deserialize_with = "text")]
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=...%max_parallel`).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// `--job-name`; defaults to `shimmer-<experiment name>`.
    #[serde(default)]
    pub job_name: Option<String>,
    /// More `#SBATCH` options, e.g. `--account=lab` or `--qos=short`
    /// (a leading `#SBATCH` is optional).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Shell lines run before the trial, e.g. `module load cuda`.
    #[serde(default)]
    pub setup: Vec<String>,
}

impl SlurmConfig {
    /// Checks every field against Slurm's own syntax (so none can end its
    /// `#SBATCH` line early and slip a shell line into the job script, or
    /// make `sbatch` ignore the directives after it), each failure naming
    /// `sweep.launcher.slurm.<field>`. `setup` lines are shell by design.
    pub fn check(&self) -> Result<(), CheckError> {
        let fail = |field: &str, v: &str, want: &str| {
            let v = shimmer_formats::excerpt(v);
            let key = format!("sweep.launcher.slurm.{field}");
            Err(CheckError::new(key, format!("`{v}` is not {want}")))
        };
        type Valid = fn(&str) -> Result<(), &'static str>;
        let fields: [(&str, &Option<String>, Valid); 4] = [
            ("partition", &self.partition, slurm_names),
            ("time", &self.time, slurm_time),
            ("mem", &self.mem, slurm_mem),
            ("job_name", &self.job_name, slurm_word),
        ];
        for (field, value, valid) in fields {
            if let Some((v, Err(want))) = value.as_deref().map(|v| (v, valid(v))) {
                return fail(field, v, want);
            }
        }
        for (field, v) in [("cpus", self.cpus), ("max_parallel", self.max_parallel)] {
            if v == Some(0) {
                return fail(field, "0", "a count of at least 1");
            }
        }
        for (i, extra) in self.extra.iter().enumerate() {
            let option = extra.trim();
            let option = option.strip_prefix("#SBATCH").unwrap_or(option).trim();
            let (name, value) = option
                .split_once(['=', ' '])
                .map_or((option, None), |(n, v)| (n, Some(v.trim())));
            let valid = match (name, value) {
                ("--partition" | "-p" | "--account" | "-A" | "--qos" | "-q", Some(v)) => {
                    slurm_names(v)
                }
                ("--time" | "-t", Some(v)) => slurm_time(v),
                ("--mem" | "--mem-per-cpu" | "--mem-per-gpu", Some(v)) => slurm_mem(v),
                _ if name.starts_with('-') && !option.chars().any(char::is_control) => Ok(()),
                _ => Err("an sbatch option on one line (`--account=lab`, `--qos=short`)"),
            };
            if let Err(want) = valid {
                return fail(&format!("extra.{i}"), extra, want);
            }
        }
        Ok(())
    }
}

/// `Ok` when `ok`, else what was expected.
fn want(ok: bool, expected: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(expected) }
}

/// Names (partitions, accounts, QOS) joined by `,`.
fn slurm_names(v: &str) -> Result<(), &'static str> {
    let name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    want(
        v.split(',').all(name),
        "a Slurm name (letters, digits, `_-.`; several joined by `,`)",
    )
}

/// `[days-]hours:minutes:seconds` and its shorter forms, or no limit.
fn slurm_time(v: &str) -> Result<(), &'static str> {
    let number = |s: &str| (1..=9).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = v.split_once('-').map_or((None, v), |(d, r)| (Some(d), r));
    let parts = rest.split(':').count() <= 3 && rest.split(':').all(number);
    want(
        matches!(v, "UNLIMITED" | "INFINITE") || (days.is_none_or(number) && parts),
        "a Slurm time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, \
         days-hours:minutes or days-hours:minutes:seconds",
    )
}

/// A whole number of megabytes, or of the unit its suffix names.
fn slurm_mem(v: &str) -> Result<(), &'static str> {
    let digits = v.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(v);
    let ok = (1..=12).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    want(
        ok,
        "a Slurm memory size: a whole number, then K, M, G or T (`16G`)",
    )
}

/// One word of safe characters (a job name).
fn slurm_word(v: &str) -> Result<(), &'static str> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+@:=/,".contains(c));
    want(ok, "a Slurm job name (letters, digits, `_-.+@:=/,`)")
}

/// Accepts a string or a number as text (`time: 60`, `mem: 16G`).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        F(f64),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::S(s) => s,
        Text::I(i) => i.to_string(),
        Text::F(f) => f.to_string(),
    }))
}

/// How a random parameter is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform in `[low, high)`.
    Uniform(f64, f64),
    /// Log-uniform in `[low, high)`, both > 0.
    LogUniform(f64, f64),
    /// Uniform integer in `[low, high]`.
    Int(i64, i64),
    /// One of the values, each equally likely.
    Choice(Vec<Value>),
}

/// The checked parameters of a sweep, keys flattened to dotted paths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Space {
    /// Grid parameters with their values, in order (first varies slowest).
    pub grid: Vec<(String, Vec<Value>)>,
    /// Random parameters, in order.
    pub random: Vec<(String, Distribution)>,
    /// Random draws per grid point.
    pub samples: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl SweepConfig {
    /// The checks of [`crate::Experiment::check`]: keys no deeper than a
    /// YAML document may nest (refused before a trial is built from them),
    /// and the Slurm fields ([`SlurmConfig::check`]); errors name the key.
    pub fn check(&self) -> Result<(), CheckError> {
        for (section, keys) in [("grid", &self.grid), ("random", &self.random)] {
            for key in keys.keys() {
                crate::yaml::check_key_depth(key)
                    .map_err(|m| CheckError::new(format!("sweep.{section}"), m))?;
            }
        }
        self.launcher.slurm.check()
    }

    /// Checks the parameters and flattens nested keys; errors name the key
    /// (`sweep.random.optim.lr`) and say what was expected.
    pub fn space(&self) -> Result<Space> {
        let mut grid: IndexMap<String, Vec<Value>> = IndexMap::new();
        for (key, value) in &self.grid {
            flatten_grid(key, value, &mut grid)?;
        }
        let mut random: IndexMap<String, Distribution> = IndexMap::new();
        for (key, value) in &self.random {
            flatten_random(key, value, &mut random)?;
        }
        if let Some(key) = grid.keys().find(|k| random.contains_key(*k)) {
            bail!("`{key}` is both in `sweep.grid` and `sweep.random`: keep one");
        }
        if self.samples == 0 {
            bail!("`sweep.samples` must be at least 1");
        }
        if grid.is_empty() && random.is_empty() {
            bail!(
                "the `sweep` section has no parameters: add `grid:` lists \
                 (`optim.lr: [1.0e-3, 3.0e-4]`) or `random:` ranges \
                 (`optim.lr: {{loguniform: [1.0e-4, 1.0e-2]}}`)"
            );
        }
        Ok(Space {
            grid: grid.into_iter().collect(),
            random: random.into_iter().collect(),
            samples: if self.random.is_empty() {
                1
            } else {
                self.samples
            },
            seed: self.seed,
        })
    }
}

fn key_text(key: &Value) -> Result<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => bail!("a sweep key must be a string, got {other:?}"),
    }
}

fn flatten_grid(key: &str, value: &Value, out: &mut IndexMap<String, Vec<Value>>) -> Result<()> {
    match value {
        Value::Sequence(values) if values.is_empty() => {
            bail!("`sweep.grid.{key}` is an empty list: give at least one value")
        }
        Value::Sequence(values) => {
            crate::yaml::check_key_depth(key).map_err(anyhow::Error::msg)?;
            out.shift_remove(key);
            out.insert(key.to_string(), values.clone());
            Ok(())
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                flatten_grid(&format!("{key}.{}", key_text(k)?), v, out)?;
            }
            Ok(())
        }
        other => bail!(
            "`sweep.grid.{key}` must be a list of values (`[1.0e-3, 3.0e-4]`), got `{}`",
            flow(other)
        ),
    }
}

const DISTRIBUTIONS: [&str; 4] = ["uniform", "loguniform", "int", "choice"];

fn flatten_random(
    key: &str,
    value: &Value,
    out: &mut IndexMap<String, Distribution>,
) -> Result<()> {
    let Value::Mapping(map) = value else {
        bail!(
            "`sweep.random.{key}` must be one of {{uniform: [low, high]}}, \
             {{loguniform: [low, high]}}, {{int: [low, high]}}, {{choice: [values]}}; got `{}`",
            flow(value)
        );
    };
    let single = map.len() == 1;
    let kind = map.keys().next().and_then(Value::as_str).unwrap_or("");
    if !(single && DISTRIBUTIONS.contains(&kind)) {
        // A nested key: `optim: {lr: {loguniform: [...]}}`.
        for (k, v) in map {
            let k = key_text(k)?;
            if DISTRIBUTIONS.contains(&k.as_str()) {
                bail!(
                    "`sweep.random.{key}` mixes a distribution `{k}` with other keys: \
                     write exactly one of {}",
                    DISTRIBUTIONS.join(", ")
                );
            }
            flatten_random(&format!("{key}.{k}"), v, out)?;
        }
        return Ok(());
    }
    let (_, args) = map.iter().next().expect("one entry");
    let name = format!("sweep.random.{key}.{kind}");
    let dist = match kind {
        "choice" => match args {
            Value::Sequence(v) if !v.is_empty() => Distribution::Choice(v.clone()),
            _ => bail!("`{name}` must be a non-empty list of values"),
        },
        "int" => {
            let (lo, hi) = pair(&name, args, |v| v.as_i64())?;
            if lo > hi {
                bail!("`{name}`: low {lo} is above high {hi}");
            }
            Distribution::Int(lo, hi)
        }
        _ => {
            let (lo, hi) = pair(&name, args, |v| v.as_f64())?;
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                bail!("`{name}`: need finite low <= high, got [{lo}, {hi}]");
            }
            if kind == "loguniform" {
                if lo <= 0.0 {
                    bail!("`{name}`: low must be > 0 for a log-uniform draw, got {lo}");
                }
                Distribution::LogUniform(lo, hi)
            } else {
                Distribution::Uniform(lo, hi)
            }
        }
    };
    crate::yaml::check_key_depth(key).map_err(anyhow::Error::msg)?;
    out.shift_remove(key);
    out.insert(key.to_string(), dist);
    Ok(())
}

fn pair<T>(name: &str, args: &Value, get: impl Fn(&Value) -> Option<T>) -> Result<(T, T)> {
    if let Value::Sequence(v) = args
        && let [a, b] = v.as_slice()
        && let (Some(a), Some(b)) = (get(a), get(b))
    {
        return Ok((a, b));
    }
    bail!(
        "`{name}` must be `[low, high]` (two numbers), got `{}`",
        flow(args)
    )
}

/// A value as one line of YAML flow syntax, the form a `key.path=value`
/// override takes: `0.001`, `relu`, `'true'`, `[8, 16]`, `{dim: 8}`.
pub fn flow(value: &Value) -> String {
    match value {
        Value::Sequence(items) => {
            format!(
                "[{}]",
                items.iter().map(flow).collect::<Vec<_>>().join(", ")
            )
        }
        Value::Mapping(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => flow(&t.value),
        Value::Number(n) => match n.as_f64() {
            // Keep floats recognisable as floats (`1.0`, not `1`).
            Some(f) if n.is_f64() && f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
                format!("{f:.1}")
            }
            _ => n.to_string(),
        },
        scalar => serde_norway::to_string(scalar)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(yaml: &str) -> SweepConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn nested_and_dotted_keys_flatten_alike_and_later_wins() {
        let s = sweep(
            "grid:\n  optim.lr: [1, 2]\n  optim: {lr: [3], weight_decay: [0.0]}\n\
             random:\n  workspace: {dim: {int: [4, 8]}}\nsamples: 3\n",
        )
        .space()
        .unwrap();
        let keys: Vec<_> = s.grid.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(keys, [("optim.lr", 1), ("optim.weight_decay", 1)]);
        assert_eq!(
            s.random,
            [("workspace.dim".to_string(), Distribution::Int(4, 8))]
        );
        assert_eq!(s.samples, 3);
    }

    #[test]
    fn bad_sections_name_the_key() {
        for (yaml, needle) in [
            ("grid: {optim.lr: 0.1}", "sweep.grid.optim.lr"),
            ("grid: {optim.lr: []}", "empty list"),
            ("random: {optim.lr: {loguniform: [0.0, 1.0]}}", "> 0"),
            ("random: {optim.lr: {uniform: [1.0]}}", "[low, high]"),
            ("random: {x: {int: [3, 1]}}", "above"),
            ("grid: {x: [1]}\nrandom: {x: {int: [1, 2]}}", "both"),
            ("samples: 2", "no parameters"),
        ] {
            let err = format!("{:#}", sweep(yaml).space().unwrap_err());
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_norway::from_str::<SweepConfig>("gird: {}").is_err());
        assert!(serde_norway::from_str::<SweepConfig>("launcher: {slurm: {gpu: 1}}").is_err());
    }

    #[test]
    fn flow_values_read_back_as_yaml() {
        let v: Value =
            serde_norway::from_str("[1.0, 'true', '8', relu, {dim: 8}, 3e-4, 'a: b']").unwrap();
        assert_eq!(
            flow(&v),
            "[1.0, 'true', '8', relu, {dim: 8}, 0.0003, 'a: b']"
        );
    }
}
