//! End-to-end: the Simple Shapes pipeline at CI size through the real
//! binary and the `simple-shapes` plugin: the visual and attribute VAEs
//! are pretrained, a GW is trained over their frozen latents, its
//! translations are scored in the plugins' own spaces (class accuracy of
//! v -> attr, usable as the monitored metric), and TensorBoard's own
//! reader finds the image grids of every validation.

use crate::common;
use std::path::Path;
use std::process::Output;

/// A small world: 3 000 training items, 200 for validation and test, a
/// narrow visual VAE; every shape of one pose (size 14, upright, centred),
/// so that what tells the classes apart is learnt in a few hundred steps.
const SIZES: &[&str] = &[
    "domains.v.config.sizes=[14, 14]",
    "domains.v.config.locations=[16, 16]",
    "domains.v.config.rotations=[0, 0]",
    "domains.attr.config.sizes=[14, 14]",
    "domains.attr.config.locations=[16, 16]",
    "domains.attr.config.rotations=[0, 0]",
    "domains.v.config.train=3000",
    "domains.attr.config.train=3000",
    "domains.v.config.val=200",
    "domains.attr.config.val=200",
    "domains.v.config.test=200",
    "domains.attr.config.test=200",
    "domains.v.model.ae_dim=32",
];

fn run(cwd: &Path, experiment: &str, run_dir: &str, extra: &[&str]) -> Output {
    let out = common::shimmer()
        .arg("run")
        .arg(
            common::workspace_root()
                .join("experiments/simple-shapes")
                .join(experiment),
        )
        .args(["--run-dir", run_dir])
        .args(SIZES)
        .args(extra)
        .current_dir(cwd)
        .output()
        .expect("run shimmer");
    assert!(
        out.status.success(),
        "{experiment}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

fn metric(run_dir: &Path, name: &str) -> f64 {
    let summary = summary(run_dir);
    summary["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing from {}", summary["metrics"]))
}

#[test]
fn the_pipeline_pretrains_both_vaes_and_the_gw_names_the_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    run(
        cwd,
        "pretrain_v.yaml",
        "pv",
        &[
            "training.max_epochs=10",
            "training.val_every_n_steps=200",
            "optim.lr=3e-3",
        ],
    );
    run(
        cwd,
        "pretrain_attr.yaml",
        "pa",
        &["training.max_epochs=10", "data.batch_size=64"],
    );
    assert!(
        cwd.join("runs/simple-shapes/pretrained/v.safetensors")
            .is_file()
    );
    let pa = cwd.join("pa");
    assert!(
        metric(&pa, "test/reconstruction/accuracy") > 0.9,
        "the attribute VAE names the class"
    );
    assert!(metric(&cwd.join("pv"), "test/reconstruction/mse") < 0.02);
    run(
        cwd,
        "gw.yaml",
        "gw",
        &[
            "vars.paired=1.0",
            "data.batch_size=256",
            "training.max_steps=800",
            "training.val_every_n_steps=400",
            "training.monitor=val/translation_v_to_attr/accuracy",
            "training.mode=max",
        ],
    );
    let gw = cwd.join("gw");
    let accuracy = metric(&gw, "test/translation_v_to_attr/accuracy");
    // Chance is 1/3 (three classes, drawn uniformly); measured: 1.0.
    assert!(accuracy >= 0.95, "v -> attr class accuracy {accuracy}");
    // The monitored metric picked the best checkpoint.
    let best = summary(&gw)["best_value"].as_f64().unwrap();
    assert!((best - metric(&gw, "best/val/translation_v_to_attr/accuracy")).abs() < 1e-6);
    // Image grids at each validation: 8 items of 32x32 enlarged 3 times,
    // two rows (items, demi-cycles) or three (source, target, translation).
    let tb = common::read_tensorboard(&gw);
    let images = tb["images"].as_object().unwrap();
    let width = (8 * 32 + 9) * 3;
    for (tag, rows) in [
        ("images/v/demi_cycle", 2),
        ("images/attr/demi_cycle", 2),
        ("images/v_to_attr", 3),
        ("images/attr_to_v", 3),
    ] {
        let seen = images[tag]
            .as_array()
            .unwrap_or_else(|| panic!("{tag} missing: {images:?}"));
        let steps: Vec<i64> = seen.iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(steps, [400, 800], "{tag}");
        for r in seen {
            assert_eq!(
                (r[1].as_i64(), r[2].as_i64()),
                (Some(width), Some((rows * 32 + rows + 1) * 3)),
                "{tag}"
            );
        }
        assert!(gw.join(tag).join("step-800.png").is_file());
    }
    let pv = common::read_tensorboard(&cwd.join("pv"));
    assert!(
        pv["images"]["images/v/reconstruction"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert!(
        pv["scalars"]["val/reconstruction/mse"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
}
