//! The integration examples in `examples/` (PHP, Python, Java) and the example
//! configuration in `contrib/` run against a real daemon on a test token, and what they
//! produce is checked with tools this project did not write:
//! - the one-call examples (tpuserinfo over `wss/sign` with the ePUAP RSA key, the WK
//!   AuthnRequest over `saml/sign` with an EC P-256 key): xmlsec1 against the certificate,
//!   zeep + signxml (tests/verifiers/verify_xml.py, which says what was signed) and the JDK
//!   (tests/verifiers/VerifyXml.java); a DOCTYPE envelope makes each exit non-zero with
//!   `xml_doctype_forbidden`; PHP's SoapClient sends the daemon's bytes unchanged;
//! - the raw `sign` examples: xmlsec1 for the AuthnRequests signed from PHP and Java,
//!   `openssl dgst` for the raw signatures;
//! - docs/integration.md and docs/pl/integration.md: their snippets are in the example
//!   files, and their runnable console blocks run as shown.
//!
//! A test is skipped (with a note on standard error) only when its runtime (php, python3,
//! java, javac) or a verifier is not installed. `scripts/test` installs php (with php-soap),
//! xmlsec1, a JDK and the Python verifiers, so on CI those tests run.

use crate::common;
use crate::common::daemon::EPUAP;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use common::daemon::{openssl_verify, provision, Daemon, KeySetup};
use common::fixtures::{import_cmd, secret_file, write_p12, Ca, KeySpec, Leaf};
use common::verifiers::{self, have_python, SAMLP, SOAP11, WSU};
use common::*;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::x509::X509;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The exc-c14n bytes of a SignedInfo as GSKO sends them.
const SIGNED_INFO: &[u8] = br##"<ds:SignedInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"></ds:SignatureMethod><ds:Reference URI="#_5f1c0d7e"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"></ds:Transform><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"></ds:DigestMethod><ds:DigestValue>uH8PzD4Y3cVb0Fv0nq7v0mJtWQ3N0xqRk1mS0i8qV5E=</ds:DigestValue></ds:Reference></ds:SignedInfo>"##;

const AUTHN_REQUEST: &str = "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest";

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// True when `tool` can be started; false only when it is not installed and CI is unset
/// (under CI a missing tool fails the test: [`missing_precondition`]).
fn installed(tool: &str, version_arg: &str) -> Result<bool> {
    match Command::new(tool).arg(version_arg).output() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing_precondition(&format!(
                "{tool} is not installed (scripts/test installs it), and this test needs it"
            ))?;
            Ok(false)
        }
        Err(e) => Err(format!("cannot run {tool}: {e}").into()),
    }
}

/// An example's command with a clean environment for the socket and key.
fn run_example(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("HSM_SIGNER_SOCKET")
        .env_remove("HSM_SIGNER_KEY")
        .stdin(Stdio::null());
    cmd
}

/// Standard output as text, failing with the whole output unless the exit status is 0.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8(run_ok(cmd)?.stdout)?)
}

/// Runs `cmd` with `input` on standard input.
fn with_stdin(cmd: &mut Command, input: &[u8]) -> Result<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(input)?;
    Ok(child.wait_with_output()?)
}

/// Verifies a base64 RSA PKCS#1 v1.5 SHA-256 signature over [`SIGNED_INFO`] with the
/// openssl CLI, and, as a control that the check can fail, over other bytes.
fn assert_rs256(dir: &Path, cert: &X509, signature_b64: &str) -> Result {
    let signature = B64.decode(signature_b64.trim())?;
    assert_eq!(signature.len(), 256, "an RSA-2048 signature is 256 bytes");
    assert!(
        openssl_verify(dir, cert, SIGNED_INFO, &signature, &["-sha256"])?,
        "openssl does not verify the signature against the certificate"
    );
    assert!(
        !openssl_verify(dir, cert, b"<ds:SignedInfo/>", &signature, &["-sha256"])?,
        "control: the signature must not verify over other bytes"
    );
    Ok(())
}

