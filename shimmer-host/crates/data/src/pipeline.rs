//! From an experiment's `data:` section to loaders: opens the plugin
//! domains ([`open_sources`]), resolves the groups, wraps the training
//! groups in repeated datasets, caches latents, and builds the training
//! loader and the validation and test loaders (shimmer's: paired sets with
//! each domain alone too, `sequential`).

use super::cache::cache_sources;
use super::combined::CombinedSampler;
use super::group::{GroupDataset, ItemFiles, ResolveItems, default_group_name, selection_seed};
use super::loader::DataLoader;
use super::repeated::RepeatedDataset;
use super::sampler::GroupSampler;
use super::source::{ItemSource, PluginSource, Sources};
use anyhow::{Context, Result, bail, ensure};
use shimmer_config::Experiment;
use shimmer_config::{CombineMode, DataConfig, EvalSetConfig, Items, RepeatMode};
use shimmer_plugin_api::Split;
use shimmer_plugin_host::PluginLibrary;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The loaders of a run.
#[derive(Debug)]
pub struct DataPipeline {
    /// Training batches (the configured groups and mode).
    pub train: DataLoader,
    /// Validation batches, or `None` without validation items.
    pub val: Option<DataLoader>,
    /// Test batches, or `None` without test items.
    pub test: Option<DataLoader>,
}

impl DataPipeline {
    /// Builds every loader of `config` over `sources`. `seed` is the
    /// experiment's (used unless `data.seed` is set); `base_dir` resolves
    /// relative item-list files.
    pub fn build(
        config: &DataConfig,
        sources: &Sources,
        seed: u64,
        base_dir: Option<&Path>,
    ) -> Result<Self> {
        let seed = config.seed.unwrap_or(seed);
        ensure!(
            !config.groups.is_empty(),
            "`data.groups` is empty: list the training groups, e.g. \
             `groups: [{{ domains: [a, b], items: {{ count: 32 }} }}, {{ domains: [a] }}, {{ domains: [b] }}]`"
        );
        ensure!(
            config.batch_size > 0,
            "`data.batch_size` must be at least 1"
        );
        let train = train_groups(config, sources, seed, base_dir)?;
        let combined = train_sampler(config, &train, seed)?;
        let val = eval_groups(&config.val, Split::Val, sources, seed, base_dir, "val")?;
        let test = eval_groups(&config.test, Split::Test, sources, seed, base_dir, "test")?;
        let sources = if config.cache.enabled {
            let all: Vec<&GroupDataset> = train.iter().chain(&val).chain(&test).collect();
            cache_sources(
                sources,
                &needed_splits(&all),
                config.cache.dir.as_deref(),
                config.workers.max(1),
            )
            .context("data: building the latent cache")?
        } else {
            sources.clone()
        };
        let loader = |groups, combined| {
            DataLoader::new(
                groups,
                sources.clone(),
                combined,
                config.workers,
                config.prefetch,
            )
        };
        let eval_loader = |groups: Vec<GroupDataset>| -> Result<Option<DataLoader>> {
            if groups.is_empty() {
                return Ok(None);
            }
            let combined = eval_sampler(config, &groups, seed)?;
            loader(groups, combined).map(Some)
        };
        Ok(Self {
            train: loader(train, combined)?,
            val: eval_loader(val)?,
            test: eval_loader(test)?,
        })
    }
}

/// The training groups of `config`, their items resolved and checked.
fn train_groups(
    config: &DataConfig,
    sources: &Sources,
    seed: u64,
    base_dir: Option<&Path>,
) -> Result<Vec<GroupDataset>> {
    let mut train = Vec::with_capacity(config.groups.len());
    for (i, g) in config.groups.iter().enumerate() {
        let name = g
            .name
            .clone()
            .unwrap_or_else(|| default_group_name(&g.domains));
        let at = || format!("data.groups[{i}] (`{name}`)");
        ensure!(
            !train.iter().any(|t: &GroupDataset| t.name() == name),
            "{}: another group has the same name; set `name:`",
            at()
        );
        let size = split_size(sources, &g.domains, g.split, &g.items).with_context(at)?;
        let items = g
            .items
            .resolve(
                size,
                g.select,
                selection_seed(seed, &name),
                &ItemFiles::new(g.split, &g.domains).base_dir(base_dir),
            )
            .with_context(at)?;
        ensure!(!items.is_empty(), "{}: the group has no item", at());
        train.push(
            GroupDataset::new(name.clone(), g.domains.clone(), g.split, items).with_context(at)?,
        );
    }
    Ok(train)
}

