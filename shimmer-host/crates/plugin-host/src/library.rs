//! A loaded plugin library: a private copy of the file, opened, with its
//! descriptor checked against this host's ABI.

#![allow(unsafe_code)] // see the SAFETY comment of each block

use super::{PluginError, search};
use shimmer_plugin_api::abi::{self, EntryFn, PluginDescriptor, StrRef};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A plugin library loaded from a private copy of its file (so the original
/// can be rebuilt in place while a run uses it). Cheap to clone; the library
/// stays loaded while any clone or any domain created from it is alive.
#[derive(Clone)]
pub struct PluginLibrary {
    inner: Arc<Loaded>,
}

/// A loaded library is never unmapped (see [`Loaded::_library`]); dropping
/// the last handle deletes only the private copy of the file.
struct Loaded {
    /// Kept mapped for the life of the process, on purpose: a Rust `cdylib`
    /// carries its own std, which registers thread-exit destructors (pthread
    /// keys, e.g. through `std::thread::current`) pointing into the library.
    /// After `dlclose` those run unmapped code when the thread exits and the
    /// process crashes. The cost is one mapping per load, bounded by the
    /// library's size.
    _library: ManuallyDrop<libloading::Library>,
    _copy_dir: tempfile::TempDir,
    descriptor: *const PluginDescriptor,
    source: PathBuf,
    sha256: String,
    name: String,
    version: String,
    abi_minor: u32,
    kinds: Vec<String>,
}

// SAFETY: the descriptor and function table are immutable data inside the
// library, which `library` keeps mapped; the plugin contract requires its
// functions to be callable from any thread.
unsafe impl Send for Loaded {}
// SAFETY: as above.
unsafe impl Sync for Loaded {}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("source", &self.inner.source)
            .finish()
    }
}

/// Reads a string field of a descriptor, tolerating junk.
///
/// # Safety
/// `s` must come from a descriptor of a library that is still loaded.
unsafe fn descriptor_str(s: StrRef) -> String {
    if s.ptr.is_null() || s.len > 4096 {
        return "<unnamed>".to_string();
    }
    // SAFETY: guaranteed by the caller; the length is bounded above.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8_lossy(bytes).into_owned()
}

impl PluginLibrary {
    /// Finds a plugin by name or path (see [`search::resolve`]) and opens it.
    pub fn find(spec: &str, extra_dirs: &[PathBuf]) -> Result<Self, PluginError> {
        Self::open(&search::resolve(spec, extra_dirs)?)
    }

