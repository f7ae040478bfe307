//! Watching a run's plugin files and swapping in compatible new builds.

use super::source::{CachedTables, SwappableSource, encode_tables};
use crate::{DataLoader, ItemSource, PluginSource};
use shimmer_plugin_api::Split;
use shimmer_plugin_host::PluginLibrary;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long a changed file must stay unchanged before it is loaded: cargo
/// writes a library, then links it into place; half a second covers both.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

/// Items a probe loads per split from a new build before it is accepted.
const PROBE_ITEMS: usize = 8;

/// What `stat` says about a file: enough to notice a rebuild (a new inode
/// when cargo links a fresh file into place, or new size/mtime when it is
/// rewritten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// A hash of a file's bytes, to skip rebuilds that produced the same library.
fn content_hash(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(&bytes);
    Ok(h.finish())
}

/// One domain served by a watched file.
struct WatchedDomain {
    /// Domain name in the experiment.
    name: String,
    /// Domain kind inside the plugin.
    kind: String,
    /// The domain's config, as handed to the plugin.
    config_json: String,
    /// What the loaders read.
    source: Arc<SwappableSource>,
    /// Per split (train, val, test): items the run's groups use (largest
    /// index + 1); a new build must have at least that many.
    needs: [u64; 3],
}

/// One plugin library file and the domains it serves.
struct WatchedFile {
    path: PathBuf,
    /// The stamp of the file when it was last looked at closely.
    seen: Option<FileStamp>,
    /// Content hash of the build in use.
    hash: Option<u64>,
    /// Content hash of the last refused build (not reported twice).
    refused: Option<u64>,
    /// A change waiting to settle: its stamp and when it was first seen.
    pending: Option<(FileStamp, Instant)>,
    domains: Vec<WatchedDomain>,
}

/// An old build of a domain, waiting for its last in-flight load.
struct Retiring {
    domain: String,
    generation: u64,
    old: Weak<PluginSource>,
}

/// What a poll did, for the console and the run's logs.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// A domain now loads from a new build.
    Swapped {
        /// Domain name.
        domain: String,
        /// Swaps of this domain so far (1 for the first new build).
        generation: u64,
        /// Plugin name of the new build.
        plugin: String,
        /// Plugin version of the new build.
        version: String,
        /// The watched file.
        path: PathBuf,
    },
    /// A new build was not used; the domains keep their current build.
    Refused {
        /// The watched file.
        path: PathBuf,
        /// Domains served by the file.
        domains: Vec<String>,
        /// Plugin and version still in use.
        kept: String,
        /// Why, for the user.
        reason: String,
    },
    /// An old build is no longer used by any load: its domain was destroyed
    /// and its private file copy deleted.
    Released {
        /// Domain name.
        domain: String,
        /// The generation that was released.
        generation: u64,
    },
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchEvent::Swapped {
                domain,
                generation,
                plugin,
                version,
                path,
            } => write!(
                f,
                "hot-swap: domain `{domain}` now loads from plugin {plugin} {version} \
                 (generation {generation}, {})",
                path.display()
            ),
            WatchEvent::Refused {
                path,
                domains,
                kept,
                reason,
            } => write!(
                f,
                "hot-swap: new build of {} refused; {} keep{} {kept}: {reason}",
                path.display(),
                domains
                    .iter()
                    .map(|d| format!("domain `{d}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if domains.len() == 1 { "s" } else { "" },
            ),
            WatchEvent::Released { domain, generation } => write!(
                f,
                "hot-swap: domain `{domain}`: generation {generation} released \
                 (no load in flight uses it)"
            ),
        }
    }
}

/// Watches the plugin files of a run. [`poll`](Self::poll) is called by the
/// trainer between steps: it notices a rebuilt file, waits until it has
/// been stable for the debounce time, loads a private copy, checks it
/// against the build in use (domain kinds, latent size, item length, loss
/// spec, split sizes covering the items the run uses, a probe load of a
/// few items) and swaps it in for every domain the file serves, or keeps
/// the current build and reports why.
pub struct PluginWatcher {
    files: Vec<WatchedFile>,
    debounce: Duration,
    retiring: Vec<Retiring>,
    /// Threads encoding a build's latents when the run caches them.
    cache_threads: Option<usize>,
}

impl fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginWatcher")
            .field(
                "files",
                &self.files.iter().map(|w| &w.path).collect::<Vec<_>>(),
            )
            .field("debounce", &self.debounce)
            .finish()
    }
}

impl Default for PluginWatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginWatcher {
    /// A watcher with no file yet and the default debounce time.
    pub fn new() -> Self {
        Self {
            files: Vec::new(),
            debounce: DEFAULT_DEBOUNCE,
            retiring: Vec::new(),
            cache_threads: None,
        }
    }

