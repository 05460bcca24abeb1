//! What hsm-signer says when a module cannot be used, on real modules (issue 15): the
//! CKR_ code always named, a failed C_Initialize included; hints that name the settings
//! of the module at hand (SOFTHSM2_CONF for SoftHSM only, KRYOPTIC_CONF for kryoptic);
//! the list of modules on the system only when a module could not be loaded at all; and
//! `tokens` leaving pkcs11-spy out and keeping modules' own stderr chatter out of its
//! output.

use crate::common;

use std::process::Command;

use common::families::{kryoptic_module, run_on};
use common::*;

/// OpenSC's pkcs11-spy (Debian `opensc-pkcs11`): without PKCS11SPY it prints a banner
/// and an error on stderr and fails C_GetInterface with CKR_DEVICE_ERROR.
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";

fn hsm_signer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-signer"));
    cmd.env_remove("HSM_SIGNER_MODULE")
        .env_remove("HSM_SIGNER_TOKEN")
        .env_remove("HSM_SIGNER_LOG")
        .env_remove("HSM_SIGNER_PIN")
        .stdin(std::process::Stdio::null());
    cmd
}

/// `hsm-signer list` on `module` and token `label`; must fail; returns stderr.
fn list_fails(
    module: &std::path::Path,
    label: &str,
    env: &[(&str, &str)],
    unset: &[&str],
) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let pin = dir.path().join("pin");
    write_secret(&pin, PIN)?;
    let mut cmd = hsm_signer();
    for key in unset {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied())
        .arg("list")
        .arg("--module")
        .arg(module)
        .args(["--token", label, "--pin-file"])
        .arg(&pin);
    run_fails(&mut cmd)
}

fn assert_no_module_list(stderr: &str) {
    assert!(
        !stderr.contains("modules found on this system"),
        "the module loaded, yet the message lists the system's modules: {stderr}"
    );
}

#[test]
fn softhsm_failing_c_initialize_names_the_ckr_code_and_softhsm2_conf_only() -> Result {
    let stderr = list_fails(
        std::path::Path::new(MODULE),
        "GSKO",
        &[("SOFTHSM2_CONF", "/nonexistent/softhsm2.conf")],
        &[],
    )?;
    assert!(
        stderr.contains("C_Initialize returned CKR_GENERAL_ERROR"),
        "{stderr}"
    );
    assert!(stderr.contains("SOFTHSM2_CONF"), "{stderr}");
    assert!(!stderr.contains("KRYOPTIC_CONF"), "{stderr}");
    assert_no_module_list(&stderr);
    Ok(())
}

#[test]
fn kryoptic_failing_c_initialize_names_the_ckr_code_and_kryoptic_conf() -> Result {
    run_on(Family::Kryoptic, |_| {
        let module = kryoptic_module().ok_or("no kryoptic module")?;
        // Without KRYOPTIC_CONF (nor a default configuration) kryoptic has no slot.
        let home = tempfile::tempdir()?;
        let home = home.path().display().to_string();
        let stderr = list_fails(
            &module,
            "GSKO",
            &[("HOME", &home), ("XDG_CONFIG_HOME", &home)],
            &["KRYOPTIC_CONF"],
        )?;
        assert!(
            stderr.contains("C_Initialize returned CKR_"),
            "no CKR code for the failed C_Initialize: {stderr}"
        );
        assert!(stderr.contains("KRYOPTIC_CONF"), "{stderr}");
        assert!(!stderr.contains("SOFTHSM2_CONF"), "{stderr}");
        assert_no_module_list(&stderr);
        Ok(())
    })
}

#[test]
fn kryoptic_without_its_database_hints_at_kryoptic_conf_not_softhsm() -> Result {
    run_on(Family::Kryoptic, |family| {
        let token = TestToken::of(family)?;
        // KRYOPTIC_CONF names a file that is not there (a typo, another account's home):
        // kryoptic initialises with no slot at all.
        let conf = token.path("no-such-kryoptic.conf").display().to_string();
        let stderr = list_fails(
            &token.module,
            &token.label,
            &[("KRYOPTIC_CONF", &conf)],
            &[],
        )?;
        assert!(stderr.contains("The module shows no token"), "{stderr}");
        assert!(stderr.contains("KRYOPTIC_CONF"), "{stderr}");
        assert!(!stderr.contains("SOFTHSM2_CONF"), "{stderr}");
        assert_no_module_list(&stderr);
        Ok(())
    })
}

/// A configuration whose database directory is missing fails C_Initialize itself.
#[test]
fn kryoptic_with_a_missing_database_directory_names_the_ckr_code() -> Result {
    run_on(Family::Kryoptic, |family| {
        let token = TestToken::of(family)?;
        let conf = token.path("elsewhere.conf");
        std::fs::write(
            &conf,
            format!(
                "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                token.path("missing/token.sqlite").display()
            ),
        )?;
        let conf = conf.display().to_string();
        let stderr = list_fails(
            &token.module,
            &token.label,
            &[("KRYOPTIC_CONF", &conf)],
            &[],
        )?;
        assert!(
            stderr.contains("C_Initialize returned CKR_TOKEN_NOT_PRESENT"),
            "{stderr}"
        );
        assert!(stderr.contains("KRYOPTIC_CONF"), "{stderr}");
        assert!(!stderr.contains("SOFTHSM2_CONF"), "{stderr}");
        assert_no_module_list(&stderr);
        Ok(())
    })
}

#[test]
fn a_module_that_does_not_load_lists_the_modules_found_without_the_spy() -> Result {
    let stderr = list_fails(
        std::path::Path::new("/usr/lib/nie-ma/libvendor-pkcs11.so"),
        "GSKO",
        &[],
        &[],
    )?;
    assert!(
        stderr.contains("PKCS#11 modules found on this system:"),
        "{stderr}"
    );
    assert!(stderr.contains(MODULE), "{stderr}");
    assert!(!stderr.contains("pkcs11-spy"), "{stderr}");
    Ok(())
}

#[test]
fn tokens_leaves_the_spy_out_and_keeps_module_chatter_out_of_its_output() -> Result {
    let out = hsm_signer().arg("tokens").output()?;
    let (stdout, stderr) = (
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(MODULE),
        "SoftHSM is not discovered: {stdout}"
    );
    assert!(!stdout.contains("pkcs11-spy"), "{stdout}");
    // Whatever the discovered modules print (tpm2-tss's "ERROR:tcti:" lines when no TPM
    // is reachable, kryoptic's or SoftHSM's warnings) stays out of hsm-signer's stderr.
    assert!(stderr.trim().is_empty(), "module chatter leaked: {stderr}");
    Ok(())
}

#[test]
fn a_noisy_module_named_explicitly_is_captured_and_its_ckr_code_named() -> Result {
    if !std::path::Path::new(SPY).is_file() {
        return Err(format!("{SPY} missing: apt-get install opensc").into());
    }
    let out = hsm_signer()
        .env_remove("PKCS11SPY")
        .args(["tokens", "--module", SPY])
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    );
    assert!(
        stdout.contains("C_GetInterface returned CKR_DEVICE_ERROR"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line(s) of its own diagnostics; -v shows them"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("PKCS11SPY"),
        "the spy's own error leaked: {stderr}"
    );
    // With -v, the module's lines are shown, as what the module wrote.
    let out = hsm_signer()
        .env_remove("PKCS11SPY")
        .args(["-v", "tokens", "--module", SPY])
        .output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("the module wrote") && stderr.contains("PKCS11SPY"),
        "{stderr}"
    );
    Ok(())
}
