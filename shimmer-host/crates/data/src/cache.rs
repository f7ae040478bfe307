//! Latent cache for frozen domains: every used split is loaded and encoded
//! once (with several threads), then batches are copied from memory. With a
//! cache folder, the latents also go to a file keyed by the source's
//! [`ItemSource::cache_key`] (plugin name, version, kind, config) and split,
//! and later runs read the file instead of calling the plugin.
//!
//! A cache file (`SHMRLAT2`) holds its key, the latent size and the number
//! of values, the values (f32, little-endian), then the CRC-32C of
//! everything before it. It is read only if it is a regular file whose size
//! is the one its header declares, whose checksum matches and whose values
//! are all finite. A cache is derived data: a file that fails any check (an
//! older format, other data, truncated, corrupt, non-finite values) is
//! reported on a `warning:` line naming the file and why, then rebuilt from
//! the plugin and rewritten. A special file (a FIFO, a device, a folder) at
//! a cache file's path is refused: it is not ours to delete, and reading
//! it would block or never end. Latents holding NaN or an infinity (data
//! allowed to, `allow_non_finite`) are cached in memory only, never in a
//! file, which would read as damaged.
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
/// First bytes of a cache file (format version 2: with a CRC-32C).
const MAGIC: &[u8; 8] = b"SHMRLAT2";
/// First bytes of the cache files of earlier versions (rebuilt when found).
const OLD_MAGICS: [&[u8; 8]; 1] = [b"SHMRLAT1"];
/// Values read or written at a time.
const CHUNK_VALUES: usize = 65536;

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
            if let Some((path, key)) = &file {
                match read_cache_file(path, key, inner.latent_dim(), expected)
                    .with_context(|| format!("domain `{domain}`: the {split} latents"))?
                {
                    CacheRead::Hit(table) => {
                        *slot = Some(Arc::new(table));
                        continue;
                    }
                    CacheRead::Missing => {}
                    CacheRead::Invalid(why) => eprintln!(
                        "warning: domain `{domain}`: latent cache {} {why}; rebuilding it \
                         from the plugin",
                        path.display()
                    ),
                }
            }
            let table = encode_split(domain, inner.as_ref(), split, threads)?;
            // Data allowed to hold NaN (`allow_non_finite`) is cached in
            // memory only: a file with one would read as damaged.
            let finite = table.iter().all(|v| v.is_finite());
            if let Some((path, key)) = file.as_ref().filter(|_| finite) {
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
/// reported, with its failing item. A stop signal
/// ([`shimmer_sys::stop`]) ends it before the next block.
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
                        // A stop signal ends the build within one block.
                        let during = format!("building the latent cache of domain `{domain}`");
                        if let Err(stop) = shimmer_sys::stop::check(&during) {
                            return Some((b, stop.into()));
                        }
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
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e.context(format!("while caching the {split} latents")));
    }
    Ok(table)
}

/// `<dir>/<fnv1a(key)>-<split>.latents`.
pub fn cache_file(dir: &Path, key: &str, split: Split) -> PathBuf {
    dir.join(format!("{:016x}-{split}.latents", fnv1a(key.as_bytes())))
}

/// What [`read_cache_file`] found.
#[derive(Debug)]
enum CacheRead {
    /// The file holds the latents asked for.
    Hit(Vec<f32>),
    /// No file at the path.
    Missing,
    /// A file that fails a check (the reason, to follow the file's name):
    /// it is rebuilt.
    Invalid(String),
}

/// Reads the cache file at `path` if it is there and holds `key` with `len`
/// values of size `dim`, its size, checksum and values checked; memory is
/// allocated only once the file's real size is the one declared.
///
/// # Errors
/// Only a path that is not a regular file (a FIFO, a device, a folder),
/// which must not be read nor replaced; every other fault is
/// [`CacheRead::Invalid`].
fn read_cache_file(path: &Path, key: &str, dim: usize, len: usize) -> Result<CacheRead> {
    let (file, size) = match shimmer_formats::file::open_regular(path) {
        Ok(opened) => opened,
        Err(e) => {
            return match std::fs::metadata(path) {
                Err(m) if m.kind() == std::io::ErrorKind::NotFound => Ok(CacheRead::Missing),
                Ok(m) if !m.is_file() => bail!(
                    "cannot use latent cache {e}; remove it, or set `data.cache.dir` to \
                     another folder"
                ),
                _ => Ok(CacheRead::Invalid(format!(
                    "cannot be opened ({})",
                    e.message()
                ))),
            };
        }
    };
    let mut r = CrcReader {
        inner: BufReader::new(file),
        crc: 0,
    };
    Ok(match parse_cache(&mut r, size, key, dim, len) {
        Ok(Ok(table)) => CacheRead::Hit(table),
        Ok(Err(why)) => CacheRead::Invalid(why),
        Err(e) => CacheRead::Invalid(format!("cannot be read ({e})")),
    })
}

