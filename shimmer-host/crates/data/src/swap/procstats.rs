//! What repeated reloading costs the process, read from `/proc/self`
//! (Linux): threads, resident memory, and the mappings of plugin copies.

use anyhow::{Context, Result};

/// A snapshot of the process's threads, memory and plugin mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// `Threads` of `/proc/self/status`.
    pub threads: u64,
    /// `VmRSS` of `/proc/self/status`, in KiB.
    pub rss_kib: u64,
    /// Loaded plugin copies still mapped (distinct files under a
    /// `shimmer-plugin-*` folder, deleted or not).
    pub plugin_copies: usize,
    /// Address space of those mappings, in KiB.
    pub plugin_mapped_kib: u64,
}

impl ProcessStats {
    /// Reads the current values (Linux only; elsewhere an error).
    pub fn read() -> Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")
            .context("cannot read /proc/self/status")?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("/proc/self/status has no `{name}`"))
        };
        let maps =
            std::fs::read_to_string("/proc/self/maps").context("cannot read /proc/self/maps")?;
        let mut files = std::collections::HashSet::new();
        let mut mapped = 0u64;
        for line in maps.lines() {
            let mut parts = line.split_whitespace();
            let (Some(range), Some(path)) = (parts.next(), parts.nth(4)) else {
                continue;
            };
            if !path.contains("/shimmer-plugin-") {
                continue;
            }
            if let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            {
                mapped += b.saturating_sub(a);
            }
            files.insert(path.to_string());
        }
        Ok(Self {
            threads: field("Threads:")?,
            rss_kib: field("VmRSS:")?,
            plugin_copies: files.len(),
            plugin_mapped_kib: mapped / 1024,
        })
    }
}
