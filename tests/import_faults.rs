//! The import half under bad input and faults: each case must fail with a message that
//! says what is wrong, and leave the token exactly as it was (a token that already holds
//! a key, so that "unchanged" means something). Secrets never reach the output.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::*;
use common::*;
use openssl::nid::Nid;

/// A token that already holds a key ("gsko-existing") and a CA, with its objects.
struct Faulty {
    token: TestToken,
    before: Vec<String>,
    ca: Ca,
    password: PathBuf,
}

fn faulty() -> Result<Faulty> {
    let token = TestToken::new()?;
    let before = baseline(&token, "gsko-existing")?;
    let password = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    Ok(Faulty {
        token,
        before,
        ca: Ca::sigillum()?,
        password,
    })
}

impl Faulty {
    /// A good `.p12` for a fresh RSA-2048 leaf, friendlyName "gsko-new".
    fn good_p12(&self) -> Result<(Leaf, PathBuf)> {
        let leaf = self.ca.leaf(KeySpec::Rsa(2048))?;
        let p12 = self.token.path("gsko-new.p12");
        write_p12(&p12, &leaf, &self.ca, "gsko-new", POLISH_PASSWORD)?;
        Ok((leaf, p12))
    }

    /// Runs `cmd`, which must fail with every one of `expected` in its standard error and
    /// leave the token's objects as they were. Returns standard error.
    fn refused(&self, cmd: &mut Command, expected: &[&str]) -> Result<String> {
        let err = run_fails(cmd)?;
        for part in expected {
            assert!(err.contains(part), "expected {part:?} in:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(self.token.objects()?, self.before, "token changed:\n{err}");
        Ok(err)
    }

    /// `import` of `p12` with the Polish password.
    fn import(&self, p12: &Path) -> Command {
        import_cmd(&self.token, p12, &self.password)
    }
}

// --- Files that are not what they should be ---

#[test]
fn wrong_password_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let wrong = secret_file(f.token.dir.path(), "wrong.pw", "Zazolc gesla jazn")?;
    f.refused(
        &mut import_cmd(&f.token, &p12, &wrong),
        &[
            "wrong password for",
            "gsko-new.p12",
            "the file's integrity check failed",
        ],
    )?;
    Ok(())
}

#[test]
fn wrong_password_on_a_legacy_file_is_refused() -> Result {
    let f = faulty()?;
    let leaf = f.ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(f.token.dir.path(), "gsko", &leaf, &f.ca)?;
    let p12 = f.token.path("epuap.p12");
    openssl_export(&pem, &p12, "gsko-epuap", &f.password, &["-legacy"])?;
    let wrong = secret_file(f.token.dir.path(), "wrong.pw", "haslo-do-uniewaznienia")?;
    f.refused(
        &mut import_cmd(&f.token, &p12, &wrong),
        &[
            "wrong password for",
            "epuap.p12",
            "not the revocation password",
        ],
    )?;
    Ok(())
}

#[test]
fn truncated_p12_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let whole = std::fs::read(&p12)?;
    let half = &whole[..whole.len() / 2];
    let cut = f.token.path("cut.p12");
    std::fs::write(&cut, half)?;
    f.refused(
        &mut f.import(&cut),
        &[
            "cut.p12 is not a PKCS#12 file or is truncated",
            &format!("({} bytes)", half.len()),
        ],
    )?;
    Ok(())
}

#[test]
fn pem_certificate_given_as_p12_is_refused() -> Result {
    let f = faulty()?;
    let (leaf, _) = f.good_p12()?;
    let pem = f.token.path("gsko.pem");
    std::fs::write(&pem, leaf.cert.to_pem()?)?;
    f.refused(
        &mut f.import(&pem),
        &["gsko.pem is not a PKCS#12 file or is truncated"],
    )?;
    Ok(())
}

#[test]
fn random_bytes_given_as_p12_are_refused() -> Result {
    let f = faulty()?;
    let mut bytes = [0u8; 3000];
    openssl::rand::rand_bytes(&mut bytes)?;
    let junk = f.token.path("junk.p12");
    std::fs::write(&junk, bytes)?;
    f.refused(
        &mut f.import(&junk),
        &["junk.p12 is not a PKCS#12 file or is truncated (3000 bytes)"],
    )?;
    Ok(())
}

#[test]
fn empty_file_given_as_p12_is_refused() -> Result {
    let f = faulty()?;
    let empty = f.token.path("empty.p12");
    std::fs::write(&empty, b"")?;
    f.refused(
        &mut f.import(&empty),
        &["empty.p12 is not a PKCS#12 file or is truncated (0 bytes)"],
    )?;
    Ok(())
}

#[test]
fn missing_p12_file_is_named() -> Result {
    let f = faulty()?;
    f.refused(
        &mut f.import(&f.token.path("nie-ma.p12")),
        &["cannot read", "nie-ma.p12", "No such file"],
    )?;
    Ok(())
}

