//! Group datasets: a set of domains read at the same item indices of one
//! split, so item `k` of the group pairs item `items[k]` of every domain.
//!
//! ```
//! use shimmer_data::group::{ItemFiles, ResolveItems};
//! use shimmer_data::{GroupDataset, Items, Select};
//! use shimmer_plugin_api::Split;
//!
//! let domains = vec!["v".to_string(), "t".to_string()];
//! let items = Items::Count(32)
//!     .resolve(1000, Select::First, 0, &ItemFiles::new(Split::Train, &domains))
//!     .unwrap();
//! let paired = GroupDataset::new("v,t", domains, Split::Train, items).unwrap();
//! assert_eq!(paired.len(), 32);
//! assert_eq!(paired.items()[31], 31);
//! ```

use super::sampler::mix_seed;
use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use shimmer_config::{DomainSplitItems, Items, Select};
use shimmer_formats::DomainSplit;
use shimmer_plugin_api::Split;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One group's dataset: its name, domains, split and item indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDataset {
    name: String,
    domains: Vec<String>,
    split: Split,
    items: Arc<[u64]>,
    with_singles: bool,
}

impl GroupDataset {
    /// A group of `domains` reading `items` of `split`. Fails on an empty
    /// or repeated domain list.
    pub fn new(
        name: impl Into<String>,
        domains: Vec<String>,
        split: Split,
        items: Vec<u64>,
    ) -> Result<Self> {
        let name = name.into();
        ensure!(!domains.is_empty(), "group `{name}` has no domains");
        for (i, d) in domains.iter().enumerate() {
            ensure!(
                !domains[..i].contains(d),
                "group `{name}` lists domain `{d}` twice"
            );
        }
        Ok(Self {
            name,
            domains,
            split,
            items: items.into(),
            with_singles: false,
        })
    }

    /// Makes every batch of this group also carry each of its domains alone
    /// (same items), as shimmer's `validation_step` does.
    pub fn with_singles(mut self) -> Self {
        self.with_singles = true;
        self
    }

    /// Whether batches also carry each domain alone.
    pub fn has_singles(&self) -> bool {
        self.with_singles
    }

    /// Name of the group in batches.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domains, in order.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// The split items come from.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Item indices, in dataset order.
    pub fn items(&self) -> &[u64] {
        &self.items
    }

    /// Shared item indices.
    pub fn items_arc(&self) -> Arc<[u64]> {
        self.items.clone()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the group has no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Default name of a group: its domains joined by `,`.
pub fn default_group_name(domains: &[String]) -> String {
    domains.join(",")
}

/// What the file-based selections need: where relative paths start, the
/// split a `{split}` in a path stands for, and the group's domains (the
/// default entry of a domain-split file).
#[derive(Clone, Copy, Debug)]
pub struct ItemFiles<'a> {
    base_dir: Option<&'a Path>,
    split: Split,
    domains: &'a [String],
}

impl<'a> ItemFiles<'a> {
    /// Files of a group of `domains` over `split`, relative paths taken
    /// from the working folder.
    pub fn new(split: Split, domains: &'a [String]) -> Self {
        Self {
            base_dir: None,
            split,
            domains,
        }
    }

    /// Relative paths taken from `dir` (the experiment's folder).
    pub fn base_dir(mut self, dir: Option<&'a Path>) -> Self {
        self.base_dir = dir;
        self
    }

    /// `path` with `{split}` replaced and joined to the base folder.
    fn path(&self, path: &Path) -> PathBuf {
        let text = path.to_string_lossy().replace("{split}", self.split.name());
        let path = PathBuf::from(text);
        match self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        }
    }
}

/// Largest text item list read (bytes).
const MAX_ITEM_LIST_BYTES: u64 = 1 << 30;

/// The item indices an [`Items`] selection of the YAML stands for.
pub trait ResolveItems {
    /// The item indices this selection means for a split of `size` items.
    /// `seed` drives [`Select::Random`]; `files` says how to find list and
    /// domain-split files. Every index is checked against `size`.
    ///
    /// # Errors
    /// A list file that cannot be read, or an index past the split's end.
    fn resolve(&self, size: u64, select: Select, seed: u64, files: &ItemFiles) -> Result<Vec<u64>>;
}

