//! The independent XML-DSig verifiers the tests run (xmlsec1, zeep + signxml, the JDK's
//! javax.xml.crypto, and for XAdES signxml's XAdESVerifier and xadesjs), and the
//! namespaces they are told about. One copy for every test file.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Result;

/// SOAP 1.1.
pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2.
pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Security utility (wsu:Id, wsu:Timestamp).
pub const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// SAML 2.0 protocol.
pub const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// XAdES 1.3.2 (SignedProperties).
pub const XADES: &str = "http://uri.etsi.org/01903/v1.3.2#";

/// Whether a verifier is installed. Absent: skip with a message, except in CI, where
/// scripts/test installs them all and a missing one is a failure.
pub fn have(what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing in CI: scripts/test installs it"
        );
        println!("SKIPPED {what}: not installed on this machine");
    }
    ok
}

/// xmlsec1 (Debian `xmlsec1`).
pub fn have_xmlsec1() -> bool {
    have("xmlsec1", Command::new("xmlsec1").arg("--version"))
}

/// Python with zeep, signxml and xmlsec (pip, from scripts/test).
pub fn have_python() -> bool {
    have(
        "python zeep + signxml + xmlsec",
        Command::new("python3").args(["-c", "import zeep, signxml, xmlsec"]),
    )
}

/// A JDK.
pub fn have_java() -> bool {
    have("java (JDK)", Command::new("java").arg("-version"))
}

/// Runs a verifier; whether it accepted, and all it printed (also echoed, for the log).
pub fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("$ {cmd:?}\n{text}");
    Ok((out.status.success(), text))
}

/// tests/verifiers.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifiers")
}

/// `xmlsec1 --verify` of `xml` against `cert`'s public key, with `--id-attr` for each
/// (attribute, namespace:element).
pub fn xmlsec1(xml: &Path, cert: &Path, id_attrs: &[(&str, String)]) -> Result<(bool, String)> {
    let mut cmd = Command::new("xmlsec1");
    cmd.arg("--verify");
    for (attr, node) in id_attrs {
        cmd.arg(format!("--id-attr:{attr}")).arg(node);
    }
    run(cmd.arg("--pubkey-cert-pem").arg(cert).arg(xml))
}

/// The `--id-attr`s of a WS-Security envelope: its Body and Timestamp.
pub fn wss_id_attrs(soap_ns: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Id", format!("{soap_ns}:Body")),
        ("Id", format!("{WSU}:Timestamp")),
    ]
}

/// tests/verifiers/verify_xml.py (zeep and signxml) in `mode` (`wss` or `saml`).
pub fn python(mode: &str, xml: &Path, cert: &Path, ids: &[&str]) -> Result<(bool, String)> {
    run(Command::new("python3")
        .arg(dir().join("verify_xml.py"))
        .arg(mode)
        .arg(xml)
        .arg(cert)
        .args(ids))
}

/// tests/verifiers/VerifyXml.java (javax.xml.crypto).
pub fn java(xml: &Path, cert: &Path) -> Result<(bool, String)> {
    run(Command::new("java")
        .arg(dir().join("VerifyXml.java"))
        .arg(xml)
        .arg(cert))
}

/// KSeF's `AuthTokenRequest` as its auth schema defines it: the challenge from
/// `POST /auth/challenge`, the context (a NIP), and how the subject is identified.
pub const AUTH_TOKEN_REQUEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<AuthTokenRequest xmlns="http://ksef.mf.gov.pl/auth/token/2.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Challenge>20261207-CR-1A2B3C4D5E-F6A7B8C9D0-1E</Challenge>
  <ContextIdentifier>
    <Nip>5260250274</Nip>
  </ContextIdentifier>
  <SubjectIdentifierType>certificateSubject</SubjectIdentifierType>
</AuthTokenRequest>
"#;

/// An enveloped XAdES-BES signature to check with [`xades_everywhere`].
pub struct XadesCheck<'a> {
    /// Where the files the verifiers read are written.
    pub dir: &'a Path,
    /// The unsigned document.
    pub input: &'a str,
    /// The signed document, as the signer returned it.
    pub signed: &'a str,
    /// `SigningTime` as the signer reported it.
    pub signing_time: &'a str,
    /// The signing certificate (DER).
    pub cert_der: &'a [u8],
    /// The CertDigest expected: `sha256` or `sha1`.
    pub digest: &'a str,
    /// SigningTime must fall within these two instants (the second one rounded up).
    pub window: (time::OffsetDateTime, time::OffsetDateTime),
    /// A change of the document (from, to) every verifier must reject.
    pub tamper: (&'a str, &'a str),
    /// False for RSASSA-PSS, which xmlsec1 1.2 does not implement (Debian 12's 1.2.37
    /// lists no PSS transform): the other verifiers check it.
    pub xmlsec1: bool,
}