/// The first certificate of a PEM text.
fn first_pem_cert(pem: &str) -> Result<X509> {
    Ok(X509::stack_from_pem(pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or("no certificate in the PEM answer")?)
}

/// `xmlsec1 --verify` of a SAML AuthnRequest, its ID attribute declared, with `trust`
/// options (`--trusted-pem CA` or `--pubkey-cert-pem CERT`).
fn xmlsec1_verify(file: &Path, trust: &[&str], key_file: &Path) -> Result<Output> {
    Ok(Command::new("xmlsec1")
        .args(["--verify", "--id-attr:ID", AUTHN_REQUEST])
        .args(trust)
        .arg(key_file)
        .arg(file)
        .output()?)
}

/// Imports an RSA-2048 key labelled `gsko-epuap`, issued by a CA of the test's own, so
/// that xmlsec1 can check the chain to it.
fn epuap_with_ca(token: &TestToken) -> Result<(Ca, Leaf)> {
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", "hasło")?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    run_ok(&mut import_cmd(token, &p12, &password))?;
    Ok((ca, leaf))
}

/// Checks a signed AuthnRequest as its receiver would: the RS256 enveloped signature, the
/// certificate in KeyInfo (the key's own, chained to `ca`), and, as a control, that a
/// changed AssertionConsumerServiceURL fails.
fn assert_authn_request_verifies(token: &TestToken, xml: &str, ca: &Ca, leaf: &Leaf) -> Result {
    for expected in [
        "<saml2p:AuthnRequest ",
        r#"Destination="https://pz.gov.pl/dt/SingleSignOnService""#,
        r#"AssertionConsumerServiceURL="https://gsko.przykladowo.pl/saml/acs""#,
        r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>"#,
        r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
    ] {
        assert!(xml.contains(expected), "{expected} missing from:\n{xml}");
    }
    let in_key_info = xml
        .split_once("<ds:X509Certificate>")
        .and_then(|(_, rest)| rest.split_once("</ds:X509Certificate>"))
        .ok_or("no X509Certificate")?
        .0;
    assert_eq!(B64.decode(in_key_info)?, leaf.cert.to_der()?);

    let signed = token.path("signed.xml");
    std::fs::write(&signed, xml)?;
    let ca_pem = token.path("ca.pem");
    std::fs::write(&ca_pem, ca.cert.to_pem()?)?;
    let leaf_pem = token.path("leaf.pem");
    std::fs::write(&leaf_pem, leaf.cert.to_pem()?)?;

    // Signature and digest, with the certificate in KeyInfo chained to the CA.
    let out = xmlsec1_verify(&signed, &["--trusted-pem"], &ca_pem)?;
    assert!(out.status.success(), "xmlsec1 --trusted-pem: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OK"),
        "{out:?}"
    );
    // The same against the certificate alone, as a partner holding it would check.
    let out = xmlsec1_verify(&signed, &["--pubkey-cert-pem"], &leaf_pem)?;
    assert!(out.status.success(), "xmlsec1 --pubkey-cert-pem: {out:?}");

    // Control: a changed AssertionConsumerServiceURL breaks the digest.
    let tampered = token.path("tampered.xml");
    std::fs::write(&tampered, xml.replace("/saml/acs", "/saml/evil"))?;
    let out = xmlsec1_verify(&tampered, &["--trusted-pem"], &ca_pem)?;
    assert!(!out.status.success(), "xmlsec1 accepted a tampered request");
    Ok(())
}

#[test]
fn php_signs_an_authn_request_that_xmlsec1_verifies() -> Result {
    if !installed("php", "--version")? || !installed("xmlsec1", "--version")? {
        return Ok(());
    }
    let token = TestToken::new()?;
    let (ca, leaf) = epuap_with_ca(&token)?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;

    let mut php = run_example("php");
    php.arg(example("php/sign_authn_request.php"))
        .env("HSM_SIGNER_SOCKET", &daemon.socket)
        .env("HSM_SIGNER_KEY", "epuap");
    let xml = stdout_of(&mut php)?;
    assert_authn_request_verifies(&token, &xml, &ca, &leaf)?;
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn python_signatures_verify_with_openssl() -> Result {
    if !installed("python3", "--version")? {
        return Ok(());
    }
    let token = TestToken::new()?;
    let keys = [
        EPUAP,
        KeySetup {
            name: "wk",
            label: "gsko-wk",
            spec: KeySpec::P256,
            algorithms: &["ES256"],
            extra: "",
        },
    ];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let script = example("python/sign.py");
    let socket = daemon.socket.to_str().ok_or("socket path")?;
    let signed_info = token.path("signedinfo.xml");
    std::fs::write(&signed_info, SIGNED_INFO)?;
    let file = signed_info.to_str().ok_or("path")?;
    let python = |args: &[&str]| {
        let mut cmd = run_example("python3");
        cmd.arg(&script).args(["--socket", socket]).args(args);
        cmd
    };

    // RS256 over the data: the daemon hashes.
    let by_data = stdout_of(&mut python(&["--key", "epuap", "sign", file]))?;
    assert_rs256(token.dir.path(), &leaves[0].cert, &by_data)?;
    // The same with the digest made in Python, SignedInfo on standard input. PKCS#1 v1.5
    // is deterministic, so the signature must be the same bytes.
    let out = with_stdin(
        &mut python(&["--key", "epuap", "sign", "--digest"]),
        SIGNED_INFO,
    )?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout)?, by_data);

    // ES256 for login.gov.pl: raw r||s, turned into DER only for openssl.
    let raw = B64.decode(
        stdout_of(&mut python(&[
            "--key",
            "wk",
            "sign",
            "--algorithm",
            "ES256",
            file,
        ]))?
        .trim(),
    )?;
    assert_eq!(raw.len(), 64, "ES256 XML-DSig signatures are raw r||s");
    let (r, s) = raw.split_at(32);
    let der = EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?
        .to_der()?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[1].cert,
        SIGNED_INFO,
        &der,
        &["-sha256"]
    )?);

    // The certificate for KeyInfo (base64 DER) and as PEM.
    let b64 = stdout_of(&mut python(&["--key", "epuap", "certificate"]))?;
    assert_eq!(B64.decode(b64.trim())?, leaves[0].cert.to_der()?);
    let pem = stdout_of(&mut python(&[
        "--key",
        "epuap",
        "certificate",
        "--format",
        "pem",
    ]))?;
    assert_eq!(first_pem_cert(&pem)?.to_der()?, leaves[0].cert.to_der()?);

    // A refusal reaches the caller with the daemon's code.
    let out = python(&["--key", "nope", "sign", file]).output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404 unknown_key"),
        "{out:?}"
    );
    assert!(daemon.stop()?.success());
    Ok(())
}

