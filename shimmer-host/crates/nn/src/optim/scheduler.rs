//! Learning-rate (and beta1) schedules, computed in double precision as
//! PyTorch does, stepped once after every optimiser step.
//!
//! * `none`: constant `optim.lr` and `beta1`.
//! * `one_cycle`: PyTorch's `OneCycleLR` (cosine anneal, two phases): with
//!   `e1 = pct_start·T − 1`, `e2 = T − 1`, `cos(a, b, p) = b + (a − b)/2 ·
//!   (1 + cos πp)`: for `k ≤ e1`, `p = k/e1`, `lr = cos(max/div, max, p)`,
//!   `β1 = cos(max_m, base_m, p)`; after, `p = (k − e1)/(e2 − e1)`,
//!   `lr = cos(max, max/div/final_div, p)`, `β1 = cos(base_m, max_m, p)`.
//!   Asking for a step past `T` is an error, as in PyTorch.
//! * `cosine`: linear warm-up `lr·(k+1)/warmup` for `k < warmup`, then cosine
//!   decay from `lr` to `min_lr` over the remaining steps (held at `min_lr`
//!   after `T`).

use anyhow::{Result, bail};
use shimmer_config::SchedulerConfig;
use std::f64::consts::PI;

/// A schedule resolved against the optimiser settings and training length.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Constant values.
    Constant {
        /// Learning rate.
        lr: f64,
        /// beta1.
        beta1: f64,
    },
    /// PyTorch's `OneCycleLR`.
    OneCycle {
        /// Peak learning rate.
        max_lr: f64,
        /// Schedule length `T`.
        total_steps: usize,
        /// Fraction of steps increasing the learning rate.
        pct_start: f64,
        /// `initial_lr = max_lr / div_factor`.
        div_factor: f64,
        /// `min_lr = initial_lr / final_div_factor`.
        final_div_factor: f64,
        /// `(base_momentum, max_momentum)` when beta1 is cycled.
        momentum: Option<(f64, f64)>,
        /// beta1 when it is not cycled.
        beta1: f64,
    },
    /// Linear warm-up then cosine decay.
    Cosine {
        /// Peak learning rate.
        lr: f64,
        /// Schedule length.
        total_steps: usize,
        /// Warm-up steps.
        warmup_steps: usize,
        /// Final learning rate.
        min_lr: f64,
        /// beta1.
        beta1: f64,
    },
}

fn anneal_cos(start: f64, end: f64, pct: f64) -> f64 {
    let cos_out = (PI * pct).cos() + 1.0;
    end + (start - end) / 2.0 * cos_out
}

