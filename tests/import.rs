//! The import half, end to end: `.p12` files from every writer real files come from,
//! imported into a fresh SoftHSM2 token by the real binary, then checked with tools this
//! project did not write (pkcs11-tool, p11tool, openssl), and `verify`, `list`, `remove`
//! and `--replace` on what was imported.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::*;
use common::*;
use openssl::nid::Nid;
use serde_json::Value;

/// A token, a CA, a leaf, and its `.p12` (PBES2 AES-256) with the Polish password.
struct Setup {
    token: TestToken,
    ca: Ca,
    leaf: Leaf,
    p12: PathBuf,
    password: PathBuf,
}

fn setup(spec: KeySpec, friendly_name: &str) -> Result<Setup> {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(spec)?;
    let p12 = token.path("gsko.p12");
    write_p12(&p12, &leaf, &ca, friendly_name, POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    Ok(Setup {
        token,
        ca,
        leaf,
        p12,
        password,
    })
}

fn stdout_json(cmd: &mut Command) -> Result<Value> {
    let out = run_ok(cmd)?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn stdout_text(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8(run_ok(cmd)?.stdout)?)
}

/// The key, public key and certificate labelled `label` as pkcs11-tool sees them: one of
/// each, one shared CKA_ID, the key sensitive and not extractable, able to sign but not
/// decrypt, and the certificate the one `leaf` carries. Returns the CKA_ID.
fn assert_stored(token: &TestToken, label: &str, leaf: &Leaf) -> Result<String> {
    let objects = p11_objects(token)?;
    let mine: Vec<&P11Object> = objects
        .iter()
        .filter(|o| o.label() == Some(label))
        .collect();
    let one = |kind: &str| -> Result<&P11Object> {
        let found: Vec<_> = mine.iter().filter(|o| o.is(kind)).collect();
        match found.as_slice() {
            [o] => Ok(o),
            _ => Err(format!("expected one {kind} labelled {label}: {objects:#?}").into()),
        }
    };
    assert_eq!(mine.len(), 3, "{objects:#?}");
    let (key, public, cert) = (one("Private Key")?, one("Public Key")?, one("Certificate")?);
    let id = key.id().ok_or("private key without CKA_ID")?;
    assert!(!id.is_empty());
    assert_eq!(public.id(), Some(id), "{objects:#?}");
    assert_eq!(cert.id(), Some(id), "{objects:#?}");
    // pkcs11-tool prints "extractable" (or "never extractable") when set; imported keys
    // are sensitive and nothing else.
    assert_eq!(key.field("Access"), Some("sensitive"), "{key:#?}");
    let usage = key.field("Usage").ok_or("no Usage line")?;
    assert!(usage.split(", ").any(|u| u == "sign"), "{usage}");
    assert!(
        !usage.contains("decrypt") && !usage.contains("unwrap"),
        "{usage}"
    );
    assert_eq!(
        cert.field("serial").map(str::to_lowercase),
        Some(leaf.serial_hex()?),
        "{cert:#?}"
    );
    Ok(id.to_string())
}

fn ski_hex(cert_pem: &Path) -> Result<String> {
    let out = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in"])
            .arg(cert_pem),
    )?;
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| format!("no SKI in {text}"))?;
    Ok(line.trim().replace(':', "").to_lowercase())
}

fn certificate_objects(token: &TestToken) -> Result<Vec<P11Object>> {
    Ok(p11_objects(token)?
        .into_iter()
        .filter(|o| o.is("Certificate"))
        .collect())
}

// --- Writers: OpenSSL 3 CLI, the openssl crate, Java keytool, GnuTLS certtool, legacy ---

#[test]
fn openssl_cli_pbes2_aes256_sha256_200k_iterations_imports() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(token.dir.path(), "gsko", &leaf, &ca)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let p12 = token.path("openssl3.p12");
    openssl_export(
        &pem,
        &p12,
        "gsko-openssl3",
        &pw,
        &[
            "-keypbe",
            "AES-256-CBC",
            "-certpbe",
            "AES-256-CBC",
            "-macalg",
            "sha256",
            "-iter",
            "200000",
        ],
    )?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(
        info.contains(
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, PRF hmacWithSHA256"
        ),
        "{info}"
    );
    assert!(info.contains("MAC: sha256"), "{info}");

    let text = stdout_text(&mut import_cmd(&token, &p12, &pw))?;
    assert!(text.starts_with("Imported and proven."), "{text}");
    assert!(text.contains("Label:        gsko-openssl3"), "{text}");
    assert!(text.contains("O=Gmina Przykładowo"), "{text}");
    assert!(text.contains("verified against the certificate"), "{text}");
    assert_stored(&token, "gsko-openssl3", &leaf)?;
    sign_with_pkcs11_tool_and_verify(&token, "gsko-openssl3", &leaf.cert)
}

