//! Loading domain plugins: finding the library, checking its ABI, and safe
//! handles to the domains it creates.
//!
//! ```no_run
//! use shimmer_plugin_host::PluginLibrary;
//! use shimmer_plugin_api::Split;
//!
//! let lib = PluginLibrary::find("random-vectors", &[])?;
//! let domain = lib.create_domain("vectors", r#"{"dim": 8, "seed": 0}"#)?;
//! let mut items = vec![0.0; 2 * domain.info().item_len];
//! domain.load(Split::Train, &[0, 1], &mut items)?;
//! # Ok::<(), shimmer_plugin_host::PluginError>(())
//! ```

mod domain;
mod error;
pub mod inspect;
mod library;
mod search;

pub use domain::DomainHandle;
pub use error::PluginError;
pub use library::PluginLibrary;
pub use search::{PLUGIN_PATH_ENV, resolve};