impl ResolveItems for Items {
    fn resolve(&self, size: u64, select: Select, seed: u64, files: &ItemFiles) -> Result<Vec<u64>> {
        let pick = |n: u64| -> Result<Vec<u64>> {
            ensure!(
                n <= size,
                "{n} items asked for, but the split has only {size}"
            );
            Ok(match select {
                Select::First => (0..n).collect(),
                Select::Random => {
                    let (size, n) = (usize::try_from(size)?, usize::try_from(n)?);
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let mut v: Vec<u64> = sample(&mut rng, size, n)
                        .into_iter()
                        .map(|i| i as u64)
                        .collect();
                    v.sort_unstable();
                    v
                }
            })
        };
        let within = |items: Vec<u64>, what: &str| -> Result<Vec<u64>> {
            if let Some(bad) = items.iter().find(|&&i| i >= size) {
                bail!("{what} names item {bad}, but the split has only {size}");
            }
            Ok(items)
        };
        match self {
            Items::All => Ok((0..size).collect()),
            Items::Range([start, end]) => {
                ensure!(
                    start <= end && *end <= size,
                    "range [{start}, {end}) is not within the split's {size} items"
                );
                Ok((*start..*end).collect())
            }
            Items::Count(n) => pick(*n),
            Items::Proportion(p) => {
                ensure!(
                    p.is_finite() && (0.0..=1.0).contains(p),
                    "proportion {p} is not between 0 and 1"
                );
                pick((size as f64 * p).floor() as u64)
            }
            Items::File(path) => {
                let path = files.path(path);
                let items = if path.extension().is_some_and(|e| e == "npy") {
                    shimmer_formats::npy::open_npy(&path)
                        .and_then(|a| a.to_indices())
                        .map_err(|e| anyhow::anyhow!("item list {e}"))?
                } else {
                    let text = shimmer_formats::file::read_text(&path, MAX_ITEM_LIST_BYTES)
                        .map_err(|e| anyhow::anyhow!("item list {e}"))?;
                    parse_item_list(&text)
                        .with_context(|| format!("in item list {}", path.display()))?
                };
                within(items, &format!("item list {}", path.display()))
            }
            Items::DomainSplit(DomainSplitItems { file, entry }) => {
                let path = files.path(file);
                let split = DomainSplit::read(&path)
                    .map_err(|e| anyhow::anyhow!("domain-split file {e}"))?;
                let entry = entry.as_deref().unwrap_or(files.domains);
                let Some(items) = split.items(entry) else {
                    bail!(
                        "domain-split file {} has no entry {{{}}}; it has {} (choose one with `entry: [...]`)",
                        path.display(),
                        entry.join(", "),
                        split.groups_text()
                    );
                };
                within(
                    items.to_vec(),
                    &format!(
                        "domain-split file {} (entry {{{}}})",
                        path.display(),
                        entry.join(", ")
                    ),
                )
            }
        }
    }
}

/// Parses whitespace- or comma-separated indices; `#` starts a comment.
fn parse_item_list(text: &str) -> Result<Vec<u64>> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for word in line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
        {
            let i = word
                .parse::<u64>()
                .with_context(|| format!("line {}: `{word}` is not an item index", n + 1))?;
            items.push(i);
        }
    }
    Ok(items)
}

