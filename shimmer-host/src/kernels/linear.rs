//! A fused linear layer, `y = x Wᵀ + b` and optionally `relu(y)`, with a
//! backward pass that computes `dx`, `dW` and `db` in one go: one product
//! each for `dx` and `dW`, the ReLU mask and the bias gradient (a column
//! sum) in single passes. `dx` is skipped when `x` needs no gradient (a
//! batch's latents), which for wide inputs is most of the work.

use super::simd::simd_fn;
use super::{MatRef, cpu_tensor, matmul_into, matmul_new, with_matrix};
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
        // g = dL/d(pre-activation), contiguous [rows, out].
        let g: Vec<f32> = with_matrix(grad_y, |gy| {
            let mut g = Vec::with_capacity(rows * out);
            for r in 0..rows {
                let base = r * gy.row_stride;
                if gy.col_stride == 1 {
                    g.extend_from_slice(&gy.data[base..base + out]);
                } else {
                    g.extend((0..out).map(|c| gy.data[base + c * gy.col_stride]));
                }
            }
            g
        })?;
        let mut g = g;
        if self.relu {
            let y = y.contiguous()?;
            with_matrix(&y, |ym| relu_mask(&mut g, ym.data))?;
        }
        let gm = MatRef::row_major(&g, rows, out);

        let mut db = vec![0f32; out];
        column_sums(&mut db, &g);

        let dw = with_matrix(x, |xm| matmul_new(gm.t(), xm))?;

        let dx = if x.track_op() {
            let dx = with_matrix(w, |wm| matmul_new(gm, wm))?;
            Some(cpu_tensor(dx, &[rows, in_dim])?)
        } else {
            None
        };
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

simd_fn! {
    /// Zeroes the gradient where the ReLU output is not positive (PyTorch's
    /// convention at 0).
    fn relu_mask(g: &mut [f32], y: &[f32]) {
        for (gv, yv) in g.iter_mut().zip(y) {
            *gv = if *yv > 0.0 { *gv } else { 0.0 };
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
