//! What the process is waiting on right now: each call into a plugin (or
//! other operation that may block) registers itself for as long as it
//! runs, so that a watchdog can name an operation that hangs and a Ctrl-C
//! can say what the run is waiting for.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RUNNING: Mutex<Vec<(u64, String, Instant)>> = Mutex::new(Vec::new());

/// An operation in progress; it is over when this is dropped.
#[derive(Debug)]
pub struct Doing {
    id: u64,
}

impl Drop for Doing {
    fn drop(&mut self) {
        if let Ok(mut running) = RUNNING.lock() {
            running.retain(|(id, _, _)| *id != self.id);
        }
    }
}

/// Registers `what` (e.g. ``plugin `x` (domain `v`): load of 64 train items``)
/// until the returned guard is dropped.
pub fn begin(what: String) -> Doing {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut running) = RUNNING.lock() {
        running.push((id, what, Instant::now()));
    }
    Doing { id }
}

/// One operation in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Unique for the life of the process.
    pub id: u64,
    /// What it is.
    pub what: String,
    /// How long it has run.
    pub elapsed: Duration,
}

/// Every operation in progress, longest-running first.
pub fn current() -> Vec<Waiting> {
    let now = Instant::now();
    let mut out: Vec<Waiting> = RUNNING
        .lock()
        .map(|running| {
            running
                .iter()
                .map(|(id, what, start)| Waiting {
                    id: *id,
                    what: what.clone(),
                    elapsed: now.duration_since(*start),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|w| std::cmp::Reverse(w.elapsed));
    out
}

/// One line naming what is in progress (`nothing in particular` if none).
pub fn describe() -> String {
    let waiting = current();
    if waiting.is_empty() {
        return "the step in flight".to_string();
    }
    waiting
        .iter()
        .map(|w| format!("{} ({:.0} s)", w.what, w.elapsed.as_secs_f64()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_listed_while_they_run() {
        let outer = begin("plugin `p` (domain `v`): load of 4 train items".into());
        let inner = begin("second".into());
        let ids: Vec<u64> = current().iter().map(|w| w.id).collect();
        assert!(ids.contains(&outer.id) && ids.contains(&inner.id));
        assert!(describe().contains("load of 4 train items"));
        drop(inner);
        let left: Vec<u64> = current().iter().map(|w| w.id).collect();
        assert!(left.contains(&outer.id) && !left.iter().any(|&i| i == outer.id + 1));
        drop(outer);
    }
}
