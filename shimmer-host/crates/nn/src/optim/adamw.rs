//! AdamW with PyTorch's semantics (`torch.optim.AdamW`, single-tensor path),
//! with the learning rate and beta1 given at every step (the scheduler's).
//!
//! Per parameter with a gradient, `t` its own step count:
//! `p ← p·(1 − lr·wd)`; `m ← m + (1−β1)(g − m)`; `v ← β2·v + (1−β2)·g·g`;
//! `p ← p − (lr/(1−β1ᵗ)) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)`, the bias
//! corrections using the *current* β1 and computed in double precision. A
//! parameter without a gradient is left alone (its step count too), as
//! PyTorch skips parameters whose `grad` is `None`.
//!
//! candle's own `AdamW` keeps its moments private (no checkpointing) and one
//! step count for all parameters, hence this implementation.

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use indexmap::IndexMap;
use std::collections::HashMap;

/// Moments and step count of one parameter.
#[derive(Debug, Clone)]
struct State {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    /// Fused in-place update or candle's ops, chosen when built.
    ops: crate::ops::Ops,
}

/// AdamW over named parameters.
#[derive(Debug)]
pub struct AdamW {
    params: IndexMap<String, Var>,
    state: IndexMap<String, State>,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimiser for `params` with fixed `beta2`, `eps` and decoupled
    /// `weight_decay`; moments start at zero.
    pub fn new(
        params: &IndexMap<String, Var>,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let state = params
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    State {
                        exp_avg: v.zeros_like()?,
                        exp_avg_sq: v.zeros_like()?,
                        step: 0,
                        ops: crate::ops::Ops::choose(v.device(), v.dtype()),
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params: params.clone(),
            state,
            beta2,
            eps,
            weight_decay,
        })
    }

    /// One update with learning rate `lr` and `beta1`.
    pub fn step(&mut self, grads: &GradStore, lr: f64, beta1: f64) -> Result<()> {
        for (name, var) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let st = self.state.get_mut(name).context("optimizer state")?;
            st.step += 1;
            let t = st.step as i32;
            let bc1 = 1.0 - beta1.powi(t);
            let bc2 = 1.0 - self.beta2.powi(t);
            let step_size = lr / bc1;
            let dev = var.device();
            let dtype = var.dtype();
            #[cfg(feature = "fused-kernels")]
            if st.ops == crate::ops::Ops::Fused {
                let h = shimmer_kernels::adamw::AdamWStep {
                    one_minus_beta1: (1.0 - beta1) as f32,
                    beta2: self.beta2 as f32,
                    one_minus_beta2: (1.0 - self.beta2) as f32,
                    decay: (self.weight_decay != 0.0)
                        .then_some((1.0 - lr * self.weight_decay) as f32),
                    bias_correction2_sqrt: bc2.sqrt() as f32,
                    eps: self.eps as f32,
                    neg_step_size: -step_size as f32,
                };
                shimmer_kernels::adamw::adamw_step(
                    var.as_tensor(),
                    &g.detach(),
                    &st.exp_avg,
                    &st.exp_avg_sq,
                    h,
                )?;
                continue;
            }
            let scalar = |x: f64| Tensor::new(x, dev).and_then(|s| s.to_dtype(dtype));
            let mut p = var.as_detached_tensor();
            if self.weight_decay != 0.0 {
                p = (p * (1.0 - lr * self.weight_decay))?;
            }
            let g = g.detach();
            let m = (&st.exp_avg + ((&g - &st.exp_avg)? * (1.0 - beta1))?)?;
            let v = ((&st.exp_avg_sq * self.beta2)? + ((&g * (1.0 - self.beta2))? * &g)?)?;
            let denom = (v.sqrt()?.broadcast_div(&scalar(bc2.sqrt())?)? + self.eps)?;
            let p = (p + (m.broadcast_div(&denom)? * -step_size)?)?;
            var.set(&p)?;
            st.exp_avg = m;
            st.exp_avg_sq = v;
        }
        Ok(())
    }

    /// Moments and step counts under `<prefix><param>.exp_avg|exp_avg_sq|step`.
    pub fn state_dict(&self, prefix: &str) -> Result<IndexMap<String, Tensor>> {
        let mut out = IndexMap::new();
        for (name, st) in &self.state {
            // Copies: on the CPU the moments are updated in place.
            out.insert(format!("{prefix}{name}.exp_avg"), st.exp_avg.copy()?);
            out.insert(format!("{prefix}{name}.exp_avg_sq"), st.exp_avg_sq.copy()?);
            let dev = st.exp_avg.device();
            out.insert(
                format!("{prefix}{name}.step"),
                Tensor::new(&[st.step as i64], dev)?,
            );
        }
        Ok(out)
    }

    /// Restores what [`AdamW::state_dict`] saved; every parameter's state
    /// must be present with its shape.
    pub fn load_state_dict(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        origin: &str,
    ) -> Result<()> {
        for (name, st) in self.state.iter_mut() {
            let get = |what: &str| {
                let key = format!("{prefix}{name}.{what}");
                tensors
                    .get(&key)
                    .with_context(|| format!("{origin}: missing optimizer state `{key}`"))
            };
            let shape = self.params[name].dims().to_vec();
            let mut moments = [st.exp_avg.clone(), st.exp_avg_sq.clone()];
            for (slot, what) in moments.iter_mut().zip(["exp_avg", "exp_avg_sq"]) {
                let t = get(what)?;
                if t.dims() != shape.as_slice() {
                    bail!(
                        "{origin}: optimizer state `{prefix}{name}.{what}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    );
                }
                // A copy of its own: on the CPU the moments are updated in place.
                *slot = t.to_device(slot.device())?.to_dtype(slot.dtype())?.copy()?;
            }
            let step = get("step")?
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1::<i64>()?;
            let [step] = step[..] else {
                bail!("{origin}: optimizer state `{prefix}{name}.step` must hold one integer");
            };
            let [m, v] = moments;
            *st = State {
                exp_avg: m,
                exp_avg_sq: v,
                step: u64::try_from(step)
                    .with_context(|| format!("{origin}: negative step count"))?,
                ops: st.ops,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place CPU kernel and the composed ops give the same bits.
    #[test]
    fn fused_update_equals_composed_ops() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.25, 3.0, -0.125]], &dev).unwrap();
        let c = Tensor::new(&[[1f32, 3.0, -2.0], [0.5, 0.1, 4.0]], &dev).unwrap();
        let run = |dtype: DType| {
            let var = Var::from_tensor(&init.to_dtype(dtype).unwrap()).unwrap();
            let params: IndexMap<String, Var> = [("w".to_string(), var.clone())].into();
            let mut opt = AdamW::new(&params, 0.999, 1e-8, 0.01).unwrap();
            let c = c.to_dtype(dtype).unwrap();
            for (lr, b1) in [(0.1, 0.95), (0.2, 0.9), (0.05, 0.85)] {
                let loss = (var.as_tensor().sqr().unwrap() * &c)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.step(&loss.backward().unwrap(), lr, b1).unwrap();
            }
            let sd = opt.state_dict("").unwrap();
            let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            [
                f(var.as_tensor()),
                f(&sd["w.exp_avg"]),
                f(&sd["w.exp_avg_sq"]),
            ]
        };
        // F32 on the CPU takes the fused path; F16 the composed one, whose
        // f32 arithmetic is then compared through a tolerance.
        let fused = run(DType::F32);
        let composed = run(DType::F64);
        for (a, b) in fused.iter().zip(&composed) {
            let d = shimmer_kernels::test_util::max_abs_diff(a, b);
            assert!(d < 1e-6, "fused vs composed differ by {d}");
        }
    }

    #[test]
    fn two_steps_match_pytorch_formula() {
        let dev = Device::Cpu;
        let var = Var::new(&[0.5f64, -1.0], &dev).unwrap();
        let params: IndexMap<String, Var> = [("w".to_string(), var.clone())].into();
        let mut opt = AdamW::new(&params, 0.999, 1e-8, 0.01).unwrap();
        // loss = sum(w^2 * c) with c = [1, 3] -> g = 2 c w
        let c = Tensor::new(&[1f64, 3.0], &dev).unwrap();
        let (mut p, mut m, mut v) = ([0.5f64, -1.0], [0.0; 2], [0.0; 2]);
        for (k, (lr, b1)) in [(0.1, 0.95), (0.2, 0.9)].into_iter().enumerate() {
            let loss = (var.as_tensor().sqr().unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), lr, b1).unwrap();
            let t = (k + 1) as i32;
            for i in 0..2 {
                let g = 2.0 * [1.0, 3.0][i] * p[i];
                p[i] *= 1.0 - lr * 0.01;
                m[i] += (1.0 - b1) * (g - m[i]);
                v[i] = 0.999 * v[i] + (1.0 - 0.999) * g * g;
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
                p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
            }
        }
        let got = var.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!((got[i] - p[i]).abs() < 1e-14, "{got:?} vs {p:?}");
        }
        let sd = opt.state_dict("o.").unwrap();
        assert_eq!(sd["o.w.step"].to_vec1::<i64>().unwrap(), [2]);
        let mut fresh = AdamW::new(&params, 0.999, 1e-8, 0.01).unwrap();
        let map: HashMap<String, Tensor> = sd.into_iter().collect();
        fresh.load_state_dict(&map, "o.", "test").unwrap();
        assert_eq!(fresh.state["w"].step, 2);
        assert!(
            fresh
                .load_state_dict(&HashMap::new(), "o.", "test")
                .is_err()
        );
    }
}
