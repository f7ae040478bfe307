//! The image and attribute VAEs: gradients against finite differences,
//! batch norm in training and evaluation, the fused CPU kernels against
//! candle's ops, names and checkpoints as shimmer-ssd's.

use super::*;
use crate::domain_model::{DomainModel, DomainModelConfig};
use candle_core::{DType, Device};
use rand::SeedableRng;
use shimmer_nn::ops::Ops;

fn tiny(dtype: DType, ops: Option<Ops>, seed: u64) -> (ParamStore, ConvVae) {
    let mut store = ParamStore::new(&Device::Cpu, dtype);
    if let Some(ops) = ops {
        store.set_ops(ops);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let vae = ConvVae::new(&mut store, 1024, 1, 8, 2, 0.5, &mut rng).unwrap();
    (store, vae)
}

fn images(n: usize, dtype: DType, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 1024).map(|_| rng.random_range(0.0..1.0)).collect();
    Tensor::from_vec(v, (n, 1024), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn value(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Every parameter's gradient (a few entries of each) against central
/// finite differences of the training loss, in f64 (candle's ops).
#[test]
fn gradients_match_finite_differences() {
    let (store, vae) = tiny(DType::F64, None, 1);
    let x = images(3, DType::F64, 2);
    let eps = Tensor::new(&[[0.3f64, -1.2], [0.7, 0.1], [-0.4, 0.9]], &Device::Cpu).unwrap();
    let loss = || value(&vae.loss(&x, &eps, Mode::Train).unwrap().loss);
    let grads = vae
        .loss(&x, &eps, Mode::Train)
        .unwrap()
        .loss
        .backward()
        .unwrap();
    let h = 1e-6;
    let mut checked = 0;
    for (name, var) in store.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let flat = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in [0, flat.len() / 2, flat.len() - 1] {
            let set = |v: f64| {
                let mut w = flat.clone();
                w[i] = v;
                var.set(&Tensor::from_vec(w, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            };
            set(flat[i] + h);
            let up = loss();
            set(flat[i] - h);
            let down = loss();
            set(flat[i]);
            let fd = (up - down) / (2.0 * h);
            let tol = 1e-5 * fd.abs().max(g[i].abs()).max(1.0);
            assert!(
                (fd - g[i]).abs() < tol,
                "{name}[{i}]: finite difference {fd}, autograd {}",
                g[i]
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        3 * 27,
        "three entries of each of the 27 parameters"
    );
}

/// The fused CPU kernels and candle's ops compute the same loss and
/// gradients from the same weights.
#[test]
fn fused_kernels_and_candle_ops_agree() {
    if !Ops::choose(&Device::Cpu, DType::F32).is_fused() {
        return;
    }
    let (fused_store, fused) = tiny(DType::F32, None, 3);
    let (plain_store, plain) = tiny(DType::F32, Some(Ops::Composed), 3);
    let x = images(4, DType::F32, 4);
    let eps = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
    for mode in [Mode::Train, Mode::Eval] {
        let (a, b) = (
            fused.loss(&x, &eps, mode).unwrap().loss,
            plain.loss(&x, &eps, mode).unwrap().loss,
        );
        let (va, vb) = (value(&a), value(&b));
        assert!((va - vb).abs() < 1e-4 * vb.abs(), "{mode:?}: {va} vs {vb}");
        let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
        for ((name, pa), (_, pb)) in fused_store.params().iter().zip(plain_store.params()) {
            let (da, db) = (
                ga.get(pa.as_tensor()).unwrap(),
                gb.get(pb.as_tensor()).unwrap(),
            );
            let scale = f64::from(shimmer_kernels::test_util::max_abs_diff(
                db,
                &db.zeros_like().unwrap(),
            ))
            .max(1.0);
            let d = f64::from(shimmer_kernels::test_util::max_abs_diff(da, db));
            assert!(d < 1e-3 * scale, "{mode:?} {name}: {d} (scale {scale})");
        }
    }
    // The running statistics moved the same way (one Train pass each).
    for ((name, a), (_, b)) in fused_store.buffers().iter().zip(plain_store.buffers()) {
        let d = shimmer_kernels::test_util::max_abs_diff(a.as_tensor(), b.as_tensor());
        assert!(d < 1e-4, "{name}: {d}");
    }
}

#[test]
fn batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones() {
    for ops in [Ops::choose(&Device::Cpu, DType::F32), Ops::Composed] {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        store.set_ops(ops);
        let bn = BatchNorm2d::new(&mut store, "bn", 2).unwrap();
        let x = (images(2, DType::F32, 5).reshape((2, 2, 16, 32)).unwrap() * 3.0).unwrap();
        let y = bn.forward(&x, Mode::Train).unwrap();
        // Each channel of the output has mean 0 and variance 1.
        for c in 0..2 {
            let ch = y
                .narrow(1, c, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / ch.len() as f64;
            let var = ch
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / ch.len() as f64;
            assert!(
                mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
                "{ops:?} channel {c}: {mean} {var}"
            );
        }
        // PyTorch's running update: 0.9 old + 0.1 batch (unbiased variance).
        let xs = x
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = xs.len() as f64;
        let m = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let v = xs.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / (n - 1.0);
        let rm = store.buffers()["bn.running_mean"].to_vec1::<f32>().unwrap()[0];
        let rv = store.buffers()["bn.running_var"].to_vec1::<f32>().unwrap()[0];
        assert!((f64::from(rm) - 0.1 * m).abs() < 1e-5, "{ops:?} {rm}");
        assert!(
            (f64::from(rv) - (0.9 + 0.1 * v)).abs() < 1e-4,
            "{ops:?} {rv}"
        );
        assert_eq!(
            store.buffers()["bn.num_batches_tracked"]
                .to_scalar::<f32>()
                .unwrap(),
            1.0
        );
        // Evaluation: the running statistics, and nothing moves.
        let e = bn.forward(&x, Mode::Eval).unwrap();
        let first = e.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let x0 = xs[0];
        let want = (f64::from(x0) - f64::from(rm)) / (f64::from(rv) + 1e-5).sqrt();
        assert!(
            (f64::from(first) - want).abs() < 1e-4,
            "{ops:?} {first} vs {want}"
        );
        assert_eq!(
            store.buffers()["bn.num_batches_tracked"]
                .to_scalar::<f32>()
                .unwrap(),
            1.0
        );
    }
}

#[test]
fn names_follow_shimmer_ssd_and_checkpoints_keep_running_statistics() {
    let cfg = DomainModelConfig::ConvVae {
        latent_dim: 4,
        ae_dim: 16,
        channels: 3,
        beta: 0.1,
    };
    let m = DomainModel::new(&cfg, 3072, &Device::Cpu, 0).unwrap();
    let names: Vec<&String> = m
        .params()
        .params()
        .keys()
        .chain(m.params().buffers().keys())
        .collect();
    for want in [
        "vae.encoder.layers.0.weight",
        "vae.encoder.layers.1.running_var",
        "vae.encoder.layers.10.num_batches_tracked",
        "vae.encoder.q_mean.weight",
        "vae.decoder.layers.0.weight",
        "vae.decoder.layers.7.bias",
        "vae.decoder.out_layer.1.weight",
        "vae.decoder.out_layer.1.bias",
    ] {
        assert!(
            names.iter().any(|n| *n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| *n == "vae.encoder.layers.0.bias"),
        "convolutions before batch norm have no bias"
    );
    assert_eq!(
        m.params().params()["vae.decoder.layers.0.weight"].dims(),
        [4, 16, 8, 8]
    );
    // A training step moves the running statistics; a checkpoint keeps them.
    let x = images(6, DType::F32, 7).repeat((1, 3)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.safetensors");
    m.save(&path).unwrap();
    let loaded = DomainModel::new(&cfg, 3072, &Device::Cpu, 9).unwrap();
    loaded.load(&path).unwrap();
    let (a, b) = (m.encode(&x).unwrap(), loaded.encode(&x).unwrap());
    assert_eq!(shimmer_kernels::test_util::max_abs_diff(&a, &b), 0.0);
    let z = m.encode(&x).unwrap();
    let (da, db) = (m.decode(&z).unwrap(), loaded.decode(&z).unwrap());
    assert_eq!(shimmer_kernels::test_util::max_abs_diff(&da, &db), 0.0);
    assert!(da.min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0);
    assert_eq!(
        loaded.params().buffers()["vae.encoder.layers.1.num_batches_tracked"]
            .to_scalar::<f32>()
            .unwrap(),
        1.0
    );
}

#[test]
fn the_attribute_vae_reconstructs_classes_and_attributes() {
    let cfg = DomainModelConfig::AttributeVae {
        latent_dim: 4,
        hidden: 16,
        classes: 3,
        beta: 0.05,
        coef_categories: 1.0,
        coef_attributes: 1.0,
    };
    let m = DomainModel::new(&cfg, 11, &Device::Cpu, 0).unwrap();
    let names: Vec<&String> = m.params().params().keys().collect();
    for want in [
        "vae.encoder.encoder.4.weight",
        "vae.encoder.q_logvar.bias",
        "vae.decoder.decoder.2.weight",
        "vae.decoder.decoder_categories.0.weight",
        "vae.decoder.decoder_attributes.0.bias",
    ] {
        assert!(
            names.iter().any(|n| *n == want),
            "{want} missing from {names:?}"
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let rows: Vec<f32> = (0..32)
        .flat_map(|i| {
            let mut v = vec![0f32; 11];
            v[i % 3] = 1.0;
            for a in v.iter_mut().skip(3) {
                *a = rng.random_range(-1.0..1.0);
            }
            v
        })
        .collect();
    let x = Tensor::from_vec(rows, (32, 11), &Device::Cpu).unwrap();
    let (loss, metrics) = m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
    let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "reconstruction_loss_categories",
            "reconstruction_loss_attributes",
            "reconstruction_loss",
            "kl_loss",
            "loss"
        ]
    );
    let get = |n: &str| value(&metrics.iter().find(|(k, _)| k == n).unwrap().1);
    let recon = get("reconstruction_loss_categories") + get("reconstruction_loss_attributes");
    assert!((get("reconstruction_loss") - recon).abs() < 1e-3);
    assert!((value(&loss) - (recon + 0.05 * get("kl_loss"))).abs() < 1e-3);
    // The class term sums over the batch: about 32 * ln 3 for a fresh net.
    let cat = get("reconstruction_loss_categories");
    assert!((cat / 32.0 - 3f64.ln()).abs() < 0.5, "{cat}");
    let decoded = m.decode(&m.encode(&x).unwrap()).unwrap();
    let attrs = decoded.narrow(1, 3, 8).unwrap();
    assert!(
        attrs
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            <= 1.0
    );
}
