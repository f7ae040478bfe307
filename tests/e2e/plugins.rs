//! End-to-end: real plugin libraries built by cargo, loaded through the real
//! loader and driven through the `shimmer` binary.

use crate::common;

use shimmer_plugin_api::Split;
use shimmer_plugin_host::{PluginError, PluginLibrary};
use std::process::Output;

fn random_vectors() -> PluginLibrary {
    PluginLibrary::open(&common::plugin_path("random_vectors")).expect("load random-vectors")
}

fn faulty() -> PluginLibrary {
    PluginLibrary::open(&common::plugin_path("faulty_plugin")).expect("load faulty plugin")
}

fn load(lib: &PluginLibrary, config: &str, indices: &[u64]) -> Vec<f32> {
    let domain = lib.create_domain("vectors", config).expect("create domain");
    let mut out = vec![0.0; indices.len() * domain.info().item_len];
    domain.load(Split::Train, indices, &mut out).expect("load");
    out
}

#[test]
fn random_vectors_same_seed_same_bytes_other_seed_other_bytes() {
    let lib = random_vectors();
    assert_eq!(lib.name(), "random-vectors");
    let indices: Vec<u64> = (0..64).collect();
    let a = load(&lib, r#"{"dim": 8, "seed": 1}"#, &indices);
    // A second, independent load of the library gives the same bytes.
    let b = load(&random_vectors(), r#"{"dim": 8, "seed": 1}"#, &indices);
    let c = load(&lib, r#"{"dim": 8, "seed": 2}"#, &indices);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&c));
    assert!(a.iter().all(|x| x.is_finite()) && a.iter().any(|&x| x != 0.0));
}

#[test]
fn random_vectors_load_from_8_threads_matches_serial() {
    let lib = random_vectors();
    let domain = lib
        .create_domain("vectors", r#"{"dim": 16, "seed": 7, "train": 4096}"#)
        .unwrap();
    let chunks: Vec<Vec<u64>> = (0..8u64)
        .map(|t| (0..512).map(|i| (i * 8 + t) % 4096).collect())
        .collect();
    let serial: Vec<Vec<f32>> = chunks
        .iter()
        .map(|idx| {
            let mut out = vec![0.0; idx.len() * 16];
            domain.load(Split::Train, idx, &mut out).unwrap();
            out
        })
        .collect();
    let parallel: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|idx| {
                let domain = domain.clone();
                s.spawn(move || {
                    let mut out = vec![0.0; idx.len() * 16];
                    for _ in 0..4 {
                        domain.load(Split::Train, idx, &mut out).unwrap();
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial, parallel);
}

#[test]
fn plugin_from_another_abi_is_refused_by_name() {
    let err = PluginLibrary::open(&common::plugin_path("abi_v2_plugin")).unwrap_err();
    assert!(matches!(
        err,
        PluginError::AbiMismatch {
            found: 2,
            expected: 1,
            ..
        }
    ));
    let text = err.to_string();
    assert!(text.contains("`future-vectors` 2.0.0"), "{text}");
    assert!(text.contains("ABI v2") && text.contains("ABI v1"), "{text}");
}

#[test]
fn panicking_load_is_an_error_and_the_domain_keeps_working() {
    let lib = faulty();
    let domain = lib
        .create_domain("faulty", r#"{"dim": 3, "panic_on": 7, "fail_on": 5}"#)
        .unwrap();
    let mut out = vec![0.0; 3 * 2];
    let text = domain
        .load(Split::Train, &[1, 7], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("plugin `faulty`, domain `faulty`: load of 2 train items (1, 7) panicked"),
        "{text}"
    );
    assert!(text.contains("item 7 is corrupted on disk"), "{text}");
    assert!(
        text.contains("src/lib.rs"),
        "panic location missing: {text}"
    );

    let text = domain
        .load(Split::Train, &[5, 1], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("failed: cannot decode item 5: bad header"),
        "{text}"
    );

    // The process and the domain carry on after a caught panic.
    domain.load(Split::Train, &[1, 2], &mut out).unwrap();
    let expected: Vec<f32> = [1.0f32, 2.0]
        .iter()
        .flat_map(|i| (0..3).map(move |j| (i * 0.37 + j as f32).sin()))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn rejected_config_names_the_plugin_and_the_setting() {
    let lib = faulty();
    let text = lib
        .create_domain("faulty", r#"{"dim": 3, "itmes": 4}"#)
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("plugin `faulty`, domain `faulty`: create failed"),
        "{text}"
    );
    assert!(text.contains("itmes"), "{text}");
    let text = lib
        .create_domain("faulty", r#"{"dim": 3, "items": 0}"#)
        .unwrap_err()
        .to_string();
    assert!(text.contains("`items` must be at least 1"), "{text}");
    let text = lib
        .create_domain("faulty", r#"{"dim": 3, "panic_in_create": true}"#)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("create panicked") && text.contains("asked to panic"),
        "{text}"
    );
    let text = lib.create_domain("images", "{}").unwrap_err().to_string();
    assert!(
        text.contains("no domain kind `images`") && text.contains("faulty"),
        "{text}"
    );
}

#[test]
fn out_of_range_items_are_refused_before_reaching_the_plugin() {
    let domain = faulty()
        .create_domain("faulty", r#"{"dim": 2, "items": 4}"#)
        .unwrap();
    let mut out = vec![0.0; 2];
    let text = domain
        .load(Split::Val, &[4], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("item 4 asked for, but split val has 4 items"),
        "{text}"
    );
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    for noise in ["RUST_BACKTRACE", "stack backtrace", "thread '"] {
        assert!(!stderr.contains(noise), "{stderr}");
    }
}

fn inspect(args: &[&str]) -> Output {
    common::shimmer()
        .args(["plugins", "inspect"])
        .args(args)
        .output()
        .expect("run shimmer")
}

#[test]
fn inspect_reports_a_real_plugin() {
    let path = common::plugin_path("random_vectors");
    let out = inspect(&[
        path.to_str().unwrap(),
        "--config",
        r#"{"dim": 8, "train": 256, "val": 32}"#,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "random-vectors");
    assert_eq!(v["abi_version"], 1);
    let d = &v["domains"][0];
    assert_eq!(d["kind"], "vectors");
    assert_eq!(d["latent_dim"], 8);
    assert_eq!(d["item_len"], 8);
    assert_eq!(d["split_sizes"]["train"], 256);
    assert_eq!(d["split_sizes"]["val"], 32);
    assert_eq!(d["loss_spec"]["segments"][0]["kind"], "mse");

    // By name, found beside the binary; human-readable.
    let out = inspect(&["random-vectors", "--config", r#"{"dim": 8}"#]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("plugin  random-vectors") && text.contains("latent dim    8"),
        "{text}"
    );
}

#[test]
fn inspect_missing_path_is_a_one_line_error() {
    let out = inspect(&["/nonexistent/libnothing.so"]);
    assert_one_line_error(&out, "cannot read plugin file /nonexistent/libnothing.so");
    let out = inspect(&["no-such-plugin"]);
    assert_one_line_error(&out, "plugin `no-such-plugin` not found");
}

#[test]
fn inspect_non_library_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, "this is text, not ELF\n").unwrap();
    let out = inspect(&[path.to_str().unwrap()]);
    assert_one_line_error(&out, "is not a loadable shared library");
    // The private copy is not what the user sees in the message.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[test]
fn inspect_library_without_entry_symbol_is_a_one_line_error() {
    let path = common::plugin_path("not_a_plugin");
    let out = inspect(&[path.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "is not a shimmer plugin: it exports no `shimmer_plugin_entry`",
    );
}

#[test]
fn an_entry_symbol_that_is_data_is_refused_before_it_is_called() {
    let path = common::plugin_path("data_entry_plugin");
    let out = inspect(&[path.to_str().unwrap()]);
    assert_one_line_error(&out, "`shimmer_plugin_entry` is not a function in it");
    // The same through a run: refused as bad input, no crash.
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: data-entry\ndomains:\n  a: {{ plugin: {} }}\n  \
             b: {{ plugin: random-vectors, config: {{ dim: 3 }} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\n\
             data: {{ batch_size: 4, groups: [{{ domains: [a, b], items: {{ count: 8 }} }}] }}\n\
             training: {{ max_steps: 2 }}\n",
            path.display()
        ),
    )
    .unwrap();
    let out = common::shimmer()
        .args(["run", exp.to_str().unwrap(), "--run-dir"])
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(&out, "`shimmer_plugin_entry` is not a function in it");
}

#[test]
fn inspect_other_abi_and_bad_config_are_one_line_errors() {
    let path = common::plugin_path("abi_v2_plugin");
    let out = inspect(&[path.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "built for plugin ABI v2, but this shimmer speaks ABI v1",
    );
    let path = common::plugin_path("faulty_plugin");
    let out = inspect(&[
        path.to_str().unwrap(),
        "--config",
        r#"{"dim": 2, "panic_in_create": true}"#,
    ]);
    assert_one_line_error(&out, "create panicked");
}

#[test]
fn a_domain_that_implements_encode_is_encoded_through_it() {
    // `item_len == latent_dim` and `has_encode: false` in its info: the
    // host must call the plugin's `encode`, not copy the raw items.
    let lib = faulty();
    let handle = lib
        .create_domain("faulty", r#"{"dim": 3, "items": 4, "encode_scale": 2.0}"#)
        .expect("create");
    assert!(handle.info().has_encode, "{:?}", handle.info());
    assert!(!handle.info().has_decode, "{:?}", handle.info());
    let mut raw = vec![0f32; 6];
    handle.load(Split::Train, &[1, 2], &mut raw).expect("load");
    let source = shimmer_data::PluginSource::new(handle, "{}".to_string());
    let mut latents = vec![0f32; 6];
    shimmer_data::ItemSource::load_latents(&source, Split::Train, &[1, 2], &mut latents)
        .expect("load latents");
    let doubled: Vec<f32> = raw.iter().map(|r| 2.0 * r).collect();
    assert_eq!(latents, doubled);
    assert!(raw.iter().any(|&r| r != 0.0), "{raw:?}");
}

#[test]
fn a_plugin_built_for_abi_1_0_keeps_loading_and_draws_nothing() {
    let lib =
        PluginLibrary::open(&common::plugin_path("abi_v1_0_plugin")).expect("load the 1.0 plugin");
    assert_eq!((lib.name(), lib.abi()), ("abi-1.0-ramp", (1, 0)));
    let domain = lib.create_domain("ramp", "{}").expect("create a domain");
    assert_eq!(domain.info().item_len, 3);
    let mut out = vec![0.0; 6];
    domain.load(Split::Val, &[2, 7], &mut out).unwrap();
    assert_eq!(out, [2.0, 2.0, 2.0, 7.0, 7.0, 7.0]);
    assert_eq!(domain.render_size(), None);
    let err = domain.render(&out[..3], 1).unwrap_err().to_string();
    assert!(err.contains("does not draw its items"), "{err}");
    // And through the binary: a run over it trains.
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: old-abi\ndomains:\n  a: {{ plugin: {} }}\n  b: {{ plugin: random-vectors, config: {{ dim: 2, train: 8, val: 8, test: 8 }} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\ndata: {{ batch_size: 4, groups: [{{ domains: [a, b] }}] }}\ntraining: {{ max_steps: 2 }}\n",
            common::plugin_path("abi_v1_0_plugin").display()
        ),
    )
    .unwrap();
    let out = common::shimmer()
        .args(["run", "--run-dir"])
        .arg(tmp.path().join("run"))
        .arg(&exp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn simple_shapes_draws_items_through_the_host() {
    let lib =
        PluginLibrary::open(&common::plugin_path("simple_shapes")).expect("load simple-shapes");
    assert_eq!(lib.abi(), (1, shimmer_plugin_api::abi::ABI_MINOR));
    let v = lib.create_domain("v", r#"{"seed": 2}"#).unwrap();
    let attr = lib.create_domain("attr", r#"{"seed": 2}"#).unwrap();
    assert_eq!(
        (v.render_size(), attr.render_size()),
        (Some((32, 32)), Some((32, 32)))
    );
    let mut images = vec![0.0; 4 * 3072];
    v.load(Split::Test, &[0, 1, 2, 3], &mut images).unwrap();
    let mut vectors = vec![0.0; 4 * 11];
    attr.load(Split::Test, &[0, 1, 2, 3], &mut vectors).unwrap();
    let (from_v, from_attr) = (
        v.render(&images, 4).unwrap(),
        attr.render(&vectors, 4).unwrap(),
    );
    assert_eq!(from_v.len(), 4 * 32 * 32 * 3);
    let diff = from_v
        .iter()
        .zip(&from_attr)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(diff <= 1, "{diff}");
    let err = v.render(&images[..100], 1).unwrap_err().to_string();
    assert!(err.contains("render input"), "{err}");
}
