//! kryoptic test tokens: each gets its own KRYOPTIC_CONF naming one sqlite slot in a
//! directory of its own, and is initialised with pkcs11-tool (OpenSC), as an operator
//! would do it.
//!
//! kryoptic reads KRYOPTIC_CONF at C_Initialize, so every process that touches the token
//! (hsm-signer, pkcs11-tool, p11-kit) gets it through the token's `env`.

use std::process::Command;

use super::families::kryoptic_module;
use super::{run_ok, Backend, Result};

/// A fresh kryoptic token labelled `label` with the given SO PIN and user PIN.
pub fn create(label: &str, so_pin: &str, pin: &str) -> Result<Backend> {
    let module = kryoptic_module()
        .ok_or("no kryoptic module: run scripts/build-kryoptic and set HSM_SIGNER_TEST_KRYOPTIC")?;
    let dir = tempfile::Builder::new()
        .prefix("hsm-signer-kryoptic-")
        .tempdir()?;
    let db = dir.path().join("token.sqlite");
    let conf = dir.path().join("kryoptic.conf");
    std::fs::write(
        &conf,
        format!(
            "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
            db.display()
        ),
    )?;
    let env = vec![("KRYOPTIC_CONF".to_string(), conf.display().to_string())];
    let tool = || {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--module")
            .arg(&module);
        cmd
    };
    run_ok(tool().args(["--init-token", "--label", label, "--so-pin", so_pin]))?;
    run_ok(tool().args([
        "--token-label",
        label,
        "--init-pin",
        "--so-pin",
        so_pin,
        "--pin",
        pin,
    ]))?;
    Ok(Backend {
        module,
        env,
        guard: Some(Box::new(dir)),
    })
}
