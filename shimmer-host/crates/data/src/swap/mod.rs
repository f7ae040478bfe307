//! Hot-swapping domain plugins during a run (`shimmer run --watch`), and
//! changing a domain's plugin when a run is resumed (`--set-plugin`).
//!
//! # How a swap happens
//! With `--watch`, every plugin domain of the run reads its data through a
//! [`SwappableSource`]. The trainer calls [`StepHooks::after_step`] at each
//! step boundary, which polls the [`PluginWatcher`]: it `stat`s each plugin
//! file the run loaded; a changed file is loaded once it has been stable
//! for the debounce time (0.5 s) and its content differs from the build in
//! use. The new build is loaded from a private copy, checked against the
//! build in use (same domain kind, latent size, item length and loss spec;
//! splits may change size as long as they still hold every item the run's
//! groups use; a probe load of up to 8 items per used split must succeed
//! with finite values) and, when every domain of the file passes, swapped
//! in for all of them at once. Anything else (not a library, other ABI, a
//! panicking `create` or `load`, other dimensions) is reported and the
//! current build stays; the run never stops because of a new build.
//!
//! # Which batches use the new build
//! Loads that start after the swap use the new build; a load already
//! running finishes on the old one (a batch never mixes builds of a
//! domain). Loader threads prepare batches ahead of the trainer; after a
//! swap the trainer drops those and restarts the epoch's loading at its
//! next batch ([`StepHooks::take_swap`], `DataLoader::epoch_from`), so the
//! batch of the step right after the swap (the step named in the log) is
//! the first from the new build, whatever the number of workers.
//! Validation after the swap uses the new build.
//!
//! # The old build
//! The old build is dropped when the last load using it returns: its
//! domain is destroyed and its private file copy deleted (logged as
//! "released"), and its clean pages are given back ([`shimmer_sys::proc::trim_released_plugin_copies`]). Its mapping
//! stays until the process exits, on purpose: a Rust `cdylib` is not
//! `NODELETE`, so `dlclose` would unmap it, but its std registers
//! thread-exit destructors (pthread keys) inside it that glibc does not
//! track, and a thread exiting afterwards would crash. Measured over 100
//! reloads (`tests/e2e/hotswap.rs`): threads flat, resident memory about
//! 35 KiB per reload for a library mapping 624 KiB (626 KiB per reload
//! without that trim).
//!
//! # Latent cache
//! With `data.cache.enabled` (the default), a watched domain's latents are
//! cached in memory by its [`SwappableSource`] instead of the data
//! pipeline: a new build's used splits are encoded in full (with
//! `data.workers` threads) at the step boundary, before the swap, so a
//! swap replaces the cached latents with the new build's (a failure there
//! refuses the build). Watched domains do not use the file cache
//! (`data.cache.dir`): their data is not fixed by plugin name and version.

mod source;
mod watcher;

pub use shimmer_sys::proc::ProcessStats;
pub use source::{CachedTables, SwappableSource, encode_tables};
pub use watcher::{DEFAULT_DEBOUNCE, PluginWatcher, WatchEvent, check_compatible};

use crate::pipeline::open_plugin_domains;
use crate::{ItemSource, Sources};
use anyhow::Result;
use shimmer_config::Experiment;
use std::sync::Arc;

/// Like [`crate::open_sources`] (same checks, same messages), but
/// every plugin domain reads through a [`SwappableSource`] registered with
/// the returned watcher. Build the pipeline over these sources with the
/// pipeline's cache off, then call [`PluginWatcher::require_items`] and,
/// when the experiment caches latents, [`PluginWatcher::enable_cache`].
pub fn open_watched_sources(exp: &Experiment) -> Result<(Sources, PluginWatcher)> {
    let mut sources = Sources::new();
    let mut watcher = PluginWatcher::new();
    for d in open_plugin_domains(exp)? {
        let swappable = Arc::new(SwappableSource::new(d.source));
        watcher.watch(&d.name, &d.config_json, swappable.clone());
        sources.insert(d.name, swappable as Arc<dyn ItemSource>);
    }
    Ok((sources, watcher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_log_lines() {
        let e = WatchEvent::Refused {
            path: "/p/libv.so".into(),
            domains: vec!["a".into()],
            kept: "plugin v 1".into(),
            reason: "latent size changed from 4 to 5".into(),
        };
        assert_eq!(
            e.to_string(),
            "hot-swap: new build of /p/libv.so refused; domain `a` keeps plugin v 1: \
             latent size changed from 4 to 5"
        );
        let e = WatchEvent::Released {
            domain: "a".into(),
            generation: 3,
        };
        assert!(e.to_string().contains("generation 3 released"), "{e}");
    }

    #[test]
    fn process_stats_are_read() {
        let s = ProcessStats::read().unwrap();
        assert!(s.threads >= 1 && s.rss_kib > 0, "{s:?}");
        assert_eq!(s.plugin_copies == 0, s.plugin_mapped_kib == 0, "{s:?}");
    }
}
