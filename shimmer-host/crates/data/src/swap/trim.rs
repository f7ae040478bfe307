//! Giving back the resident pages of released plugin copies.
//!
//! A released copy stays mapped (the host never unmaps a plugin library;
//! see the plugin rules in `shimmer_plugin_api`), and the loader had read
//! all of it in. Its code (`r-x`) and the read-only part before it
//! (headers, symbol tables, read-only data: never relocated) are clean
//! pages of the copy's file: `madvise(MADV_DONTNEED)` drops them from the
//! process, and should the old code still run (a thread-exit destructor
//! registered by the old copy's std), the kernel reads them back from the
//! file, which lives on while mapped. The relocated parts (`RELRO`, `rw-`)
//! are private, written pages and are left alone.

#![allow(unsafe_code)] // see the SAFETY comment of each block

/// Drops the clean pages of every plugin copy whose file is deleted (the
/// private copies of released builds) and returns how many KiB of mappings
/// it covered. Linux only; elsewhere does nothing.
pub fn trim_released_copies() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut trimmed = 0u64;
        // Offset of the code mapping of each released copy: read-only
        // mappings at lower offsets come before the code and are clean.
        let mut code_offset: std::collections::HashMap<&str, u64> = Default::default();
        let entries: Vec<(u64, u64, &str, u64, &str)> = maps
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let range = parts.next()?;
                let perms = parts.next()?;
                let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
                let path = parts.nth(2)?;
                let deleted = parts.next() == Some("(deleted)");
                if !deleted || !path.contains("/shimmer-plugin-") {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                Some((a, b, perms, offset, path))
            })
            .collect();
        for &(_, _, perms, offset, path) in &entries {
            if perms.starts_with("r-x") {
                let o = code_offset.entry(path).or_insert(offset);
                *o = (*o).min(offset);
            }
        }
        for &(start, end, perms, offset, path) in &entries {
            let Some(&code) = code_offset.get(path) else {
                continue;
            };
            let clean = perms.starts_with("r-x") || (perms.starts_with("r--") && offset < code);
            if !clean || end <= start {
                continue;
            }
            // SAFETY: the range is a whole mapping of a file nobody writes
            // (a deleted private copy), and only pages never written since
            // it was mapped (code and what precedes it) are dropped: any
            // later access reads the same bytes back from the file.
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
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}
