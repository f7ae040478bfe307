//! Where a domain's latents come from: the [`ItemSource`] trait, its plugin
//! implementation ([`PluginSource`]: `load` then `encode`) and an in-memory
//! one ([`MemorySource`]) for tests and benchmarks.
//!
//! ```
//! use shimmer_data::{ItemSource, MemorySource};
//! use shimmer_plugin_api::Split;
//!
//! // 3 training items of dimension 2.
//! let src = MemorySource::new(2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![], vec![]);
//! let mut out = [0.0; 4];
//! src.load_latents(Split::Train, &[2, 0], &mut out).unwrap();
//! assert_eq!(out, [4.0, 5.0, 0.0, 1.0]);
//! ```

use anyhow::{Result, bail};
use shimmer_plugin_api::Split;
use shimmer_plugin_host::DomainHandle;
use std::sync::Arc;

/// A domain's data as the GW sees it: latent vectors of a fixed length,
/// addressed by split and item index. Called from several loader threads at
/// once, hence `Send + Sync`.
pub trait ItemSource: Send + Sync {
    /// Length of one latent vector.
    fn latent_dim(&self) -> usize;

    /// Number of items in `split`.
    fn split_size(&self, split: Split) -> u64;

    /// Writes the latents of `indices` of `split` into `out`, item after
    /// item (`out.len() == indices.len() * latent_dim()`).
    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()>;

    /// A string that identifies this data exactly (plugin name, version,
    /// domain kind and config), used to key file caches; `None` when the
    /// data cannot be identified across runs.
    fn cache_key(&self) -> Option<String> {
        None
    }

    /// Short description for error messages (`plugin random-vectors 0.1.0, kind vectors`).
    fn describe(&self) -> String {
        "in-memory data".to_string()
    }

    /// How the GW scores predictions of these latents (a plugin's loss
    /// spec); `None` leaves the choice to the experiment (default: MSE).
    fn loss_spec(&self) -> Option<shimmer_plugin_api::LossSpec> {
        None
    }

    /// Draws `n` items given as this source's latents as 8-bit RGB images
    /// (`(width, height, bytes)`, rows top to bottom, image after image),
    /// or `None` when the data cannot be drawn.
    fn render(&self, latents: &[f32], n: usize) -> Result<Option<Rendered>> {
        let _ = (latents, n);
        Ok(None)
    }

    /// The plugin build behind this data, for a run's provenance; `None`
    /// for data that does not come from a plugin.
    fn plugin_build(&self) -> Option<PluginBuild> {
        None
    }

    /// Changes whenever the data behind the source changes while it is in
    /// use (a hot-swapped plugin), so that what was computed from it can be
    /// dropped; 0 for data that never changes.
    fn generation(&self) -> u64 {
        0
    }
}

/// Which plugin build provides a domain: what a run records so that a
/// later resume or evaluation can tell when the build changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginBuild {
    /// Plugin name, from its descriptor.
    pub plugin: String,
    /// Plugin version, from its descriptor.
    pub version: String,
    /// The library file it was loaded from.
    pub file: std::path::PathBuf,
    /// SHA-256 of the library's bytes as loaded.
    pub sha256: String,
}

/// Items drawn as images by [`ItemSource::render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Width of one image.
    pub width: u32,
    /// Height of one image.
    pub height: u32,
    /// `n * width * height * 3` bytes: RGB, rows top to bottom, image after image.
    pub rgb: Vec<u8>,
}

/// Sources keyed by domain name, shared between loader threads.
pub type Sources = indexmap::IndexMap<String, Arc<dyn ItemSource>>;

/// A plugin domain: `load` raw items, then the plugin's `encode` (skipped
/// when the plugin has none and raw items are the latents).
#[derive(Clone, Debug)]
pub struct PluginSource {
    handle: DomainHandle,
    config_json: String,
}

impl PluginSource {
    /// Wraps a domain handle created from `config_json` (kept for the cache key).
    pub fn new(handle: DomainHandle, config_json: impl Into<String>) -> Self {
        Self {
            handle,
            config_json: config_json.into(),
        }
    }

    /// The underlying plugin domain.
    pub fn handle(&self) -> &DomainHandle {
        &self.handle
    }
}

impl ItemSource for PluginSource {
    fn plugin_build(&self) -> Option<PluginBuild> {
        let lib = self.handle.library();
        Some(PluginBuild {
            plugin: lib.name().to_string(),
            version: lib.version().to_string(),
            file: lib.source().to_path_buf(),
            sha256: lib.sha256().to_string(),
        })
    }

    fn latent_dim(&self) -> usize {
        self.handle.info().latent_dim
    }

