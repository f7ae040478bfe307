//! What [`export_plugin!`](crate::export_plugin) expands to: one `extern "C"`
//! shim per ABI function, generic over the plugin type, each catching panics
//! and turning errors into a status plus a message in the host's buffer.
//!
//! Plugin authors never call anything here directly.

// The `extern "C"` shims behind `export_plugin!`; each block says why it holds.
#![allow(unsafe_code)]

use crate::abi::{
    self, DomainInfoC, DomainPtr, FunctionTable, LossSegmentC, MsgBuf, PluginDescriptor, Status,
    StrRef,
};
use crate::plugin::{Domain, Plugin, PluginError};
use crate::types::Split;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

// Per-thread state of a shim call. `const`-initialised `Cell`s of types
// without `Drop` register no thread-exit destructor, so the library stays
// unloadable, and no call takes a lock.
thread_local! {
    /// Whether this thread is inside a shim (its panics are reported to the
    /// host, not printed).
    static IN_SHIM: Cell<bool> = const { Cell::new(false) };
    /// Where a panic inside the current shim call was raised (`file:line`,
    /// cut to the buffer), as bytes and their length.
    static PANIC_AT: Cell<([u8; PANIC_AT_CAP], usize)> = const { Cell::new(([0; PANIC_AT_CAP], 0)) };
}

/// Room for a panic's `file:line`.
const PANIC_AT_CAP: usize = 240;

fn set_panic_at(text: &str) {
    let mut buf = [0u8; PANIC_AT_CAP];
    let mut n = text.len().min(PANIC_AT_CAP);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    PANIC_AT.set((buf, n));
}

fn take_panic_at() -> Option<String> {
    let (buf, n) = PANIC_AT.replace(([0; PANIC_AT_CAP], 0));
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Installs (once) a panic hook in the plugin's own copy of std: panics
/// raised inside a shim are recorded silently (the host reports them as
/// errors); any other panic goes to the previous hook.
fn install_quiet_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_SHIM.get() {
                if let Some(l) = info.location() {
                    set_panic_at(&format!("{}:{}", l.file(), l.line()));
                }
            } else {
                previous(info);
            }
        }));
    });
}

