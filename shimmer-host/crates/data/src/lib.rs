//! The data pipeline: from domain sources to batches of latents
//! `group -> domain -> [batch, latent_dim]`, with shimmer's and Lightning's
//! semantics.
//!
//! * [`source`]: where latents come from ([`ItemSource`]; plugins, memory).
//! * [`group`]: a group of paired domains over chosen items of a split.
//! * [`repeated`]: shimmer's `RepeatedDataset`.
//! * [`sampler`]: one group's seeded, per-epoch shuffled batches.
//! * [`combined`]: Lightning's `CombinedLoader` modes, as a batch plan.
//! * [`loader`]: worker threads filling the plan, in order, bounded ahead.
//! * [`cache`]: latents of frozen domains encoded once (memory, files).
//! * [`batch`]: host batches and their tensors.
//! * [`config`]: the experiment's `data:` section.
//! * [`pipeline`]: all of the above from an experiment.
//!
//! ```
//! use shimmer_data::{DataConfig, DataPipeline, ItemSource, MemorySource, Sources};
//! use std::sync::Arc;
//!
//! let src = |dim| -> Arc<dyn ItemSource> {
//!     Arc::new(MemorySource::from_fn(dim, [100, 10, 10], |_, i, c| (i + c as u64) as f32))
//! };
//! let sources: Sources = [("v".to_string(), src(4)), ("t".to_string(), src(2))].into_iter().collect();
//! let config: DataConfig = serde_norway::from_str(
//!     "batch_size: 8\ngroups: [{ domains: [v, t], items: { count: 16 } }, { domains: [v] }, { domains: [t] }]",
//! ).unwrap();
//! let data = DataPipeline::build(&config, &sources, 0, None).unwrap();
//! for batch in data.train.epoch(0).unwrap() {
//!     let batch = batch.unwrap();
//!     assert_eq!(batch.groups["v,t"].domains["t"].shape(), [8, 2]);
//! }
//! ```

pub mod batch;
mod cache;
mod combined;
pub mod config_position;
pub mod group;
mod loader;
mod model_source;
mod pipeline;
mod repeated;
mod sampler;
mod source;
pub mod swap;

pub use batch::{DomainBatch, GroupBatch, HostBatch};
pub use cache::{CachedSource, cache_sources};
pub use combined::{BatchPlan, CombinedSampler, PlanPart};
pub use group::GroupDataset;
pub use loader::{DataLoader, Epoch};
pub use model_source::ModelSource;
pub use pipeline::{DataPipeline, open_sources};
pub use repeated::RepeatedDataset;
pub use sampler::GroupSampler;
pub use shimmer_config::data::{
    CacheConfig, CombineMode, DataConfig, DomainSplitItems, EvalSetConfig, GroupConfig, Items,
    RepeatMode, Select,
};
pub use source::{ItemSource, MemorySource, PluginBuild, PluginSource, Rendered, Sources};
