//! Named parameters and buffers of a Global Workspace, under shimmer's
//! PyTorch state-dict names, so weights move between the two libraries.
//!
//! Trainable tensors are candle [`Var`]s (the optimiser updates them in
//! place, and every layer holding a clone sees the update); buffers are
//! saved and loaded with the weights but never trained (shimmer's
//! non-learned `loss_mod.contrastive_fn.logit_scale`).

use crate::ops::Ops;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use indexmap::IndexMap;
use rand::Rng;
use std::collections::HashMap;

/// Prefix of the duplicate names PyTorch lists for the loss module's view of
/// the GW module (`loss_mod.gw_mod.…`); accepted and ignored on load.
const ALIAS_PREFIX: &str = "loss_mod.gw_mod.";

/// Ordered, named trainable parameters and buffers of one model.
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: IndexMap<String, Var>,
    buffers: IndexMap<String, Var>,
    device: Device,
    dtype: DType,
    matmul_dtype: Option<DType>,
    ops: Ops,
}

impl ParamStore {
    /// An empty store whose tensors live on `device` with `dtype`.
    pub fn new(device: &Device, dtype: DType) -> Self {
        Self {
            params: IndexMap::new(),
            buffers: IndexMap::new(),
            device: device.clone(),
            dtype,
            matmul_dtype: None,
            ops: Ops::choose(device, dtype),
        }
    }

    /// The implementation of the hot spots every layer built from this
    /// store uses (chosen once, from its device and dtype).
    pub fn ops(&self) -> Ops {
        self.ops
    }

    /// Forces the implementation layers built from now on use (to compare
    /// the fused kernels with candle's ops in one process).
    pub fn set_ops(&mut self, ops: Ops) {
        self.ops = ops;
    }

    /// Makes the layers built from this store round their matrix-product
    /// inputs to `dtype` (mixed precision); `None` keeps [`Self::dtype`].
    pub fn set_matmul_dtype(&mut self, dtype: Option<DType>) {
        self.matmul_dtype = dtype;
    }

    /// The dtype of matrix-product inputs when it is not [`Self::dtype`].
    pub fn matmul_dtype(&self) -> Option<DType> {
        self.matmul_dtype
    }

