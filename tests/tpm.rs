//! The TPM as a token family: tpm2-pkcs11 1.9 on swtpm, through tpm2-abrmd, each test on
//! a TPM of its own (tests/common/tpm.rs).
//!
//! What works there: keys generated on the TPM, listed, verified, checked, and signing
//! through the daemon (RS256 and ES256, checked with the openssl CLI), also across a TPM
//! outage. What the TPM refuses, and what hsm-signer then says: a `.p12` import through
//! PKCS#11 (the path is `tpm2_ptool import`, then `hsm-signer import-cert`), and a PIN
//! locked by the TPM's dictionary-attack protection.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::daemon::{openssl_verify, raw_to_der, wait_until, Daemon};
use common::tpm::{self, with_rig};
use common::*;
use openssl::x509::X509;

/// `hsm-signer generate` of a signing key with a self-signed certificate; returns the
/// certificate as the token holds it.
fn generate(token: &TestToken, label: &str, key_type: &str) -> Result<X509> {
    let out = run_ok(token.on_token("generate").args([
        "--label",
        label,
        "--key-type",
        key_type,
        "--purpose",
        "sign",
        "--subject",
        &format!("/C=PL/O=Gmina Przykładowo/CN={label}"),
        "--self-signed-days",
        "20",
    ]))?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains("Generated on the token and proven."),
        "{text}"
    );
    certificate_of(token, label)
}

/// The certificate labelled `label`, read from the token with pkcs11-tool.
fn certificate_of(token: &TestToken, label: &str) -> Result<X509> {
    Ok(X509::from_der(&token.read_object("cert", label)?)?)
}

fn config_text(token: &TestToken, keys: &[(&str, &str, &str)], extra_server: &str) -> String {
    let mut text = format!(
        "[token]\nmodule = \"{}\"\ntoken = \"{}\"\npin_file = \"{}\"\nsessions = 2\n\n[server]\nsocket = \"{}\"\nsocket_mode = \"0660\"\nrequest_timeout_ms = 3000\n{extra_server}\n\n[audit]\nfile = \"{}\"\n\n[health]\ninterval_seconds = 1\n",
        token.module_str(),
        token.label,
        token.pin_file.display(),
        token.path("hsm-signer.sock").display(),
        token.path("audit.jsonl").display(),
    );
    for (name, label, algorithm) in keys {
        text.push_str(&format!(
            "\n[[keys]]\nname = \"{name}\"\nlabel = \"{label}\"\nalgorithms = [\"{algorithm}\"]\n"
        ));
    }
    text
}

fn start_daemon(token: &TestToken, keys: &[(&str, &str, &str)], extra: &str) -> Result<Daemon> {
    let config = token.path("config.toml");
    std::fs::write(&config, config_text(token, keys, extra))?;
    Daemon::start_command(token.hsm_signer(), token.dir.path(), config)
}

/// Signs `data` through the daemon; returns the HTTP status and the signature (DER for
/// ECDSA, so openssl can check it).
fn sign(daemon: &Daemon, key: &str, algorithm: &str, data: &[u8]) -> Result<(u16, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({"algorithm": algorithm, "data": b64.encode(data)});
    let (status, answer) = daemon.json(
        "POST",
        &format!("/v1/keys/{key}/sign"),
        Some(&body.to_string()),
    )?;
    if status != 200 {
        return Ok((status, answer.to_string().into_bytes()));
    }
    let raw = b64.decode(answer["signature"].as_str().ok_or("no signature")?)?;
    let signature = if algorithm == "ES256" {
        raw_to_der(&raw)?
    } else {
        raw
    };
    Ok((status, signature))
}

