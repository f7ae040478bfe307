//! CLIP's symmetric cross-entropy on a square logits matrix `L [B, B]`
//! whose matching pairs lie on the diagonal:
//! `½ (mean_i (lse_j L_ij − L_ii) + mean_j (lse_i L_ij − L_jj))`.
//!
//! Forward: one pass for the row and column maxima, one for the sums of
//! exponentials (both directions at once), keeping the log-sum-exps for the
//! backward pass, which writes
//! `dL_ij = g/(2B) · (softmax_row(L)_ij + softmax_col(L)_ij − 2δ_ij)` in a
//! single pass. Rows are split between threads. On the `2056 x 2056` logits
//! of a simple-shapes batch this replaces about a dozen candle ops (two
//! log-softmaxes, a transposed copy, gathers) and their backward passes.

use super::{cpu_tensor, ranges, simd, with_matrix};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Row and column log-sum-exps of the forward pass, kept for backward.
#[derive(Debug, Default)]
struct Saved {
    row_lse: Vec<f32>,
    col_lse: Vec<f32>,
}

/// The op: `apply_op1(logits [B, B]) -> scalar loss`.
#[derive(Debug, Default)]
pub struct ClipLossOp {
    saved: Mutex<Saved>,
}

/// The symmetric diagonal cross-entropy of `logits` (`f32`, CPU).
pub fn clip_loss(logits: &Tensor) -> candle_core::Result<Tensor> {
    logits.apply_op1(ClipLossOp::default())
}

/// Row-major rows `range` of a `b x b` matrix.
fn rows(data: &[f32], b: usize, range: std::ops::Range<usize>) -> &[f32] {
    &data[range.start * b..range.end * b]
}