#[test]
fn openssl_crate_pbes2_aes128_imports() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let der = p12_in_code(
        &leaf.key,
        Some(&leaf.cert),
        &[&ca.cert],
        Some("gsko-aes128"),
        POLISH_PASSWORD,
        Pbes2 {
            cipher: Nid::AES_128_CBC,
            iter: 50_000,
        },
    )?;
    let p12 = token.path("aes128.p12");
    std::fs::write(&p12, der)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(
        info.contains("PBES2, PBKDF2, AES-128-CBC, Iteration 50000, PRF hmacWithSHA256"),
        "{info}"
    );

    run_ok(&mut import_cmd(&token, &p12, &pw))?;
    assert_stored(&token, "gsko-aes128", &leaf)?;
    sign_with_pkcs11_tool_and_verify(&token, "gsko-aes128", &leaf.cert)
}

#[test]
fn keytool_importkeystore_p12_with_chain_imports() -> Result {
    // Java's PBKDF2 refuses non-ASCII passwords ("Password is not ASCII"), so Java-written
    // files cannot carry a Polish password at all.
    const PASSWORD: &str = "Sigillum-2026";
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let src = token.path("src.p12");
    write_p12(&src, &leaf, &ca, "gsko-java", PASSWORD)?;
    let p12 = token.path("keytool.p12");
    keytool_import(&src, &p12, PASSWORD)?;
    let pw = secret_file(token.dir.path(), "p12.pw", PASSWORD)?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(
        info.contains("Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC")
            && info.contains("PRF hmacWithSHA256"),
        "{info}"
    );
    assert!(info.contains("MAC: sha256"), "{info}");
    assert_ne!(std::fs::read(&src)?, std::fs::read(&p12)?);

    let report = stdout_json(import_cmd(&token, &p12, &pw).arg("--json"))?;
    assert_eq!(report["label"], "gsko-java", "{report:#}");
    assert!(
        report["chain"][0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("CN=Sigillum Test CA")),
        "{report:#}"
    );
    assert_stored(&token, "gsko-java", &leaf)?;
    let certs = certificate_objects(&token)?;
    assert_eq!(certs.len(), 2, "leaf and CA: {certs:#?}");
    sign_with_pkcs11_tool_and_verify(&token, "gsko-java", &leaf.cert)
}

#[test]
fn keytool_genkeypair_ec_p256_imports() -> Result {
    const PASSWORD: &str = "Sigillum-2026";
    let token = TestToken::new()?;
    let p12 = token.path("keytool-ec.p12");
    keytool_genkeypair(
        &p12,
        "gsko-wk",
        PASSWORD,
        &["-keyalg", "EC", "-groupname", "secp256r1"],
    )?;
    let pw = secret_file(token.dir.path(), "p12.pw", PASSWORD)?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(info.contains("PBES2, PBKDF2, AES-256-CBC"), "{info}");
    let cert_pem = token.path("keytool-ec.pem");
    run_ok(
        Command::new("openssl")
            .args(["pkcs12", "-nokeys", "-clcerts", "-in"])
            .arg(&p12)
            .arg("-passin")
            .arg(format!("file:{}", pw.display()))
            .arg("-out")
            .arg(&cert_pem),
    )?;
    let cert = openssl::x509::X509::from_pem(&std::fs::read(&cert_pem)?)?;

    let report = stdout_json(import_cmd(&token, &p12, &pw).arg("--json"))?;
    assert_eq!(report["label"], "gsko-wk", "{report:#}");
    assert_eq!(report["key"]["type"], "EC", "{report:#}");
    assert_eq!(report["key"]["curve"], "P-256", "{report:#}");
    assert_eq!(report["proof"]["algorithm"], "ES256", "{report:#}");
    assert_eq!(report["proof"]["signature_verified"], true, "{report:#}");
    // keytool's SubjectKeyIdentifier is SHA-1 of the key bits too: the default ID matches.
    assert_eq!(report["id"].as_str(), Some(ski_hex(&cert_pem)?.as_str()));
    let objects = p11_objects(&token)?;
    assert_eq!(objects.len(), 3, "self-signed: no CA object: {objects:#?}");
    sign_with_pkcs11_tool_and_verify(&token, "gsko-wk", &cert)
}

