//! The `shimmer` command line: parses arguments and calls the library.

#![allow(unsafe_code)] // see the SAFETY comment of each block

mod bench;
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    keep_freed_memory();
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_paragraph(&e));
            ExitCode::from(2)
        }
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`shimmer test RUN |
/// head`) would panic; like other Unix tools, end quietly instead.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default at start-up,
    // before any thread exists, has no memory-safety requirement.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Training allocates and frees the same large tensors every step; glibc's
/// defaults hand such blocks back to the kernel and fault them in again
/// (measured: 16% of a W2 step in page faults). Keep them in the heap
/// instead, as PyTorch's caching allocator does. Settings given through
/// glibc's own `MALLOC_*_` environment variables win.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_user = |name: &str| std::env::var_os(name).is_some();
        let settings = [
            ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 1 << 30),
            ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, i32::MAX),
            ("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 256 << 20),
        ];
        for (env, param, value) in settings {
            if !set_by_user(env) {
                // SAFETY: `mallopt` only changes allocator tuning; called at
                // start-up before any other thread exists.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        }
    }
}
