//! `hsm-signer pin change` and `pin unlock` on SoftHSM: one PIN operation, never retried,
//! the token's PIN flags shown first, and the result checked with pkcs11-tool (OpenSC),
//! a tool this project did not write. SoftHSM 2.6.1 never locks a PIN (it only raises
//! CKF_USER_PIN_COUNT_LOW), so "locked" here is the state after wrong PINs that a card
//! would lock on.

use crate::common;
use std::process::Command;

use common::fixtures::*;
use common::*;

const NEW_PIN: &str = "Nowy-PIN-2026";
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";

/// pkcs11-tool logged in with `pin` (as SO when `so`): true when the login works.
fn pkcs11_login(token: &TestToken, pin: &str, so: bool) -> Result<bool> {
    let mut cmd = Command::new("pkcs11-tool");
    cmd.env("SOFTHSM2_CONF", &token.conf).args([
        "--module",
        MODULE,
        "--token-label",
        &token.label,
        "--login",
    ]);
    if so {
        // An SO login needs a read-write session (else CKR_SESSION_READ_ONLY_EXISTS).
        cmd.args(["--session-rw", "--login-type", "so", "--so-pin", pin]);
    } else {
        cmd.args(["--pin", pin]);
    }
    Ok(cmd.arg("--list-objects").output()?.status.success())
}

/// The PKCS#11 calls pkcs11-spy logged, e.g. "Login", "InitPIN".
fn spied_calls(log: &std::path::Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| {
            l.split_once(": C_")
                .map(|(_, call)| call.trim().to_string())
        })
        .collect())
}

/// A token holding an imported RSA key labelled gsko-epuap.
fn token_with_key() -> Result<TestToken> {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    run_ok(&mut import_cmd(&token, &p12, &password))?;
    Ok(token)
}

#[test]
fn unlock_after_wrong_pins_sets_a_new_pin_and_the_key_signs_again() -> Result {
    let token = token_with_key()?;
    let wrong = secret_file(token.dir.path(), "wrong-pin", "0000")?;
    for _ in 0..3 {
        let err = run_fails(
            token
                .hsm_signer()
                .args(["list", "--module", MODULE, "--token", &token.label])
                .arg("--pin-file")
                .arg(&wrong),
        )?;
        assert!(err.contains("wrong PIN"), "{err}");
    }
    let so = secret_file(token.dir.path(), "so-pin", SO_PIN)?;
    let new = secret_file(token.dir.path(), "new-pin", NEW_PIN)?;
    let spy_log = token.path("spy.log");
    let out = run_ok(
        token
            .hsm_signer()
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &spy_log)
            .args(["pin", "unlock", "--module", SPY, "--token", &token.label])
            .arg("--so-pin-file")
            .arg(&so)
            .arg("--new-pin-file")
            .arg(&new),
    )?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("user PIN: retry count low"),
        "the flags before: {stderr}"
    );
    assert!(
        stdout.contains("set with the SO PIN and proven")
            && stdout.contains("User PIN status now: no retry warnings")
            && stdout.contains("pin_file"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(NEW_PIN) && !stderr.contains(NEW_PIN) && !stderr.contains(SO_PIN),
        "a PIN in the output"
    );
    let calls = spied_calls(&spy_log)?;
    assert_eq!(
        calls.iter().filter(|c| *c == "InitPIN").count(),
        1,
        "{calls:?}"
    );
    // One SO login, one user login with the new PIN as proof.
    assert_eq!(
        calls.iter().filter(|c| *c == "Login").count(),
        2,
        "{calls:?}"
    );
    assert!(
        pkcs11_login(&token, NEW_PIN, false)?,
        "the new PIN does not log in"
    );
    assert!(
        !pkcs11_login(&token, PIN, false)?,
        "the old PIN still works"
    );
    // The key signs again with the new PIN: verify signs a challenge and checks it.
    let out = run_ok(
        token
            .hsm_signer()
            .args(["verify", "--module", MODULE, "--token", &token.label])
            .args(["--label", "gsko-epuap", "--pin-file"])
            .arg(&new),
    )?;
    assert!(String::from_utf8(out.stdout)?.starts_with("Key works."));
    Ok(())
}

#[test]
fn a_wrong_so_pin_is_tried_once_named_and_nothing_changes() -> Result {
    let token = TestToken::new()?;
    let so = secret_file(token.dir.path(), "so-pin", "8765")?;
    let new = secret_file(token.dir.path(), "new-pin", NEW_PIN)?;
    let spy_log = token.path("spy.log");
    let out = token
        .hsm_signer()
        .env("PKCS11SPY", MODULE)
        .env("PKCS11SPY_OUTPUT", &spy_log)
        .args(["pin", "unlock", "--module", SPY, "--token", &token.label])
        .arg("--so-pin-file")
        .arg(&so)
        .arg("--new-pin-file")
        .arg(&new)
        .output()?;
    let err = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("wrong SO PIN for token \"{}\"", token.label))
            && err.contains("not retried")
            && err.contains("SO PIN status now: retry count low"),
        "{err}"
    );
    assert!(!err.contains("8765") && !err.contains(NEW_PIN), "{err}");
    let calls = spied_calls(&spy_log)?;
    assert_eq!(
        calls.iter().filter(|c| *c == "Login").count(),
        1,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c == "InitPIN"), "{calls:?}");
    assert!(pkcs11_login(&token, PIN, false)?, "the user PIN changed");
    Ok(())
}