/// Starts the TPM behind `token` again and waits (at most 30 s) until the daemon signs
/// `data` with RS256 under `cert`; the signature is checked with the openssl CLI. Returns
/// how long signing took to come back after the TPM did.
fn start_tpm_and_sign_again(
    token: &TestToken,
    daemon: &Daemon,
    cert: &X509,
    data: &[u8],
) -> Result<Duration> {
    with_rig(token, |rig| rig.start())?;
    let started = Instant::now();
    let mut signature = Vec::new();
    wait_until(Duration::from_secs(30), "signing to come back", || {
        let (status, answer) = sign(daemon, "epuap", "RS256", data)?;
        signature = answer;
        Ok(status == 200)
    })
    .map_err(|e| format!("{e}; daemon log:\n{}", daemon.log_text()))?;
    let took = started.elapsed();
    assert!(openssl_verify(
        token.dir.path(),
        cert,
        data,
        &signature,
        &["-sha256"]
    )?);
    Ok(took)
}

#[test]
fn keys_generated_on_the_tpm_list_verify_check_and_sign_through_the_daemon() -> Result {
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    let rsa = generate(&token, "gsko-epuap", "rsa-2048")?;
    let ec = generate(&token, "gsko-wk", "ec-p256")?;

    let list = run_ok(&mut token.on_token("list"))?;
    let text = String::from_utf8(list.stdout)?;
    for label in ["gsko-epuap", "gsko-wk"] {
        assert!(text.contains(&format!("Label:        {label}")), "{text}");
    }
    assert!(
        text.contains("sensitive=yes, extractable=no"),
        "generated keys must not be extractable: {text}"
    );
    for label in ["gsko-epuap", "gsko-wk"] {
        let out = run_ok(token.on_token("verify").args(["--label", label]))?;
        assert!(String::from_utf8(out.stdout)?.starts_with("Key works."));
    }
    // check reads only certificates and never logs in.
    let check = token
        .hsm_signer()
        .args([
            "check",
            "--module",
            &token.module_str(),
            "--token",
            &token.label,
        ])
        .output()?;
    let summary = String::from_utf8(check.stdout)?;
    // 20-day certificates: inside the default 30-day warning window, so WARNING (exit 1).
    assert_eq!(check.status.code(), Some(1), "{summary}");
    assert!(
        summary.contains("gsko-epuap") && summary.contains("gsko-wk"),
        "{summary}"
    );

    let daemon = start_daemon(
        &token,
        &[("epuap", "gsko-epuap", "RS256"), ("wk", "gsko-wk", "ES256")],
        "",
    )?;
    let data =
        b"<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">TPM</ds:SignedInfo>";
    let (status, signature) = sign(&daemon, "epuap", "RS256", data)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signature));
    assert_eq!(signature.len(), 256);
    assert!(openssl_verify(
        token.dir.path(),
        &rsa,
        data,
        &signature,
        &["-sha256"]
    )?);
    let (status, signature) = sign(&daemon, "wk", "ES256", data)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signature));
    assert!(openssl_verify(
        token.dir.path(),
        &ec,
        data,
        &signature,
        &["-sha256"]
    )?);
    // A signature over other data must not verify: the check can fail.
    assert!(!openssl_verify(
        token.dir.path(),
        &ec,
        b"other",
        &signature,
        &["-sha256"]
    )?);
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_tpm_that_goes_away_under_the_daemon_is_reported_down_then_serves_again() -> Result {
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    let cert = generate(&token, "gsko-epuap", "rsa-2048")?;
    let daemon = start_daemon(&token, &[("epuap", "gsko-epuap", "RS256")], "")?;
    let data = b"before the outage";
    let (status, _) = sign(&daemon, "epuap", "RS256", data)?;
    assert_eq!(status, 200);

    with_rig(&token, |rig| rig.stop())?;
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "health to report the TPM down",
        || {
            let (status, body) = daemon.json("GET", "/v1/health", None)?;
            Ok(status == 503 && body.to_string().contains("token"))
        },
    )?;
    let (status, answer) = sign(&daemon, "epuap", "RS256", b"during the outage")?;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
    eprintln!(
        "reported down {:?} after the TPM stopped",
        stopped.elapsed()
    );

    let took = start_tpm_and_sign_again(&token, &daemon, &cert, b"after the outage")?;
    eprintln!("signing again {took:?} after the TPM came back");
    // The TPM got no orderly shutdown: it may count that towards its lockout.
    let state = with_rig(&token, |rig| rig.lockout_state())?;
    let counters: Vec<&str> = state
        .lines()
        .filter(|l| l.contains("LOCKOUT_COUNTER") || l.contains("inLockout"))
        .collect();
    eprintln!("after one unclean restart: {}", counters.join("; "));
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_tpm_in_dictionary_attack_lockout_is_named_with_its_cure() -> Result {
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    generate(&token, "gsko-epuap", "rsa-2048")?;
    // Three wrong PINs from another program (swtpm's default TPM2_PT_MAX_AUTH_FAIL is 3).
    for _ in 0..3 {
        let out = token
            .tool("pkcs11-tool")
            .args([
                "--module",
                &token.module_str(),
                "--token-label",
                &token.label,
            ])
            .args(["--login", "--pin", "0000", "--list-objects"])
            .output()?;
        assert!(!out.status.success());
    }
    assert!(
        with_rig(&token, |rig| rig.lockout_state())?.contains("inLockout:                 1"),
        "the TPM should be in lockout now"
    );
    let out = token.on_token("list").output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("dictionary-attack lockout"), "{stderr}");
    assert!(stderr.contains("CKR_PIN_LOCKED"), "{stderr}");
    assert!(
        stderr.contains("tpm2_dictionarylockout --clear-lockout"),
        "{stderr}"
    );
    assert!(!stderr.contains("with the SO PIN"), "{stderr}");

    // The cure the message names works, and the right PIN logs in again.
    with_rig(&token, |rig| rig.clear_lockout())?;
    let out = run_ok(&mut token.on_token("list"))?;
    assert!(String::from_utf8(out.stdout)?.contains("Label:        gsko-epuap"));
    Ok(())
}

