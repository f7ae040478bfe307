//! The `data:` section of an experiment: which items form which group, and
//! how batches are drawn from the groups.
//!
//! ```yaml
//! data:
//!   batch_size: 32
//!   workers: 2
//!   groups:
//!     - { domains: [v, t], items: { count: 32 } }   # 32 paired items
//!     - { domains: [v] }                             # every item, unpaired
//!     - { domains: [t] }
//! ```
//!
//! Every struct rejects unknown keys. Validation and test sets default to
//! shimmer's: the whole `val` (`test`) split, all domains paired.

use serde::{Deserialize, Serialize};
use shimmer_plugin_api::Split;
use std::path::PathBuf;

/// How batches are drawn: group datasets, batch size, order, threads, cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Items per group in one batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Loader threads; `0` loads in the consumer's thread.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches prepared ahead of the consumer (the bound of the queue).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// How training groups are combined into one batch (Lightning's
    /// `CombinedLoader` mode).
    #[serde(default)]
    pub mode: CombineMode,
    /// Drops each training group's last incomplete batch.
    #[serde(default = "yes")]
    pub drop_last: bool,
    /// Reshuffles each training group every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Seed of the data order; defaults to the experiment's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// How training groups are stretched to a common length.
    #[serde(default)]
    pub repeat: RepeatMode,
    /// Latent cache of the (frozen) plugin domains.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The training groups, in order.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Validation sets, visited one after the other (`sequential`).
    #[serde(default = "default_val")]
    pub val: Vec<EvalSetConfig>,
    /// Test sets, visited one after the other (`sequential`).
    #[serde(default = "default_test")]
    pub test: Vec<EvalSetConfig>,
}

fn default_batch_size() -> usize {
    32
}
fn default_workers() -> usize {
    2
}
fn default_prefetch() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn default_val() -> Vec<EvalSetConfig> {
    vec![EvalSetConfig::whole(Split::Val)]
}
fn default_test() -> Vec<EvalSetConfig> {
    vec![EvalSetConfig::whole(Split::Test)]
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            workers: default_workers(),
            prefetch: default_prefetch(),
            mode: CombineMode::default(),
            drop_last: true,
            shuffle: true,
            seed: None,
            repeat: RepeatMode::default(),
            cache: CacheConfig::default(),
            groups: Vec::new(),
            val: default_val(),
            test: default_test(),
        }
    }
}

/// Lightning's `CombinedLoader` modes: how several group loaders make one
/// stream of batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombineMode {
    /// Every batch holds every group; the epoch ends with the shortest group.
    #[default]
    MinSize,
    /// Every batch holds every group; the epoch ends with the longest group,
    /// shorter groups start over (reshuffled) when exhausted.
    MaxSizeCycle,
    /// The epoch ends with the longest group; exhausted groups are absent
    /// from the remaining batches.
    MaxSize,
    /// Groups one after the other, one group per batch (validation).
    Sequential,
}

/// How training groups are given a common length (shimmer's
/// `RepeatedDataset` with `min_size` = the largest group).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepeatMode {
    /// Groups keep their own length.
    None,
    /// Repeat whole copies until at least the largest group's length
    /// (`RepeatedDataset(drop_last=False)`, shimmer's tutorial).
    #[default]
    Largest,
    /// Repeat to exactly the largest group's length
    /// (`RepeatedDataset(drop_last=True)`).
    LargestExact,
}

/// Latent cache settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Encodes every used split of every domain once, before the first
    /// batch, and serves batches from memory.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also keeps the encoded latents in files here, keyed by plugin name,
    /// version, domain kind and config, reused by later runs.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
        }
    }
}

/// Which items of a split a group uses. Items of a group are paired by
/// index: item `i` of every domain of the group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Items {
    /// The whole split.
    #[default]
    All,
    /// Items `start..end` (end excluded).
    Range([u64; 2]),
    /// This many items.
    Count(u64),
    /// This fraction of the split (rounded down).
    Proportion(f64),
    /// Indices listed in a file: a `.npy` array of integers, or text
    /// (whitespace or comma separated, `#` starts a comment). `{split}` in
    /// the path is replaced by the group's split; a relative path is taken
    /// from the experiment's folder.
    File(PathBuf),
    /// One entry of a shimmer-ssd domain-split file (a pickled
    /// `dict[frozenset[str], int64 array]`): by default the entry of the
    /// group's own domains.
    DomainSplit(DomainSplitItems),
}

impl Items {
    /// Makes a relative item file absolute, taken from `base` (the
    /// experiment's folder): for a config written elsewhere (a sweep's
    /// recorded trial configs) that must still find its files.
    pub fn anchor(&mut self, base: &std::path::Path) {
        let file = match self {
            Items::File(file) => file,
            Items::DomainSplit(d) => &mut d.file,
            _ => return,
        };
        if file.is_relative() {
            *file = base.join(&*file);
        }
    }
}

impl DataConfig {
    /// [`Items::anchor`] for every group and evaluation set.
    pub fn anchor_item_files(&mut self, base: &std::path::Path) {
        for g in &mut self.groups {
            g.items.anchor(base);
        }
        for e in self.val.iter_mut().chain(&mut self.test) {
            e.items.anchor(base);
        }
    }
}

