//! `shimmer plugins inspect`.

use anyhow::Result;

/// Prints what a plugin provides.
pub fn run(_plugin: &str, _config: &str, _kind: Option<&str>, _json: bool) -> Result<()> {
    anyhow::bail!("not built yet")
}
