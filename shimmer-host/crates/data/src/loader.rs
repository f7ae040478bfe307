//! The data loader: fills the batches a [`CombinedSampler`] planned, with
//! worker threads that load and encode ahead of the consumer.
//!
//! Batch `k` of an epoch is built by worker `k % workers` and handed over
//! through that worker's bounded channel; the consumer reads the channels
//! in turn. So the order, and every value, is the plan's whatever the
//! number of workers, and at most `prefetch` batches (rounded up to a
//! multiple of the worker count) wait in memory. Dropping an [`Epoch`]
//! early stops the workers and joins them; a failing item ends the epoch
//! with an error naming the domain, its source and the item.
//!
//! ```
//! use shimmer_data::*;
//! use shimmer_plugin_api::Split;
//! use std::sync::Arc;
//!
//! let src: Arc<dyn ItemSource> = Arc::new(MemorySource::from_fn(2, [6, 0, 0], |_, i, _| i as f32));
//! let sources: Sources = [("a".to_string(), src)].into_iter().collect();
//! let group = GroupDataset::new("a", vec!["a".into()], Split::Train, (0..6).collect()).unwrap();
//! let sampler = GroupSampler::new(RepeatedDataset::identity(6), 4, false, false).unwrap();
//! let combined = CombinedSampler::new(vec![(sampler, group.items_arc())], CombineMode::MinSize, 0).unwrap();
//! let loader = DataLoader::new(vec![group], sources, combined, 2, 4).unwrap();
//! let batches: Vec<HostBatch> = loader.epoch(0).unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(batches.len(), 2);
//! assert_eq!(batches[1].groups["a"].domains["a"].data(), [4.0, 4.0, 5.0, 5.0]);
//! ```

use super::batch::{DomainBatch, GroupBatch, HostBatch};
use super::combined::{BatchPlan, CombinedSampler};
use super::group::GroupDataset;
use super::source::{ItemSource, Sources};
use anyhow::{Context, Result, anyhow, bail};
use crossbeam::channel::{Receiver, Sender, bounded};
use indexmap::IndexMap;
use shimmer_plugin_api::Split;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Groups, their sources and the batch plan, ready to iterate epochs.
pub struct DataLoader {
    shared: Arc<Shared>,
    sampler: CombinedSampler,
    workers: usize,
    prefetch: usize,
}

