//! Everything that can go wrong with a plugin, phrased for the user.

use std::path::PathBuf;

/// A plugin could not be found, loaded, or did not do what was asked. The
/// message names the plugin (or file) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No library matches a plugin name.
    #[error("plugin `{name}` not found (looked for {file_names} in: {searched})")]
    NotFound {
        /// The name asked for.
        name: String,
        /// File names tried.
        file_names: String,
        /// Folders searched, in order.
        searched: String,
    },
    /// The file does not exist or cannot be copied.
    #[error("cannot read plugin file {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a separate source: said once).
        cause: std::io::Error,
    },
    /// The file is not a shared library the system loader accepts.
    #[error("{} is not a loadable shared library: {reason}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The system loader's message.
        reason: String,
    },
    /// The library has no shimmer entry symbol.
    #[error(
        "{} is not a shimmer plugin: it exports no `{symbol}` symbol (was `export_plugin!` called?)",
        path.display()
    )]
    MissingEntry {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The plugin was built against another ABI version.
    #[error(
        "plugin `{name}` {version} ({}) was built for plugin ABI v{found}, but this shimmer \
         speaks ABI v{expected}: rebuild the plugin against shimmer-plugin-api {api}",
        path.display()
    )]
    AbiMismatch {
        /// Plugin name from its descriptor.
        name: String,
        /// Plugin version from its descriptor.
        version: String,
        /// The file.
        path: PathBuf,
        /// ABI version the plugin has.
        found: u32,
        /// ABI version the host has.
        expected: u32,
        /// Version of the API crate the host was built with.
        api: &'static str,
    },
    /// Same ABI version but a different descriptor layout.
    #[error(
        "plugin `{name}` ({}) has a {found}-byte descriptor where ABI v{abi} has {expected} bytes: \
         it was built against an incompatible shimmer-plugin-api",
        path.display()
    )]
    DescriptorSize {
        /// Plugin name from its descriptor.
        name: String,
        /// The file.
        path: PathBuf,
        /// Size the plugin reported.
        found: u32,
        /// Size the host expects.
        expected: u32,
        /// The shared ABI version.
        abi: u32,
    },
    /// A call into the plugin failed or panicked.
    #[error("plugin `{plugin}`, domain `{kind}`: {op} {}: {message}", if *.panicked { "panicked" } else { "failed" })]
    Call {
        /// Plugin name.
        plugin: String,
        /// Domain kind.
        kind: String,
        /// What was being done (`create`, `load`, ...).
        op: String,
        /// The plugin's message.
        message: String,
        /// Whether it was a caught panic rather than a reported error.
        panicked: bool,
    },
    /// The plugin answered something the host cannot use, or was asked for
    /// something it does not have.
    #[error("plugin `{plugin}`: {message}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}
