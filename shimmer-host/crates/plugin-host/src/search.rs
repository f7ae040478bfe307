//! Turning a plugin name into a library path.

use super::PluginError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable with extra plugin folders (`:`-separated on Unix).
pub const PLUGIN_PATH_ENV: &str = "SHIMMER_PLUGIN_PATH";

/// Resolves `spec` to a library file. A spec that looks like a path (an
/// existing file, a separator or a library extension) is used as is; a name is searched in
/// `extra_dirs`, then `SHIMMER_PLUGIN_PATH`, then the folder of the running
/// `shimmer` binary (the workspace's `target/<profile>` during development).
pub fn resolve(spec: &str, extra_dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if looks_like_path(spec) {
        return Ok(PathBuf::from(spec));
    }
    let dirs = search_dirs(extra_dirs);
    let names = file_names(spec);
    for dir in &dirs {
        for name in &names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(PluginError::NotFound {
        name: spec.to_string(),
        file_names: names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" or "),
        searched: if dirs.is_empty() {
            "no folders".to_string()
        } else {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

fn looks_like_path(spec: &str) -> bool {
    let p = Path::new(spec);
    spec.contains(std::path::MAIN_SEPARATOR)
        || spec.contains('/')
        || p.is_file()
        || p.extension()
            .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
}

/// Library file names a plugin called `name` may have: cargo names a
/// `cdylib` after its lib name, where `-` became `_`.
fn file_names(name: &str) -> Vec<OsString> {
    let mut names = vec![libloading::library_filename(name.replace('-', "_"))];
    let plain = libloading::library_filename(name);
    if !names.contains(&plain) {
        names.push(plain);
    }
    names
}

fn search_dirs(extra_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra_dirs.to_vec();
    if let Some(paths) = std::env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir);
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_as_is() {
        assert_eq!(
            resolve("./x/libfoo.so", &[]).unwrap(),
            PathBuf::from("./x/libfoo.so")
        );
        assert_eq!(
            resolve("libfoo.so", &[]).unwrap(),
            PathBuf::from("libfoo.so")
        );
    }

    #[test]
    fn names_are_searched_in_extra_dirs_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(libloading::library_filename("my_plugin"));
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            resolve("my-plugin", &[dir.path().to_path_buf()]).unwrap(),
            file
        );
    }

    #[test]
    fn missing_name_lists_what_was_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve("nope", &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope` not found"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
