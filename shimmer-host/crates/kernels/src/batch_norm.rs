//! Batch normalisation over the channels of `[B, C, H, W]` tensors,
//! optionally followed by ReLU, as one pass forward and two passes
//! backward (candle's composed ops take a dozen strided passes for the
//! same). The statistics are the caller's: the batch's mean and variance
//! in training (from [`channel_stats`], also what updates the running
//! statistics), the running ones in evaluation.
//!
//! With `x̂ = (x - mean) · invstd` and `y = x̂ · w + b`, the gradients are
//! `db = Σ dy`, `dw = Σ dy · x̂` and, when the statistics are the batch's,
//! `dx = w · invstd / N · (N · dy - db - x̂ · dw)` (PyTorch's formula);
//! with fixed statistics `dx = w · invstd · dy`.

use super::pool;
use super::{cpu_tensor, with_contiguous};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// Per-channel mean and biased variance of contiguous `[b, c, n]` data,
/// accumulated in `f64`.
pub fn channel_stats(x: &Tensor) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let (b, c, h, w) = x.dims4()?;
    let n = h * w;
    let x = x.contiguous()?;
    with_contiguous(&x, |v| {
        let stats = pool::parallel_parts(pool::ranges(c, 1), |channels| {
            channels
                .map(|ci| {
                    let (mut s, mut s2) = (0f64, 0f64);
                    for bi in 0..b {
                        for &x in &v[(bi * c + ci) * n..][..n] {
                            let x = f64::from(x);
                            s += x;
                            s2 += x * x;
                        }
                    }
                    let count = (b * n).max(1) as f64;
                    let mean = s / count;
                    ((mean) as f32, (s2 / count - mean * mean).max(0.0) as f32)
                })
                .collect::<Vec<_>>()
        });
        stats.into_iter().flatten().unzip()
    })
}

/// The op: `apply_op3(x [B, C, H, W], weight [C], bias [C])`.
#[derive(Debug, Clone)]
struct BatchNormOp {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// Whether `mean`/`invstd` are the batch's own (gradient through them).
    batch_stats: bool,
    relu: bool,
}

/// The statistics a batch norm normalises by.
#[derive(Clone, Copy, Debug)]
pub struct Stats<'a> {
    /// Per-channel mean.
    pub mean: &'a [f32],
    /// Per-channel (biased) variance.
    pub var: &'a [f32],
    /// Added to the variance.
    pub eps: f64,
    /// Whether they are the input's own (training: the gradient flows
    /// through them) or fixed (evaluation).
    pub of_batch: bool,
}

