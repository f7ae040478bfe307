//! Work splitting for the fused kernels on candle's own CPU thread pool.
//!
//! candle 0.11 runs its elementwise ops on a pool of spinning worker
//! threads plus the calling thread. Running the kernels' parallel parts on
//! a second pool (rayon's) made three busy threads share two cores and
//! slowed both; on candle's pool the kernels use exactly the threads
//! candle's ops use (`RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS`).

use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

thread_local! {
    /// Set while a thread runs a part: nested splits then run serially
    /// (candle's pool does not nest).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// Threads of candle's CPU pool, the calling thread included.
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Splits `0..n` into about one contiguous range per thread, each at least
/// `min_len` long.
pub fn ranges(n: usize, min_len: usize) -> Vec<Range<usize>> {
    let parts = threads().min(n.div_ceil(min_len.max(1))).max(1);
    let len = n.div_ceil(parts).max(1);
    (0..n).step_by(len).map(|s| s..(s + len).min(n)).collect()
}

/// `f` applied to every part, the parts spread over the pool's threads;
/// results in the parts' order. Called from inside a part, it runs the
/// parts one after the other on the calling thread.
pub fn parallel_parts<T: Send, R: Send>(parts: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = threads();
    if parts.len() <= 1 || n == 1 || IN_PART.with(Cell::get) {
        return parts.into_iter().map(f).collect();
    }
    let f = |part: T| {
        IN_PART.with(|c| c.set(true));
        let r = f(part);
        IN_PART.with(|c| c.set(false));
        r
    };
    let inputs: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let outputs: Vec<Mutex<Option<R>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    candle_core::utils::barrier_pool().execute(|tid| {
        for i in (tid..inputs.len()).step_by(n) {
            let part = inputs[i].lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(part) = part {
                let r = f(part);
                *outputs[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
        }
    });
    outputs
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect::<Option<Vec<R>>>()
        .expect("every part ran: the pool gives each thread id once")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for n in [0, 1, 7, 100, 2056] {
            let r = ranges(n, 16);
            assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), n);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn parallel_parts_keeps_order_and_nests() {
        let out = parallel_parts((0..10).collect(), |i: u32| {
            parallel_parts(vec![i, 1], |j| j).iter().product::<u32>() * i
        });
        assert_eq!(out, (0..10).map(|i| i * i).collect::<Vec<_>>());
    }
}
