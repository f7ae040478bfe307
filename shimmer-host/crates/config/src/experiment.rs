//! Experiment configuration: the typed form of an experiment YAML file.
//!
//! Every section rejects unknown keys, so a typo is an error rather than a
//! silently ignored setting. Loading reports the file, line and column of a
//! bad key or value.
//!
//! ```yaml
//! name: p1
//! seed: 0
//! domains:
//!   a: { latent_dim: 8 }
//!   b: { latent_dim: 16 }
//! workspace:
//!   flavour: two_domains
//!   dim: 16
//!   encoders: { hidden: 32, n_layers: 1 }
//!   decoders: { hidden: 32, n_layers: 1 }
//! loss:
//!   coefs: { demi_cycles: 1.0, cycles: 1.0, translations: 1.0, contrastives: 0.05 }
//! optim:
//!   lr: 1.0e-3
//!   weight_decay: 0.01
//!   scheduler: { type: one_cycle, max_lr: 1.0e-3, total_steps: 20 }
//! ```

pub use crate::check::CheckError;
use anyhow::Context;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use shimmer_plugin_api::LossSegment;
use std::collections::HashSet;
use std::path::PathBuf;

/// A whole experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment name; runs land in `runs/<name>/`.
    pub name: String,
    /// Seed of every random draw (weights, selection, data order).
    #[serde(default)]
    pub seed: u64,
    /// Training device: `auto`, `cpu` or `cuda:N`.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Arithmetic of the GW's matrix products: `f32`, or `bf16` mixed
    /// precision (CUDA only).
    #[serde(default)]
    pub precision: Precision,
    /// Where to look for plugins.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The domains, in model order (the order shimmer's `domain_mods` has).
    pub domains: IndexMap<String, DomainConfig>,
    /// The Global Workspace itself (not needed by a `pretrain` experiment).
    #[serde(default)]
    pub workspace: Option<WorkspaceConfig>,
    /// Makes the experiment pretrain one domain's model instead of a GW.
    #[serde(default)]
    pub pretrain: Option<PretrainConfig>,
    /// Loss coefficients.
    #[serde(default)]
    pub loss: LossConfig,
    /// Optimiser and learning-rate schedule.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Training length, logging, validation and checkpoints.
    #[serde(default)]
    pub training: crate::training::TrainingConfig,
    /// Groups, batches, loader threads and latent cache.
    #[serde(default)]
    pub data: crate::data::DataConfig,
    /// Keys to vary across the trials of `shimmer sweep`; ignored by `shimmer run`.
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepConfig>,
    /// Free values of the experiment's own, read only through `${vars.x}`
    /// interpolation: a knob written once and used in several places, set
    /// from the command line (`vars.paired=0.01`) or swept.
    #[serde(default, deserialize_with = "finite_vars")]
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, serde_json::Value>,
}

/// Where an experiment trains, as written in its YAML: `auto` (the first
/// GPU when there is one, else the CPU), `cpu`, or `cuda:N` (`cuda` is
/// `cuda:0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU if the binary and machine have one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA device of this ordinal.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let unknown = || format!("unknown device `{s}`; allowed: auto, cpu, cuda, cuda:N");
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                n.parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("bad GPU index in device `{s}`: expected cuda:N, N >= 0"))
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Arithmetic of the GW's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// Mixed precision, as PyTorch's `autocast(dtype=torch.bfloat16)` does
    /// for linear layers: the inputs of every matrix product (encoder,
    /// decoder, selection and contrastive logits) are rounded to bfloat16
    /// and the products run on the GPU's tensor cores; weights, optimiser
    /// state, activations, losses and gradients stay `f32`. CUDA only.
    Bf16,
}

