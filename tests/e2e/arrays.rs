//! End-to-end: the `arrays` plugin, built by cargo and loaded through the
//! real loader, yields exactly what NumPy (and Pillow, safetensors) read
//! from the same files; every bad file gets one clear error naming it; the
//! shipped Simple Shapes sample experiment runs on the real sample files.

use crate::common;
use crate::run::assert_clear_failure;

use shimmer_data::group::{ItemFiles, ResolveItems};
use shimmer_data::{DomainSplitItems, Items, Select};
use shimmer_plugin_api::Split;
use shimmer_plugin_host::PluginLibrary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus(action: &str, dir: &Path) -> Output {
    Command::new(common::test_python())
        .arg(common::workspace_root().join("tests/arrays/corpus.py"))
        .arg(action)
        .arg(dir)
        .output()
        .expect("run tests/arrays/corpus.py")
}

fn sample_dir() -> PathBuf {
    common::workspace_root().join("../shared/datasets/simple-shapes-sample")
}

#[test]
fn every_value_the_plugin_yields_is_what_numpy_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let made = corpus("make", root);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let lib = PluginLibrary::open(&common::plugin_path("arrays")).expect("load the arrays plugin");
    assert_eq!(lib.name(), "arrays");
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let domain = lib
            .create_domain("arrays", &case["config"].to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = domain.info();
        for split in Split::ALL {
            let n = info.split_sizes.get(split);
            assert!(n > 0, "{name}: no {split} items");
            // Out of order and repeated, as shuffled batches ask.
            let mut indices: Vec<u64> = (0..n).rev().collect();
            indices.push(0);
            let mut values = vec![0.0f32; indices.len() * info.item_len];
            domain.load(split, &indices, &mut values).unwrap();
            let mut in_order = vec![0.0f32; n as usize * info.item_len];
            for (k, &i) in indices[..n as usize].iter().enumerate() {
                let src = &values[k * info.item_len..(k + 1) * info.item_len];
                in_order[i as usize * info.item_len..(i as usize + 1) * info.item_len]
                    .copy_from_slice(src);
            }
            let bytes: Vec<u8> = in_order.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(out_dir.join(format!("{name}_{split}.f32")), bytes).unwrap();
        }
    }
    // Every entry of the sample's pickled domain-split files, resolved the
    // way a group's `items: { domain_split: ... }` is.
    let mut entries = Vec::new();
    for folder in ["domain_splits", "domain_splits_v2"] {
        for file in std::fs::read_dir(sample_dir().join(folder))
            .unwrap()
            .flatten()
        {
            let path = file.path();
            let split = shimmer_formats::DomainSplit::read(&path).unwrap();
            for (names, _) in split.entries() {
                let domains: Vec<String> = names.iter().cloned().collect();
                let items = Items::DomainSplit(DomainSplitItems {
                    file: path.clone(),
                    entry: None,
                })
                .resolve(
                    u64::MAX,
                    Select::First,
                    0,
                    &ItemFiles::new(Split::Train, &domains),
                )
                .unwrap();
                entries
                    .push(serde_json::json!({ "file": path, "domains": domains, "items": items }));
            }
        }
    }
    assert!(entries.len() >= 30, "{} entries", entries.len());
    std::fs::write(
        out_dir.join("split_items.json"),
        serde_json::to_string(&entries).unwrap(),
    )
    .unwrap();
    let checked = corpus("check", root);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains(" 0 mismatches"), "{report}");
}

/// An experiment of two `arrays` domains over `files` in a temp folder.
struct BadData {
    dir: tempfile::TempDir,
}