/// Bytes of a cache file holding `key` and `len` values, or `None` past
/// `u64`.
fn cache_file_size(key: &str, len: usize) -> Option<u64> {
    (len as u64)
        .checked_mul(4)?
        .checked_add(MAGIC.len() as u64 + 8 + key.len() as u64 + 8 + 8 + 4)
}

/// The checks of [`read_cache_file`] over the opened file (`size` bytes):
/// the table, or why the file is not used.
fn parse_cache<R: Read>(
    r: &mut CrcReader<R>,
    size: u64,
    key: &str,
    dim: usize,
    len: usize,
) -> std::io::Result<Result<Vec<f32>, String>> {
    let header = (MAGIC.len() + 8) as u64;
    if size < header {
        return Ok(Err(format!(
            "is {size} bytes, shorter than a latent cache's header"
        )));
    }
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if OLD_MAGICS.contains(&&magic) {
        return Ok(Err(format!(
            "is in an older format ({}, without a checksum)",
            String::from_utf8_lossy(&magic)
        )));
    }
    if &magic != MAGIC {
        return Ok(Err(format!(
            "is not a latent cache of this version (it does not start with {})",
            String::from_utf8_lossy(MAGIC)
        )));
    }
    let key_len = r.read_u64()?;
    if key_len != key.len() as u64 {
        return Ok(Err(format!(
            "holds the latents of other data (a key of {key_len} bytes, expected {})",
            key.len()
        )));
    }
    let expected = cache_file_size(key, len).unwrap_or(u64::MAX);
    if size < header + key_len + 16 {
        return Ok(Err(format!(
            "is {size} bytes, shorter than its header: truncated"
        )));
    }
    let mut stored = vec![0u8; key.len()];
    r.read_exact(&mut stored)?;
    if stored != key.as_bytes() {
        return Ok(Err(
            "holds the latents of other data (its key differs)".into()
        ));
    }
    let stored_dim = r.read_u64()?;
    let stored_len = r.read_u64()?;
    if stored_dim != dim as u64 || stored_len != len as u64 {
        return Ok(Err(format!(
            "holds {stored_len} values of latent size {stored_dim}, the data now has {len} \
             of size {dim}"
        )));
    }
    if size != expected {
        return Ok(Err(format!(
            "is {size} bytes, its header declares {expected}: truncated or damaged"
        )));
    }
    let mut table = vec![0.0f32; len];
    let mut bytes = vec![0u8; 4 * CHUNK_VALUES];
    let mut non_finite = None;
    for (c, chunk) in table.chunks_mut(CHUNK_VALUES).enumerate() {
        let b = &mut bytes[..4 * chunk.len()];
        r.read_exact(b)?;
        for (i, (v, x)) in chunk.iter_mut().zip(b.chunks_exact(4)).enumerate() {
            *v = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            if non_finite.is_none() && !v.is_finite() {
                non_finite = Some((c * CHUNK_VALUES + i, *v));
            }
        }
    }
    let computed = r.crc;
    let mut word = [0u8; 4];
    r.inner.read_exact(&mut word)?;
    let written = u32::from_le_bytes(word);
    if written != computed {
        return Ok(Err(format!(
            "is corrupt: its CRC-32C is {written:08x}, its contents now give {computed:08x}"
        )));
    }
    if let Some((at, v)) = non_finite {
        return Ok(Err(format!(
            "holds a non-finite value ({v} at item {}, position {})",
            at / dim.max(1),
            at % dim.max(1)
        )));
    }
    Ok(Ok(table))
}

/// A reader that keeps the CRC-32C of what it read.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> CrcReader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.crc = shimmer_formats::checksum::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn read_u64(&mut self) -> std::io::Result<u64> {
        let mut word = [0u8; 8];
        self.read_exact(&mut word)?;
        Ok(u64::from_le_bytes(word))
    }
}

/// A writer that keeps the CRC-32C of what it wrote.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = shimmer_formats::checksum::crc32c_append(self.crc, bytes);
        self.inner.write_all(bytes)
    }
}