impl Precision {
    /// `f32` or `bf16`, as written in the YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl Experiment {
    /// Cross-field checks serde cannot express, each failure naming the key
    /// at fault (so [`crate::load`] can point at its file and line).
    ///
    /// # Errors
    /// The first [`CheckError`] found.
    pub fn check(&self) -> Result<(), CheckError> {
        check_name(&self.name)?;
        if self.domains.is_empty() {
            return Err(CheckError::new(
                "domains",
                "`domains` is empty: a workspace needs at least one domain",
            ));
        }
        for (name, d) in &self.domains {
            if d.plugin.is_none() && d.latent_dim.is_none() {
                return Err(CheckError::new(
                    format!("domains.{name}"),
                    format!(
                        "domain `{name}` has neither `plugin` nor `latent_dim`: \
                         say which plugin provides its data, or give its latent size"
                    ),
                ));
            }
        }
        self.loss.check()?;
        self.training.check()?;
        if let Some(sweep) = &self.sweep {
            sweep.check()?;
        }
        self.check_loss_terms()?;
        match &self.pretrain {
            None => {
                if self.workspace.is_none() {
                    return Err(CheckError::new("workspace", NO_WORKSPACE));
                }
            }
            Some(p) => {
                let Some(d) = self.domains.get(&p.domain) else {
                    return Err(CheckError::new(
                        "pretrain.domain",
                        format!(
                            "`pretrain.domain` is `{}`, which is not among the domains ({})",
                            p.domain,
                            self.domains.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                if d.model.arch == crate::domain_model::DomainModelConfig::Identity {
                    return Err(CheckError::new(
                        "pretrain.domain",
                        format!(
                            "domain `{}` has no model to pretrain: set `domains.{}.model` \
                             (e.g. `{{ type: linear, latent_dim: 32 }}`)",
                            p.domain, p.domain
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses coefficients under which a training batch would have no loss
    /// term (what a run stops on at its first step): with `data.mode:
    /// sequential` each group is a batch, otherwise a batch holds them all.
    /// Which families a group has is shimmer's: see `LossFamily`.
    fn check_loss_terms(&self) -> Result<(), CheckError> {
        use LossFamily::*;
        let (Some(ws), None) = (&self.workspace, &self.pretrain) else {
            return Ok(());
        };
        let on: Vec<&str> = (self.loss.coefs.iter())
            .filter(|(_, c)| **c > 0.0)
            .map(|(f, _)| f.name())
            .collect();
        let terms = |domains: &[String]| {
            let n = domains.iter().collect::<HashSet<_>>().len();
            let fusion = ws.flavour == Flavour::Fusion;
            let mut t = vec![];
            t.extend((n == 1 || fusion).then_some(DemiCycles));
            t.extend(((n == 1 || fusion) && self.domains.len() > 1).then_some(Cycles));
            t.extend((n >= 2).then_some(Translations));
            t.extend((n == 2).then_some(Contrastives));
            t.extend((n >= 2 && fusion).then_some(Fused));
            t
        };
        let groups = &self.data.groups;
        let batches: Vec<(String, Vec<LossFamily>)> = match self.data.mode {
            crate::CombineMode::Sequential => (groups.iter().enumerate())
                .map(|(i, g)| (format!("training group {i}"), terms(&g.domains)))
                .collect(),
            _ if groups.is_empty() => vec![],
            _ => vec![(
                "the training groups".to_string(),
                groups.iter().flat_map(|g| terms(&g.domains)).collect(),
            )],
        };
        for (what, mut families) in batches {
            if families.iter().any(|f| on.contains(&f.name())) {
                continue;
            }
            families.sort();
            families.dedup();
            let names: Vec<_> = families.iter().map(|f| f.name()).collect();
            return Err(CheckError::new(
                "loss.coefs",
                format!(
                    "no loss term applies to {what}: it has {} and their coefficients are 0 \
                     (coefficients > 0: {}); a run would stop at its first step",
                    names.join(", "),
                    on.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The workspace section, required unless the experiment pretrains a domain.
    ///
    /// # Errors
    /// When the section is missing (a checked GW experiment always has it).
    pub fn workspace(&self) -> anyhow::Result<&WorkspaceConfig> {
        self.workspace.as_ref().context(NO_WORKSPACE)
    }
}

/// An experiment's name is a path under `runs_dir`: plain relative parts
/// only, so a run never lands outside it.
fn check_name(name: &str) -> Result<(), CheckError> {
    let bad = |why: &str| {
        Err(CheckError::new(
            "name",
            format!("`name` is `{name}`: {why} (runs go to `<runs_dir>/<name>/`)"),
        ))
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return bad("it is an absolute path");
    }
    for part in name.split('/') {
        match part {
            "" => return bad("it has an empty part (`//` or a trailing `/`)"),
            "." | ".." => return bad("it has a `.` or `..` part"),
            p if p.contains('\\') || p.chars().any(char::is_control) => {
                return bad("it has a backslash or a control character");
            }
            _ => {}
        }
    }
    Ok(())
}

const NO_WORKSPACE: &str =
    "the experiment has no `workspace` section (only a `pretrain` experiment may omit it)";

/// A domain-pretraining experiment: trains `domains.<domain>.model` on its
/// plugin's data, as shimmer's tutorial does before building the GW, and
/// saves the best weights where GW experiments load them from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The domain whose model is trained.
    pub domain: String,
    /// Where the best weights are written (relative to the working folder),
    /// for `domains.<domain>.model.checkpoint` of GW experiments.
    pub save_to: PathBuf,
}

/// Where plugin libraries are searched for, before `SHIMMER_PLUGIN_PATH` and
/// the folder of the `shimmer` binary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folders searched first, in order.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

/// One domain of the workspace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Plugin providing the domain's data: a name or a path to the library.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Domain kind inside the plugin; defaults to the plugin's only kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The plugin's own settings for this domain, handed over as JSON.
    #[serde(default = "empty_object", deserialize_with = "finite_json")]
    pub config: serde_json::Value,
    /// Size of the latent vector the GW sees. Required without a plugin
    /// (latents given directly, as in `shimmer replay`); checked otherwise.
    #[serde(default)]
    pub latent_dim: Option<usize>,
    /// Replaces the plugin's loss spec for this domain.
    #[serde(default)]
    pub loss: Option<Vec<LossSegment>>,
    /// The domain model between the plugin's latents and the GW (default:
    /// identity).
    #[serde(default)]
    pub model: crate::domain_model::DomainModelSpec,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A YAML value read as JSON, a non-finite number refused at its key: JSON
/// has none, and `serde_json` would quietly make it `null` (a plugin's
/// `shift: .nan` would reach it as no setting at all).
struct FiniteJson(serde_json::Value);

fn finite_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    Ok(FiniteJson::deserialize(d)?.0)
}

type Vars = IndexMap<String, serde_json::Value>;

fn finite_vars<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vars, D::Error> {
    let vars = IndexMap::<String, FiniteJson>::deserialize(d)?;
    Ok(vars.into_iter().map(|(k, v)| (k, v.0)).collect())
}

impl<'de> Deserialize<'de> for FiniteJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FiniteJsonVisitor).map(FiniteJson)
    }
}

struct FiniteJsonVisitor;

impl<'de> serde::de::Visitor<'de> for FiniteJsonVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let why = "settings handed to a plugin are JSON, which has no NaN or infinity";
        let number = serde_json::Number::from_f64(v);
        number
            .map(Into::into)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number: {why}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(FiniteJson(v)) = a.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut map = serde_json::Map::new();
        while let Some((k, FiniteJson(v))) = a.next_entry::<String, FiniteJson>()? {
            map.insert(k, v);
        }
        Ok(serde_json::Value::Object(map))
    }
}

/// Which GW class and loss family to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// shimmer's `GlobalWorkspace2Domains`: SingleDomain selection and
    /// `GWLosses2Domains` (demi-cycles, cycles, translations, contrastives).
    TwoDomains,
    /// shimmer's `GlobalWorkspaceFusion`: any selection and the broadcast loss
    /// of `GWLosses`.
    Fusion,
}

/// Hidden size and depth of the per-domain GW encoders or decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Number of extra `Linear(h, h) ReLU` pairs.
    #[serde(default = "one")]
    pub n_layers: usize,
}

fn one() -> usize {
    1
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: 32,
            n_layers: 1,
        }
    }
}

/// How domain scores are computed before fusion.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelectionConfig {
    /// One domain per item, drawn uniformly (scores 0/1).
    SingleDomain,
    /// Every domain gets `1/n`.
    FixedShared,
    /// `softmax(U(0,1) / temperature)` over the group's domains.
    Random {
        /// Softmax temperature.
        #[serde(default = "default_temperature")]
        temperature: f64,
    },
    /// Key/query attention with a fixed learned-free initial query (one pass).
    KqFixedQ {
        /// Size of keys and queries.
        head_size: usize,
    },
    /// Key/query attention refined `n_steps` times from the fused state.
    DynamicQuery {
        /// Size of keys and queries.
        head_size: usize,
        /// Refinement steps.
        #[serde(default = "one")]
        n_steps: usize,
    },
}

fn default_temperature() -> f64 {
    0.2
}

/// Activation applied to the score-weighted sum of encodings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// shimmer's default.
    #[default]
    Tanh,
    /// No activation.
    Identity,
    /// Logistic sigmoid.
    Sigmoid,
    /// Rectified linear unit.
    Relu,
}

/// CLIP-style contrastive loss settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Initial logit scale (log of the inverse temperature).
    #[serde(default = "default_logit_scale")]
    pub logit_scale: f64,
    /// Whether the logit scale is trained.
    #[serde(default)]
    pub learn: bool,
}

/// `log(1 / 0.07)`, CLIP's and shimmer's initial logit scale.
pub fn default_logit_scale() -> f64 {
    (1.0f64 / 0.07).ln()
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            logit_scale: default_logit_scale(),
            learn: false,
        }
    }
}