    /// Sets how long a changed file must stay unchanged before it is loaded.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Watches the file `source`'s plugin was loaded from, for domain
    /// `name` (created from `config_json`). Domains of one file are swapped
    /// together.
    pub fn watch(&mut self, name: &str, config_json: &str, source: Arc<SwappableSource>) {
        let current = source.current();
        let path = current.handle().library().source().to_path_buf();
        let domain = WatchedDomain {
            name: name.to_string(),
            kind: current.handle().kind().to_string(),
            config_json: config_json.to_string(),
            source,
            needs: [0; 3],
        };
        if let Some(file) = self.files.iter_mut().find(|f| f.path == path) {
            file.domains.push(domain);
            return;
        }
        let seen = FileStamp::of(&path);
        self.files.push(WatchedFile {
            hash: content_hash(&path).ok(),
            seen,
            refused: None,
            pending: None,
            domains: vec![domain],
            path,
        });
    }

    /// The watched files.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Domain names and their current generation, in watch order.
    pub fn generations(&self) -> Vec<(String, u64)> {
        self.files
            .iter()
            .flat_map(|f| &f.domains)
            .map(|d| (d.name.clone(), d.source.generation()))
            .collect()
    }

    /// Records the items `loaders` use, so a new build with fewer items
    /// than the run's groups select is refused.
    pub fn require_items(&mut self, loaders: &[&DataLoader]) {
        let mut needs: HashMap<&str, [u64; 3]> = HashMap::new();
        for loader in loaders {
            for g in loader.groups() {
                let Some(&max) = g.items().iter().max() else {
                    continue;
                };
                for d in g.domains() {
                    let n = &mut needs.entry(d.as_str()).or_default()[g.split().code() as usize];
                    *n = (*n).max(max + 1);
                }
            }
        }
        for d in self.files.iter_mut().flat_map(|f| &mut f.domains) {
            if let Some(n) = needs.get(d.name.as_str()) {
                d.needs = *n;
            }
        }
    }

    /// Serves the watched domains from an in-memory latent cache (the run's
    /// `data.cache`): encodes the used splits of the current builds now,
    /// with `threads` threads, and those of every new build before it is
    /// swapped in. Call after [`require_items`](Self::require_items).
    pub fn enable_cache(&mut self, threads: usize) -> anyhow::Result<()> {
        let threads = threads.max(1);
        self.cache_threads = Some(threads);
        for d in self.files.iter().flat_map(|f| &f.domains) {
            let current = d.source.current();
            let tables = encode_tables(&d.name, &current, d.needs.map(|n| n > 0), threads)?;
            d.source.set_tables(tables);
        }
        Ok(())
    }

    /// Records that the run uses items `0..items` of `split` of `domain`
    /// (like [`require_items`](Self::require_items), for callers without
    /// loaders).
    pub fn require(&mut self, domain: &str, split: Split, items: u64) {
        for d in self.files.iter_mut().flat_map(|f| &mut f.domains) {
            if d.name == domain {
                let n = &mut d.needs[split.code() as usize];
                *n = (*n).max(items);
            }
        }
    }

    /// Looks at every watched file once; loads, checks and swaps in the
    /// ones whose rebuild has settled. Never fails: a bad build becomes a
    /// [`WatchEvent::Refused`].
    pub fn poll(&mut self) -> Vec<WatchEvent> {
        let mut events = self.collect_released();
        let now = Instant::now();
        for i in 0..self.files.len() {
            let file = &mut self.files[i];
            let Some(stamp) = FileStamp::of(&file.path) else {
                // Missing while cargo replaces it: look again next time.
                file.pending = None;
                continue;
            };
            if Some(stamp) == file.seen {
                file.pending = None;
                continue;
            }
            match file.pending {
                Some((s, since)) if s == stamp => {
                    if now.duration_since(since) < self.debounce {
                        continue;
                    }
                }
                _ => {
                    file.pending = Some((stamp, now));
                    continue;
                }
            }
            file.pending = None;
            file.seen = Some(stamp);
            events.extend(self.reload_file(i, false));
        }
        events
    }

    /// Loads the file of the domains at `index` (in watch order of files)
    /// now, without waiting for a change; `force` also reloads a build
    /// identical to the one in use. Used by tests and measurements of
    /// repeated reloading.
    pub fn reload_now(&mut self, index: usize, force: bool) -> Vec<WatchEvent> {
        let mut events = self.collect_released();
        if index < self.files.len() {
            self.files[index].seen = FileStamp::of(&self.files[index].path);
            events.extend(self.reload_file(index, force));
        }
        events
    }

