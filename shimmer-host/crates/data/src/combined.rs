//! Lightning's `CombinedLoader`: one stream of batches from several group
//! samplers, in one of four [`CombineMode`]s. The result is a *plan*: for
//! each batch of an epoch, which items of which groups it holds. Loader
//! threads then fill the plan in; the plan alone fixes the output.
//!
//! ```
//! use shimmer_data::{CombineMode, CombinedSampler, GroupSampler, RepeatedDataset};
//!
//! let s = |n| GroupSampler::new(RepeatedDataset::identity(n), 2, false, false).unwrap();
//! let items = |n: u64| (100..100 + n).collect::<Vec<_>>().into();
//! let c = CombinedSampler::new(vec![(s(4), items(4)), (s(2), items(2))], CombineMode::MinSize, 0).unwrap();
//! let plan = c.epoch(0);
//! assert_eq!(plan.len(), 1);
//! assert_eq!(plan[0].parts[0].items, [100, 101]);
//! assert_eq!(plan[0].parts[1].items, [100, 101]);
//! ```

use super::sampler::{GroupSampler, mix_seed};
use anyhow::{Result, bail};
use shimmer_config::CombineMode;
use std::sync::Arc;

/// The items of one group in one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanPart {
    /// Index of the group (in the order given to [`CombinedSampler::new`]).
    pub group: usize,
    /// Item indices within the group's split, in batch order.
    pub items: Vec<u64>,
}

/// What one batch holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Lightning's `dataloader_idx`: the group of a `sequential` batch, 0 otherwise.
    pub loader: usize,
    /// Lightning's `batch_idx`: position within the epoch (within the loader
    /// for `sequential`).
    pub batch_idx: usize,
    /// One part per group present in the batch, in group order.
    pub parts: Vec<PlanPart>,
}

/// Several group samplers combined as Lightning's `CombinedLoader` does.
#[derive(Clone, Debug)]
pub struct CombinedSampler {
    groups: Vec<(GroupSampler, Arc<[u64]>)>,
    mode: CombineMode,
    seed: u64,
}

impl CombinedSampler {
    /// Combines `(sampler, item indices)` per group; sampler positions index
    /// into the item list. In every mode but `sequential`, a group that
    /// yields no batch is an error (the epoch would be empty or endless).
    pub fn new(
        groups: Vec<(GroupSampler, Arc<[u64]>)>,
        mode: CombineMode,
        seed: u64,
    ) -> Result<Self> {
        for (i, (s, items)) in groups.iter().enumerate() {
            if s.dataset().base_len() != items.len() as u64 {
                bail!(
                    "group {i}: sampler walks {} items but {} are listed",
                    s.dataset().base_len(),
                    items.len()
                );
            }
            if mode != CombineMode::Sequential && s.num_batches() == 0 {
                bail!(
                    "group {i} has {} positions, fewer than one batch: it yields no batch \
                     (lower batch_size or set drop_last: false)",
                    s.dataset().len()
                );
            }
        }
        Ok(Self { groups, mode, seed })
    }

