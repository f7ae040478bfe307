//! PyTorch checkpoints read without running them: the zip archives
//! `torch.save` writes (Lightning's `.ckpt`, a `torch.save(state_dict)`
//! `.pt`), read by [`shimmer_formats::torch_zip`] (its pickle scanned
//! under budgets, then built as inert values, never run), their state
//! dict then built as candle tensors on the CPU (floats as F32, integers
//! kept), and shimmer's checkpoint migrations applied, as `shimmer
//! migrate-ckpt` would.
//!
//! ```no_run
//! let ckpt = shimmer_nn::torch_checkpoint::read("gw.ckpt".as_ref())?;
//! println!("{} tensors, hparams {:?}", ckpt.tensors.len(), ckpt.hyper_parameters);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{Result, anyhow};
use candle_core::{DType, Device, Tensor};
use indexmap::IndexMap;
use serde_json::Value;
use shimmer_formats::dtype::Element;
use shimmer_formats::torch_zip::{self, TensorEntry};
use std::path::Path;

pub use shimmer_formats::torch_zip::{MAX_ENTRIES, MAX_PICKLE_BYTES};

/// shimmer's checkpoint migrations (`shimmer/ckpt_migrations/`), in order,
/// under the names `migrate_ckpt` records.
pub const MIGRATIONS: [&str; 5] = [
    "1_add_gw_interfaces",
    "2_del_gw_interfaces_hparam",
    "3_del_gw_interfaces",
    "4_del_buffers_put_models_in_gw_mod",
    "5_del_coef_buffers",
];

/// What a PyTorch checkpoint holds, read without running any of its pickle.
#[derive(Debug)]
pub struct TorchCheckpoint {
    /// The state dict (for a Lightning checkpoint its `state_dict` entry; for a
    /// plain `torch.save` of a state dict the whole object), name -> tensor on the CPU,
    /// float tensors as F32, after shimmer's checkpoint migrations.
    pub tensors: IndexMap<String, Tensor>,
    /// Lightning's `hyper_parameters`, as JSON: numbers, strings, bools, None, lists,
    /// dicts; any other object (e.g. a pickled reference to `torch.tanh`) as
    /// `{"__global__": "torch.tanh"}` — never imported nor called. A call's
    /// arguments, items and state follow under `args`, `items`, `list`, `state`;
    /// a dict subclass (Lightning's `AttributeDict`) is its dict; non-finite
    /// floats are the strings `"nan"`, `"inf"`, `"-inf"`.
    pub hyper_parameters: Option<Value>,
    /// `pytorch-lightning_version`, when present.
    pub lightning_version: Option<String>,
    /// The names of shimmer's checkpoint migrations that changed something while reading
    /// (renamed, dropped or added a tensor, or changed a hyper-parameter). Those due are
    /// run: for a Lightning checkpoint those after the last one it records, all of them
    /// when it records none (as `migrate_ckpt` does); for a plain state dict none. A due
    /// migration that finds nothing of the layout it migrates is not listed.
    pub migrations_applied: Vec<String>,
}

/// Whether `path` starts like a zip archive (a PyTorch checkpoint), read from its first bytes.
pub fn is_torch_checkpoint(path: &Path) -> Result<bool> {
    Ok(torch_zip::is_torch_zip(path)?)
}

/// Reads a PyTorch checkpoint; see [`TorchCheckpoint`].
pub fn read(path: &Path) -> Result<TorchCheckpoint> {
    let zip = torch_zip::read(path)?;
    let mut tensors = IndexMap::with_capacity(zip.tensors.len());
    for entry in &zip.tensors {
        let t = tensor(entry).map_err(|e| {
            anyhow!(
                "{}: tensor {}: {e}",
                path.display(),
                shimmer_formats::excerpt(&entry.name)
            )
        })?;
        tensors.insert(entry.name.clone(), t);
    }
    let (mut hyper_parameters, lightning_version, record) = match zip.lightning {
        Some(l) => (l.hyper_parameters, l.version, Some(l.migrations)),
        None => (None, None, None),
    };
    let mut migrations_applied = Vec::new();
    if let Some(record) = record {
        for (i, &name) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(first_due(record.as_deref()))
        {
            let changed;
            (tensors, changed) = migrate_changed(i, tensors, &mut hyper_parameters);
            if changed {
                migrations_applied.push(name.to_owned());
            }
        }
    }
    Ok(TorchCheckpoint {
        tensors,
        hyper_parameters,
        lightning_version,
        migrations_applied,
    })
}

/// A state dict entry as a tensor on the CPU: floats as F32, integers
/// kept, a bool as U8 (candle has no bool; a byte 0 or 1 keeps it).
fn tensor(entry: &TensorEntry) -> candle_core::Result<Tensor> {
    let dtype = match entry.element {
        Element::F32 => DType::F32,
        Element::F64 => DType::F64,
        Element::F16 => DType::F16,
        Element::BF16 => DType::BF16,
        Element::I64 => DType::I64,
        Element::I32 => DType::I32,
        Element::Bool | Element::U8 => DType::U8,
        other => candle_core::bail!("has element type {other:?}, not read"),
    };
    let t = Tensor::from_raw_buffer(entry.bytes(), dtype, &entry.shape, &Device::Cpu)?;
    match dtype {
        DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32),
        _ => Ok(t),
    }
}

