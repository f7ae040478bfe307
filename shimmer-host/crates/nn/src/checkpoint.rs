//! Checkpoints: safetensors files holding the weights under shimmer's
//! PyTorch state-dict names (`gw_mod.gw_encoders.<d>.<i>.weight`, …,
//! `loss_mod.contrastive_fn.logit_scale`), so they load into the Python
//! library and back, plus — in a full checkpoint — the optimiser state
//! (`optimizer.state.<param>.exp_avg|exp_avg_sq|step`) and the scheduler step
//! (`optimizer.scheduler.step`), so training resumes exactly.
//!
//! Files are written to a temporary file beside the target and renamed, so
//! a crash never leaves a truncated checkpoint. Every file carries the
//! checksum of its tensors and a writer entry in its metadata
//! ([`shimmer_formats::checksum`]); every load goes through one reader,
//! which refuses a file whose tensors do not match its checksum, and one of
//! shimmer's without its checksum (altered), while a plain safetensors file
//! from another tool still loads. Loading checks every name and shape and
//! names the offending tensor.
//!
//! ```no_run
//! # fn demo(gw: &shimmer_nn::GlobalWorkspace, opt: &mut shimmer_nn::optim::Optimizer) -> anyhow::Result<()> {
//! use shimmer_nn::checkpoint;
//! checkpoint::save("last.safetensors".as_ref(), gw.params(), Some(opt))?;
//! checkpoint::load("last.safetensors".as_ref(), gw.params(), Some(opt))?;
//! # Ok(()) }
//! ```

use crate::optim::Optimizer;
use crate::params::ParamStore;
use anyhow::{Context, Result};
use candle_core::Tensor;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::path::Path;

/// Prefix of every optimiser entry in a full checkpoint.
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Prefix of the trainer's bookkeeping (step, epoch, best value, RNG
/// positions) in a training checkpoint.
pub const TRAINER_PREFIX: &str = "trainer.";

/// Writes the weights (and the optimiser state when given) to `path`.
pub fn save(path: &Path, params: &ParamStore, optimizer: Option<&Optimizer>) -> Result<()> {
    save_training(path, params, optimizer, &IndexMap::new())
}

/// Writes weights, optimiser state and the trainer's own `trainer.*`
/// entries, so a run resumes exactly where it stopped.
pub fn save_training(
    path: &Path,
    params: &ParamStore,
    optimizer: Option<&Optimizer>,
    trainer: &IndexMap<String, Tensor>,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = params.tensors().into_iter().collect();
    if let Some(opt) = optimizer {
        tensors.extend(opt.state_dict()?);
    }
    for (name, t) in trainer {
        debug_assert!(name.starts_with(TRAINER_PREFIX));
        tensors.insert(name.clone(), t.clone());
    }
    write_atomic(path, &tensors)
}

/// Reads a training checkpoint into `params` and `optimizer` and returns its
/// `trainer.*` entries.
pub fn load_training(
    path: &Path,
    params: &ParamStore,
    optimizer: &mut Optimizer,
) -> Result<HashMap<String, Tensor>> {
    let tensors = read(path, params)?;
    let origin = path.display().to_string();
    params.load(&tensors, &origin, &[OPTIMIZER_PREFIX, TRAINER_PREFIX])?;
    optimizer.load_state_dict(&tensors, &origin)?;
    Ok(tensors
        .into_iter()
        .filter(|(k, _)| k.starts_with(TRAINER_PREFIX))
        .collect())
}

/// Every tensor of the safetensors file `path`, on the CPU, through the one
/// checkpoint reader (regular file, checksum): what [`crate::weights`]
/// reads a `.safetensors` file with.
///
/// # Errors
/// An unreadable or corrupt file, or one of shimmer's that was altered.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    read_on(path, &candle_core::Device::Cpu)
}

fn read(path: &Path, params: &ParamStore) -> Result<HashMap<String, Tensor>> {
    read_on(path, params.device())
}

/// The one reader of checkpoints: a regular file, its checksum verified
/// (required in the files shimmer writes), then its tensors on `device`.
fn read_on(path: &Path, device: &candle_core::Device) -> Result<HashMap<String, Tensor>> {
    // A regular file only: a path to a device or FIFO would be read forever.
    let file = shimmer_formats::file::map_regular(path)
        .map_err(|e| anyhow::anyhow!("cannot read checkpoint {e}"))?;
    shimmer_formats::checksum::verify(path, file.bytes())
        .map_err(|e| anyhow::anyhow!("checkpoint {e}"))?;
    candle_core::safetensors::load_buffer(file.bytes(), device)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))
}

