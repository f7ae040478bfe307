//! One group's batch sampler (PyTorch's `DataLoader` over a
//! [`RepeatedDataset`]): the order of positions in one pass, shuffled from
//! a seed, cut into batches, the last incomplete one dropped with `drop_last`.
//!
//! ```
//! use shimmer_data::{GroupSampler, RepeatedDataset};
//!
//! let s = GroupSampler::new(RepeatedDataset::identity(5), 2, false, false).unwrap();
//! assert_eq!(s.num_batches(), 3);
//! assert_eq!(s.pass(0), vec![vec![0, 1], vec![2, 3], vec![4]]);
//! ```

use super::repeated::RepeatedDataset;
use anyhow::{Result, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Splits a repeated dataset into batches of dataset indices, one pass at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSampler {
    dataset: RepeatedDataset,
    batch_size: usize,
    drop_last: bool,
    shuffle: bool,
}

impl GroupSampler {
    /// A sampler over `dataset` with batches of `batch_size` (at least 1).
    pub fn new(
        dataset: RepeatedDataset,
        batch_size: usize,
        drop_last: bool,
        shuffle: bool,
    ) -> Result<Self> {
        ensure!(batch_size > 0, "batch_size must be at least 1");
        Ok(Self {
            dataset,
            batch_size,
            drop_last,
            shuffle,
        })
    }

    /// The (repeated) dataset this sampler walks.
    pub fn dataset(&self) -> RepeatedDataset {
        self.dataset
    }

    /// Batches in one pass.
    pub fn num_batches(&self) -> usize {
        let len = self.dataset.len() as usize;
        if self.drop_last {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }

    /// The batches of one pass, as indices into the underlying dataset.
    /// `seed` decides the shuffle (ignored without shuffling).
    pub fn pass(&self, seed: u64) -> Vec<Vec<u64>> {
        let mut positions: Vec<u64> = (0..self.dataset.len()).collect();
        if self.shuffle {
            positions.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        positions
            .chunks(self.batch_size)
            .take(self.num_batches())
            .map(|c| c.iter().map(|&p| self.dataset.index(p)).collect())
            .collect()
    }
}

/// Folds several numbers into one well-mixed seed (splitmix64 steps), so
/// that `(seed, group, epoch, pass)` give independent shuffles.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        h = splitmix64(h ^ splitmix64(p));
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counts_follow_drop_last() {
        let s = |len, bs, drop| {
            GroupSampler::new(RepeatedDataset::identity(len), bs, drop, true)
                .unwrap()
                .num_batches()
        };
        assert_eq!(s(10, 3, false), 4);
        assert_eq!(s(10, 3, true), 3);
        assert_eq!(s(9, 3, true), 3);
        assert_eq!(s(2, 3, true), 0);
        assert_eq!(s(2, 3, false), 1);
    }

    #[test]
    fn shuffled_pass_is_a_seeded_permutation_of_the_repeated_dataset() {
        let r = RepeatedDataset::new(3, 7, false).unwrap(); // 9 positions
        let s = GroupSampler::new(r, 4, true, true).unwrap();
        let a = s.pass(1);
        assert_eq!(a, s.pass(1));
        assert_ne!(a, s.pass(2));
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|b| b.len() == 4));
        // The full (undropped) pass holds each item exactly three times.
        let full = GroupSampler::new(r, 4, false, true).unwrap().pass(1);
        let mut counts = [0; 3];
        full.iter().flatten().for_each(|&i| counts[i as usize] += 1);
        assert_eq!(counts, [3, 3, 3]);
        assert_eq!(&full[..2], &a[..]);
    }

    #[test]
    fn mixed_seeds_differ_by_every_part() {
        let base = mix_seed(&[0, 1, 2, 3]);
        assert_ne!(base, mix_seed(&[1, 1, 2, 3]));
        assert_ne!(base, mix_seed(&[0, 2, 2, 3]));
        assert_ne!(base, mix_seed(&[0, 1, 3, 3]));
        assert_ne!(base, mix_seed(&[0, 1, 2, 4]));
        assert_ne!(mix_seed(&[1, 0]), mix_seed(&[0, 1]));
    }
}