#[test]
fn certificates_only_p12_is_refused() -> Result {
    let f = faulty()?;
    let leaf = f.ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(f.token.dir.path(), "gsko", &leaf, &f.ca)?;
    let p12 = f.token.path("certs-only.p12");
    openssl_export(&pem, &p12, "gsko-certs", &f.password, &["-nokeys"])?;
    f.refused(
        &mut f.import(&p12),
        &["certs-only.p12 holds no private key", "not the .p12"],
    )?;
    Ok(())
}

#[test]
fn key_only_p12_without_certificate_file_is_refused() -> Result {
    let f = faulty()?;
    let leaf = f.ca.leaf(KeySpec::Rsa(2048))?;
    let der = p12_in_code(
        &leaf.key,
        None,
        &[],
        Some("gsko-keyonly"),
        POLISH_PASSWORD,
        Pbes2 {
            cipher: Nid::AES_256_CBC,
            iter: 2048,
        },
    )?;
    let p12 = f.token.path("keyonly.p12");
    std::fs::write(&p12, der)?;
    f.refused(
        f.import(&p12).args(["--label", "gsko-keyonly"]),
        &["holds a private key but no certificate for it", "--cert"],
    )?;
    Ok(())
}

#[test]
fn certificate_of_another_key_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let other = f.ca.leaf(KeySpec::Rsa(2048))?;
    let cer = f.token.path("other.cer");
    std::fs::write(&cer, other.cert.to_der()?)?;
    f.refused(
        f.import(&p12).arg("--cert").arg(&cer),
        &[
            "other.cer",
            &format!("serial {}", other.serial_hex()?),
            "does not belong to the private key in",
        ],
    )?;
    Ok(())
}

#[test]
fn certificate_file_that_is_not_a_certificate_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let cer = f.token.path("letter.cer");
    std::fs::write(&cer, "Szanowni Państwo, w załączeniu certyfikat.")?;
    f.refused(
        f.import(&p12).arg("--cert").arg(&cer),
        &["letter.cer", "not a DER or PEM X.509 certificate"],
    )?;
    Ok(())
}

/// A `.p12` (PBES2, Polish password) with `key` and a certificate for it.
fn p12_with_key(f: &Faulty, key: &openssl::pkey::PKey<openssl::pkey::Private>) -> Result<PathBuf> {
    let cert = f.ca.issue(key, GSKO_CN)?;
    let der = p12_in_code(
        key,
        Some(&cert),
        &[&f.ca.cert],
        Some("gsko-odd"),
        POLISH_PASSWORD,
        Pbes2 {
            cipher: Nid::AES_256_CBC,
            iter: 2048,
        },
    )?;
    let p12 = f.token.path("odd.p12");
    std::fs::write(&p12, der)?;
    Ok(p12)
}

#[test]
fn ed25519_key_is_refused() -> Result {
    let f = faulty()?;
    let p12 = p12_with_key(&f, &KeySpec::Ed25519.generate()?)?;
    f.refused(
        &mut f.import(&p12),
        &[
            "odd.p12: unsupported key type Ed25519",
            "RSA (2048 bits or more)",
        ],
    )?;
    Ok(())
}

#[test]
fn rsa_1024_key_is_refused_as_too_short() -> Result {
    let f = faulty()?;
    let p12 = p12_with_key(&f, &KeySpec::Rsa(1024).generate()?)?;
    f.refused(
        &mut f.import(&p12),
        &["RSA key of 1024 bits is too short", "at least 2048 bits"],
    )?;
    Ok(())
}

#[test]
fn secp256k1_key_is_refused() -> Result {
    let f = faulty()?;
    let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP256K1)?;
    let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?;
    let p12 = p12_with_key(&f, &key)?;
    f.refused(
        &mut f.import(&p12),
        &["unsupported EC curve secp256k1", "P-256, P-384 and P-521"],
    )?;
    Ok(())
}

#[test]
fn same_key_under_another_label_is_refused_by_its_id() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    run_ok(&mut f.import(&p12))?;
    let f = Faulty {
        before: f.token.objects()?,
        ..f
    };
    f.refused(
        f.import(&p12).args(["--label", "gsko-copy"]),
        &[
            "already holds 3 object(s) with label \"gsko-copy\" or ID",
            "--replace",
        ],
    )?;
    Ok(())
}

// --- Module, token and PIN ---

#[test]
fn unknown_module_lists_the_modules_found() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    f.refused(
        f.token
            .hsm_signer()
            .args(["import", "--module", "/usr/lib/nie-ma/libvendor-pkcs11.so"])
            .args(["--token", &f.token.label, "--pin-file"])
            .arg(&f.token.pin_file)
            .arg("--p12")
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
        &[
            "cannot load the PKCS#11 module /usr/lib/nie-ma/libvendor-pkcs11.so",
            "PKCS#11 modules found on this system:",
            "/usr/lib/softhsm/libsofthsm2.so",
        ],
    )?;
    Ok(())
}

