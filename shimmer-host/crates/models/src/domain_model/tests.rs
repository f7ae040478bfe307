use super::*;
use rand_chacha::ChaCha8Rng;
use shimmer_config::{OptimConfig, SchedulerConfig};
use shimmer_nn::optim::Optimizer;

const LINEAR: DomainModelConfig = DomainModelConfig::Linear { latent_dim: 32 };
const MLP: DomainModelConfig = DomainModelConfig::Mlp {
    latent_dim: 6,
    hidden: 10,
    n_layers: 2,
};
const VAE: DomainModelConfig = DomainModelConfig::Vae {
    latent_dim: 6,
    hidden: 10,
    n_layers: 1,
    beta: 0.5,
};

fn data(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    standard_normal(
        rows,
        cols,
        &Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        &mut rng,
    )
    .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::from(shimmer_kernels::test_util::max_abs_diff(a, b))
}

fn names(m: &DomainModel) -> Vec<String> {
    m.params().params().keys().cloned().collect()
}

#[test]
fn shapes_and_dims() {
    let x = data(5, 8, 0);
    for (cfg, latent) in [
        (DomainModelConfig::Identity, 8),
        (LINEAR, 32),
        (MLP, 6),
        (VAE, 6),
    ] {
        let m = DomainModel::new(&cfg, 8, &Device::Cpu, 0).unwrap();
        assert_eq!(m.input_dim(), 8);
        assert_eq!(m.latent_dim(), latent, "{cfg}");
        let z = m.encode(&x).unwrap();
        assert_eq!(z.dims(), [5, latent], "{cfg}");
        assert_eq!(m.decode(&z).unwrap().dims(), [5, 8], "{cfg}");
        let err = format!("{:#}", m.encode(&data(5, 7, 0)).unwrap_err());
        assert!(
            err.contains("expected a [batch, 8] tensor") && err.contains("[5, 7]"),
            "{err}"
        );
    }
    let id = DomainModel::new(&DomainModelConfig::Identity, 8, &Device::Cpu, 0).unwrap();
    assert_eq!(max_abs_diff(&id.encode(&x).unwrap(), &x), 0.0);
    assert!(!id.has_params());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(id.pretrain_loss(&x, &mut rng, Mode::Train).is_err());
    assert!(DomainModel::new(&LINEAR, 0, &Device::Cpu, 0).is_err());
}

#[test]
fn parameter_names_follow_shimmer_modules() {
    let m = DomainModel::new(&LINEAR, 8, &Device::Cpu, 0).unwrap();
    assert_eq!(
        names(&m),
        [
            "encoder.weight",
            "encoder.bias",
            "decoder.weight",
            "decoder.bias"
        ]
    );
    assert_eq!(m.params().params()["encoder.weight"].dims(), [32, 8]);
    assert_eq!(m.params().params()["decoder.weight"].dims(), [8, 32]);

    let m = DomainModel::new(&MLP, 8, &Device::Cpu, 0).unwrap();
    let n = names(&m);
    assert_eq!(n.len(), 16);
    assert_eq!(n[0], "encoder.0.weight");
    assert_eq!(n[7], "encoder.6.bias");
    assert_eq!(n[8], "decoder.0.weight");

    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 0).unwrap();
    assert_eq!(
        names(&m),
        [
            "vae.encoder.encoder.0.weight",
            "vae.encoder.encoder.0.bias",
            "vae.encoder.encoder.2.weight",
            "vae.encoder.encoder.2.bias",
            "vae.encoder.encoder.4.weight",
            "vae.encoder.encoder.4.bias",
            "vae.encoder.q_mean.weight",
            "vae.encoder.q_mean.bias",
            "vae.encoder.q_logvar.weight",
            "vae.encoder.q_logvar.bias",
            "vae.decoder.decoder.0.weight",
            "vae.decoder.decoder.0.bias",
            "vae.decoder.decoder.2.weight",
            "vae.decoder.decoder.2.bias",
            "vae.decoder.decoder.4.weight",
            "vae.decoder.decoder.4.bias",
        ]
    );
    assert_eq!(
        m.params().params()["vae.encoder.encoder.4.weight"].dims(),
        [6, 10]
    );
    assert_eq!(
        m.params().params()["vae.decoder.decoder.4.weight"].dims(),
        [8, 10]
    );
}

