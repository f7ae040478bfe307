//! Latent cache for frozen domains: every used split is loaded and encoded
//! once (with several threads), then batches are copied from memory. With a
//! cache folder, the latents also go to a file keyed by the source's
//! [`ItemSource::cache_key`] (plugin name, version, kind, config) and split,
//! and later runs read the file instead of calling the plugin.
//!
//! ```
//! use shimmer_data::{CachedSource, ItemSource, MemorySource};
//! use shimmer_plugin_api::Split;
//! use std::sync::Arc;
//!
//! let src = Arc::new(MemorySource::from_fn(2, [3, 0, 0], |_, i, c| (i * 10) as f32 + c as f32));
//! let cached = CachedSource::build("a", src, &[Split::Train], None, 2).unwrap();
//! let mut out = [0.0; 2];
//! cached.load_latents(Split::Train, &[2], &mut out).unwrap();
//! assert_eq!(out, [20.0, 21.0]);
//! ```

use super::batch::fnv1a;
use super::loader::blame;
use super::source::{ItemSource, Sources, copy_rows};
use anyhow::{Context, Result, bail};
use shimmer_plugin_api::Split;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Items encoded per call while filling the cache.
const BLOCK_ITEMS: usize = 1024;
/// First bytes of a cache file (format version 1).
const MAGIC: &[u8; 8] = b"SHMRLAT1";

/// A source whose listed splits are held, encoded, in memory; other splits
/// go to the wrapped source.
pub struct CachedSource {
    inner: Arc<dyn ItemSource>,
    tables: [Option<Arc<Vec<f32>>>; 3],
}

impl std::fmt::Debug for CachedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached: Vec<Split> = Split::ALL
            .into_iter()
            .filter(|s| self.tables[s.code() as usize].is_some())
            .collect();
        f.debug_struct("CachedSource")
            .field("source", &self.inner.describe())
            .field("cached_splits", &cached)
            .finish()
    }
}

impl CachedSource {
    /// Encodes `splits` of `inner` (the data of domain `domain`) into
    /// memory with `threads` threads, or reads them from `dir` when a file
    /// with the same key is there (and writes it otherwise).
    pub fn build(
        domain: &str,
        inner: Arc<dyn ItemSource>,
        splits: &[Split],
        dir: Option<&Path>,
        threads: usize,
    ) -> Result<Self> {
        // `Arc<Vec>` rather than `Arc<[f32]>`: converting would copy the table.
        let mut tables: [Option<Arc<Vec<f32>>>; 3] = Default::default();
        for &split in splits {
            let slot = &mut tables[split.code() as usize];
            if slot.is_some() {
                continue;
            }
            let file = match (dir, inner.cache_key()) {
                (Some(dir), Some(key)) => Some((cache_file(dir, &key, split), key)),
                _ => None,
            };
            let expected = table_len(domain, inner.as_ref(), split)?;
            if let Some((path, key)) = &file
                && let Some(table) = read_cache_file(path, key, inner.latent_dim(), expected)?
            {
                *slot = Some(Arc::new(table));
                continue;
            }
            let table = encode_split(domain, inner.as_ref(), split, threads)?;
            if let Some((path, key)) = &file {
                write_cache_file(path, key, inner.latent_dim(), &table).with_context(|| {
                    format!(
                        "domain `{domain}`: cannot write latent cache {}",
                        path.display()
                    )
                })?;
            }
            *slot = Some(Arc::new(table));
        }
        Ok(Self { inner, tables })
    }

    /// The wrapped source.
    pub fn inner(&self) -> &Arc<dyn ItemSource> {
        &self.inner
    }
}

impl ItemSource for CachedSource {
    fn latent_dim(&self) -> usize {
        self.inner.latent_dim()
    }

    fn split_size(&self, split: Split) -> u64 {
        self.inner.split_size(split)
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        match &self.tables[split.code() as usize] {
            Some(table) => copy_rows(table, self.latent_dim(), split, indices, out),
            None => self.inner.load_latents(split, indices, out),
        }
    }

    fn cache_key(&self) -> Option<String> {
        self.inner.cache_key()
    }

    fn plugin_build(&self) -> Option<crate::source::PluginBuild> {
        self.inner.plugin_build()
    }

    fn describe(&self) -> String {
        format!("{}, cached", self.inner.describe())
    }

    fn loss_spec(&self) -> Option<shimmer_plugin_api::LossSpec> {
        self.inner.loss_spec()
    }