    fn split_size(&self, split: Split) -> u64 {
        self.handle.info().split_sizes.get(split)
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let info = self.handle.info();
        if !info.has_encode && info.item_len == info.latent_dim {
            self.handle.load(split, indices, out)?;
            return Ok(());
        }
        let mut raw = vec![0.0f32; indices.len() * info.item_len];
        self.handle.load(split, indices, &mut raw)?;
        if info.has_encode {
            self.handle.encode(&raw, indices.len(), out)?;
        } else {
            bail!(
                "{}: no encode, and raw items ({} values) differ from latents ({} values)",
                self.describe(),
                info.item_len,
                info.latent_dim
            );
        }
        Ok(())
    }

    /// The plugin's drawing of raw items; latents are decoded first when
    /// the plugin has its own `decode`.
    fn render(&self, latents: &[f32], n: usize) -> Result<Option<Rendered>> {
        let Some((width, height)) = self.handle.render_size() else {
            return Ok(None);
        };
        let info = self.handle.info();
        let raw = if info.has_decode {
            let mut raw = vec![0.0f32; n * info.item_len];
            self.handle.decode(latents, n, &mut raw)?;
            raw
        } else {
            latents.to_vec()
        };
        let rgb = self.handle.render(&raw, n)?;
        Ok(Some(Rendered { width, height, rgb }))
    }

    fn cache_key(&self) -> Option<String> {
        Some(format!(
            "plugin={}\nversion={}\nkind={}\nconfig={}\nlatent_dim={}",
            self.handle.plugin_name(),
            self.handle.plugin_version(),
            self.handle.kind(),
            self.config_json,
            self.latent_dim()
        ))
    }

    fn loss_spec(&self) -> Option<shimmer_plugin_api::LossSpec> {
        Some(self.handle.loss_spec().clone())
    }

    fn describe(&self) -> String {
        format!(
            "plugin {} {}, kind {}",
            self.handle.plugin_name(),
            self.handle.plugin_version(),
            self.handle.kind()
        )
    }
}

/// Latents held in memory, one row-major `Vec` per split.
#[derive(Clone, Debug)]
pub struct MemorySource {
    dim: usize,
    splits: [Arc<[f32]>; 3],
    key: Option<String>,
}

impl MemorySource {
    /// Train, val and test latents, `dim` values per item (each length a
    /// multiple of `dim`; a trailing partial item is ignored).
    pub fn new(dim: usize, train: Vec<f32>, val: Vec<f32>, test: Vec<f32>) -> Self {
        Self {
            dim,
            splits: [train.into(), val.into(), test.into()],
            key: None,
        }
    }

    /// Items whose every value is `f(split, item, column)`.
    pub fn from_fn(dim: usize, sizes: [u64; 3], f: impl Fn(Split, u64, usize) -> f32) -> Self {
        let make = |split: Split| {
            let n = sizes[split.code() as usize];
            (0..n)
                .flat_map(|i| (0..dim).map(move |c| (i, c)))
                .map(|(i, c)| f(split, i, c))
                .collect::<Vec<f32>>()
        };
        Self::new(dim, make(Split::Train), make(Split::Val), make(Split::Test))
    }

    /// Sets the key file caches use for this data.
    pub fn with_cache_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

impl ItemSource for MemorySource {
    fn latent_dim(&self) -> usize {
        self.dim
    }

    fn split_size(&self, split: Split) -> u64 {
        (self.splits[split.code() as usize].len() / self.dim.max(1)) as u64
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        copy_rows(
            &self.splits[split.code() as usize],
            self.dim,
            split,
            indices,
            out,
        )
    }

    fn cache_key(&self) -> Option<String> {
        self.key.clone()
    }
}

/// Copies rows `indices` of a row-major `dim`-wide table into `out`,
/// checking every index and the output length.
pub(crate) fn copy_rows(
    table: &[f32],
    dim: usize,
    split: Split,
    indices: &[u64],
    out: &mut [f32],
) -> Result<()> {
    if out.len() != indices.len() * dim {
        bail!(
            "output holds {} values, expected {} items x {dim}",
            out.len(),
            indices.len()
        );
    }
    let size = (table.len() / dim.max(1)) as u64;
    for (row, &i) in out.chunks_exact_mut(dim.max(1)).zip(indices) {
        if i >= size {
            bail!("item {i} asked for, but split {split} has {size} items");
        }
        let start = i as usize * dim;
        row.copy_from_slice(&table[start..start + dim]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_reads_rows_and_checks_indices() {
        let src = MemorySource::from_fn(3, [4, 2, 0], |s, i, c| {
            (s.code() * 100) as f32 + i as f32 * 10.0 + c as f32
        });
        assert_eq!(src.split_size(Split::Train), 4);
        assert_eq!(src.split_size(Split::Test), 0);
        let mut out = [0.0; 6];
        src.load_latents(Split::Val, &[1, 0], &mut out).unwrap();
        assert_eq!(out, [110.0, 111.0, 112.0, 100.0, 101.0, 102.0]);
        let err = src
            .load_latents(Split::Val, &[2, 0], &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("item 2") && err.contains("val"), "{err}");
    }
}