impl Schedule {
    /// Resolves `cfg` with base `lr`, `beta1`, and the training length
    /// (used when `total_steps` is absent).
    pub fn new(
        cfg: &SchedulerConfig,
        lr: f64,
        beta1: f64,
        training_steps: Option<usize>,
    ) -> Result<Self> {
        let need_total = |given: Option<usize>, what: &str| -> Result<usize> {
            match given.or(training_steps) {
                Some(t) if t > 0 => Ok(t),
                _ => bail!(
                    "the `{what}` schedule needs its length: set optim.scheduler.total_steps \
                     or a training length"
                ),
            }
        };
        Ok(match *cfg {
            SchedulerConfig::None => Schedule::Constant { lr, beta1 },
            SchedulerConfig::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                cycle_momentum,
                base_momentum,
                max_momentum,
            } => {
                if !(0.0..=1.0).contains(&pct_start) {
                    bail!("one_cycle pct_start must be in [0, 1], got {pct_start}");
                }
                Schedule::OneCycle {
                    max_lr: max_lr.unwrap_or(lr),
                    total_steps: need_total(total_steps, "one_cycle")?,
                    pct_start,
                    div_factor,
                    final_div_factor,
                    momentum: cycle_momentum.then_some((base_momentum, max_momentum)),
                    beta1,
                }
            }
            SchedulerConfig::Cosine {
                total_steps,
                warmup_steps,
                min_lr,
            } => Schedule::Cosine {
                lr,
                total_steps: need_total(total_steps, "cosine")?,
                warmup_steps,
                min_lr,
                beta1,
            },
        })
    }

    /// `(lr, beta1)` at scheduler step `k` (0 for the first optimiser step).
    pub fn at(&self, k: usize) -> Result<(f64, f64)> {
        Ok(match *self {
            Schedule::Constant { lr, beta1 } => (lr, beta1),
            Schedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                momentum,
                beta1,
            } => {
                if k > total_steps {
                    bail!(
                        "one_cycle schedule of {total_steps} steps asked for step {k}; \
                         raise optim.scheduler.total_steps"
                    );
                }
                let initial = max_lr / div_factor;
                let min_lr = initial / final_div_factor;
                let (base_m, max_m) = momentum.unwrap_or((beta1, beta1));
                let e1 = pct_start * total_steps as f64 - 1.0;
                let e2 = total_steps as f64 - 1.0;
                let k = k as f64;
                let (lr, m) = if k <= e1 {
                    let p = k / e1;
                    (anneal_cos(initial, max_lr, p), anneal_cos(max_m, base_m, p))
                } else {
                    let p = (k - e1) / (e2 - e1);
                    (anneal_cos(max_lr, min_lr, p), anneal_cos(base_m, max_m, p))
                };
                (lr, if momentum.is_some() { m } else { beta1 })
            }
            Schedule::Cosine {
                lr,
                total_steps,
                warmup_steps,
                min_lr,
                beta1,
            } => {
                if k < warmup_steps {
                    (lr * (k + 1) as f64 / warmup_steps as f64, beta1)
                } else {
                    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                    let p = ((k - warmup_steps) as f64 / span).min(1.0);
                    (anneal_cos(lr, min_lr, p), beta1)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_cycle(total: usize) -> Schedule {
        let cfg: SchedulerConfig = serde_norway::from_str(&format!(
            "{{type: one_cycle, max_lr: 1.0e-3, total_steps: {total}}}"
        ))
        .unwrap();
        Schedule::new(&cfg, 0.5, 0.9, None).unwrap()
    }

    /// PyTorch `OneCycleLR.get_lr` written independently (phase table).
    fn torch_one_cycle(k: usize, total: usize) -> (f64, f64) {
        let max_lr = 1e-3;
        let initial = max_lr / 25.0;
        let min_lr = initial / 1e4;
        let phases = [
            (0.3 * total as f64 - 1.0, initial, max_lr, 0.95, 0.85),
            (total as f64 - 1.0, max_lr, min_lr, 0.85, 0.95),
        ];
        let mut start = 0.0;
        for (i, (end, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
            if k as f64 <= *end || i == phases.len() - 1 {
                let pct = (k as f64 - start) / (end - start);
                let cos = |a: f64, b: f64| b + (a - b) / 2.0 * ((PI * pct).cos() + 1.0);
                return (cos(*lr0, *lr1), cos(*m0, *m1));
            }
            start = *end;
        }
        unreachable!()
    }

    #[test]
    fn one_cycle_matches_pytorch_curve() {
        for total in [12, 20, 1000] {
            let s = one_cycle(total);
            for k in [
                0,
                1,
                2,
                total / 4,
                total * 3 / 10,
                total / 2,
                total - 1,
                total,
            ] {
                let (lr, b1) = s.at(k).unwrap();
                let (want_lr, want_b1) = torch_one_cycle(k, total);
                assert_eq!(lr, want_lr, "lr at {k}/{total}");
                assert_eq!(b1, want_b1, "beta1 at {k}/{total}");
            }
            assert!(s.at(total + 1).is_err());
        }
        // Exact values PyTorch produced for P1 (T = 20).
        let s = one_cycle(20);
        assert_eq!(s.at(0).unwrap(), (3.9999999999999996e-05, 0.95));
        let (lr5, _) = s.at(5).unwrap();
        assert_eq!(lr5, 0.001);
    }

    #[test]
    fn constant_and_cosine_schedules() {
        let s = Schedule::new(&SchedulerConfig::None, 0.1, 0.9, None).unwrap();
        assert_eq!(s.at(1000).unwrap(), (0.1, 0.9));
        let cfg = SchedulerConfig::Cosine {
            total_steps: None,
            warmup_steps: 2,
            min_lr: 0.0,
        };
        let s = Schedule::new(&cfg, 1.0, 0.9, Some(12)).unwrap();
        assert_eq!(s.at(0).unwrap().0, 0.5);
        assert_eq!(s.at(1).unwrap().0, 1.0);
        assert_eq!(s.at(2).unwrap().0, 1.0);
        assert!((s.at(7).unwrap().0 - 0.5).abs() < 1e-12);
        assert!(s.at(12).unwrap().0.abs() < 1e-12);
        assert!(s.at(50).unwrap().0.abs() < 1e-12);
    }

    #[test]
    fn missing_length_is_an_error_not_a_crash_later() {
        let cfg = SchedulerConfig::OneCycle {
            max_lr: None,
            total_steps: None,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
        };
        assert!(Schedule::new(&cfg, 1e-3, 0.9, None).is_err());
        let s = Schedule::new(&cfg, 1e-3, 0.9, Some(10)).unwrap();
        assert!(s.at(10).is_ok());
    }
}