#[test]
fn certtool_to_p12_imports() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(token.dir.path(), "gsko", &leaf, &ca)?;
    let p12 = token.path("gnutls.p12");
    certtool_to_p12(&pem, &p12, "gsko-gnutls", POLISH_PASSWORD)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(
        info.contains("Shrouded Keybag: PBES2, PBKDF2, AES-128-CBC")
            && info.contains("PRF hmacWithSHA256"),
        "{info}"
    );

    run_ok(&mut import_cmd(&token, &p12, &pw))?;
    assert_stored(&token, "gsko-gnutls", &leaf)?;
    sign_with_pkcs11_tool_and_verify(&token, "gsko-gnutls", &leaf.cert)
}

#[test]
fn legacy_epuap_style_p12_imports() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(token.dir.path(), "gsko", &leaf, &ca)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let p12 = token.path("epuap.p12");
    openssl_export(
        &pem,
        &p12,
        "gsko-epuap",
        &pw,
        &["-legacy", "-iter", "100000"],
    )?;
    // Proof that the fixture is legacy: OpenSSL 3 without its legacy provider refuses it.
    let plain = openssl_info(&p12, &pw, &[])?;
    let plain_err = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "{plain_err}");
    assert!(
        plain_err.contains("unsupported") && plain_err.contains("RC2-40-CBC"),
        "{plain_err}"
    );
    let legacy = String::from_utf8(openssl_info(&p12, &pw, &["-legacy"])?.stderr)?;
    for expected in [
        "MAC: sha1, Iteration 100000",
        "PKCS7 Encrypted data: pbeWithSHA1And40BitRC2-CBC",
        "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC",
    ] {
        assert!(legacy.contains(expected), "{expected}: {legacy}");
    }

    let text = stdout_text(&mut import_cmd(&token, &p12, &pw))?;
    assert!(
        text.contains(
            "CA:           CN=Sigillum Test CA, O=Polska Wytwórnia Papierów Wartościowych S.A., C=PL"
        ),
        "{text}"
    );
    assert_stored(&token, "gsko-epuap", &leaf)?;
    assert_eq!(certificate_objects(&token)?.len(), 2);
    sign_with_pkcs11_tool_and_verify(&token, "gsko-epuap", &leaf.cert)
}

// --- Passwords ---

#[test]
fn polish_password_from_file_with_editor_newline() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-pl")?;
    // The fixture really needs the Polish letters: their ASCII folding does not open it.
    let folded = secret_file(s.token.dir.path(), "folded.pw", "Zazolc gesla jazn")?;
    assert!(!openssl_info(&s.p12, &folded, &[])?.status.success());
    let with_newline = secret_file(s.token.dir.path(), "nl.pw", &format!("{POLISH_PASSWORD}\n"))?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &with_newline))?;
    assert_stored(&s.token, "gsko-pl", &s.leaf)?;
    Ok(())
}

#[test]
fn polish_password_from_environment() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-env")?;
    let out = run_ok(
        s.token
            .on_token("import")
            .arg("--p12")
            .arg(&s.p12)
            .env("HSM_SIGNER_P12_PASSWORD", POLISH_PASSWORD),
    )?;
    assert!(String::from_utf8(out.stdout)?.contains("Imported and proven."));
    assert_stored(&s.token, "gsko-env", &s.leaf)?;
    Ok(())
}

fn empty_password_p12(token: &TestToken, leaf: &Leaf, ca: &Ca) -> Result<PathBuf> {
    let p12 = token.path("empty.p12");
    write_p12(&p12, leaf, ca, "gsko-empty", "")?;
    // A non-empty password must not open it, or the test proves nothing.
    let wrong = secret_file(token.dir.path(), "wrong.pw", "x")?;
    assert!(!openssl_info(&p12, &wrong, &[])?.status.success());
    Ok(p12)
}

#[test]
fn empty_password_from_empty_file() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = empty_password_p12(&token, &leaf, &ca)?;
    let empty = secret_file(token.dir.path(), "empty.pw", "")?;
    run_ok(&mut import_cmd(&token, &p12, &empty))?;
    assert_stored(&token, "gsko-empty", &leaf)?;
    Ok(())
}

#[test]
fn empty_password_from_empty_environment_variable() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = empty_password_p12(&token, &leaf, &ca)?;
    run_ok(
        token
            .on_token("import")
            .arg("--p12")
            .arg(&p12)
            .env("HSM_SIGNER_P12_PASSWORD", ""),
    )?;
    assert_stored(&token, "gsko-empty", &leaf)?;
    Ok(())
}

// --- Key types ---

