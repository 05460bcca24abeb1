//! `import --record FILE`: a printable record of the import for the security register.

use crate::common;
use std::os::unix::fs::PermissionsExt;

use common::fixtures::*;
use common::*;

#[test]
fn import_writes_a_record_for_the_security_register_and_never_overwrites_one() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let record = token.path("protokol-importu.txt");
    run_ok(
        import_cmd(&token, &p12, &password)
            .arg("--record")
            .arg(&record),
    )?;
    let text = std::fs::read_to_string(&record)?;
    let p12_sha = hex::encode(openssl::sha::sha256(&std::fs::read(&p12)?));
    for expected in [
        "PROTOKÓŁ PRZENIESIENIA KLUCZA DO TOKENA / KEY IMPORT RECORD",
        "Label:        gsko-epuap",
        "sensitive=yes, extractable=no",
        "verified against the certificate",
        &p12_sha,
        &leaf.sha256_hex()?,
        "Pełnomocnik ds. bezpieczeństwa informacji / Security officer:",
        "Świadek / Witness:",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains(POLISH_PASSWORD) && !text.contains(PIN),
        "a secret in the record"
    );
    let mode = std::fs::metadata(&record)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");
    // A second import naming the same record is refused before the token is touched.
    let before = token.objects()?;
    let err = run_fails(
        import_cmd(&token, &p12, &password)
            .args(["--replace", "--record"])
            .arg(&record),
    )?;
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(token.objects()?, before);
    assert_eq!(
        std::fs::read_to_string(&record)?,
        text,
        "the record was changed"
    );
    Ok(())
}

#[test]
fn the_import_record_gives_the_p12_size_to_find_its_copies() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let record = token.path("protokol.txt");
    run_ok(
        import_cmd(&token, &p12, &password)
            .arg("--record")
            .arg(&record),
    )?;
    let text = std::fs::read_to_string(&record)?;
    let size = std::fs::metadata(&p12)?.len();
    let sha = hex::encode(openssl::sha::sha256(&std::fs::read(&p12)?));
    let find = format!("find / -xdev -type f -size {size}c -exec sha256sum {{}} + | grep {sha}");
    assert!(text.contains(&find), "no {find:?} in:\n{text}");
    // The printed find command does find the file (run here on the test's directory).
    let out = run_ok(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(find.replace(
                "find / -xdev",
                &format!("find {} -xdev", token.dir.path().display()),
            )),
    )?;
    assert!(
        String::from_utf8(out.stdout)?.contains("epuap.p12"),
        "the record's find command misses the file"
    );
    Ok(())
}

#[test]
fn verify_writes_a_record_for_an_auditor_with_the_protection_read_back() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    run_ok(&mut import_cmd(&token, &p12, &password))?;
    let record = token.path("protokol-sprawdzenia.txt");
    let out = run_ok(
        token
            .on_token("verify")
            .args(["--label", "gsko-epuap", "--record"])
            .arg(&record),
    )?;
    assert!(String::from_utf8(out.stdout)?.starts_with("Key works."));
    let text = std::fs::read_to_string(&record)?;
    let pl = text
        .find("Klucz jest w tokenie")
        .ok_or("no Polish statement")?;
    let en = text.find("The key is on the token").ok_or("no English")?;
    assert!(pl < en, "Polish comes first:\n{text}");
    for expected in [
        "PROTOKÓŁ SPRAWDZENIA KLUCZA W TOKENIE / KEY VERIFICATION RECORD",
        "Wykonał / Performed by:",
        &format!("Token:        {} (serial {})", token.label, token.serial),
        "Label:        gsko-epuap",
        "Protection:   sensitive=yes, extractable=no, private=yes, private value readable=no",
        "Proof:        RS256 signature on a fresh random challenge verified against the certificate",
        &leaf.sha256_hex()?,
        "Świadek / Witness:",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains(".p12"),
        "a p12 section in a verify record:\n{text}"
    );
    assert!(!text.contains(PIN), "a secret in the record");
    // Never overwritten: a second verify naming it is refused, the file unchanged.
    let err = run_fails(
        token
            .on_token("verify")
            .args(["--label", "gsko-epuap", "--record"])
            .arg(&record),
    )?;
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&record)?, text);
    // A key that is not there: no record is left behind.
    let missing = token.path("brak.txt");
    let err = run_fails(
        token
            .on_token("verify")
            .args(["--label", "nope", "--record"])
            .arg(&missing),
    )?;
    assert!(err.contains("no private key labelled \"nope\""), "{err}");
    assert!(!missing.exists());
    Ok(())
}

