//! End-to-end: weights both ways with the Python library. `shimmer export`
//! writes exactly the state dict shimmer's modules have
//! (`../shared/interop/*.json`), with the run's hyperparameters in its
//! metadata; `--checkpoint` takes the project's files, its exports, a
//! shimmer state dict and a real Lightning checkpoint of shimmer's
//! (`../shared/interop/lightning/`), whose predictions are shimmer's own.

use crate::common;
use crate::run::{run_args, stderr, tutorial_args};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn interop() -> PathBuf {
    common::workspace_root().join("../shared/interop")
}

fn shimmer(args: &[&str]) -> Output {
    common::shimmer()
        .args(args)
        .current_dir(common::workspace_root())
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// Name -> shape of every tensor of a safetensors file, and its metadata.
fn header(path: &Path) -> (BTreeMap<String, Vec<u64>>, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut head: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = head
        .remove("__metadata__")
        .map(|m| serde_json::from_value(m).unwrap())
        .unwrap_or_default();
    let shapes = head
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_value(v["shape"].clone()).unwrap()))
        .collect();
    (shapes, meta)
}

/// The key -> shape table shimmer's own state dict has for `model`.
fn shimmer_keys(model: &str) -> BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(interop().join(format!("{model}.json"))).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["keys"].clone()).unwrap()
}

fn assert_same_keys(file: &Path, model: &str) {
    let (ours, _) = header(file);
    let theirs = shimmer_keys(model);
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{model}: missing {missing:?}, extra {extra:?}"
    );
    for (k, shape) in &theirs {
        assert_eq!(&ours[k], shape, "{model}: {k}");
    }
}

/// Every tensor of a safetensors file, as f32 values with its shape.
fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (t.shape().to_vec(), values))
        })
        .collect()
}

#[test]
fn exports_hold_exactly_shimmers_state_dict_and_the_hyperparameters() {
    let tmp = tempfile::tempdir().unwrap();
    for (flavour, model) in [
        ("two_domains", "tutorial_two_domains"),
        ("fusion", "tutorial_fusion"),
    ] {
        let dir = tmp.path().join(flavour);
        let set = format!("workspace.flavour={flavour}");
        ok(run_args(&tutorial_args(
            &dir,
            &["training.max_epochs=1", &set],
        )));
        let out = dir.join("export.safetensors");
        let d = dir.to_str().unwrap();
        ok(shimmer(&["export", d, "--out", out.to_str().unwrap()]));
        assert_same_keys(&out, model);
        let (_, meta) = header(&out);
        let hp: Value = serde_json::from_str(&meta["shimmer.hparams"]).unwrap();
        assert_eq!(hp["flavour"], flavour, "{hp}");
        assert_eq!(hp["workspace_dim"], 16, "{hp}");
        assert_eq!(hp["encoders"]["hidden"], 64, "{hp}");
        assert_eq!(hp["domains"]["domain1"]["latent_dim"], 32, "{hp}");
        assert_eq!(hp["domains"]["domain2"]["model"]["type"], "linear", "{hp}");
        assert_eq!(hp["loss_coefs"]["contrastives"], 0.01, "{hp}");
        assert!(
            meta["shimmer.config"].contains("name: tutorial"),
            "{meta:?}"
        );

        // Its own export, given back, predicts what its checkpoint does.
        let straight = dir.join("straight.safetensors");
        let again = dir.join("again.safetensors");
        ok(shimmer(&[
            "predict",
            d,
            "--out",
            straight.to_str().unwrap(),
        ]));
        ok(shimmer(&[
            "predict",
            d,
            "--checkpoint",
            out.to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ]));
        let (a, b) = (tensors(&straight), tensors(&again));
        assert!(a.keys().any(|k| k.starts_with("input/")), "{:?}", a.keys());
        assert_eq!(a, b, "{flavour}: predictions from the export");
    }
}

