//! Whether a signal asked this process to stop (SIGINT, SIGTERM, SIGHUP),
//! for work that runs before a training loop exists to stop at a step
//! boundary: building a latent cache, opening data. Such work asks
//! [`check`] between blocks and ends with [`StopAsked`], so a Slurm time
//! limit (SIGTERM, then SIGKILL after `KillWait`) is honoured within one
//! block instead of after the whole build.
//!
//! ```
//! assert!(shimmer_sys::stop::check("opening the data").is_ok());
//! ```

use std::sync::atomic::{AtomicI32, Ordering};

/// The last stop signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Records that `signal` asked the process to stop (the signal handler's
/// thread calls this; tests may too).
pub fn record(signal: i32) {
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// The signal that asked the process to stop, if one did.
pub fn asked() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The name of `signal` as the user knows it.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a stop request",
    }
}

/// Work cut short by a stop signal before it could finish; nothing it
/// would have written was written. The exit status is 128 + `signal`.
#[derive(Debug)]
pub struct StopAsked {
    /// The signal received.
    pub signal: i32,
    /// What was under way (`building the latent cache of domain v`).
    pub during: String,
}

impl std::fmt::Display for StopAsked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by {} while {}, before training started",
            signal_name(self.signal),
            self.during
        )
    }
}

impl std::error::Error for StopAsked {}

/// `Err` once a stop was asked, naming what was under way (`during`).
///
/// # Errors
/// [`StopAsked`] after SIGINT, SIGTERM or SIGHUP.
pub fn check(during: &str) -> Result<(), StopAsked> {
    match asked() {
        None => Ok(()),
        Some(signal) => Err(StopAsked {
            signal,
            during: during.to_string(),
        }),
    }
}