/// The Global Workspace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Which GW class and loss family.
    pub flavour: Flavour,
    /// Workspace size.
    pub dim: usize,
    /// GW encoders (domain latent -> workspace).
    #[serde(default)]
    pub encoders: MlpConfig,
    /// GW decoders (workspace -> domain latent).
    #[serde(default)]
    pub decoders: MlpConfig,
    /// Selection module; defaults to `single_domain` for `two_domains` and
    /// `random` (temperature 0.2) for `fusion`, as shimmer does.
    #[serde(default)]
    pub selection: Option<SelectionConfig>,
    /// Fusion activation.
    #[serde(default)]
    pub activation: Activation,
    /// Contrastive loss.
    #[serde(default)]
    pub contrastive: ContrastiveConfig,
    /// Weights a new run starts from (a warm start, with its own optimiser
    /// and schedule; not a resume): this project's checkpoint or export, a
    /// shimmer state dict or Lightning checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
}

impl WorkspaceConfig {
    /// The selection actually used (explicit, or the flavour's default).
    pub fn selection(&self) -> SelectionConfig {
        self.selection.unwrap_or(match self.flavour {
            Flavour::TwoDomains => SelectionConfig::SingleDomain,
            Flavour::Fusion => SelectionConfig::Random {
                temperature: default_temperature(),
            },
        })
    }
}

