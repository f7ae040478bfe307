//! Unit tests of the `arrays` domain on small files and on the Simple
//! Shapes sample dataset (the NumPy comparisons of every dtype are in the
//! end-to-end tests).

use super::*;
use npyz::WriterBuilder;
use shimmer_plugin_api::LossKind;
use std::path::Path;

fn save(path: &Path, shape: &[u64], data: &[f32]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn domain(config: serde_json::Value) -> Result<Box<dyn Domain>, PluginError> {
    ArraysPlugin::create_domain("arrays", &config.to_string())
}

fn load_all(d: &dyn Domain, split: Split) -> Vec<f32> {
    let info = d.info();
    let n = info.split_sizes.get(split);
    let indices: Vec<u64> = (0..n).collect();
    let mut out = vec![0.0; n as usize * info.item_len];
    d.load(split, &indices, &mut out).unwrap();
    out
}

fn sample_dir() -> Option<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/simple-shapes-sample");
    dir.exists().then_some(dir)
}

#[test]
fn attribute_vector_of_the_sample_follows_shimmer_ssd() {
    let Some(root) = sample_dir() else { return };
    let labels = |c: &str| serde_json::json!({ "npy": "{split}_labels.npy", "columns": serde_json::from_str::<serde_json::Value>(c).unwrap() });
    let mut parts = vec![
        labels("[0]"),
        labels("[1, 2]"),
        labels("[3]"),
        labels("[4]"),
        labels("[5, 6, 7]"),
    ];
    parts[0]["one_hot"] = 3.into();
    parts[0]["loss"] = "cross_entropy".into();
    parts[1]["mean"] = 16.into();
    parts[1]["std"] = 9.into();
    parts[2]["mean"] = 10.5.into();
    parts[2]["std"] = 3.5.into();
    parts[3]["cos_sin"] = true.into();
    parts[4]["mean"] = 127.5.into();
    parts[4]["std"] = 127.5.into();
    let d = domain(serde_json::json!({ "root": root, "parts": parts })).unwrap();
    let info = d.info();
    assert_eq!(
        (info.item_len, info.split_sizes.train, info.split_sizes.val),
        (11, 4, 2)
    );
    let labels = shimmer_formats::npy::open_npy(&root.join("train_labels.npy"))
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let got = load_all(d.as_ref(), Split::Train);
    for (item, l) in got.chunks(11).zip(labels.chunks(12)) {
        let l: Vec<f64> = l.iter().map(|&v| f64::from(v)).collect();
        let mut expected = vec![0.0f64; 3];
        expected[l[0] as usize] = 1.0;
        expected.push((l[1] - 7.0) / 18.0 * 2.0 - 1.0);
        expected.push((l[2] - 7.0) / 18.0 * 2.0 - 1.0);
        expected.push((l[3] - 7.0) / 7.0 * 2.0 - 1.0);
        expected.push(l[4].cos());
        expected.push(l[4].sin());
        expected.extend(l[5..8].iter().map(|c| c / 255.0 * 2.0 - 1.0));
        for (g, e) in item.iter().zip(&expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{item:?} vs {expected:?}");
        }
    }
    let spec = d.loss_spec();
    assert_eq!(spec.segments.len(), 2);
    assert_eq!(
        (spec.segments[0].kind, spec.segments[0].len),
        (LossKind::CrossEntropy, 3)
    );
    assert_eq!(
        (
            spec.segments[1].kind,
            spec.segments[1].start,
            spec.segments[1].len
        ),
        (LossKind::Mse, 3, 8)
    );
}

#[test]
fn sample_latents_are_normalised_by_the_statistics_files() {
    let Some(root) = sample_dir() else { return };
    let d = domain(serde_json::json!({
        "root": root,
        "parts": [{ "npy": "{split}_latent.npy", "mean": "latent_mean.npy", "std": "latent_std.npy" }],
    }))
    .unwrap();
    assert_eq!(d.info().item_len, 768);
    let read = |f: &str| {
        shimmer_formats::npy::open_npy(&root.join(f))
            .unwrap()
            .to_f32_vec()
            .unwrap()
    };
    let (raw, mean, std) = (
        read("val_latent.npy"),
        read("latent_mean.npy"),
        read("latent_std.npy"),
    );
    let got = load_all(d.as_ref(), Split::Val);
    for (k, (g, r)) in got.iter().zip(&raw).enumerate() {
        assert_eq!(*g, (r - mean[k % 768]) / std[k % 768]);
    }
}

#[test]
fn sample_images_have_the_item_colour_at_its_location() {
    let Some(root) = sample_dir() else { return };
    let d = domain(serde_json::json!({ "root": root, "parts": [{ "images": "{split}", "shape": [3, 32, 32] }] })).unwrap();
    let labels = shimmer_formats::npy::open_npy(&root.join("train_labels.npy"))
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let images = load_all(d.as_ref(), Split::Train);
    for (img, l) in images.chunks(3 * 32 * 32).zip(labels.chunks(12)) {
        let (x, y) = (l[1] as usize, l[2] as usize);
        for c in 0..3 {
            let v = img[c * 1024 + (31 - y) * 32 + x];
            assert_eq!(
                (v * 255.0).round(),
                l[5 + c].round(),
                "channel {c} of {l:?}"
            );
        }
    }
}

