//! A domain's loss between a predicted and a target latent, evaluated from
//! its [`LossSpec`] on the training device with autograd: the weighted sum of
//! its segments' losses for one [`LossUse`], or `None` when the spec has no
//! segment for that use (shimmer's `compute_*_loss` returning `None`).
//!
//! Segment kinds: `mse` and `l1` average over every element; `cross_entropy`
//! takes the target's argmax as the class and averages over items;
//! `bce` is binary cross-entropy with logits averaged over elements;
//! `cosine` is `1 - cos(pred, target)` averaged over items (norms clamped at
//! 1e-8, as PyTorch's `cosine_similarity`).

use crate::ops::Ops;
use anyhow::{Result, bail};
use candle_core::{D, Tensor};
use shimmer_plugin_api::{LossKind, LossSpec, LossUse};

/// Evaluates `spec` for `use_`; `None` when the use is disabled.
pub fn domain_loss(
    ops: Ops,
    spec: &LossSpec,
    use_: LossUse,
    pred: &Tensor,
    target: &Tensor,
) -> Result<Option<Tensor>> {
    if pred.dims() != target.dims() {
        bail!(
            "prediction shape {:?} differs from target shape {:?}",
            pred.dims(),
            target.dims()
        );
    }
    let width = pred.dim(D::Minus1)?;
    let mut total: Option<Tensor> = None;
    for seg in &spec.segments {
        let Some(w) = seg.weights.get(use_) else {
            continue;
        };
        if seg.start + seg.len > width {
            bail!(
                "loss segment {}..{} lies outside the latent of size {width}",
                seg.start,
                seg.start + seg.len
            );
        }
        let (p, t) = if seg.start == 0 && seg.len == width {
            (pred.clone(), target.clone())
        } else {
            (
                pred.narrow(1, seg.start, seg.len)?,
                target.narrow(1, seg.start, seg.len)?,
            )
        };
        let l = segment_loss(ops, seg.kind, &p, &t)?;
        let l = if w == 1.0 { l } else { (l * f64::from(w))? };
        total = Some(match total {
            None => l,
            Some(acc) => (acc + l)?,
        });
    }
    Ok(total)
}

/// Each segment of `spec` scored on its own (whatever its weights), named
/// by its kind (`mse`, `cross_entropy`; `mse_2` when a kind recurs, by
/// segment index), and for each cross-entropy segment its accuracy (the
/// fraction of rows whose predicted class, the argmax, is the target's),
/// named `accuracy` (`accuracy_2`). Values are scalar tensors.
pub fn segment_metrics(
    ops: Ops,
    spec: &LossSpec,
    pred: &Tensor,
    target: &Tensor,
) -> Result<Vec<(String, Tensor)>> {
    if pred.dims() != target.dims() {
        bail!(
            "prediction shape {:?} differs from target shape {:?}",
            pred.dims(),
            target.dims()
        );
    }
    let mut out = Vec::with_capacity(spec.segments.len());
    for (i, seg) in spec.segments.iter().enumerate() {
        let recurs = spec.segments.iter().filter(|s| s.kind == seg.kind).count() > 1;
        let name = |base: &str| {
            if recurs {
                format!("{base}_{i}")
            } else {
                base.to_string()
            }
        };
        let (p, t) = (
            pred.narrow(1, seg.start, seg.len)?,
            target.narrow(1, seg.start, seg.len)?,
        );
        out.push((name(seg.kind.name()), segment_loss(ops, seg.kind, &p, &t)?));
        if seg.kind == LossKind::CrossEntropy {
            let hits = p
                .argmax(D::Minus1)?
                .eq(&t.argmax(D::Minus1)?)?
                .to_dtype(pred.dtype())?
                .mean_all()?;
            out.push((name("accuracy"), hits));
        }
    }
    Ok(out)
}