#[test]
fn unknown_token_lists_the_tokens_seen() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let err = f.refused(
        f.token
            .hsm_signer()
            .args(["import", "--module", MODULE, "--token", "GSKO-nie-ma"])
            .arg("--pin-file")
            .arg(&f.token.pin_file)
            .arg("--p12")
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
        &[
            "no token matches token label \"GSKO-nie-ma\"",
            "Tokens seen:",
        ],
    )?;
    assert!(
        err.contains(&format!(
            "label \"{}\", serial {}",
            f.token.label, f.token.serial
        )),
        "{err}"
    );
    Ok(())
}

#[test]
fn wrong_pin_is_tried_once_and_not_retried() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let wrong_pin = secret_file(f.token.dir.path(), "wrong.pin", "4321")?;
    // OpenSC's pkcs11-spy sits between the binary and SoftHSM and logs every call, so the
    // C_Login attempts can be counted.
    let spy_log = f.token.path("spy.log");
    let err = f.refused(
        f.token
            .hsm_signer()
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &spy_log)
            .args([
                "import",
                "--module",
                "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
            ])
            .args(["--token", &f.token.label, "--pin-file"])
            .arg(&wrong_pin)
            .arg("--p12")
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
        &[
            &format!("wrong PIN for token \"{}\"", f.token.label),
            "C_Login returned CKR_PIN_INCORRECT",
            "not retried",
        ],
    )?;
    let spy = std::fs::read_to_string(&spy_log)?;
    let calls: Vec<&str> = spy
        .lines()
        .filter_map(|l| l.split_once(": C_").map(|(_, call)| call.trim()))
        .collect();
    assert_eq!(
        calls.iter().filter(|c| **c == "Login").count(),
        1,
        "{calls:?}\n{err}"
    );
    assert!(spy.contains("CKR_PIN_INCORRECT"), "{spy}");
    assert!(
        !calls.iter().any(|c| c.starts_with("CreateObject")),
        "{calls:?}"
    );
    Ok(())
}

#[test]
fn pin_on_the_command_line_does_not_exist() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let mut cmd = f.token.hsm_signer();
    cmd.args(["import", "--module", MODULE, "--token", &f.token.label])
        .args(["--pin", PIN, "--p12"])
        .arg(&p12)
        .arg("--password-file")
        .arg(&f.password);
    let out = cmd.output()?;
    assert_eq!(out.status.code(), Some(2), "a usage error: {out:?}");
    f.refused(&mut cmd, &["unexpected argument '--pin'"])?;
    Ok(())
}

#[test]
fn password_on_the_command_line_does_not_exist() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    let mut cmd = f.token.on_token("import");
    cmd.arg("--p12")
        .arg(&p12)
        .args(["--password", POLISH_PASSWORD]);
    let out = cmd.output()?;
    assert_eq!(out.status.code(), Some(2), "a usage error: {out:?}");
    f.refused(&mut cmd, &["unexpected argument '--password'"])?;
    Ok(())
}

#[test]
fn pin_value_in_a_pkcs11_uri_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    f.refused(
        f.token
            .hsm_signer()
            .args(["import", "--module", MODULE, "--token"])
            .arg(format!("pkcs11:token={}?pin-value={PIN}", f.token.label))
            .arg("--p12")
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
        &["carries pin-value", "pin-source=FILE"],
    )?;
    Ok(())
}

#[test]
fn pkcs11_uri_with_module_path_and_pin_source_works() -> Result {
    let f = faulty()?;
    let (leaf, p12) = f.good_p12()?;
    let uri = format!(
        "pkcs11:token={}?module-path={MODULE}&pin-source=file:{}",
        f.token.label,
        f.token.pin_file.display()
    );
    run_ok(
        f.token
            .hsm_signer()
            .args(["import", "--token", &uri, "--p12"])
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
    )?;
    let by_serial = format!(
        "pkcs11:serial={}?module-path={MODULE}&pin-source={}",
        f.token.serial,
        f.token.pin_file.display()
    );
    let out = run_ok(f.token.hsm_signer().args([
        "verify", "--token", &by_serial, "--label", "gsko-new", "--json",
    ]))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["certificate"]["serial"].as_str(),
        Some(leaf.serial_hex()?.as_str())
    );
    assert_eq!(f.token.objects()?.len(), f.before.len() + 4);
    Ok(())
}

#[test]
fn no_pin_source_and_no_terminal_names_the_ways_to_give_one() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    f.refused(
        f.token
            .hsm_signer()
            .args(["import", "--module", MODULE, "--token", &f.token.label])
            .arg("--p12")
            .arg(&p12)
            .arg("--password-file")
            .arg(&f.password),
        &[
            "no token PIN given and no terminal to ask on",
            "--pin-file",
            "HSM_SIGNER_PIN",
        ],
    )?;
    Ok(())
}