#[test]
fn the_simple_shapes_export_has_shimmer_ssds_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let exp = common::workspace_root().join("experiments/simple-shapes/gw.yaml");
    let mut args = vec![
        exp.display().to_string(),
        "--run-dir".into(),
        dir.display().to_string(),
        "~domains.v.model.checkpoint".into(),
        "~domains.attr.model.checkpoint".into(),
        "~data.cache.dir".into(),
        "data.batch_size=16".into(),
        "training.max_steps=1".into(),
    ];
    for d in ["v", "attr"] {
        for (split, n) in [("train", 64), ("val", 16), ("test", 16)] {
            args.push(format!("domains.{d}.config.{split}={n}"));
        }
    }
    ok(run_args(&args));
    let out = dir.join("export.safetensors");
    ok(shimmer(&[
        "export",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_same_keys(&out, "simple_shapes_two_domains");
}

/// An experiment over the reference inputs shimmer's tutorial GW was
/// given, with the domain modules and GW of that model.
fn reference_experiment(dir: &Path) -> PathBuf {
    let reference = interop().join("lightning/reference.safetensors");
    let r = reference.display();
    let domain = |d: &str| {
        format!(
            "  {d}:\n    plugin: arrays\n    config:\n      parts: [{{ safetensors: \
             {{ train: {r}, val: {r}, test: {r} }}, tensor: input/{d} }}]\n    \
             model: {{ type: linear, latent_dim: 32, frozen: false }}\n"
        )
    };
    let text = format!(
        "name: lightning\nseed: 3\ndomains:\n{}{}\
         workspace: {{ flavour: two_domains, dim: 16, encoders: {{ hidden: 64, n_layers: 1 }}, \
         decoders: {{ hidden: 64, n_layers: 1 }} }}\n\
         loss: {{ coefs: {{ translations: 1.0, demi_cycles: 1.0, cycles: 1.0, contrastives: 0.01 }} }}\n\
         optim: {{ lr: 1.0e-3, weight_decay: 0.0 }}\n\
         data: {{ batch_size: 64, workers: 1, shuffle: false, groups: [{{ domains: [domain1, domain2] }}] }}\n\
         training: {{ max_steps: 1 }}\n",
        domain("domain1"),
        domain("domain2")
    );
    let path = dir.join("lightning.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shimmers_lightning_checkpoint_and_state_dict_predict_what_shimmer_does() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = reference_experiment(tmp.path());
    let run = tmp.path().join("run");
    ok(shimmer(&[
        "run",
        exp.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]));
    let reference = tensors(&interop().join("lightning/reference.safetensors"));
    for file in ["gw.ckpt", "gw_state_dict.safetensors"] {
        let weights = interop().join("lightning").join(file);
        let out = tmp.path().join(format!("{file}.predictions.safetensors"));
        let said = ok(shimmer(&[
            "predict",
            run.to_str().unwrap(),
            "--checkpoint",
            weights.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]));
        if file == "gw.ckpt" {
            // Its hyper_parameters are the experiment's: nothing to note.
            assert!(
                !stderr(&said).contains("hyper_parameters say"),
                "{}",
                stderr(&said)
            );
        }
        let ours = tensors(&out);
        let mut compared = 0;
        for (name, (shape, want)) in &reference {
            let (got_shape, got) = ours
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no {name} in {:?}", ours.keys()));
            assert_eq!(got_shape, shape, "{file}: {name}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{file}: {name}[{i}] = {g}, shimmer's {w}"
                );
            }
            compared += 1;
        }
        assert!(compared >= 8, "{file}: {compared} tensors compared");
    }
}

#[test]
fn weights_that_do_not_fit_are_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // Workspace 12, where shimmer's checkpoint has 16.
    ok(run_args(&tutorial_args(
        &dir,
        &["training.max_epochs=1", "workspace.dim=12"],
    )));
    let ckpt = interop().join("lightning/gw.ckpt");
    let out = shimmer(&[
        "predict",
        dir.to_str().unwrap(),
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        tmp.path().join("p.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("does not fit the model")
            && err.contains("`gw_mod.gw_encoders.domain1.4.weight` has shape [16, 64] in the file, the model's is [12, 64]"),
        "{err}"
    );
    assert!(err.contains("workspace_dim 16, the experiment 12"), "{err}");
}

#[test]
fn every_file_a_run_writes_takes_the_umasks_mode() {
    let tmp = tempfile::tempdir().unwrap();
    for umask in [0o022u32, 0o077] {
        let dir = tmp.path().join(format!("run-{umask:o}"));
        let bin = common::build_all().join("shimmer");
        let sh = |args: Vec<String>| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("umask {umask:o} && exec \"$0\" \"$@\""))
                .arg(&bin)
                .args(args)
                .current_dir(common::workspace_root())
                .env_remove("SHIMMER_PLUGIN_PATH")
                .output()
                .unwrap();
            ok(out)
        };
        let mut args = vec!["run".to_string()];
        args.extend(tutorial_args(&dir, &["training.max_epochs=1"]));
        sh(args);
        let d = dir.display().to_string();
        let export = tmp.path().join(format!("export-{umask:o}.safetensors"));
        let predictions = tmp
            .path()
            .join(format!("predictions-{umask:o}.safetensors"));
        sh(vec![
            "export".into(),
            d.clone(),
            "--out".into(),
            export.display().to_string(),
        ]);
        sh(vec![
            "predict".into(),
            d.clone(),
            "--out".into(),
            predictions.display().to_string(),
        ]);
        let want = 0o666 & !umask;
        let mut files = vec![export, predictions];
        for sub in ["", "checkpoints"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 8, "{files:?}");
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                want,
                "{} under umask {umask:o}: {mode:o}",
                f.display()
            );
        }
    }
}