/// Writes only the weights, under shimmer's names.
pub fn save_weights(path: &Path, params: &ParamStore) -> Result<()> {
    save(path, params, None)
}

/// Reads weights into `params` (every parameter required, buffers
/// optional) and, when `optimizer` is given, its state (required then).
pub fn load(path: &Path, params: &ParamStore, optimizer: Option<&mut Optimizer>) -> Result<()> {
    let tensors = read(path, params)?;
    let origin = path.display().to_string();
    params.load(&tensors, &origin, &[OPTIMIZER_PREFIX, TRAINER_PREFIX])?;
    if let Some(opt) = optimizer {
        opt.load_state_dict(&tensors, &origin)?;
    }
    Ok(())
}

/// Reads only the weights (any optimiser entries are ignored).
pub fn load_weights(path: &Path, params: &ParamStore) -> Result<()> {
    load(path, params, None)
}

/// Writes `tensors` with their checksum in the file's metadata (see
/// [`shimmer_formats::checksum`]), refusing non-finite values: a checkpoint
/// is only worth keeping if training can go on from it. Each tensor is
/// brought to the host once; the check, the checksum and the file all read
/// that copy.
fn write_atomic(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_tensors(path, tensors, HashMap::new(), true)
}

/// Writes `tensors` as one safetensors file at `path`, atomically, with
/// the mode the umask gives (as every file a run writes), refusing
/// non-finite values when `finite_only` (weights; predictions of data
/// allowed to hold NaN may hold it too); its metadata holds `metadata`, the checksum of the
/// tensors and the writer entry (see [`shimmer_formats::checksum`]), so the
/// file is checked like a checkpoint wherever it is read back. Exports and
/// predictions are written by it too.
///
/// # Errors
/// A non-finite value (nothing is written), or a failed write.
pub fn write_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
    finite_only: bool,
) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut sum = shimmer_formats::checksum::TensorChecksum::default();
    let mut host = Vec::with_capacity(names.len());
    for name in names {
        let t = &tensors[name];
        let dtype = safetensors::View::dtype(&t);
        let bytes = safetensors::View::data(&t).into_owned();
        ensure_finite(name, dtype, &bytes, finite_only).with_context(|| {
            format!(
                "not writing {}: the one written before is kept",
                path.display()
            )
        })?;
        sum.add(name, &format!("{dtype:?}"), t.dims(), &bytes);
        host.push((name.as_str(), dtype, t.dims().to_vec(), bytes));
    }
    let views = host
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (*name, view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut all = metadata;
    all.extend(shimmer_formats::checksum::metadata(&sum));
    // Serialised here and written through the one atomic writer, whose
    // temporary file takes the umask's mode (safetensors' own file writer
    // makes a private temporary file and renames it: mode 0600).
    let bytes = safetensors::serialize(views, Some(all))?;
    drop(host);
    shimmer_sys::fs::write_atomic(path, &bytes)
}

