//! The C ABI between the shimmer host and a domain plugin (contract).
//!
//! Everything here is `#[repr(C)]` and made only of integers, `f32` buffers
//! with lengths, raw pointers and `extern "C"` function pointers, so a plugin
//! built by any Rust compiler (or any language) can talk to any host that
//! speaks the same [`ABI_VERSION`].
//!
//! Ownership rule: the **host owns every buffer** it passes (output slices,
//! message buffers, index lists). A plugin writes into them and never frees
//! them, and never returns memory the host must free. Domain instances are
//! the only plugin-owned objects the host holds; it gives them back through
//! [`FunctionTable::destroy_domain`].
//!
//! Layout stability: the first four fields of [`PluginDescriptor`] (the
//! *header*: ABI version, descriptor size, name, version) keep their layout in
//! every ABI version, so a host can always name a plugin and say which ABI it
//! was built for before refusing it.

// The C ABI: raw pointers and `extern "C"` function types; each block says why it holds.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// Version of this ABI. Bumped on any layout change of the types below.
pub const ABI_VERSION: u32 = 1;

/// Minor version: features added without changing the v1 layout, each in
/// room the layout kept for it. A host reads a feature only from a plugin
/// whose minor version has it; older plugins keep loading.
///
/// * 0: the v1 layout.
/// * 1: [`PluginDescriptor::render`] and [`DOMAIN_CAN_RENDER`] with
///   [`DomainInfoC::render_width`]/[`DomainInfoC::render_height`]: a domain
///   can draw raw items as RGB images (TensorBoard image grids).
pub const ABI_MINOR: u32 = 1;

/// The first minor version with [`PluginDescriptor::render`].
pub const MINOR_RENDER: u32 = 1;

/// Name of the symbol every plugin exports; its type is [`EntryFn`].
pub const ENTRY_SYMBOL: &str = "shimmer_plugin_entry";

/// Type of the exported entry symbol: returns a pointer to a descriptor that
/// lives as long as the library stays loaded.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// Result code of every plugin call.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The plugin reported an error; the message buffer holds its text.
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked; the panic was caught and the message buffer says where.
pub const STATUS_PANIC: Status = 2;
/// An output buffer was too small; the `out_len` argument holds the size needed.
pub const STATUS_BUFFER_TOO_SMALL: Status = 3;

/// Item element type `f32` (the only one in ABI v1).
pub const ITEM_DTYPE_F32: u32 = 0;

/// Domain flag: the plugin implements its own `encode` (raw items -> latents).
pub const DOMAIN_HAS_ENCODE: u32 = 1;
/// Domain flag: the plugin implements its own `decode` (latents -> raw items).
pub const DOMAIN_HAS_DECODE: u32 = 2;
/// Domain flag (minor 1): the domain draws raw items as RGB images of
/// [`DomainInfoC::render_width`] x [`DomainInfoC::render_height`] through
/// [`PluginDescriptor::render`].
pub const DOMAIN_CAN_RENDER: u32 = 4;

/// Split code for training items.
pub const SPLIT_TRAIN: u32 = 0;
/// Split code for validation items.
pub const SPLIT_VAL: u32 = 1;
/// Split code for test items.
pub const SPLIT_TEST: u32 = 2;

/// Loss kind: mean squared error.
pub const LOSS_MSE: u32 = 0;
/// Loss kind: cross-entropy of predicted logits against the target's argmax class.
pub const LOSS_CROSS_ENTROPY: u32 = 1;
/// Loss kind: binary cross-entropy of predicted logits against targets in [0, 1].
pub const LOSS_BCE: u32 = 2;
/// Loss kind: one minus the cosine similarity, averaged over items.
pub const LOSS_COSINE: u32 = 3;
/// Loss kind: mean absolute error.
pub const LOSS_L1: u32 = 4;

/// Loss-use bit: the segment takes part in demi-cycle losses.
pub const USE_DEMI_CYCLE: u32 = 1;
/// Loss-use bit: the segment takes part in cycle losses.
pub const USE_CYCLE: u32 = 2;
/// Loss-use bit: the segment takes part in translation losses.
pub const USE_TRANSLATION: u32 = 4;
/// Loss-use bit: the segment takes part in fused (broadcast) losses.
pub const USE_FUSED: u32 = 8;

