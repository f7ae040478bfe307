//! A safe handle to one domain instance living inside a plugin.

#![allow(unsafe_code)] // see the SAFETY comment of each block

use super::{PluginError, PluginLibrary};
use shimmer_plugin_api::abi::{self, DomainInfoC, DomainPtr, LossSegmentC, MsgBuf, Status, StrRef};
use shimmer_plugin_api::{DomainInfo, LossSegment, LossSpec, Split};
use std::sync::Arc;

/// Type of the plugin's `encode` and `decode` functions.
type TranscodeFn = unsafe extern "C" fn(
    DomainPtr,
    *const f32,
    usize,
    usize,
    *mut f32,
    usize,
    *mut MsgBuf,
) -> Status;

/// Room for a plugin's error message.
const MSG_CAPACITY: usize = 4096;

/// A domain created by a plugin. `Send + Sync` and cheap to clone: loader
/// threads share it. Its facts (dims, split sizes, loss spec) are read once
/// at creation; every call checks buffer sizes before entering the plugin.
#[derive(Clone)]
pub struct DomainHandle {
    inner: Arc<Instance>,
}

struct Instance {
    ptr: DomainPtr,
    library: PluginLibrary,
    kind: String,
    info: DomainInfo,
    loss_spec: LossSpec,
    /// `(width, height)` of a drawn item, when the domain draws (minor 1).
    render_size: Option<(u32, u32)>,
}

// SAFETY: the plugin contract requires domains to be `Send + Sync` (the
// `Domain` trait bound enforces it for plugins built with the API crate).
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from this library's `create_domain` and is
        // destroyed once, here; the library outlives this call.
        unsafe { (self.library.functions().destroy_domain)(self.ptr) };
    }
}

impl std::fmt::Debug for DomainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainHandle")
            .field("plugin", &self.plugin_name())
            .field("kind", &self.inner.kind)
            .field("info", &self.inner.info)
            .finish()
    }
}

/// Calls into the plugin with a fresh message buffer and turns a non-OK
/// status into an error naming plugin, kind and operation.
fn call(
    library: &PluginLibrary,
    kind: &str,
    op: &str,
    f: impl FnOnce(*mut MsgBuf) -> Status,
) -> Result<Status, PluginError> {
    // Named while it runs, for the watchdog and Ctrl-C (see shimmer_sys::activity).
    let _doing = shimmer_sys::activity::begin(format!(
        "plugin `{}` (domain `{kind}`): {op}",
        library.name()
    ));
    let mut bytes = vec![0u8; MSG_CAPACITY];
    let mut msg = MsgBuf {
        ptr: bytes.as_mut_ptr(),
        cap: bytes.len(),
        len: 0,
    };
    let status = f(&mut msg);
    if status == abi::STATUS_OK || status == abi::STATUS_BUFFER_TOO_SMALL {
        return Ok(status);
    }
    let len = msg.len.min(MSG_CAPACITY);
    let message = match String::from_utf8_lossy(&bytes[..len]).into_owned() {
        m if m.is_empty() => format!("no message (status {status})"),
        m => m,
    };
    Err(PluginError::Call {
        plugin: library.name().to_string(),
        kind: kind.to_string(),
        op: op.to_string(),
        message,
        panicked: status == abi::STATUS_PANIC,
    })
}