/// Imports a key of `spec`, checks the report's key description and proof, what landed
/// on the token, and signs with pkcs11-tool for an independent check.
fn import_key_of(spec: KeySpec, kind: Value) -> Result {
    let s = setup(spec, "gsko-key")?;
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).arg("--json"))?;
    assert_eq!(report["key"], kind, "{report:#}");
    assert_eq!(report["certificate"]["key"], kind, "{report:#}");
    let proof = if spec.is_ec() { "ES256" } else { "RS256" };
    assert_eq!(report["proof"]["algorithm"], proof, "{report:#}");
    assert_eq!(report["proof"]["signature_verified"], true, "{report:#}");
    let objects = p11_objects(&s.token)?;
    let key = objects
        .iter()
        .find(|o| o.is("Private Key"))
        .ok_or("no private key")?;
    let expected_header = if spec.is_ec() { "; EC" } else { "; RSA" };
    assert!(key.header.ends_with(expected_header), "{key:#?}");
    assert_stored(&s.token, "gsko-key", &s.leaf)?;
    sign_with_pkcs11_tool_and_verify(&s.token, "gsko-key", &s.leaf.cert)
}

#[test]
fn rsa_2048_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::Rsa(2048),
        serde_json::json!({"type": "RSA", "bits": 2048}),
    )
}

#[test]
fn rsa_3072_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::Rsa(3072),
        serde_json::json!({"type": "RSA", "bits": 3072}),
    )
}

#[test]
fn rsa_4096_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::Rsa(4096),
        serde_json::json!({"type": "RSA", "bits": 4096}),
    )
}

#[test]
fn ec_p256_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::P256,
        serde_json::json!({"type": "EC", "curve": "P-256"}),
    )
}

#[test]
fn ec_p384_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::P384,
        serde_json::json!({"type": "EC", "curve": "P-384"}),
    )
}

#[test]
fn ec_p521_imports_and_signs() -> Result {
    import_key_of(
        KeySpec::P521,
        serde_json::json!({"type": "EC", "curve": "P-521"}),
    )
}

// --- CA chain, labels and IDs ---

#[test]
fn ca_certificate_lands_once_for_two_keys() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let mut leaves = Vec::new();
    for label in ["gsko-a", "gsko-b"] {
        let leaf = ca.leaf(KeySpec::Rsa(2048))?;
        let p12 = token.path(&format!("{label}.p12"));
        write_p12(&p12, &leaf, &ca, label, POLISH_PASSWORD)?;
        run_ok(&mut import_cmd(&token, &p12, &pw))?;
        leaves.push((label, leaf));
    }
    for (label, leaf) in &leaves {
        assert_stored(&token, label, leaf)?;
    }
    let certs = certificate_objects(&token)?;
    assert_eq!(certs.len(), 3, "two leaves and one CA: {certs:#?}");
    let ca_objects: Vec<_> = certs
        .iter()
        .filter(|c| c.label() == Some("Sigillum Test CA"))
        .collect();
    assert_eq!(ca_objects.len(), 1, "{certs:#?}");
    // The CA object holds exactly the CA's certificate.
    assert_eq!(
        token.read_object("cert", "Sigillum Test CA")?,
        ca.cert.to_der()?
    );
    Ok(())
}

#[test]
fn friendly_name_is_the_default_label() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-epuap-2026")?;
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).arg("--json"))?;
    assert_eq!(report["label"], "gsko-epuap-2026");
    assert_stored(&s.token, "gsko-epuap-2026", &s.leaf)?;
    Ok(())
}

#[test]
fn label_and_id_options_override_the_defaults() -> Result {
    let s = setup(KeySpec::P256, "gsko-friendly")?;
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).args([
        "--label",
        "gsko-wk-2026",
        "--id",
        "0a:0B:0c",
        "--json",
    ]))?;
    assert_eq!(report["label"], "gsko-wk-2026", "{report:#}");
    assert_eq!(report["id"], "0a0b0c", "{report:#}");
    assert_eq!(assert_stored(&s.token, "gsko-wk-2026", &s.leaf)?, "0a0b0c");
    let objects = p11_objects(&s.token)?;
    assert!(
        !objects.iter().any(|o| o.label() == Some("gsko-friendly")),
        "{objects:#?}"
    );
    run_ok(s.token.on_token("verify").args(["--label", "gsko-wk-2026"]))?;
    Ok(())
}

