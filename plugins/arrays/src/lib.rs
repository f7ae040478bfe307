//! Domains from the files a researcher already has, without writing Rust:
//! NumPy `.npy` arrays, `.safetensors` tensors and folders of PNG images,
//! one file per split, assembled into items from YAML.
//!
//! Domain kind `arrays`. An item is the concatenation of `parts`; each part
//! reads one source per split (`{split}` in a path becomes `train`, `val`,
//! `test`), takes some of its columns, and transforms them:
//!
//! ```yaml
//! domains:
//!   t:   # BERT latents of the captions, normalised by the train statistics
//!     plugin: arrays
//!     config:
//!       root: ${path:data/simple_shapes}
//!       parts:
//!         - { npy: "{split}_latent.npy", mean: latent_mean.npy, std: latent_std.npy }
//!   attr:   # shimmer-ssd's 11-value attribute vector from the labels file
//!     plugin: arrays
//!     config:
//!       root: ${path:data/simple_shapes}
//!       parts:
//!         - { npy: "{split}_labels.npy", columns: [0], one_hot: 3, loss: cross_entropy }
//!         - { npy: "{split}_labels.npy", columns: [1, 2], mean: 16, std: 9 }
//!         - { npy: "{split}_labels.npy", columns: [3], mean: 10.5, std: 3.5 }
//!         - { npy: "{split}_labels.npy", columns: [4], cos_sin: true }
//!         - { npy: "{split}_labels.npy", columns: [5, 6, 7], mean: 127.5, std: 127.5 }
//!   v:   # the images, flattened (3 x 32 x 32 values in [0, 1])
//!     plugin: arrays
//!     config:
//!       root: ${path:data/simple_shapes}
//!       parts: [{ images: "{split}", shape: [3, 32, 32] }]
//! ```
//!
//! Files are memory-mapped and read item by item; every value is checked
//! to be finite unless `allow_non_finite: true`. Errors name the file and
//! the problem. The loss spec follows the parts: each part's `loss` (`mse`
//! by default, `cross_entropy`, `bce`, `cosine`, `l1`, `none`) and `weight`,
//! adjacent parts with the same loss and weight forming one segment.

mod config;
mod part;

use config::ArraysConfig;
use part::Part;
use shimmer_plugin_api::{
    Domain, DomainInfo, LossSegment, LossSpec, LossWeights, Plugin, PluginError, Split, SplitSizes,
    export_plugin, parse_config,
};
use std::path::PathBuf;

/// A domain whose items are assembled from files.
#[derive(Debug)]
struct Arrays {
    parts: Vec<Part>,
    item_len: usize,
    sizes: SplitSizes,
    allow_non_finite: bool,
    spec: LossSpec,
}

impl Arrays {
    fn open(config: &ArraysConfig) -> Result<Self, PluginError> {
        if config.parts.is_empty() {
            return Err(
                "`parts` is empty: list where an item's values come from, e.g. \
                 `parts: [{ npy: \"{split}_latent.npy\" }]`"
                    .into(),
            );
        }
        let root = config.root.clone().unwrap_or_else(|| PathBuf::from("."));
        let parts = config
            .parts
            .iter()
            .enumerate()
            .map(|(i, c)| Part::open(i + 1, c, &root, &config.splits))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sizes = [0u64; 3];
        for split in Split::ALL {
            let first = &parts[0];
            let n = first.split_size(split);
            if let Some(other) = parts.iter().find(|p| p.split_size(split) != n) {
                return Err(PluginError::new(format!(
                    "{} has {} {split} items but {} has {n}: the parts of an item must have as many items",
                    other.label(),
                    other.split_size(split),
                    first.label()
                )));
            }
            sizes[split.code() as usize] = n;
        }
        let item_len = parts.iter().map(|p| p.out_width).sum();
        let spec = loss_spec(&parts)?;
        Ok(Self {
            parts,
            item_len,
            sizes: SplitSizes {
                train: sizes[0],
                val: sizes[1],
                test: sizes[2],
            },
            allow_non_finite: config.allow_non_finite,
            spec,
        })
    }
}

/// One segment per run of adjacent parts with the same loss and weight.
fn loss_spec(parts: &[Part]) -> Result<LossSpec, PluginError> {
    let mut segments: Vec<LossSegment> = Vec::new();
    let mut start = 0;
    let mut previous = None;
    for p in parts {
        let (loss, weight) = p.loss;
        if let Some(kind) = loss.kind() {
            match segments.last_mut() {
                Some(last) if previous == Some(p.loss) && last.start + last.len == start => {
                    last.len += p.out_width;
                }
                _ => segments.push(LossSegment {
                    start,
                    len: p.out_width,
                    kind,
                    weights: LossWeights::all(weight),
                }),
            }
        }
        previous = Some(p.loss);
        start += p.out_width;
    }
    if segments.is_empty() {
        return Err("every part has `loss: none`: the domain would have no loss".into());
    }
    Ok(LossSpec { segments })
}

impl Domain for Arrays {
    fn info(&self) -> DomainInfo {
        DomainInfo {
            latent_dim: self.item_len,
            item_len: self.item_len,
            split_sizes: self.sizes,
            has_encode: false,
            has_decode: false,
        }
    }

    fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
        if let [only] = self.parts.as_slice() {
            return only.load(split, indices, self.allow_non_finite, out);
        }
        let mut offset = 0;
        for p in &self.parts {
            let mut values = vec![0.0f32; indices.len() * p.out_width];
            p.load(split, indices, self.allow_non_finite, &mut values)?;
            for (item, v) in out
                .chunks_exact_mut(self.item_len)
                .zip(values.chunks_exact(p.out_width))
            {
                item[offset..offset + p.out_width].copy_from_slice(v);
            }
            offset += p.out_width;
        }
        Ok(())
    }

    fn loss_spec(&self) -> LossSpec {
        self.spec.clone()
    }
}

/// The plugin: one domain kind, `arrays`.
struct ArraysPlugin;

impl Plugin for ArraysPlugin {
    const NAME: &'static str = "arrays";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DOMAIN_KINDS: &'static [&'static str] = &["arrays"];

    fn create_domain(_kind: &str, config_json: &str) -> Result<Box<dyn Domain>, PluginError> {
        let config: ArraysConfig = parse_config(config_json)?;
        Ok(Box::new(Arrays::open(&config)?))
    }
}

export_plugin!(ArraysPlugin);

#[cfg(test)]
mod tests;