#[test]
fn java_signs_and_its_authn_request_verifies() -> Result {
    if !installed("java", "-version")? {
        return Ok(());
    }
    let token = TestToken::new()?;
    let (ca, leaf) = epuap_with_ca(&token)?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    let socket = daemon.socket.to_str().ok_or("socket path")?;
    let signed_info = token.path("signedinfo.xml");
    std::fs::write(&signed_info, SIGNED_INFO)?;
    let client = |args: &[&str]| {
        let mut cmd = run_example("java");
        cmd.arg(example("java/HsmSignerClient.java"))
            .args(["--socket", socket])
            .args(args);
        cmd
    };

    // HsmSignerClient.java as a single-file program: raw RS256 over SignedInfo bytes.
    let signature = stdout_of(client(&["--key", "epuap", "sign"]).arg(&signed_info))?;
    assert_rs256(token.dir.path(), &leaf.cert, &signature)?;
    let b64 = stdout_of(&mut client(&["--key", "epuap", "certificate"]))?;
    assert_eq!(B64.decode(b64.trim())?, leaf.cert.to_der()?);
    let pem = stdout_of(&mut client(&[
        "--key",
        "epuap",
        "certificate",
        "--format",
        "pem",
    ]))?;
    assert_eq!(first_pem_cert(&pem)?.to_der()?, leaf.cert.to_der()?);
    // The daemon answers 404 before reading the body and closes; the client still reads it.
    let out = client(&["--key", "nope", "sign"])
        .arg(&signed_info)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404 unknown_key"),
        "{out:?}"
    );

    // SignAuthnRequest.java: the JDK's XML-DSig API with the daemon's signature.
    if !installed("javac", "-version")? || !installed("xmlsec1", "--version")? {
        return Ok(());
    }
    let classes = token.path("classes");
    run_ok(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(example("java/HsmSignerClient.java"))
            .arg(example("java/SignAuthnRequest.java")),
    )?;
    let mut sign = run_example("java");
    sign.arg("-cp")
        .arg(&classes)
        .arg("SignAuthnRequest")
        .env("HSM_SIGNER_SOCKET", &daemon.socket);
    let xml = stdout_of(&mut sign)?;
    assert_authn_request_verifies(&token, &xml, &ca, &leaf)?;
    assert!(daemon.stop()?.success());
    Ok(())
}

/// Replaces `from` with `to` in `text`, failing when `from` is not there, so that a change
/// to contrib/config.toml cannot silently skip a substitution.
fn substitute(text: &str, from: &str, to: &str) -> Result<String> {
    if !text.contains(from) {
        return Err(format!("contrib/config.toml no longer contains {from:?}").into());
    }
    Ok(text.replace(from, to))
}

