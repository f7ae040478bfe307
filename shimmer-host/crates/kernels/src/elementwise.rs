//! Small fused ops that the GW step calls many times per batch: `tanh`
//! (the workspace activation) and the mean squared error (the default
//! domain loss), each one op forward and one backward instead of three to
//! five candle ops with their gradient bookkeeping.

use super::matmul::MatRef;
use super::simd::{self, simd_fn};
use super::{cpu_tensor, with_contiguous};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use std::borrow::Cow;

/// `tanh(x)` with backward `g (1 − y²)`, for `f32` CPU tensors.
pub fn tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(Tanh)
}

/// `mean((p − t)²)` over all elements, for `f32` CPU matrices.
pub fn mse(p: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    p.apply_op2(t, Mse)
}

/// The elements of a matrix view in row-major order.
fn elements(m: MatRef<'_>) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.rows * m.cols);
    for r in 0..m.rows {
        let row = &m.data[r * m.row_stride..];
        if m.col_stride == 1 {
            out.extend_from_slice(&row[..m.cols]);
        } else {
            out.extend((0..m.cols).map(|c| row[c * m.col_stride]));
        }
    }
    out
}

/// A tensor's elements in row-major order: borrowed when contiguous, else
/// copied (a matrix of any strides).
fn elements_of<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<Cow<'a, [f32]>> {
    if let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) {
        return Ok(Cow::Borrowed(&v[a..b]));
    }
    if l.dims().len() != 2 {
        candle_core::bail!("fused op: expected a matrix, got shape {:?}", l.dims());
    }
    Ok(Cow::Owned(elements(MatRef::from_storage(s, l)?)))
}

simd_fn! {
    /// Cephes' `tanhf`: an odd polynomial below |x| = 0.625, where
    /// `1 − 2/(e^{2x} + 1)` would lose digits, that formula above it.
    fn tanh_in_place<M>(v: &mut [f32]) {
        for x in v.iter_mut() {
            let a = *x;
            let z = a * a;
            let mut p = -5.704_988_7e-3;
            p = M::mul_add(p, z, 2.063_909e-2);
            p = M::mul_add(p, z, -5.373_971_6e-2);
            p = M::mul_add(p, z, 1.333_144_2e-1);
            p = M::mul_add(p, z, -3.333_328e-1);
            let small = M::mul_add(p * z, a, a);
            let e = simd::exp::<M>(2.0 * a);
            let large = 1.0 - 2.0 / (e + 1.0);
            *x = if a.abs() < 0.625 { small } else { large };
        }
    }
}

simd_fn! {
    fn tanh_grad(g: &mut [f32], y: &[f32]) {
        for (g, y) in g.iter_mut().zip(y) {
            *g *= 1.0 - y * y;
        }
    }
}

