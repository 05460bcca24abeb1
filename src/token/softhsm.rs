//! SoftHSM2 keeps each token as files in a directory readable by the account that created
//! it. A write (import, import-cert, generate, remove, pin change/unlock) run as root on a token
//! that belongs to the daemon's account leaves root-owned 0600 object files that the daemon
//! then cannot read: it refuses to reload, and `list` shows a PROBLEM. This guard refuses
//! such a write up front and names the account to run it as.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The `directories.tokendir` of the configuration SoftHSM reads (`SOFTHSM2_CONF`, else
/// `/etc/softhsm/softhsm2.conf`): where every token's files are.
pub fn tokens_dir() -> Option<PathBuf> {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "directories.tokendir").then(|| PathBuf::from(value.trim()))
    })
}

/// The directory of the token with this serial, under [`tokens_dir`].
pub fn token_dir(serial: &str) -> Option<PathBuf> {
    let tokens = tokens_dir()?;
    std::fs::read_dir(tokens).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().replace('-', "");
        name.ends_with(serial).then(|| entry.path())
    })
}

/// True when `module` is SoftHSM2's.
pub fn is_softhsm(module: &Path) -> bool {
    module
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("softhsm"))
}

/// `Err` with what to run instead when root is about to write to a SoftHSM token that
/// another account owns.
pub fn check_writer(module: &Path, serial: &str) -> Result<(), String> {
    if !is_softhsm(module) || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(dir) = token_dir(serial) else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(&dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let owner = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| meta.uid().to_string());
    Err(format!(
        "the SoftHSM token's directory {} belongs to {owner:?}; as root this command would leave files {owner} cannot read, and the daemon would stop finding its keys. Run it as that account instead: runuser -u {owner} -- hsm-signer ... (runuser -u keeps SOFTHSM2_CONF and the exported HSM_SIGNER_PIN; sudo drops them); nothing was changed",
        dir.display()
    ))
}

/// At `serve`'s start. With SoftHSM the token's files and the PIN file together are the
/// key: whoever copies both can sign as the municipality anywhere (tried: the copy signed,
/// and openssl verified the signature against the municipality's certificate). When both
/// lie on one filesystem, a backup, a snapshot or the drive itself carries both, so this
/// logs one warning naming what compensates. `accepted` (`[token]
/// allow_softhsm_in_production = true`) says the operator has done one of those things.
pub fn warn_if_pin_beside_tokens(module: &Path, pin_file: &Path, accepted: bool) {
    if accepted || !is_softhsm(module) {
        return;
    }
    let Some(tokens) = tokens_dir() else {
        return;
    };
    let (Ok(pin), Ok(dir)) = (std::fs::metadata(pin_file), std::fs::metadata(&tokens)) else {
        return;
    };
    if pin.dev() == dir.dev() {
        tracing::warn!(
            pin_file = %pin_file.display(),
            token_dir = %tokens.display(),
            "SoftHSM keeps the key in files that the PIN file on the same filesystem unlocks: a copy of that disk (a backup, a snapshot, the drive) is a copy of the key. Encrypt the disk, keep both out of backups, put the PIN file on a separate medium, or use a real token (docs/security.md, \"A copy of the server's disk\"); then set [token] allow_softhsm_in_production = true"
        );
    }
}