/// The training batch plan: each group repeated as `data.repeat` says,
/// batched and shuffled, combined in `data.mode`.
fn train_sampler(
    config: &DataConfig,
    train: &[GroupDataset],
    seed: u64,
) -> Result<CombinedSampler> {
    let largest = train.iter().map(|g| g.len() as u64).max().unwrap_or(0);
    let mut samplers = Vec::with_capacity(train.len());
    for g in train {
        let n = g.len() as u64;
        let repeated = match config.repeat {
            RepeatMode::None => RepeatedDataset::identity(n),
            RepeatMode::Largest => RepeatedDataset::new(n, largest, false)?,
            RepeatMode::LargestExact => RepeatedDataset::new(n, largest, true)?,
        };
        let s = GroupSampler::new(
            repeated,
            config.batch_size,
            config.drop_last,
            config.shuffle,
        )?;
        samplers.push((s, g.items_arc()));
    }
    CombinedSampler::new(samplers, config.mode, seed)
        .with_context(|| format!("data: training groups {}", names(train)))
}

/// A validation or test plan: every item once, in order, group after group.
fn eval_sampler(
    config: &DataConfig,
    groups: &[GroupDataset],
    seed: u64,
) -> Result<CombinedSampler> {
    let mut samplers = Vec::with_capacity(groups.len());
    for g in groups {
        let s = GroupSampler::new(
            RepeatedDataset::identity(g.len() as u64),
            config.batch_size,
            false,
            false,
        )?;
        samplers.push((s, g.items_arc()));
    }
    CombinedSampler::new(samplers, CombineMode::Sequential, seed)
}

/// Which splits of which domain the groups read (what the cache encodes).
fn needed_splits(groups: &[&GroupDataset]) -> Vec<(String, Vec<Split>)> {
    let mut needs: Vec<(String, Vec<Split>)> = Vec::new();
    for g in groups {
        for d in g.domains() {
            match needs.iter_mut().find(|(n, _)| n == d) {
                Some((_, splits)) if !splits.contains(&g.split()) => splits.push(g.split()),
                Some(_) => {}
                None => needs.push((d.clone(), vec![g.split()])),
            }
        }
    }
    needs
}

/// Resolves validation or test sets; sets without items are left out.
fn eval_groups(
    sets: &[EvalSetConfig],
    default_split: Split,
    sources: &Sources,
    seed: u64,
    base_dir: Option<&Path>,
    section: &str,
) -> Result<Vec<GroupDataset>> {
    let mut out: Vec<GroupDataset> = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let domains = set
            .domains
            .clone()
            .unwrap_or_else(|| sources.keys().cloned().collect());
        let name = set
            .name
            .clone()
            .unwrap_or_else(|| default_group_name(&domains));
        let at = || format!("data.{section}[{i}] (`{name}`)");
        let split = set.split.unwrap_or(default_split);
        let size = split_size(sources, &domains, split, &set.items).with_context(at)?;
        let items = set
            .items
            .resolve(
                size,
                set.select,
                selection_seed(seed, &name),
                &ItemFiles::new(split, &domains).base_dir(base_dir),
            )
            .with_context(at)?;
        if items.is_empty() {
            continue;
        }
        out.push(
            GroupDataset::new(name.clone(), domains, split, items)
                .with_context(at)?
                .with_singles(),
        );
    }
    Ok(out)
}

