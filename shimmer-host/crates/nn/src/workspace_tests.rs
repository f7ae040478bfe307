//! Gradient checks of the whole workspace: finite differences on a tiny
//! float64 model, and the step-0 gradients and update of the parity data.

use super::*;
use crate::gw::{GroupKey, Latents};
use crate::optim::Optimizer;
use std::path::PathBuf;

fn latents(dims: &[(&str, usize)], b: usize, salt: f64) -> Latents {
    dims.iter()
        .enumerate()
        .map(|(i, (n, d))| {
            let t = Tensor::arange(0f64, (b * d) as f64, &Device::Cpu)
                .and_then(|t| t.reshape((b, *d)))
                .and_then(|t| ((t * 0.37)? + (salt + i as f64))?.sin())
                .unwrap();
            (n.to_string(), t)
        })
        .collect()
}

fn batch(groups: &[&[(&str, usize)]]) -> Batch {
    groups
        .iter()
        .enumerate()
        .map(|(k, g)| {
            (
                GroupKey::new(g.iter().map(|(n, _)| *n)),
                latents(g, 4, k as f64),
            )
        })
        .collect()
}

fn loss_value(gw: &GlobalWorkspace, b: &Batch) -> f64 {
    gw.step_loss(b).unwrap().loss.to_scalar::<f64>().unwrap()
}

/// Central finite differences vs autograd on a few entries of every parameter.
fn finite_difference_check(yaml: &str, coefs: &str, groups: &[&[(&str, usize)]]) {
    let ws: WorkspaceConfig = serde_norway::from_str(yaml).unwrap();
    let loss: LossConfig = serde_norway::from_str(coefs).unwrap();
    let doms: Vec<DomainSpec> = [("a", 3), ("b", 4), ("c", 2)]
        .iter()
        .map(|(n, d)| DomainSpec::mse(n, *d))
        .collect();
    let gw = GlobalWorkspace::with_dtype(&ws, &loss, &doms, &Device::Cpu, DType::F64, 5).unwrap();
    let b = batch(groups);
    let grads = gw.step_loss(&b).unwrap().loss.backward().unwrap();
    let h = 1e-6;
    let mut checked = 0;
    for (name, var) in gw.params().params() {
        let n = var.elem_count();
        let orig = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let g = grads
            .get(var.as_tensor())
            .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; n]);
        for i in [0, n / 2, n - 1] {
            let at = |delta: f64| {
                let mut v = orig.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_value(&gw, &b)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let err = (fd - g[i]).abs();
            assert!(
                err <= 1e-7 + 1e-5 * g[i].abs(),
                "{name}[{i}]: autograd {} vs finite difference {fd}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 30);
}

const GROUPS: &[&[(&str, usize)]] = &[
    &[("a", 3)],
    &[("b", 4), ("c", 2)],
    &[("a", 3), ("b", 4), ("c", 2)],
];

#[test]
fn total_loss_gradient_matches_finite_differences_fusion() {
    finite_difference_check(
        "{flavour: fusion, dim: 3, encoders: {hidden: 5}, decoders: {hidden: 5}, \
         selection: {type: fixed_shared}, contrastive: {learn: true}}",
        "{coefs: {contrastives: 0.3, fused: 1.0, demi_cycles: 1.0, cycles: 0.5, translations: 1.0}}",
        GROUPS,
    );
}

#[test]
fn total_loss_gradient_matches_finite_differences_attention() {
    finite_difference_check(
        "{flavour: fusion, dim: 3, encoders: {hidden: 4}, decoders: {hidden: 4}, \
         selection: {type: dynamic_query, head_size: 2, n_steps: 2}}",
        "{coefs: {fused: 1.0, demi_cycles: 1.0, cycles: 1.0, translations: 1.0}}",
        GROUPS,
    );
}

#[test]
fn total_loss_gradient_matches_finite_differences_two_domains() {
    finite_difference_check(
        "{flavour: two_domains, dim: 3, encoders: {hidden: 5, n_layers: 2}, \
         decoders: {hidden: 5}, contrastive: {learn: true}}",
        "{coefs: {demi_cycles: 1.0, cycles: 1.0, translations: 1.0, contrastives: 0.05}}",
        &[&[("a", 3)], &[("c", 2)], &[("a", 3), ("c", 2)]],
    );
}

#[test]
fn a_batch_without_pairs_skips_the_contrastive_loss() {
    let ws: WorkspaceConfig = serde_norway::from_str("{flavour: two_domains, dim: 3}").unwrap();
    let doms = [DomainSpec::mse("a", 3), DomainSpec::mse("b", 4)];
    let gw = GlobalWorkspace::new(&ws, &LossConfig::default(), &doms, &Device::Cpu, 0).unwrap();
    let b: Batch = [(
        GroupKey::new(["a"]),
        latents(&[("a", 3)], 2, 0.0)
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
            .collect(),
    )]
    .into();
    let out = gw.step_loss(&b).unwrap();
    let names: Vec<&str> = out.metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["demi_cycle_a", "demi_cycles", "cycle_a_through_b", "cycles"]
    );
    let bad: Batch = [(GroupKey::new(["zz"]), Latents::new())].into();
    let err = format!("{:#}", gw.step_loss(&bad).unwrap_err());
    assert!(err.contains("no loss term"), "{err}");
}

fn parity_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/parity")
}

