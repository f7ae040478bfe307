//! Whether an allocation the host is about to make fits in the machine's
//! memory: a model or a table that does not fit is refused up front with
//! its estimate, instead of ending in the kernel's OOM killer or an
//! allocation abort.

use anyhow::{Result, bail};
use procfs::{Current, Meminfo};

/// Bytes of memory the kernel says new allocations can take without
/// swapping (`MemAvailable`), or `None` where it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let info = Meminfo::current().ok()?;
    Some(info.mem_available.unwrap_or(info.mem_free))
}

/// A byte count for messages: `1.5 GiB`, `320 MiB`, `12 KiB`.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses `what` when its estimated `bytes` exceed the memory available
/// now (`available`, usually [`available_bytes`]; `None` accepts).
///
/// # Errors
/// Names `what`, the estimate and what is available.
pub fn ensure_fits(what: &str, bytes: u128, available: Option<u64>) -> Result<()> {
    match available {
        Some(free) if bytes > u128::from(free) => bail!(
            "{what} needs about {} of memory, but only {} is available: \
             make it smaller",
            human_bytes(bytes),
            human_bytes(u128::from(free)),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_beyond_what_is_available_are_refused_with_both_sizes() {
        assert!(ensure_fits("x", 10, Some(100)).is_ok());
        assert!(ensure_fits("x", 1 << 100, None).is_ok());
        let err = ensure_fits("the model", 3 << 30, Some(1 << 30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the model needs about 3.0 GiB of memory, but only 1.0 GiB is available: make it smaller"
        );
        assert!(available_bytes().is_some_and(|b| b > 0));
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