#[test]
fn init_is_pytorch_uniform_and_seeded() {
    let a = DomainModel::new(&LINEAR, 16, &Device::Cpu, 3).unwrap();
    let b = DomainModel::new(&LINEAR, 16, &Device::Cpu, 3).unwrap();
    let c = DomainModel::new(&LINEAR, 16, &Device::Cpu, 4).unwrap();
    let w = |m: &DomainModel, n: &str| m.params().params()[n].as_tensor().clone();
    assert_eq!(
        max_abs_diff(&w(&a, "encoder.weight"), &w(&b, "encoder.weight")),
        0.0
    );
    assert!(max_abs_diff(&w(&a, "encoder.weight"), &w(&c, "encoder.weight")) > 0.0);
    // U(-1/sqrt(fan_in), 1/sqrt(fan_in)): fan_in 16 for the encoder, 32 for the decoder.
    let enc = scalar(&w(&a, "encoder.weight").abs().unwrap().max_all().unwrap());
    let dec = scalar(&w(&a, "decoder.weight").abs().unwrap().max_all().unwrap());
    assert!(enc <= 0.25 && enc > 0.2, "{enc}");
    assert!(dec <= 1.0 / 32f64.sqrt() + 1e-7 && dec > 0.15, "{dec}");
}

#[test]
fn vae_encode_is_the_posterior_mean() {
    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 1).unwrap();
    let Net::Vae(v) = &m.net else {
        panic!("not a VAE")
    };
    let x = data(4, 8, 1);
    let (mean, logvar) = v.posterior(&x).unwrap();
    let z1 = m.encode(&x).unwrap();
    let z2 = m.encode(&x).unwrap();
    assert_eq!(max_abs_diff(&z1, &mean), 0.0);
    assert_eq!(max_abs_diff(&z1, &z2), 0.0);
    assert!(max_abs_diff(&mean, &logvar) > 0.0);
}

#[test]
fn vae_loss_is_shimmers_generic_step() {
    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 2).unwrap();
    let Net::Vae(v) = &m.net else {
        panic!("not a VAE")
    };
    let x = data(4, 8, 2);
    let (mean, logvar) = v.posterior(&x).unwrap();
    let eps = data(4, 6, 3);

    // By hand: z = mean + exp(logvar / 2) * eps; recon = sum(0.5 (x_hat - x)^2
    // + 0.5 ln(2 pi)); kl = -0.5 sum(1 + logvar - mean^2 - exp(logvar));
    // loss = recon + beta kl.
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (mu, lv, e) = (flat(&mean), flat(&logvar), flat(&eps));
    let z: Vec<f32> = (0..mu.len())
        .map(|i| mu[i] + (0.5 * lv[i]).exp() * e[i])
        .collect();
    let z = Tensor::from_vec(z, (4, 6), &Device::Cpu).unwrap();
    let x_hat = flat(&v.decode(&z).unwrap());
    let xs = flat(&x);
    let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let recon: f64 = x_hat
        .iter()
        .zip(&xs)
        .map(|(a, b)| 0.5 * f64::from(a - b).powi(2) + c)
        .sum();
    let kl: f64 = -0.5
        * (0..mu.len())
            .map(|i| {
                let (m, l) = (f64::from(mu[i]), f64::from(lv[i]));
                1.0 + l - m * m - l.exp()
            })
            .sum::<f64>();

    let (loss, metrics) = m.vae_loss(&x, &eps, Mode::Eval).unwrap();
    let got: Vec<(&str, f64)> = metrics
        .iter()
        .map(|(k, t)| (k.as_str(), scalar(t)))
        .collect();
    assert_eq!(got[0].0, "reconstruction_loss");
    assert_eq!(got[1].0, "kl_loss");
    assert_eq!(got[2].0, "loss");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    assert!(close(got[0].1, recon), "{} vs {recon}", got[0].1);
    assert!(close(got[1].1, kl), "{} vs {kl}", got[1].1);
    assert!(close(scalar(&loss), recon + 0.5 * kl), "{}", scalar(&loss));
    assert_eq!(scalar(&loss), got[2].1);
}