fn read(path: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Step-0 gradients and first update against the Python library's.
#[test]
fn step0_gradients_and_update_match_parity_data() {
    let dir = parity_dir();
    if !dir.join("p1_grads_step0.safetensors").exists() {
        eprintln!("skipped: no parity data at {}", dir.display());
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for case in ["p1", "p3"] {
        let exp = shimmer_config::load(&root.join(format!("experiments/parity/{case}.yaml")), &[])
            .unwrap()
            .config;
        let doms = crate::replay::domain_specs(&exp).unwrap();
        let gw = GlobalWorkspace::new(exp.workspace().unwrap(), &exp.loss, &doms, &Device::Cpu, 0)
            .unwrap();
        // The default logit scale is the buffer shimmer stores.
        let scale = gw.params().buffers()[crate::losses::contrastive::LOGIT_SCALE]
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(f64::from(scale[0]), 2.659_260_034_561_157_2);
        crate::checkpoint::load_weights(&dir.join(format!("{case}_init.safetensors")), gw.params())
            .unwrap();
        let order: Vec<String> = exp.domains.keys().cloned().collect();
        let batches = crate::replay::load_batches(
            &dir.join(format!("{case}_batches.safetensors")),
            &order,
            &Device::Cpu,
        )
        .unwrap();
        let grads = gw.step_loss(&batches[0]).unwrap().loss.backward().unwrap();
        let golden = read(&dir.join(format!("{case}_grads_step0.safetensors")));
        let mut worst = 0f32;
        for (name, want) in &golden {
            let var = &gw.params().params()[name];
            let got = grads.get(var.as_tensor()).unwrap();
            let scale = shimmer_kernels::test_util::max_abs(want);
            let err = shimmer_kernels::test_util::max_abs_diff(got, want);
            assert!(
                err <= 1e-7 + 1e-5 * scale,
                "{case} grad {name}: max abs error {err}"
            );
            worst = worst.max(err);
        }
        let mut opt =
            Optimizer::new(gw.params().params(), &exp.optim, Some(batches.len())).unwrap();
        opt.step(&grads).unwrap();
        let after = read(&dir.join(format!("{case}_after_step0.safetensors")));
        let mut worst_p = 0f32;
        for (name, want) in &after {
            let err = shimmer_kernels::test_util::max_abs_diff(
                gw.params().params()[name].as_tensor(),
                want,
            );
            assert!(
                err <= 1e-7,
                "{case} after step 0 {name}: max abs error {err}"
            );
            worst_p = worst_p.max(err);
        }
        eprintln!(
            "{case}: step-0 gradients max abs error {worst:e}; parameters after step 0 {worst_p:e}"
        );
    }
}