    /// The combine mode.
    pub fn mode(&self) -> CombineMode {
        self.mode
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let counts = self.groups.iter().map(|(s, _)| s.num_batches());
        match self.mode {
            CombineMode::MinSize => counts.min().unwrap_or(0),
            CombineMode::MaxSizeCycle | CombineMode::MaxSize => counts.max().unwrap_or(0),
            CombineMode::Sequential => counts.sum(),
        }
    }

    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches of epoch `epoch`. Each group reshuffles from
    /// `(seed, group, epoch, pass)`; `pass` counts how often a cycled group
    /// restarted within the epoch.
    pub fn epoch(&self, epoch: u64) -> Vec<BatchPlan> {
        let pass = |g: usize, p: u64| -> Vec<Vec<u64>> {
            let (sampler, items) = &self.groups[g];
            sampler
                .pass(mix_seed(&[self.seed, g as u64, epoch, p]))
                .into_iter()
                .map(|b| b.into_iter().map(|i| items[i as usize]).collect())
                .collect()
        };
        let n = self.len();
        match self.mode {
            CombineMode::Sequential => {
                let mut plan = Vec::with_capacity(n);
                for g in 0..self.groups.len() {
                    for (batch_idx, items) in pass(g, 0).into_iter().enumerate() {
                        plan.push(BatchPlan {
                            loader: g,
                            batch_idx,
                            parts: vec![PlanPart { group: g, items }],
                        });
                    }
                }
                plan
            }
            CombineMode::MinSize | CombineMode::MaxSize | CombineMode::MaxSizeCycle => {
                let mut plan: Vec<BatchPlan> = (0..n)
                    .map(|batch_idx| BatchPlan {
                        loader: 0,
                        batch_idx,
                        parts: Vec::with_capacity(self.groups.len()),
                    })
                    .collect();
                for g in 0..self.groups.len() {
                    let per_pass = self.groups[g].0.num_batches();
                    let mut p = 0u64;
                    let mut current = pass(g, 0).into_iter();
                    for batch in plan.iter_mut() {
                        let items = match current.next() {
                            Some(items) => items,
                            None if self.mode == CombineMode::MaxSizeCycle && per_pass > 0 => {
                                p += 1;
                                current = pass(g, p).into_iter();
                                match current.next() {
                                    Some(items) => items,
                                    None => break,
                                }
                            }
                            None => break,
                        };
                        batch.parts.push(PlanPart { group: g, items });
                    }
                }
                plan
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RepeatedDataset;

    /// Group `g` has items `g*100 .. g*100 + n`, unshuffled.
    fn combined(sizes: &[u64], bs: usize, drop_last: bool, mode: CombineMode) -> CombinedSampler {
        let groups = sizes
            .iter()
            .enumerate()
            .map(|(g, &n)| {
                let s =
                    GroupSampler::new(RepeatedDataset::identity(n), bs, drop_last, false).unwrap();
                let items: Arc<[u64]> = (0..n).map(|i| g as u64 * 100 + i).collect();
                (s, items)
            })
            .collect();
        CombinedSampler::new(groups, mode, 0).unwrap()
    }

    /// Each batch as `(loader, batch_idx, [(group, items)])`.
    type Flat = Vec<(usize, usize, Vec<(usize, Vec<u64>)>)>;

    fn flat(plan: Vec<BatchPlan>) -> Flat {
        plan.into_iter()
            .map(|b| {
                let parts = b.parts.into_iter().map(|p| (p.group, p.items)).collect();
                (b.loader, b.batch_idx, parts)
            })
            .collect()
    }

    // Sizes 5 and 2, batch 2: group 0 yields [0,1] [2,3] [4] (or 2 batches
    // with drop_last), group 1 yields [100,101].

    #[test]
    fn min_size_stops_with_the_shortest_group() {
        let c = combined(&[5, 2], 2, false, CombineMode::MinSize);
        assert_eq!(c.len(), 1);
        assert_eq!(
            flat(c.epoch(0)),
            [(0, 0, vec![(0, vec![0, 1]), (1, vec![100, 101])])]
        );
    }

    #[test]
    fn max_size_cycle_restarts_short_groups() {
        let c = combined(&[5, 2], 2, false, CombineMode::MaxSizeCycle);
        assert_eq!(c.len(), 3);
        assert_eq!(
            flat(c.epoch(0)),
            [
                (0, 0, vec![(0, vec![0, 1]), (1, vec![100, 101])]),
                (0, 1, vec![(0, vec![2, 3]), (1, vec![100, 101])]),
                (0, 2, vec![(0, vec![4]), (1, vec![100, 101])]),
            ]
        );
        // drop_last: 2 batches for group 0; group 1 of 3 items gives [100,101] only.
        let c = combined(&[5, 3], 2, true, CombineMode::MaxSizeCycle);
        assert_eq!(
            flat(c.epoch(0)),
            [
                (0, 0, vec![(0, vec![0, 1]), (1, vec![100, 101])]),
                (0, 1, vec![(0, vec![2, 3]), (1, vec![100, 101])]),
            ]
        );
    }

    #[test]
    fn max_size_leaves_exhausted_groups_out() {
        let c = combined(&[5, 2], 2, false, CombineMode::MaxSize);
        assert_eq!(
            flat(c.epoch(0)),
            [
                (0, 0, vec![(0, vec![0, 1]), (1, vec![100, 101])]),
                (0, 1, vec![(0, vec![2, 3])]),
                (0, 2, vec![(0, vec![4])]),
            ]
        );
    }

    #[test]
    fn sequential_visits_groups_one_after_the_other() {
        let c = combined(&[5, 3], 2, false, CombineMode::Sequential);
        assert_eq!(c.len(), 5);
        assert_eq!(
            flat(c.epoch(0)),
            [
                (0, 0, vec![(0, vec![0, 1])]),
                (0, 1, vec![(0, vec![2, 3])]),
                (0, 2, vec![(0, vec![4])]),
                (1, 0, vec![(1, vec![100, 101])]),
                (1, 1, vec![(1, vec![102])]),
            ]
        );
        // drop_last removes the partial batches; an empty group is skipped.
        let c = combined(&[5, 1, 3], 2, true, CombineMode::Sequential);
        let loaders: Vec<_> = c.epoch(0).iter().map(|b| b.loader).collect();
        assert_eq!(loaders, [0, 0, 2]);
    }

    #[test]
    fn repeated_groups_in_min_size_mode_as_shimmer_trains() {
        // Groups of 5 and 2 items repeated to the largest (5): the small one
        // becomes 6 positions [0,1,0,1,0,1]; batch 2, drop_last -> 2 batches
        // (min of 5/2=2 and 6/2=3).
        let bs = 2;
        let g0 =
            GroupSampler::new(RepeatedDataset::new(5, 5, false).unwrap(), bs, true, false).unwrap();
        let g1 =
            GroupSampler::new(RepeatedDataset::new(2, 5, false).unwrap(), bs, true, false).unwrap();
        assert_eq!(g1.dataset().len(), 6);
        let c = CombinedSampler::new(
            vec![(g0, (0..5).collect()), (g1, vec![100u64, 101].into())],
            CombineMode::MinSize,
            0,
        )
        .unwrap();
        assert_eq!(
            flat(c.epoch(0)),
            [
                (0, 0, vec![(0, vec![0, 1]), (1, vec![100, 101])]),
                (0, 1, vec![(0, vec![2, 3]), (1, vec![100, 101])]),
            ]
        );
    }

    #[test]
    fn shuffles_differ_per_epoch_and_per_cycle_but_are_seeded() {
        let mk = |seed| {
            let groups = [(12u64, 0u64), (4, 100)]
                .into_iter()
                .map(|(n, off)| {
                    let s = GroupSampler::new(RepeatedDataset::identity(n), 4, true, true).unwrap();
                    (s, (off..off + n).collect::<Arc<[u64]>>())
                })
                .collect();
            CombinedSampler::new(groups, CombineMode::MaxSizeCycle, seed).unwrap()
        };
        let c = mk(3);
        let e0 = c.epoch(0);
        assert_eq!(e0, mk(3).epoch(0));
        assert_ne!(e0, c.epoch(1));
        assert_ne!(e0, mk(4).epoch(0));
        // Group 1 (4 items, one batch per pass) is reshuffled at each cycle:
        // every batch holds its 4 items, not always in the same order.
        let g1: Vec<Vec<u64>> = e0.iter().map(|b| b.parts[1].items.clone()).collect();
        for b in &g1 {
            let mut s = b.clone();
            s.sort_unstable();
            assert_eq!(s, [100, 101, 102, 103]);
        }
        assert!(g1.windows(2).any(|w| w[0] != w[1]), "{g1:?}");
    }

    #[test]
    fn group_without_a_batch_is_an_error_outside_sequential() {
        let s = GroupSampler::new(RepeatedDataset::identity(1), 2, true, false).unwrap();
        let err = CombinedSampler::new(vec![(s, vec![0u64].into())], CombineMode::MinSize, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no batch"), "{err}");
    }
}