#[test]
fn default_id_is_sha1_of_the_public_key_and_equals_the_ski() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-ski")?;
    let pem = write_pem(s.token.dir.path(), "leaf", &s.leaf, &s.ca)?;
    let ski = ski_hex(&pem.cert)?;
    assert_eq!(ski.len(), 40, "{ski}");
    // SHA-1 over the subjectPublicKey BIT STRING contents, computed here independently:
    // for RSA that is the DER RSAPublicKey.
    let rsa = s.leaf.cert.public_key()?.rsa()?;
    let method1 = hex::encode(openssl::sha::sha1(&rsa.public_key_to_der_pkcs1()?));
    assert_eq!(ski, method1);
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).arg("--json"))?;
    assert_eq!(report["id"].as_str(), Some(ski.as_str()), "{report:#}");
    assert_eq!(assert_stored(&s.token, "gsko-ski", &s.leaf)?, ski);
    Ok(())
}

// --- A separate certificate file ---

#[test]
fn matching_der_certificate_file_is_accepted() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-der")?;
    let cer = s.token.path("gsko.cer");
    std::fs::write(&cer, s.leaf.cert.to_der()?)?;
    run_ok(
        import_cmd(&s.token, &s.p12, &s.password)
            .arg("--cert")
            .arg(&cer),
    )?;
    assert_stored(&s.token, "gsko-der", &s.leaf)?;
    Ok(())
}

#[test]
fn matching_pem_certificate_file_is_accepted() -> Result {
    let s = setup(KeySpec::P384, "gsko-pem")?;
    let pem = s.token.path("gsko.pem");
    std::fs::write(&pem, s.leaf.cert.to_pem()?)?;
    run_ok(
        import_cmd(&s.token, &s.p12, &s.password)
            .arg("--cert")
            .arg(&pem),
    )?;
    assert_stored(&s.token, "gsko-pem", &s.leaf)?;
    Ok(())
}

#[test]
fn key_only_p12_with_certificate_file_imports() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
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
    let p12 = token.path("keyonly.p12");
    std::fs::write(&p12, der)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let info = String::from_utf8(openssl_info(&p12, &pw, &[])?.stderr)?;
    assert!(!info.contains("Certificate bag"), "{info}");
    let cer = token.path("gsko.cer");
    std::fs::write(&cer, leaf.cert.to_der()?)?;

    run_ok(
        import_cmd(&token, &p12, &pw)
            .arg("--cert")
            .arg(&cer)
            .args(["--label", "gsko-keyonly"]),
    )?;
    assert_stored(&token, "gsko-keyonly", &leaf)?;
    sign_with_pkcs11_tool_and_verify(&token, "gsko-keyonly", &leaf.cert)
}

// --- What lands on the token, seen by tools this project did not write ---

#[test]
fn private_key_is_private_sensitive_and_cannot_be_read_out() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-prot")?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &s.password))?;
    assert_stored(&s.token, "gsko-prot", &s.leaf)?;
    // Without logging in, the private key is invisible (CKA_PRIVATE); the public key and
    // the certificates are not.
    let out = run_ok(
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &s.token.conf)
            .args(["--module", MODULE, "--token-label", &s.token.label])
            .arg("--list-objects"),
    )?;
    let public_view = parse_p11_objects(&String::from_utf8(out.stdout)?);
    assert!(
        !public_view.iter().any(|o| o.is("Private Key")),
        "{public_view:#?}"
    );
    assert!(
        public_view.iter().any(|o| o.is("Public Key")),
        "{public_view:#?}"
    );
    // Logged in, the token itself refuses every private part (CKR_ATTRIBUTE_SENSITIVE),
    // asked through the test's own cryptoki session. (pkcs11-tool cannot help here: it
    // answers "reading private keys not (yet) supported" and exits 0.)
    s.token.with_session(|session| {
        use cryptoki::object::{Attribute, AttributeInfo, AttributeType as T, ObjectClass};
        let keys = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"gsko-prot".to_vec()),
        ])?;
        let [key] = keys.as_slice() else {
            return Err(format!("{} private keys labelled gsko-prot", keys.len()).into());
        };
        let secret = [
            T::PrivateExponent,
            T::Prime1,
            T::Prime2,
            T::Exponent1,
            T::Exponent2,
            T::Coefficient,
        ];
        let info = session.get_attribute_info(*key, &secret)?;
        assert!(
            info.iter().all(|i| matches!(i, AttributeInfo::Sensitive)),
            "{info:?}"
        );
        let flags =
            session.get_attributes(*key, &[T::Sensitive, T::Extractable, T::Private, T::Token])?;
        for flag in flags {
            match flag {
                Attribute::Sensitive(b) | Attribute::Private(b) | Attribute::Token(b) => {
                    assert!(b, "{flag:?}")
                }
                Attribute::Extractable(b) => assert!(!b, "{flag:?}"),
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        // The modulus is public, and is there: the query itself works.
        assert!(matches!(
            session.get_attribute_info(*key, &[T::Modulus])?[..],
            [AttributeInfo::Available(256)]
        ));
        Ok(())
    })
}