    /// The device every tensor of the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The floating-point type of every tensor of the model.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Registers a trainable parameter drawn from `U(-bound, bound)`, as
    /// PyTorch's `nn.Linear` initialises its weight and bias.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        bound: f64,
        rng: &mut impl Rng,
    ) -> Result<Var> {
        let n: usize = shape.iter().product();
        let b = bound as f32;
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-b..=b)).collect();
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        self.add_param(name, t)
    }

    /// Registers a trainable parameter with the given initial value.
    pub fn add_param(&mut self, name: &str, init: Tensor) -> Result<Var> {
        if self.params.contains_key(name) || self.buffers.contains_key(name) {
            bail!("parameter `{name}` is defined twice");
        }
        let var = Var::from_tensor(&init.to_device(&self.device)?.to_dtype(self.dtype)?)?;
        self.params.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Registers a buffer: saved with the weights, never trained.
    pub fn add_buffer(&mut self, name: &str, init: Tensor) -> Result<Var> {
        if self.params.contains_key(name) || self.buffers.contains_key(name) {
            bail!("buffer `{name}` is defined twice");
        }
        let var = Var::from_tensor(&init.to_device(&self.device)?.to_dtype(self.dtype)?)?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Trainable parameters, in registration order (shimmer's parameter order).
    pub fn params(&self) -> &IndexMap<String, Var> {
        &self.params
    }

    /// Buffers, in registration order.
    pub fn buffers(&self) -> &IndexMap<String, Var> {
        &self.buffers
    }

    /// Adds every parameter and buffer of `other` under `prefix` + its name,
    /// sharing storage (an update through either store is seen by both), so
    /// several models train and checkpoint as one. With `trainable` false,
    /// `other`'s parameters become buffers here: saved and loaded, never
    /// trained (a frozen domain model).
    pub fn adopt(&mut self, prefix: &str, other: &ParamStore, trainable: bool) -> Result<()> {
        for (name, var) in &other.params {
            let key = format!("{prefix}{name}");
            let into = if trainable {
                &mut self.params
            } else {
                &mut self.buffers
            };
            if into.insert(key.clone(), var.clone()).is_some() {
                bail!("parameter `{key}` is defined twice");
            }
        }
        for (name, var) in &other.buffers {
            let key = format!("{prefix}{name}");
            if self.buffers.insert(key.clone(), var.clone()).is_some() {
                bail!("buffer `{key}` is defined twice");
            }
        }
        Ok(())
    }

    /// Every parameter then every buffer as plain tensors, keyed by name: what
    /// a weights file holds.
    pub fn tensors(&self) -> IndexMap<String, Tensor> {
        self.params
            .iter()
            .chain(&self.buffers)
            .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
            .collect()
    }

    /// Sets the values from `tensors` (e.g. a safetensors file named by
    /// `origin`). Every parameter must be present with its exact shape;
    /// buffers are optional (kept when absent); `loss_mod.gw_mod.…` aliases
    /// are ignored; names starting with one of `ignore_prefixes` are skipped;
    /// any other name is an error.
    pub fn load(
        &self,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
        ignore_prefixes: &[&str],
    ) -> Result<()> {
        for name in tensors.keys() {
            let known = self.params.contains_key(name) || self.buffers.contains_key(name);
            let skipped = name.starts_with(ALIAS_PREFIX)
                || ignore_prefixes.iter().any(|p| name.starts_with(p));
            if !known && !skipped {
                bail!(
                    "{origin}: unknown tensor `{name}`: this model has no parameter or buffer \
                     of that name (it has {})",
                    self.params
                        .keys()
                        .chain(self.buffers.keys())
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        for (name, var) in &self.params {
            let t = tensors.get(name).with_context(|| {
                format!(
                    "{origin}: missing parameter `{name}` (expected shape {:?})",
                    var.dims()
                )
            })?;
            set_checked(var, t, name, origin)?;
        }
        for (name, var) in &self.buffers {
            if let Some(t) = tensors.get(name) {
                set_checked(var, t, name, origin)?;
            }
        }
        Ok(())
    }
}

/// Copies `t` into `var` after checking its shape, converting dtype and device.
fn set_checked(var: &Var, t: &Tensor, name: &str, origin: &str) -> Result<()> {
    if t.dims() != var.dims() {
        bail!(
            "{origin}: tensor `{name}` has shape {:?}, expected {:?}",
            t.dims(),
            var.dims()
        );
    }
    let t = t.to_device(var.device())?.to_dtype(var.dtype())?;
    var.set(&t)
        .with_context(|| format!("{origin}: cannot set tensor `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn load_checks_names_and_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut s = ParamStore::new(&Device::Cpu, DType::F32);
        s.uniform("w", &[2, 3], 0.5, &mut rng).unwrap();
        s.add_buffer("b", Tensor::new(&[1f32], &Device::Cpu).unwrap())
            .unwrap();
        let mut m = HashMap::new();
        let err = format!("{:#}", s.load(&m, "f", &[]).unwrap_err());
        assert!(
            err.contains("missing parameter `w`") && err.contains("[2, 3]"),
            "{err}"
        );
        m.insert(
            "w".to_string(),
            Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
        let err = format!("{:#}", s.load(&m, "f", &[]).unwrap_err());
        assert!(
            err.contains("`w` has shape [3, 2], expected [2, 3]"),
            "{err}"
        );
        m.insert(
            "w".to_string(),
            Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        s.load(&m, "f", &[]).unwrap();
        assert_eq!(
            s.params()["w"]
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            6.0
        );
        m.insert(
            "zz".to_string(),
            Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(format!("{:#}", s.load(&m, "f", &[]).unwrap_err()).contains("`zz`"));
        s.load(&m, "f", &["zz"]).unwrap();
    }

    #[test]
    fn uniform_respects_bound() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut s = ParamStore::new(&Device::Cpu, DType::F32);
        let v = s.uniform("w", &[100], 0.25, &mut rng).unwrap();
        let xs = v.as_tensor().to_vec1::<f32>().unwrap();
        assert!(xs.iter().all(|x| x.abs() <= 0.25));
        assert!(xs.iter().any(|x| x.abs() > 0.2));
    }
}
