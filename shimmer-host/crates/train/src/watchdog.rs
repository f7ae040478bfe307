//! Names a call that takes too long: every operation registered in
//! [`shimmer_sys::activity`] (each call into a plugin) that has run for
//! `training.watchdog_s` seconds is reported once on the terminal, with
//! the plugin, domain, operation and items, so a hung plugin is not a
//! silent run. The run keeps waiting; Ctrl-C stops it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the watchdog looks.
const POLL: Duration = Duration::from_millis(200);

/// The watchdog thread of a run; stops when dropped.
#[derive(Debug)]
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching for operations longer than `limit_s` seconds (0:
    /// no watchdog).
    pub fn start(limit_s: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let thread = (limit_s > 0)
            .then(|| {
                let done = done.clone();
                std::thread::Builder::new()
                    .name("shimmer-watchdog".to_string())
                    .spawn(move || watch(limit_s, &done))
                    .ok()
            })
            .flatten();
        Self { done, thread }
    }
}

fn watch(limit_s: u64, done: &AtomicBool) {
    let limit = Duration::from_secs(limit_s);
    let mut reported = HashSet::new();
    while !done.load(Ordering::SeqCst) {
        for w in shimmer_sys::activity::current() {
            if w.elapsed >= limit && reported.insert(w.id) {
                eprintln!(
                    "warning: still waiting after {:.0} s for {} (training.watchdog_s is {limit_s})",
                    w.elapsed.as_secs_f64(),
                    w.what
                );
            }
        }
        std::thread::sleep(POLL);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