#[test]
fn vae_noise_is_seeded() {
    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 0).unwrap();
    let x = data(16, 8, 4);
    let loss = |seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        scalar(&m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap().0)
    };
    assert_eq!(loss(7), loss(7));
    assert_ne!(loss(7), loss(8));
}

#[test]
fn gradients_reach_every_parameter() {
    let x = data(16, 8, 5);
    for cfg in [LINEAR, MLP, VAE] {
        let m = DomainModel::new(&cfg, 8, &Device::Cpu, 5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (loss, _) = m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in m.params().params() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{cfg}: no gradient for {name}"));
            let norm = scalar(&g.abs().unwrap().sum_all().unwrap());
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{cfg}: {name} gradient {norm}"
            );
        }
    }
}

#[test]
fn pretraining_a_linear_autoencoder_reduces_reconstruction() {
    let x = data(64, 16, 6);
    let m = DomainModel::new(&LINEAR, 16, &Device::Cpu, 6).unwrap();
    let cfg = OptimConfig {
        lr: 1e-2,
        scheduler: SchedulerConfig::None,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(m.params().params(), &cfg, Some(300)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..300 {
        let (loss, metrics) = m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
        last = scalar(&metrics[0].1);
        first.get_or_insert(last);
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let first = first.unwrap_or(f64::NAN);
    assert!(last < first / 100.0, "reconstruction {first} -> {last}");
}

#[test]
fn vae_pretraining_reduces_its_loss() {
    // Rank-3 data in 8 dims: a latent of 6 can hold it.
    let x = data(64, 3, 9).matmul(&data(3, 8, 10)).unwrap();
    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 9).unwrap();
    let cfg = OptimConfig {
        lr: 1e-2,
        scheduler: SchedulerConfig::None,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(m.params().params(), &cfg, Some(200)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut losses = Vec::new();
    for _ in 0..200 {
        let (loss, _) = m.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
        losses.push(scalar(&loss));
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    // Without the constant 0.5 ln(2 pi) per element of the Gaussian NLL.
    let floor = 64.0 * 8.0 * 0.5 * (2.0 * std::f64::consts::PI).ln();
    let head: f64 = losses[..10].iter().sum::<f64>() / 10.0 - floor;
    let tail: f64 = losses[190..].iter().sum::<f64>() / 10.0 - floor;
    assert!(tail < 0.5 * head, "loss above its floor {head} -> {tail}");
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let x = data(6, 8, 10);
    for (i, cfg) in [LINEAR, MLP, VAE].into_iter().enumerate() {
        let path = dir.path().join(format!("m{i}.safetensors"));
        let a = DomainModel::new(&cfg, 8, &Device::Cpu, 1).unwrap();
        a.save(&path).unwrap();
        let b = DomainModel::new(&cfg, 8, &Device::Cpu, 2).unwrap();
        assert!(max_abs_diff(&a.encode(&x).unwrap(), &b.encode(&x).unwrap()) > 0.0);
        b.load(&path).unwrap();
        let (za, zb) = (a.encode(&x).unwrap(), b.encode(&x).unwrap());
        assert_eq!(max_abs_diff(&za, &zb), 0.0, "{cfg}");
        assert_eq!(
            max_abs_diff(&a.decode(&za).unwrap(), &b.decode(&zb).unwrap()),
            0.0,
            "{cfg}"
        );
        let spec = DomainModelSpec {
            arch: cfg,
            checkpoint: Some(path.clone()),
            frozen: true,
        };
        let c = DomainModel::from_spec(&spec, "d", 8, &Device::Cpu, 3).unwrap();
        assert_eq!(max_abs_diff(&za, &c.encode(&x).unwrap()), 0.0, "{cfg}");
    }
}

#[test]
fn loading_weights_of_other_dims_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.safetensors");
    DomainModel::new(&LINEAR, 8, &Device::Cpu, 0)
        .unwrap()
        .save(&path)
        .unwrap();
    let m = DomainModel::new(&LINEAR, 16, &Device::Cpu, 0).unwrap();
    let err = format!("{:#}", m.load(&path).unwrap_err());
    assert!(
        err.contains("holds a domain model for input_dim 8 and latent_dim 32")
            && err.contains("this domain needs input_dim 16")
            && err.contains("`encoder.weight` has shape [32, 8], expected [32, 16]"),
        "{err}"
    );

    let m = DomainModel::new(
        &DomainModelConfig::Linear { latent_dim: 4 },
        8,
        &Device::Cpu,
        0,
    )
    .unwrap();
    let err = format!("{:#}", m.load(&path).unwrap_err());
    assert!(
        err.contains("latent_dim 32") && err.contains("latent_dim 4"),
        "{err}"
    );

    // Another architecture.
    let m = DomainModel::new(&VAE, 8, &Device::Cpu, 0).unwrap();
    let err = format!("{:#}", m.load(&path).unwrap_err());
    assert!(
        err.contains("holds no weights of a `vae` domain model")
            && err.contains("found decoder.bias, decoder.weight, encoder.bias, encoder.weight"),
        "{err}"
    );

    let err = format!(
        "{:#}",
        m.load(&dir.path().join("missing.safetensors")).unwrap_err()
    );
    assert!(err.contains("missing.safetensors"), "{err}");
}

#[test]
fn spec_yaml_defaults_and_per_type_keys() {
    let spec: DomainModelSpec = serde_norway::from_str("{type: linear, latent_dim: 32}").unwrap();
    assert_eq!(spec.arch, LINEAR);
    assert!(spec.frozen && spec.checkpoint.is_none());

    let spec: DomainModelSpec = serde_norway::from_str(
        "{type: vae, latent_dim: 6, hidden: 10, checkpoint: a/b.safetensors, frozen: false}",
    )
    .unwrap();
    assert_eq!(
        spec.arch,
        DomainModelConfig::Vae {
            latent_dim: 6,
            hidden: 10,
            n_layers: 1,
            beta: 1.0
        }
    );
    assert!(!spec.frozen);
    assert_eq!(
        spec.checkpoint.as_deref(),
        Some(Path::new("a/b.safetensors"))
    );

    // Round trip through the flat form.
    let text = serde_norway::to_string(&spec).unwrap();
    let back: DomainModelSpec = serde_norway::from_str(&text).unwrap();
    assert_eq!(back, spec);

    let err = |yaml: &str| {
        serde_norway::from_str::<DomainModelSpec>(yaml)
            .unwrap_err()
            .to_string()
    };
    let e = err("{type: linear, latent_dim: 32, hidden: 4}");
    assert!(
        e.contains("type `linear` takes no `hidden`")
            && e.contains("type, latent_dim, checkpoint, frozen"),
        "{e}"
    );
    assert!(err("{type: mlp, hidden: 4}").contains("`mlp` needs `latent_dim`"));
    assert!(
        err("{type: linear, latent_dim: 32, dropout: 0.1}").contains("unknown field `dropout`")
    );
    assert!(err("{type: conv}").contains("unknown variant `conv`"));
    assert!(err("{type: identity, checkpoint: x.safetensors}").contains("no weights"));
    assert!(err("{type: vae, latent_dim: 2, hidden: 3, beta: -1}").contains("beta"));
    assert!(err("{type: linear, latent_dim: 0}").contains("at least 1"));

    // The tagged architecture alone also reads from YAML.
    let arch: DomainModelConfig =
        serde_norway::from_str("{type: mlp, latent_dim: 6, hidden: 10, n_layers: 2}").unwrap();
    assert_eq!(arch, MLP);
}

#[test]
fn spec_errors_in_experiment_files_say_where() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Doc {
        model: DomainModelSpec,
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exp.yaml");
    std::fs::write(
        &path,
        "model:\n  type: linear\n  latent_dim: 32\n  hidden: 3\n",
    )
    .unwrap();
    let err = shimmer_config::yaml::load::<Doc>(&path, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exp.yaml") && err.contains("model") && err.contains("takes no `hidden`"),
        "{err}"
    );
    let ok = shimmer_config::yaml::load::<Doc>(&path, &["model.hidden=null".to_string()]);
    // `hidden: null` is the same as leaving it out.
    assert!(ok.is_ok(), "{:?}", ok.err());
}