/// `relu?((x - mean) / sqrt(var + eps) · weight + bias)` per channel, for
/// `f32` CPU tensors.
pub fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stats: Stats<'_>,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let invstd = stats
        .var
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + stats.eps).sqrt()) as f32)
        .collect();
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        BatchNormOp {
            mean: stats.mean.to_vec(),
            invstd,
            batch_stats: stats.of_batch,
            relu,
        },
    )
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused batch norm takes contiguous f32 tensors"),
    }
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "fused-batch-norm"
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
        let (_, c, h, w) = xl.shape().dims4()?;
        let (x, wt, bi) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        if wt.len() != c || bi.len() != c || self.mean.len() != c {
            candle_core::bail!(
                "batch norm: {c} channels, weight {}, bias {}",
                wt.len(),
                bi.len()
            );
        }
        let n = h * w;
        let mut y = vec![0f32; x.len()];
        for (plane, (src, dst)) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).enumerate() {
            let ci = plane % c;
            let scale = self.invstd[ci] * wt[ci];
            let shift = bi[ci] - self.mean[ci] * scale;
            for (d, &s) in dst.iter_mut().zip(src) {
                let v = s * scale + shift;
                *d = if self.relu { v.max(0.0) } else { v };
            }
        }
        Ok((CpuStorage::F32(y), Shape::from(xl.shape().dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let n = h * w;
        let gy = gy.contiguous()?;
        let wt = weight.to_vec1::<f32>()?;
        let (dx, dw, db) = with_contiguous(&gy, |gy| {
            with_contiguous(x, |xv| {
                with_contiguous(y, |yv| {
                    // dy through the ReLU, plane by plane.
                    let mut g = gy.to_vec();
                    if self.relu {
                        for (gi, yi) in g.iter_mut().zip(yv) {
                            if *yi <= 0.0 {
                                *gi = 0.0;
                            }
                        }
                    }
                    let mut db = vec![0f64; c];
                    let mut dw = vec![0f64; c];
                    for (plane, (gp, xp)) in g.chunks_exact(n).zip(xv.chunks_exact(n)).enumerate() {
                        let ci = plane % c;
                        let (m, is) = (self.mean[ci], self.invstd[ci]);
                        let (mut sg, mut sgx) = (0f32, 0f32);
                        for (gi, xi) in gp.iter().zip(xp) {
                            sg += gi;
                            sgx += gi * (xi - m);
                        }
                        db[ci] += f64::from(sg);
                        dw[ci] += f64::from(sgx * is);
                    }
                    let count = (b * n) as f64;
                    let mut dx = vec![0f32; xv.len()];
                    for (plane, ((d, gp), xp)) in dx
                        .chunks_exact_mut(n)
                        .zip(g.chunks_exact(n))
                        .zip(xv.chunks_exact(n))
                        .enumerate()
                    {
                        let ci = plane % c;
                        let (m, is) = (self.mean[ci], self.invstd[ci]);
                        let k = wt[ci] * is;
                        if self.batch_stats {
                            let (mdb, mdw) = ((db[ci] / count) as f32, (dw[ci] / count) as f32);
                            for ((di, gi), xi) in d.iter_mut().zip(gp).zip(xp) {
                                *di = k * (gi - mdb - (xi - m) * is * mdw);
                            }
                        } else {
                            for (di, gi) in d.iter_mut().zip(gp) {
                                *di = k * gi;
                            }
                        }
                    }
                    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
                    (dx, f(dw), f(db))
                })
            })
        })???;
        Ok((
            Some(cpu_tensor(dx, &[b, c, h, w])?),
            Some(cpu_tensor(dw, &[c])?),
            Some(cpu_tensor(db, &[c])?),
        ))
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

    /// The same values and gradients as batch norm composed of candle ops.
    #[test]
    fn matches_composed_ops_in_both_modes() {
        let max_diff = crate::test_util::max_abs_diff;
        let x = Var::from_tensor(&rand(&[3, 4, 5, 5], 1)).unwrap();
        let w = Var::from_tensor(&(rand(&[4], 2) + 1.5).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[4], 3)).unwrap();
        let target = rand(&[3, 4, 5, 5], 4);
        let (mean, var) = channel_stats(x.as_tensor()).unwrap();
        let eps = 1e-5;
        for batch_stats in [true, false] {
            for relu in [false, true] {
                let stats = Stats {
                    mean: &mean,
                    var: &var,
                    eps,
                    of_batch: batch_stats,
                };
                let fused =
                    batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), stats, relu).unwrap();
                let shape = (1, 4, 1, 1);
                let xt = x.as_tensor();
                let (m, v) = if batch_stats {
                    let m = xt
                        .mean_keepdim(0)
                        .unwrap()
                        .mean_keepdim(2)
                        .unwrap()
                        .mean_keepdim(3)
                        .unwrap();
                    let v = xt
                        .broadcast_sub(&m)
                        .unwrap()
                        .sqr()
                        .unwrap()
                        .mean_keepdim(0)
                        .unwrap()
                        .mean_keepdim(2)
                        .unwrap()
                        .mean_keepdim(3)
                        .unwrap();
                    (m, v)
                } else {
                    (
                        Tensor::new(mean.as_slice(), &Device::Cpu)
                            .unwrap()
                            .reshape(shape)
                            .unwrap(),
                        Tensor::new(var.as_slice(), &Device::Cpu)
                            .unwrap()
                            .reshape(shape)
                            .unwrap(),
                    )
                };
                let mut plain = xt
                    .broadcast_sub(&m)
                    .unwrap()
                    .broadcast_div(&(v + eps).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&w.as_tensor().reshape(shape).unwrap())
                    .unwrap()
                    .broadcast_add(&b.as_tensor().reshape(shape).unwrap())
                    .unwrap();
                if relu {
                    plain = plain.relu().unwrap();
                }
                assert!(max_diff(&fused, &plain) < 1e-5, "{batch_stats} {relu}");
                let gf = (&fused * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gp = (&plain * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for var in [&x, &w, &b] {
                    let d = max_diff(gf.get(var).unwrap(), gp.get(var).unwrap());
                    assert!(d < 1e-4, "batch stats {batch_stats}, relu {relu}: {d}");
                }
            }
        }
    }
}