#[test]
fn p11tool_sees_three_objects_with_one_label_and_id() -> Result {
    let s = setup(KeySpec::P256, "gsko-gnutls-view")?;
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).arg("--json"))?;
    let id = report["id"].as_str().ok_or("no id")?.to_string();
    let out = run_ok(
        Command::new("p11tool")
            .env("SOFTHSM2_CONF", &s.token.conf)
            .env("GNUTLS_PIN", PIN)
            .args(["--provider", MODULE, "--list-all", "--login"])
            .arg(format!("pkcs11:token={}", s.token.label)),
    )?;
    let text = String::from_utf8(out.stdout)?;
    let blocks: Vec<&str> = text
        .split("Object ")
        .filter(|b| b.contains("object=gsko-gnutls-view;"))
        .collect();
    assert_eq!(blocks.len(), 3, "{text}");
    let p11tool_id = id
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(":");
    for kind in ["type=private", "type=public", "type=cert"] {
        let block = blocks
            .iter()
            .find(|b| b.contains(kind))
            .ok_or_else(|| format!("no {kind}: {text}"))?;
        assert!(block.contains(&format!("ID: {p11tool_id}")), "{block}");
    }
    let private = blocks
        .iter()
        .find(|b| b.contains("type=private"))
        .ok_or("no private key")?;
    assert!(
        private.contains("Flags: CKA_PRIVATE; CKA_SENSITIVE;"),
        "{private}"
    );
    assert!(!private.contains("CKA_EXTRACTABLE"), "{private}");
    Ok(())
}

// --- verify, list, remove ---

#[test]
fn verify_reports_the_key_in_text_and_json() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-verify")?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &s.password))?;
    let text = stdout_text(s.token.on_token("verify").args(["--label", "gsko-verify"]))?;
    assert!(text.starts_with("Key works."), "{text}");
    assert!(
        text.contains(
            "RS256 signature on a fresh random challenge verified against the certificate"
        ),
        "{text}"
    );
    assert!(!text.contains("PROBLEM"), "{text}");

    let report =
        stdout_json(
            s.token
                .on_token("verify")
                .args(["--label", "gsko-verify", "--json"]),
        )?;
    let cert = &report["certificate"];
    assert_eq!(
        cert["subject"], "CN=gsko.przykladowo.pl, O=Gmina Przykładowo, C=PL",
        "{report:#}"
    );
    assert!(
        cert["issuer"]
            .as_str()
            .is_some_and(|i| i.starts_with("CN=Sigillum Test CA")),
        "{report:#}"
    );
    assert_eq!(cert["serial"].as_str(), Some(s.leaf.serial_hex()?.as_str()));
    assert_eq!(cert["sha256"].as_str(), Some(s.leaf.sha256_hex()?.as_str()));
    let days = cert["days_left"].as_i64().ok_or("no days_left")?;
    assert!((728..=730).contains(&days), "{days}");
    let attrs = &report["attributes"];
    assert_eq!(attrs["sensitive"], true);
    assert_eq!(attrs["extractable"], false);
    assert_eq!(attrs["private"], true);
    assert_eq!(attrs["token"], true);
    assert_eq!(attrs["sign"], true);
    assert_eq!(attrs["private_value_readable"], false);
    // Imported keys existed outside the token once.
    assert_eq!(attrs["always_sensitive"], false);
    assert_eq!(attrs["local"], false);
    assert_eq!(report["proof"]["signature_verified"], true);
    assert_eq!(report["token"].as_str(), Some(s.token.label.as_str()));
    assert_eq!(
        report["token_serial"].as_str(),
        Some(s.token.serial.as_str())
    );
    Ok(())
}

