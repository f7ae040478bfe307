//! Work splitting for the fused kernels on candle's own CPU thread pool.
//!
//! candle 0.11 runs its elementwise ops on a pool of spinning worker
//! threads plus the calling thread. Running the kernels' parallel parts on
//! a second pool (rayon's) made three busy threads share two cores and
//! slowed both; on candle's pool the kernels use exactly the threads
//! candle's ops use (`RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS`).
//!
//! The pool runs one job at a time and does not nest: the parts given to
//! [`parallel_parts`] and [`join`] must be plain Rust (slices, `gemm`),
//! never candle tensor ops, which would wait for the pool the part holds.

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

/// Runs `f(thread_id)` once on every thread of the pool (ids `0..threads()`),
/// marking the threads as inside a part meanwhile.
fn on_every_thread(f: impl Fn(usize) + Sync) {
    candle_core::utils::barrier_pool().execute(|tid| {
        IN_PART.with(|c| c.set(true));
        f(tid);
        IN_PART.with(|c| c.set(false));
    });
}

/// Whether work can be split here: more than one thread, and not already
/// inside a part (candle's pool does not nest).
fn can_split() -> bool {
    threads() > 1 && !IN_PART.with(Cell::get)
}

/// Takes what a mutex holds, poisoned or not.
fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// `f` applied to every part, the parts spread over the pool's threads;
/// results in the parts' order. Called from inside a part, it runs the
/// parts one after the other on the calling thread.
pub fn parallel_parts<T: Send, R: Send>(parts: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if parts.len() <= 1 || !can_split() {
        return parts.into_iter().map(f).collect();
    }
    let n = threads();
    let inputs: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let outputs: Vec<Mutex<Option<R>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    on_every_thread(|tid| {
        for i in (tid..inputs.len()).step_by(n) {
            if let Some(part) = take(&inputs[i]) {
                let r = f(part);
                *outputs[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
        }
    });
    // Thread ids cover 0..n, so every part ran (a panic in one resurfaces
    // from `execute`).
    outputs
        .iter()
        .map(|o| take(o).expect("every part ran"))
        .collect()
}

/// `(a(), b())`, on two threads when the pool has them.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !can_split() {
        return (a(), b());
    }
    let (a, b) = (Mutex::new(Some(a)), Mutex::new(Some(b)));
    let (ra, rb) = (Mutex::new(None), Mutex::new(None));
    on_every_thread(|tid| match tid {
        0 => *ra.lock().unwrap_or_else(|e| e.into_inner()) = take(&a).map(|f| f()),
        1 => *rb.lock().unwrap_or_else(|e| e.into_inner()) = take(&b).map(|f| f()),
        _ => {}
    });
    // `can_split` means ids 0 and 1 both exist.
    (
        take(&ra).expect("`a` ran on thread 0"),
        take(&rb).expect("`b` ran on thread 1"),
    )
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
    fn join_returns_both_and_nests() {
        let (a, b) = join(|| join(|| 1, || 2), || "b");
        assert_eq!((a, b), ((1, 2), "b"));
    }

    #[test]
    fn parallel_parts_keeps_order_and_nests() {
        let out = parallel_parts((0..10).collect(), |i: u32| {
            parallel_parts(vec![i, 1], |j| j).iter().product::<u32>() * i
        });
        assert_eq!(out, (0..10).map(|i| i * i).collect::<Vec<_>>());
    }
}