/// Runs every XAdES verifier on `check.signed`, each saying what it validated:
/// - xmlsec1, both references (SignedProperties found by `--id-attr`);
/// - signxml's `XAdESVerifier` (x509_cert=, expect_references=2), which also checks the
///   CertDigest, and, in the same script (tests/verifiers/verify_xades.py), lxml and
///   `cryptography` for what no verifier checks: SigningTime, the CertDigest in SHA-256
///   and SHA-1, IssuerSerial, the shape, and that the document less its signature
///   canonicalises as the input;
/// - xadesjs on Node (tools/verifiers-xades, `npm ci` by scripts/test);
/// - the JDK's javax.xml.crypto (tests/verifiers/VerifyXml.java).
///
/// The scripts are also shown a changed SigningTime and a changed document, and must
/// reject both.
pub fn xades_everywhere(check: &XadesCheck) -> Result {
    let work = check.dir;
    let input_path = work.join("input.xml");
    std::fs::write(&input_path, check.input)?;
    let signed_path = work.join("signed.xml");
    std::fs::write(&signed_path, check.signed)?;
    let cert_path = work.join("cert.pem");
    std::fs::write(
        &cert_path,
        openssl::x509::X509::from_der(check.cert_der)?.to_pem()?,
    )?;
    let rfc3339 = |t: time::OffsetDateTime| -> Result<String> {
        Ok(t.replace_nanosecond(0)?
            .format(&time::format_description::well_known::Rfc3339)?)
    };
    let not_before = rfc3339(check.window.0)?;
    let not_after = rfc3339(check.window.1 + time::Duration::seconds(1))?;
    let python = |xml: &Path| -> Result<(bool, String)> {
        run(Command::new("python3")
            .arg(dir().join("verify_xades.py"))
            .args([xml, &cert_path, &input_path])
            .args([check.digest, &not_before, &not_after]))
    };
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verifiers-xades");
    let have_xadesjs = tools.join("node_modules/xadesjs").is_dir();
    let xadesjs = |xml: &Path| -> Result<(bool, String)> {
        run(Command::new("node")
            .arg(tools.join("verify_xades.js"))
            .args([xml, &cert_path]))
    };

    if check.xmlsec1 && have_xmlsec1() {
        let props = format!("{XADES}:SignedProperties");
        let (ok, text) = xmlsec1(&signed_path, &cert_path, &[("Id", props)])?;
        assert!(ok && text.contains("OK"), "xmlsec1: {text}");
        assert!(
            text.contains("SignedInfo References (ok/all): 2/2"),
            "xmlsec1: {text}"
        );
    }

    let (ok, text) = python(&signed_path)?;
    assert!(
        ok && text.contains("signxml XAdESVerifier: OK (2 references)")
            && text.contains("lxml + cryptography: OK"),
        "verify_xades.py: {text}"
    );

    if have_xadesjs {
        let (ok, text) = xadesjs(&signed_path)?;
        assert!(
            ok && text.contains("xadesjs: OK (2 references)"),
            "xadesjs: {text}"
        );
    } else {
        super::missing_precondition(
            "xadesjs: run `npm ci` in tools/verifiers-xades (scripts/test does)",
        )?;
    }

    // The verifier scripts can fail: a changed signed property and a changed word of the
    // document are each rejected.
    let signing_time = format!("<xades:SigningTime>{}", check.signing_time);
    for (what, from, to) in [
        (
            "SigningTime",
            signing_time.as_str(),
            "<xades:SigningTime>2020-01-01T00:00:00Z",
        ),
        ("the document", check.tamper.0, check.tamper.1),
    ] {
        assert!(check.signed.contains(from), "{from}");
        let forged = work.join("forged.xml");
        std::fs::write(&forged, check.signed.replacen(from, to, 1))?;
        let (python_ok, _) = python(&forged)?;
        assert!(!python_ok, "verify_xades.py accepted a changed {what}");
        if have_xadesjs {
            let (node_ok, _) = xadesjs(&forged)?;
            assert!(!node_ok, "xadesjs accepted a changed {what}");
        }
    }

    if have_java() {
        let (ok, text) = java(&signed_path, &cert_path)?;
        assert!(
            ok && text.contains("java: OK core validity"),
            "java: {text}"
        );
        assert!(
            text.contains("reference  -> the document")
                && text.contains("SignedProperties valid=true"),
            "java: {text}"
        );
    }
    Ok(())
}
