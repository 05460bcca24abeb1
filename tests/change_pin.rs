//! `hsm-signer change-pin`: one C_SetPIN, never retried, proven by a login with the new
//! PIN; checked with pkcs11-tool (OpenSC), a tool this project did not write. Every
//! refusal leaves the old PIN working.

use crate::common;
use std::process::Command;

use common::*;

const NEW_PIN: &str = "Nowy-PIN-2026";

/// pkcs11-tool logged in with `pin`: true when the login works.
fn pkcs11_login(token: &TestToken, pin: &str) -> Result<bool> {
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &token.conf)
        .args([
            "--module",
            MODULE,
            "--token-label",
            &token.label,
            "--login",
            "--pin",
            pin,
        ])
        .arg("--list-objects")
        .output()?;
    Ok(out.status.success())
}

#[test]
fn the_pin_changes_once_and_the_new_one_is_proven() -> Result {
    let token = TestToken::new()?;
    let new_pin = token.path("new-pin");
    write_secret(&new_pin, &format!("{NEW_PIN}\n"))?;
    let out = run_ok(
        token
            .on_token("change-pin")
            .arg("--new-pin-file")
            .arg(&new_pin),
    )?;
    let text = String::from_utf8(out.stdout)? + &String::from_utf8(out.stderr)?;
    assert!(text.contains("PIN changed on token"), "{text}");
    assert!(text.contains("restart"), "{text}");
    assert!(
        !text.contains(NEW_PIN) && !text.contains(PIN),
        "a PIN in the output: {text}"
    );
    assert!(
        pkcs11_login(&token, NEW_PIN)?,
        "pkcs11-tool cannot log in with the new PIN"
    );
    assert!(!pkcs11_login(&token, PIN)?, "the old PIN still works");
    Ok(())
}

#[test]
fn a_wrong_current_pin_is_tried_once_and_nothing_changes() -> Result {
    let token = TestToken::new()?;
    let wrong = token.path("wrong-pin");
    write_secret(&wrong, "9999")?;
    let new_pin = token.path("new-pin");
    write_secret(&new_pin, NEW_PIN)?;
    let err = run_fails(
        token
            .hsm_signer()
            .args([
                "change-pin",
                "--module",
                MODULE,
                "--token",
                &token.label,
                "--pin-file",
            ])
            .arg(&wrong)
            .arg("--new-pin-file")
            .arg(&new_pin),
    )?;
    assert!(
        err.contains("CKR_PIN_INCORRECT") && err.contains("not retried"),
        "{err}"
    );
    assert!(!err.contains("9999") && !err.contains(NEW_PIN), "{err}");
    assert!(
        pkcs11_login(&token, PIN)?,
        "the PIN changed after a refusal"
    );
    Ok(())
}

#[test]
fn a_new_pin_the_token_cannot_take_or_the_same_pin_is_refused_before_the_token() -> Result {
    let token = TestToken::new()?;
    let short = token.path("short-pin");
    write_secret(&short, "12")?;
    let err = run_fails(
        token
            .on_token("change-pin")
            .arg("--new-pin-file")
            .arg(&short),
    )?;
    assert!(
        err.contains("the new PIN has 2 characters") && err.contains("nothing was changed"),
        "{err}"
    );
    let same = token.path("same-pin");
    write_secret(&same, PIN)?;
    let err = run_fails(
        token
            .on_token("change-pin")
            .arg("--new-pin-file")
            .arg(&same),
    )?;
    assert!(err.contains("same as the current one"), "{err}");
    // No source for the new PIN and no terminal: the message names both ways.
    let err = run_fails(&mut token.on_token("change-pin"))?;
    assert!(
        err.contains("--new-pin-file") && err.contains("HSM_SIGNER_NEW_PIN"),
        "{err}"
    );
    assert!(
        pkcs11_login(&token, PIN)?,
        "the PIN changed after a refusal"
    );
    // The new PIN from the environment works too.
    run_ok(
        token
            .on_token("change-pin")
            .env("HSM_SIGNER_NEW_PIN", NEW_PIN),
    )?;
    assert!(pkcs11_login(&token, NEW_PIN)?);
    Ok(())
}