/// One elementary loss, reduced to a scalar.
pub fn segment_loss(ops: Ops, kind: LossKind, p: &Tensor, t: &Tensor) -> Result<Tensor> {
    let _ = ops;
    Ok(match kind {
        #[cfg(feature = "fused-kernels")]
        LossKind::Mse if ops == Ops::Fused && p.rank() == 2 => {
            shimmer_kernels::elementwise::mse(p, t)?
        }
        LossKind::Mse => (p - t)?.sqr()?.mean_all()?,
        LossKind::L1 => (p - t)?.abs()?.mean_all()?,
        LossKind::CrossEntropy => {
            let classes = t.argmax(D::Minus1)?;
            candle_nn::loss::cross_entropy(p, &classes)?
        }
        LossKind::Bce => {
            // max(x, 0) - x t + log(1 + exp(-|x|))
            let softplus = (p.abs()?.neg()?.exp()? + 1.0)?.log()?;
            ((p.relu()? - (p * t)?)? + softplus)?.mean_all()?
        }
        LossKind::Cosine => {
            let pn = p.sqr()?.sum(D::Minus1)?.sqrt()?.maximum(1e-8)?;
            let tn = t.sqr()?.sum(D::Minus1)?.sqrt()?.maximum(1e-8)?;
            let cos = ((p * t)?.sum(D::Minus1)? / (pn * tn)?)?;
            (1.0 - cos)?.mean_all()?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use shimmer_plugin_api::{LossSegment, LossWeights};

    fn t(v: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (v.len(), 2), &Device::Cpu).unwrap()
    }

    fn val(x: Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn segments_are_scored_apart_with_accuracies() {
        use shimmer_plugin_api::{LossSegment, LossWeights};
        let ops = Ops::choose(&Device::Cpu, candle_core::DType::F32);
        let seg = |start, len, kind| LossSegment {
            start,
            len,
            kind,
            weights: LossWeights::all(1.0),
        };
        let spec = LossSpec {
            segments: vec![
                seg(0, 2, LossKind::CrossEntropy),
                seg(2, 1, LossKind::Mse),
                seg(3, 1, LossKind::Mse),
            ],
        };
        let dev = Device::Cpu;
        // Rows: predicted class 1 (target 1), class 0 (target 1).
        let pred = Tensor::new(&[[0f32, 2.0, 1.0, 0.0], [3.0, 1.0, 0.0, 2.0]], &dev).unwrap();
        let target = Tensor::new(&[[0f32, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0]], &dev).unwrap();
        let got = segment_metrics(ops, &spec, &pred, &target).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cross_entropy", "accuracy", "mse_1", "mse_2"]);
        let v: Vec<f32> = got.iter().map(|(_, t)| val(t.clone())).collect();
        assert_eq!(v[1], 0.5);
        // mse over column 2: ((1-0)^2 + (0-2)^2) / 2; column 3: (0 + 4) / 2.
        assert_eq!((v[2], v[3]), (2.5, 2.0));
    }

    #[test]
    fn elementary_losses_match_hand_values() {
        let p = t(&[[1.0, 2.0], [0.0, -1.0]]);
        let q = t(&[[0.0, 2.0], [1.0, 1.0]]);
        // mse: (1 + 0 + 1 + 4) / 4
        assert_eq!(
            val(segment_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                LossKind::Mse,
                &p,
                &q
            )
            .unwrap()),
            1.5
        );
        // l1: (1 + 0 + 1 + 2) / 4
        assert_eq!(
            val(segment_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                LossKind::L1,
                &p,
                &q
            )
            .unwrap()),
            1.0
        );
        // ce: targets argmax -> [1, 0]; item0 -log softmax([1,2])[1], item1 -log softmax([0,-1])[0]
        let classes = t(&[[0.0, 1.0], [1.0, 0.0]]);
        let ce0 = -(2f32.exp() / (1f32.exp() + 2f32.exp())).ln();
        let ce1 = -(1.0 / (1.0 + (-1f32).exp())).ln();
        let got = val(segment_loss(
            Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
            LossKind::CrossEntropy,
            &p,
            &classes,
        )
        .unwrap());
        assert!((got - (ce0 + ce1) / 2.0).abs() < 1e-6);
        // cosine: item0 cos = 4 / (sqrt5 * 2), item1 cos = -1 / (1 * sqrt2)
        let want = ((1.0 - 2.0 / 5f32.sqrt()) + (1.0 + 1.0 / 2f32.sqrt())) / 2.0;
        assert!(
            (val(segment_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                LossKind::Cosine,
                &p,
                &q
            )
            .unwrap())
                - want)
                .abs()
                < 1e-6
        );
        // bce with logits against t in [0,1]
        let tt = t(&[[0.0, 1.0], [1.0, 0.5]]);
        let bce = |x: f32, y: f32| {
            -(y * (1.0 / (1.0 + (-x).exp())).ln()
                + (1.0 - y) * (1.0 - 1.0 / (1.0 + (-x).exp())).ln())
        };
        let want = (bce(1.0, 0.0) + bce(2.0, 1.0) + bce(0.0, 1.0) + bce(-1.0, 0.5)) / 4.0;
        assert!(
            (val(segment_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                LossKind::Bce,
                &p,
                &tt
            )
            .unwrap())
                - want)
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn segments_are_weighted_per_use_and_can_be_disabled() {
        let p = t(&[[1.0, 2.0], [0.0, -1.0]]);
        let q = t(&[[0.0, 2.0], [1.0, 1.0]]);
        let spec = LossSpec {
            segments: vec![
                LossSegment {
                    start: 0,
                    len: 1,
                    kind: LossKind::Mse,
                    weights: LossWeights {
                        demi_cycle: Some(2.0),
                        cycle: None,
                        translation: Some(1.0),
                        fused: None,
                    },
                },
                LossSegment {
                    start: 1,
                    len: 1,
                    kind: LossKind::L1,
                    weights: LossWeights {
                        demi_cycle: Some(1.0),
                        cycle: None,
                        translation: None,
                        fused: None,
                    },
                },
            ],
        };
        // col0 mse = (1 + 1) / 2 = 1; col1 l1 = (0 + 2) / 2 = 1
        let dcy = domain_loss(
            Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
            &spec,
            LossUse::DemiCycle,
            &p,
            &q,
        )
        .unwrap()
        .unwrap();
        assert_eq!(val(dcy), 3.0);
        let tr = domain_loss(
            Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
            &spec,
            LossUse::Translation,
            &p,
            &q,
        )
        .unwrap()
        .unwrap();
        assert_eq!(val(tr), 1.0);
        assert!(
            domain_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                &spec,
                LossUse::Cycle,
                &p,
                &q
            )
            .unwrap()
            .is_none()
        );
        assert!(
            domain_loss(
                Ops::choose(&candle_core::Device::Cpu, candle_core::DType::F32),
                &LossSpec::mse(3),
                LossUse::Cycle,
                &p,
                &q
            )
            .is_err()
        );
    }
}
