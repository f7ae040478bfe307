//! AdamW's update done in place on CPU storage: three passes over a
//! parameter's memory (first moment, second moment, parameter) instead of
//! a dozen candle ops that each allocate a new tensor. The arithmetic is
//! the composed version's (`the composed AdamW of shimmer-nn`), operation for operation
//! in `f32`, so both give the same bits.

use super::simd::simd_fn;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};

/// The scalars of one AdamW step, already in `f32`.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// `1 - beta1`.
    pub one_minus_beta1: f32,
    /// `beta2`.
    pub beta2: f32,
    /// `1 - beta2`.
    pub one_minus_beta2: f32,
    /// `1 - lr * weight_decay`, or `None` without weight decay.
    pub decay: Option<f32>,
    /// `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: f32,
    /// `eps`.
    pub eps: f32,
    /// `-lr / (1 - beta1^t)`.
    pub neg_step_size: f32,
}

/// Updates `exp_avg`, `exp_avg_sq` and then `param` in place from `grad`;
/// all `f32` CPU tensors of one shape.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    h: AdamWStep,
) -> candle_core::Result<()> {
    let grad = grad.contiguous()?;
    exp_avg.inplace_op2(&grad, &Moment { second: false, h })?;
    exp_avg_sq.inplace_op2(&grad, &Moment { second: true, h })?;
    param.inplace_op3(exp_avg, exp_avg_sq, &Parameter(h))
}

/// The contiguous `f32` elements of a storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused AdamW: contiguous f32 tensors only"),
    }
}

/// The contiguous `f32` elements of a storage, writable.
fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("fused AdamW: contiguous f32 tensors only"),
    }
}

/// A source of the same length as the destination.
fn same_len<'a>(dst: &[f32], s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let s = slice(s, l)?;
    if s.len() != dst.len() {
        candle_core::bail!("fused AdamW: {} elements vs {}", s.len(), dst.len());
    }
    Ok(s)
}

/// The first moment, `m ← m + (g − m)(1 − β1)`, or the second,
/// `v ← v β2 + (g (1 − β2)) g`.
struct Moment {
    second: bool,
    h: AdamWStep,
}

/// `p ← p (1 − lr wd)`, then `p ← p + (m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)) (−lr / (1 − β1ᵗ))`.
struct Parameter(AdamWStep);

simd_fn! {
    fn first_moment(m: &mut [f32], g: &[f32], w: f32) {
        for (m, g) in m.iter_mut().zip(g) {
            *m += (g - *m) * w;
        }
    }
}

simd_fn! {
    fn second_moment(v: &mut [f32], g: &[f32], beta2: f32, c2: f32) {
        for (v, g) in v.iter_mut().zip(g) {
            *v = *v * beta2 + (g * c2) * g;
        }
    }
}

simd_fn! {
    fn parameter(p: &mut [f32], m: &[f32], v: &[f32], h: AdamWStep) {
        if let Some(decay) = h.decay {
            for p in p.iter_mut() {
                *p *= decay;
            }
        }
        for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
            let denom = v.sqrt() / h.bias_correction2_sqrt + h.eps;
            *p += (m / denom) * h.neg_step_size;
        }
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        if self.second {
            "fused-adamw-exp-avg-sq"
        } else {
            "fused-adamw-exp-avg"
        }
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> candle_core::Result<()> {
        let moment = slice_mut(dst, dst_l)?;
        let g = same_len(moment, g, g_l)?;
        let h = self.h;
        if self.second {
            second_moment(moment, g, h.beta2, h.one_minus_beta2);
        } else {
            first_moment(moment, g, h.one_minus_beta1);
        }
        Ok(())
    }
}

impl InplaceOp3 for Parameter {
    fn name(&self) -> &'static str {
        "fused-adamw-param"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> candle_core::Result<()> {
        let p = slice_mut(dst, dst_l)?;
        let m = same_len(p, m, m_l)?;
        let v = same_len(p, v, v_l)?;
        parameter(p, m, v, self.0);
        Ok(())
    }
}
