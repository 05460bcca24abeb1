//! `import --p12 -`: the `.p12` read from standard input, e.g. piped from a file the
//! daemon's account cannot read (`runuser -u hsm-signer -- hsm-signer import --p12 - < F`).
//! Standard input then carries the file, so no secret may be asked there.

use crate::common;
use std::io::Write;
use std::process::Stdio;

use common::fixtures::*;
use common::*;

fn with_stdin(cmd: &mut std::process::Command, bytes: &[u8]) -> Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    // The command may refuse before reading; a broken pipe then is expected.
    let _ = stdin.write_all(bytes);
    drop(stdin);
    Ok(child.wait_with_output()?)
}

#[test]
fn a_p12_on_standard_input_is_imported_and_recorded() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let bytes = std::fs::read(&p12)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let record = token.path("protokol.txt");
    let out = with_stdin(
        token
            .on_token("import")
            .args(["--p12", "-", "--password-file"])
            .arg(&password)
            .arg("--record")
            .arg(&record),
        &bytes,
    )?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Imported and proven."), "{stdout}");
    assert!(stdout.contains(&leaf.sha256_hex()?), "{stdout}");
    let text = std::fs::read_to_string(&record)?;
    assert!(text.contains("standard input"), "{text}");
    assert!(
        text.contains(&hex::encode(openssl::sha::sha256(&bytes))),
        "{text}"
    );
    sign_with_pkcs11_tool_and_verify(&token, "gsko-epuap", &leaf.cert)?;
    Ok(())
}

#[test]
fn standard_input_cannot_carry_both_the_file_and_a_secret() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let bytes = std::fs::read(&p12)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    // No password source: the message says why and what to pass.
    let out = with_stdin(token.on_token("import").args(["--p12", "-"]), &bytes)?;
    let err = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be asked there")
            && err.contains("--password-file")
            && err.contains("HSM_SIGNER_P12_PASSWORD"),
        "{err}"
    );
    // No PIN source.
    let out = with_stdin(
        token
            .hsm_signer()
            .args(["import", "--module", MODULE, "--token", &token.label])
            .args(["--p12", "-", "--password-file"])
            .arg(&password),
        &bytes,
    )?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        !out.status.success()
            && err.contains("token PIN cannot be asked there")
            && err.contains("--pin-file"),
        "{err}"
    );
    // Nothing on standard input.
    let out = with_stdin(
        token
            .on_token("import")
            .args(["--p12", "-", "--password-file"])
            .arg(&password),
        b"",
    )?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        !out.status.success() && err.contains("standard input is empty"),
        "{err}"
    );
    // Something that is not a .p12.
    let out = with_stdin(
        token
            .on_token("import")
            .args(["--p12", "-", "--password-file"])
            .arg(&password),
        b"-----BEGIN CERTIFICATE-----\n",
    )?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        !out.status.success() && err.contains("standard input"),
        "{err}"
    );
    assert!(token.objects()?.is_empty(), "a refusal left objects");
    Ok(())
}
