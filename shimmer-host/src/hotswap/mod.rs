//! Hot-swapping domain plugins during a run (`shimmer run --watch`), and
//! changing a domain's plugin when a run is resumed (`--set-plugin`).
//!
//! # How a swap happens
//! With `--watch`, every plugin domain of the run reads its data through a
//! [`SwappableSource`]. The trainer calls [`StepHooks::after_step`] at each
//! step boundary, which polls the [`PluginWatcher`]: it `stat`s each plugin
//! file the run loaded; a changed file is loaded once it has been stable
//! for the debounce time (0.5 s) and its content differs from the build in
//! use. The new build is loaded from a private copy, checked against the
//! build in use (same domain kind, latent size, item length and loss spec;
//! splits may change size as long as they still hold every item the run's
//! groups use; a probe load of up to 8 items per used split must succeed
//! with finite values) and, when every domain of the file passes, swapped
//! in for all of them at once. Anything else (not a library, other ABI, a
//! panicking `create` or `load`, other dimensions) is reported and the
//! current build stays; the run never stops because of a new build.
//!
//! # Which batches use the new build
//! Loads that start after the swap use the new build; a load already
//! running finishes on the old one (a batch never mixes builds of a
//! domain). With `data.workers: 0` batches are loaded when the trainer
//! asks for them, so the batch of the step right after the swap (the step
//! named in the log) is the first from the new build. With loader threads,
//! the batches they had already prefetched (at most `prefetch` rounded up
//! to a multiple of `workers`, plus one per worker) come from the old
//! build and are used first. Validation after the swap uses the new build.
//!
//! # The old build
//! The old build is dropped when the last load using it returns: its
//! domain is destroyed and its private file copy deleted (logged as
//! "released"). Its code stays mapped until the process exits (see the
//! plugin rules in `shimmer_plugin_api`): each swap costs at most the
//! library's mapped size, threads stay flat (measured by
//! `tests/hotswap.rs`).
//!
//! # Latent cache
//! With `data.cache.enabled` (the default), a watched domain's latents are
//! cached in memory by its [`SwappableSource`] instead of the data
//! pipeline: a new build's used splits are encoded in full (with
//! `data.workers` threads) at the step boundary, before the swap, so a
//! swap replaces the cached latents with the new build's (a failure there
//! refuses the build). Watched domains do not use the file cache
//! (`data.cache.dir`): their data is not fixed by plugin name and version.

mod hooks;
pub mod procstats;
pub mod resume;
mod source;
mod trace;
mod watcher;

pub use hooks::StepHooks;
pub use procstats::ProcessStats;
pub use source::{CachedTables, SwappableSource, encode_tables};
pub use trace::{BatchTrace, TRACE_ENV};
pub use watcher::{DEFAULT_DEBOUNCE, PluginWatcher, WatchEvent, check_compatible};

use crate::config::Experiment;
use crate::data::{ItemSource, PluginSource, Sources};
use crate::plugin::PluginLibrary;
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Like [`crate::data::open_sources`] (same checks, same messages), but
/// every plugin domain reads through a [`SwappableSource`] registered with
/// the returned watcher. Build the pipeline over these sources with the
/// pipeline's cache off, then call [`PluginWatcher::require_items`] and,
/// when the experiment caches latents, [`PluginWatcher::enable_cache`].
pub fn open_watched_sources(exp: &Experiment) -> Result<(Sources, PluginWatcher)> {
    let mut libraries: HashMap<PathBuf, PluginLibrary> = HashMap::new();
    let mut sources = Sources::new();
    let mut watcher = PluginWatcher::new();
    for (name, d) in &exp.domains {
        let Some(spec) = d.plugin.as_deref() else {
            continue;
        };
        let at = || format!("domain `{name}` (plugin `{spec}`)");
        let path = crate::plugin::resolve(spec, &exp.plugins.paths).with_context(at)?;
        let lib = match libraries.get(&path) {
            Some(lib) => lib.clone(),
            None => {
                let lib = PluginLibrary::open(&path).with_context(at)?;
                libraries.insert(path, lib.clone());
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
        let handle = lib.create_domain(&kind, &config_json).with_context(at)?;
        let src = PluginSource::new(handle, config_json.clone());
        if let Some(dim) = d.latent_dim {
            ensure!(
                dim == src.latent_dim(),
                "{}: `latent_dim: {dim}` but the plugin's latents have {}",
                at(),
                src.latent_dim()
            );
        }
        let swappable = Arc::new(SwappableSource::new(src));
        watcher.watch(name, &config_json, swappable.clone());
        sources.insert(name.clone(), swappable as Arc<dyn ItemSource>);
    }
    Ok((sources, watcher))
}