simd_fn! {
    /// `Σ (p − t)²` with independent lane accumulators.
    fn squared_diff_sum(p: &[f32], t: &[f32]) -> f32 {
        const LANES: usize = 32;
        let mut acc = [0f32; LANES];
        let (pc, tc) = (p.chunks_exact(LANES), t.chunks_exact(LANES));
        let tail: f32 = pc
            .remainder()
            .iter()
            .zip(tc.remainder())
            .map(|(p, t)| (p - t) * (p - t))
            .sum();
        for (pb, tb) in pc.zip(tc) {
            for ((a, p), t) in acc.iter_mut().zip(pb).zip(tb) {
                let d = p - t;
                *a += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// `(p − t) · k` into a new vector.
    fn scaled_diff(p: &[f32], t: &[f32], k: f32) -> Vec<f32> {
        p.iter().zip(t).map(|(p, t)| (p - t) * k).collect()
    }
}

struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "fused-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut v = elements_of(s, l)?.into_owned();
        tanh_in_place(&mut v);
        Ok((CpuStorage::F32(v), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let mut out = g.flatten_all()?.to_vec1::<f32>()?;
        with_contiguous(y, |y| tanh_grad(&mut out, y))?;
        Ok(Some(cpu_tensor(out, y.dims())?))
    }
}

struct Mse;

impl CustomOp2 for Mse {
    fn name(&self) -> &'static str {
        "fused-mse"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if pl.dims() != tl.dims() {
            candle_core::bail!("fused mse: shapes {:?} and {:?}", pl.dims(), tl.dims());
        }
        let (p, t) = (elements_of(ps, pl)?, elements_of(ts, tl)?);
        let sum = squared_diff_sum(&p, &t);
        let mean = if p.is_empty() {
            f32::NAN
        } else {
            sum / p.len() as f32
        };
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        p: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = p.elem_count();
        let g = g.to_scalar::<f32>()?;
        let k = 2.0 * g / n as f32;
        let (p, t) = (p.contiguous()?, t.contiguous()?);
        let dp = with_contiguous(&p, |pv| with_contiguous(&t, |tv| scaled_diff(pv, tv, k)))??;
        let dt = if t.track_op() {
            let neg: Vec<f32> = dp.iter().map(|v| -v).collect();
            Some(cpu_tensor(neg, t.dims())?)
        } else {
            None
        };
        Ok((Some(cpu_tensor(dp, p.dims())?), dt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data(shape: (usize, usize), seed: usize) -> Var {
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n)
            .map(|i| (((i + 1) * (97 + seed * 31)) % 211) as f32 / 30.0 - 3.5)
            .collect();
        Var::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn tanh_matches_candle_forward_and_backward() {
        let x = data((7, 5), 1);
        let w = data((7, 5), 2);
        let fused = tanh(x.as_tensor()).unwrap();
        let plain = x.as_tensor().tanh().unwrap();
        assert!(crate::test_util::max_abs_diff(&fused, &plain) < 1e-6);
        let gf = (&fused * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gp = (&plain * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = crate::test_util::max_abs_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap());
        assert!(d < 1e-5, "{d}");
        let big = Tensor::new(&[[100f32, -100.0, 0.0]], &Device::Cpu).unwrap();
        assert_eq!(
            tanh(&big).unwrap().to_vec2::<f32>().unwrap(),
            [[1.0, -1.0, 0.0]]
        );
        // relative accuracy near zero and around the switch point
        for a in [1e-6f32, -3e-4, 0.1, 0.62, 0.63, -2.0, 9.0] {
            let t = Tensor::new(&[a], &Device::Cpu).unwrap();
            let got = tanh(&t).unwrap().to_vec1::<f32>().unwrap()[0];
            let rel = ((got - a.tanh()) / a.tanh()).abs();
            assert!(rel < 3e-7, "tanh({a}) = {got}, libm {}", a.tanh());
        }
    }

    #[test]
    fn mse_matches_candle_on_contiguous_and_strided_inputs() {
        let p = data((6, 4), 3);
        let t = data((6, 4), 4);
        for narrow in [false, true] {
            let (pp, tt) = if narrow {
                (
                    p.as_tensor().narrow(1, 1, 2).unwrap(),
                    t.as_tensor().narrow(1, 1, 2).unwrap(),
                )
            } else {
                (p.as_tensor().clone(), t.as_tensor().clone())
            };
            let fused = mse(&pp, &tt).unwrap();
            let plain = (&pp - &tt).unwrap().sqr().unwrap().mean_all().unwrap();
            let (f, q) = (
                fused.to_scalar::<f32>().unwrap(),
                plain.to_scalar::<f32>().unwrap(),
            );
            assert!((f - q).abs() < 1e-5 * q.max(1.0), "{f} vs {q}");
            let gf = (fused * 2.0).unwrap().backward().unwrap();
            let gq = (plain * 2.0).unwrap().backward().unwrap();
            for v in [&p, &t] {
                let d = crate::test_util::max_abs_diff(gf.get(v).unwrap(), gq.get(v).unwrap());
                assert!(d < 1e-6, "narrow {narrow}: {d}");
            }
        }
    }
}
