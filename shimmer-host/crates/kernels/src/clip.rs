//! CLIP's symmetric cross-entropy between two batches of encodings whose
//! matching pairs share a row: with logits `L = x yᵀ` (`[B, B]`),
//! `½ (mean_i (lse_j L_ij − L_ii) + mean_j (lse_i L_ij − L_jj))`.
//!
//! Forward: the logits product, one pass for the row and column maxima, one
//! for the sums of exponentials (both directions at once). The logits and
//! log-sum-exps are kept for the backward pass, which turns the logits in
//! place into `dL_ij = g/(2B) · (softmax_row(L)_ij + softmax_col(L)_ij −
//! 2δ_ij)` and returns `dx = dL y`, `dy = dLᵀ x`. Rows are split between
//! threads. On the `2056 x 2056` logits of a simple-shapes batch this
//! replaces a dozen candle ops (two log-softmaxes, a transposed copy,
//! gathers), their backward passes and three more `B x B` buffers.

use super::matmul::{MatRef, matmul_new};
use super::pool::{parallel_parts, ranges};
use super::simd::{self, simd_fn};
use super::{cpu_tensor, with_matrix};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use std::sync::Mutex;

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
struct Saved {
    logits: Vec<f32>,
    row_lse: Vec<f32>,
    col_lse: Vec<f32>,
}

/// The op: `apply_op2(x [B, D], y [B, D]) -> scalar loss`.
#[derive(Debug, Default)]
pub struct ClipLossOp {
    saved: Mutex<Option<Saved>>,
}

/// The symmetric diagonal cross-entropy of the logits `x yᵀ` (`f32`, CPU).
pub fn clip_loss(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op2(y, ClipLossOp::default())
}

/// Row-major rows `range` of a `b x b` matrix.
fn rows(data: &[f32], b: usize, range: std::ops::Range<usize>) -> &[f32] {
    &data[range.start * b..range.end * b]
}

simd_fn! {
    /// Folds the rows of `block` (rows of `col_max.len()`) into the column
    /// maxima and writes each row's maximum into `row_max`.
    fn block_maxima(block: &[f32], row_max: &mut [f32], col_max: &mut [f32]) {
        let b = col_max.len();
        for (r, m) in block.chunks_exact(b).zip(row_max.iter_mut()) {
            for (c, v) in col_max.iter_mut().zip(r) {
                *c = c.max(*v);
            }
            *m = simd::max(r);
        }
    }
}

simd_fn! {
    /// For the rows of `block`: each row's log-sum-exp (given its maximum)
    /// into `row_lse`, and `exp(v - col_max)` added into the column sums.
    fn block_sums<M>(
        block: &[f32],
        row_max: &[f32],
        row_lse: &mut [f32],
        col_max: &[f32],
        col_sum: &mut [f32],
        tmp: &mut [f32],
    ) {
        let b = col_max.len();
        for ((r, m), lse) in block.chunks_exact(b).zip(row_max).zip(row_lse.iter_mut()) {
            for (t, v) in tmp.iter_mut().zip(r) {
                *t = simd::exp::<M>(v - m);
            }
            for ((s, v), cm) in col_sum.iter_mut().zip(r).zip(col_max) {
                *s += simd::exp::<M>(v - cm);
            }
            *lse = m + simd::sum(tmp).ln();
        }
    }
}

simd_fn! {
    /// Turns one row of logits into its gradient:
    /// `k (exp(v - row_lse) + exp(v - col_lse_j))`.
    fn gradient_row<M>(row: &mut [f32], row_lse: f32, col_lse: &[f32], k: f32) {
        for (v, cl) in row.iter_mut().zip(col_lse) {
            *v = k * (simd::exp::<M>(*v - row_lse) + simd::exp::<M>(*v - cl));
        }
    }
}

/// Row maxima and column maxima.
fn maxima(l: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
    let parts = parallel_parts(ranges(b, 64), |range| {
        let mut row = vec![0f32; range.len()];
        let mut col = vec![f32::NEG_INFINITY; b];
        block_maxima(rows(l, b, range), &mut row, &mut col);
        (row, col)
    });
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
    let parts = parallel_parts(ranges(b, 64), |range| {
        let mut row_lse = vec![0f32; range.len()];
        let mut col_sum = vec![0f32; b];
        let mut tmp = vec![0f32; b];
        let maxima = &row_max[range.clone()];
        block_sums(
            rows(l, b, range),
            maxima,
            &mut row_lse,
            col_max,
            &mut col_sum,
            &mut tmp,
        );
        (row_lse, col_sum)
    });
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

/// The logits `x yᵀ`, their row and column log-sum-exps, and the loss.
fn forward(x: MatRef<'_>, y: MatRef<'_>) -> candle_core::Result<(Saved, f32)> {
    let b = x.rows;
    if y.rows != b || x.cols != y.cols || b == 0 {
        candle_core::bail!(
            "fused CLIP loss: encodings must have the same non-empty shape, got [{}, {}] and [{}, {}]",
            x.rows,
            x.cols,
            y.rows,
            y.cols
        );
    }
    let logits = matmul_new(x, y.t());
    let (row_max, col_max) = maxima(&logits, b);
    let (row_lse, col_lse) = log_sum_exps(&logits, b, &row_max, &col_max);
    let mut total = 0f64;
    for i in 0..b {
        let diag = f64::from(logits[i * b + i]);
        total += f64::from(row_lse[i]) - diag + f64::from(col_lse[i]) - diag;
    }
    let loss = (total / (2.0 * b as f64)) as f32;
    Ok((
        Saved {
            logits,
            row_lse,
            col_lse,
        },
        loss,
    ))
}

impl ClipLossOp {
    fn lock(&self) -> candle_core::Result<std::sync::MutexGuard<'_, Option<Saved>>> {
        self.saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused CLIP loss: poisoned state".into()))
    }
}

