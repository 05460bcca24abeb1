//! `import-cert`: a renewed certificate for a key already on the token (Sigillum reissues
//! for the same key: new serial, new validity). It replaces the old certificate only when
//! it is for the same key; CA certificates from `--chain` are added when missing.

use crate::common;

use std::path::PathBuf;

use common::fixtures::*;
use common::*;
use openssl::asn1::Asn1Time;
use openssl::x509::X509;
use serde_json::Value;

struct Setup {
    token: TestToken,
    ca: Ca,
    leaf: Leaf,
}

/// A token holding "gsko-key" (and the Sigillum CA), imported the ordinary way.
fn setup(spec: KeySpec) -> Result<Setup> {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(spec)?;
    let p12 = token.path("gsko.p12");
    write_p12(&p12, &leaf, &ca, "gsko-key", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    run_ok(&mut import_cmd(&token, &p12, &password))?;
    Ok(Setup { token, ca, leaf })
}

fn serial_hex(cert: &X509) -> Result<String> {
    Ok(cert.serial_number().to_bn()?.to_hex_str()?.to_lowercase())
}

/// The serials of the certificates labelled "gsko-key", as pkcs11-tool shows them.
fn key_cert_serials(token: &TestToken) -> Result<Vec<String>> {
    Ok(p11_objects(token)?
        .iter()
        .filter(|o| o.is("Certificate") && o.label() == Some("gsko-key"))
        .filter_map(|o| o.field("serial").map(str::to_lowercase))
        .collect())
}

fn import_cert(s: &Setup, cert: &PathBuf) -> std::process::Command {
    let mut cmd = s.token.on_token("import-cert");
    cmd.args(["--label", "gsko-key", "--cert"]).arg(cert);
    cmd
}

fn renewal_of(s: &Setup, issuer: &Ca) -> Result<X509> {
    // A later end date than the first certificate, and a new random serial.
    issuer.issue_until(&s.leaf.key, GSKO_CN, Asn1Time::days_from_now(1095)?)
}

#[test]
fn renewed_certificate_replaces_the_old_and_verify_passes() -> Result {
    let s = setup(KeySpec::Rsa(2048))?;
    let before = s.token.objects()?;
    let renewed = renewal_of(&s, &s.ca)?;
    assert_ne!(serial_hex(&renewed)?, s.leaf.serial_hex()?);
    let cer = s.token.path("renewed.cer");
    std::fs::write(&cer, renewed.to_der()?)?;

    let text = String::from_utf8(run_ok(&mut import_cert(&s, &cer))?.stdout)?;
    assert!(
        text.starts_with(&format!(
            "Certificate replaced and proven (old serial {},",
            s.leaf.serial_hex()?
        )),
        "{text}"
    );
    // One certificate for the key, the new one; same objects (labels and IDs) as before.
    assert_eq!(key_cert_serials(&s.token)?, vec![serial_hex(&renewed)?]);
    assert_eq!(s.token.objects()?, before);

    let out = run_ok(
        s.token
            .on_token("verify")
            .args(["--label", "gsko-key", "--json"]),
    )?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["certificate"]["serial"],
        serial_hex(&renewed)?,
        "{report:#}"
    );
    assert_eq!(report["proof"]["signature_verified"], true, "{report:#}");
    sign_with_pkcs11_tool_and_verify(&s.token, "gsko-key", &renewed)
}

