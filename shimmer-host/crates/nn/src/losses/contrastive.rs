//! CLIP-style contrastive loss (shimmer's `ContrastiveLoss`) and the
//! `contrastive_{a}_and_{b}` metrics over the batch's two-domain groups.
//!
//! `loss = ½ (CE(L, arange B) + CE(Lᵀ, arange B))` with
//! `L = (min(exp(logit_scale), 100) · normalize(x)) · normalize(y)ᵀ`, on the
//! **pre-tanh** encodings; the logged `…_logit_scale` is the unclamped
//! `exp(logit_scale)`. The logit scale (name
//! `loss_mod.contrastive_fn.logit_scale`, shape `[1]`) is a trained parameter
//! or a buffer.

use super::{EncodedGroup, Metrics};
use crate::params::ParamStore;
use anyhow::Result;
use candle_core::{D, Tensor, Var};
use std::collections::HashSet;

/// State-dict name of the logit scale.
pub const LOGIT_SCALE: &str = "loss_mod.contrastive_fn.logit_scale";

/// The contrastive loss function and its logit scale.
#[derive(Debug, Clone)]
pub struct ContrastiveLoss {
    logit_scale: Var,
    learned: bool,
    matmul_dtype: Option<candle_core::DType>,
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
    /// `arange(B)` on the device for the last batch size (composed path).
    labels: std::sync::Arc<std::sync::Mutex<Option<Tensor>>>,
}

impl ContrastiveLoss {
    /// Registers the logit scale (`init`, stored as float32 like shimmer's
    /// `torch.tensor([..]).log()`) as a parameter when `learned`, a buffer
    /// otherwise.
    pub fn new(store: &mut ParamStore, init: f64, learned: bool) -> Result<Self> {
        let t = Tensor::new(&[init as f32], store.device())?;
        let logit_scale = if learned {
            store.add_param(LOGIT_SCALE, t)?
        } else {
            store.add_buffer(LOGIT_SCALE, t)?
        };
        Ok(Self {
            logit_scale,
            learned,
            matmul_dtype: store.matmul_dtype(),
            ops: store.ops(),
            labels: Default::default(),
        })
    }

    /// The class of each row, `arange(b)`, made once per batch size.
    fn labels(&self, b: usize, device: &candle_core::Device) -> Result<Tensor> {
        let mut cached = self
            .labels
            .lock()
            .map_err(|_| anyhow::anyhow!("contrastive label cache poisoned"))?;
        if let Some(t) = cached.as_ref().filter(|t| t.dim(0).ok() == Some(b)) {
            return Ok(t.clone());
        }
        let t = Tensor::arange(0u32, b as u32, device)?;
        *cached = Some(t.clone());
        Ok(t)
    }

    fn scale(&self) -> Tensor {
        if self.learned {
            self.logit_scale.as_tensor().clone()
        } else {
            self.logit_scale.as_detached_tensor()
        }
    }

    /// The loss between two `[B, d]` encodings, and `exp(logit_scale)` (scalar).
    pub fn forward(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let exp = self.scale().exp()?;
        let clamped = exp.minimum(100.0)?;
        let xs = normalize(x)?.broadcast_mul(&clamped)?;
        let yn = normalize(y)?;
        #[cfg(feature = "fused-kernels")]
        if self.ops == crate::ops::Ops::Fused && self.matmul_dtype.is_none() {
            let loss = shimmer_kernels::clip::clip_loss(&xs, &yn)?;
            return Ok((loss, exp.reshape(())?));
        }
        let logits = crate::layers::mixed_matmul(&xs, &yn.t()?, self.matmul_dtype)?;
        let labels = self.labels(b, x.device())?;
        let ce = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let ce_t = candle_nn::loss::cross_entropy(&logits.t()?, &labels)?;
        let loss = ((ce + ce_t)? * 0.5)?;
        Ok((loss, exp.reshape(())?))
    }
}