/// Seed of a group's random item selection: the data seed and the group's
/// name, so that adding or reordering groups keeps each subset.
pub fn selection_seed(seed: u64, group_name: &str) -> u64 {
    mix_seed(&[seed, super::batch::fnv1a(group_name.as_bytes())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> ItemFiles<'static> {
        ItemFiles::new(Split::Train, &[])
    }

    #[test]
    fn every_selection_resolves() {
        let r = |items: Items| items.resolve(10, Select::First, 0, &files());
        assert_eq!(r(Items::All).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(r(Items::Range([3, 6])).unwrap(), [3, 4, 5]);
        assert_eq!(r(Items::Count(2)).unwrap(), [0, 1]);
        assert_eq!(r(Items::Proportion(0.35)).unwrap(), [0, 1, 2]);
        assert!(r(Items::Count(11)).is_err());
        assert!(r(Items::Range([5, 11])).is_err());
        assert!(r(Items::Proportion(1.5)).is_err());
    }

    #[test]
    fn random_selection_is_seeded_sorted_and_distinct() {
        let a = Items::Count(5)
            .resolve(100, Select::Random, 7, &files())
            .unwrap();
        let b = Items::Count(5)
            .resolve(100, Select::Random, 7, &files())
            .unwrap();
        let c = Items::Count(5)
            .resolve(100, Select::Random, 8, &files())
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    }

    #[test]
    fn list_file_is_read_relative_to_base_dir_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "# paired\n3, 1\n4 # four\n").unwrap();
        let items = Items::File("l.txt".into());
        assert_eq!(
            items
                .resolve(5, Select::First, 0, &files().base_dir(Some(dir.path())))
                .unwrap(),
            [3, 1, 4]
        );
        let err = items
            .resolve(4, Select::First, 0, &files().base_dir(Some(dir.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("item 4"), "{err}");
        std::fs::write(dir.path().join("l.txt"), "1 x").unwrap();
        let err = format!(
            "{:#}",
            items
                .resolve(5, Select::First, 0, &files().base_dir(Some(dir.path())))
                .unwrap_err()
        );
        assert!(err.contains("`x`"), "{err}");
    }

    #[test]
    fn npy_lists_are_integer_arrays() {
        use npyz::WriterBuilder;
        let dir = tempfile::tempdir().unwrap();
        let save = |name: &str, values: &[i64]| {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&[values.len() as u64])
                .writer(file)
                .begin_nd()
                .unwrap();
            w.extend(values.iter().copied()).unwrap();
            w.finish().unwrap();
        };
        save("train_paired.npy", &[4, 0, 2]);
        let items = Items::File("{split}_paired.npy".into());
        let files = files().base_dir(Some(dir.path()));
        assert_eq!(
            items.resolve(5, Select::First, 0, &files).unwrap(),
            [4, 0, 2]
        );
        let err = items
            .resolve(4, Select::First, 0, &files)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("train_paired.npy names item 4, but the split has only 4"),
            "{err}"
        );
        let val = ItemFiles::new(Split::Val, &[]).base_dir(Some(dir.path()));
        let err = items
            .resolve(4, Select::First, 0, &val)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("item list ") && err.contains("val_paired.npy: cannot open"),
            "{err}"
        );
    }

    #[test]
    fn domain_split_entries_resolve_by_the_group_domains() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../../shared/datasets/simple-shapes-sample");
        if !root.exists() {
            eprintln!("skipped: no sample dataset at {}", root.display());
            return;
        }
        let file = "domain_splits/{split}_attr:1.0_attr,v:0.5_v:1.0_seed:0_domain_split.npy";
        let items = Items::DomainSplit(DomainSplitItems {
            file: file.into(),
            entry: None,
        });
        let resolve = |split: Split, domains: &[&str], size: u64| {
            let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
            items.resolve(
                size,
                Select::First,
                0,
                &ItemFiles::new(split, &domains).base_dir(Some(&root)),
            )
        };
        assert_eq!(resolve(Split::Train, &["v", "attr"], 4).unwrap(), [0, 1]);
        assert_eq!(resolve(Split::Train, &["v"], 4).unwrap(), [0, 1, 2, 3]);
        assert_eq!(resolve(Split::Test, &["attr", "v"], 2).unwrap(), [1]);
        let err = resolve(Split::Train, &["t"], 4).unwrap_err().to_string();
        assert!(
            err.contains("has no entry {t}; it has {attr, v}, {v}, {attr}"),
            "{err}"
        );
        let err = resolve(Split::Train, &["v"], 3).unwrap_err().to_string();
        assert!(
            err.ends_with("(entry {v}) names item 3, but the split has only 3"),
            "{err}"
        );
        let chosen = Items::DomainSplit(DomainSplitItems {
            file: file.into(),
            entry: Some(vec!["attr".into(), "v".into()]),
        });
        let domains = vec!["v".to_string()];
        let files = ItemFiles::new(Split::Train, &domains).base_dir(Some(&root));
        assert_eq!(chosen.resolve(4, Select::First, 0, &files).unwrap(), [0, 1]);
    }

    #[test]
    fn repeated_domain_is_an_error() {
        assert!(
            GroupDataset::new("g", vec!["a".into(), "a".into()], Split::Train, vec![]).is_err()
        );
    }
}
