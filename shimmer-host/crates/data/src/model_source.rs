//! A domain's latents passed through its frozen domain model: the model
//! becomes part of the data, so the latent cache stores its outputs and
//! each item is encoded once (shimmer caches frozen domains the same way).
//!
//! Under `--watch` the run's latent cache is off (a plugin may be swapped)
//! and the watched plugin's latents are cached by the watcher; a
//! [`ModelSource::memoized`] source then keeps the model's outputs itself,
//! item by item as they are first loaded, and drops them when the plugin
//! behind it is swapped ([`ItemSource::generation`]).

use super::source::ItemSource;
use anyhow::{Context, Result};
use candle_core::Tensor;
use shimmer_models::domain_model::DomainModel;
use shimmer_plugin_api::Split;
use std::sync::{Arc, RwLock};

/// `inner`'s latents encoded by a frozen `model`.
pub struct ModelSource {
    inner: Arc<dyn ItemSource>,
    model: DomainModel,
    /// Identifies the model's weights in cache keys.
    weights_digest: u64,
    /// The model's outputs kept in memory, when memoized.
    memo: Option<RwLock<Memo>>,
}

/// The model's outputs for one generation of the inner source.
#[derive(Default)]
struct Memo {
    generation: u64,
    /// `[train, val, test]`, allocated when the split is first loaded.
    splits: [Option<SplitMemo>; 3],
}

/// One split's outputs, row-major, and which rows are filled.
struct SplitMemo {
    values: Vec<f32>,
    filled: Vec<bool>,
}

impl ModelSource {
    /// Wraps `inner` (whose latent size must be the model's input size).
    pub fn new(inner: Arc<dyn ItemSource>, model: DomainModel) -> Result<Self> {
        anyhow::ensure!(
            inner.latent_dim() == model.input_dim(),
            "{} gives latents of size {}, but the domain model takes {}",
            inner.describe(),
            inner.latent_dim(),
            model.input_dim()
        );
        let mut bytes = Vec::new();
        for (name, t) in model.params().tensors() {
            bytes.extend_from_slice(name.as_bytes());
            let values = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        Ok(Self {
            inner,
            model,
            weights_digest: super::batch::fnv1a(&bytes),
            memo: None,
        })
    }

    /// Keeps the model's outputs in memory (for sources the run's latent
    /// cache does not hold): an item is encoded once per generation of the
    /// inner source.
    pub fn memoized(mut self) -> Self {
        self.memo = Some(RwLock::new(Memo::default()));
        self
    }

    /// Runs the model on `indices`' latents.
    fn encode(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let n = indices.len();
        let mut raw = vec![0.0f32; n * self.inner.latent_dim()];
        self.inner.load_latents(split, indices, &mut raw)?;
        let device = self.model.params().device();
        let x = Tensor::from_vec(raw, (n, self.inner.latent_dim()), device)?
            .to_dtype(self.model.params().dtype())?;
        let z = self
            .model
            .encode(&x)
            .with_context(|| format!("{}: frozen domain model", self.describe()))?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        out.copy_from_slice(&z);
        Ok(())
    }

    /// Copies `indices`' memoized outputs of `generation` into `out`;
    /// `false` (and nothing copied) unless all of them are there.
    fn recall(
        &self,
        memo: &RwLock<Memo>,
        generation: u64,
        split: Split,
        indices: &[u64],
        out: &mut [f32],
    ) -> bool {
        let m = memo.read().unwrap_or_else(|e| e.into_inner());
        let Some(s) = m.splits[split.code() as usize].as_ref() else {
            return false;
        };
        if m.generation != generation
            || !indices
                .iter()
                .all(|&i| s.filled.get(i as usize) == Some(&true))
        {
            return false;
        }
        super::source::copy_rows(&s.values, self.latent_dim(), split, indices, out).is_ok()
    }

    /// Stores `indices`' outputs (`out`) as those of `generation`, dropping
    /// what an older generation left.
    fn remember(
        &self,
        memo: &RwLock<Memo>,
        generation: u64,
        split: Split,
        indices: &[u64],
        out: &[f32],
    ) {
        let mut m = memo.write().unwrap_or_else(|e| e.into_inner());
        if generation < m.generation {
            return; // a newer generation is already being filled
        }
        if m.generation != generation {
            *m = Memo {
                generation,
                ..Memo::default()
            };
        }
        let dim = self.latent_dim();
        let size = self.inner.split_size(split) as usize;
        let s = m.splits[split.code() as usize].get_or_insert_with(|| SplitMemo {
            values: vec![0.0; size * dim],
            filled: vec![false; size],
        });
        for (row, &i) in out.chunks_exact(dim.max(1)).zip(indices) {
            let i = i as usize;
            if i < s.filled.len() {
                s.values[i * dim..(i + 1) * dim].copy_from_slice(row);
                s.filled[i] = true;
            }
        }
    }
}

impl ItemSource for ModelSource {
    fn latent_dim(&self) -> usize {
        self.model.latent_dim()
    }

