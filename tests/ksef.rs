//! KSeF certificates born on the token: `generate --subject-json` with the JSON of KSeF's
//! `GET /certificates/enrollments/data` and `--csr-format der-base64`, each test on its
//! own fresh SoftHSM2 token. The CSR is read by tools this project did not write: Python
//! `cryptography` for the subject (OID, string type, value), `openssl req -verify` for
//! the signature, pkcs11-tool for the key's protection.

use crate::common;

use std::process::Command;

use base64::Engine as _;
use common::fixtures::*;
use common::*;

/// Enrollment data as KSeF returns it, with Polish letters, a value over RFC 5280's
/// 64-character bound for CN (waived for `--subject-json`), and the fields in an order
/// unlike the CSR's.
const ENROLLMENT_DATA: &str = r#"{
  "uniqueIdentifier": "b7f3e2a4-0c1d-4e5f-8a9b-1c2d3e4f5a6b",
  "serialNumber": "TINPL-5260250274",
  "countryName": "PL",
  "organizationIdentifier": "VATPL-5260250274",
  "organizationName": "Gmina Przykładowo",
  "surname": "Żółkiewska-Wróbel",
  "givenName": "Łucja Maria",
  "commonName": "Urząd Gminy Przykładowo, Referat Finansowy, Stanowisko do spraw faktur elektronicznych"
}"#;

/// What the CSR's subject must hold, as (OID, ASN.1 string type, value): UTF8String for
/// every attribute but C and serialNumber (PrintableString), as KSeF's clients write it.
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "2.5.4.3",
        "UTF8String",
        "Urząd Gminy Przykładowo, Referat Finansowy, Stanowisko do spraw faktur elektronicznych",
    ),
    ("2.5.4.4", "UTF8String", "Żółkiewska-Wróbel"),
    ("2.5.4.42", "UTF8String", "Łucja Maria"),
    ("2.5.4.10", "UTF8String", "Gmina Przykładowo"),
    ("2.5.4.97", "UTF8String", "VATPL-5260250274"),
    ("2.5.4.6", "PrintableString", "PL"),
    ("2.5.4.5", "PrintableString", "TINPL-5260250274"),
    (
        "2.5.4.45",
        "UTF8String",
        "b7f3e2a4-0c1d-4e5f-8a9b-1c2d3e4f5a6b",
    ),
];

/// The CSR's subject read by Python `cryptography`, one `OID\tTYPE\tVALUE` line per
/// attribute, in DER order.
const READ_SUBJECT: &str = r#"
import sys
from cryptography import x509
csr = x509.load_der_x509_csr(open(sys.argv[1], "rb").read())
for attr in csr.subject:
    print(f"{attr.oid.dotted_string}\t{attr._type.name}\t{attr.value}")
"#;

fn python_subject(der: &std::path::Path) -> Result<Vec<(String, String, String)>> {
    let out = run_ok(Command::new("python3").args(["-c", READ_SUBJECT]).arg(der))?;
    String::from_utf8(out.stdout)?
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t').map(str::to_string);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(o), Some(t), Some(v)) => Ok((o, t, v)),
                _ => Err(format!("unexpected line {line:?}").into()),
            }
        })
        .collect()
}

fn born_on_the_token(key_type: &str) -> Result {
    if !verifiers_have_cryptography() {
        return missing_precondition("python3 with the `cryptography` module");
    }
    let token = TestToken::new()?;
    let json = token.path("enrollment-data.json");
    std::fs::write(&json, ENROLLMENT_DATA)?;
    let csr = token.path("ksef.csr.b64");
    let out = run_ok(
        token
            .on_token("generate")
            .args(["--label", "ksef-auth", "--key-type", key_type])
            .args(["--purpose", "sign", "--subject-json"])
            .arg(&json)
            .arg("--csr")
            .arg(&csr)
            .args(["--csr-format", "der-base64", "--json"]),
    )?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["csr_format"], "der-base64");

    // One line of standard base64, nothing else: what KSeF's `csr` field takes.
    let text = std::fs::read_to_string(&csr)?;
    assert!(
        !text.contains(['\n', '\r', ' ']) && !text.is_empty(),
        "{text:?}"
    );
    let der = base64::engine::general_purpose::STANDARD.decode(&text)?;
    let der_path = token.path("ksef.csr.der");
    std::fs::write(&der_path, &der)?;

    // The subject as a multiset of (OID, string type, value), and in the C# order.
    let mut got = python_subject(&der_path)?;
    let mut expected: Vec<(String, String, String)> = EXPECTED
        .iter()
        .map(|(o, t, v)| (o.to_string(), t.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, expected, "the order of KSeF's C# client");
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    // OpenSSL checks the CSR's signature with the public key it carries.
    let verified = run_ok(
        Command::new("openssl")
            .args(["req", "-verify", "-noout", "-inform", "DER", "-in"])
            .arg(&der_path),
    )?;
    let said = String::from_utf8_lossy(&verified.stderr).into_owned()
        + &String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("verify OK"), "{said}");

    // The key stays on the token: sensitive, never extractable, and its public key is
    // the CSR's.
    let objects = p11_objects(&token)?;
    let private = objects
        .iter()
        .find(|o| o.is("Private Key") && o.label() == Some("ksef-auth"))
        .ok_or("no private key labelled ksef-auth")?;
    let access = private.field("Access").unwrap_or("");
    assert!(
        access.contains("sensitive") && access.contains("never extractable"),
        "{private:?}"
    );
    assert!(!access.contains(", extractable"), "{private:?}");
    let token_public =
        openssl::pkey::PKey::public_key_from_der(&token.read_object("pubkey", "ksef-auth")?)?;
    let req = openssl::x509::X509Req::from_der(&der)?;
    assert!(req.public_key()?.public_eq(&token_public));
    Ok(())
}