/// The objects on the token as pkcs11-tool lists them (header, label and ID lines).
fn objects(token: &TestToken) -> Result<Vec<String>> {
    let out = run_ok(token.pkcs11_tool().arg("--list-objects"))?;
    let mut lines: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| l.contains("Object;") || l.contains("label:") || l.contains("ID:"))
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

/// docs/tpm.md's way in for a `.p12` key: decrypted only into a pipe, re-encrypted
/// under a one-time transport password in a private directory, `tpm2_ptool import`ed,
/// and shredded.
fn tpm2_ptool_import(
    token: &TestToken,
    p12: &std::path::Path,
    password: &std::path::Path,
    label: &str,
    algorithm: &str,
) -> Result {
    let script = r#"set -eu
umask 077
work=$(mktemp -d)
trap 'shred -u "$work"/* 2>/dev/null || true; rmdir "$work"' EXIT
openssl rand -hex 32 | tr -d '\n' > "$work/transport"
openssl pkcs12 -legacy -in "$P12" -nocerts -nodes -passin "file:$P12_PASSWORD" |
    openssl pkey -aes256 -passout "file:$work/transport" -out "$work/key.pem"
tpm2_ptool import --label "$TOKEN" --key-label "$KEY_LABEL" --algorithm "$ALGORITHM" \
    --privkey "$work/key.pem" --passin "file:$work/transport" --userpin "$(cat "$PIN_FILE")" >/dev/null
"#;
    run_ok(
        token
            .tool("bash")
            .args(["-c", script])
            .env("P12", p12)
            .env("P12_PASSWORD", password)
            .env("TOKEN", &token.label)
            .env("KEY_LABEL", label)
            .env("ALGORITHM", algorithm)
            .env("PIN_FILE", &token.pin_file),
    )?;
    Ok(())
}

