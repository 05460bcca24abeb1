//! `import --record FILE`: a printable record of the import for the security register.

mod common;
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
        "Inspektor bezpieczeństwa / Security officer:",
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