#[test]
fn contrib_config_runs_the_daemon() -> Result {
    let token = TestToken::new()?;
    let keys = [
        EPUAP,
        KeySetup {
            name: "wk",
            label: "gsko-wk",
            spec: KeySpec::P256,
            algorithms: &["ES256"],
            extra: "",
        },
    ];
    let leaves = provision(&token, &keys)?;
    let uid = nix::unistd::geteuid().as_raw();
    let path = |name: &str| token.path(name).display().to_string();
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config.toml"))?;
    for (from, to) in [
        ("token = \"GSKO\"", format!("token = \"{}\"", token.label)),
        (
            "\"/etc/hsm-signer/pin\"",
            format!("\"{}\"", token.pin_file.display()),
        ),
        (
            "\"/run/hsm-signer/hsm-signer.sock\"",
            format!("\"{}\"", path("hsm-signer.sock")),
        ),
        (
            "\"/var/log/hsm-signer/audit.jsonl\"",
            format!("\"{}\"", path("audit.jsonl")),
        ),
        // The test's user need not be in www-data, nor be uid 33.
        ("socket_group = \"www-data\"", String::new()),
        (
            "allowed_uids = [33, 0] #",
            format!("allowed_uids = [{uid}, 0] #"),
        ),
        (
            "allowed_uids = [33]\n# allowed_gids",
            format!("allowed_uids = [{uid}]\n# allowed_gids"),
        ),
        // The login.gov.pl key, commented out in the file.
        (
            "# [[keys]]\n# name = \"wk\"",
            "[[keys]]\nname = \"wk\"".into(),
        ),
        ("# label = \"gsko-wk\"", "label = \"gsko-wk\"".into()),
        (
            "# algorithms = [\"ES256\"]\n# allowed_uids = [33]",
            format!("algorithms = [\"ES256\"]\nallowed_uids = [{uid}]"),
        ),
    ] {
        text = substitute(&text, from, &to)?;
    }
    let config = token.path("config.toml");
    std::fs::write(&config, text)?;
    let daemon = Daemon::start_with(&token, config)?;

    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["keys"].as_array().map(Vec::len), Some(2), "{health}");
    let body =
        serde_json::json!({"algorithm": "ES256", "data": B64.encode(SIGNED_INFO), "format": "der"});
    let (status, answer) = daemon.json("POST", "/v1/keys/wk/sign", Some(&body.to_string()))?;
    assert_eq!(status, 200, "{answer}");
    let der = B64.decode(answer["signature"].as_str().ok_or("no signature")?)?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[1].cert,
        SIGNED_INFO,
        &der,
        &["-sha256"]
    )?);
    assert!(daemon.stop()?.success());
    Ok(())
}