/// Which entry of which domain-split file a group takes its items from.
///
/// ```yaml
/// items: { domain_split: "domain_splits/{split}_attr:1.0_attr,v:0.5_v:1.0_seed:0_domain_split.npy" }
/// items: { domain_split: { file: splits.npy, entry: [attr, v] } }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainSplitItems {
    /// The `.npy` file; `{split}` is replaced by the group's split, a
    /// relative path is taken from the experiment's folder.
    pub file: PathBuf,
    /// The domain names of the entry (its frozenset); default: the
    /// group's domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for DomainSplitItems {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            file: PathBuf,
            #[serde(default)]
            entry: Option<Vec<String>>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DomainSplitItems;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "the path of a domain-split file, or `{ file: ..., entry: [domain, ...] }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DomainSplitItems, E> {
                Ok(DomainSplitItems {
                    file: v.into(),
                    entry: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DomainSplitItems, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DomainSplitItems {
                    file: f.file,
                    entry: f.entry,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Which items `count` and `proportion` pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The first ones.
    #[default]
    First,
    /// A random subset drawn from the data seed and the group's name, kept
    /// in increasing order.
    Random,
}

/// One training group: a set of domains whose items are paired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name of the group in batches; defaults to its domains joined by `,`.
    #[serde(default)]
    pub name: Option<String>,
    /// The group's domains (names from `domains:`), in order.
    pub domains: Vec<String>,
    /// Which split the items come from.
    #[serde(default = "train_split")]
    pub split: Split,
    /// Which items.
    #[serde(default, with = "serde_norway::with::singleton_map")]
    pub items: Items,
    /// Which items `count` / `proportion` pick.
    #[serde(default)]
    pub select: Select,
}

fn train_split() -> Split {
    Split::Train
}

/// One validation or test set, built as shimmer does: a group of paired
/// domains whose batches also carry each domain alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSetConfig {
    /// Name of the paired group in batches; defaults to its domains joined by `,`.
    #[serde(default)]
    pub name: Option<String>,
    /// The paired domains; defaults to every domain of the experiment.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// Which split; defaults to `val` for validation sets, `test` for test sets.
    #[serde(default)]
    pub split: Option<Split>,
    /// Which items.
    #[serde(default, with = "serde_norway::with::singleton_map")]
    pub items: Items,
    /// Which items `count` / `proportion` pick.
    #[serde(default)]
    pub select: Select,
}

impl EvalSetConfig {
    /// Every item of `split`, every domain.
    pub fn whole(split: Split) -> Self {
        Self {
            name: None,
            domains: None,
            split: Some(split),
            items: Items::All,
            select: Select::First,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DataConfig, serde_norway::Error> {
        serde_norway::from_str(yaml)
    }

    #[test]
    fn item_files_are_anchored_to_a_folder() {
        let mut c = parse(
            "groups:\n  - { domains: [a], items: { file: 'lists/{split}.txt' } }\n  \
             - { domains: [a, b], items: { domain_split: /abs/s.npy } }\n  \
             - { domains: [b], items: { count: 3 } }\n\
             val: [{ items: { file: v.npy } }]\n",
        )
        .unwrap();
        c.anchor_item_files(std::path::Path::new("/exp"));
        assert_eq!(
            c.groups[0].items,
            Items::File("/exp/lists/{split}.txt".into())
        );
        let Items::DomainSplit(d) = &c.groups[1].items else {
            panic!("{:?}", c.groups[1].items)
        };
        assert_eq!(d.file, std::path::PathBuf::from("/abs/s.npy"));
        assert_eq!(c.groups[2].items, Items::Count(3));
        assert_eq!(c.val[0].items, Items::File("/exp/v.npy".into()));
    }

    #[test]
    fn parses_every_item_selection() {
        let c = parse(
            r#"
batch_size: 8
mode: max_size_cycle
groups:
  - { domains: [a, b], items: { count: 32 }, select: random }
  - { domains: [a], items: all }
  - { domains: [b], items: { range: [10, 20] }, split: val }
  - { domains: [b], items: { proportion: 0.5 } }
  - { domains: [a], items: { file: paired.txt } }
  - { domains: [a, b], items: { domain_split: "s/{split}.npy" } }
  - { domains: [a], items: { domain_split: { file: s.npy, entry: [a, b] } } }
"#,
        )
        .unwrap();
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.mode, CombineMode::MaxSizeCycle);
        let items: Vec<_> = c.groups.iter().map(|g| g.items.clone()).collect();
        assert_eq!(
            items,
            [
                Items::Count(32),
                Items::All,
                Items::Range([10, 20]),
                Items::Proportion(0.5),
                Items::File("paired.txt".into()),
                Items::DomainSplit(DomainSplitItems {
                    file: "s/{split}.npy".into(),
                    entry: None
                }),
                Items::DomainSplit(DomainSplitItems {
                    file: "s.npy".into(),
                    entry: Some(vec!["a".into(), "b".into()])
                }),
            ]
        );
        let yaml = serde_norway::to_string(&c).unwrap();
        assert_eq!(parse(&yaml).unwrap(), c, "{yaml}");
        let err =
            parse("groups: [{ domains: [a], items: { domain_split: { file: x, entri: [a] } } }]")
                .unwrap_err()
                .to_string();
        assert!(err.contains("entri"), "{err}");
        assert_eq!(c.groups[0].select, Select::Random);
        assert_eq!(c.groups[2].split, Split::Val);
        assert_eq!(c.val, [EvalSetConfig::whole(Split::Val)]);
        assert!(c.cache.enabled);
    }

    #[test]
    fn round_trips_through_yaml_and_json() {
        let c = parse(
            "groups: [{ domains: [a, b], items: { count: 3 } }, { domains: [a], items: all }]",
        )
        .unwrap();
        let yaml = serde_norway::to_string(&c).unwrap();
        assert_eq!(parse(&yaml).unwrap(), c, "{yaml}");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""items":{"count":3}"#), "{json}");
        assert_eq!(serde_json::from_str::<DataConfig>(&json).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse("groups: [{ domains: [a], itmes: all }]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("itmes"), "{err}");
        assert!(parse("batchsize: 3").is_err());
        assert!(parse("mode: min").is_err());
    }
}
