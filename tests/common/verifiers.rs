//! The independent XML-DSig verifiers the tests run (xmlsec1, zeep + signxml, the JDK's
//! javax.xml.crypto), and the namespaces they are told about. One copy for every test file.

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