#[test]
fn a_p12_import_is_refused_with_the_tpm_path_then_tpm2_ptool_import_and_import_cert_work() -> Result
{
    use common::fixtures::{secret_file, write_p12, Ca, KeySpec};
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", "hasło")?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let before = objects(&token)?;
    for method in ["auto", "create", "unwrap"] {
        let err = run_fails(
            token
                .on_token("import")
                .arg("--p12")
                .arg(&p12)
                .arg("--password-file")
                .arg(&password)
                .args(["--method", method]),
        )?;
        assert!(
            err.contains("takes no private key through PKCS#11"),
            "{method}: {err}"
        );
        assert!(err.contains("it is a TPM (tpm2-pkcs11)"), "{method}: {err}");
        assert!(
            err.contains("Nothing was written to the token"),
            "{method}: {err}"
        );
        assert!(err.contains("tpm2_ptool import"), "{method}: {err}");
        assert!(err.contains("hsm-signer import-cert"), "{method}: {err}");
        assert!(err.contains("hsm-signer generate"), "{method}: {err}");
        // Not the unwrap mechanism message that told the operator nothing.
        assert!(!err.contains("CKM_RSA_PKCS_OAEP"), "{method}: {err}");
        assert_eq!(objects(&token)?, before, "{method} left something behind");
    }

    tpm2_ptool_import(&token, &p12, &password, "gsko-epuap", "rsa")?;
    let cert = token.path("epuap.pem");
    std::fs::write(&cert, leaf.cert.to_pem()?)?;
    let out = run_ok(
        token
            .on_token("import-cert")
            .args(["--label", "gsko-epuap", "--cert"])
            .arg(&cert),
    )?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with("Certificate added beside the key (it had none) and proven."),
        "{text}"
    );
    assert!(
        text.contains("CKA_EXTRACTABLE was true on the key; set to false now"),
        "{text}"
    );
    assert!(text.contains("extractable=no"), "{text}");
    assert!(!text.contains("failed its proof"), "{text}");
    let out = run_ok(token.on_token("verify").args(["--label", "gsko-epuap"]))?;
    assert!(String::from_utf8(out.stdout)?.starts_with("Key works."));

    // The same certificate again: nothing added, nothing to clear.
    let out = run_ok(
        token
            .on_token("import-cert")
            .args(["--label", "gsko-epuap", "--cert"])
            .arg(&cert),
    )?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with("The token already holds this certificate; nothing added."),
        "{text}"
    );
    assert!(!text.contains("CKA_EXTRACTABLE was true"), "{text}");

    let daemon = start_daemon(&token, &[("epuap", "gsko-epuap", "RS256")], "")?;
    let data = b"imported with tpm2_ptool";
    let (status, signature) = sign(&daemon, "epuap", "RS256", data)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signature));
    assert!(openssl_verify(
        token.dir.path(),
        &leaf.cert,
        data,
        &signature,
        &["-sha256"]
    )?);
    let (_, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(
        health["keys"][0]["protection"]["extractable"], false,
        "{health}"
    );
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn an_extractable_key_is_served_with_a_warning_or_refused_when_configured() -> Result {
    use common::fixtures::{secret_file, write_p12, Ca, KeySpec};
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::P256)?;
    let p12 = token.path("wk.p12");
    write_p12(&p12, &leaf, &ca, "gsko-wk", "hasło")?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    tpm2_ptool_import(&token, &p12, &password, "gsko-wk", "ecc")?;
    // The certificate put beside it by tpm2_ptool, so the key stays extractable.
    let cert = token.path("wk.pem");
    std::fs::write(&cert, leaf.cert.to_pem()?)?;
    run_ok(
        token
            .tool("tpm2_ptool")
            .args(["addcert", "--label", &token.label, "--key-label", "gsko-wk"])
            .arg(&cert),
    )?;
    let err = run_fails(token.on_token("verify").args(["--label", "gsko-wk"]))?;
    assert!(err.contains("CKA_EXTRACTABLE is true"), "{err}");

    let keys = [("wk", "gsko-wk", "ES256")];
    let config = token.path("refusing.toml");
    std::fs::write(
        &config,
        config_text(&token, &keys, "refuse_extractable_keys = true"),
    )?;
    let out = token
        .hsm_signer()
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refuse_extractable_keys = true"),
        "{stderr}"
    );
    assert!(
        stderr.contains("key \"wk\" (label \"gsko-wk\"): CKA_EXTRACTABLE is true"),
        "{stderr}"
    );
    assert!(!token.path("hsm-signer.sock").exists());

    let daemon = start_daemon(&token, &keys, "")?;
    assert!(
        daemon.log_text().contains("CKA_EXTRACTABLE is true"),
        "{}",
        daemon.log_text()
    );
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "warning", "{health}");
    assert_eq!(
        health["keys"][0]["protection"]["extractable"], true,
        "{health}"
    );
    assert!(
        health["reasons"]
            .to_string()
            .contains("CKA_EXTRACTABLE is true"),
        "{health}"
    );
    let data = b"served with a warning";
    let (status, signature) = sign(&daemon, "wk", "ES256", data)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signature));
    assert!(openssl_verify(
        token.dir.path(),
        &leaf.cert,
        data,
        &signature,
        &["-sha256"]
    )?);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn unclean_tpm_restarts_under_the_daemon_end_in_the_lockout_which_health_names() -> Result {
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    generate(&token, "gsko-epuap", "rsa-2048")?;
    let keys = [("epuap", "gsko-epuap", "RS256")];
    let daemon = start_daemon(&token, &keys, "")?;
    // Each restart without an orderly TPM shutdown adds one to the TPM's lockout counter
    // (swtpm allows 3); the daemon's next login after the third meets the lockout.
    let mut health = serde_json::Value::Null;
    for restart in 1..=3 {
        with_rig(&token, |rig| rig.stop())?;
        wait_until(
            Duration::from_secs(15),
            "the daemon to see the TPM gone",
            || Ok(daemon.json("GET", "/v1/health", None)?.0 == 503),
        )?;
        with_rig(&token, |rig| rig.start())?;
        wait_until(
            Duration::from_secs(30),
            "the daemon to log in again",
            || {
                let (status, body) = daemon.json("GET", "/v1/health", None)?;
                health = body;
                Ok(status == 200 || health["token_state"]["state"] == "pin_problem")
            },
        )
        .map_err(|e| format!("restart {restart}: {e}; {health}"))?;
        if restart < 3 {
            assert_eq!(health["token_state"]["state"], "up", "{health}");
        }
    }
    assert_eq!(health["token_state"]["state"], "pin_problem", "{health}");
    let reason = health["token_state"]["reason"].to_string();
    assert!(reason.contains("dictionary-attack lockout"), "{reason}");
    assert!(
        reason.contains("tpm2_dictionarylockout --clear-lockout"),
        "{reason}"
    );
    drop(daemon);

    with_rig(&token, |rig| rig.clear_lockout())?;
    let daemon = start_daemon(&token, &keys, "")?;
    let (status, _) = sign(&daemon, "epuap", "RS256", b"after the lockout was cleared")?;
    assert_eq!(status, 200);
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn a_daemon_started_before_its_tpm_serves_as_soon_as_the_tpm_is_up() -> Result {
    let Some(token) = tpm::token()? else {
        return Ok(());
    };
    let cert = generate(&token, "gsko-epuap", "rsa-2048")?;
    // At boot, before the TPM's broker is up: the daemon must not exit (systemd would
    // give up on it within a second), but answer 503 with the reason and connect later.
    with_rig(&token, |rig| rig.stop())?;
    let daemon = start_daemon(&token, &[("epuap", "gsko-epuap", "RS256")], "")?;
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["token_state"]["state"], "down", "{health}");
    let (status, answer) = sign(&daemon, "epuap", "RS256", b"too early")?;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));

    let took = start_tpm_and_sign_again(&token, &daemon, &cert, b"once the TPM is up")?;
    eprintln!("signing {took:?} after the TPM came up");
    assert!(daemon.stop()?.success());
    Ok(())
}