#[test]
fn parts_must_agree_and_transforms_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    save(&p.join("a.npy"), &[3, 2], &[0., 1., 2., 3., 4., 5.]);
    save(&p.join("b.npy"), &[2], &[0., 1.]);
    save(&p.join("c.npy"), &[3], &[0., 2., 5.]);
    save(&p.join("nan.npy"), &[2], &[1., f32::NAN]);
    let one = |parts: serde_json::Value| {
        domain(serde_json::json!({ "root": p, "splits": ["train"], "parts": parts }))
            .err()
            .map(|e| e.message().to_string())
            .unwrap_or_default()
    };
    let e = one(serde_json::json!([{ "npy": "a.npy" }, { "npy": "b.npy" }]));
    assert!(
        e.contains("part 2 (npy `b.npy`) has 2 train items but part 1 (npy `a.npy`) has 3"),
        "{e}"
    );
    let e = one(serde_json::json!([{ "npy": "a.npy", "one_hot": 3 }]));
    assert!(e.contains("needs exactly one column"), "{e}");
    let e = one(serde_json::json!([{ "npy": "a.npy", "columns": [2] }]));
    assert!(e.contains("column 2 does not exist"), "{e}");
    let e = one(serde_json::json!([{ "npy": "a.npy", "std": [1, 0] }]));
    assert!(e.contains("`std` is 0 for column 1"), "{e}");
    let e = one(serde_json::json!([{ "npy": "a.npy", "mean": [1, 2, 3] }]));
    assert!(
        e.contains("`mean` has 3 values, but the part's items have 2"),
        "{e}"
    );
    let e = one(serde_json::json!([{ "npy": "a.npy", "images": "x" }]));
    assert!(e.contains("give one source, not npy and images"), "{e}");
    let e = one(serde_json::json!([{ "npy": "missing.npy" }]));
    assert!(
        e.contains("missing.npy: cannot open: No such file or directory"),
        "{e}"
    );
    let e = one(serde_json::json!([{ "npy": "a.npy", "loss": "none" }]));
    assert!(e.contains("no loss"), "{e}");

    let d = domain(serde_json::json!({ "root": p, "splits": ["train"], "parts": [{ "npy": "c.npy", "one_hot": 3 }] })).unwrap();
    let mut out = [0.0; 3];
    d.load(Split::Train, &[1], &mut out).unwrap();
    assert_eq!(out, [0.0, 0.0, 1.0]);
    let e = d
        .load(Split::Train, &[2], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.npy: item 2 (train): class value 5 is not an integer in 0..3"),
        "{e}"
    );
    d.load(Split::Train, &[0], &mut out).unwrap();
    assert_eq!(out, [1.0, 0.0, 0.0]);

    let cfg = |allow: bool| serde_json::json!({ "root": p, "splits": ["train"], "allow_non_finite": allow, "parts": [{ "npy": "nan.npy" }] });
    let e = domain(cfg(false))
        .unwrap()
        .load(Split::Train, &[0, 1], &mut out[..2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nan.npy: item 1 (train), value 0: NaN in the data"),
        "{e}"
    );
    domain(cfg(true))
        .unwrap()
        .load(Split::Train, &[0, 1], &mut out[..2])
        .unwrap();
    assert!(out[1].is_nan());
}

#[test]
fn per_split_paths_leave_missing_splits_empty_and_unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    save(&dir.path().join("a.npy"), &[3, 2], &[0.; 6]);
    let d = domain(
        serde_json::json!({ "root": dir.path(), "parts": [{ "npy": { "train": "a.npy" } }] }),
    )
    .unwrap();
    assert_eq!(
        d.info().split_sizes,
        SplitSizes {
            train: 3,
            val: 0,
            test: 0
        }
    );
    let e = domain(
        serde_json::json!({ "root": dir.path(), "parts": [{ "npy": { "trian": "a.npy" } }] }),
    )
    .err()
    .unwrap();
    assert!(e.message().contains("trian"), "{e}");
    let e = domain(
        serde_json::json!({ "root": dir.path(), "parts": [{ "npy": "a.npy", "colums": [0] }] }),
    )
    .err()
    .unwrap();
    assert!(e.message().contains("colums"), "{e}");
}

#[test]
fn transforms_that_leave_f32_are_refused_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val", "test"] {
        save(
            &dir.path().join(format!("{split}.npy")),
            &[3, 2],
            &[0.5, -2.0, 1.5, 4.0, 0.0, 1.0],
        );
    }
    let root = dir.path().display().to_string();
    let part = |t: serde_json::Value| {
        let mut p = serde_json::json!({ "npy": "{split}.npy" });
        p.as_object_mut()
            .unwrap()
            .extend(t.as_object().unwrap().clone());
        domain(serde_json::json!({ "root": root, "parts": [p] }))
    };
    for (t, needle) in [
        (
            serde_json::json!({ "std": 1e-45 }),
            "column 0's values (from 0 to 1.5)",
        ),
        (serde_json::json!({ "scale": 3e38 }), "column 0's values"),
        (
            serde_json::json!({ "scale": [1, 1e38] }),
            "column 1's values (from -2 to 4)",
        ),
        (
            serde_json::json!({ "mean": -3.4e38, "shift": 3.4e38 }),
            "to inf",
        ),
    ] {
        let e = part(t.clone())
            .err()
            .unwrap_or_else(|| panic!("{t} accepted"));
        assert!(
            e.to_string().contains(needle) && e.to_string().contains("outside f32"),
            "{e}"
        );
    }
    assert!(part(serde_json::json!({ "std": 1e-30, "scale": 1e-3 })).is_ok());
}