#[test]
fn pin_change_changes_the_user_pin_and_with_so_the_so_pin() -> Result {
    let token = TestToken::new()?;
    let new = secret_file(token.dir.path(), "new-pin", NEW_PIN)?;
    // `pin` needs its subcommand: a usage error, exit 2.
    let out = token.on_token("pin").output()?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run_ok(
        token
            .hsm_signer()
            .args(["pin", "change", "--module", MODULE, "--token", &token.label])
            .arg("--pin-file")
            .arg(&token.pin_file)
            .arg("--new-pin-file")
            .arg(&new),
    )?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains("PIN changed on token") && text.contains("pin_file"),
        "{text}"
    );
    assert!(pkcs11_login(&token, NEW_PIN, false)?);
    assert!(!pkcs11_login(&token, PIN, false)?);

    let so = secret_file(token.dir.path(), "so-pin", SO_PIN)?;
    let new_so = secret_file(token.dir.path(), "new-so-pin", "Nowy-PUK-2026")?;
    let out = run_ok(
        token
            .hsm_signer()
            .args([
                "pin",
                "change",
                "--so",
                "--module",
                MODULE,
                "--token",
                &token.label,
            ])
            .arg("--pin-file")
            .arg(&so)
            .arg("--new-pin-file")
            .arg(&new_so),
    )?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("SO PIN changed on token"), "{text}");
    assert!(
        pkcs11_login(&token, "Nowy-PUK-2026", true)?,
        "the new SO PIN does not log in"
    );
    assert!(
        !pkcs11_login(&token, SO_PIN, true)?,
        "the old SO PIN still works"
    );
    assert!(
        pkcs11_login(&token, NEW_PIN, false)?,
        "the user PIN changed too"
    );
    // Without a file or HSM_SIGNER_SO_PIN and no terminal: the message names both.
    let err = run_fails(
        token
            .hsm_signer()
            .args(["pin", "unlock", "--module", MODULE, "--token", &token.label])
            .arg("--new-pin-file")
            .arg(&new),
    )?;
    assert!(
        err.contains("--so-pin-file") && err.contains("HSM_SIGNER_SO_PIN"),
        "{err}"
    );
    Ok(())
}

/// The token's flags line as `pkcs11-tool -L` (OpenSC) shows it for this token.
fn token_flags(token: &TestToken) -> Result<String> {
    let out = run_ok(token.tool("pkcs11-tool").args(["--module", MODULE, "-L"]))?;
    let text = String::from_utf8(out.stdout)?;
    let block = text
        .split("Slot ")
        .find(|b| b.contains(&format!("token label        : {}\n", token.label)))
        .ok_or("token not listed by pkcs11-tool -L")?;
    Ok(block
        .lines()
        .find(|l| l.trim_start().starts_with("token flags"))
        .ok_or("no flags line")?
        .to_string())
}

#[test]
fn a_current_pin_outside_the_token_limits_is_refused_without_spending_a_try() -> Result {
    let token = token_with_key()?;
    let spy_log = token.path("spy.log");
    let list = || {
        let mut cmd = token.hsm_signer();
        cmd.env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &spy_log)
            .args(["list", "--module", SPY, "--token", &token.label]);
        cmd
    };
    let empty = secret_file(token.dir.path(), "empty-pin", "")?;
    let one = secret_file(token.dir.path(), "one-pin", "1")?;
    let long = secret_file(token.dir.path(), "long-pin", &"1".repeat(300))?;
    for (file, bytes) in [(&empty, 0), (&one, 1), (&long, 300)] {
        let out = list().arg("--pin-file").arg(file).output()?;
        let err = String::from_utf8(out.stderr)?;
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(
            err.contains(&format!(
                "the PIN for token \"{}\" has {bytes} bytes; the token takes 4 to 255: not logging in, so no try was spent",
                token.label
            )),
            "{err}"
        );
    }
    // 100,000 bytes from the environment, which has no 4 KiB file bound.
    let out = list().env("HSM_SIGNER_PIN", "7".repeat(100_000)).output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("has 100000 bytes"), "{err}");
    // The old PIN of `pin change` is checked the same way.
    let new = secret_file(token.dir.path(), "new-pin", NEW_PIN)?;
    let out = token
        .hsm_signer()
        .env("PKCS11SPY", MODULE)
        .env("PKCS11SPY_OUTPUT", &spy_log)
        .args(["pin", "change", "--module", SPY, "--token", &token.label])
        .arg("--pin-file")
        .arg(&one)
        .arg("--new-pin-file")
        .arg(&new)
        .output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("has 1 bytes"), "{err}");

    let calls = spied_calls(&spy_log)?;
    assert!(
        !calls.iter().any(|c| c == "Login" || c == "SetPIN"),
        "{calls:?}"
    );
    let flags = token_flags(&token)?;
    assert!(!flags.contains("user PIN count low"), "{flags}");
    // Control: a wrong PIN of an accepted length does reach C_Login and is counted.
    let wrong = secret_file(token.dir.path(), "wrong-pin", "0000")?;
    run_fails(list().arg("--pin-file").arg(&wrong))?;
    let flags = token_flags(&token)?;
    assert!(flags.contains("user PIN count low"), "{flags}");
    assert!(pkcs11_login(&token, PIN, false)?, "the PIN still works");
    Ok(())
}