fn write_msg(msg: *mut MsgBuf, text: &str) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the host passes a valid, exclusive MsgBuf for the call.
    let buf = unsafe { &mut *msg };
    if buf.ptr.is_null() || buf.cap == 0 {
        buf.len = 0;
        return;
    }
    let mut n = text.len().min(buf.cap);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf.ptr` has `buf.cap >= n` writable bytes owned by the host.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.ptr, n) };
    buf.len = n;
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Runs `f`, catching panics; errors and panics go into `msg`.
fn guard(msg: *mut MsgBuf, f: impl FnOnce() -> Result<Status, PluginError>) -> Status {
    let outer = IN_SHIM.replace(true);
    take_panic_at();
    let result = catch_unwind(AssertUnwindSafe(f));
    let location = take_panic_at();
    IN_SHIM.set(outer);
    match result {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            write_msg(msg, e.message());
            abi::STATUS_ERROR
        }
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            let text = match location {
                Some(loc) => format!("panicked at {loc}: {text}"),
                None => format!("panicked: {text}"),
            };
            write_msg(msg, &text);
            abi::STATUS_PANIC
        }
    }
}

fn read_str<'a>(s: StrRef, what: &str) -> Result<&'a str, PluginError> {
    // SAFETY: the host passes a string valid for the duration of the call.
    unsafe { s.as_str() }.map_err(|e| PluginError::new(format!("{what} is not UTF-8: {e}")))
}

/// A domain as the host holds it: the plugin's object and what it
/// implements, found out when it was created.
struct Hosted {
    domain: Box<dyn Domain>,
    has_encode: bool,
    has_decode: bool,
}

impl Hosted {
    /// Wraps `domain`, calling its `encode` and `decode` once with no items
    /// to learn whether they are its own or the identity defaults (a
    /// failing or panicking call counts as its own).
    fn new(domain: Box<dyn Domain>) -> Self {
        let probe = |encoding: bool| {
            !crate::plugin::ran_identity(|| {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    if encoding {
                        domain.encode(&[], &mut [])
                    } else {
                        domain.decode(&[], &mut [])
                    }
                }));
            })
        };
        let (has_encode, has_decode) = (probe(true), probe(false));
        Self {
            domain,
            has_encode,
            has_decode,
        }
    }

    /// The domain's info, with the flags of what it implements.
    fn info(&self) -> crate::types::DomainInfo {
        let mut info = self.domain.info();
        info.has_encode |= self.has_encode;
        info.has_decode |= self.has_decode;
        info
    }

    /// The C form of the info, with what the domain draws (minor 1).
    fn info_c(&self) -> DomainInfoC {
        let mut c = self.info().to_c();
        if let Some((w, h)) = self.domain.render_size() {
            c.flags |= abi::DOMAIN_CAN_RENDER;
            c.render_width = u64::from(w);
            c.render_height = u64::from(h);
        }
        c
    }
}

/// # Safety
/// `domain` must come from `create_domain` of this library and not be destroyed.
unsafe fn hosted<'a>(domain: DomainPtr) -> Result<&'a Hosted, PluginError> {
    if domain.is_null() {
        return Err(PluginError::new("null domain handle"));
    }
    // SAFETY: created by `create_domain::<P>` as a `Box<Hosted>`.
    Ok(unsafe { &*(domain as *const Hosted) })
}

/// # Safety
/// As [`hosted`].
unsafe fn domain_ref<'a>(domain: DomainPtr) -> Result<&'a dyn Domain, PluginError> {
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { hosted(domain)? }.domain.as_ref())
}

/// # Safety
/// `ptr` must be valid for `len` reads (or `len == 0`).
unsafe fn slice_in<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], PluginError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(PluginError::new("null input buffer"));
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `ptr` must be valid for `len` writes (or `len == 0`) and not aliased.
unsafe fn slice_out<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], PluginError> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(PluginError::new("null output buffer"));
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn check_len(what: &str, got: usize, expected: usize) -> Result<(), PluginError> {
    if got != expected {
        return Err(PluginError::new(format!(
            "{what} holds {got} values, expected {expected}"
        )));
    }
    Ok(())
}

unsafe extern "C" fn create_domain<P: Plugin>(
    kind: StrRef,
    config_json: StrRef,
    out: *mut DomainPtr,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        let kind = read_str(kind, "domain kind")?;
        let config = read_str(config_json, "domain config")?;
        if !P::DOMAIN_KINDS.contains(&kind) {
            return Err(PluginError::new(format!(
                "unknown domain kind `{kind}`; this plugin provides: {}",
                P::DOMAIN_KINDS.join(", ")
            )));
        }
        if out.is_null() {
            return Err(PluginError::new("null output pointer"));
        }
        let domain: Box<dyn Domain> = P::create_domain(kind, config)?;
        let spec = domain.loss_spec();
        spec.validate(domain.info().latent_dim)
            .map_err(|e| PluginError::new(format!("invalid loss spec: {e}")))?;
        let hosted = Hosted::new(domain);
        // SAFETY: `out` is a valid host pointer for the call.
        unsafe { *out = Box::into_raw(Box::new(hosted)) as DomainPtr };
        Ok(abi::STATUS_OK)
    })
}

unsafe extern "C" fn destroy_domain(domain: DomainPtr) {
    if domain.is_null() {
        return;
    }
    // A panicking destructor must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: created by `create_domain` as a `Box<Hosted>`, and the
        // host destroys each domain exactly once.
        drop(unsafe { Box::from_raw(domain as *mut Hosted) });
    }));
}

unsafe extern "C" fn domain_info(
    domain: DomainPtr,
    out: *mut DomainInfoC,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        // SAFETY: the host passes a live domain and a valid output pointer.
        let d = unsafe { hosted(domain)? };
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let out = unsafe { slice_out(out, 1)? };
        out[0] = d.info_c();
        Ok(abi::STATUS_OK)
    })
}

unsafe extern "C" fn loss_spec(
    domain: DomainPtr,
    out: *mut LossSegmentC,
    cap: usize,
    out_len: *mut usize,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        // SAFETY: the host passes a live domain and valid buffers.
        let d = unsafe { domain_ref(domain)? };
        let spec = d.loss_spec();
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let len = unsafe { slice_out(out_len, 1)? };
        len[0] = spec.segments.len();
        if spec.segments.len() > cap {
            return Ok(abi::STATUS_BUFFER_TOO_SMALL);
        }
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let out = unsafe { slice_out(out, spec.segments.len())? };
        for (o, s) in out.iter_mut().zip(&spec.segments) {
            *o = s.to_c();
        }
        Ok(abi::STATUS_OK)
    })
}

unsafe extern "C" fn load(
    domain: DomainPtr,
    split: u32,
    indices: *const u64,
    n: usize,
    out: *mut f32,
    out_len: usize,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        // SAFETY: the host passes a live domain and valid buffers.
        let d = unsafe { domain_ref(domain)? };
        let split = Split::from_code(split)
            .ok_or_else(|| PluginError::new(format!("unknown split code {split}")))?;
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let indices = unsafe { slice_in(indices, n)? };
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let out = unsafe { slice_out(out, out_len)? };
        check_len("load output", out_len, n * d.info().item_len)?;
        d.load(split, indices, out)?;
        Ok(abi::STATUS_OK)
    })
}

/// Shared body of `encode` and `decode`.
fn transcode(
    domain: DomainPtr,
    input: *const f32,
    input_len: usize,
    n: usize,
    out: *mut f32,
    out_len: usize,
    encoding: bool,
) -> Result<Status, PluginError> {
    // SAFETY: the host passes a live domain and valid buffers.
    let d = unsafe { domain_ref(domain)? };
    let info = d.info();
    let (in_dim, out_dim) = if encoding {
        (info.item_len, info.latent_dim)
    } else {
        (info.latent_dim, info.item_len)
    };
    check_len("input", input_len, n * in_dim)?;
    check_len("output", out_len, n * out_dim)?;
    // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
    let input = unsafe { slice_in(input, input_len)? };
    // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
    let out = unsafe { slice_out(out, out_len)? };
    if encoding {
        d.encode(input, out)?;
    } else {
        d.decode(input, out)?;
    }
    Ok(abi::STATUS_OK)
}

unsafe extern "C" fn encode(
    domain: DomainPtr,
    input: *const f32,
    input_len: usize,
    n: usize,
    out: *mut f32,
    out_len: usize,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        transcode(domain, input, input_len, n, out, out_len, true)
    })
}

unsafe extern "C" fn render(
    domain: DomainPtr,
    input: *const f32,
    input_len: usize,
    n: usize,
    out: *mut u8,
    out_len: usize,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        // SAFETY: the host passes a live domain and valid buffers.
        let d = unsafe { domain_ref(domain)? };
        let Some((w, h)) = d.render_size() else {
            return Err(PluginError::new("this domain does not draw its items"));
        };
        check_len("input", input_len, n * d.info().item_len)?;
        check_len("output", out_len, n * w as usize * h as usize * 3)?;
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let input = unsafe { slice_in(input, input_len)? };
        // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
        let out = unsafe { slice_out(out, out_len)? };
        d.render(input, out)?;
        Ok(abi::STATUS_OK)
    })
}

unsafe extern "C" fn decode(
    domain: DomainPtr,
    input: *const f32,
    input_len: usize,
    n: usize,
    out: *mut f32,
    out_len: usize,
    msg: *mut MsgBuf,
) -> Status {
    guard(msg, || {
        transcode(domain, input, input_len, n, out, out_len, false)
    })
}

struct Built {
    /// Backing store of `descriptor.domain_kinds`.
    _kinds: Vec<StrRef>,
    descriptor: PluginDescriptor,
}

// SAFETY: after construction the descriptor is immutable and only points to
// `'static` strings and to `_kinds`, which lives as long as it does.
unsafe impl Send for Built {}
// SAFETY: as above.
unsafe impl Sync for Built {}

