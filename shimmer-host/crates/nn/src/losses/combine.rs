//! shimmer's `combine_loss`: the total loss is the **mean** (not the sum) of
//! `coef * metric` over the coefficients with `coef > 0`, in coefficient
//! order; and the fusion flavour's `broadcast_loss` metric, the unweighted
//! mean of those metrics other than `contrastives`.
//!
//! A coefficient whose metric is absent from the batch's metrics (its group
//! type is missing) is skipped; shimmer fails there.

use super::{Metrics, mean};
use anyhow::Result;
use candle_core::Tensor;
use indexmap::IndexMap;
use shimmer_config::LossFamily;

/// `mean(coef * metrics[name])` over coefficients > 0 whose metric exists;
/// `None` when there is no such term.
pub fn combine_loss(
    metrics: &Metrics,
    coefs: &IndexMap<LossFamily, f64>,
) -> Result<Option<Tensor>> {
    let terms = coefs
        .iter()
        .filter(|(_, c)| **c > 0.0)
        .filter_map(|(family, c)| metrics.get(family.name()).map(|m| m * *c))
        .collect::<candle_core::Result<Vec<_>>>()?;
    mean_or_none(&terms)
}

/// `mean(metrics[name])` over coefficients > 0 other than `contrastives`
/// whose metric exists; `None` when there is none.
pub fn broadcast_loss(
    metrics: &Metrics,
    coefs: &IndexMap<LossFamily, f64>,
) -> Result<Option<Tensor>> {
    let terms: Vec<Tensor> = coefs
        .iter()
        .filter(|(family, c)| **c > 0.0 && **family != LossFamily::Contrastives)
        .filter_map(|(family, _)| metrics.get(family.name()).cloned())
        .collect();
    mean_or_none(&terms)
}

fn mean_or_none(terms: &[Tensor]) -> Result<Option<Tensor>> {
    if terms.is_empty() {
        Ok(None)
    } else {
        mean(terms).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn s(v: f32) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn total_is_a_mean_of_weighted_terms_skipping_zero_and_missing() {
        let metrics: Metrics = [("demi_cycles", 1.0), ("cycles", 2.0), ("contrastives", 4.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect();
        let coefs: IndexMap<LossFamily, f64> = [
            (LossFamily::DemiCycles, 1.0),
            (LossFamily::Cycles, 0.0),
            (LossFamily::Translations, 1.0),
            (LossFamily::Contrastives, 0.5),
        ]
        .into_iter()
        .collect();
        // (1*1 + 0.5*4) / 2
        let total = combine_loss(&metrics, &coefs).unwrap().unwrap();
        assert_eq!(total.to_scalar::<f32>().unwrap(), 1.5);
        // broadcast: mean of demi_cycles only (cycles coef 0, translations missing)
        let b = broadcast_loss(&metrics, &coefs).unwrap().unwrap();
        assert_eq!(b.to_scalar::<f32>().unwrap(), 1.0);
        assert!(combine_loss(&Metrics::new(), &coefs).unwrap().is_none());
    }
}
