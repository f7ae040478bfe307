//! The operating-system services the shimmer host needs, each behind a safe
//! function, so the crates above it hold no `unsafe` of their own:
//!
//! * [`fs`]: atomic file writes (temporary file, fsync, rename, fsync of
//!   the folder; the file's mode follows the umask);
//! * [`time`]: the UTC time stamps run and sweep folders are named by;
//! * [`process`]: process groups, a child ended with its parent, start-up
//!   settings of the `shimmer` binary;
//! * [`proc`]: what `/proc/self` says of this process (threads, memory,
//!   mapped plugin copies), and handing clean pages of released plugin
//!   copies back to the kernel;
//! * [`stop`]: whether a signal asked the process to stop, for work that
//!   runs before a training loop does.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("summary.json");
//! shimmer_sys::fs::write_atomic(&file, b"{}")?;
//! assert_eq!(std::fs::read(&file)?, b"{}");
//! # Ok::<(), anyhow::Error>(())
//! ```

// `pre_exec`, `madvise`, `mallopt` and `signal` are `unsafe` system calls;
// each block says why it holds.
#![allow(unsafe_code)]

pub mod activity;
pub mod fs;
pub mod lock;
pub mod memory;
pub mod proc;
pub mod process;
pub mod stop;
pub mod time;