#[test]
fn list_shows_every_key_in_text_and_json() -> Result {
    let token = TestToken::new()?;
    let empty = stdout_text(&mut token.on_token("list"))?;
    assert!(empty.contains("holds no private keys"), "{empty}");
    let ca = Ca::sigillum()?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let rsa = ca.leaf(KeySpec::Rsa(2048))?;
    let ec = ca.leaf(KeySpec::P256)?;
    for (label, leaf) in [("gsko-epuap", &rsa), ("gsko-wk", &ec)] {
        let p12 = token.path(&format!("{label}.p12"));
        write_p12(&p12, leaf, &ca, label, POLISH_PASSWORD)?;
        run_ok(&mut import_cmd(&token, &p12, &pw))?;
    }

    let text = stdout_text(&mut token.on_token("list"))?;
    assert!(text.contains("Label:        gsko-epuap"), "{text}");
    assert!(text.contains("Label:        gsko-wk"), "{text}");
    assert!(text.contains("Key:          RSA-2048"), "{text}");
    assert!(text.contains("Key:          EC P-256"), "{text}");
    assert!(text.contains(&rsa.serial_hex()?), "{text}");

    let listed = stdout_json(token.on_token("list").arg("--json"))?;
    let keys = listed.as_array().ok_or("list --json is not an array")?;
    assert_eq!(keys.len(), 2, "{listed:#}");
    let by_label = |label: &str| keys.iter().find(|k| k["label"] == label);
    let epuap = by_label("gsko-epuap").ok_or("gsko-epuap not listed")?;
    let wk = by_label("gsko-wk").ok_or("gsko-wk not listed")?;
    assert_eq!(epuap["key"]["type"], "RSA");
    assert_eq!(wk["key"]["curve"], "P-256");
    assert_eq!(
        wk["certificate"]["serial"].as_str(),
        Some(ec.serial_hex()?.as_str())
    );
    assert!(epuap["proof"].is_null(), "list does not sign: {epuap:#}");
    Ok(())
}

#[test]
fn remove_with_yes_removes_key_public_key_and_certificate() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-old")?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &s.password))?;
    assert_eq!(s.token.objects()?.len(), 4);
    let text = stdout_text(
        s.token
            .on_token("remove")
            .args(["--label", "gsko-old", "--yes"]),
    )?;
    assert!(text.contains("Removed 3 object(s)"), "{text}");
    let left = p11_objects(&s.token)?;
    assert_eq!(left.len(), 1, "only the CA certificate stays: {left:#?}");
    assert!(left[0].is("Certificate") && left[0].label() == Some("Sigillum Test CA"));
    let err = run_fails(s.token.on_token("verify").args(["--label", "gsko-old"]))?;
    assert!(
        err.contains("no private key labelled \"gsko-old\""),
        "{err}"
    );
    Ok(())
}

#[test]
fn remove_without_yes_and_without_terminal_removes_nothing() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-keep")?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &s.password))?;
    let before = s.token.objects()?;
    let err = run_fails(s.token.on_token("remove").args(["--label", "gsko-keep"]))?;
    assert!(
        err.contains("without confirmation: re-run with --yes"),
        "{err}"
    );
    assert_eq!(s.token.objects()?, before);
    run_ok(s.token.on_token("verify").args(["--label", "gsko-keep"]))?;
    Ok(())
}

// --- Replacing a key ---