/// Row-wise `x / max(‖x‖₂, 1e-12)`, PyTorch's `F.normalize`.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// shimmer's `contrastive_loss`: for every group of exactly two domains
/// (each unordered pair once), `contrastive_{a}_and_{b}`; then
/// `contrastives` (their mean) and the `…_logit_scale` metrics. Empty when
/// the batch has no two-domain group (shimmer crashes there).
pub fn contrastive_metrics(batch: &[EncodedGroup<'_>], f: &ContrastiveLoss) -> Result<Metrics> {
    let mut losses = Metrics::new();
    let mut extra = Metrics::new();
    let mut seen: Vec<HashSet<String>> = Vec::new();
    for group in batch {
        let enc = &group.encodings;
        if enc.len() != 2 {
            continue;
        }
        for (d1, z1) in enc {
            for (d2, z2) in enc {
                let pair: HashSet<String> = [d1.clone(), d2.clone()].into();
                if d1 == d2 || seen.contains(&pair) {
                    continue;
                }
                seen.push(pair);
                let name = format!("contrastive_{d1}_and_{d2}");
                let (loss, scale) = f.forward(z1, z2)?;
                losses.insert(name.clone(), loss);
                extra.insert(format!("{name}_logit_scale"), scale);
            }
        }
    }
    if losses.is_empty() {
        return Ok(losses);
    }
    let values: Vec<Tensor> = losses.values().cloned().collect();
    losses.insert("contrastives".into(), super::mean(&values)?);
    losses.extend(extra);
    Ok(losses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn matches_hand_computed_clip_loss() {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let f = ContrastiveLoss::new(&mut store, 0.0, false).unwrap();
        let x = Tensor::new(&[[3f32, 0.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        // scale 1; xn = I; yn = [[1,0],[s,s]], s = 1/sqrt2; logits = xn ynᵀ = [[1, s],[0, s]]
        let s = 0.5f32.sqrt();
        let lse = |a: f32, b: f32| (a.exp() + b.exp()).ln();
        let ce = ((lse(1.0, s) - 1.0) + (lse(0.0, s) - s)) / 2.0;
        let ce_t = ((lse(1.0, 0.0) - 1.0) + (lse(s, s) - s)) / 2.0;
        let (loss, scale) = f.forward(&x, &y).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        assert!((got - 0.5 * (ce + ce_t)).abs() < 1e-6, "{got}");
        assert_eq!(scale.to_scalar::<f32>().unwrap(), 1.0);
    }

    /// The fused CPU kernel (f32) and candle's composed ops (f64 here, the
    /// GPU path) agree, batch size changes included.
    #[test]
    fn fused_and_composed_paths_agree() {
        let fused = {
            let mut store = ParamStore::new(&Device::Cpu, DType::F32);
            ContrastiveLoss::new(&mut store, 1.5, true).unwrap()
        };
        let composed = {
            let mut store = ParamStore::new(&Device::Cpu, DType::F64);
            ContrastiveLoss::new(&mut store, 1.5, true).unwrap()
        };
        for b in [3, 2, 3] {
            let x = Tensor::randn(0f32, 1.0, (b, 4), &Device::Cpu).unwrap();
            let y = Tensor::randn(0f32, 1.0, (b, 4), &Device::Cpu).unwrap();
            let f = fused.forward(&x, &y).unwrap().0.to_scalar::<f32>().unwrap();
            let (x64, y64) = (
                x.to_dtype(DType::F64).unwrap(),
                y.to_dtype(DType::F64).unwrap(),
            );
            let c = composed
                .forward(&x64, &y64)
                .unwrap()
                .0
                .to_scalar::<f64>()
                .unwrap();
            assert!((f64::from(f) - c).abs() < 1e-5, "b={b}: {f} vs {c}");
        }
    }

    #[test]
    fn scale_is_clamped_in_the_loss_but_not_in_the_metric() {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let f = ContrastiveLoss::new(&mut store, 5.0, true).unwrap();
        let x = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let (loss, scale) = f.forward(&x, &x).unwrap();
        assert!((scale.to_scalar::<f32>().unwrap() - 5f32.exp()).abs() < 1e-3);
        // logits = 100 I: each CE = log(1 + e^-100) ~ 0
        assert!(loss.to_scalar::<f32>().unwrap() < 1e-6);
        assert!(store.params().contains_key(LOGIT_SCALE));
    }
}
