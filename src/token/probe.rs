//! `hsm-signer tokens`: loading each module found on the system and listing its tokens,
//! without letting the modules' own diagnostics pass for hsm-signer's.
//!
//! Modules write to the process's standard error as they please: tpm2-pkcs11 (through
//! tpm2-tss) prints a dozen "ERROR:tcti:..." lines when no TPM is reachable, pkcs11-spy
//! a banner and "Error: no module specified", kryoptic sqlite warnings. Printed between
//! hsm-signer's lines, they read as hsm-signer failing. So while one module is probed,
//! file descriptor 2 points at an unnamed temporary file; what the module wrote is
//! logged at info level (`-v`) under the module's name and counted in the listing.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::TokenError;
use super::module::Module;
use super::summary::TokenSummary;

/// What probing one module found.
#[derive(Debug)]
pub struct Probe {
    /// The module.
    pub path: PathBuf,
    /// Its tokens, or why it could not be used.
    pub result: Result<Vec<TokenSummary>, TokenError>,
    /// The lines the module itself wrote to standard error meanwhile.
    pub chatter: Vec<String>,
}

/// Loads `path`, initialises it, lists its tokens and finalises it, with the module's
/// standard error captured (when the system allows an unnamed temporary file; else it
/// passes through as before).
pub fn probe(path: &Path) -> Probe {
    let capture = Capture::start();
    let result = Module::open(path)
        .and_then(|m| m.tokens())
        .map(|tokens| tokens.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    // The module is finalised (C_Finalize) when `Module` drops above, inside the capture.
    let chatter = capture.map(Capture::finish).unwrap_or_default();
    for line in &chatter {
        tracing::info!(module = %path.display(), "the module wrote: {line}");
    }
    Probe {
        path: path.to_path_buf(),
        result,
        chatter,
    }
}

/// File descriptor 2 redirected into an unnamed temporary file.
struct Capture {
    saved: RawFd,
    file: File,
}

impl Capture {
    fn start() -> Option<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(std::env::temp_dir())
            .ok()?;
        let _ = std::io::stderr().flush();
        let saved = nix::unistd::dup(2).ok()?;
        if nix::unistd::dup2(file.as_raw_fd(), 2).is_err() {
            let _ = nix::unistd::close(saved);
            return None;
        }
        Some(Self { saved, file })
    }

    fn finish(mut self) -> Vec<String> {
        let _ = std::io::stderr().flush();
        let _ = nix::unistd::dup2(self.saved, 2);
        let _ = nix::unistd::close(self.saved);
        let mut text = String::new();
        if self.file.rewind().is_ok() {
            let mut bytes = Vec::new();
            let _ = self.file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text.lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}