/// Holds the plugin's descriptor, built on first use.
#[doc(hidden)]
pub struct DescriptorCell(OnceLock<Built>);

impl DescriptorCell {
    /// An empty cell, for a `static`.
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The descriptor of plugin `P`.
    pub fn get<P: Plugin>(&'static self) -> *const PluginDescriptor {
        let built = self.0.get_or_init(|| {
            install_quiet_panic_hook();
            let kinds: Vec<StrRef> = P::DOMAIN_KINDS.iter().map(|k| StrRef::new(k)).collect();
            let descriptor = PluginDescriptor {
                abi_version: abi::ABI_VERSION,
                descriptor_size: std::mem::size_of::<PluginDescriptor>() as u32,
                name: StrRef::new(P::NAME),
                version: StrRef::new(P::VERSION),
                abi_minor: abi::ABI_MINOR,
                flags: 0,
                domain_kinds: kinds.as_ptr(),
                domain_kind_count: kinds.len(),
                functions: FunctionTable {
                    create_domain: create_domain::<P>,
                    destroy_domain,
                    domain_info,
                    loss_spec,
                    load,
                    encode,
                    decode,
                },
                render: Some(render),
                reserved: [0; 7],
            };
            Built {
                _kinds: kinds,
                descriptor,
            }
        });
        &built.descriptor
    }
}