impl DomainHandle {
    /// Creates the domain and reads its facts; see [`PluginLibrary::create_domain`].
    pub(super) fn create(
        library: PluginLibrary,
        kind: &str,
        config_json: &str,
    ) -> Result<Self, PluginError> {
        let f = library.functions();
        let mut ptr: DomainPtr = std::ptr::null_mut();
        call(&library, kind, "create", |msg| {
            // SAFETY: strings and out-pointer are valid for the call.
            unsafe { (f.create_domain)(StrRef::new(kind), StrRef::new(config_json), &mut ptr, msg) }
        })?;
        let invalid = |message: String| PluginError::Invalid {
            plugin: library.name().to_string(),
            message: format!("domain `{kind}`: {message}"),
        };
        if ptr.is_null() {
            return Err(invalid("create returned no domain".to_string()));
        }
        // From here on the instance owns `ptr`: an error below destroys it.
        let mut instance = Instance {
            ptr,
            library: library.clone(),
            kind: kind.to_string(),
            info: DomainInfo {
                latent_dim: 0,
                item_len: 0,
                split_sizes: Default::default(),
                has_encode: false,
                has_decode: false,
            },
            loss_spec: LossSpec { segments: vec![] },
            render_size: None,
        };
        let mut info_c = DomainInfoC::default();
        call(&library, kind, "info", |msg| {
            // SAFETY: live domain, valid out-pointer.
            unsafe { (f.domain_info)(ptr, &mut info_c, msg) }
        })?;
        instance.info = DomainInfo::from_c(&info_c).map_err(invalid)?;
        if library.render_fn().is_some() && info_c.flags & abi::DOMAIN_CAN_RENDER != 0 {
            let (w, h) = (info_c.render_width, info_c.render_height);
            let size = (u32::try_from(w).ok(), u32::try_from(h).ok());
            match size {
                (Some(w @ 1..=4096), Some(h @ 1..=4096)) => instance.render_size = Some((w, h)),
                _ => {
                    return Err(invalid(format!(
                        "draws its items as {w}x{h} images: each side must be 1 to 4096 pixels"
                    )));
                }
            }
        }
        if instance.info.latent_dim == 0 || instance.info.item_len == 0 {
            return Err(invalid(format!(
                "reports latent_dim {} and item length {}; both must be at least 1",
                instance.info.latent_dim, instance.info.item_len
            )));
        }
        instance.loss_spec = read_loss_spec(&library, kind, ptr)?;
        instance
            .loss_spec
            .validate(instance.info.latent_dim)
            .map_err(|e| invalid(format!("invalid loss spec: {e}")))?;
        Ok(Self {
            inner: Arc::new(instance),
        })
    }

    /// Dimensions, split sizes and encode/decode availability.
    pub fn info(&self) -> &DomainInfo {
        &self.inner.info
    }

    /// The plugin's loss spec for this domain.
    pub fn loss_spec(&self) -> &LossSpec {
        &self.inner.loss_spec
    }

    /// Domain kind inside the plugin.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// Name of the plugin that provides this domain.
    pub fn plugin_name(&self) -> &str {
        self.inner.library.name()
    }

    /// Version of the plugin that provides this domain.
    pub fn plugin_version(&self) -> &str {
        self.inner.library.version()
    }

    /// The library this domain lives in.
    pub fn library(&self) -> &PluginLibrary {
        &self.inner.library
    }

    fn call(&self, op: &str, f: impl FnOnce(*mut MsgBuf) -> Status) -> Result<(), PluginError> {
        call(&self.inner.library, &self.inner.kind, op, f).map(|_| ())
    }

    fn invalid(&self, message: String) -> PluginError {
        PluginError::Invalid {
            plugin: self.plugin_name().to_string(),
            message: format!("domain `{}`: {message}", self.inner.kind),
        }
    }