#[test]
fn a_warm_start_begins_where_its_weights_left_off() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    ok(run_args(&tutorial_args(
        &source,
        &["training.max_epochs=1"],
    )));
    let best = source.join("checkpoints/best.safetensors");
    let best_val = crate::run::logged_scalars(&source)
        .into_iter()
        .find(|(_, tag, _)| tag == "best/val/loss")
        .unwrap()
        .2;
    let warm = tmp.path().join("warm");
    let init = format!("workspace.init_from={}", best.display());
    let out = ok(run_args(&tutorial_args(
        &warm,
        &["training.max_epochs=1", &init],
    )));
    assert!(
        stderr(&out).contains("(workspace.init_from)"),
        "{}",
        stderr(&out)
    );
    let at_start = crate::run::logged_scalars(&warm)
        .into_iter()
        .find(|(step, tag, _)| *step == 0 && tag == "val/loss")
        .unwrap()
        .2;
    assert_eq!(at_start, best_val, "step 0 is where the source ended");
    let record: Value =
        serde_json::from_slice(&std::fs::read(warm.join("provenance.json")).unwrap()).unwrap();
    let digest = Command::new("sha256sum").arg(&best).output().unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout);
    assert_eq!(
        record["init_from"]["sha256"].as_str().unwrap(),
        digest.split_whitespace().next().unwrap(),
        "{record}"
    );
    // shimmer's own weights of the same GW are a starting point too; its
    // domain modules are not used.
    let shimmers = interop().join("lightning/gw_state_dict.safetensors");
    let init = format!("workspace.init_from={}", shimmers.display());
    let out = ok(run_args(&tutorial_args(
        &tmp.path().join("from-shimmer"),
        &["training.max_epochs=1", &init],
    )));
    assert!(
        stderr(&out).contains("also holds domain modules (domain1, domain2)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_warm_start_that_does_not_fit_is_refused_by_validate_at_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = interop().join("lightning/gw_state_dict.safetensors");
    let init = format!("workspace.init_from={}", ckpt.display());
    let dir = tmp.path().join("run");
    let mut args = tutorial_args(&dir, &["workspace.dim=12", &init]);
    // `validate` takes the experiment and overrides, not --run-dir.
    args.drain(1..3);
    let out = common::shimmer()
        .arg("validate")
        .args(&args)
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("workspace.init_from") && err.contains("does not fit the model"),
        "{err}"
    );
    let mut run = vec!["run".to_string()];
    run.extend(tutorial_args(&dir, &["workspace.dim=12", &init]));
    let out = common::shimmer()
        .args(&run)
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.exists(), "a run folder was left");
}
