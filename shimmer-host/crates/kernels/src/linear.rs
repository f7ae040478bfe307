//! A fused linear layer, `y = x Wᵀ + b` and optionally `relu(y)`, with a
//! backward pass that computes `dx`, `dW` and `db` in one go: one product
//! each for `dx` and `dW`, the ReLU mask and the bias gradient (a column
//! sum) in single passes. `dx` is skipped when `x` needs no gradient (a
//! batch's latents), which for wide inputs is most of the work.

use super::matmul::{MatRef, matmul_into, matmul_new};
use super::pool::{join, threads};
use super::simd::simd_fn;
use super::{cpu_tensor, with_matrix};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// The op: `apply_op3(x [B, in], W [out, in], b [out])`.
#[derive(Debug, Clone, Copy)]
pub struct LinearOp {
    /// Applies ReLU to the output.
    pub relu: bool,
}

/// `x Wᵀ + b` (then ReLU when `relu`) with the fused kernels; `x`, `W` and
/// `b` must be `f32` CPU tensors (see [`super::enabled`]).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    x.apply_op3(w, b, LinearOp { relu })
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "fused-linear-relu"
        } else {
            "fused-linear"
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = MatRef::from_storage(xs, xl)?;
        let w = MatRef::from_storage(ws, wl)?;
        let (CpuStorage::F32(bias), Some((b0, b1))) = (bs, bl.contiguous_offsets()) else {
            candle_core::bail!("fused linear: the bias must be a contiguous f32 tensor");
        };
        let bias = &bias[b0..b1];
        if x.cols != w.cols || bias.len() != w.rows {
            candle_core::bail!(
                "fused linear: x [{}, {}], W [{}, {}], b [{}] do not fit",
                x.rows,
                x.cols,
                w.rows,
                w.cols,
                bias.len()
            );
        }
        let (rows, out) = (x.rows, w.rows);
        let mut y = Vec::with_capacity(rows * out);
        for _ in 0..rows {
            y.extend_from_slice(bias);
        }
        matmul_into(&mut y, x, w.t(), true);
        if self.relu {
            relu_in_place(&mut y);
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad_y: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, out) = grad_y.dims2()?;
        let in_dim = w.dim(1)?;
        let grad_y = grad_y.contiguous()?;
        let y = if self.relu {
            Some(y.contiguous()?)
        } else {
            None
        };
        let want_dx = x.track_op();
        let (dx, dw, db) = with_matrix(&grad_y, |gy| {
            // g = dL/d(pre-activation), row-major [rows, out].
            let masked;
            let g: &[f32] = match &y {
                Some(y) => {
                    masked = with_matrix(y, |ym| relu_masked(gy.data, ym.data))?;
                    &masked
                }
                None => gy.data,
            };
            let gm = MatRef::row_major(g, rows, out);
            with_matrix(x, |xm| {
                with_matrix(w, |wm| {
                    // dx and (dW, db) are independent: with two threads,
                    // one each; with more, each product is split by rows.
                    let weight_grads = || {
                        let mut db = vec![0f32; out];
                        column_sums(&mut db, g);
                        (matmul_new(gm.t(), xm), db)
                    };
                    let input_grad = || want_dx.then(|| matmul_new(gm, wm));
                    let ((dw, db), dx) =
                        if want_dx && threads() == 2 && rows * in_dim * out >= SPLIT_MACS {
                            join(weight_grads, input_grad)
                        } else {
                            (weight_grads(), input_grad())
                        };
                    (dx, dw, db)
                })
            })?
        })??;
        let dx = dx.map(|dx| cpu_tensor(dx, &[rows, in_dim])).transpose()?;
        Ok((
            dx,
            Some(cpu_tensor(dw, &[out, in_dim])?),
            Some(cpu_tensor(db, &[out])?),
        ))
    }
}

simd_fn! {
    /// `y = max(y, 0)`.
    fn relu_in_place(y: &mut [f32]) {
        for v in y.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Multiply-adds per product above which a backward pass computes `dx` and
/// `dW` on two threads (below it, the hand-off costs more than it saves).
const SPLIT_MACS: usize = 1 << 18;

/// The gradient through the ReLU: `g` where its output `y` is positive, 0
/// elsewhere (PyTorch's convention at 0).
fn relu_masked(g: &[f32], y: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.len()];
    relu_mask_into(&mut out, g, y);
    out
}

simd_fn! {
    fn relu_mask_into(out: &mut [f32], g: &[f32], y: &[f32]) {
        for ((o, gv), yv) in out.iter_mut().zip(g).zip(y) {
            *o = if *yv > 0.0 { *gv } else { 0.0 };
        }
    }
}

simd_fn! {
    /// Adds the rows of the row-major `m` (rows of `acc.len()`) into `acc`.
    fn column_sums(acc: &mut [f32], m: &[f32]) {
        let width = acc.len().max(1);
        for row in m.chunks_exact(width) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_util::max_abs_diff(a, b)
    }

    /// Forward values and all three gradients equal candle's composed ops.
    #[test]
    fn matches_composed_ops_forward_and_backward() {
        for relu in [false, true] {
            for (rows, in_dim, out) in [(5, 3, 4), (64, 33, 17), (1, 1, 1)] {
                let x = Var::from_tensor(&rand(&[rows, in_dim], 1)).unwrap();
                let w = Var::from_tensor(&rand(&[out, in_dim], 2)).unwrap();
                let b = Var::from_tensor(&rand(&[out], 3)).unwrap();
                let target = rand(&[rows, out], 4);

                let fused = linear(x.as_tensor(), w.as_tensor(), b.as_tensor(), relu).unwrap();
                let mut plain = x
                    .as_tensor()
                    .matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap();
                if relu {
                    plain = plain.relu().unwrap();
                }
                assert!(max_diff(&fused, &plain) < 1e-5);

                let loss = |y: &Tensor| (y * &target).unwrap().sum_all().unwrap();
                let gf = loss(&fused).backward().unwrap();
                let gp = loss(&plain).backward().unwrap();
                for v in [&x, &w, &b] {
                    let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
                    assert!(
                        max_diff(a, b) < 1e-4,
                        "relu {relu} shape {rows}x{in_dim}x{out}"
                    );
                }
            }
        }
    }

    #[test]
    fn transposed_inputs_and_untracked_x() {
        let xt = rand(&[3, 6], 5); // x = xtᵀ, a strided view
        let w = Var::from_tensor(&rand(&[2, 3], 6)).unwrap();
        let b = Var::from_tensor(&rand(&[2], 7)).unwrap();
        let x = xt.t().unwrap();
        let y = linear(&x, w.as_tensor(), b.as_tensor(), false).unwrap();
        let want = x
            .contiguous()
            .unwrap()
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        assert!(max_diff(&y, &want) < 1e-6);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none(), "no gradient for a constant input");
        assert!(grads.get(w.as_tensor()).is_some());
    }
}
