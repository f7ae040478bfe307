//! Expands a sweep's parameters into trials: lists of `key.path=value`
//! overrides, in a fixed order, with seeded random draws.
//!
//! The grid is the cartesian product of its lists, first key varying
//! slowest; each grid point is repeated `samples` times, and every trial
//! draws its own random parameters from one ChaCha stream seeded by
//! `sweep.seed`, so the same section always gives the same trials.
//!
//! ```
//! use shimmer_sweep::SweepConfig;
//! use shimmer_sweep::expand::expand;
//!
//! let section: SweepConfig = serde_norway::from_str(
//!     "grid: {optim.lr: [1.0e-3, 3.0e-4]}\nrandom: {workspace.dim: {int: [8, 32]}}\nsamples: 2",
//! )?;
//! let trials = expand(&section.space()?)?;
//! assert_eq!(trials.len(), 4);
//! assert_eq!(trials[0].overrides[0], "optim.lr=0.001");
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{Result, bail};
use indexmap::IndexMap;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_norway::Value;
use shimmer_config::sweep::{Distribution, Space, flow};

/// The most trials one sweep may have: a guard against a typo that
/// multiplies a grid into millions of runs.
pub const MAX_TRIALS: usize = 100_000;

/// One trial of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Position in the sweep, from 0; also its Slurm array index.
    pub index: usize,
    /// `key.path=value` overrides applied after the sweep's command-line
    /// overrides.
    pub overrides: Vec<String>,
    /// The swept values as YAML text, by key (for tables).
    pub values: IndexMap<String, String>,
}

/// All trials of `space`, in order.
///
/// # Errors
/// If the sweep would have more than [`MAX_TRIALS`] trials.
pub fn expand(space: &Space) -> Result<Vec<Trial>> {
    let grid_points = space
        .grid
        .iter()
        .try_fold(1usize, |n, (_, values)| n.checked_mul(values.len()));
    let total = grid_points.and_then(|n| n.checked_mul(space.samples.max(1)));
    let (Some(grid_points), Some(total)) = (grid_points, total) else {
        bail!("the sweep has too many trials to count");
    };
    if total > MAX_TRIALS {
        bail!("the sweep has {total} trials, more than the {MAX_TRIALS} allowed: shrink the grid");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(space.seed);
    let mut trials = Vec::with_capacity(total);
    for point in 0..grid_points {
        // Mixed-radix digits of `point`, last key fastest.
        let mut chosen = Vec::with_capacity(space.grid.len());
        let mut rest = point;
        for (key, values) in space.grid.iter().rev() {
            chosen.push((key, values[rest % values.len()].clone()));
            rest /= values.len();
        }
        chosen.reverse();
        for _ in 0..space.samples.max(1) {
            let mut trial = Trial {
                index: trials.len(),
                overrides: Vec::new(),
                values: IndexMap::new(),
            };
            let drawn = space
                .random
                .iter()
                .map(|(key, dist)| (key, draw(dist, &mut rng)));
            for (key, value) in chosen.iter().cloned().chain(drawn) {
                let text = flow(&value);
                trial.overrides.push(format!("{key}={text}"));
                trial.values.insert(key.clone(), text);
            }
            trials.push(trial);
        }
    }
    Ok(trials)
}

/// A uniform draw in `[0, 1)` from the top 53 bits of one `u64`, so the
/// trials do not depend on `rand`'s float sampling.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Rounds to 6 significant digits: readable values in tables, run names
/// and overrides, at no cost to a search.
fn round_sig(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

fn draw(dist: &Distribution, rng: &mut ChaCha8Rng) -> Value {
    let u = unit(rng);
    match dist {
        Distribution::Uniform(lo, hi) => Value::from(round_sig(lo + u * (hi - lo)).clamp(*lo, *hi)),
        Distribution::LogUniform(lo, hi) => {
            let x = (lo.ln() + u * (hi.ln() - lo.ln())).exp();
            Value::from(round_sig(x).clamp(*lo, *hi))
        }
        Distribution::Int(lo, hi) => {
            let span = (*hi as i128 - *lo as i128 + 1) as f64;
            let k = (u * span).floor() as i128;
            Value::from((*lo as i128 + k).min(*hi as i128) as i64)
        }
        Distribution::Choice(values) => {
            let k = ((u * values.len() as f64) as usize).min(values.len() - 1);
            values[k].clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shimmer_config::sweep::SweepConfig;

    fn trials(yaml: &str) -> Vec<Trial> {
        let section: SweepConfig = serde_norway::from_str(yaml).unwrap();
        expand(&section.space().unwrap()).unwrap()
    }

    #[test]
    fn grid_is_the_cartesian_product_first_key_slowest() {
        let t = trials("grid:\n  optim.lr: [1.0e-3, 3.0e-4]\n  workspace.dim: [8, 16, 32]\n");
        assert_eq!(t.len(), 6);
        let firsts: Vec<_> = t.iter().map(|t| t.overrides.join(" ")).collect();
        assert_eq!(firsts[0], "optim.lr=0.001 workspace.dim=8");
        assert_eq!(firsts[2], "optim.lr=0.001 workspace.dim=32");
        assert_eq!(firsts[3], "optim.lr=0.0003 workspace.dim=8");
        assert!(t.iter().enumerate().all(|(i, t)| t.index == i));
        assert_eq!(t[4].values["workspace.dim"], "16");
    }

    #[test]
    fn samples_multiply_the_grid_and_are_ignored_without_random() {
        assert_eq!(trials("grid: {a: [1, 2]}\nsamples: 5").len(), 2);
        let t = trials("grid: {a: [1, 2]}\nrandom: {b: {uniform: [0.0, 1.0]}}\nsamples: 3");
        assert_eq!(t.len(), 6);
        assert!(t[..3].iter().all(|t| t.overrides[0] == "a=1"));
    }

    #[test]
    fn random_draws_are_seeded_reproducible_and_within_bounds() {
        let yaml = "random:\n  u: {uniform: [-1.0, 2.0]}\n  l: {loguniform: [1.0e-5, 1.0e-1]}\n  \
                    i: {int: [3, 5]}\n  c: {choice: [tanh, relu]}\nsamples: 200\nseed: 7\n";
        let a = trials(yaml);
        assert_eq!(a, trials(yaml), "same seed, same trials");
        assert_ne!(a, trials(&yaml.replace("seed: 7", "seed: 8")));
        let num = |t: &Trial, k: &str| t.values[k].parse::<f64>().unwrap();
        let mut ints = std::collections::BTreeSet::new();
        let mut choices = std::collections::BTreeSet::new();
        for t in &a {
            assert!((-1.0..=2.0).contains(&num(t, "u")), "{t:?}");
            assert!((1e-5..=1e-1).contains(&num(t, "l")), "{t:?}");
            ints.insert(t.values["i"].clone());
            choices.insert(t.values["c"].clone());
        }
        assert_eq!(ints.into_iter().collect::<Vec<_>>(), ["3", "4", "5"]);
        assert_eq!(choices.into_iter().collect::<Vec<_>>(), ["relu", "tanh"]);
        // Log-uniform: about as many draws below 1e-3 as above.
        let below = a.iter().filter(|t| num(t, "l") < 1e-3).count();
        assert!((60..140).contains(&below), "{below}");
    }

    #[test]
    fn too_many_trials_is_an_error() {
        let section: SweepConfig =
            serde_norway::from_str("random: {a: {int: [0, 1]}}\nsamples: 1000000").unwrap();
        let err = expand(&section.space().unwrap()).unwrap_err().to_string();
        assert!(err.contains("1000000 trials"), "{err}");
    }
}