impl BadData {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with NumPy: `expr` is a Python expression of `np`.
    fn npy(&self, name: &str, expr: &str) -> &Self {
        let code = format!(
            "import numpy as np; np.save({:?}, {expr})",
            self.path(name).display().to_string()
        );
        let out = Command::new(common::test_python())
            .args(["-c", &code])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    /// `shimmer validate` of a GW over domains `a` and `b` whose configs
    /// (YAML flow maps) are given, with a paired group `{a, b}` of `items`.
    fn validate(&self, a: &str, b: &str, items: &str) -> Output {
        let yaml = format!(
            "name: bad-data\ndomains:\n  a: {{ plugin: arrays, config: {a} }}\n  b: {{ plugin: arrays, config: {b} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\n\
             data:\n  batch_size: 2\n  groups: [{{ domains: [a, b], items: {items} }}, {{ domains: [a] }}]\n\
             training: {{ max_steps: 1 }}\n"
        );
        let exp = self.path("exp.yaml");
        std::fs::write(&exp, yaml).unwrap();
        common::shimmer()
            .arg("validate")
            .arg(&exp)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
}

/// A config of one `.npy` part per split, train/val/test files `{stem}_{split}.npy`.
fn npy_domain(stem: &str) -> String {
    format!("{{ parts: [{{ npy: \"{stem}_{{split}}.npy\" }}] }}")
}

fn good(d: &BadData, stem: &str, rows: usize, cols: usize) {
    for split in ["train", "val", "test"] {
        d.npy(
            &format!("{stem}_{split}.npy"),
            &format!("np.ones(({rows}, {cols}), np.float32)"),
        );
    }
}

#[test]
fn each_bad_file_gets_one_clear_error_naming_it() {
    let d = BadData::new();
    good(&d, "a", 6, 3);
    good(&d, "b", 6, 2);
    let all = "all";
    // Missing file.
    let out = d.validate(&npy_domain("a"), &npy_domain("missing"), all);
    assert_clear_failure(
        &out,
        &["missing_train.npy: cannot open: No such file or directory"],
    );
    assert_eq!(out.status.code(), Some(2));
    // Truncated file.
    good(&d, "t", 6, 2);
    let bytes = std::fs::read(d.path("t_val.npy")).unwrap();
    std::fs::write(d.path("t_val.npy"), &bytes[..bytes.len() - 5]).unwrap();
    let out = d.validate(&npy_domain("a"), &npy_domain("t"), all);
    assert_clear_failure(
        &out,
        &["t_val.npy: truncated: shape [6, 2] of <f4 needs 48 bytes of data, the file holds 43"],
    );
    // Unsupported dtypes.
    for split in ["train", "val", "test"] {
        d.npy(&format!("c_{split}.npy"), "np.ones((6, 2), np.complex64)");
        d.npy(&format!("s_{split}.npy"), "np.array(['ab'] * 6)");
    }
    let out = d.validate(&npy_domain("a"), &npy_domain("c"), all);
    assert_clear_failure(
        &out,
        &["c_train.npy: has dtype <c8, which is not supported"],
    );
    let out = d.validate(&npy_domain("a"), &npy_domain("s"), all);
    assert_clear_failure(&out, &["s_train.npy: holds strings"]);
    // Item shapes that differ between splits.
    good(&d, "w", 6, 2);
    d.npy("w_test.npy", "np.ones((6, 3), np.float32)");
    let out = d.validate(&npy_domain("a"), &npy_domain("w"), all);
    assert_clear_failure(&out, &["w_test.npy have 3 values", "w_train.npy have 2"]);
    // Lengths that differ between the domains of a paired group.
    good(&d, "short", 5, 2);
    let out = d.validate(&npy_domain("a"), &npy_domain("short"), all);
    assert_clear_failure(
        &out,
        &[
            "data.groups[0]",
            "domain `b` has 5 train items but `a` has 6",
        ],
    );
    // An item index past the end, from an item list.
    d.npy("paired.npy", "np.array([0, 6], np.int64)");
    let out = d.validate(&npy_domain("a"), &npy_domain("b"), "{ file: paired.npy }");
    assert_clear_failure(&out, &["paired.npy names item 6, but the split has only 6"]);
    // NaN in the data, refused unless allowed.
    good(&d, "nan", 6, 2);
    d.npy(
        "nan_val.npy",
        "np.array([[1, 2]] * 4 + [[np.nan, 0], [1, 1]], np.float32)",
    );
    let out = d.validate(&npy_domain("a"), &npy_domain("nan"), all);
    assert_clear_failure(
        &out,
        &[
            "nan_val.npy: item 4 (val), value 0: NaN in the data",
            "allow_non_finite",
        ],
    );
    let allowed = "{ allow_non_finite: true, parts: [{ npy: \"nan_{split}.npy\" }] }";
    let out = d.validate(&npy_domain("a"), allowed, all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A pickle that is not a domain split.
    d.npy("split.npy", "np.array({'a': 1}, dtype=object)");
    let out = d.validate(
        &npy_domain("a"),
        &npy_domain("b"),
        "{ domain_split: split.npy }",
    );
    assert_clear_failure(
        &out,
        &["split.npy: is not a domain-split file", "entry {a}"],
    );
    let out = d.validate(
        &npy_domain("a"),
        &npy_domain("b"),
        "{ domain_split: paired.npy }",
    );
    assert_clear_failure(
        &out,
        &["paired.npy: holds plain <i8 numbers, not a pickled object"],
    );
}

#[test]
fn images_of_the_wrong_size_or_mode_are_named() {
    let d = BadData::new();
    good(&d, "a", 4, 3);
    let images = |folder: &str, shape: &str| {
        let code = format!(
            "import numpy as np, os\nfrom PIL import Image\n\
             for s in ['train', 'val', 'test']:\n  os.makedirs(os.path.join({root:?}, s), exist_ok=True)\n  \
             for k in range(4): Image.fromarray(np.zeros({shape}, np.uint8)).save(os.path.join({root:?}, s, f'{{k}}.png'))\n",
            root = d.path(folder).display().to_string()
        );
        let out = Command::new(common::test_python())
            .args(["-c", &code])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "{{ root: {}, parts: [{{ images: \"{{split}}\", shape: [3, 8, 8] }}] }}",
            d.path(folder).display()
        )
    };
    let out = d.validate(&npy_domain("a"), &images("big", "(9, 8, 3)"), "all");
    assert_clear_failure(
        &out,
        &["0.png: is 9x8 pixels (height x width), the domain declares 8x8"],
    );
    let out = d.validate(&npy_domain("a"), &images("grey", "(8, 8)"), "all");
    assert_clear_failure(
        &out,
        &["0.png: is a grey image, the domain expects RGB (or RGBA) (3 channels)"],
    );
    let gap = images("gap", "(8, 8, 3)");
    std::fs::remove_file(d.path("gap/val/2.png")).unwrap();
    let out = d.validate(&npy_domain("a"), &gap, "all");
    assert_clear_failure(&out, &["gap/val: has 3 images but no 2.png"]);
    let out = d.validate(&npy_domain("a"), &images("ok", "(8, 8, 3)"), "all");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_simple_shapes_sample_experiment_runs_on_the_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = common::workspace_root().join("experiments/simple-shapes-sample/gw.yaml");
    let out = common::shimmer()
        .args(["run", "--fast-dev-run", "--run-dir"])
        .arg(tmp.path().join("run"))
        .arg(&exp)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["status"], "finished");
    let metrics = summary["metrics"].as_object().unwrap();
    for name in [
        "val/demi_cycle_v",
        "val/demi_cycle_attr",
        "val/demi_cycle_t",
        "val/translation_v/t_to_attr",
    ] {
        assert!(
            metrics[name].as_f64().is_some_and(f64::is_finite),
            "{name} in {metrics:?}"
        );
    }
    // The resolved config names the data by absolute path, so the run can
    // be resumed from any folder.
    let config = std::fs::read_to_string(tmp.path().join("run/config.yaml")).unwrap();
    let root = sample_dir().canonicalize().unwrap();
    let roots: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("root: "))
        .collect();
    assert!(!roots.is_empty(), "{config}");
    for r in roots {
        let path = std::path::Path::new(r);
        assert!(path.is_absolute(), "{r}");
        assert_eq!(path.canonicalize().unwrap(), root, "{config}");
    }
}

