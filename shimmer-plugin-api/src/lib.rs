//! The stable plugin interface of shimmer-rs.
//!
//! A domain plugin is a `cdylib` crate that depends only on this crate. It
//! implements [`Plugin`] (who it is, which domain kinds it creates) and
//! [`Domain`] (a domain's dimensions, split sizes, data, optional
//! encode/decode and loss spec), then calls [`export_plugin!`]. The macro
//! generates the C ABI of [`abi`]: every call catches panics and reports
//! errors with a message, so a failing plugin never takes the host down.
//! Plugin authors write no `unsafe`.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! shimmer-plugin-api = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//! ```
//! use shimmer_plugin_api::{
//!     export_plugin, parse_config, Domain, DomainInfo, Plugin, PluginError, Split, SplitSizes,
//! };
//!
//! /// Items are constant vectors whose value is the item index.
//! struct Ramp { dim: usize, n: u64 }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct RampConfig { dim: usize, n: u64 }
//!
//! impl Domain for Ramp {
//!     fn info(&self) -> DomainInfo {
//!         DomainInfo {
//!             latent_dim: self.dim,
//!             item_len: self.dim,
//!             split_sizes: SplitSizes { train: self.n, val: self.n / 10, test: self.n / 10 },
//!             has_encode: false,
//!             has_decode: false,
//!         }
//!     }
//!
//!     fn load(&self, _split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
//!         for (item, &i) in out.chunks_mut(self.dim).zip(indices) {
//!             item.fill(i as f32);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! struct RampPlugin;
//!
//! impl Plugin for RampPlugin {
//!     const NAME: &'static str = "ramp";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DOMAIN_KINDS: &'static [&'static str] = &["ramp"];
//!
//!     fn create_domain(_kind: &str, config_json: &str) -> Result<Box<dyn Domain>, PluginError> {
//!         let c: RampConfig = parse_config(config_json)?;
//!         if c.dim == 0 {
//!             return Err("`dim` must be at least 1".into());
//!         }
//!         Ok(Box::new(Ramp { dim: c.dim, n: c.n }))
//!     }
//! }
//!
//! export_plugin!(RampPlugin);
//! # fn main() {
//! #     assert!(!shimmer_plugin_entry().is_null());
//! # }
//! ```
//!
//! Build it with `cargo build --release`; point an experiment's domain at it
//! with `plugin: ramp` (searched on `SHIMMER_PLUGIN_PATH` and beside the
//! `shimmer` binary) or with the path of the `.so`.
//!
//! # Rules for plugin authors
//! * Domains are shared between loader threads: keep them `Send + Sync`
//!   (immutable after creation, or guarded by locks).
//! * Spawn no threads that outlive a call, and keep no work running after
//!   a call returns: the host may drop your domain (and, after a hot swap,
//!   your whole library copy) as soon as no call is in progress.
//! * The host never unmaps a loaded library. A Rust `cdylib` is not marked
//!   `NODELETE`, so `dlclose` would really unmap it, but its own std
//!   registers thread-exit destructors inside it (pthread keys, e.g. through
//!   `std::thread::current` on the panic path) that glibc does not track: a
//!   host thread exiting after the unmap would jump into unmapped code.
//!   So every hot swap (`shimmer run --watch`) leaves the old copy mapped,
//!   inert, until the process exits; the host destroys its domains, deletes
//!   its file copy and gives back its clean pages (code and read-only data).
//!   Measured over 100 reloads of a test plugin: threads flat, resident
//!   memory +35 KiB per reload for a library mapping 624 KiB.
//! * Hence: keep large data in the domain (freed when the host drops it),
//!   never in `static`s, `thread_local!`s or leaked allocations, which live
//!   as long as the mapping, i.e. are paid again at every reload; and make
//!   `create_domain` cheap to repeat, since a hot swap creates the domains
//!   anew (the host also probes a few items with `load` before using a new
//!   build, so `load` must not have side effects).

pub mod abi;
#[doc(hidden)]
pub mod export;
pub mod plugin;
pub mod types;

pub use plugin::{Domain, Plugin, PluginError, parse_config};
pub use types::{
    DomainInfo, LossKind, LossSegment, LossSpec, LossUse, LossWeights, Split, SplitSizes,
};
