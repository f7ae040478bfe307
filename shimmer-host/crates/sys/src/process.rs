//! Processes: signalling a whole process group, a child that ends with its
//! parent, and the `shimmer` binary's start-up settings. Signals go
//! through `nix`.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::{Child, Command};

/// Sends SIGTERM (or SIGKILL when `kill`) to the process group `child`
/// leads (a child spawned with `process_group(0)`); a group that is gone
/// makes it a no-op.
pub fn signal_group(child: &Child, kill: bool) {
    let Ok(id) = i32::try_from(child.id()) else {
        return;
    };
    let signal = if kill {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let _ = killpg(Pid::from_raw(id), signal);
}

/// Asks the kernel to send the child SIGTERM when this process dies, so no
/// child outlives a killed parent (Linux; elsewhere a no-op). Fails the
/// spawn if the parent died before the request took effect.
pub fn end_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes the
        // async-signal-safe calls `prctl` and `getppid`.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    return Err(std::io::Error::other("the launching process is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`shimmer test RUN |
/// head`) would panic; like other Unix tools, end quietly instead. Call at
/// start-up, before any thread exists.
pub fn restore_default_sigpipe() {
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
/// glibc's own `MALLOC_*_` environment variables win. Call at start-up,
/// before any thread exists.
pub fn keep_freed_memory() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_group_signal_reaches_the_child() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        signal_group(&child, false);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn a_child_ended_with_its_parent_still_runs() {
        let mut command = Command::new("true");
        end_with_parent(&mut command);
        assert!(command.status().unwrap().success());
    }
}