    fn render(&self, latents: &[f32], n: usize) -> Result<Option<crate::Rendered>> {
        self.inner.render(latents, n)
    }
}

/// Wraps every source named in `needs` (domain -> splits it must serve) in
/// a [`CachedSource`]; other sources stay as they are.
pub fn cache_sources(
    sources: &Sources,
    needs: &[(String, Vec<Split>)],
    dir: Option<&Path>,
    threads: usize,
) -> Result<Sources> {
    let mut out = sources.clone();
    for (domain, splits) in needs {
        let src = sources
            .get(domain)
            .with_context(|| format!("domain `{domain}` has no data source to cache"))?;
        let cached = CachedSource::build(domain, src.clone(), splits, dir, threads)?;
        out.insert(domain.clone(), Arc::new(cached));
    }
    Ok(out)
}

/// Values in the latent table of `split` (items x latent size), refused
/// when it cannot be addressed or would not fit in the memory available
/// now, whether it is encoded or read back from a cache file.
fn table_len(domain: &str, src: &dyn ItemSource, split: Split) -> Result<usize> {
    let (n, dim) = (src.split_size(split), src.latent_dim());
    let len = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(dim))
        .with_context(|| format!("domain `{domain}`: {split} split too large to cache"))?;
    shimmer_sys::memory::ensure_fits(
        &format!("the latent cache of domain `{domain}`'s {split} split ({n} items x {dim})"),
        len as u128 * 4,
        shimmer_sys::memory::available_bytes(),
    )?;
    Ok(len)
}

/// Loads and encodes a whole split, `BLOCK_ITEMS` at a time, blocks spread
/// over `threads` threads. The first failing block (in item order) is
/// reported, with its failing item.
pub fn encode_split(
    domain: &str,
    src: &dyn ItemSource,
    split: Split,
    threads: usize,
) -> Result<Vec<f32>> {
    let dim = src.latent_dim();
    let len = table_len(domain, src, split)?;
    let mut table = vec![0.0f32; len];
    if len == 0 {
        return Ok(table);
    }
    let threads = threads.max(1);
    let mut shares: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
    for (b, chunk) in table.chunks_mut(BLOCK_ITEMS * dim).enumerate() {
        shares[b % threads].push((b, chunk));
    }
    let mut errors: Vec<(usize, anyhow::Error)> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                s.spawn(move || -> Option<(usize, anyhow::Error)> {
                    for (b, chunk) in share {
                        let start = (b * BLOCK_ITEMS) as u64;
                        let items: Vec<u64> = (start..start + (chunk.len() / dim) as u64).collect();
                        if let Err(e) = src.load_latents(split, &items, chunk) {
                            return Some((b, blame(src, domain, split, &items, e)));
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Some((
                    usize::MAX,
                    anyhow::anyhow!("domain `{domain}`: a thread encoding the cache panicked"),
                )),
            })
            .collect()
    });
    errors.sort_by_key(|(b, _)| *b);
    match errors.into_iter().next() {
        Some((_, e)) => Err(e.context(format!("while caching the {split} latents"))),
        None => Ok(table),
    }
}

/// `<dir>/<fnv1a(key)>-<split>.latents`.
pub fn cache_file(dir: &Path, key: &str, split: Split) -> PathBuf {
    dir.join(format!("{:016x}-{split}.latents", fnv1a(key.as_bytes())))
}

/// Reads a cache file if it exists and holds `key` with the expected
/// shape; `Ok(None)` when missing or stale (it will be rewritten).
fn read_cache_file(path: &Path, key: &str, dim: usize, len: usize) -> Result<Option<Vec<f32>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open latent cache {}", path.display()));
        }
    };
    let mut r = BufReader::new(file);
    let read = |r: &mut BufReader<std::fs::File>| -> std::io::Result<Option<Vec<f32>>> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        let mut word = [0u8; 8];
        r.read_exact(&mut word)?;
        let key_len = u64::from_le_bytes(word) as usize;
        if &magic != MAGIC || key_len != key.len() {
            return Ok(None);
        }
        let mut stored = vec![0u8; key_len];
        r.read_exact(&mut stored)?;
        r.read_exact(&mut word)?;
        let stored_dim = u64::from_le_bytes(word) as usize;
        r.read_exact(&mut word)?;
        let stored_len = u64::from_le_bytes(word) as usize;
        if stored != key.as_bytes() || stored_dim != dim || stored_len != len {
            return Ok(None);
        }
        let mut table = vec![0.0f32; len];
        let mut bytes = vec![0u8; 4 * 65536];
        for chunk in table.chunks_mut(65536) {
            let b = &mut bytes[..4 * chunk.len()];
            r.read_exact(b)?;
            for (v, x) in chunk.iter_mut().zip(b.chunks_exact(4)) {
                *v = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            }
        }
        Ok(Some(table))
    };
    match read(&mut r) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read latent cache {}", path.display())),
    }
}