/// Opaque pointer to a plugin-owned domain instance.
pub type DomainPtr = *mut c_void;

/// A borrowed UTF-8 string: pointer and length in bytes (no terminator).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    /// First byte; may be dangling when `len == 0`.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// Borrows a Rust string for the duration of a call.
    pub fn new(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Reads the string back.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_str<'a>(&self) -> Result<&'a str, std::str::Utf8Error> {
        if self.len == 0 {
            return Ok("");
        }
        // SAFETY: guaranteed by the caller.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes)
    }
}

/// A host-owned buffer the plugin writes a UTF-8 message into (truncated at a
/// character boundary when longer than `cap`), setting `len`.
#[repr(C)]
#[derive(Debug)]
pub struct MsgBuf {
    /// Host-allocated bytes.
    pub ptr: *mut u8,
    /// Capacity in bytes.
    pub cap: usize,
    /// Bytes written by the plugin.
    pub len: usize,
}

/// What the entry symbol returns: who the plugin is and its function table.
#[repr(C)]
pub struct PluginDescriptor {
    // ---- header: identical layout in every ABI version ----
    /// ABI version the plugin was built against ([`ABI_VERSION`]).
    pub abi_version: u32,
    /// `size_of::<PluginDescriptor>()` as the plugin saw it.
    pub descriptor_size: u32,
    /// Plugin name (static string).
    pub name: StrRef,
    /// Plugin version (static string, usually the crate version).
    pub version: StrRef,
    // ---- v1 body ----
    /// ABI minor version the plugin was built against ([`ABI_MINOR`]).
    pub abi_minor: u32,
    /// Reserved for plugin-level flags; zero in v1.
    pub flags: u32,
    /// Names of the domain kinds this plugin can create.
    pub domain_kinds: *const StrRef,
    /// Number of entries in `domain_kinds`.
    pub domain_kind_count: usize,
    /// The functions.
    pub functions: FunctionTable,
    /// Minor 1: draws raw items as RGB images; `None` in older plugins
    /// (whose bytes here are the zero-filled reserved room).
    pub render: Option<RenderFn>,
    /// Room for additions within v1 (zero-filled).
    pub reserved: [usize; 7],
}

/// Draws `n` raw items (`input_len == n * item_len`) as 8-bit RGB images,
/// rows top to bottom, pixels interleaved, image after image
/// (`out_len == n * render_width * render_height * 3`).
pub type RenderFn = unsafe extern "C" fn(
    domain: DomainPtr,
    input: *const f32,
    input_len: usize,
    n: usize,
    out: *mut u8,
    out_len: usize,
    msg: *mut MsgBuf,
) -> Status;

/// Per-domain facts reported by the plugin.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainInfoC {
    /// Length of the latent vector the GW sees for one item.
    pub latent_dim: u64,
    /// Number of elements of one raw item.
    pub item_len: u64,
    /// Element type of raw items ([`ITEM_DTYPE_F32`] in v1).
    pub item_dtype: u32,
    /// [`DOMAIN_HAS_ENCODE`] | [`DOMAIN_HAS_DECODE`].
    pub flags: u32,
    /// Number of items in the train, val and test splits.
    pub split_sizes: [u64; 3],
    /// Minor 1, with [`DOMAIN_CAN_RENDER`]: width of a rendered item in pixels.
    pub render_width: u64,
    /// Minor 1, with [`DOMAIN_CAN_RENDER`]: height of a rendered item in pixels.
    pub render_height: u64,
    /// Room for additions within v1 (zero-filled).
    pub reserved: [u64; 2],
}

/// One segment of a domain's loss spec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LossSegmentC {
    /// First latent column of the segment.
    pub start: u64,
    /// Number of latent columns.
    pub len: u64,
    /// One of the `LOSS_*` kinds.
    pub kind: u32,
    /// Bitmask of `USE_*` bits: the loss uses this segment in.
    pub uses: u32,
    /// Weights for demi-cycle, cycle, translation and fused use, in that order.
    pub weights: [f32; 4],
}