/// Row maxima and column maxima.
fn maxima(l: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
    let parts: Vec<(Vec<f32>, Vec<f32>)> = ranges(b, 64)
        .into_par_iter()
        .map(|range| {
            simd::dispatch(|| {
                let mut col = vec![f32::NEG_INFINITY; b];
                let row: Vec<f32> = rows(l, b, range)
                    .chunks_exact(b)
                    .map(|r| {
                        for (c, v) in col.iter_mut().zip(r) {
                            *c = c.max(*v);
                        }
                        simd::max(r)
                    })
                    .collect();
                (row, col)
            })
        })
        .collect();
    let mut row_max = Vec::with_capacity(b);
    let mut col_max = vec![f32::NEG_INFINITY; b];
    for (r, c) in parts {
        row_max.extend(r);
        for (m, v) in col_max.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    (row_max, col_max)
}

/// Row and column log-sum-exps, given the maxima.
fn log_sum_exps(l: &[f32], b: usize, row_max: &[f32], col_max: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let parts: Vec<(Vec<f32>, Vec<f32>)> = ranges(b, 64)
        .into_par_iter()
        .map(|range| {
            simd::dispatch(|| {
                let mut col_sum = vec![0f32; b];
                let mut tmp = vec![0f32; b];
                let start = range.start;
                let row_lse: Vec<f32> = rows(l, b, range)
                    .chunks_exact(b)
                    .enumerate()
                    .map(|(k, r)| {
                        let m = row_max[start + k];
                        for (t, v) in tmp.iter_mut().zip(r) {
                            *t = simd::exp(v - m);
                        }
                        for ((s, v), cm) in col_sum.iter_mut().zip(r).zip(col_max) {
                            *s += simd::exp(v - cm);
                        }
                        m + simd::sum(&tmp).ln()
                    })
                    .collect();
                (row_lse, col_sum)
            })
        })
        .collect();
    let mut row_lse = Vec::with_capacity(b);
    let mut col_sum = vec![0f32; b];
    for (r, c) in parts {
        row_lse.extend(r);
        for (s, v) in col_sum.iter_mut().zip(c) {
            *s += v;
        }
    }
    let col_lse = col_sum
        .iter()
        .zip(col_max)
        .map(|(s, m)| m + s.ln())
        .collect();
    (row_lse, col_lse)
}

impl CustomOp1 for ClipLossOp {
    fn name(&self) -> &'static str {
        "fused-clip-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("fused CLIP loss: the logits must be a contiguous f32 tensor");
        };
        let (b, b2) = l.shape().dims2()?;
        if b != b2 || b == 0 {
            candle_core::bail!(
                "fused CLIP loss: logits must be square and non-empty, got [{b}, {b2}]"
            );
        }
        let logits = &data[start..end];
        let (row_max, col_max) = maxima(logits, b);
        let (row_lse, col_lse) = log_sum_exps(logits, b, &row_max, &col_max);
        let mut total = 0f64;
        for i in 0..b {
            let diag = f64::from(logits[i * b + i]);
            total += f64::from(row_lse[i]) - diag + f64::from(col_lse[i]) - diag;
        }
        let loss = (total / (2.0 * b as f64)) as f32;
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused CLIP loss: poisoned state".into()))?;
        *saved = Saved { row_lse, col_lse };
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let b = arg.dim(0)?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let k = g / (2.0 * b as f32);
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused CLIP loss: poisoned state".into()))?;
        if saved.row_lse.len() != b {
            candle_core::bail!("fused CLIP loss: backward before forward");
        }
        let (row_lse, col_lse) = (&saved.row_lse, &saved.col_lse);
        let arg = arg.contiguous()?;
        let mut out = vec![0f32; b * b];
        with_matrix(&arg, |l| {
            out.par_chunks_mut(b)
                .zip(l.data.par_chunks(b))
                .enumerate()
                .with_min_len(64)
                .for_each(|(i, (o, r))| {
                    let lse = row_lse[i];
                    simd::dispatch(|| {
                        for ((o, v), cl) in o.iter_mut().zip(r).zip(col_lse) {
                            *o = k * (simd::exp(v - lse) + simd::exp(v - cl));
                        }
                    });
                    o[i] -= 2.0 * k;
                });
        })?;
        Ok(Some(cpu_tensor(out, &[b, b])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn composed(l: &Tensor) -> Tensor {
        let b = l.dim(0).unwrap();
        let labels = Tensor::arange(0u32, b as u32, l.device()).unwrap();
        let ce = candle_nn::loss::cross_entropy(l, &labels).unwrap();
        let ce_t = candle_nn::loss::cross_entropy(&l.t().unwrap(), &labels).unwrap();
        ((ce + ce_t).unwrap() * 0.5).unwrap()
    }

    #[test]
    fn matches_two_cross_entropies_and_their_gradient() {
        for b in [1, 2, 7, 130] {
            let v: Vec<f32> = (0..b * b)
                .map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * 40.0)
                .collect();
            let l = Var::from_vec(v, (b, b), &Device::Cpu).unwrap();
            let fused = clip_loss(l.as_tensor()).unwrap();
            let plain = composed(l.as_tensor());
            let (f, p) = (
                fused.to_scalar::<f32>().unwrap(),
                plain.to_scalar::<f32>().unwrap(),
            );
            assert!(
                (f - p).abs() <= 1e-5 * p.abs().max(1.0),
                "b={b}: {f} vs {p}"
            );
            let gf = (fused * 3.0).unwrap().backward().unwrap();
            let gp = (plain * 3.0).unwrap().backward().unwrap();
            let diff = crate::test_util::max_abs_diff(gf.get(&l).unwrap(), gp.get(&l).unwrap());
            assert!(diff < 1e-6, "b={b}: gradient differs by {diff}");
        }
    }

    #[test]
    fn huge_logits_stay_finite() {
        let l = Tensor::new(&[[100f32, -100.0], [-100.0, 100.0]], &Device::Cpu).unwrap();
        let loss = clip_loss(&l).unwrap().to_scalar::<f32>().unwrap();
        assert!(loss.is_finite() && loss < 1e-6, "{loss}");
        let nan = Tensor::new(&[[f32::NAN, 0.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        assert!(
            clip_loss(&nan)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .is_nan()
        );
    }
}