    fn split_size(&self, split: Split) -> u64 {
        self.inner.split_size(split)
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let Some(memo) = &self.memo else {
            return self.encode(split, indices, out);
        };
        // Read before the load: outputs are never filed under a generation
        // newer than the data they came from, and any swap since makes the
        // next call drop them.
        let generation = self.inner.generation();
        if self.recall(memo, generation, split, indices, out) {
            return Ok(());
        }
        self.encode(split, indices, out)?;
        self.remember(memo, generation, split, indices, out);
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn cache_key(&self) -> Option<String> {
        self.inner.cache_key().map(|k| {
            format!(
                "{k}\nmodel={}\nweights={:016x}",
                self.model.config(),
                self.weights_digest
            )
        })
    }

    fn plugin_build(&self) -> Option<crate::source::PluginBuild> {
        self.inner.plugin_build()
    }

    fn describe(&self) -> String {
        format!(
            "{} through a frozen {}",
            self.inner.describe(),
            self.model.config()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySource;
    use candle_core::Device;
    use shimmer_models::domain_model::DomainModelConfig;

    #[test]
    fn encodes_with_the_model_and_keys_the_cache_by_its_weights() {
        let inner: Arc<dyn ItemSource> = Arc::new(
            MemorySource::from_fn(3, [4, 0, 0], |_, i, j| (i * 3 + j as u64) as f32)
                .with_cache_key("mem"),
        );
        let cfg = DomainModelConfig::Linear { latent_dim: 5 };
        let model = DomainModel::new(&cfg, 3, &Device::Cpu, 7).unwrap();
        let x = Tensor::new(&[[3f32, 4., 5.], [9., 10., 11.]], &Device::Cpu).unwrap();
        let want = model
            .encode(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let src = ModelSource::new(inner.clone(), model).unwrap();
        assert_eq!(src.latent_dim(), 5);
        let mut out = vec![0.0; 10];
        src.load_latents(Split::Train, &[1, 3], &mut out).unwrap();
        assert_eq!(out, want);

        let other = DomainModel::new(&cfg, 3, &Device::Cpu, 8).unwrap();
        let other = ModelSource::new(inner.clone(), other).unwrap();
        assert_ne!(src.cache_key(), other.cache_key());
        assert!(src.cache_key().unwrap().starts_with("mem\n"));

        let wrong = DomainModel::new(&cfg, 4, &Device::Cpu, 7).unwrap();
        assert!(ModelSource::new(inner, wrong).is_err());
    }

    /// Counts loads and stands for a plugin that can be swapped.
    struct Counting {
        data: MemorySource,
        loads: std::sync::atomic::AtomicUsize,
        generation: std::sync::atomic::AtomicU64,
        offset: std::sync::Mutex<f32>,
    }

    impl ItemSource for Counting {
        fn latent_dim(&self) -> usize {
            self.data.latent_dim()
        }
        fn split_size(&self, split: Split) -> u64 {
            self.data.split_size(split)
        }
        fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.data.load_latents(split, indices, out)?;
            let offset = *self.offset.lock().unwrap();
            out.iter_mut().for_each(|v| *v += offset);
            Ok(())
        }
        fn generation(&self) -> u64 {
            self.generation.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn memoized_outputs_are_computed_once_per_generation() {
        let inner = Arc::new(Counting {
            data: MemorySource::from_fn(3, [6, 2, 0], |_, i, j| (i * 3 + j as u64) as f32),
            loads: Default::default(),
            generation: Default::default(),
            offset: std::sync::Mutex::new(0.0),
        });
        let cfg = DomainModelConfig::Linear { latent_dim: 2 };
        let model = DomainModel::new(&cfg, 3, &Device::Cpu, 7).unwrap();
        let plain = ModelSource::new(inner.clone(), model.clone()).unwrap();
        let memo = ModelSource::new(inner.clone(), model).unwrap().memoized();
        let loads = || inner.loads.load(std::sync::atomic::Ordering::SeqCst);
        let get = |src: &ModelSource, split, idx: &[u64]| {
            let mut out = vec![0.0; idx.len() * 2];
            src.load_latents(split, idx, &mut out).unwrap();
            out
        };

        let want = get(&plain, Split::Train, &[4, 1]);
        let before = loads();
        assert_eq!(get(&memo, Split::Train, &[4, 1]), want);
        assert_eq!(
            get(&memo, Split::Train, &[1, 4]),
            [&want[2..], &want[..2]].concat()
        );
        assert_eq!(get(&memo, Split::Train, &[4]), want[..2]);
        assert_eq!(loads(), before + 1, "one load for three requests");
        // An item not seen yet, another split: loaded.
        get(&memo, Split::Train, &[4, 5]);
        get(&memo, Split::Val, &[1]);
        assert_eq!(loads(), before + 3);

        // A swap: new data, outputs recomputed.
        *inner.offset.lock().unwrap() = 10.0;
        inner
            .generation
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let fresh = get(&plain, Split::Train, &[4, 1]);
        assert_ne!(fresh, want);
        assert_eq!(get(&memo, Split::Train, &[4, 1]), fresh);
        assert_eq!(get(&memo, Split::Train, &[4, 1]), fresh);
        assert_eq!(memo.generation(), 1);
    }
}