#[test]
fn renewed_ec_certificate_from_a_new_ca_adds_the_ca_from_chain() -> Result {
    let s = setup(KeySpec::P256)?;
    let new_ca = Ca::named("Sigillum Test CA 2")?;
    let renewed = renewal_of(&s, &new_ca)?;
    let pem = s.token.path("renewed.pem");
    std::fs::write(&pem, renewed.to_pem()?)?;
    // A PEM bundle: the old CA (already on the token) and the new one.
    let bundle = s.token.path("chain.pem");
    std::fs::write(
        &bundle,
        [s.ca.cert.to_pem()?, new_ca.cert.to_pem()?].concat(),
    )?;

    let out = run_ok(
        import_cert(&s, &pem)
            .arg("--chain")
            .arg(&bundle)
            .arg("--json"),
    )?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["certificate"]["serial"],
        serial_hex(&renewed)?,
        "{report:#}"
    );
    assert_eq!(
        report["replaced"]["serial"],
        s.leaf.serial_hex()?,
        "{report:#}"
    );
    let added = report["chain"].as_array().ok_or("no chain")?;
    assert_eq!(added.len(), 1, "{report:#}");
    assert!(
        added[0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=Sigillum Test CA 2")),
        "{report:#}"
    );
    let cas: Vec<String> = p11_objects(&s.token)?
        .iter()
        .filter(|o| o.is("Certificate") && o.label() != Some("gsko-key"))
        .filter_map(|o| o.label().map(str::to_string))
        .collect();
    assert_eq!(cas.len(), 2, "{cas:?}");
    assert!(cas.iter().any(|l| l == "Sigillum Test CA 2"), "{cas:?}");
    assert_eq!(key_cert_serials(&s.token)?, vec![serial_hex(&renewed)?]);
    sign_with_pkcs11_tool_and_verify(&s.token, "gsko-key", &renewed)
}

#[test]
fn certificate_of_another_key_is_refused_and_the_token_is_unchanged() -> Result {
    let s = setup(KeySpec::Rsa(2048))?;
    let before = s.token.objects()?;
    let other = s.ca.leaf(KeySpec::Rsa(2048))?;
    let cer = s.token.path("other.cer");
    std::fs::write(&cer, other.cert.to_der()?)?;
    let new_ca = Ca::named("Sigillum Test CA 2")?;
    let ca_pem = s.token.path("ca2.pem");
    std::fs::write(&ca_pem, new_ca.cert.to_pem()?)?;

    let err = run_fails(import_cert(&s, &cer).arg("--chain").arg(&ca_pem))?;
    assert!(
        err.contains("other.cer")
            && err.contains("is not for the key \"gsko-key\"")
            && err.contains("public key object"),
        "{err}"
    );
    assert_eq!(s.token.objects()?, before, "{err}");
    assert_eq!(key_cert_serials(&s.token)?, vec![s.leaf.serial_hex()?]);
    Ok(())
}

#[test]
fn without_a_public_key_object_the_current_certificate_decides() -> Result {
    let s = setup(KeySpec::P384)?;
    run_ok(s.token.pkcs11_tool().args([
        "--delete-object",
        "--type",
        "pubkey",
        "--label",
        "gsko-key",
    ]))?;
    let before = s.token.objects()?;
    let other = s.ca.leaf(KeySpec::P384)?;
    let cer = s.token.path("other.cer");
    std::fs::write(&cer, other.cert.to_der()?)?;
    let err = run_fails(&mut import_cert(&s, &cer))?;
    assert!(err.contains("current certificate"), "{err}");
    assert_eq!(s.token.objects()?, before, "{err}");

    let renewed = renewal_of(&s, &s.ca)?;
    let cer = s.token.path("renewed.cer");
    std::fs::write(&cer, renewed.to_der()?)?;
    run_ok(&mut import_cert(&s, &cer))?;
    assert_eq!(key_cert_serials(&s.token)?, vec![serial_hex(&renewed)?]);
    Ok(())
}

#[test]
fn the_same_certificate_again_changes_nothing() -> Result {
    let s = setup(KeySpec::Rsa(2048))?;
    let before = s.token.objects()?;
    let cer = s.token.path("same.cer");
    std::fs::write(&cer, s.leaf.cert.to_der()?)?;
    let text = String::from_utf8(run_ok(&mut import_cert(&s, &cer))?.stdout)?;
    assert!(
        text.starts_with("The token already holds this certificate; nothing added. Key proven."),
        "{text}"
    );
    assert_eq!(s.token.objects()?, before);
    assert_eq!(key_cert_serials(&s.token)?, vec![s.leaf.serial_hex()?]);
    Ok(())
}