/// A token with `old` imported under "gsko-epuap", and a second `.p12` with `new` (same CA).
fn replace_setup() -> Result<(TestToken, Leaf, Leaf, PathBuf, PathBuf)> {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let old = ca.leaf(KeySpec::Rsa(2048))?;
    let new = ca.leaf(KeySpec::Rsa(2048))?;
    let old_p12 = token.path("2024.p12");
    let new_p12 = token.path("2026.p12");
    write_p12(&old_p12, &old, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    write_p12(&new_p12, &new, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    run_ok(&mut import_cmd(&token, &old_p12, &pw))?;
    Ok((token, old, new, new_p12, pw))
}

#[test]
fn second_key_under_a_taken_label_is_refused_without_replace() -> Result {
    let (token, old, _new, new_p12, pw) = replace_setup()?;
    let before = token.objects()?;
    let err = run_fails(&mut import_cmd(&token, &new_p12, &pw))?;
    assert!(
        err.contains("already holds 3 object(s) with label \"gsko-epuap\"")
            && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(token.objects()?, before);
    let report = stdout_json(
        token
            .on_token("verify")
            .args(["--label", "gsko-epuap", "--json"]),
    )?;
    assert_eq!(
        report["certificate"]["serial"].as_str(),
        Some(old.serial_hex()?.as_str())
    );
    Ok(())
}

#[test]
fn replace_swaps_in_the_new_key_and_removes_the_old() -> Result {
    let (token, old, new, new_p12, pw) = replace_setup()?;
    let old_id = assert_stored(&token, "gsko-epuap", &old)?;
    run_ok(import_cmd(&token, &new_p12, &pw).arg("--replace"))?;
    let new_id = assert_stored(&token, "gsko-epuap", &new)?;
    assert_ne!(old_id, new_id);
    let objects = p11_objects(&token)?;
    assert_eq!(
        objects.len(),
        4,
        "new key, public key, cert, one CA: {objects:#?}"
    );
    assert!(
        !objects.iter().any(|o| o.id() == Some(old_id.as_str())),
        "old objects left: {objects:#?}"
    );
    assert!(
        objects
            .iter()
            .all(|o| !o.label().unwrap_or("").contains(".replaced-")
                && !o.label().unwrap_or("").contains(".importing-")),
        "{objects:#?}"
    );
    let report = stdout_json(
        token
            .on_token("verify")
            .args(["--label", "gsko-epuap", "--json"]),
    )?;
    assert_eq!(
        report["certificate"]["serial"].as_str(),
        Some(new.serial_hex()?.as_str())
    );
    sign_with_pkcs11_tool_and_verify(&token, "gsko-epuap", &new.cert)
}

#[test]
fn import_json_report_describes_key_chain_and_proof() -> Result {
    let s = setup(KeySpec::Rsa(2048), "gsko-json")?;
    let report = stdout_json(import_cmd(&s.token, &s.p12, &s.password).arg("--json"))?;
    assert_eq!(report["label"], "gsko-json");
    assert_eq!(report["token"].as_str(), Some(s.token.label.as_str()));
    assert_eq!(
        report["certificate"]["serial"].as_str(),
        Some(s.leaf.serial_hex()?.as_str())
    );
    assert!(
        report["certificate"]["not_after"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{report:#}"
    );
    let chain = report["chain"].as_array().ok_or("no chain")?;
    assert_eq!(chain.len(), 1, "{report:#}");
    assert!(
        chain[0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("O=Polska Wytwórnia Papierów Wartościowych S.A.")),
        "{report:#}"
    );
    assert_eq!(report["proof"]["algorithm"], "RS256");
    assert_eq!(report["proof"]["signature_verified"], true);
    assert_eq!(report["attributes"]["extractable"], false);
    Ok(())
}

#[test]
fn polish_friendly_name_becomes_the_label() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let pem = write_pem(token.dir.path(), "gsko", &leaf, &ca)?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    let p12 = token.path("pl.p12");
    // PKCS#12 keeps the friendlyName as a BMPString; it must come back as UTF-8.
    openssl_export(&pem, &p12, "GSKO Przykładowo", &pw, &[])?;
    let report = stdout_json(import_cmd(&token, &p12, &pw).arg("--json"))?;
    assert_eq!(report["label"], "GSKO Przykładowo", "{report:#}");
    assert_stored(&token, "GSKO Przykładowo", &leaf)?;
    run_ok(
        token
            .on_token("verify")
            .args(["--label", "GSKO Przykładowo"]),
    )?;
    Ok(())
}

#[test]
fn replace_with_the_same_p12_leaves_one_copy() -> Result {
    let s = setup(KeySpec::P256, "gsko-wk")?;
    run_ok(&mut import_cmd(&s.token, &s.p12, &s.password))?;
    let before = s.token.objects()?;
    run_ok(import_cmd(&s.token, &s.p12, &s.password).arg("--replace"))?;
    // Same key, same certificate: the same objects again, not a second set.
    assert_eq!(s.token.objects()?, before);
    assert_stored(&s.token, "gsko-wk", &s.leaf)?;
    run_ok(s.token.on_token("verify").args(["--label", "gsko-wk"]))?;
    Ok(())
}

#[test]
fn ec_key_may_derive_only_with_allow_derive() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let pw = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    for (label, extra) in [("gsko-sign", None), ("gsko-ecdh", Some("--allow-derive"))] {
        let leaf = ca.leaf(KeySpec::P256)?;
        let p12 = token.path(&format!("{label}.p12"));
        write_p12(&p12, &leaf, &ca, label, POLISH_PASSWORD)?;
        let report = stdout_json(import_cmd(&token, &p12, &pw).arg("--json").args(extra))?;
        assert_eq!(
            report["attributes"]["derive"],
            extra.is_some(),
            "{report:#}"
        );
    }
    let objects = p11_objects(&token)?;
    let usage = |label: &str| {
        objects
            .iter()
            .find(|o| o.is("Private Key") && o.label() == Some(label))
            .and_then(|o| o.field("Usage"))
            .map(str::to_string)
    };
    let sign = usage("gsko-sign").ok_or("no gsko-sign key")?;
    let ecdh = usage("gsko-ecdh").ok_or("no gsko-ecdh key")?;
    assert!(!sign.contains("derive"), "{sign}");
    assert!(ecdh.contains("derive") && ecdh.contains("sign"), "{ecdh}");
    Ok(())
}