#[test]
fn a_record_that_cannot_be_created_stops_the_import_before_the_token() -> Result {
    let token = TestToken::new()?;
    let before = baseline(&token, "stays")?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let closed = token.path("closed");
    std::fs::create_dir(&closed)?;
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o555))?;
    let record = closed.join("protokol.txt");
    // Mode 0555 stops no root: as root, run without CAP_DAC_OVERRIDE, as an operator would.
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(env!("CARGO_BIN_EXE_hsm-signer"));
        cmd
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_hsm-signer"))
    };
    cmd.args(import_cmd(&token, &p12, &password).get_args())
        .arg("--record")
        .arg(&record)
        .envs(token.env.iter().map(|(k, v)| (k, v)))
        .env_remove("HSM_SIGNER_PIN")
        .env_remove("HSM_SIGNER_P12_PASSWORD");
    let err = run_fails(&mut cmd)?;
    assert!(
        err.contains(&format!(
            "cannot create the record file {}: Permission denied",
            record.display()
        )) && err.contains("nothing was done"),
        "{err}"
    );
    assert!(!err.contains("Importing"), "{err}");
    assert_eq!(token.objects()?, before, "the token changed");
    assert!(!record.exists());
    Ok(())
}

#[test]
fn a_failed_import_removes_the_record_it_created() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let wrong = secret_file(token.dir.path(), "wrong-password", "nie to hasło")?;
    let record = token.path("protokol.txt");
    let err = run_fails(
        import_cmd(&token, &p12, &wrong)
            .arg("--record")
            .arg(&record),
    )?;
    assert!(err.contains("password"), "{err}");
    assert!(!record.exists(), "an empty record was left behind");
    assert_eq!(token.objects()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn a_dn_with_a_newline_and_bidi_override_imports_and_is_shown_escaped_on_one_line() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let key = KeySpec::Rsa(2048).generate()?;
    // What a hostile .p12 could carry: a CN that forges a record line, then reverses
    // what follows it on screen.
    let cn = "gsko\nSHA-256:      00forged\u{202e}lp.odwadykzrp";
    let leaf = Leaf {
        cert: ca.issue(&key, cn)?,
        key,
    };
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let record = token.path("protokol.txt");
    let out = run_ok(
        import_cmd(&token, &p12, &password)
            .arg("--record")
            .arg(&record),
    )?;
    let escaped = "CN=gsko\\u{000a}SHA-256:      00forged\\u{202e}lp.odwadykzrp";
    let listed = run_ok(&mut token.on_token("list"))?;
    let check = token
        .hsm_signer()
        .args(["check", "--module", MODULE, "--token", &token.label])
        .output()?;
    for (what, text) in [
        ("record", std::fs::read_to_string(&record)?),
        ("import", String::from_utf8(out.stdout)?),
        ("list", String::from_utf8(listed.stdout)?),
        ("check", String::from_utf8(check.stdout)?),
    ] {
        assert!(
            !text.contains('\u{202e}')
                && !text
                    .lines()
                    .any(|l| l.contains("00forged") && !l.contains(escaped)),
            "{what}: a raw newline or U+202E:\n{text}"
        );
        assert!(text.contains(escaped), "{what}: no {escaped:?} in:\n{text}");
    }
    // --json keeps the exact value.
    let json = run_ok(token.on_token("list").arg("--json"))?;
    let keys: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    let subject = keys[0]["certificate"]["subject"]
        .as_str()
        .ok_or("no subject in --json")?;
    assert!(subject.starts_with(&format!("CN={cn}, ")), "{subject:?}");
    Ok(())
}

