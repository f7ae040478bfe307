//! The safe side of a plugin: the traits a plugin author implements.

use crate::types::{DomainInfo, LossSpec, Split};
use std::fmt;

/// An error a plugin reports to the host; its message reaches the user as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    message: String,
}

impl PluginError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// Parses a domain's config (the JSON the host passes to
/// [`Plugin::create_domain`]) into the plugin's own settings type, with an
/// error that says which setting is wrong.
pub fn parse_config<T: serde::de::DeserializeOwned>(config_json: &str) -> Result<T, PluginError> {
    serde_json::from_str(config_json).map_err(|e| PluginError::new(format!("invalid config: {e}")))
}

/// One domain instance: its data, and how to move between raw items and
/// latents. The host calls it from several loader threads at once.
pub trait Domain: Send + Sync + 'static {
    /// Dimensions and split sizes.
    fn info(&self) -> DomainInfo;

    /// Writes the raw items at `indices` of `split` into `out`, item after
    /// item (`out.len() == indices.len() * info().item_len`). The host checks
    /// that every index is below the split size before calling.
    fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError>;

    /// Encodes raw items into latents (`raw` holds whole items; `latents`
    /// has room for as many latent vectors). Default: latents are the raw
    /// items (requires `item_len == latent_dim`). A domain that implements
    /// it is always called: the host learns so when the domain is created
    /// (by one call with no items), whatever [`DomainInfo::has_encode`] says.
    fn encode(&self, raw: &[f32], latents: &mut [f32]) -> Result<(), PluginError> {
        copy_identity(raw, latents)
    }

    /// Decodes latents back into raw items. Default: the identity. As for
    /// [`Domain::encode`], an implementation is always used.
    fn decode(&self, latents: &[f32], raw: &mut [f32]) -> Result<(), PluginError> {
        copy_identity(latents, raw)
    }

    /// How the GW's predictions of this domain's latents are scored.
    /// Default: MSE over the whole latent vector in every loss.
    fn loss_spec(&self) -> LossSpec {
        LossSpec::mse(self.info().latent_dim)
    }

    /// `(width, height)` of the RGB image [`Domain::render`] draws one raw
    /// item as, for domains that can show their items (TensorBoard's image
    /// grids: reconstructions, translations). Default: `None`, no drawing.
    fn render_size(&self) -> Option<(u32, u32)> {
        None
    }

    /// Draws raw items (`raw.len() == n * item_len`) as 8-bit RGB images of
    /// [`Domain::render_size`], rows top to bottom, pixels interleaved,
    /// image after image (`out.len() == n * width * height * 3`). Called
    /// only when `render_size` is `Some`; items may be predictions, so draw
    /// what any values mean (clamp, round) rather than refuse them.
    fn render(&self, raw: &[f32], out: &mut [u8]) -> Result<(), PluginError> {
        let _ = (raw, out);
        Err(PluginError::new("this domain does not draw its items"))
    }
}

thread_local! {
    /// Set when a default (identity) `encode` or `decode` runs on this
    /// thread: how the export shim tells which of the two a domain
    /// implements itself. No `Drop`, so no thread-exit destructor.
    static IDENTITY_RAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calls in `f` ran a default `encode`/`decode` (for the
/// export shim).
pub(crate) fn ran_identity(f: impl FnOnce()) -> bool {
    let before = IDENTITY_RAN.replace(false);
    f();
    IDENTITY_RAN.replace(before)
}

fn copy_identity(from: &[f32], to: &mut [f32]) -> Result<(), PluginError> {
    IDENTITY_RAN.set(true);
    if from.len() != to.len() {
        return Err(PluginError::new(format!(
            "identity encode/decode needs item_len == latent_dim (got {} values for {})",
            from.len(),
            to.len()
        )));
    }
    to.copy_from_slice(from);
    Ok(())
}

/// A plugin: a name, a version and the domain kinds it can create.
pub trait Plugin: 'static {
    /// Plugin name, as users refer to it.
    const NAME: &'static str;
    /// Plugin version (use `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// Domain kinds [`Plugin::create_domain`] accepts.
    const DOMAIN_KINDS: &'static [&'static str];

    /// Creates a domain of `kind` from its config, a JSON object (see
    /// [`parse_config`]). Reject bad settings with an error naming them.
    fn create_domain(kind: &str, config_json: &str) -> Result<Box<dyn Domain>, PluginError>;
}