    /// Old builds whose last load has returned since the previous poll.
    fn collect_released(&mut self) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        self.retiring.retain(|r| {
            if r.old.strong_count() == 0 {
                events.push(WatchEvent::Released {
                    domain: r.domain.clone(),
                    generation: r.generation,
                });
                false
            } else {
                true
            }
        });
        if !events.is_empty() {
            shimmer_sys::proc::trim_released_plugin_copies();
        }
        events
    }

    /// Whether every replaced build has been released.
    pub fn all_released(&mut self) -> bool {
        let before = self.retiring.len();
        self.retiring.retain(|r| r.old.strong_count() > 0);
        if self.retiring.len() < before {
            shimmer_sys::proc::trim_released_plugin_copies();
        }
        self.retiring.is_empty()
    }

    fn reload_file(&mut self, index: usize, force: bool) -> Vec<WatchEvent> {
        let file = &mut self.files[index];
        let hash = match content_hash(&file.path) {
            Ok(h) => h,
            Err(_) => return Vec::new(), // vanished again: wait for the next change
        };
        if !force && (Some(hash) == file.hash || Some(hash) == file.refused) {
            return Vec::new();
        }
        match try_load(&file.path, &file.domains, self.cache_threads) {
            Ok(new_sources) => {
                file.hash = Some(hash);
                file.refused = None;
                let mut events = Vec::new();
                for (d, (new, tables)) in file.domains.iter().zip(new_sources) {
                    let (plugin, version) = (
                        new.handle().plugin_name().to_string(),
                        new.handle().plugin_version().to_string(),
                    );
                    let (generation, old) = d.source.swap(new, tables);
                    self.retiring.push(Retiring {
                        domain: d.name.clone(),
                        generation: generation - 1,
                        old,
                    });
                    events.push(WatchEvent::Swapped {
                        domain: d.name.clone(),
                        generation,
                        plugin,
                        version,
                        path: file.path.clone(),
                    });
                }
                events.extend(self.collect_released());
                events
            }
            Err(reason) => {
                file.refused = Some(hash);
                let current = file.domains[0].source.current();
                vec![WatchEvent::Refused {
                    path: file.path.clone(),
                    domains: file.domains.iter().map(|d| d.name.clone()).collect(),
                    kept: format!(
                        "plugin {} {}",
                        current.handle().plugin_name(),
                        current.handle().plugin_version()
                    ),
                    reason,
                }]
            }
        }
    }
}

/// Opens a private copy of `path` and creates every domain of `domains`
/// from it, each checked against the build in use (and its latents
/// encoded when `cache_threads` is set); all or nothing.
fn try_load(
    path: &Path,
    domains: &[WatchedDomain],
    cache_threads: Option<usize>,
) -> Result<Vec<(PluginSource, CachedTables)>, String> {
    let library = PluginLibrary::open(path).map_err(|e| e.to_string())?;
    domains
        .iter()
        .map(|d| {
            let handle = library
                .create_domain(&d.kind, &d.config_json)
                .map_err(|e| format!("domain `{}`: {e}", d.name))?;
            let new = PluginSource::new(handle, d.config_json.clone());
            check_compatible(&d.source.current(), &new, d.needs)
                .map_err(|e| format!("domain `{}`: {e}", d.name))?;
            let tables = match cache_threads {
                Some(threads) => encode_tables(&d.name, &new, d.needs.map(|n| n > 0), threads)
                    .map_err(|e| {
                        format!("domain `{}`: encoding its latents failed: {e:#}", d.name)
                    })?,
                None => Default::default(),
            };
            Ok((new, tables))
        })
        .collect()
}

/// Whether `new` can replace `old` in a running model: same latent size,
/// item length and loss spec; splits still holding every item the run's
/// groups use; and a probe load of a few items that succeeds with finite
/// values.
pub fn check_compatible(
    old: &PluginSource,
    new: &PluginSource,
    needs: [u64; 3],
) -> Result<(), String> {
    let (o, n) = (old.handle().info(), new.handle().info());
    if o.latent_dim != n.latent_dim {
        return Err(format!(
            "latent size changed from {} to {}",
            o.latent_dim, n.latent_dim
        ));
    }
    if o.item_len != n.item_len {
        return Err(format!(
            "item length changed from {} to {}",
            o.item_len, n.item_len
        ));
    }
    if old.handle().loss_spec() != new.handle().loss_spec() {
        return Err(format!(
            "loss spec changed from {:?} to {:?}",
            old.handle().loss_spec().segments,
            new.handle().loss_spec().segments
        ));
    }
    for split in [Split::Train, Split::Val, Split::Test] {
        let need = needs[split.code() as usize];
        let size = n.split_sizes.get(split);
        if size < need {
            return Err(format!(
                "the {split} split shrank to {size} items, but the run uses items up to {}",
                need - 1
            ));
        }
    }
    probe(new, needs)
}

/// Loads up to [`PROBE_ITEMS`] items spread over each split the run uses
/// (always including the first and the last used item) and checks them.
fn probe(new: &PluginSource, needs: [u64; 3]) -> Result<(), String> {
    let dim = new.latent_dim();
    for split in [Split::Train, Split::Val, Split::Test] {
        let need = needs[split.code() as usize];
        if need == 0 {
            continue;
        }
        let count = (PROBE_ITEMS as u64).min(need);
        let mut indices: Vec<u64> = (0..count)
            .map(|k| {
                if count == 1 {
                    0
                } else {
                    k * (need - 1) / (count - 1)
                }
            })
            .collect();
        indices.dedup();
        let mut out = vec![0.0f32; indices.len() * dim];
        new.load_latents(split, &indices, &mut out)
            .map_err(|e| format!("probe load of {split} items {indices:?} failed: {e:#}"))?;
        if let Some(pos) = out.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "probe load of {split} item {} gave a non-finite value ({})",
                indices[pos / dim.max(1)],
                out[pos]
            ));
        }
    }
    Ok(())
}