#[test]
fn a_subject_with_a_control_or_bidi_character_is_refused() -> Result {
    let token = TestToken::new()?;
    for (subject, shown) in [
        ("/C=PL/CN=gsko\nIssuer: CN=x", "U+000A"),
        ("/C=PL/CN=gsko\u{1b}[31m", "U+001B"),
        ("/C=PL/CN=\u{202e}lp.okswg", "U+202E"),
    ] {
        let err = run_fails(
            token
                .on_token("generate")
                .args([
                    "--label",
                    "wk",
                    "--key-type",
                    "ec-p256",
                    "--purpose",
                    "sign",
                ])
                .args(["--self-signed-days", "30", "--subject", subject]),
        )?;
        assert!(
            err.contains(&format!("--subject holds {shown}"))
                && err.contains("control, format and bidi characters are refused"),
            "{err}"
        );
        assert!(
            !err.contains('\u{202e}') && err.lines().count() == 1,
            "{err}"
        );
    }
    assert_eq!(token.objects()?, Vec::<String>::new());
    Ok(())
}

/// The name the record should give when the login session names the person, as
/// /proc/self/loginuid shows it to this test (None when unset, as in most containers).
fn login_session_user() -> Result<Option<String>> {
    let id: u32 = std::fs::read_to_string("/proc/self/loginuid")?
        .trim()
        .parse()?;
    if id == u32::MAX {
        return Ok(None);
    }
    Ok(Some(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))?
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {id}")),
    ))
}

fn performed_by(record: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(record)?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("Wykonał / Performed by:"))
        .ok_or_else(|| format!("no Performed by line in:\n{text}"))?
        .to_string())
}

#[test]
fn the_record_names_the_person_and_says_how_it_knows() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let login = login_session_user()?;
    let ran_as = nix::unistd::User::from_uid(nix::unistd::getuid())?
        .map(|u| u.name)
        .ok_or("no name for this uid")?;

    // sudo's SUDO_USER, no terminal (nextest gives none).
    let record = token.path("sudo.txt");
    run_ok(
        import_cmd(&token, &p12, &password)
            .env("SUDO_USER", "jan-kowalski")
            .arg("--record")
            .arg(&record),
    )?;
    let line = performed_by(&record)?;
    let expected = match &login {
        Some(name) => {
            format!("{name} (wg sesji logowania / from the login session, /proc/self/loginuid;")
        }
        None => "jan-kowalski (wg zmiennej / from the variable SUDO_USER;".to_string(),
    };
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains(&format!("ran as {ran_as}, uid ")), "{line}");

    // No SUDO_USER, on a terminal that belongs to someone else (script(1) makes one).
    let record = token.path("tty.txt");
    let import = import_cmd(&token, &p12, &password);
    let mut line_args = vec![env!("CARGO_BIN_EXE_hsm-signer").to_string()];
    line_args.extend(import.get_args().map(|a| a.to_string_lossy().into_owned()));
    line_args.extend([
        "--replace".into(),
        "--record".into(),
        record.display().to_string(),
    ]);
    let quoted: Vec<String> = line_args.iter().map(|a| format!("'{a}'")).collect();
    let session = token.path("session.sh");
    std::fs::write(
        &session,
        format!(
            "chown nobody \"$(tty)\" && exec {} </dev/null\n",
            quoted.join(" ")
        ),
    )?;
    let out = token
        .tool("script")
        .env_remove("SUDO_USER")
        .env("SHELL", "/bin/bash")
        .args(["-qec", &format!("bash {}", session.display()), "/dev/null"])
        .output()?;
    let line = performed_by(&record).map_err(|e| format!("{e}\n{out:?}"))?;
    let expected = match &login {
        Some(name) => format!("{name} (wg sesji logowania"),
        None => "nobody (właściciel terminala / owner of the terminal /dev/pts/".to_string(),
    };
    assert!(line.contains(&expected), "{line}");
    Ok(())
}
