//! Process hardening for the daemon: no core files, not dumpable (so another process of
//! the same uid cannot ptrace it or read its memory through /proc).

use nix::sys::resource::{setrlimit, Resource};

/// Makes the process not dumpable and sets its core limit to 0.
pub fn apply() -> Result<(), String> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot set the core limit to 0: {e}"))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the process non-dumpable: {e}"))?;
    Ok(())
}