    /// Loads raw items `indices` of `split` into `out`
    /// (`indices.len() * item_len` values, item after item).
    pub fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
        let info = &self.inner.info;
        let size = info.split_sizes.get(split);
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(self.invalid(format!(
                "item {bad} asked for, but split {split} has {size} items"
            )));
        }
        self.check_len("load output", out.len(), indices.len() * info.item_len)?;
        let f = self.inner.library.functions();
        let shown: Vec<String> = indices.iter().take(4).map(u64::to_string).collect();
        let more = if indices.len() > 4 { ", ..." } else { "" };
        let op = format!(
            "load of {} {split} items ({}{more})",
            indices.len(),
            shown.join(", ")
        );
        self.call(&op, |msg| {
            // SAFETY: live domain; buffers valid and sized as checked above.
            unsafe {
                (f.load)(
                    self.inner.ptr,
                    split.code(),
                    indices.as_ptr(),
                    indices.len(),
                    out.as_mut_ptr(),
                    out.len(),
                    msg,
                )
            }
        })
    }

    /// `(width, height)` of the RGB image the plugin draws one raw item
    /// as, or `None` when the domain does not draw (or its plugin predates
    /// ABI minor 1).
    pub fn render_size(&self) -> Option<(u32, u32)> {
        self.inner.render_size
    }

    /// Draws `n` raw items as 8-bit RGB images of [`Self::render_size`],
    /// rows top to bottom, image after image.
    pub fn render(&self, raw: &[f32], n: usize) -> Result<Vec<u8>, PluginError> {
        let (Some((w, h)), Some(f)) = (self.inner.render_size, self.inner.library.render_fn())
        else {
            return Err(self.invalid("does not draw its items".to_string()));
        };
        self.check_len("render input", raw.len(), n * self.inner.info.item_len)?;
        let mut out = vec![0u8; n * w as usize * h as usize * 3];
        self.call("render", |msg| {
            // SAFETY: live domain; buffers valid and sized as checked above.
            unsafe {
                f(
                    self.inner.ptr,
                    raw.as_ptr(),
                    raw.len(),
                    n,
                    out.as_mut_ptr(),
                    out.len(),
                    msg,
                )
            }
        })?;
        Ok(out)
    }

    /// Encodes `n` raw items into `n` latent vectors.
    pub fn encode(&self, raw: &[f32], n: usize, out: &mut [f32]) -> Result<(), PluginError> {
        let (item, latent) = (self.inner.info.item_len, self.inner.info.latent_dim);
        self.transcode(
            "encode",
            raw,
            n,
            item,
            out,
            latent,
            self.inner.library.functions().encode,
        )
    }

    /// Decodes `n` latent vectors into `n` raw items.
    pub fn decode(&self, latents: &[f32], n: usize, out: &mut [f32]) -> Result<(), PluginError> {
        let (item, latent) = (self.inner.info.item_len, self.inner.info.latent_dim);
        self.transcode(
            "decode",
            latents,
            n,
            latent,
            out,
            item,
            self.inner.library.functions().decode,
        )
    }

    /// Calls `encode` or `decode` (same signature) after checking that
    /// `input` holds `n` rows of `in_dim` and `out` room for `n` rows of `out_dim`.
    #[allow(clippy::too_many_arguments)]
    fn transcode(
        &self,
        op: &str,
        input: &[f32],
        n: usize,
        in_dim: usize,
        out: &mut [f32],
        out_dim: usize,
        f: TranscodeFn,
    ) -> Result<(), PluginError> {
        self.check_len(&format!("{op} input"), input.len(), n * in_dim)?;
        self.check_len(&format!("{op} output"), out.len(), n * out_dim)?;
        self.call(op, |msg| {
            // SAFETY: live domain; buffers valid and sized as checked above.
            unsafe {
                f(
                    self.inner.ptr,
                    input.as_ptr(),
                    input.len(),
                    n,
                    out.as_mut_ptr(),
                    out.len(),
                    msg,
                )
            }
        })
    }

    fn check_len(&self, what: &str, got: usize, expected: usize) -> Result<(), PluginError> {
        if got == expected {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "{what} buffer holds {got} values, expected {expected}"
            )))
        }
    }
}

/// Reads the loss spec with the two-call protocol (size, then contents).
fn read_loss_spec(
    library: &PluginLibrary,
    kind: &str,
    ptr: DomainPtr,
) -> Result<LossSpec, PluginError> {
    let f = library.functions();
    let mut buf = vec![LossSegmentC::default(); 8];
    loop {
        let mut len = 0usize;
        let status = call(library, kind, "loss_spec", |msg| {
            // SAFETY: live domain; `buf` has `buf.len()` writable entries.
            unsafe { (f.loss_spec)(ptr, buf.as_mut_ptr(), buf.len(), &mut len, msg) }
        })?;
        if status == abi::STATUS_BUFFER_TOO_SMALL {
            if len <= buf.len() || len > 1 << 16 {
                return Err(PluginError::Invalid {
                    plugin: library.name().to_string(),
                    message: format!("domain `{kind}`: loss spec asks for {len} segments"),
                });
            }
            buf.resize(len, LossSegmentC::default());
            continue;
        }
        let segments = buf[..len.min(buf.len())]
            .iter()
            .map(LossSegment::from_c)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| PluginError::Invalid {
                plugin: library.name().to_string(),
                message: format!("domain `{kind}`: {message}"),
            })?;
        return Ok(LossSpec { segments });
    }
}

impl PluginLibrary {
    /// Creates a domain of `kind` from its config (a JSON object as text).
    pub fn create_domain(
        &self,
        kind: &str,
        config_json: &str,
    ) -> Result<DomainHandle, PluginError> {
        if !self.domain_kinds().iter().any(|k| k == kind) {
            return Err(PluginError::Invalid {
                plugin: self.name().to_string(),
                message: format!(
                    "it has no domain kind `{kind}`; it provides: {}",
                    self.domain_kinds().join(", ")
                ),
            });
        }
        DomainHandle::create(self.clone(), kind, config_json)
    }
}