/// The index in [`MIGRATIONS`] of the first migration a checkpoint that
/// records `record` has not had: the one after the last it records, 0 when
/// it records none of them (`migrate_ckpt`'s rule).
fn first_due(record: Option<&[String]>) -> usize {
    let record = record.unwrap_or_default();
    MIGRATIONS
        .iter()
        .rposition(|m| record.iter().any(|r| r == m))
        .map_or(0, |k| k + 1)
}

/// Applies migration `index` of [`MIGRATIONS`] to a state dict (and to the
/// hyper-parameters), as shimmer's `ckpt_migrations/<name>.py` does.
fn migrate<T: Clone>(
    index: usize,
    state: IndexMap<String, T>,
    hparams: &mut Option<Value>,
) -> IndexMap<String, T> {
    let mut out = IndexMap::with_capacity(state.len());
    match index {
        // 1: the resnet/bge encoders and decoders move into `gw_interfaces`.
        0 => {
            for (name, v) in state {
                let name = name
                    .replace(
                        "gw_mod.encoders.resnet",
                        "gw_mod.gw_interfaces.resnet.encoder",
                    )
                    .replace("gw_mod.encoders.bge", "gw_mod.gw_interfaces.bge.encoder")
                    .replace(
                        "gw_mod.decoders.resnet",
                        "gw_mod.gw_interfaces.resnet.decoder",
                    )
                    .replace("gw_mod.decoders.bge", "gw_mod.gw_interfaces.bge.decoder");
                out.insert(name, v);
            }
        }
        // 2: the `gw_interfaces` hyper-parameter is dropped.
        1 => {
            if let Some(Value::Object(h)) = hparams {
                h.remove("gw_interfaces");
            }
            return state;
        }
        // 3: `gw_interfaces.<d>.encoder|decoder` become `gw_encoders|gw_decoders.<d>`;
        // the interfaces' domain modules and anything else under them go.
        2 => {
            for (name, v) in state {
                let interface = name.contains("gw_mod.gw_interfaces");
                if interface && name.contains("domain_module") {
                    continue;
                } else if interface && name.contains("encoder") {
                    let n = name.replace(".gw_interfaces", ".gw_encoders");
                    out.insert(n.replace(".encoder", ""), v);
                } else if interface && name.contains("decoder") {
                    let n = name.replace(".gw_interfaces", ".gw_decoders");
                    out.insert(n.replace(".decoder", ""), v);
                } else if !name.contains("gw_interfaces") {
                    out.insert(name, v);
                }
            }
        }
        // 4: the loss coefficients' buffers go, `domain_mods.` moves under
        // `gw_mod.`, and the domain modules are also the loss module's.
        3 => {
            for (name, v) in state {
                if name.contains("loss_coefs.buffer") {
                    continue;
                }
                let name = match name.strip_prefix("domain_mods.") {
                    Some(rest) => format!("gw_mod.domain_mods.{rest}"),
                    None => name,
                };
                if name.starts_with("gw_mod.domain_mods") {
                    out.insert(format!("loss_mod.{name}"), v.clone());
                }
                out.insert(name, v);
            }
        }
        // 5: the `coef_buffers.` entries go.
        _ => out.extend(
            state
                .into_iter()
                .filter(|(n, _)| !n.contains("coef_buffers.")),
        ),
    }
    out
}

