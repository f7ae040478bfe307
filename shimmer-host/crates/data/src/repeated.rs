//! shimmer's `RepeatedDataset`: a dataset cycled to at least `min_size`
//! positions (exactly `min_size` with `drop_last`); position `i` reads item
//! `i % len`.
//!
//! ```
//! use shimmer_data::RepeatedDataset;
//!
//! let r = RepeatedDataset::new(3, 7, false).unwrap();
//! assert_eq!(r.len(), 9); // three whole copies
//! assert_eq!((0..r.len()).map(|i| r.index(i)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
//! assert_eq!(RepeatedDataset::new(3, 7, true).unwrap().len(), 7);
//! ```

use anyhow::{Result, ensure};

/// Lengths and index mapping of a repeated dataset (the items themselves
/// stay where they are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatedDataset {
    base_len: u64,
    len: u64,
}

impl RepeatedDataset {
    /// Repeats a dataset of `base_len` items to at least `min_size`
    /// positions: `ceil(min_size / base_len) * base_len` of them, or exactly
    /// `min_size` with `drop_last`. As in shimmer, `min_size` must be at
    /// least `base_len`, and the dataset must not be empty.
    pub fn new(base_len: u64, min_size: u64, drop_last: bool) -> Result<Self> {
        ensure!(base_len > 0, "cannot repeat an empty dataset");
        ensure!(
            min_size >= base_len,
            "cannot repeat a dataset of {base_len} items to {min_size}: fewer than it has"
        );
        let len = if drop_last {
            min_size
        } else {
            min_size.div_ceil(base_len) * base_len
        };
        Ok(Self { base_len, len })
    }

    /// The dataset unchanged (one copy).
    pub fn identity(base_len: u64) -> Self {
        Self {
            base_len,
            len: base_len,
        }
    }

    /// Number of positions.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there is no position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items of the underlying dataset.
    pub fn base_len(&self) -> u64 {
        self.base_len
    }

    /// Index into the underlying dataset of position `i`.
    pub fn index(&self, i: u64) -> u64 {
        i % self.base_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indices(r: RepeatedDataset) -> Vec<u64> {
        (0..r.len()).map(|i| r.index(i)).collect()
    }

    #[test]
    fn lengths_match_shimmer() {
        // (base, min_size, drop_last) -> len, worked by hand from
        // `(min_size // n + int(min_size % n > 0)) * n` / `min_size`.
        let cases = [
            (3, 3, false, 3),
            (3, 7, false, 9),
            (3, 7, true, 7),
            (5, 10, false, 10),
            (5, 10, true, 10),
            (4, 9, false, 12),
            (1, 5, false, 5),
            (32, 1000, false, 1024),
            (32, 1000, true, 1000),
        ];
        for (base, min, drop, len) in cases {
            let r = RepeatedDataset::new(base, min, drop).unwrap();
            assert_eq!(r.len(), len, "base {base} min {min} drop_last {drop}");
        }
    }

    #[test]
    fn index_sequences_cycle() {
        assert_eq!(
            indices(RepeatedDataset::new(3, 7, true).unwrap()),
            [0, 1, 2, 0, 1, 2, 0]
        );
        assert_eq!(
            indices(RepeatedDataset::new(4, 5, false).unwrap()),
            [0, 1, 2, 3, 0, 1, 2, 3]
        );
        assert_eq!(indices(RepeatedDataset::identity(2)), [0, 1]);
    }

    #[test]
    fn empty_or_shrinking_is_an_error() {
        assert!(RepeatedDataset::new(0, 5, false).is_err());
        assert!(RepeatedDataset::new(5, 4, true).is_err());
    }
}
