//! A domain's data source whose plugin can be replaced while loaders run.

use crate::cache::encode_split;
use crate::{ItemSource, PluginSource};
use anyhow::Result;
use shimmer_plugin_api::{LossSpec, Split};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

/// An [`ItemSource`] over a plugin domain that [`swap`](Self::swap) can
/// replace between two loads. Each `load_latents` takes the current build
/// once, at its start, and uses it for the whole call: a batch never mixes
/// two builds of one domain, and a load already running when a swap happens
/// finishes on the build it started with. The old build is dropped (its
/// domain destroyed, its private file copy deleted) when the last such load
/// returns.
pub struct SwappableSource {
    current: RwLock<Arc<PluginSource>>,
    /// Latents of the current build, per split, when the run caches them.
    tables: RwLock<[Option<Arc<Vec<f32>>>; 3]>,
    generation: AtomicU64,
}

/// Latents of a build's used splits, encoded once (the latent cache of a
/// watched domain): `[train, val, test]`, `None` where not cached.
pub type CachedTables = [Option<Arc<Vec<f32>>>; 3];

/// Encodes the splits of `source` marked in `splits` (`[train, val,
/// test]`) with `threads` threads, as the data pipeline's latent cache does.
pub fn encode_tables(
    domain: &str,
    source: &PluginSource,
    splits: [bool; 3],
    threads: usize,
) -> Result<CachedTables> {
    let mut tables: CachedTables = Default::default();
    for split in Split::ALL {
        if splits[split.code() as usize] {
            tables[split.code() as usize] =
                Some(Arc::new(encode_split(domain, source, split, threads)?));
        }
    }
    Ok(tables)
}

impl std::fmt::Debug for SwappableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappableSource")
            .field("current", &self.current())
            .field("generation", &self.generation())
            .finish()
    }
}

impl SwappableSource {
    /// Starts at generation 0 with `source`.
    pub fn new(source: PluginSource) -> Self {
        Self {
            current: RwLock::new(Arc::new(source)),
            tables: RwLock::new(Default::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// The build new loads use.
    pub fn current(&self) -> Arc<PluginSource> {
        // A poisoned lock still holds a valid `Arc`: take it.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the cached latents of the current build (see [`encode_tables`]).
    pub fn set_tables(&self, tables: CachedTables) {
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = tables;
    }

    /// How many swaps happened (0 for the build the run started with).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Makes `source` the build of every later load and returns the
    /// generation it got, with a weak reference to the replaced build (it
    /// upgrades while a load still runs on it).
    /// `tables` are the new build's cached latents (all `None` without
    /// the latent cache).
    pub fn swap(&self, source: PluginSource, tables: CachedTables) -> (u64, Weak<PluginSource>) {
        // Both locks at once: no load sees the new build with old latents.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut cached = self.tables.write().unwrap_or_else(|e| e.into_inner());
        *cached = tables;
        let old = std::mem::replace(&mut *current, Arc::new(source));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        (generation, Arc::downgrade(&old))
    }
}

impl ItemSource for SwappableSource {
    fn latent_dim(&self) -> usize {
        self.current().latent_dim()
    }

    fn split_size(&self, split: Split) -> u64 {
        self.current().split_size(split)
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let (source, table) = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
            (current.clone(), tables[split.code() as usize].clone())
        };
        match table {
            Some(t) => crate::source::copy_rows(&t, source.latent_dim(), split, indices, out),
            None => source.load_latents(split, indices, out),
        }
    }

    fn cache_key(&self) -> Option<String> {
        // The data changes with each swap: never cache it under one key.
        None
    }

    fn plugin_build(&self) -> Option<crate::source::PluginBuild> {
        self.current().plugin_build()
    }

    fn describe(&self) -> String {
        format!(
            "{} (hot-swap generation {})",
            self.current().describe(),
            self.generation()
        )
    }

    fn loss_spec(&self) -> Option<LossSpec> {
        self.current().loss_spec()
    }

    fn render(&self, latents: &[f32], n: usize) -> Result<Option<crate::Rendered>> {
        self.current().render(latents, n)
    }

    fn generation(&self) -> u64 {
        SwappableSource::generation(self)
    }
}