/// [`migrate`], and whether it changed anything: renamed, dropped or added
/// a tensor (the set of names differs; an order alone is no change), or
/// changed the hyper-parameters.
fn migrate_changed<T: Clone>(
    index: usize,
    state: IndexMap<String, T>,
    hparams: &mut Option<Value>,
) -> (IndexMap<String, T>, bool) {
    let names: Vec<String> = state.keys().cloned().collect();
    let before = hparams.clone();
    let out = migrate(index, state, hparams);
    let renamed = out.len() != names.len() || names.iter().any(|n| !out.contains_key(n));
    (out, renamed || *hparams != before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shimmer_formats::torch_zip::fixtures::*;

    fn shared(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../../shared/interop/lightning")
            .join(name)
    }

    #[test]
    fn a_lightning_checkpoint_reads_as_its_state_dict_and_hparams() {
        let ckpt = shared("gw.ckpt");
        assert!(is_torch_checkpoint(&ckpt).unwrap());
        assert!(!is_torch_checkpoint(&shared("gw_state_dict.safetensors")).unwrap());
        let got = read(&ckpt).unwrap();
        let want =
            candle_core::safetensors::load(shared("gw_state_dict.safetensors"), &Device::Cpu)
                .unwrap();
        assert_eq!(got.tensors.len(), 73);
        assert_eq!(want.len(), 73);
        for (name, w) in &want {
            let g = &got.tensors[name];
            assert_eq!((g.dims(), g.dtype()), (w.dims(), w.dtype()), "{name}");
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(g), bits(w), "{name}");
        }
        let hp = got.hyper_parameters.unwrap();
        assert_eq!(hp["workspace_dim"], 16);
        assert_eq!(hp["loss_coefs"]["contrastives"], 0.01);
        assert_eq!(hp["loss_coefs"]["translations"], 1.0);
        assert_eq!(
            hp["fusion_activation_fn"],
            serde_json::json!({"__global__": "torch.tanh"})
        );
        assert_eq!(got.lightning_version.as_deref(), Some("2.6.6"));
        // It records no migrations (no SaveMigrations callback), so
        // migrate-ckpt would run all five; on today's layout they change
        // nothing (the tensors above are the file's, bit for bit), so none
        // is reported as applied.
        assert!(
            got.migrations_applied.is_empty(),
            "{:?}",
            got.migrations_applied
        );
    }

    #[test]
    fn a_plain_state_dict_reads_in_every_dtype_in_order_without_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = plain_state_dict(dir.path());
        let got = read(&path).unwrap();
        let names: Vec<&str> = got.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["z.half", "a.double", "m.num_batches_tracked", "b.mask"]
        );
        let t = &got.tensors;
        assert_eq!(t["z.half"].to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert_eq!(t["a.double"].to_vec2::<f32>().unwrap(), [[3.0], [7.0]]);
        assert_eq!(t["m.num_batches_tracked"].dtype(), DType::I64);
        assert_eq!(t["m.num_batches_tracked"].to_scalar::<i64>().unwrap(), -1);
        assert_eq!(t["b.mask"].to_vec1::<u8>().unwrap(), [1, 0]);
        assert!(got.hyper_parameters.is_none() && got.lightning_version.is_none());
        assert!(got.migrations_applied.is_empty());
    }

    #[test]
    fn each_migration_turns_the_older_layout_into_the_next() {
        let run = |i: usize, names: &[&str], hp: &mut Option<Value>| -> Vec<String> {
            let sd = names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.to_string(), k))
                .collect();
            let (out, changed) = migrate_changed(i, sd, hp);
            assert!(changed, "migration {i} changes nothing on {names:?}");
            out.into_keys().collect()
        };
        let mut none = None;
        assert_eq!(
            run(
                0,
                &[
                    "gw_mod.encoders.resnet.0.weight",
                    "gw_mod.decoders.bge.1.bias",
                    "x"
                ],
                &mut none
            ),
            [
                "gw_mod.gw_interfaces.resnet.encoder.0.weight",
                "gw_mod.gw_interfaces.bge.decoder.1.bias",
                "x"
            ]
        );
        let mut hp = Some(serde_json::json!({"gw_interfaces": {}, "workspace_dim": 16}));
        run(1, &[], &mut hp);
        assert_eq!(hp, Some(serde_json::json!({"workspace_dim": 16})));
        let old = [
            "gw_mod.gw_interfaces.v.domain_module.w",
            "gw_mod.gw_interfaces.v.encoder.layers.0.weight",
            "gw_mod.gw_interfaces.t.decoder.layers.1.bias",
            "gw_mod.gw_interfaces.t.other",
            "loss_mod.contrastive_fn.logit_scale",
        ];
        assert_eq!(
            run(2, &old, &mut none),
            [
                "gw_mod.gw_encoders.v.layers.0.weight",
                "gw_mod.gw_decoders.t.layers.1.bias",
                "loss_mod.contrastive_fn.logit_scale"
            ]
        );
        assert_eq!(
            run(
                3,
                &[
                    "loss_coefs.buffer.cycles",
                    "domain_mods.v.w",
                    "gw_mod.gw_encoders.v.0.w"
                ],
                &mut none
            ),
            [
                "loss_mod.gw_mod.domain_mods.v.w",
                "gw_mod.domain_mods.v.w",
                "gw_mod.gw_encoders.v.0.w"
            ]
        );
        assert_eq!(run(4, &["coef_buffers.cycles", "a.b"], &mut none), ["a.b"]);
        // On today's layout none of them changes anything.
        let today: IndexMap<String, usize> = [
            "gw_mod.gw_encoders.v.layers.0.weight",
            "gw_mod.domain_mods.v.w",
            "loss_mod.gw_mod.domain_mods.v.w",
        ]
        .iter()
        .enumerate()
        .map(|(k, n)| (n.to_string(), k))
        .collect();
        let mut hp = Some(serde_json::json!({"workspace_dim": 16}));
        for i in 0..MIGRATIONS.len() {
            let (out, changed) = migrate_changed(i, today.clone(), &mut hp);
            assert!(!changed && out == today, "migration {i}");
        }
        // Which are due: those after the last recorded, all without a record.
        let rec = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(first_due(None), 0);
        assert_eq!(
            first_due(Some(&rec(&["1_add_gw_interfaces", "3_del_gw_interfaces"]))),
            3
        );
        assert_eq!(first_due(Some(&rec(&["unknown"]))), 0);
        assert_eq!(first_due(Some(&rec(&MIGRATIONS))), 5);
    }
}