/// A family of GW losses, as `loss.coefs` names it (shimmer's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossFamily {
    /// Encode then decode each domain alone.
    DemiCycles,
    /// Translate to another domain and back.
    Cycles,
    /// Translate between paired domains.
    Translations,
    /// CLIP-style contrastive loss between paired domains' states.
    Contrastives,
    /// The fusion flavour's broadcast loss.
    Fused,
}

impl LossFamily {
    /// Every family, in shimmer's order.
    pub const ALL: [LossFamily; 5] = [
        LossFamily::DemiCycles,
        LossFamily::Cycles,
        LossFamily::Translations,
        LossFamily::Contrastives,
        LossFamily::Fused,
    ];

    /// Its name in `loss.coefs` and in the metrics (`demi_cycles`, ...).
    pub fn name(self) -> &'static str {
        match self {
            LossFamily::DemiCycles => "demi_cycles",
            LossFamily::Cycles => "cycles",
            LossFamily::Translations => "translations",
            LossFamily::Contrastives => "contrastives",
            LossFamily::Fused => "fused",
        }
    }
}

impl std::fmt::Display for LossFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loss coefficients (shimmer's `loss_coefs`), in the order given.
///
/// A family left out keeps its default, as every other setting does:
/// `demi_cycles`, `cycles`, `translations` and `contrastives` are 1 (after
/// the ones given, in that order), `fused` is off; so
/// `loss.coefs.contrastives=0.05` changes that coefficient alone, and 0
/// turns a loss off. `shimmer config` prints every coefficient used.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Coefficient per loss family; the total loss is the **mean** of
    /// `coef * metric` over families with `coef > 0`, as shimmer computes it.
    #[serde(default = "default_coefs", deserialize_with = "coefs_over_defaults")]
    pub coefs: IndexMap<LossFamily, f64>,
}