/// The plugin's functions. Every one catches panics and reports them through
/// its status and message buffer.
#[repr(C)]
pub struct FunctionTable {
    /// Creates a domain of `kind` from its config (a JSON object as a string).
    pub create_domain: unsafe extern "C" fn(
        kind: StrRef,
        config_json: StrRef,
        out: *mut DomainPtr,
        msg: *mut MsgBuf,
    ) -> Status,
    /// Destroys a domain created by `create_domain`.
    pub destroy_domain: unsafe extern "C" fn(domain: DomainPtr),
    /// Writes the domain's facts into `out`.
    pub domain_info:
        unsafe extern "C" fn(domain: DomainPtr, out: *mut DomainInfoC, msg: *mut MsgBuf) -> Status,
    /// Writes up to `cap` loss segments into `out` and their count into
    /// `out_len`; returns [`STATUS_BUFFER_TOO_SMALL`] when `cap` is too small.
    pub loss_spec: unsafe extern "C" fn(
        domain: DomainPtr,
        out: *mut LossSegmentC,
        cap: usize,
        out_len: *mut usize,
        msg: *mut MsgBuf,
    ) -> Status,
    /// Loads the raw items at `indices` of `split` into `out`
    /// (`out_len == n * item_len`, item after item).
    pub load: unsafe extern "C" fn(
        domain: DomainPtr,
        split: u32,
        indices: *const u64,
        n: usize,
        out: *mut f32,
        out_len: usize,
        msg: *mut MsgBuf,
    ) -> Status,
    /// Encodes `n` raw items (`input_len == n * item_len`) into latents
    /// (`out_len == n * latent_dim`).
    pub encode: unsafe extern "C" fn(
        domain: DomainPtr,
        input: *const f32,
        input_len: usize,
        n: usize,
        out: *mut f32,
        out_len: usize,
        msg: *mut MsgBuf,
    ) -> Status,
    /// Decodes `n` latents (`input_len == n * latent_dim`) into raw items
    /// (`out_len == n * item_len`).
    pub decode: unsafe extern "C" fn(
        domain: DomainPtr,
        input: *const f32,
        input_len: usize,
        n: usize,
        out: *mut f32,
        out_len: usize,
        msg: *mut MsgBuf,
    ) -> Status,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The header must never move: hosts of every version read it.
    #[test]
    fn header_layout_is_frozen() {
        assert_eq!(offset_of!(PluginDescriptor, abi_version), 0);
        assert_eq!(offset_of!(PluginDescriptor, descriptor_size), 4);
        assert_eq!(offset_of!(PluginDescriptor, name), 8);
        assert_eq!(
            offset_of!(PluginDescriptor, version),
            8 + size_of::<StrRef>()
        );
    }

    /// Minor versions only fill room v1.0 kept: sizes and every v1.0 field
    /// offset stay, so v1.0 plugins and hosts read each other.
    #[test]
    fn minor_versions_keep_the_v1_layout() {
        assert_eq!(size_of::<PluginDescriptor>(), 184);
        assert_eq!(offset_of!(PluginDescriptor, functions), 64);
        assert_eq!(offset_of!(PluginDescriptor, render), 120);
        assert_eq!(size_of::<Option<RenderFn>>(), size_of::<usize>());
        assert_eq!(size_of::<DomainInfoC>(), 80);
        assert_eq!(offset_of!(DomainInfoC, render_width), 48);
    }

    #[test]
    fn str_ref_round_trips() {
        let s = "vision";
        let r = StrRef::new(s);
        // SAFETY: `s` outlives the read.
        assert_eq!(unsafe { r.as_str() }.ok(), Some("vision"));
        let empty = StrRef {
            ptr: std::ptr::null(),
            len: 0,
        };
        // SAFETY: zero length is never dereferenced.
        assert_eq!(unsafe { empty.as_str() }.ok(), Some(""));
    }
}