#[test]
fn no_password_source_and_no_terminal_names_the_ways_to_give_one() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    f.refused(
        f.token.on_token("import").arg("--p12").arg(&p12),
        &[
            "no .p12 password given and no terminal to ask on",
            "--password-file",
            "HSM_SIGNER_P12_PASSWORD",
        ],
    )?;
    Ok(())
}

// --- Secrets never printed ---

#[test]
fn password_and_pin_never_reach_the_output() -> Result {
    const PASSWORD: &str = "Sekret-Zażółć-991";
    const WRONG_PASSWORD: &str = "Sekret-Zażółć-992";
    const TOKEN_PIN: &str = "PIN-Źdźbło-7731";
    const WRONG_PIN: &str = "PIN-Źdźbło-7732";
    let token = TestToken::new()?;
    // A PIN as distinctive as the password, so that a leak of either can be seen.
    run_ok(
        token
            .pkcs11_tool()
            .args(["--change-pin", "--new-pin", TOKEN_PIN]),
    )?;
    let pin = secret_file(token.dir.path(), "pin", TOKEN_PIN)?;
    let wrong_pin = secret_file(token.dir.path(), "wrong.pin", WRONG_PIN)?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("gsko.p12");
    write_p12(&p12, &leaf, &ca, "gsko-secret", PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12.pw", PASSWORD)?;
    // Readable by others on purpose: the tool then logs a warning about this very file,
    // the likeliest place for its contents to slip out.
    let wrong_password = token.path("wrong.pw");
    std::fs::write(&wrong_password, WRONG_PASSWORD)?;

    let import = |pin: &Path, password_file: Option<&Path>, verbosity: &str| {
        let mut cmd = token.hsm_signer();
        cmd.args([
            "import",
            verbosity,
            "--module",
            MODULE,
            "--token",
            &token.label,
        ])
        .arg("--pin-file")
        .arg(pin)
        .arg("--p12")
        .arg(&p12);
        match password_file {
            Some(file) => cmd.arg("--password-file").arg(file),
            None => cmd.env("HSM_SIGNER_P12_PASSWORD", PASSWORD),
        };
        cmd
    };
    let secrets = [PASSWORD, WRONG_PASSWORD, TOKEN_PIN, WRONG_PIN];
    let assert_silent = |what: &str, out: &std::process::Output| {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in secrets {
            assert!(!all.contains(secret), "{what} printed {secret:?}:\n{all}");
        }
        all
    };

    let out = import(&pin, Some(&wrong_password), "-vv").output()?;
    assert!(!out.status.success());
    let text = assert_silent("wrong password", &out);
    assert!(text.contains("wrong password for"), "{text}");
    assert!(
        text.contains("WARN") && text.contains("wrong.pw") && text.contains("chmod 600"),
        "logging is on and names the file: {text}"
    );

    let out = import(&wrong_pin, None, "-vv").output()?;
    assert!(!out.status.success());
    let text = assert_silent("wrong PIN", &out);
    assert!(text.contains("CKR_PIN_INCORRECT"), "{text}");

    let out = import(&pin, Some(&password), "-vv").output()?;
    let text = assert_silent("successful import", &out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Imported and proven."), "{text}");
    Ok(())
}

#[test]
fn p12_without_friendly_name_asks_for_a_label() -> Result {
    let f = faulty()?;
    let leaf = f.ca.leaf(KeySpec::Rsa(2048))?;
    let der = p12_in_code(
        &leaf.key,
        Some(&leaf.cert),
        &[&f.ca.cert],
        None,
        POLISH_PASSWORD,
        Pbes2 {
            cipher: Nid::AES_256_CBC,
            iter: 2048,
        },
    )?;
    let p12 = f.token.path("noname.p12");
    std::fs::write(&p12, der)?;
    f.refused(
        &mut f.import(&p12),
        &[
            "noname.p12 has no friendlyName to use as the label",
            "--label NAME",
        ],
    )?;
    Ok(())
}

#[test]
fn password_file_not_in_utf8_is_refused() -> Result {
    let f = faulty()?;
    let (_, p12) = f.good_p12()?;
    // "Zażółć" as Windows-1250 (what Notepad on a Polish Windows may save).
    let cp1250 = f.token.path("cp1250.pw");
    std::fs::write(&cp1250, b"Za\xbf\xf3\xb3\xe6")?;
    f.refused(
        &mut import_cmd(&f.token, &p12, &cp1250),
        &[
            "the .p12 password from",
            "cp1250.pw is not valid UTF-8",
            "save the file as UTF-8",
        ],
    )?;
    Ok(())
}