/// The settings operations.md section 2 shows as the typical configuration (EN and PL), each
/// with the value the shipped contrib/config.toml (/etc/hsm-signer/config.toml) gives it.
#[test]
fn the_shipped_config_is_the_typical_configuration_of_operations_md() -> Result {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped: toml::Table =
        std::fs::read_to_string(repo.join("contrib/config.toml"))?.parse()?;
    for doc in ["docs/operations.md", "docs/pl/operations.md"] {
        let text = std::fs::read_to_string(repo.join(doc))?;
        let section = text
            .split_once("\n## 2. ")
            .ok_or_else(|| format!("{doc}: no section 2"))?
            .1;
        let block = section
            .split_once("```toml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .ok_or_else(|| format!("{doc}: no toml block in section 2"))?
            .0;
        let typical: toml::Table = block.parse()?;
        for (table, settings) in &typical {
            let shipped_table = &shipped[table.as_str()];
            let (settings, shipped_table) = match (settings, shipped_table) {
                (toml::Value::Array(keys), toml::Value::Array(shipped_keys)) => {
                    (keys[0].clone(), shipped_keys[0].clone())
                }
                (settings, shipped_table) => (settings.clone(), shipped_table.clone()),
            };
            let settings = settings.as_table().ok_or("not a table")?;
            for (name, value) in settings {
                assert_eq!(
                    shipped_table.get(name),
                    Some(value),
                    "{doc}: [{table}] {name} = {value} is not what contrib/config.toml ships"
                );
            }
        }
    }
    Ok(())
}

/// The settings of a configuration file in order, active or commented out (`# name = …`,
/// `# [table]`), without their comments: what the EN and PL copies must share.
fn settings_of(text: &str) -> Vec<String> {
    let setting = |line: &str| -> Option<String> {
        let table = line.trim_start_matches('[').trim_end_matches(']');
        if line.starts_with('[')
            && line.ends_with(']')
            && table.chars().all(|c| c.is_ascii_lowercase() || c == '.')
        {
            return Some(line.to_string());
        }
        let (name, _) = line.split_once(" = ")?;
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            .then(|| name.to_string())
    };
    text.lines()
        .filter_map(|line| match line.strip_prefix("# ") {
            Some(commented) => setting(commented).map(|s| format!("# {s}")),
            None => setting(line),
        })
        .collect()
}

/// contrib/config.pl.toml is contrib/config.toml with Polish comments: the same active values,
/// and the same settings shown commented out, in the same order.
#[test]
fn the_polish_config_has_the_same_settings_as_the_english_one() -> Result {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let en = std::fs::read_to_string(repo.join("contrib/config.toml"))?;
    let pl = std::fs::read_to_string(repo.join("contrib/config.pl.toml"))?;
    let (en_values, pl_values): (toml::Table, toml::Table) = (en.parse()?, pl.parse()?);
    assert_eq!(en_values, pl_values, "the active settings differ");
    let (en_settings, pl_settings) = (settings_of(&en), settings_of(&pl));
    assert!(en_settings.len() > 40, "{en_settings:?}");
    assert_eq!(en_settings, pl_settings, "the settings shown differ");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The one-call examples: tpuserinfo (wss/sign) and wk_authn_request (saml/sign) in PHP,
// Python and Java, each output checked by xmlsec1, zeep + signxml and the JDK.

const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// An envelope with a DOCTYPE: every example must refuse to go on, with the daemon's code.
const DOCTYPE_ENVELOPE: &str = r#"<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&e;</soapenv:Body></soapenv:Envelope>
"#;

/// A daemon with the ePUAP RSA key (RS256) and the WK EC P-256 key (ES256), and the
/// keys' certificates as `epuap.pem` and `wk.pem` in the token's directory.
struct XmlSetup {
    daemon: Daemon,
    token: TestToken,
}

impl XmlSetup {
    fn start() -> Result<Self> {
        let token = TestToken::new()?;
        let keys = [
            EPUAP,
            KeySetup {
                name: "wk",
                label: "gsko-wk",
                spec: KeySpec::P256,
                algorithms: &["ES256"],
                extra: "",
            },
        ];
        let leaves = provision(&token, &keys)?;
        std::fs::write(token.path("epuap.pem"), leaves[0].cert.to_pem()?)?;
        std::fs::write(token.path("wk.pem"), leaves[1].cert.to_pem()?)?;
        let daemon = Daemon::start(&token, &keys, "")?;
        Ok(Self { daemon, token })
    }

    /// An example's command with the daemon's socket in `HSM_SIGNER_SOCKET`.
    fn example(&self, program: &str) -> Command {
        let mut cmd = run_example(program);
        cmd.env("HSM_SIGNER_SOCKET", &self.daemon.socket);
        cmd
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.token.path(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// The value of the attribute `name` (e.g. `wsu:Id="`) on the first element after `after`.
fn attribute_after(xml: &str, after: &str, name: &str) -> Result<String> {
    let rest = &xml[xml
        .find(after)
        .ok_or_else(|| format!("no {after} in:\n{xml}"))?..];
    let tag = &rest[..rest.find('>').ok_or("unclosed tag")?];
    let start = tag
        .find(name)
        .ok_or_else(|| format!("no {name} on {tag}"))?
        + name.len();
    let end = tag[start..].find('"').ok_or("unclosed attribute")?;
    Ok(tag[start..start + end].to_string())
}

/// A signed TpUserInfo envelope as ePUAP would check it: xmlsec1 against the ePUAP
/// certificate (Body and Timestamp references), zeep's verify_envelope and signxml (the
/// Body with GetTpUserInfo, the Timestamp), the JDK; and, as a control, xmlsec1 rejects
/// the envelope with another userId.
fn assert_tpuserinfo_verifies(s: &XmlSetup, name: &str, signed: &str, timestamp: bool) -> Result {
    assert!(signed.contains(RSA_SHA256), "{signed}");
    assert!(signed.contains(">jan.kowalski</userId>"), "{signed}");
    let body_id = attribute_after(signed, "Body ", "wsu:Id=\"")?;
    let file = s.write(&format!("{name}.signed.xml"), signed)?;
    let cert = s.token.path("epuap.pem");
    let refs = if timestamp { 2 } else { 1 };
    let xmlsec1 = |file: &Path| {
        verifiers::run(
            Command::new("xmlsec1")
                .args(["--verify", "--id-attr:Id"])
                .arg(format!("{SOAP11}:Body"))
                .arg("--id-attr:Id")
                .arg(format!("{WSU}:Timestamp"))
                .arg("--pubkey-cert-pem")
                .arg(&cert)
                .arg(file),
        )
    };
    if installed("xmlsec1", "--version")? {
        let (ok, out) = xmlsec1(&file)?;
        assert!(ok, "xmlsec1 rejected {name}:\n{out}");
        assert!(
            out.contains(&format!("SignedInfo References (ok/all): {refs}/{refs}")),
            "{out}"
        );
        let tampered = s.write(
            &format!("{name}.tampered.xml"),
            &signed.replace("jan.kowalski", "anna.nowak"),
        )?;
        assert!(!xmlsec1(&tampered)?.0, "xmlsec1 accepted a changed Body");
    }
    if have_python() {
        let mut ids = vec![body_id.clone()];
        if timestamp {
            ids.push(attribute_after(signed, "Timestamp ", "wsu:Id=\"")?);
        }
        let (ok, out) = verifiers::run(
            Command::new("python3")
                .arg(verifiers::dir().join("verify_xml.py"))
                .arg("wss")
                .arg(&file)
                .arg(&cert)
                .args(&ids),
        )?;
        assert!(ok, "zeep/signxml rejected {name}:\n{out}");
        assert!(out.contains("zeep: OK verify_envelope"), "{out}");
        assert!(
            out.contains(&format!(
                "signxml: OK reference #{body_id} -> SOAP 1.1 Body, payload ['GetTpUserInfo']"
            )),
            "{out}"
        );
        if timestamp {
            assert!(out.contains(" -> wsu:Timestamp Created="), "{out}");
        }
    }
    if installed("java", "-version")? {
        let (ok, out) = verifiers::run(
            Command::new("java")
                .arg(verifiers::dir().join("VerifyXml.java"))
                .arg(&file)
                .arg(&cert),
        )?;
        assert!(ok, "the JDK rejected {name}:\n{out}");
        assert!(
            out.contains(&format!(
                "java: reference #{body_id} -> {{{SOAP11}}}Body valid=true"
            )),
            "{out}"
        );
    }
    Ok(())
}

/// The AuthnRequest inside an HTTP-POST binding form: the SAMLRequest value decoded.
fn authn_request_of_form(form: &str) -> Result<String> {
    assert!(
        form.contains(r#"action="https://symulator.login.gov.pl/login/SingleSignOnService""#),
        "{form}"
    );
    let value = attribute_after(form, r#"name="SAMLRequest""#, "value=\"")?;
    Ok(String::from_utf8(B64.decode(value)?)?)
}

/// A signed WK AuthnRequest as WK would check it: ES256 with the WK certificate, by
/// xmlsec1, signxml (the AuthnRequest with its ID and Issuer) and the JDK; a changed
/// AssertionConsumerServiceURL fails xmlsec1.
fn assert_wk_authn_request_verifies(s: &XmlSetup, name: &str, xml: &str) -> Result {
    assert!(xml.starts_with("<saml2p:AuthnRequest "), "{xml}");
    assert!(xml.contains(ECDSA_SHA256), "{xml}");
    assert!(
        xml.contains("</saml2:Issuer><ds:Signature "),
        "the signature must follow Issuer:\n{xml}"
    );
    let id = attribute_after(xml, "<saml2p:AuthnRequest ", " ID=\"")?;
    assert!(xml.contains(&format!("URI=\"#{id}\"")), "{xml}");
    let file = s.write(&format!("{name}.signed.xml"), xml)?;
    let cert = s.token.path("wk.pem");
    let xmlsec1 = |file: &Path| {
        verifiers::run(
            Command::new("xmlsec1")
                .args([
                    "--verify",
                    "--id-attr:ID",
                    AUTHN_REQUEST,
                    "--pubkey-cert-pem",
                ])
                .arg(&cert)
                .arg(file),
        )
    };
    if installed("xmlsec1", "--version")? {
        let (ok, out) = xmlsec1(&file)?;
        assert!(ok, "xmlsec1 rejected {name}:\n{out}");
        assert!(out.contains("SignedInfo References (ok/all): 1/1"), "{out}");
        let tampered = s.write(
            &format!("{name}.tampered.xml"),
            &xml.replace("/wk/acs", "/wk/evil"),
        )?;
        assert!(!xmlsec1(&tampered)?.0, "xmlsec1 accepted a changed ACS URL");
    }
    if have_python() {
        let (ok, out) = verifiers::run(
            Command::new("python3")
                .arg(verifiers::dir().join("verify_xml.py"))
                .args(["saml"])
                .arg(&file)
                .arg(&cert)
                .arg(&id),
        )?;
        assert!(ok, "signxml rejected {name}:\n{out}");
        assert!(
            out.contains(&format!(
                "signxml: OK reference #{id} -> AuthnRequest Issuer=https://gsko.gmina.example"
            )),
            "{out}"
        );
    }
    if installed("java", "-version")? {
        let (ok, out) = verifiers::run(
            Command::new("java")
                .arg(verifiers::dir().join("VerifyXml.java"))
                .arg(&file)
                .arg(&cert),
        )?;
        assert!(ok, "the JDK rejected {name}:\n{out}");
        assert!(
            out.contains(&format!(
                "java: reference #{id} -> {{{SAMLP}}}AuthnRequest valid=true"
            )),
            "{out}"
        );
    }
    Ok(())
}

/// The example's answer to a DOCTYPE envelope: non-zero, with the daemon's code.
fn assert_refuses_doctype(mut cmd: Command) -> Result {
    let out = cmd.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("400 xml_doctype_forbidden: "),
        "the daemon's code and message must reach the caller: {out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing may be written: {out:?}");
    Ok(())
}

fn tpuserinfo_xml() -> PathBuf {
    example("xml/tpuserinfo.xml")
}

/// Accepts one HTTP request on a local TCP port, answers it with an empty SOAP 1.1
/// response, and hands back the request body: what a SOAP client really sent.
fn soap_endpoint() -> Result<(String, std::thread::JoinHandle<std::io::Result<Vec<u8>>>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/tpuserinfo", listener.local_addr()?);
    let handle = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (stream, _) = listener.accept()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(std::io::Error::other)?;
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><GetTpUserInfoResponse/></soapenv:Body></soapenv:Envelope>"#;
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )?;
        Ok(body)
    });
    Ok((url, handle))
}

#[test]
fn php_one_call_examples_sign_tpuserinfo_and_a_wk_authn_request() -> Result {
    if !installed("php", "--version")? {
        return Ok(());
    }
    let s = XmlSetup::start()?;
    let php = |args: &[&OsStr]| {
        let mut cmd = s.example("php");
        cmd.args(args);
        cmd
    };
    let script = example("php/tpuserinfo.php");
    let signed = stdout_of(&mut php(&[
        script.as_os_str(),
        tpuserinfo_xml().as_os_str(),
    ]))?;
    assert!(
        signed.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- GSKO → ePUAP"),
        "the envelope comes back as it was, declaration and comment included:\n{signed}"
    );
    assert_tpuserinfo_verifies(&s, "php-tpuserinfo", &signed, true)?;

    let form = stdout_of(&mut php(&[example("php/wk_authn_request.php").as_os_str()]))?;
    assert_wk_authn_request_verifies(&s, "php-authn", &authn_request_of_form(&form)?)?;

    let doctype = s.write("doctype.xml", DOCTYPE_ENVELOPE)?;
    assert_refuses_doctype(php(&[script.as_os_str(), doctype.as_os_str()]))?;

    // SoapClient: __doRequest has the request signed and sends those bytes unchanged.
    let soap = Command::new("php")
        .args(["-r", "exit(class_exists('SoapClient') ? 0 : 1);"])
        .status()?;
    if !soap.success() {
        return missing_precondition(
            "php-soap is not installed (apt-get install php-soap); the SoapClient part does not run",
        );
    }
    let (url, endpoint) = soap_endpoint()?;
    let printed = stdout_of(&mut php(&[
        script.as_os_str(),
        OsStr::new("--send"),
        OsStr::new(&url),
        OsStr::new("jan.kowalski"),
    ]))?;
    let sent = endpoint
        .join()
        .map_err(|_| "the SOAP endpoint panicked")??;
    assert_eq!(
        String::from_utf8(sent)?,
        printed,
        "SoapClient must send the daemon's bytes unchanged"
    );
    assert_tpuserinfo_verifies(&s, "php-soapclient", &printed, false)?;
    assert!(s.daemon.stop()?.success());
    Ok(())
}

#[test]
fn python_one_call_examples_sign_tpuserinfo_and_a_wk_authn_request() -> Result {
    if !installed("python3", "--version")? {
        return Ok(());
    }
    let s = XmlSetup::start()?;
    let script = example("python/tpuserinfo.py");
    let signed = stdout_of(s.example("python3").arg(&script).arg(tpuserinfo_xml()))?;
    assert_tpuserinfo_verifies(&s, "python-tpuserinfo", &signed, true)?;

    let form = stdout_of(
        s.example("python3")
            .arg(example("python/wk_authn_request.py")),
    )?;
    assert_wk_authn_request_verifies(&s, "python-authn", &authn_request_of_form(&form)?)?;

    let doctype = s.write("doctype.xml", DOCTYPE_ENVELOPE)?;
    let mut refused = s.example("python3");
    refused.arg(&script).arg(&doctype);
    assert_refuses_doctype(refused)?;
    assert!(s.daemon.stop()?.success());
    Ok(())
}

#[test]
fn java_one_call_examples_sign_tpuserinfo_and_a_wk_authn_request() -> Result {
    if !installed("java", "-version")? || !installed("javac", "-version")? {
        return Ok(());
    }
    let s = XmlSetup::start()?;
    let classes = s.token.path("classes");
    run_ok(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(example("java/HsmSignerClient.java"))
            .arg(example("java/TpUserInfo.java"))
            .arg(example("java/WkAuthnRequest.java")),
    )?;
    let java = |class: &str| {
        let mut cmd = s.example("java");
        cmd.arg("-cp").arg(&classes).arg(class);
        cmd
    };
    let signed = stdout_of(java("TpUserInfo").arg(tpuserinfo_xml()))?;
    assert_tpuserinfo_verifies(&s, "java-tpuserinfo", &signed, true)?;

    let form = stdout_of(&mut java("WkAuthnRequest"))?;
    assert_wk_authn_request_verifies(&s, "java-authn", &authn_request_of_form(&form)?)?;

    let doctype = s.write("doctype.xml", DOCTYPE_ENVELOPE)?;
    let mut refused = java("TpUserInfo");
    refused.arg(&doctype);
    assert_refuses_doctype(refused)?;
    assert!(s.daemon.stop()?.success());
    Ok(())
}

/// The fenced blocks of a Markdown text that follow a `<!-- KIND: ARG -->` line, as
/// (kind, arg, lines of the block).
fn marked_blocks(doc: &str) -> Vec<(String, String, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .strip_prefix("<!-- ")
            .and_then(|m| m.strip_suffix(" -->"))
        else {
            continue;
        };
        let Some((kind, arg)) = marker.split_once(": ") else {
            continue;
        };
        if !lines.next().is_some_and(|l| l.starts_with("```")) {
            continue;
        }
        let body = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_string)
            .collect();
        blocks.push((kind.to_string(), arg.to_string(), body));
    }
    blocks
}

/// Asserts `snippet`'s lines appear, one after another, in `file` (indentation aside).
fn assert_snippet_in(doc: &str, file: &str, snippet: &[String]) -> Result {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let wanted: Vec<&str> = snippet.iter().map(|l| l.trim()).collect();
    assert!(
        !wanted.is_empty() && lines.windows(wanted.len()).any(|w| w == wanted.as_slice()),
        "{doc}: this snippet is not in {file}:\n{}",
        snippet.join("\n")
    );
    Ok(())
}

/// A console block as (command, documented output lines); `\` continues a command.
fn console_commands(block: &[String]) -> Vec<(String, Vec<String>)> {
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    let mut continued = false;
    for line in block {
        if let Some(command) = line.strip_prefix("$ ") {
            commands.push((command.to_string(), Vec::new()));
        } else if let Some((command, output)) = commands.last_mut() {
            if continued {
                command.push('\n');
                command.push_str(line);
            } else {
                output.push(line.clone());
            }
        }
        continued = line.ends_with('\\');
    }
    commands
}

/// Runs a doc's `<!-- run: -->` console blocks in `dir`, one command at a time: each must
/// exit 0 and print the documented lines, except one followed by `echo $?`, whose status
/// must be the documented one.
fn run_console_blocks(s: &XmlSetup, doc: &str, dir: &Path, blocks: &[Vec<String>]) -> Result {
    let bin = Path::new(env!("CARGO_BIN_EXE_hsm-signer"))
        .parent()
        .ok_or("binary dir")?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH")?);
    let mut last_status = None;
    for (command, expected) in blocks.iter().flat_map(|b| console_commands(b)) {
        if command == "echo $?" {
            let documented: i32 = expected.first().ok_or("echo $? without output")?.parse()?;
            assert_eq!(last_status, Some(documented), "{doc}: exit status");
            continue;
        }
        let out = Command::new("sh")
            .args(["-c", &format!("exec 2>&1\n{command}")])
            .current_dir(dir)
            .env("PATH", &path)
            .env("HSM_SIGNER_SOCKET", &s.daemon.socket)
            .env_remove("HSM_SIGNER_KEY")
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{doc}$ {command}\n{text}");
        for line in &expected {
            let line = line.split("...").next().unwrap_or_default().trim();
            assert!(
                text.contains(line),
                "{doc}: `{command}` did not print {line:?}:\n{text}"
            );
        }
        // A documented refusal must fail; everything else must succeed.
        let refusal = expected.iter().any(|l| l.contains(" answered "));
        assert_eq!(
            out.status.success(),
            !refusal,
            "{doc}: `{command}` exited {:?}:\n{text}",
            out.status
        );
        last_status = out.status.code();
    }
    Ok(())
}

#[test]
fn integration_docs_show_the_example_code_and_their_commands_run() -> Result {
    for tool in [
        ("php", "--version"),
        ("python3", "--version"),
        ("javac", "-version"),
    ] {
        if !installed(tool.0, tool.1)? || !installed("xmlsec1", "--version")? {
            return Ok(());
        }
    }
    let s = XmlSetup::start()?;
    for doc in ["docs/integration.md", "docs/pl/integration.md"] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))?;
        let blocks = marked_blocks(&text);
        let mut runs = Vec::new();
        for (kind, arg, body) in &blocks {
            match kind.as_str() {
                "snippet" => assert_snippet_in(doc, arg, body)?,
                "run" => runs.push(body.clone()),
                _ => {}
            }
        }
        assert!(
            blocks.iter().filter(|b| b.0 == "snippet").count() >= 9 && runs.len() >= 4,
            "{doc}: the snippets and runnable blocks are missing"
        );
        let dir = s.token.path(&doc.replace('/', "-"));
        std::fs::create_dir(&dir)?;
        std::os::unix::fs::symlink(example(""), dir.join("examples"))?;
        std::fs::copy(s.token.path("epuap.pem"), dir.join("epuap.pem"))?;
        std::fs::copy(s.token.path("wk.pem"), dir.join("wk.pem"))?;
        run_console_blocks(&s, doc, &dir, &runs)?;
    }
    assert!(s.daemon.stop()?.success());
    Ok(())
}
