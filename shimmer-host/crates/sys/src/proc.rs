//! What `/proc/self` says of this process (Linux), read with the `procfs`
//! crate: thread count, resident memory, and the mappings of the private
//! plugin copies the plugin host loads (`shimmer-plugin-*` folders).

use anyhow::{Context, Result};
use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// Whether `address` lies in an executable mapping of this process: a
/// symbol a loader found is code only there (a data symbol under a
/// function's name would crash the caller).
///
/// # Errors
/// Where `/proc/self/maps` cannot be read (not Linux).
pub fn is_executable_address(address: usize) -> Result<bool> {
    let me = Process::myself().context("cannot read /proc/self")?;
    let maps = me.maps().context("cannot read /proc/self/maps")?;
    let address = address as u64;
    Ok(maps.iter().any(|m| {
        m.address.0 <= address && address < m.address.1 && m.perms.contains(MMPermissions::EXECUTE)
    }))
}

/// Folder-name part of every private plugin copy.
const COPY_MARK: &str = "/shimmer-plugin-";

/// A snapshot of the process's threads, memory and plugin mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Threads of the process.
    pub threads: u64,
    /// Resident memory, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Resident anonymous memory (the heap: what the process allocated), in KiB.
    pub rss_anon_kib: u64,
    /// Resident file-backed memory (mapped files: page cache the kernel
    /// can drop and read back), in KiB.
    pub rss_file_kib: u64,
    /// Loaded plugin copies still mapped (distinct files, deleted or not).
    pub plugin_copies: usize,
    /// Address space of those mappings, in KiB.
    pub plugin_mapped_kib: u64,
}

impl ProcessStats {
    /// Reads the current values.
    ///
    /// # Errors
    /// Where `/proc/self` cannot be read (not Linux).
    pub fn read() -> Result<Self> {
        let me = Process::myself().context("cannot read /proc/self")?;
        let status = me.status().context("cannot read /proc/self/status")?;
        let mut files = HashSet::new();
        let mut mapped = 0u64;
        for (map, path, _) in plugin_copy_maps(&me)? {
            mapped += map.address.1.saturating_sub(map.address.0);
            files.insert(path);
        }
        Ok(Self {
            threads: status.threads,
            rss_kib: status.vmrss.unwrap_or(0),
            peak_rss_kib: status.vmhwm.unwrap_or(0),
            rss_anon_kib: status.rssanon.unwrap_or(0),
            rss_file_kib: status.rssfile.unwrap_or(0),
            plugin_copies: files.len(),
            plugin_mapped_kib: mapped / 1024,
        })
    }
}

/// The mappings of plugin copies: each with its file and whether that file
/// is deleted.
fn plugin_copy_maps(me: &Process) -> Result<Vec<(MemoryMap, PathBuf, bool)>> {
    let maps = me.maps().context("cannot read /proc/self/maps")?;
    Ok(maps
        .into_iter()
        .filter_map(|m| {
            let MMapPath::Path(p) = &m.pathname else {
                return None;
            };
            let text = p.to_string_lossy();
            if !text.contains(COPY_MARK) {
                return None;
            }
            let (path, deleted) = match text.strip_suffix(" (deleted)") {
                Some(stem) => (PathBuf::from(stem), true),
                None => (p.clone(), false),
            };
            Some((m, path, deleted))
        })
        .collect())
}

/// Drops the clean pages of every plugin copy whose file is deleted (the
/// private copies of released builds) and returns how many KiB of mappings
/// it covered. The code mapping of a copy, and read-only mappings before
/// it, are clean: never written since they were mapped, so a later access
/// reads the same bytes back from the file, which lives on while mapped.
/// The relocated parts (RELRO, `rw-`) are written pages and are left alone.
/// Where `/proc` cannot be read, does nothing.
pub fn trim_released_plugin_copies() -> u64 {
    let Ok(me) = Process::myself() else {
        return 0;
    };
    let Ok(maps) = plugin_copy_maps(&me) else {
        return 0;
    };
    let released: Vec<_> = maps
        .into_iter()
        .filter(|(_, _, deleted)| *deleted)
        .collect();
    let executable = |m: &MemoryMap| {
        m.perms
            .contains(MMPermissions::READ | MMPermissions::EXECUTE)
            && !m.perms.contains(MMPermissions::WRITE)
    };
    let read_only = |m: &MemoryMap| {
        m.perms.contains(MMPermissions::READ)
            && !m
                .perms
                .intersects(MMPermissions::WRITE | MMPermissions::EXECUTE)
    };
    let mut code_offset: HashMap<&PathBuf, u64> = HashMap::new();
    for (m, path, _) in &released {
        if executable(m) {
            let o = code_offset.entry(path).or_insert(m.offset);
            *o = (*o).min(m.offset);
        }
    }
    let mut trimmed = 0;
    for (m, path, _) in &released {
        let Some(&code) = code_offset.get(path) else {
            continue;
        };
        let (start, end) = m.address;
        let clean = executable(m) || (read_only(m) && m.offset < code);
        if !clean || end <= start {
            continue;
        }
        // SAFETY: the range is a whole mapping of a file nobody writes (a
        // deleted private copy), and only clean pages are dropped: any later
        // access reads the same bytes back from the file.
        let rc = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                (end - start) as usize,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            trimmed += (end - start) / 1024;
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_executable_and_data_is_not() {
        static DATA: [u8; 64] = [7; 64];
        let code = code_is_executable_and_data_is_not as fn() as usize;
        assert!(is_executable_address(code).unwrap());
        assert!(!is_executable_address(DATA.as_ptr() as usize).unwrap());
        let heap = Box::new(5u64);
        assert!(!is_executable_address(&*heap as *const u64 as usize).unwrap());
    }

    #[test]
    fn process_stats_are_read() {
        let s = ProcessStats::read().unwrap();
        assert!(s.threads >= 1 && s.rss_kib > 0, "{s:?}");
        assert_eq!(s.plugin_copies == 0, s.plugin_mapped_kib == 0, "{s:?}");
    }

    #[test]
    fn nothing_is_trimmed_without_released_copies() {
        assert_eq!(trim_released_plugin_copies(), 0);
    }
}
