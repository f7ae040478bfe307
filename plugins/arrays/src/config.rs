//! The YAML settings of an `arrays` domain (handed over as JSON): which
//! files each part of an item comes from, and how its values are
//! transformed.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use shimmer_plugin_api::{LossKind, Split};
use std::fmt;
use std::path::PathBuf;

/// One domain: its item is the concatenation of `parts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArraysConfig {
    /// Folder relative file paths are taken from (itself relative to the
    /// working folder; `${path:...}` in the YAML makes it relative to the
    /// experiment file). Default: the working folder.
    #[serde(default)]
    pub(crate) root: Option<PathBuf>,
    /// Splits the domain has; files of the others are not looked for.
    #[serde(default = "all_splits")]
    pub(crate) splits: Vec<Split>,
    /// The parts of an item, in order.
    pub(crate) parts: Vec<PartConfig>,
    /// Accepts NaN and infinite values in the files instead of refusing them.
    #[serde(default)]
    pub(crate) allow_non_finite: bool,
}

fn all_splits() -> Vec<Split> {
    Split::ALL.to_vec()
}

/// A file per split: one template where `{split}` is replaced by `train`,
/// `val` or `test`, or one path per split (a split left out has no items).
#[derive(Clone, Debug)]
pub(crate) enum PathSpec {
    /// `data/{split}_latent.npy`.
    Template(String),
    /// `{ train: a.npy, val: b.npy }`.
    PerSplit(PerSplitPaths),
}

/// One path per split.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerSplitPaths {
    /// Training file.
    #[serde(default)]
    train: Option<String>,
    /// Validation file.
    #[serde(default)]
    val: Option<String>,
    /// Test file.
    #[serde(default)]
    test: Option<String>,
}

impl<'de> Deserialize<'de> for PathSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PathSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path (`{split}` is replaced by the split) or `{ train: ..., val: ..., test: ... }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PathSpec, E> {
                Ok(PathSpec::Template(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PathSpec, A::Error> {
                PerSplitPaths::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(PathSpec::PerSplit)
            }
        }
        d.deserialize_any(V)
    }
}

impl PathSpec {
    /// The path of `split`'s file, `None` when the split has none.
    pub(crate) fn for_split(&self, split: Split) -> Option<String> {
        match self {
            PathSpec::Template(t) => Some(t.replace("{split}", split.name())),
            PathSpec::PerSplit(p) => match split {
                Split::Train => p.train.clone(),
                Split::Val => p.val.clone(),
                Split::Test => p.test.clone(),
            },
        }
    }
}

/// A number per column: one number for all, a list, or a `.npy` file of them.
#[derive(Clone, Debug)]
pub(crate) enum Stat {
    /// The same number for every column.
    Number(f64),
    /// One number per column.
    List(Vec<f64>),
    /// A `.npy` file of one number per column (e.g. `latent_mean.npy`).
    File(String),
}

impl<'de> Deserialize<'de> for Stat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stat;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a list of numbers (one per column) or the path of a .npy file of them")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Stat, E> {
                Ok(Stat::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Stat, E> {
                Ok(Stat::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Stat, E> {
                Ok(Stat::Number(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stat, E> {
                Ok(Stat::File(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Stat, A::Error> {
                Vec::<f64>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Stat::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// The loss of a part's columns in the domain's loss spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PartLoss {
    /// Mean squared error.
    #[default]
    Mse,
    /// Cross-entropy against the target's argmax (for one-hot parts).
    CrossEntropy,
    /// Binary cross-entropy on logits.
    Bce,
    /// One minus cosine similarity.
    Cosine,
    /// Mean absolute error.
    L1,
    /// Left out of every loss.
    None,
}

impl PartLoss {
    /// The plugin API's kind, `None` for a part left out.
    pub(crate) fn kind(self) -> Option<LossKind> {
        match self {
            PartLoss::Mse => Some(LossKind::Mse),
            PartLoss::CrossEntropy => Some(LossKind::CrossEntropy),
            PartLoss::Bce => Some(LossKind::Bce),
            PartLoss::Cosine => Some(LossKind::Cosine),
            PartLoss::L1 => Some(LossKind::L1),
            PartLoss::None => None,
        }
    }
}

/// One part of an item: a source file per split, the columns taken from
/// it, and the transforms applied, in this order: columns, `(x - mean) /
/// std`, `x * scale + shift`, then `one_hot` or `cos_sin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartConfig {
    /// A `.npy` file per split.
    #[serde(default)]
    pub(crate) npy: Option<PathSpec>,
    /// A `.safetensors` file per split (with `tensor`).
    #[serde(default)]
    pub(crate) safetensors: Option<PathSpec>,
    /// Name of the tensor in the `.safetensors` file (`{split}` replaced).
    #[serde(default)]
    pub(crate) tensor: Option<String>,
    /// A folder of `{index}.png` images per split (with `shape`).
    #[serde(default)]
    pub(crate) images: Option<PathSpec>,
    /// `[channels, height, width]` of every image (channels 1, 3 or 4).
    #[serde(default)]
    pub(crate) shape: Option<[usize; 3]>,
    /// Values of each item to take, in order (default: all).
    #[serde(default)]
    pub(crate) columns: Option<Vec<usize>>,
    /// Subtracted before dividing by `std`.
    #[serde(default)]
    pub(crate) mean: Option<Stat>,
    /// Divides after subtracting `mean`.
    #[serde(default)]
    pub(crate) std: Option<Stat>,
    /// Multiplies after normalising.
    #[serde(default)]
    pub(crate) scale: Option<Stat>,
    /// Added after scaling.
    #[serde(default)]
    pub(crate) shift: Option<Stat>,
    /// Turns the one column (an integer class in `0..n`) into `n` values.
    #[serde(default)]
    pub(crate) one_hot: Option<usize>,
    /// Turns each column (an angle in radians) into its cosine and sine.
    #[serde(default)]
    pub(crate) cos_sin: bool,
    /// The loss of this part's values (default `mse`).
    #[serde(default)]
    pub(crate) loss: PartLoss,
    /// The weight of that loss (default 1).
    #[serde(default = "one")]
    pub(crate) weight: f32,
}

fn one() -> f32 {
    1.0
}