impl CustomOp2 for ClipLossOp {
    fn name(&self) -> &'static str {
        "fused-clip-loss"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = MatRef::from_storage(xs, xl)?;
        let y = MatRef::from_storage(ys, yl)?;
        let (saved, loss) = forward(x, y)?;
        *self.lock()? = Some(saved);
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, d) = x.dims2()?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let k = g / (2.0 * b as f32);
        // A second backward pass over the same graph recomputes the logits.
        let saved = match self.lock()?.take() {
            Some(s) => s,
            None => with_matrix(x, |xm| with_matrix(y, |ym| forward(xm, ym)))???.0,
        };
        let Saved {
            logits: mut dl,
            row_lse,
            col_lse,
        } = saved;
        let blocks = ranges(b, 64);
        let mut rest = dl.as_mut_slice();
        let mut parts = Vec::with_capacity(blocks.len());
        for range in blocks {
            let (block, tail) = rest.split_at_mut(range.len() * b);
            parts.push((range.start, block));
            rest = tail;
        }
        parallel_parts(parts, |(first, block)| {
            for (k_row, row) in block.chunks_exact_mut(b).enumerate() {
                let i = first + k_row;
                gradient_row(row, row_lse[i], &col_lse, k);
                row[i] -= 2.0 * k;
            }
        });
        let dlm = MatRef::row_major(&dl, b, b);
        let dx = with_matrix(y, |ym| matmul_new(dlm, ym))?;
        let dy = with_matrix(x, |xm| matmul_new(dlm.t(), xm))?;
        Ok((
            Some(cpu_tensor(dx, &[b, d])?),
            Some(cpu_tensor(dy, &[b, d])?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn composed(x: &Tensor, y: &Tensor) -> Tensor {
        let l = x.matmul(&y.t().unwrap()).unwrap();
        let l = &l;
        let b = l.dim(0).unwrap();
        let labels = Tensor::arange(0u32, b as u32, l.device()).unwrap();
        let ce = candle_nn::loss::cross_entropy(l, &labels).unwrap();
        let ce_t = candle_nn::loss::cross_entropy(&l.t().unwrap(), &labels).unwrap();
        ((ce + ce_t).unwrap() * 0.5).unwrap()
    }

    fn rand(b: usize, d: usize, seed: usize) -> Var {
        let v: Vec<f32> = (0..b * d)
            .map(|i| (((i + 1) * (7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 6.0)
            .collect();
        Var::from_vec(v, (b, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_two_cross_entropies_and_their_gradients() {
        for (b, d) in [(1, 1), (2, 3), (7, 5), (130, 12)] {
            let (x, y) = (rand(b, d, 1), rand(b, d, 2));
            let fused = clip_loss(x.as_tensor(), y.as_tensor()).unwrap();
            let plain = composed(x.as_tensor(), y.as_tensor());
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
            for v in [&x, &y] {
                let diff = crate::test_util::max_abs_diff(gf.get(v).unwrap(), gp.get(v).unwrap());
                assert!(diff < 1e-5, "b={b}: gradient differs by {diff}");
            }
        }
    }

    #[test]
    fn a_second_backward_pass_gives_the_same_gradients() {
        let (x, y) = (rand(9, 4, 3), rand(9, 4, 4));
        let loss = clip_loss(x.as_tensor(), y.as_tensor()).unwrap();
        let first = loss.backward().unwrap();
        let second = loss.backward().unwrap();
        for v in [&x, &y] {
            let d = crate::test_util::max_abs_diff(first.get(v).unwrap(), second.get(v).unwrap());
            assert_eq!(d, 0.0);
        }
    }

    #[test]
    fn huge_logits_stay_finite_and_nan_propagates() {
        let x = Tensor::new(&[[10f32, 0.0], [0.0, 10.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[10f32, -0.0], [-0.0, 10.0]], &Device::Cpu).unwrap();
        let loss = clip_loss(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!(loss.is_finite() && loss < 1e-6, "{loss}");
        let nan = Tensor::new(&[[f32::NAN, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        assert!(
            clip_loss(&nan, &y)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .is_nan()
        );
    }
}