/// What worker threads read.
struct Shared {
    groups: Vec<GroupDataset>,
    sources: Sources,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("groups", &self.shared.groups)
            .field("mode", &self.sampler.mode())
            .field("batches", &self.sampler.len())
            .field("workers", &self.workers)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl DataLoader {
    /// A loader over `groups` (in the sampler's group order) reading from
    /// `sources`. Checks that every group's domains have a source and that
    /// every item exists in every domain of its group. `workers == 0`
    /// loads in the consumer's thread.
    pub fn new(
        groups: Vec<GroupDataset>,
        sources: Sources,
        sampler: CombinedSampler,
        workers: usize,
        prefetch: usize,
    ) -> Result<Self> {
        for g in &groups {
            let largest = g.items().iter().copied().max();
            for d in g.domains() {
                let src = sources.get(d).with_context(|| {
                    format!(
                        "group `{}` uses domain `{d}`, which has no data source (known: {})",
                        g.name(),
                        sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?;
                let size = src.split_size(g.split());
                if let Some(max) = largest
                    && max >= size
                {
                    bail!(
                        "group `{}` uses {} item {max}, but domain `{d}` has {size} {} items",
                        g.name(),
                        g.split(),
                        g.split()
                    );
                }
            }
        }
        Ok(Self {
            shared: Arc::new(Shared { groups, sources }),
            sampler,
            workers,
            prefetch: prefetch.max(1),
        })
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.sampler.len()
    }

    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.sampler.is_empty()
    }

    /// The groups, in order.
    pub fn groups(&self) -> &[GroupDataset] {
        &self.shared.groups
    }

    /// The data sources, by domain.
    pub fn sources(&self) -> &Sources {
        &self.shared.sources
    }

    /// The batch plan.
    pub fn sampler(&self) -> &CombinedSampler {
        &self.sampler
    }

    /// Loader threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Starts epoch `epoch`: plans it and starts the workers.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch> {
        self.epoch_from(epoch, 0)
    }

    /// Starts epoch `epoch` at its batch `start` (the same batches as
    /// [`DataLoader::epoch`] from there on; earlier ones are not loaded): how
    /// a resumed run, or one whose plugin was just swapped, picks up
    /// mid-epoch.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Epoch> {
        let mut plan = self.sampler.epoch(epoch);
        plan.drain(..start.min(plan.len()));
        let plan: Arc<[BatchPlan]> = plan.into();
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(self.workers);
        let mut handles = Vec::with_capacity(self.workers);
        let capacity = self.prefetch.div_ceil(self.workers.max(1)).max(1);
        let mut epoch_iter = Epoch {
            epoch,
            plan: plan.clone(),
            shared: self.shared.clone(),
            next: 0,
            finished: false,
            receivers: Vec::new(),
            handles: Vec::new(),
            stop: stop.clone(),
        };
        for w in 0..self.workers {
            let (tx, rx) = bounded(capacity);
            let job = Job {
                worker: w,
                stride: self.workers,
                epoch,
                plan: plan.clone(),
                shared: self.shared.clone(),
                stop: stop.clone(),
                tx,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("shimmer-data-{w}"))
                .spawn(move || job.run());
            match spawned {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                Err(e) => {
                    // Dropping `epoch_iter` stops and joins what started.
                    epoch_iter.receivers = receivers;
                    epoch_iter.handles = handles;
                    return Err(anyhow!(e).context("cannot start a data loader thread"));
                }
            }
        }
        epoch_iter.receivers = receivers;
        epoch_iter.handles = handles;
        Ok(epoch_iter)
    }
}

/// One worker's share of an epoch: batches `worker, worker + stride, ...`.
struct Job {
    worker: usize,
    stride: usize,
    epoch: u64,
    plan: Arc<[BatchPlan]>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    tx: Sender<Result<HostBatch>>,
}

impl Job {
    fn run(self) {
        for k in (self.worker..self.plan.len()).step_by(self.stride) {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let batch = build_guarded(&self.shared, self.epoch, &self.plan[k]);
            let failed = batch.is_err();
            // A send error means the consumer is gone: stop quietly.
            if self.tx.send(batch).is_err() || failed {
                return;
            }
        }
    }
}

/// The batches of one epoch, in plan order. Dropping it early stops the
/// workers and waits for them (each finishes at most the batch in hand).
pub struct Epoch {
    epoch: u64,
    plan: Arc<[BatchPlan]>,
    shared: Arc<Shared>,
    next: usize,
    finished: bool,
    receivers: Vec<Receiver<Result<HostBatch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Epoch {
    /// Batches in the epoch.
    pub fn len(&self) -> usize {
        self.plan.len()
    }

    /// Whether the epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Workers blocked on a full channel wake with a send error.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            // Panics are caught inside the worker; nothing else to report.
            let _ = h.join();
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.next >= self.plan.len() {
            self.finished = true;
            return None;
        }
        let k = self.next;
        self.next += 1;
        let result = if self.receivers.is_empty() {
            build_guarded(&self.shared, self.epoch, &self.plan[k])
        } else {
            match self.receivers[k % self.receivers.len()].recv() {
                Ok(r) => r,
                Err(_) => Err(anyhow!(
                    "data loader thread {} stopped before batch {k}",
                    k % self.receivers.len()
                )),
            }
        };
        if result.is_err() {
            self.finished = true;
            self.shutdown();
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.finished {
            0
        } else {
            self.plan.len() - self.next
        };
        (0, Some(left))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds one batch; a panic in a source becomes an error.
fn build_guarded(shared: &Shared, epoch: u64, plan: &BatchPlan) -> Result<HostBatch> {
    catch_unwind(AssertUnwindSafe(|| build_batch(shared, epoch, plan))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        Err(anyhow!("data loader panicked: {msg}"))
    })
}

/// Loads and encodes every domain of every group part of `plan`.
fn build_batch(shared: &Shared, epoch: u64, plan: &BatchPlan) -> Result<HostBatch> {
    let mut batch = HostBatch::new(epoch, plan.loader, plan.batch_idx);
    for part in &plan.parts {
        let group = &shared.groups[part.group];
        let items: Arc<[u64]> = part.items.as_slice().into();
        let mut domains = IndexMap::with_capacity(group.domains().len());
        for d in group.domains() {
            let src = shared
                .sources
                .get(d)
                .with_context(|| format!("domain `{d}` has no data source"))?;
            let latents =
                load_domain(src.as_ref(), d, group.split(), &items).with_context(|| {
                    format!(
                        "data: batch {} (epoch {epoch}) of group `{}`",
                        plan.batch_idx,
                        group.name()
                    )
                })?;
            domains.insert(d.clone(), latents);
        }
        let singles: Vec<(String, DomainBatch)> = if group.has_singles() && domains.len() > 1 {
            domains
                .iter()
                .map(|(d, l)| (d.clone(), l.clone()))
                .collect()
        } else {
            Vec::new()
        };
        batch.groups.insert(
            group.name().to_string(),
            GroupBatch::new(items.clone(), domains).in_split(group.split()),
        );
        for (d, latents) in singles {
            let single =
                GroupBatch::new(items.clone(), [(d.clone(), latents)].into_iter().collect())
                    .in_split(group.split());
            batch.groups.insert(d, single);
        }
    }
    Ok(batch)
}

/// Loads one domain's latents for `items`; on failure, finds the first
/// failing item and names it.
pub(crate) fn load_domain(
    src: &dyn ItemSource,
    domain: &str,
    split: Split,
    items: &[u64],
) -> Result<DomainBatch> {
    let dim = src.latent_dim();
    let mut out = vec![0.0f32; items.len() * dim];
    if let Err(e) = src.load_latents(split, items, &mut out) {
        return Err(blame(src, domain, split, items, e));
    }
    Ok(DomainBatch::new(out, items.len(), dim))
}

/// Turns the error of a multi-item load into one naming the failing item,
/// found by loading the items one at a time.
pub(crate) fn blame(
    src: &dyn ItemSource,
    domain: &str,
    split: Split,
    items: &[u64],
    error: anyhow::Error,
) -> anyhow::Error {
    let what = format!("domain `{domain}` ({})", src.describe());
    if let [item] = items {
        return error.context(format!("{what}: cannot load {split} item {item}"));
    }
    let mut one = vec![0.0f32; src.latent_dim()];
    for &item in items {
        if let Err(e) = src.load_latents(split, &[item], &mut one) {
            return e.context(format!("{what}: cannot load {split} item {item}"));
        }
    }
    let shown: Vec<String> = items.iter().take(8).map(u64::to_string).collect();
    error.context(format!(
        "{what}: cannot load {} {split} items [{}{}] (each loads alone)",
        items.len(),
        shown.join(", "),
        if items.len() > 8 { ", ..." } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CombineMode, GroupSampler, MemorySource, RepeatedDataset};
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// Wraps a memory source: fails on `bad` items, panics on `panic_on`,
    /// sleeps `delay` per call, and counts calls.
    struct Faulty {
        inner: MemorySource,
        bad: Option<u64>,
        panic_on: Option<u64>,
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Faulty {
        fn new(dim: usize, n: u64) -> Self {
            Self {
                inner: MemorySource::from_fn(dim, [n, 0, 0], |_, i, c| {
                    (i as f32).sin() * 100.0 + c as f32
                }),
                bad: None,
                panic_on: None,
                delay: Duration::ZERO,
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl ItemSource for Faulty {
        fn latent_dim(&self) -> usize {
            self.inner.latent_dim()
        }
        fn split_size(&self, split: Split) -> u64 {
            self.inner.split_size(split)
        }
        fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            if let Some(b) = self.bad
                && indices.contains(&b)
            {
                bail!("checksum mismatch in record");
            }
            if let Some(p) = self.panic_on
                && indices.contains(&p)
            {
                panic!("plugin bug");
            }
            self.inner.load_latents(split, indices, out)
        }
        fn describe(&self) -> String {
            "test source".into()
        }
    }

    /// Groups `{a,b}` (first 20 items), `{a}`, `{b}`, `{c}` over sources of
    /// dims 3, 2, 5 and 50/40/30 items, repeated to the largest, shuffled.
    fn loader(
        mode: CombineMode,
        workers: usize,
        prefetch: usize,
        sources: Vec<(&str, Arc<dyn ItemSource>)>,
    ) -> DataLoader {
        let sources: Sources = sources
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        let spec: [(&[&str], u64); 4] =
            [(&["a", "b"], 20), (&["a"], 50), (&["b"], 40), (&["c"], 30)];
        let groups: Vec<GroupDataset> = spec
            .iter()
            .map(|(ds, n)| {
                let ds: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
                GroupDataset::new(ds.join(","), ds, Split::Train, (0..*n).collect()).unwrap()
            })
            .collect();
        let samplers = groups
            .iter()
            .map(|g| {
                let r = RepeatedDataset::new(g.len() as u64, 50, false).unwrap();
                (GroupSampler::new(r, 8, true, true).unwrap(), g.items_arc())
            })
            .collect();
        let combined = CombinedSampler::new(samplers, mode, 42).unwrap();
        DataLoader::new(groups, sources, combined, workers, prefetch).unwrap()
    }

    fn memory_sources() -> Vec<(&'static str, Arc<dyn ItemSource>)> {
        vec![
            ("a", Arc::new(Faulty::new(3, 50))),
            ("b", Arc::new(Faulty::new(2, 40))),
            ("c", Arc::new(Faulty::new(5, 30))),
        ]
    }

    fn digests(l: &DataLoader, epoch: u64) -> Vec<u64> {
        l.epoch(epoch)
            .unwrap()
            .map(|b| b.unwrap().digest())
            .collect()
    }

    #[test]
    fn batches_are_identical_for_any_number_of_workers() {
        for mode in [
            CombineMode::MinSize,
            CombineMode::MaxSizeCycle,
            CombineMode::Sequential,
        ] {
            let reference: Vec<Vec<u64>> = (0..2)
                .map(|e| digests(&loader(mode, 0, 1, memory_sources()), e))
                .collect();
            assert!(!reference[0].is_empty());
            assert_ne!(reference[0], reference[1], "epochs reshuffle");
            for (workers, prefetch) in [(1, 1), (2, 4), (8, 3), (3, 64)] {
                let l = loader(mode, workers, prefetch, memory_sources());
                for (e, want) in reference.iter().enumerate() {
                    assert_eq!(
                        &digests(&l, e as u64),
                        want,
                        "{mode:?}, {workers} workers, epoch {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn batches_hold_paired_rows_and_the_planned_items() {
        let l = loader(CombineMode::MinSize, 2, 2, memory_sources());
        let plan = l.sampler().epoch(0);
        for (b, p) in l.epoch(0).unwrap().zip(&plan) {
            let b = b.unwrap();
            assert_eq!(b.groups.keys().collect::<Vec<_>>(), ["a,b", "a", "b", "c"]);
            for (part, (name, g)) in p.parts.iter().zip(&b.groups) {
                assert_eq!(&*g.items, &part.items[..], "{name}");
                for (d, latents) in &g.domains {
                    let src = l.sources()[d].clone();
                    let mut want = vec![0.0; part.items.len() * src.latent_dim()];
                    src.load_latents(Split::Train, &part.items, &mut want)
                        .unwrap();
                    assert_eq!(latents.data(), &want[..], "{name}/{d}");
                }
            }
        }
    }

    #[test]
    fn dropping_an_epoch_early_stops_and_joins_the_workers() {
        let slow = Arc::new(Faulty {
            delay: Duration::from_millis(5),
            ..Faulty::new(3, 50)
        });
        let l = loader(
            CombineMode::MaxSizeCycle,
            4,
            4,
            vec![
                ("a", slow.clone()),
                ("b", Arc::new(Faulty::new(2, 40))),
                ("c", Arc::new(Faulty::new(5, 30))),
            ],
        );
        assert!(l.len() > 4);
        let mut epoch = l.epoch(0).unwrap();
        epoch.next().unwrap().unwrap();
        // Let the workers fill their queues and block on them.
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        drop(epoch);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Every worker is gone: only the loader holds the shared state, and
        // no more loads happen.
        assert_eq!(Arc::strong_count(&l.shared), 1);
        let calls = slow.calls.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(slow.calls.load(Ordering::SeqCst), calls);
        assert!(calls < 2 * l.len(), "stopped early: {calls} calls");
    }

    #[test]
    fn a_failing_item_names_the_domain_and_the_item() {
        for workers in [0, 1, 3] {
            let l = loader(
                CombineMode::MinSize,
                workers,
                2,
                vec![
                    ("a", Arc::new(Faulty::new(3, 50))),
                    (
                        "b",
                        Arc::new(Faulty {
                            bad: Some(37),
                            ..Faulty::new(2, 40)
                        }),
                    ),
                    ("c", Arc::new(Faulty::new(5, 30))),
                ],
            );
            let mut epoch = l.epoch(0).unwrap();
            let err = epoch
                .by_ref()
                .find_map(Result::err)
                .expect("item 37 of b is in some batch");
            let msg = format!("{err:#}");
            assert!(msg.contains("domain `b` (test source)"), "{msg}");
            assert!(msg.contains("train item 37"), "{msg}");
            assert!(msg.contains("checksum mismatch"), "{msg}");
            assert!(msg.contains("group `"), "{msg}");
            assert!(epoch.next().is_none(), "the epoch ends after an error");
            drop(epoch);
            assert_eq!(Arc::strong_count(&l.shared), 1);
        }
    }

    #[test]
    fn a_panicking_source_is_an_error_not_a_hang() {
        let l = loader(
            CombineMode::MinSize,
            2,
            2,
            vec![
                (
                    "a",
                    Arc::new(Faulty {
                        panic_on: Some(3),
                        ..Faulty::new(3, 50)
                    }),
                ),
                ("b", Arc::new(Faulty::new(2, 40))),
                ("c", Arc::new(Faulty::new(5, 30))),
            ],
        );
        let err = l.epoch(0).unwrap().find_map(Result::err).unwrap();
        assert!(format!("{err:#}").contains("plugin bug"), "{err:#}");
    }

    #[test]
    fn unknown_domain_or_item_is_refused_at_construction() {
        let sources: Sources = [(
            "a".to_string(),
            Arc::new(Faulty::new(3, 5)) as Arc<dyn ItemSource>,
        )]
        .into_iter()
        .collect();
        let mk = |domains: Vec<String>, items: Vec<u64>| {
            let g = GroupDataset::new("g", domains, Split::Train, items).unwrap();
            let s = GroupSampler::new(RepeatedDataset::identity(g.len() as u64), 1, false, false)
                .unwrap();
            let c =
                CombinedSampler::new(vec![(s, g.items_arc())], CombineMode::MinSize, 0).unwrap();
            DataLoader::new(vec![g], sources.clone(), c, 1, 1)
        };
        let err = mk(vec!["z".into()], vec![0]).unwrap_err().to_string();
        assert!(err.contains("`z`") && err.contains("known: a"), "{err}");
        let err = mk(vec!["a".into()], vec![0, 5]).unwrap_err().to_string();
        assert!(
            err.contains("item 5") && err.contains("5 train items"),
            "{err}"
        );
    }
}