/// Writes a cache file atomically (a temporary file renamed into place).
fn write_cache_file(path: &Path, key: &str, dim: usize, table: &[f32]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    std::fs::create_dir_all(dir)?;
    shimmer_sys::fs::write_atomic_with(path, |_, file| {
        let mut w = BufWriter::new(file);
        w.write_all(MAGIC)?;
        w.write_all(&(key.len() as u64).to_le_bytes())?;
        w.write_all(key.as_bytes())?;
        w.write_all(&(dim as u64).to_le_bytes())?;
        w.write_all(&(table.len() as u64).to_le_bytes())?;
        let mut bytes = Vec::with_capacity(4 * 65536);
        for chunk in table.chunks(65536) {
            bytes.clear();
            chunk
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            w.write_all(&bytes)?;
        }
        w.flush()?;
        Ok(())
    })?;
    if !path.exists() {
        bail!("{} vanished after writing", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySource;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the items it is asked to load.
    struct Counting {
        inner: MemorySource,
        loads: AtomicUsize,
    }

    impl ItemSource for Counting {
        fn latent_dim(&self) -> usize {
            self.inner.latent_dim()
        }
        fn split_size(&self, split: Split) -> u64 {
            self.inner.split_size(split)
        }
        fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
            self.loads.fetch_add(indices.len(), Ordering::Relaxed);
            if indices.contains(&2500) {
                bail!("item 2500 is corrupt");
            }
            self.inner.load_latents(split, indices, out)
        }
        fn cache_key(&self) -> Option<String> {
            self.inner.cache_key()
        }
    }

    fn counting(n: u64, key: &str) -> Arc<Counting> {
        Arc::new(Counting {
            inner: MemorySource::from_fn(3, [n, 5, 0], |s, i, c| {
                (s.code() as f32) * 1e6 + i as f32 * 3.0 + c as f32
            })
            .with_cache_key(key),
            loads: AtomicUsize::new(0),
        })
    }

    #[test]
    fn cache_serves_the_same_values_and_loads_each_item_once() {
        let src = counting(2400, "k");
        let cached =
            CachedSource::build("a", src.clone(), &[Split::Train, Split::Train], None, 3).unwrap();
        assert_eq!(src.loads.load(Ordering::Relaxed), 2400);
        let mut a = vec![0.0; 9];
        let mut b = vec![0.0; 9];
        cached
            .load_latents(Split::Train, &[2399, 0, 1500], &mut a)
            .unwrap();
        src.inner
            .load_latents(Split::Train, &[2399, 0, 1500], &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(src.loads.load(Ordering::Relaxed), 2400);
        // An uncached split goes to the source.
        cached.load_latents(Split::Val, &[4, 0, 1], &mut a).unwrap();
        assert_eq!(src.loads.load(Ordering::Relaxed), 2403);
    }

    #[test]
    fn file_cache_is_reused_and_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let src = counting(100, "plugin=x\nversion=1");
        CachedSource::build("a", src.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(src.loads.load(Ordering::Relaxed), 100);
        let again = counting(100, "plugin=x\nversion=1");
        let cached =
            CachedSource::build("a", again.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(again.loads.load(Ordering::Relaxed), 0, "read from the file");
        let mut out = vec![0.0; 3];
        cached.load_latents(Split::Train, &[7], &mut out).unwrap();
        assert_eq!(out, [21.0, 22.0, 23.0]);
        // Another version is another file.
        let other = counting(100, "plugin=x\nversion=2");
        CachedSource::build("a", other.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(other.loads.load(Ordering::Relaxed), 100);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_failing_item_is_named() {
        let src = counting(4000, "k");
        let err = format!(
            "{:#}",
            CachedSource::build("vision", src, &[Split::Train], None, 2).unwrap_err()
        );
        assert!(
            err.contains("domain `vision`") && err.contains("train item 2500"),
            "{err}"
        );
        assert!(err.contains("corrupt"), "{err}");
    }
}
