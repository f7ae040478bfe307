//! Records the git commit the binary is built from (`SHIMMER_GIT_COMMIT`,
//! `unknown` outside a git checkout), for `--version` and the provenance
//! each run writes.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // The commit only: whether the tree had uncommitted changes would need
    // the index watched, which git rewrites on every status, rebuilding
    // the binary each time.
    let text = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SHIMMER_GIT_COMMIT={text}");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "refs/heads", "packed-refs"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
