//! The Simple Shapes dataset, the Global Workspace papers' reference
//! workload: one coloured shape (diamond, egg or triangle) on a black 32x32
//! image, with its attributes.
//!
//! Two domain kinds:
//! * `v`: the image, 3 x 32 x 32 values in [0, 1], channels first (MSE);
//! * `attr`: shimmer-ssd's 11-value attribute vector (one-hot class under
//!   cross-entropy, then x, y, size, cos and sin of the rotation and the
//!   colour in [-1, 1] under MSE).
//!
//! Items are generated from `(seed, split, index)` alone, so every loader
//! thread draws the same item; or, with `dataset:`, read from a dataset on
//! disk written by shimmer-ssd's tools (`{split}/{index}.png` and
//! `{split}_labels.npy`) through the project's own `.npy` and PNG readers.
//!
//! ```yaml
//! domains:
//!   v:    { plugin: simple-shapes, kind: v,    config: { seed: 0, train: 50000 } }
//!   attr: { plugin: simple-shapes, kind: attr, config: { seed: 0, train: 50000 } }
//!   # or the files: config: { dataset: /data/simple_shapes }
//! ```

mod attributes;
mod draw;
#[cfg(test)]
mod tests;

use attributes::{ATTR_LEN, Attributes, CLASSES, IMAGE_SIZE, LABEL_LEN, Ranges};
use serde::Deserialize;
use shimmer_formats::{ImageFolder, ImageShape, NumArray};
use shimmer_plugin_api::{
    Domain, DomainInfo, LossKind, LossSegment, LossSpec, LossWeights, Plugin, PluginError, Split,
    SplitSizes, export_plugin, parse_config,
};
use std::path::{Path, PathBuf};

/// Values of one image: 3 x 32 x 32.
const IMAGE_LEN: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;

/// Settings shared by both domain kinds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShapesConfig {
    /// Seed of the generated items.
    #[serde(default)]
    seed: u64,
    /// Generated training items (default 500 000, the full dataset's).
    #[serde(default)]
    train: Option<u64>,
    /// Generated validation items (default 1 000).
    #[serde(default)]
    val: Option<u64>,
    /// Generated test items (default 1 000).
    #[serde(default)]
    test: Option<u64>,
    /// Reads this dataset folder instead of generating items.
    #[serde(default)]
    dataset: Option<PathBuf>,
    /// Sizes drawn, `[min, max]` pixels (default `[7, 14]`).
    #[serde(default)]
    sizes: Option<[u32; 2]>,
    /// Locations drawn on each axis, `[min, max]` pixels (default `[7, 24]`).
    #[serde(default)]
    locations: Option<[u32; 2]>,
    /// Rotations drawn, `[from, to)` radians (default `[0, 2π)`; equal ends
    /// give one rotation).
    #[serde(default)]
    rotations: Option<[f32; 2]>,
}

/// Where items come from.
enum Items {
    /// Drawn from `(seed, split, index)`.
    Generated {
        seed: u64,
        sizes: SplitSizes,
        ranges: Ranges,
    },
    /// Labels rows of each split's `{split}_labels.npy`.
    Labels([NumArray; 3]),
    /// Each split's `{split}/` folder of PNG images.
    Images([ImageFolder; 3]),
}

/// A `v` or `attr` domain.
struct Shapes {
    image: bool,
    items: Items,
}

fn err(e: impl ToString) -> PluginError {
    PluginError::new(e.to_string())
}

impl Shapes {
    fn new(image: bool, c: ShapesConfig) -> Result<Self, PluginError> {
        let items = match &c.dataset {
            Some(root) => {
                if c.train.is_some() || c.val.is_some() || c.test.is_some() {
                    return Err(err(
                        "`train`, `val` and `test` sizes come from the files when `dataset` is set: remove them",
                    ));
                }
                if c.sizes.is_some() || c.locations.is_some() || c.rotations.is_some() {
                    return Err(err(
                        "`sizes`, `locations` and `rotations` shape generated items; with `dataset` the files say them",
                    ));
                }
                if image {
                    let shape = ImageShape {
                        channels: 3,
                        height: IMAGE_SIZE,
                        width: IMAGE_SIZE,
                    };
                    Items::Images(open_splits(root, |dir| ImageFolder::open(dir, shape), "")?)
                } else {
                    let labels = open_splits(root, shimmer_formats::npy::open_npy, "_labels.npy")?;
                    for l in &labels {
                        if l.row_len() != LABEL_LEN {
                            return Err(err(format!(
                                "{}: rows of {} values, a labels file has {LABEL_LEN} (class, x, y, size, rotation, r, g, b, h, l, s, unpaired)",
                                l.path().display(),
                                l.row_len()
                            )));
                        }
                    }
                    Items::Labels(labels)
                }
            }
            None => Items::Generated {
                ranges: {
                    let d = Ranges::default();
                    let r = Ranges {
                        size: c.sizes.unwrap_or(d.size),
                        location: c.locations.unwrap_or(d.location),
                        rotation: c.rotations.unwrap_or(d.rotation),
                    };
                    r.check().map_err(err)?;
                    r
                },
                seed: c.seed,
                sizes: SplitSizes {
                    train: c.train.unwrap_or(500_000),
                    val: c.val.unwrap_or(1_000),
                    test: c.test.unwrap_or(1_000),
                },
            },
        };
        Ok(Self { image, items })
    }