fn default_coefs() -> IndexMap<LossFamily, f64> {
    LossFamily::ALL[..4].iter().map(|&f| (f, 1.0)).collect()
}

fn coefs_over_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<LossFamily, f64>, D::Error> {
    let mut coefs = IndexMap::<LossFamily, f64>::deserialize(d)?;
    for (family, coef) in default_coefs() {
        coefs.entry(family).or_insert(coef);
    }
    Ok(coefs)
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            coefs: default_coefs(),
        }
    }
}

impl LossConfig {
    fn check(&self) -> Result<(), CheckError> {
        for (family, coef) in &self.coefs {
            if !coef.is_finite() || *coef < 0.0 {
                let key = format!("loss.coefs.{family}");
                let message =
                    format!("loss coefficient `{key}` must be a finite number >= 0, got {coef}");
                return Err(CheckError::new(key, message));
            }
        }
        Ok(())
    }
}

/// AdamW (PyTorch semantics) and its learning-rate schedule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Base learning rate (the peak for `one_cycle` unless `max_lr` is set).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Decoupled weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// `(beta1, beta2)`; beta1 is cycled by `one_cycle`.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Denominator epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Learning-rate schedule, stepped after every optimiser step.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            weight_decay: default_weight_decay(),
            betas: default_betas(),
            eps: default_eps(),
            scheduler: SchedulerConfig::default(),
        }
    }
}

/// Learning-rate schedules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulerConfig {
    /// Constant learning rate `optim.lr`.
    #[default]
    None,
    /// PyTorch's `OneCycleLR` with its defaults (beta1 cycled too).
    OneCycle {
        /// Peak learning rate; defaults to `optim.lr`.
        #[serde(default)]
        max_lr: Option<f64>,
        /// Length of the schedule; defaults to the training length.
        #[serde(default)]
        total_steps: Option<usize>,
        /// Fraction of steps spent increasing the learning rate.
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        /// `initial_lr = max_lr / div_factor`.
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        /// `min_lr = initial_lr / final_div_factor`.
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        /// Whether beta1 is cycled inversely to the learning rate.
        #[serde(default = "yes")]
        cycle_momentum: bool,
        /// Lowest beta1 (at peak learning rate).
        #[serde(default = "default_base_momentum")]
        base_momentum: f64,
        /// Highest beta1 (at the ends).
        #[serde(default = "default_max_momentum")]
        max_momentum: f64,
    },
    /// Linear warm-up, then cosine decay from `optim.lr` to `min_lr`.
    Cosine {
        /// Length of the schedule; defaults to the training length.
        #[serde(default)]
        total_steps: Option<usize>,
        /// Steps of linear warm-up from 0.
        #[serde(default)]
        warmup_steps: usize,
        /// Final learning rate.
        #[serde(default)]
        min_lr: f64,
    },
}