/// Writes a cache file atomically (a temporary file renamed into place),
/// its CRC-32C last.
fn write_cache_file(path: &Path, key: &str, dim: usize, table: &[f32]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    std::fs::create_dir_all(dir)?;
    shimmer_sys::fs::write_atomic_with(path, |_, file| {
        let mut w = CrcWriter {
            inner: BufWriter::new(file),
            crc: 0,
        };
        w.write_all(MAGIC)?;
        w.write_all(&(key.len() as u64).to_le_bytes())?;
        w.write_all(key.as_bytes())?;
        w.write_all(&(dim as u64).to_le_bytes())?;
        w.write_all(&(table.len() as u64).to_le_bytes())?;
        let mut bytes = Vec::with_capacity(4 * CHUNK_VALUES);
        for chunk in table.chunks(CHUNK_VALUES) {
            bytes.clear();
            chunk
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            w.write_all(&bytes)?;
        }
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes())?;
        w.inner.flush()?;
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

    /// The one cache file of `dir`.
    fn only_file(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    fn invalid(read: CacheRead) -> String {
        match read {
            CacheRead::Invalid(why) => why,
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    const KEY: &str = "plugin=x\nversion=1";

    #[test]
    fn a_damaged_cache_file_is_reported_rebuilt_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        CachedSource::build(
            "a",
            counting(100, KEY),
            &[Split::Train],
            Some(dir.path()),
            2,
        )
        .unwrap();
        let path = only_file(dir.path());
        let good = std::fs::read(&path).unwrap();
        assert_eq!(&good[..8], MAGIC);
        assert_eq!(good.len() as u64, cache_file_size(KEY, 300).unwrap());
        let mut bad = good.clone();
        bad[good.len() - 100] ^= 0x04; // a bit of a value
        std::fs::write(&path, &bad).unwrap();
        let why = invalid(read_cache_file(&path, KEY, 3, 300).unwrap());
        assert!(why.starts_with("is corrupt: its CRC-32C is"), "{why}");
        // Rebuilt from the source, rewritten, then read back.
        let again = counting(100, KEY);
        CachedSource::build("a", again.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(again.loads.load(Ordering::Relaxed), 100);
        assert_eq!(std::fs::read(&path).unwrap(), good);
        let third = counting(100, KEY);
        CachedSource::build("a", third.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(third.loads.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn old_truncated_and_mismatched_cache_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.latents");
        let table: Vec<f32> = (0..300).map(|v| v as f32).collect();
        write_cache_file(&path, KEY, 3, &table).unwrap();
        match read_cache_file(&path, KEY, 3, 300).unwrap() {
            CacheRead::Hit(t) => assert_eq!(t, table),
            other => panic!("{other:?}"),
        }
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], len: usize| {
            std::fs::write(&path, bytes).unwrap();
            invalid(read_cache_file(&path, KEY, 3, len).unwrap())
        };
        let mut old = good.clone();
        old[..8].copy_from_slice(b"SHMRLAT1");
        assert!(check(&old, 300).contains("older format (SHMRLAT1"));
        assert!(check(&good[..good.len() - 1], 300).contains("declares"));
        assert!(check(&good[..10], 300).contains("shorter than a latent cache's header"));
        assert!(check(&good[..30], 300).contains("shorter than its header"));
        assert!(check(&good, 303).contains("the data now has 303"));
        assert!(check(b"not a cache at all", 300).contains("does not start with SHMRLAT2"));
        // A header that declares far more values than the file holds is
        // refused on its size, before any table is allocated.
        let huge = 1usize << 40;
        let mut lying = good.clone();
        let at = 16 + KEY.len() + 8;
        lying[at..at + 8].copy_from_slice(&(huge as u64).to_le_bytes());
        let why = check(&lying, huge);
        assert!(why.contains("its header declares"), "{why}");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_cache_file(&path, KEY, 3, 300).unwrap(),
            CacheRead::Missing
        ));
    }

    #[test]
    fn non_finite_latents_are_never_read_from_a_file_nor_written_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_file(dir.path(), KEY, Split::Train);
        // A file with a valid checksum but NaN values is rebuilt.
        write_cache_file(&path, KEY, 3, &[f32::NAN; 300]).unwrap();
        let why = invalid(read_cache_file(&path, KEY, 3, 300).unwrap());
        assert!(
            why.contains("non-finite value (NaN at item 0, position 0)"),
            "{why}"
        );
        let src = counting(100, KEY);
        let cached =
            CachedSource::build("a", src.clone(), &[Split::Train], Some(dir.path()), 2).unwrap();
        assert_eq!(src.loads.load(Ordering::Relaxed), 100);
        let mut out = [0.0; 3];
        cached.load_latents(Split::Train, &[1], &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0, 5.0]);
        // An encode that yields NaN (data allowed to hold it) is served
        // from memory, and no file is written that would read as damaged.
        let other = tempfile::tempdir().unwrap();
        let nan: Arc<dyn ItemSource> = Arc::new(
            MemorySource::from_fn(
                2,
                [10, 0, 0],
                |_, i, c| {
                    if i == 7 && c == 1 { f32::NAN } else { 1.0 }
                },
            )
            .with_cache_key(KEY),
        );
        let cached =
            CachedSource::build("vision", nan, &[Split::Train], Some(other.path()), 2).unwrap();
        let mut out = [0.0; 2];
        cached.load_latents(Split::Train, &[7], &mut out).unwrap();
        assert!(out[0] == 1.0 && out[1].is_nan(), "{out:?}");
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_fifo_at_a_cache_path_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_file(dir.path(), KEY, Split::Train);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if opened for reading without O_NONBLOCK.
        let err = format!(
            "{:#}",
            CachedSource::build("a", counting(10, KEY), &[Split::Train], Some(dir.path()), 1)
                .unwrap_err()
        );
        assert!(
            err.contains("domain `a`")
                && err.contains(&path.display().to_string())
                && err.contains("is a FIFO, not a regular file"),
            "{err}"
        );
        // Left where it is: it is not ours to delete.
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        let sub = cache_file(dir.path(), "other", Split::Train);
        std::fs::create_dir(&sub).unwrap();
        let err = read_cache_file(&sub, "other", 3, 30)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a folder"), "{err}");
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