    /// Opens the plugin library at `path`, checking its ABI version and
    /// descriptor size.
    pub fn open(path: &Path) -> Result<Self, PluginError> {
        let io = |cause| PluginError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let copy_dir = tempfile::Builder::new()
            .prefix("shimmer-plugin-")
            .tempdir()
            .map_err(io)?;
        let file_name = path.file_name().unwrap_or(path.as_os_str());
        let copy = copy_dir.path().join(file_name);
        std::fs::copy(path, &copy).map_err(io)?;
        let sha256 = shimmer_sys::fs::sha256_file(&copy).map_err(io)?;

        // SAFETY: loading runs the library's initialisers. A shimmer plugin
        // is trusted native code, like any shared library the user names.
        let library =
            unsafe { libloading::Library::new(&copy) }.map_err(|e| PluginError::NotALibrary {
                path: path.to_path_buf(),
                reason: loader_reason(&e, &copy, path),
            })?;
        // SAFETY: the symbol's type is fixed by the ABI contract.
        let entry: EntryFn = unsafe { library.get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes()) }
            .map(|s| *s)
            .map_err(|_| PluginError::MissingEntry {
                path: path.to_path_buf(),
                symbol: abi::ENTRY_SYMBOL,
            })?;
        // A data symbol under the entry's name would crash the call: only
        // code in an executable mapping is called.
        let executable = shimmer_sys::proc::is_executable_address(entry as usize).map_err(|e| {
            PluginError::Invalid {
                plugin: path.display().to_string(),
                message: format!("cannot check its entry point: {e:#}"),
            }
        })?;
        if !executable {
            return Err(PluginError::Invalid {
                plugin: path.display().to_string(),
                message: format!(
                    "`{}` is not a function in it (the symbol lies outside its code): \
                     not a shimmer plugin, or a damaged one",
                    abi::ENTRY_SYMBOL
                ),
            });
        }
        // SAFETY: calling the entry point is the contract's first step; it
        // lies in the library's code (checked above).
        let descriptor = unsafe { entry() };
        if descriptor.is_null() {
            return Err(PluginError::Invalid {
                plugin: path.display().to_string(),
                message: "its entry point returned no descriptor".to_string(),
            });
        }
        // SAFETY: the header (first four fields) has the same layout in
        // every ABI version, so reading it is valid before the check.
        let header = unsafe { &*descriptor };
        // SAFETY: the header's strings point into the plugin's static data
        // (`descriptor_str` checks null and bounds the length).
        let (name, version) =
            unsafe { (descriptor_str(header.name), descriptor_str(header.version)) };
        if header.abi_version != abi::ABI_VERSION {
            return Err(PluginError::AbiMismatch {
                name,
                version,
                path: path.to_path_buf(),
                found: header.abi_version,
                expected: abi::ABI_VERSION,
                api: env!("CARGO_PKG_VERSION"),
            });
        }
        let expected = std::mem::size_of::<PluginDescriptor>() as u32;
        if header.descriptor_size != expected {
            return Err(PluginError::DescriptorSize {
                name,
                path: path.to_path_buf(),
                found: header.descriptor_size,
                expected,
                abi: abi::ABI_VERSION,
            });
        }
        let kinds = (0..header.domain_kind_count)
            // SAFETY: the v1 layout is confirmed; the array has `count` entries.
            .map(|i| unsafe { descriptor_str(*header.domain_kinds.add(i)) })
            .collect();
        Ok(Self {
            inner: Arc::new(Loaded {
                abi_minor: header.abi_minor,
                _library: ManuallyDrop::new(library),
                _copy_dir: copy_dir,
                descriptor,
                source: path.to_path_buf(),
                sha256,
                name,
                version,
                kinds,
            }),
        })
    }

    /// Plugin name from its descriptor.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Plugin version from its descriptor.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// ABI version and minor version the plugin was built against.
    pub fn abi(&self) -> (u32, u32) {
        (abi::ABI_VERSION, self.inner.abi_minor)
    }

    /// The file the plugin was loaded from (not the private copy).
    pub fn source(&self) -> &Path {
        &self.inner.source
    }

    /// SHA-256 of the library file as loaded (lowercase hex): which build
    /// this is, for a run's provenance.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Domain kinds the plugin can create.
    pub fn domain_kinds(&self) -> &[String] {
        &self.inner.kinds
    }

    /// The plugin's function table.
    pub(super) fn functions(&self) -> &abi::FunctionTable {
        // SAFETY: checked to be a v1 descriptor; valid while loaded.
        unsafe { &(*self.inner.descriptor).functions }
    }

    /// The plugin's `render`, when its minor version has one (the same
    /// bytes are zero-filled reserved room in older plugins).
    pub(super) fn render_fn(&self) -> Option<abi::RenderFn> {
        if self.inner.abi_minor < abi::MINOR_RENDER {
            return None;
        }
        // SAFETY: checked to be a v1 descriptor of minor >= 1; valid while loaded.
        unsafe { (*self.inner.descriptor).render }
    }
}

/// The system loader's message, with the private copy's path replaced by the
/// user's file.
/// The system loader's own words (`dlerror`, which libloading keeps as the
/// error's source), naming the user's file rather than its private copy.
fn loader_reason(e: &libloading::Error, copy: &Path, original: &Path) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text.replace(&copy.display().to_string(), &original.display().to_string())
}
