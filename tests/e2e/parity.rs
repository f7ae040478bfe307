//! Parity with the Python library: `shimmer replay` on the golden data of
//! `../shared/parity/` (cases P1: two-domain flavour, P3: fusion flavour with
//! the broadcast loss and FixedShared selection) must reproduce every metric
//! of every step and the final weights to float32 precision.

use crate::common;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Relative tolerance on metrics.
const REL: f64 = 1e-5;
/// Absolute tolerance near zero (metrics) and on weights.
const ABS: f64 = 1e-6;

/// `name -> (shape, values)` of a float32 safetensors file.
fn read_tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name} is not float32");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// Writes float32 tensors to a safetensors file.
fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).expect("view");
            (n.clone(), view)
        })
        .collect();
    let out = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, out).expect("write safetensors");
}

/// Runs `shimmer replay` and returns the JSON lines.
fn replay(exp: &Path, init: &Path, batches: &Path, out_dir: &Path) -> Vec<Value> {
    let out = out_dir.join("metrics.jsonl");
    let fin = out_dir.join("final.safetensors");
    let run = common::shimmer()
        .arg("replay")
        .arg(exp)
        .arg("--init")
        .arg(init)
        .arg("--batches")
        .arg(batches)
        .arg("--out")
        .arg(&out)
        .arg("--final")
        .arg(&fin)
        .output()
        .expect("run shimmer replay");
    assert!(
        run.status.success(),
        "shimmer replay failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&out)
        .expect("metrics file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Largest relative and absolute errors seen, and where.
#[derive(Default)]
struct Worst {
    rel: f64,
    abs: f64,
    at: String,
    abs_at: String,
}

impl Worst {
    fn check(&mut self, what: &str, got: f64, want: f64, rel_tol: f64, abs_tol: f64) {
        let abs = (got - want).abs();
        let rel = abs / want.abs().max(f64::MIN_POSITIVE);
        assert!(
            abs <= abs_tol || rel <= rel_tol,
            "{what}: got {got}, expected {want} (abs {abs:e}, rel {rel:e})"
        );
        if rel > self.rel {
            self.rel = rel;
            self.at = what.to_string();
        }
        if abs > self.abs {
            self.abs = abs;
            self.abs_at = what.to_string();
        }
    }
}

fn check_case(case: &str) {
    let parity = common::parity_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = common::workspace_root().join(format!("experiments/parity/{case}.yaml"));
    let lines = replay(
        &exp,
        &parity.join(format!("{case}_init.safetensors")),
        &parity.join(format!("{case}_batches.safetensors")),
        dir.path(),
    );
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(parity.join(format!("{case}_expected.json")))
            .expect("expected json"),
    )
    .expect("valid json");
    let steps = expected["steps"].as_array().expect("steps");
    assert_eq!(lines.len(), steps.len(), "one line per step");
    let names: BTreeSet<String> = expected["metric_names"]
        .as_array()
        .expect("metric_names")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect();
    let mut metrics = Worst::default();
    for (k, (line, want)) in lines.iter().zip(steps).enumerate() {
        assert_eq!(line["step"].as_u64(), Some(k as u64));
        let f = |v: &Value, key: &str| {
            v[key]
                .as_f64()
                .unwrap_or_else(|| panic!("step {k}: no `{key}`"))
        };
        let mut sched = Worst::default();
        sched.check(
            &format!("step {k} lr"),
            f(line, "lr"),
            f(want, "lr"),
            1e-12,
            0.0,
        );
        sched.check(
            &format!("step {k} beta1"),
            f(line, "beta1"),
            f(want, "beta1"),
            1e-12,
            0.0,
        );
        metrics.check(
            &format!("step {k} loss"),
            f(line, "loss"),
            f(want, "loss"),
            REL,
            ABS,
        );
        let got_names: BTreeSet<String> = line
            .as_object()
            .expect("object")
            .keys()
            .filter(|n| !["step", "lr", "beta1", "loss"].contains(&n.as_str()))
            .cloned()
            .collect();
        assert_eq!(got_names, names, "step {k}: metric names");
        for name in &names {
            metrics.check(
                &format!("step {k} {name}"),
                f(line, name),
                f(&want["metrics"], name),
                REL,
                ABS,
            );
        }
    }
    let ours = read_tensors(&dir.path().join("final.safetensors"));
    let golden = read_tensors(&parity.join(format!("{case}_final.safetensors")));
    let mut weights = Worst::default();
    for (name, (shape, values)) in &golden {
        let (s, v) = ours
            .get(name)
            .unwrap_or_else(|| panic!("final weights lack `{name}`"));
        assert_eq!(s, shape, "{name} shape");
        for (i, (a, b)) in v.iter().zip(values).enumerate() {
            weights.check(
                &format!("{name}[{i}]"),
                f64::from(*a),
                f64::from(*b),
                0.0,
                ABS,
            );
        }
    }
    eprintln!(
        "{case}: metrics max rel {:.3e} (at {}), max abs {:.3e} (at {}); \
         final weights max abs {:.3e} (at {})",
        metrics.rel, metrics.at, metrics.abs, metrics.abs_at, weights.abs, weights.abs_at
    );
}

#[test]
fn p1_two_domains_matches_shimmer() {
    check_case("p1");
}

#[test]
fn p3_fusion_broadcast_matches_shimmer() {
    check_case("p3");
}

/// Deterministic pseudo-random values in [-1, 1).
fn noise(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn fusion_with_three_domains_learned_scale_and_two_layers_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws, hidden, n_layers) = (6usize, 10usize, 2usize);
    let dims = [("u", 3usize), ("v", 5), ("w", 4)];
    let exp = dir.path().join("fusion.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: fusion3\ndevice: cpu\ndomains:\n  u: {{ latent_dim: 3 }}\n  v: {{ latent_dim: 5 }}\n  \
             w: {{ latent_dim: 4 }}\nworkspace:\n  flavour: fusion\n  dim: {ws}\n  \
             encoders: {{ hidden: {hidden}, n_layers: {n_layers} }}\n  \
             decoders: {{ hidden: {hidden}, n_layers: {n_layers} }}\n  selection: {{ type: fixed_shared }}\n  \
             contrastive: {{ learn: true }}\nloss:\n  coefs: {{ contrastives: 0.1, fused: 1.0, demi_cycles: 1, \
             cycles: 1.0, translations: 1.0 }}\noptim:\n  scheduler: {{ type: one_cycle }}\n"
        ),
    )
    .expect("write yaml");
    let mut seed = 17u64;
    let mut init = Vec::new();
    for (kind, flip) in [("encoders", false), ("decoders", true)] {
        for (d, dim) in dims {
            let (i, o) = if flip { (ws, dim) } else { (dim, ws) };
            let mut sizes = vec![i];
            sizes.extend(std::iter::repeat_n(hidden, n_layers + 1));
            sizes.push(o);
            for (l, win) in sizes.windows(2).enumerate() {
                let p = format!("gw_mod.gw_{kind}.{d}.{}", 2 * l);
                let scale = 1.0 / (win[0] as f32).sqrt();
                let w: Vec<f32> = noise(&mut seed, win[0] * win[1])
                    .iter()
                    .map(|x| x * scale)
                    .collect();
                init.push((format!("{p}.weight"), vec![win[1], win[0]], w));
                let b: Vec<f32> = noise(&mut seed, win[1]).iter().map(|x| x * scale).collect();
                init.push((format!("{p}.bias"), vec![win[1]], b));
            }
        }
    }
    init.push((
        "loss_mod.contrastive_fn.logit_scale".into(),
        vec![1],
        vec![(1.0f32 / 0.07).ln()],
    ));
    let init_path = dir.path().join("init.safetensors");
    write_tensors(&init_path, &init);
    let mut batches = Vec::new();
    for k in 0..3 {
        for group in ["u", "v+w", "u+v+w"] {
            for d in group.split('+') {
                let dim = dims.iter().find(|(n, _)| *n == d).expect("dim").1;
                batches.push((
                    format!("step{k}/{group}/{d}"),
                    vec![6, dim],
                    noise(&mut seed, 6 * dim),
                ));
            }
        }
    }
    let batch_path = dir.path().join("batches.safetensors");
    write_tensors(&batch_path, &batches);

    let lines = replay(&exp, &init_path, &batch_path, dir.path());
    assert_eq!(lines.len(), 3);
    let names: Vec<&str> = lines[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for want in [
        "loss",
        "contrastive_v_and_w",
        "contrastives",
        "contrastive_v_and_w_logit_scale",
        "demi_cycles",
        "cycles",
        "translations",
        "fused",
        "from_{u}_to_u_loss",
        "from_{u}_through_{v,w}_to_u_case_{u}_loss",
        "from_{v,w}_through_{u}_to_w_case_{v,w}_loss",
        "from_{u,v,w}_to_v_loss",
        "broadcast_loss",
    ] {
        assert!(
            names.contains(&want),
            "missing metric `{want}` in {names:?}"
        );
    }
    for line in &lines {
        for (name, v) in line.as_object().expect("object") {
            assert!(v.as_f64().is_some_and(f64::is_finite), "{name} = {v}");
        }
    }
    // The learned logit scale moved and is saved under shimmer's name.
    let fin = read_tensors(&dir.path().join("final.safetensors"));
    let (_, scale) = &fin["loss_mod.contrastive_fn.logit_scale"];
    assert_ne!(scale[0], (1.0f32 / 0.07).ln());
    assert!(fin.contains_key("gw_mod.gw_decoders.w.6.weight"));
}