impl SchedulerConfig {
    /// Whether the schedule's length is the training length (a schedule
    /// without `total_steps`): changing the length then reshapes it.
    pub fn total_steps_from_length(&self) -> bool {
        match self {
            SchedulerConfig::None => false,
            SchedulerConfig::OneCycle { total_steps, .. }
            | SchedulerConfig::Cosine { total_steps, .. } => total_steps.is_none(),
        }
    }
}

fn default_pct_start() -> f64 {
    0.3
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}
fn yes() -> bool {
    true
}
fn default_base_momentum() -> f64 {
    0.85
}
fn default_max_momentum() -> f64 {
    0.95
}

/// A minimal valid experiment (the parity case P1's shape), for tests.
#[cfg(test)]
pub(crate) const P1_TEST_YAML: &str = r#"
name: p1
domains:
  a: { latent_dim: 8 }
  b: { latent_dim: 16 }
workspace:
  flavour: two_domains
  dim: 16
loss:
  coefs: { demi_cycles: 1, cycles: 1.0, translations: 1.0, contrastives: 0.05 }
optim:
  scheduler: { type: one_cycle, total_steps: 20 }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const P1: &str = P1_TEST_YAML;

    #[test]
    fn parses_with_defaults_and_integer_coefficients() {
        let exp = crate::parse(P1, Path::new("p1.yaml")).unwrap();
        assert_eq!(exp.domains.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(exp.loss.coefs[&LossFamily::DemiCycles], 1.0);
        assert_eq!(
            exp.workspace().unwrap().selection(),
            SelectionConfig::SingleDomain
        );
        assert!(matches!(
            exp.optim.scheduler,
            SchedulerConfig::OneCycle {
                total_steps: Some(20),
                pct_start,
                ..
            } if pct_start == 0.3
        ));
    }

    #[test]
    fn devices_are_typed_and_bad_ones_point_at_their_line() {
        for (text, want) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), want);
            assert_eq!(want.to_string().parse::<DeviceSpec>().unwrap(), want);
        }
        let bad = format!("device: tpu\n{P1}");
        let err = crate::parse(&bad, Path::new("p1.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p1.yaml:1:"), "{err}");
        assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
        let bad = format!("device: cuda:x\n{P1}");
        let err = crate::parse(&bad, Path::new("p1.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad GPU index"), "{err}");
    }

    #[test]
    fn a_failed_check_points_at_the_key() {
        let bad = P1.replace("contrastives: 0.05", "contrastives: -1");
        let err = crate::parse(&bad, Path::new("p1.yaml"))
            .unwrap_err()
            .to_string();
        // `contrastives` sits on line 10 of the test experiment.
        assert!(err.starts_with("p1.yaml:10:"), "{err}");
        assert!(
            err.contains("loss.coefs.contrastives") && err.contains(">= 0"),
            "{err}"
        );
        let bad = format!("{P1}pretrain: {{ domain: c, save_to: x.safetensors }}\n");
        let err = crate::parse(&bad, Path::new("p1.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pretrain.domain") && err.contains("`c`"),
            "{err}"
        );
        assert!(err.starts_with("p1.yaml:13:"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let bad = P1.replace("dim: 16", "dims: 16");
        let err = crate::parse(&bad, Path::new("p1.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p1.yaml:"), "{err}");
        assert!(err.contains("dims"), "{err}");
    }

    #[test]
    fn unknown_coefficient_lists_allowed_names() {
        let bad = P1.replace("cycles: 1.0,", "cycels: 1.0,");
        let err = format!(
            "{:#}",
            crate::parse(&bad, Path::new("p1.yaml")).unwrap_err()
        );
        assert!(
            err.contains("cycels") && err.contains("demi_cycles"),
            "{err}"
        );
    }
}