/// The sample's `two_domains` selection draws one domain per item when it
/// fuses two: validation draws the same every pass, so the step that ends
/// an epoch and is due by `val_every_n_steps` is validated once, and the
/// best checkpoint validated again gives the number logged at its step.
#[test]
fn the_sample_validates_each_step_once_and_the_same_weights_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = common::workspace_root().join("experiments/simple-shapes-sample/gw.yaml");
    let run = tmp.path().join("run");
    let out = common::shimmer()
        .args(["run", "--run-dir"])
        .arg(&run)
        .arg(&exp)
        .args([
            "training.val_every_n_steps=2",
            "training.val_every_n_epochs=1",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scalars = crate::run::logged_scalars(&run);
    let val: Vec<(i64, f32)> = scalars
        .iter()
        .filter(|(_, tag, _)| tag == "val/loss")
        .map(|(s, _, v)| (*s, *v))
        .collect();
    assert_eq!(
        val.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [2, 4],
        "{val:?}"
    );
    let summary = crate::run::summary(&run);
    let best_step = summary["best_step"].as_i64().unwrap();
    let at_best = val.iter().find(|(s, _)| *s == best_step).unwrap().1;
    let again = scalars
        .iter()
        .find(|(_, tag, _)| tag == "best/val/loss")
        .unwrap()
        .2;
    assert_eq!(at_best, again, "the best checkpoint validated again");
}