/// Most items a split may have (2^32): item lists hold one `u64` per item,
/// so a larger count is a plugin or config mistake, refused before any
/// list is built.
pub const MAX_SPLIT_ITEMS: u64 = 1 << 32;

/// Items of `split` the group's domains share: the smallest of their
/// sizes. Items pair by index, so a paired group that takes every item
/// (`items: all`, the default) needs domains of the same size: different
/// sizes mean files that do not correspond, an error. A selection of some
/// items (a range, a count, a list) only needs them within every domain.
fn split_size(sources: &Sources, domains: &[String], split: Split, items: &Items) -> Result<u64> {
    ensure!(!domains.is_empty(), "a group needs at least one domain");
    let mut smallest: Option<(&str, u64)> = None;
    let mut first: Option<(&str, u64)> = None;
    for d in domains {
        let src = sources.get(d).with_context(|| {
            format!(
                "unknown domain `{d}` (domains with data: {})",
                sources.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let n = src.split_size(split);
        ensure!(
            n <= MAX_SPLIT_ITEMS,
            "domain `{d}` says its {split} split has {n} items: at most {MAX_SPLIT_ITEMS} \
             items per split are supported (check the plugin's config)"
        );
        if let (Items::All, Some((name, size))) = (items, first) {
            ensure!(
                n == size,
                "domain `{d}` has {n} {split} items but `{name}` has {size}: items of a \
                 paired group pair by index, so with `items: all` its domains must have \
                 as many items (check the files behind them, or select items)"
            );
        }
        first.get_or_insert((d, n));
        if smallest.is_none_or(|(_, s)| n < s) {
            smallest = Some((d, n));
        }
    }
    Ok(smallest.map_or(0, |(_, n)| n))
}

fn names(groups: &[GroupDataset]) -> String {
    groups
        .iter()
        .map(|g| format!("`{}`", g.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plugin domain of an experiment, opened.
pub struct OpenedDomain {
    /// Domain name in the experiment.
    pub name: String,
    /// The config handed to the plugin, as JSON.
    pub config_json: String,
    /// Its data.
    pub source: PluginSource,
}

/// Opens every plugin domain of the experiment, in domain order, loading
/// each library file once: resolves the plugin, picks the domain kind
/// (`kind:`, or the plugin's only one), creates the domain from its config
/// and checks `latent_dim` when given. Domains without a plugin are left out.
pub fn open_plugin_domains(exp: &Experiment) -> Result<Vec<OpenedDomain>> {
    let mut libraries: HashMap<PathBuf, PluginLibrary> = HashMap::new();
    let mut opened = Vec::new();
    for (name, d) in &exp.domains {
        let Some(spec) = d.plugin.as_deref() else {
            continue;
        };
        let at = || format!("domain `{name}` (plugin `{spec}`)");
        let path = shimmer_plugin_host::resolve(spec, &exp.plugins.paths).with_context(at)?;
        let lib = match libraries.get(&path) {
            Some(lib) => lib.clone(),
            None => {
                let lib = PluginLibrary::open(&path).with_context(at)?;
                libraries.insert(path.clone(), lib.clone());
                lib
            }
        };
        let kind = match (&d.kind, lib.domain_kinds()) {
            (Some(k), _) => k.clone(),
            (None, [only]) => only.clone(),
            (None, kinds) => bail!(
                "{}: the plugin provides several domain kinds ({}); choose one with `kind:`",
                at(),
                kinds.join(", ")
            ),
        };
        let config_json = serde_json::to_string(&d.config).with_context(at)?;
        let handle = match lib.create_domain(&kind, &config_json) {
            Ok(handle) => handle,
            Err(e) => {
                let message = e.to_string();
                // A parse error of the config: name the YAML key it is about.
                if let Some((key, text)) = crate::config_position::locate(&d.config, &message) {
                    let key = if key.is_empty() {
                        format!("domains.{name}.config")
                    } else {
                        format!("domains.{name}.config.{key}")
                    };
                    let text = format!("{}: {text}", at());
                    return Err(shimmer_config::check::CheckError::new(key, text).into());
                }
                return Err(anyhow::Error::from(e).context(at()));
            }
        };
        let source = PluginSource::new(handle, config_json.clone());
        if let Some(dim) = d.latent_dim {
            ensure!(
                dim == source.latent_dim(),
                "{}: `latent_dim: {dim}` but the plugin's latents have {}",
                at(),
                source.latent_dim()
            );
        }
        opened.push(OpenedDomain {
            name: name.clone(),
            config_json,
            source,
        });
    }
    Ok(opened)
}

/// The data sources of every plugin domain of the experiment, in domain
/// order (see [`open_plugin_domains`]).
pub fn open_sources(exp: &Experiment) -> Result<Sources> {
    Ok(open_plugin_domains(exp)?
        .into_iter()
        .map(|d| (d.name, Arc::new(d.source) as Arc<dyn ItemSource>))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySource;

    fn sources() -> Sources {
        let mk = |dim, n: u64| -> Arc<dyn ItemSource> {
            Arc::new(MemorySource::from_fn(dim, [n, 5, 0], |_, i, _| i as f32))
        };
        [("a".to_string(), mk(2, 10)), ("b".to_string(), mk(3, 10))]
            .into_iter()
            .collect()
    }

    fn config(yaml: &str) -> DataConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn builds_train_and_shimmer_validation() {
        let c = config(
            "batch_size: 2\nworkers: 0\ngroups:\n  - { domains: [a, b], items: { count: 3 } }\n  - { domains: [a] }\n",
        );
        let p = DataPipeline::build(&c, &sources(), 0, None).unwrap();
        // Paired group: 3 items repeated to 12 positions (whole copies), 6
        // batches; the unpaired group: 10 positions, 5 batches -> min 5.
        assert_eq!(p.train.len(), 5);
        let b = p.train.epoch(0).unwrap().next().unwrap().unwrap();
        assert_eq!(b.groups.keys().collect::<Vec<_>>(), ["a,b", "a"]);
        assert!(b.groups["a,b"].items.iter().all(|&i| i < 3));
        // Validation: 5 paired items, batches of 2 -> 3, each with a, b alone.
        let val = p.val.unwrap();
        let batches: Vec<_> = val.epoch(0).unwrap().map(Result::unwrap).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(
            batches[2].groups.keys().collect::<Vec<_>>(),
            ["a,b", "a", "b"]
        );
        assert_eq!(&*batches[2].groups["b"].items, [4]);
        assert!(
            batches[0].groups["a"].domains["a"]
                .shares_data_with(&batches[0].groups["a,b"].domains["a"])
        );
        // The test split is empty: no test loader.
        assert!(p.test.is_none());
    }

    #[test]
    fn configuration_errors_name_the_group() {
        let err = |yaml: &str| {
            format!(
                "{:#}",
                DataPipeline::build(&config(yaml), &sources(), 0, None).unwrap_err()
            )
        };
        let e = err("groups: [{ domains: [a, c] }]");
        assert!(e.contains("data.groups[0]") && e.contains("`c`"), "{e}");
        let e = err("groups: [{ domains: [a], items: { count: 11 } }]");
        assert!(e.contains("data.groups[0]") && e.contains("11"), "{e}");
        let e = err("groups: [{ domains: [a] }, { domains: [a] }]");
        assert!(e.contains("same name"), "{e}");
        let e = err("groups: []");
        assert!(e.contains("data.groups"), "{e}");
        let mut unequal = sources();
        unequal.insert(
            "c".into(),
            Arc::new(MemorySource::from_fn(2, [9, 5, 0], |_, i, _| i as f32)),
        );
        let e = format!(
            "{:#}",
            DataPipeline::build(&config("groups: [{ domains: [a, c] }]"), &unequal, 0, None)
                .unwrap_err()
        );
        assert!(
            e.contains("data.groups[0]")
                && e.contains("domain `c` has 9 train items but `a` has 10"),
            "{e}"
        );
    }
}