fn verifiers_have_cryptography() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn ec_p256_csr_for_ksef() -> Result {
    born_on_the_token("ec-p256")
}

#[test]
fn rsa_2048_csr_for_ksef() -> Result {
    born_on_the_token("rsa-2048")
}

/// The whole path offline: the CSR of `--csr-format der-base64` is what a CA (here a
/// test CA run by the openssl CLI, standing in for KSeF) issues from, and `import-cert`
/// puts the issued certificate beside the key.
#[test]
fn issued_certificate_goes_beside_the_key() -> Result {
    let token = TestToken::new()?;
    let json = token.path("enrollment-data.json");
    std::fs::write(&json, ENROLLMENT_DATA)?;
    let csr = token.path("ksef.csr.b64");
    run_ok(
        token
            .on_token("generate")
            .args(["--label", "ksef-auth", "--key-type", "ec-p256"])
            .args(["--purpose", "sign", "--subject-json"])
            .arg(&json)
            .arg("--csr")
            .arg(&csr)
            .args(["--csr-format", "der-base64"]),
    )?;
    let der = base64::engine::general_purpose::STANDARD.decode(std::fs::read_to_string(&csr)?)?;
    let csr_pem = token.path("ksef.csr.pem");
    std::fs::write(&csr_pem, openssl::x509::X509Req::from_der(&der)?.to_pem()?)?;
    let ca = Ca::named("KSeF Test CA")?;
    let (ca_cert, ca_key) = (token.path("ca.pem"), token.path("ca.key"));
    std::fs::write(&ca_cert, ca.cert.to_pem()?)?;
    std::fs::write(&ca_key, ca.key.private_key_to_pem_pkcs8()?)?;
    let issued = token.path("ksef-auth.der");
    run_ok(
        Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "30",
                "-set_serial",
                "0x01635E98D9669239",
            ])
            .arg("-in")
            .arg(&csr_pem)
            .arg("-CA")
            .arg(&ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-outform", "DER", "-out"])
            .arg(&issued),
    )?;
    run_ok(
        token
            .on_token("import-cert")
            .args(["--label", "ksef-auth", "--cert"])
            .arg(&issued),
    )?;
    let objects = p11_objects(&token)?;
    let labelled = |kind: &str| {
        objects
            .iter()
            .find(|o| o.is(kind) && o.label() == Some("ksef-auth"))
            .cloned()
    };
    let key = labelled("Private Key").ok_or("no private key")?;
    let cert = labelled("Certificate").ok_or("no certificate beside the key")?;
    assert_eq!(cert.id(), key.id());
    assert_eq!(
        token.read_object("cert", "ksef-auth")?,
        std::fs::read(issued)?
    );
    Ok(())
}

/// `--subject` takes KSeF's attribute names and OIDs too, with the same string types.
#[test]
fn subject_takes_ksef_names_and_oids() -> Result {
    let token = TestToken::new()?;
    let csr = token.path("k.csr");
    run_ok(
        token
            .on_token("generate")
            .args(["--label", "k", "--key-type", "ec-p256", "--purpose", "sign"])
            .args([
                "--subject",
                "/C=PL/2.5.4.97=VATPL-5260250274/givenName=Jan/surname=Kowalski/2.5.4.5=TINPL-5260250274/2.5.4.45=u-1/CN=Jan Kowalski",
            ])
            .arg("--csr")
            .arg(&csr),
    )?;
    let der_path = token.path("k.der");
    let der = openssl::x509::X509Req::from_pem(&std::fs::read(&csr)?)?.to_der()?;
    std::fs::write(&der_path, der)?;
    if !verifiers_have_cryptography() {
        return missing_precondition("python3 with the `cryptography` module");
    }
    let got = python_subject(&der_path)?;
    let expected: Vec<(String, String, String)> = [
        ("2.5.4.6", "PrintableString", "PL"),
        ("2.5.4.97", "UTF8String", "VATPL-5260250274"),
        ("2.5.4.42", "UTF8String", "Jan"),
        ("2.5.4.4", "UTF8String", "Kowalski"),
        ("2.5.4.5", "PrintableString", "TINPL-5260250274"),
        ("2.5.4.45", "UTF8String", "u-1"),
        ("2.5.4.3", "UTF8String", "Jan Kowalski"),
    ]
    .iter()
    .map(|(o, t, v)| (o.to_string(), t.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, expected);
    Ok(())
}

/// Bad enrollment data is refused before the token is touched: nothing is created.
#[test]
fn bad_subject_json_creates_nothing() -> Result {
    let token = TestToken::new()?;
    let before = token.objects()?;
    let cases = [
        (r#"{"commonName":"x","nickname":"y"}"#, "unknown field"),
        (r#"{"commonName":"Gmina\u202eexe.pdf"}"#, "U+202E"),
        (
            r#"{"commonName":"x","countryName":"Polska"}"#,
            "two capital letters",
        ),
        (r#"{"countryName":"PL"}"#, "no commonName"),
        ("not json", "not the JSON of KSeF"),
    ];
    for (json, message) in cases {
        let path = token.path("bad.json");
        std::fs::write(&path, json)?;
        let stderr = run_fails(
            token
                .on_token("generate")
                .args(["--label", "k", "--key-type", "ec-p256", "--purpose", "sign"])
                .arg("--subject-json")
                .arg(&path)
                .arg("--csr")
                .arg(token.path("k.csr")),
        )?;
        assert!(stderr.contains(message), "{json}: {stderr}");
    }
    assert_eq!(token.objects()?, before);
    assert!(!token.path("k.csr").exists());
    Ok(())
}