/// Refuses a floating-point tensor (little-endian `bytes` of `dtype`)
/// holding NaN or an infinity: those are the values whose exponent bits
/// are all set.
fn ensure_finite(name: &str, dtype: safetensors::Dtype, bytes: &[u8], check: bool) -> Result<()> {
    if !check {
        return Ok(());
    }
    use safetensors::Dtype;
    let non_finite = match dtype {
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .find(|b| b & 0x7FF0_0000_0000_0000 == 0x7FF0_0000_0000_0000)
            .map(|b| f64::from_bits(b).to_string()),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
            .find(|b| b & 0x7F80_0000 == 0x7F80_0000)
            .map(|b| f32::from_bits(b).to_string()),
        Dtype::F16 | Dtype::BF16 => {
            let exponent = if dtype == Dtype::F16 { 0x7C00 } else { 0x7F80 };
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .find(|b| b & exponent == exponent)
                .map(|b| {
                    let mantissa = b & !(exponent | 0x8000);
                    if mantissa == 0 { "inf" } else { "NaN" }.to_string()
                })
        }
        _ => None,
    };
    if let Some(v) = non_finite {
        anyhow::bail!(
            "`{name}` holds a non-finite value ({v}): the weights or optimiser state \
             diverged"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, DomainSpec, GlobalWorkspace, GroupKey};
    use candle_core::Device;
    use shimmer_config::{LossConfig, OptimConfig, WorkspaceConfig};

    fn model(seed: u64) -> GlobalWorkspace {
        let ws: WorkspaceConfig = serde_norway::from_str(
            "{flavour: two_domains, dim: 4, encoders: {hidden: 5}, decoders: {hidden: 5}, \
             contrastive: {learn: true}}",
        )
        .unwrap();
        let doms = [DomainSpec::mse("a", 3), DomainSpec::mse("b", 2)];
        GlobalWorkspace::new(&ws, &LossConfig::default(), &doms, &Device::Cpu, seed).unwrap()
    }

    fn batch(k: u64) -> Batch {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((4, 3))
            .unwrap();
        let a = ((a * 0.1).unwrap() + k as f64).unwrap().sin().unwrap();
        let b = Tensor::arange(0f32, 8.0, &dev)
            .unwrap()
            .reshape((4, 2))
            .unwrap()
            .cos()
            .unwrap();
        let mut out = Batch::new();
        out.insert(GroupKey::new(["a"]), [("a".to_string(), a.clone())].into());
        out.insert(GroupKey::new(["b"]), [("b".to_string(), b.clone())].into());
        out.insert(
            GroupKey::new(["a", "b"]),
            [("a".to_string(), a), ("b".to_string(), b)].into(),
        );
        out
    }

    fn train(gw: &GlobalWorkspace, opt: &mut Optimizer, steps: std::ops::Range<u64>) {
        for k in steps {
            let out = gw.step_loss(&batch(k)).unwrap();
            opt.step(&out.loss.backward().unwrap()).unwrap();
        }
    }

    #[test]
    fn resuming_from_a_checkpoint_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let cfg = OptimConfig::default();
        let gw = model(1);
        let mut opt = Optimizer::new(gw.params().params(), &cfg, Some(6)).unwrap();
        train(&gw, &mut opt, 0..3);
        save(&path, gw.params(), Some(&opt)).unwrap();
        train(&gw, &mut opt, 3..6);

        let gw2 = model(2);
        let mut opt2 = Optimizer::new(gw2.params().params(), &cfg, Some(6)).unwrap();
        load(&path, gw2.params(), Some(&mut opt2)).unwrap();
        assert_eq!(opt2.steps_done(), 3);
        train(&gw2, &mut opt2, 3..6);
        for (name, t) in gw.params().tensors() {
            let u = &gw2.params().tensors()[&name];
            let d = shimmer_kernels::test_util::max_abs_diff(&t, u);
            assert_eq!(d, 0.0, "{name}");
        }
    }

    #[test]
    fn weights_only_files_load_and_bad_files_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let gw = model(1);
        save_weights(&path, gw.params()).unwrap();
        let gw2 = model(2);
        load_weights(&path, gw2.params()).unwrap();
        let mut opt =
            Optimizer::new(gw2.params().params(), &OptimConfig::default(), Some(6)).unwrap();
        let err = format!(
            "{:#}",
            load(&path, gw2.params(), Some(&mut opt)).unwrap_err()
        );
        assert!(err.contains("missing optimizer state"), "{err}");
        let mut t = gw.params().tensors();
        t.insert(
            "gw_mod.gw_encoders.a.0.weight".into(),
            Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let t: HashMap<_, _> = t.into_iter().collect();
        candle_core::safetensors::save(&t, &path).unwrap();
        let err = format!("{:#}", load_weights(&path, gw2.params()).unwrap_err());
        assert!(
            err.contains("gw_mod.gw_encoders.a.0.weight") && err.contains("[5, 3]"),
            "{err}"
        );
    }

    #[test]
    fn a_checkpoint_whose_bytes_changed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let gw = model(1);
        save_weights(&path, gw.params()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The last byte belongs to a tensor's data, after the header.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", load_weights(&path, model(2).params()).unwrap_err());
        assert!(
            err.contains("ck.safetensors") && err.contains("is corrupt"),
            "{err}"
        );
    }

    /// Renames each `from` to its `to` (same length) in the file's header,
    /// so the header length stays valid, and flips the last byte (a
    /// weight's).
    fn strip_and_flip(path: &Path, renames: &[(&str, &str)]) {
        let mut bytes = std::fs::read(path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = &mut bytes[8..8 + header_len];
        for (from, to) in renames {
            assert_eq!(from.len(), to.len());
            let at = header
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            header[at..at + to.len()].copy_from_slice(to.as_bytes());
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(path, &bytes).unwrap();
    }

    #[test]
    fn a_checkpoint_stripped_of_its_checksum_is_refused_on_every_load() {
        use shimmer_formats::checksum::{CHECKSUM_KEY, WRITER_KEY};
        let dir = tempfile::tempdir().unwrap();
        let cfg = OptimConfig::default();
        let gw = model(1);
        let mut opt = Optimizer::new(gw.params().params(), &cfg, Some(6)).unwrap();
        train(&gw, &mut opt, 0..2);
        let weights = dir.path().join("w.safetensors");
        save_weights(&weights, gw.params()).unwrap();
        strip_and_flip(&weights, &[(CHECKSUM_KEY, "shimmer.crc32_")]);
        let training = dir.path().join("last.safetensors");
        let trainer = IndexMap::from([(
            format!("{TRAINER_PREFIX}step"),
            Tensor::new(&[2i64], &Device::Cpu).unwrap(),
        )]);
        save_training(&training, gw.params(), Some(&opt), &trainer).unwrap();
        // Both keys out of the `shimmer.` namespace: the trainer's and the
        // optimiser's entries still say whose file it is.
        strip_and_flip(
            &training,
            &[
                (CHECKSUM_KEY, "xhimmer.crc32c"),
                (WRITER_KEY, "xhimmer.writer"),
            ],
        );
        let gw2 = model(2);
        let mut opt2 = Optimizer::new(gw2.params().params(), &cfg, Some(6)).unwrap();
        let errors = [
            format!("{:#}", load_weights(&weights, gw2.params()).unwrap_err()),
            format!("{:#}", load_weights(&training, gw2.params()).unwrap_err()),
            format!(
                "{:#}",
                load(&training, gw2.params(), Some(&mut opt2)).unwrap_err()
            ),
            format!(
                "{:#}",
                load_training(&training, gw2.params(), &mut opt2).unwrap_err()
            ),
        ];
        for err in errors {
            assert!(
                err.starts_with("checkpoint ")
                    && err.contains(".safetensors: has no checksum")
                    && err.contains("it was altered or truncated"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_state_dict_of_another_tool_loads_without_a_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("from_python.safetensors");
        let gw = model(1);
        // What `safetensors.torch.save_file` writes: `format: pt` only.
        let host: Vec<(String, Vec<u8>, Vec<usize>)> = gw
            .params()
            .tensors()
            .into_iter()
            .map(|(n, t)| {
                let bytes = safetensors::View::data(&&t).into_owned();
                (n, bytes, t.dims().to_vec())
            })
            .collect();
        let views = host.iter().map(|(n, b, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.clone(), b)
                .unwrap();
            (n.as_str(), view)
        });
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        let gw2 = model(2);
        load_weights(&path, gw2.params()).unwrap();
        for (name, t) in gw.params().tensors() {
            let u = &gw2.params().tensors()[&name];
            assert_eq!(shimmer_kernels::test_util::max_abs_diff(&t, u), 0.0);
        }
    }

    #[test]
    fn non_finite_values_are_found_in_every_float_dtype() {
        use safetensors::Dtype;
        let check = |dtype, bytes: &[u8]| ensure_finite("t", dtype, bytes, true).is_ok();
        assert!(check(Dtype::F64, &1.5f64.to_le_bytes()));
        assert!(!check(Dtype::F64, &f64::NAN.to_le_bytes()));
        assert!(check(Dtype::F32, &f32::MAX.to_le_bytes()));
        assert!(!check(Dtype::F32, &f32::NEG_INFINITY.to_le_bytes()));
        assert!(check(Dtype::F16, &0x7BFFu16.to_le_bytes())); // largest finite f16
        assert!(!check(Dtype::F16, &0x7C00u16.to_le_bytes())); // +inf
        assert!(check(Dtype::BF16, &0x7F7Fu16.to_le_bytes())); // largest finite bf16
        assert!(!check(Dtype::BF16, &0xFFC0u16.to_le_bytes())); // NaN
        assert!(check(Dtype::I64, &i64::MAX.to_le_bytes()));
    }

    #[test]
    fn non_finite_state_is_never_written_over_a_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let gw = model(1);
        let mut opt =
            Optimizer::new(gw.params().params(), &OptimConfig::default(), Some(6)).unwrap();
        train(&gw, &mut opt, 0..2);
        save(&path, gw.params(), Some(&opt)).unwrap();
        let good = std::fs::read(&path).unwrap();
        // An infinite loss drives the optimiser moments to inf and NaN.
        let mut inf = batch(2);
        let key = GroupKey::new(["a"]);
        let a = Tensor::full(f32::INFINITY, (4, 3), &Device::Cpu).unwrap();
        inf.insert(key, [("a".to_string(), a)].into());
        let out = gw.step_loss(&inf).unwrap();
        opt.step(&out.loss.backward().unwrap()).unwrap();
        let err = format!("{:#}", save(&path, gw.params(), Some(&opt)).unwrap_err());
        assert!(
            err.contains(&format!("not writing {}", path.display())) && err.contains("non-finite"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), good);
    }
}