impl Default for DescriptorCell {
    fn default() -> Self {
        Self::new()
    }
}

/// Exports a type implementing [`Plugin`](crate::Plugin) as a shimmer plugin:
/// generates the `shimmer_plugin_entry` symbol the host looks for. Call it
/// once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// Entry point the shimmer host looks up (generated by `export_plugin!`).
        #[unsafe(no_mangle)]
        pub extern "C" fn shimmer_plugin_entry() -> *const $crate::abi::PluginDescriptor {
            static CELL: $crate::export::DescriptorCell = $crate::export::DescriptorCell::new();
            CELL.get::<$plugin>()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DomainInfo, SplitSizes};

    struct Ones;
    impl Domain for Ones {
        fn info(&self) -> DomainInfo {
            DomainInfo {
                latent_dim: 2,
                item_len: 2,
                split_sizes: SplitSizes {
                    train: 4,
                    val: 0,
                    test: 0,
                },
                has_encode: false,
                has_decode: false,
            }
        }
        fn load(&self, _: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
            if indices.contains(&3) {
                panic!("item 3 is cursed");
            }
            out.fill(1.0);
            Ok(())
        }
    }
    struct P;
    impl Plugin for P {
        const NAME: &'static str = "ones";
        const VERSION: &'static str = "0.0.1";
        const DOMAIN_KINDS: &'static [&'static str] = &["ones"];
        fn create_domain(_: &str, config: &str) -> Result<Box<dyn Domain>, PluginError> {
            if config.contains("bad") {
                return Err("bad config".into());
            }
            if config.contains("doubling") {
                return Ok(Box::new(Doubling));
            }
            Ok(Box::new(Ones))
        }
    }

    /// Implements `encode` but leaves the flags at `false`, as `Ones` does.
    struct Doubling;
    impl Domain for Doubling {
        fn info(&self) -> DomainInfo {
            Ones.info()
        }
        fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
            Ones.load(split, indices, out)
        }
        fn encode(&self, raw: &[f32], latents: &mut [f32]) -> Result<(), PluginError> {
            for (l, r) in latents.iter_mut().zip(raw) {
                *l = 2.0 * r;
            }
            Ok(())
        }
    }

    fn info_flags(ptr: DomainPtr) -> u32 {
        let mut info = DomainInfoC::default();
        let mut bytes = [0u8; 64];
        let mut msg = msg_buf(&mut bytes);
        // SAFETY: live domain, valid output.
        assert_eq!(
            // SAFETY: the host passes live domains and buffers valid for the call, as the ABI requires.
            unsafe { domain_info(ptr, &mut info, &mut msg) },
            abi::STATUS_OK
        );
        info.flags
    }

    #[test]
    fn the_flags_say_what_a_domain_implements() {
        let (_, ones, _) = create("{}");
        assert_eq!(info_flags(ones), 0);
        let (_, doubling, _) = create("doubling");
        assert_eq!(info_flags(doubling), abi::DOMAIN_HAS_ENCODE);
        let mut out = [0f32; 2];
        let mut bytes = [0u8; 64];
        let mut msg = msg_buf(&mut bytes);
        // SAFETY: live domain, valid buffers.
        let status = unsafe {
            encode(
                doubling,
                [1.0f32, 3.0].as_ptr(),
                2,
                1,
                out.as_mut_ptr(),
                2,
                &mut msg,
            )
        };
        assert_eq!((status, out), (abi::STATUS_OK, [2.0, 6.0]));
        // SAFETY: each destroyed once.
        unsafe {
            destroy_domain(ones);
            destroy_domain(doubling);
        }
    }

    fn msg_buf(bytes: &mut [u8]) -> MsgBuf {
        MsgBuf {
            ptr: bytes.as_mut_ptr(),
            cap: bytes.len(),
            len: 0,
        }
    }

    fn create(config: &str) -> (Status, DomainPtr, String) {
        let mut bytes = [0u8; 256];
        let mut msg = msg_buf(&mut bytes);
        let mut ptr: DomainPtr = std::ptr::null_mut();
        // SAFETY: valid strings and out pointers for the call.
        let status = unsafe {
            create_domain::<P>(StrRef::new("ones"), StrRef::new(config), &mut ptr, &mut msg)
        };
        let text = String::from_utf8_lossy(&bytes[..msg.len]).into_owned();
        (status, ptr, text)
    }

    #[test]
    fn errors_and_panics_become_statuses() {
        let (status, _, text) = create("bad");
        assert_eq!((status, text.as_str()), (abi::STATUS_ERROR, "bad config"));

        let (status, ptr, _) = create("{}");
        assert_eq!(status, abi::STATUS_OK);
        let mut out = [0f32; 2];
        let mut bytes = [0u8; 256];
        let mut msg = msg_buf(&mut bytes);
        // SAFETY: live domain, valid buffers.
        let status = unsafe { load(ptr, 0, [3u64].as_ptr(), 1, out.as_mut_ptr(), 2, &mut msg) };
        let text = String::from_utf8_lossy(&bytes[..msg.len]).into_owned();
        assert_eq!(status, abi::STATUS_PANIC);
        assert!(text.contains("item 3 is cursed"), "{text}");

        // A wrong output length is an error, not memory corruption.
        let mut msg = msg_buf(&mut bytes);
        // SAFETY: live domain, valid buffers.
        let status = unsafe { load(ptr, 0, [1u64].as_ptr(), 1, out.as_mut_ptr(), 1, &mut msg) };
        assert_eq!(status, abi::STATUS_ERROR);
        // SAFETY: destroyed once.
        unsafe { destroy_domain(ptr) };
    }

    #[test]
    fn long_messages_are_truncated_at_char_boundaries() {
        let mut bytes = [0u8; 5];
        let mut msg = msg_buf(&mut bytes);
        write_msg(&mut msg, "ééé");
        assert_eq!(msg.len, 4);
        assert_eq!(std::str::from_utf8(&bytes[..4]).ok(), Some("éé"));
    }
}
