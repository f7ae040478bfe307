//! Where a training run stands, as every checkpoint records it.

use anyhow::{Context, Result};
use candle_core::Tensor;
use indexmap::IndexMap;
use std::collections::HashMap;

/// Where training stands; saved in every checkpoint as `trainer.*`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Position {
    /// Optimiser steps done.
    pub global_step: u64,
    /// Current epoch (completed epochs).
    pub epoch: u64,
    /// Training batches of the current epoch already used.
    pub batch_in_epoch: u64,
    /// Best monitored value so far.
    pub best_value: Option<f64>,
    /// Step at which it was reached.
    pub best_step: Option<u64>,
    /// Training wall time so far, over all resumes.
    pub wall_time_s: f64,
}

impl Position {
    pub(crate) fn to_tensors(&self) -> Result<IndexMap<String, Tensor>> {
        let cpu = candle_core::Device::Cpu;
        let u = |v: u64| Tensor::new(&[v as i64], &cpu);
        let mut out = IndexMap::new();
        out.insert("trainer.global_step".into(), u(self.global_step)?);
        out.insert("trainer.epoch".into(), u(self.epoch)?);
        out.insert("trainer.batch_in_epoch".into(), u(self.batch_in_epoch)?);
        out.insert(
            "trainer.wall_time_s".into(),
            Tensor::new(&[self.wall_time_s], &cpu)?,
        );
        if let (Some(v), Some(s)) = (self.best_value, self.best_step) {
            out.insert("trainer.best_value".into(), Tensor::new(&[v], &cpu)?);
            out.insert("trainer.best_step".into(), u(s)?);
        }
        Ok(out)
    }

    pub(crate) fn from_tensors(t: &HashMap<String, Tensor>, origin: &str) -> Result<Self> {
        let int = |name: &str| -> Result<u64> {
            let v = t
                .get(name)
                .with_context(|| format!("{origin}: missing `{name}`: not a training checkpoint"))?
                .to_vec1::<i64>()?;
            Ok(v.first().copied().unwrap_or(0) as u64)
        };
        let float = |name: &str| -> Result<Option<f64>> {
            t.get(name)
                .map(|x| Ok(x.to_vec1::<f64>()?.first().copied().unwrap_or(0.0)))
                .transpose()
        };
        Ok(Self {
            global_step: int("trainer.global_step")?,
            epoch: int("trainer.epoch")?,
            batch_in_epoch: int("trainer.batch_in_epoch")?,
            best_value: float("trainer.best_value")?,
            best_step: t
                .contains_key("trainer.best_step")
                .then(|| int("trainer.best_step"))
                .transpose()?,
            wall_time_s: float("trainer.wall_time_s")?.unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = Position {
            global_step: 17,
            epoch: 2,
            batch_in_epoch: 3,
            best_value: Some(0.25),
            best_step: Some(16),
            wall_time_s: 1.5,
        };
        let t: HashMap<_, _> = p.to_tensors().unwrap().into_iter().collect();
        assert_eq!(Position::from_tensors(&t, "x").unwrap(), p);
    }
}