    fn sizes(&self) -> SplitSizes {
        match &self.items {
            Items::Generated { sizes, .. } => *sizes,
            Items::Labels(l) => SplitSizes {
                train: l[0].rows() as u64,
                val: l[1].rows() as u64,
                test: l[2].rows() as u64,
            },
            Items::Images(f) => SplitSizes {
                train: f[0].len() as u64,
                val: f[1].len() as u64,
                test: f[2].len() as u64,
            },
        }
    }

    fn item_len(&self) -> usize {
        if self.image { IMAGE_LEN } else { ATTR_LEN }
    }

    /// The attributes of `index`, generated or read from the labels.
    fn attributes(&self, split: Split, index: u64) -> Result<Attributes, PluginError> {
        match &self.items {
            Items::Generated { seed, ranges, .. } => {
                Ok(Attributes::sample(*seed, split, index, ranges))
            }
            Items::Labels(labels) => {
                let array = &labels[split.code() as usize];
                let mut row = [0.0f32; LABEL_LEN];
                array.read_rows(&[index], None, &mut row).map_err(err)?;
                Attributes::from_label_row(&row)
                    .map_err(|e| err(format!("{}: item {index}: {e}", array.path().display())))
            }
            Items::Images(_) => Err(err("an image domain has no attributes")),
        }
    }
}

/// One file or folder per split: `root/{split}{suffix}`.
fn open_splits<T>(
    root: &Path,
    open: impl Fn(&Path) -> Result<T, shimmer_formats::FormatError>,
    suffix: &str,
) -> Result<[T; 3], PluginError> {
    let [a, b, c] = Split::ALL.map(|s| open(&root.join(format!("{}{suffix}", s.name()))));
    Ok([a.map_err(err)?, b.map_err(err)?, c.map_err(err)?])
}

/// Writes `a`'s image into `out` (3 x 32 x 32, channels first, in [0, 1]).
fn image_values(a: &Attributes, out: &mut [f32]) -> Result<(), PluginError> {
    let mut rgb = [0u8; IMAGE_LEN];
    draw::draw(a, &mut rgb).map_err(err)?;
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = f32::from(px[c]) / 255.0;
        }
    }
    Ok(())
}

impl Domain for Shapes {
    fn info(&self) -> DomainInfo {
        DomainInfo {
            latent_dim: self.item_len(),
            item_len: self.item_len(),
            split_sizes: self.sizes(),
            has_encode: false,
            has_decode: false,
        }
    }

    fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
        let size = self.sizes().get(split);
        if let Some(bad) = indices.iter().find(|&&i| i >= size) {
            return Err(err(format!(
                "{split} item {bad} is past the end: the split has {size}"
            )));
        }
        if let Items::Images(folders) = &self.items {
            return folders[split.code() as usize]
                .read(indices, out)
                .map_err(err);
        }
        for (o, &i) in out.chunks_exact_mut(self.item_len()).zip(indices) {
            let a = self.attributes(split, i)?;
            if self.image {
                image_values(&a, o)?;
            } else {
                o.copy_from_slice(&a.vector());
            }
        }
        Ok(())
    }

    fn render_size(&self) -> Option<(u32, u32)> {
        Some((IMAGE_SIZE as u32, IMAGE_SIZE as u32))
    }

    /// An image item as itself (clamped to [0, 1]); an attribute vector as
    /// the shape it describes (class by argmax, values clamped).
    fn render(&self, raw: &[f32], out: &mut [u8]) -> Result<(), PluginError> {
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        for (item, rgb) in raw
            .chunks_exact(self.item_len())
            .zip(out.chunks_exact_mut(IMAGE_LEN))
        {
            if self.image {
                for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
                    for c in 0..3 {
                        let v = item[c * plane + p];
                        px[c] = if v.is_finite() {
                            (v.clamp(0.0, 1.0) * 255.0).round() as u8
                        } else {
                            0
                        };
                    }
                }
            } else {
                draw::draw(&Attributes::from_vector(item), rgb).map_err(err)?;
            }
        }
        Ok(())
    }

    fn loss_spec(&self) -> LossSpec {
        if self.image {
            return LossSpec::mse(IMAGE_LEN);
        }
        LossSpec {
            segments: vec![
                LossSegment {
                    start: 0,
                    len: CLASSES,
                    kind: LossKind::CrossEntropy,
                    weights: LossWeights::all(1.0),
                },
                LossSegment {
                    start: CLASSES,
                    len: ATTR_LEN - CLASSES,
                    kind: LossKind::Mse,
                    weights: LossWeights::all(1.0),
                },
            ],
        }
    }
}

/// The plugin: domain kinds `v` and `attr`.
struct SimpleShapes;

impl Plugin for SimpleShapes {
    const NAME: &'static str = "simple-shapes";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DOMAIN_KINDS: &'static [&'static str] = &["v", "attr"];

    fn create_domain(kind: &str, config_json: &str) -> Result<Box<dyn Domain>, PluginError> {
        let config: ShapesConfig = parse_config(config_json)?;
        Ok(Box::new(Shapes::new(kind == "v", config)?))
    }
}

export_plugin!(SimpleShapes);
