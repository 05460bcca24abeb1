//! `POST /v1/keys/{name}/xades/sign` through the daemon's socket, with keys generated on
//! the token by `hsm-signer generate`: KSeF's `AuthTokenRequest` signed with an EC P-256
//! key (ES256) and with an RSA-2048 key (RS256, the SHA-1 certificate digest of ePUAP's
//! Doręczyciel), each checked by xmlsec1 (both references), signxml's `XAdESVerifier`,
//! xadesjs, the JDK and lxml (SigningTime, CertDigest, IssuerSerial, the document less
//! its signature canonicalising as the input): [`verifiers::xades_everywhere`]. The raw
//! form (`application/xml`) answers what the JSON form answers; bad inputs get their
//! status and code and leave the token's objects as they were; `hsm-signer sign-xml
//! --profile xades` and the PHP and Python examples sign what xmlsec1 verifies; one
//! signature on kryoptic and on the TPM.

use crate::common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::daemon::{header, post_raw, Daemon, KeySetup};
use common::fixtures::KeySpec;
use common::verifiers::{self, have_xmlsec1, xmlsec1, XadesCheck, AUTH_TOKEN_REQUEST, XADES};
use common::*;
use time::OffsetDateTime;

/// The KSeF key: EC P-256, ES256, XAdES only, as docs/ksef.md configures it.
const KSEF: KeySetup = KeySetup {
    name: "ksef",
    label: "ksef-ec",
    spec: KeySpec::P256,
    algorithms: &["ES256"],
    extra: "operations = [\"xades\"]",
};

/// An RSA-2048 key for XAdES with RS256 or PS256 (KSeF accepts both; Doręczyciel RS256).
const RSA: KeySetup = KeySetup {
    name: "rsa",
    label: "xades-rsa",
    spec: KeySpec::Rsa(2048),
    algorithms: &["RS256", "PS256"],
    extra: "operations = [\"xades\"]",
};

/// A key that may only `/sign`.
const SIGN_ONLY: KeySetup = KeySetup {
    name: "sign-only",
    label: "sign-only",
    spec: KeySpec::P256,
    algorithms: &["ES256"],
    extra: "operations = [\"sign\", \"wss\"]",
};

/// A decrypt key (WK's assertion key).
const DECRYPT: KeySetup = KeySetup {
    name: "wk-enc",
    label: "wk-enc",
    spec: KeySpec::P256,
    algorithms: &[],
    extra: "purpose = \"decrypt\"",
};

/// Generates `key` on the token with a self-signed certificate; returns it (DER).
fn generate(token: &TestToken, key: &KeySetup, subject: &str) -> Result<Vec<u8>> {
    let (key_type, purpose) = match key.spec {
        KeySpec::P256 if key.algorithms.is_empty() => ("ec-p256", "decrypt"),
        KeySpec::P256 => ("ec-p256", "sign"),
        KeySpec::Rsa(2048) => ("rsa-2048", "sign"),
        _ => return Err("no such key type here".into()),
    };
    run_ok(
        token
            .on_token("generate")
            .args(["--label", key.label, "--key-type", key_type])
            .args(["--purpose", purpose, "--subject", subject])
            .args(["--self-signed-days", "30"]),
    )?;
    token.read_object("cert", key.label)
}

/// A token with `keys` generated on it and a daemon serving them; their certificates.
fn setup(
    token: &TestToken,
    keys: &[KeySetup],
    server_extra: &str,
) -> Result<(Daemon, Vec<Vec<u8>>)> {
    let mut certs = Vec::new();
    for key in keys {
        let subject = format!(
            "/C=PL/O=Gmina Przykładowo/CN=Gmina Przykładowo {}",
            key.name
        );
        certs.push(generate(token, key, &subject)?);
    }
    Ok((Daemon::start(token, keys, server_extra)?, certs))
}

fn sign_json(daemon: &Daemon, key: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let (status, answer) = daemon.json(
        "POST",
        &format!("/v1/keys/{key}/xades/sign"),
        Some(&body.to_string()),
    )?;
    assert_eq!(status, 200, "{answer}");
    Ok(answer)
}

fn text<'a>(answer: &'a serde_json::Value, field: &str) -> Result<&'a str> {
    Ok(answer[field]
        .as_str()
        .ok_or_else(|| format!("no {field} in {answer}"))?)
}

/// Checks a JSON answer's fields against the key and the certificate, then runs every
/// verifier on its document.
fn assert_verifies(
    dir: &Path,
    answer: &serde_json::Value,
    cert_der: &[u8],
    digest: &str,
    window: (OffsetDateTime, OffsetDateTime),
) -> Result {
    let xml = text(answer, "xml")?;
    let from_base64 =
        base64::engine::general_purpose::STANDARD.decode(text(answer, "xml_base64")?)?;
    assert_eq!(from_base64, xml.as_bytes());
    assert_eq!(
        text(answer, "certificate_sha256")?,
        hex::encode(openssl::sha::sha256(cert_der))
    );
    assert_eq!(text(answer, "certificate_digest")?, digest);
    let signature_id = text(answer, "signature_id")?;
    assert!(xml.contains(&format!("Id=\"{signature_id}\"")), "{xml}");
    assert!(xml.contains(&format!("Id=\"{}\"", text(answer, "signed_properties_id")?)));
    verifiers::xades_everywhere(&XadesCheck {
        dir,
        input: AUTH_TOKEN_REQUEST,
        signed: xml,
        signing_time: text(answer, "signing_time")?,
        cert_der,
        digest,
        window,
        tamper: ("<Nip>5260250274</Nip>", "<Nip>5260250275</Nip>"),
        xmlsec1: !text(answer, "algorithm")?.starts_with("PS"),
    })
}

/// The SignatureValue's bytes.
fn signature_value(xml: &str) -> Result<Vec<u8>> {
    let value = xml
        .split("SignatureValue>")
        .nth(1)
        .ok_or("no SignatureValue")?
        .trim_end_matches("</ds:");
    Ok(base64::engine::general_purpose::STANDARD.decode(value)?)
}

/// KSeF's `AuthTokenRequest` signed by an EC P-256 key generated on the token (ES256,
/// `R || S`) and by an RSA-2048 key (RS256, SHA-1 certificate digest, a given signature
/// Id; and PS256), each verified by every XAdES verifier (PS256 by all but xmlsec1 1.2,
/// which has no RSASSA-PSS); the audit record names the operation and
/// SignedInfo's digest, never the document.
#[test]
fn ksef_auth_token_request_es256_rs256_ps256_verify_everywhere() -> Result {
    let token = TestToken::new()?;
    let (daemon, certs) = setup(&token, &[KSEF, RSA], "")?;

    let before = OffsetDateTime::now_utc();
    let answer = sign_json(
        &daemon,
        "ksef",
        serde_json::json!({ "xml": AUTH_TOKEN_REQUEST }),
    )?;
    let after = OffsetDateTime::now_utc();
    assert_eq!(text(&answer, "algorithm")?, "ES256");
    assert_eq!(
        text(&answer, "algorithm_uri")?,
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    );
    assert_eq!(text(&answer, "key")?, "ksef");
    assert!(text(&answer, "signature_id")?.starts_with("Signature-"));
    // ECDSA's SignatureValue is R||S: 64 bytes for P-256, never DER.
    assert_eq!(signature_value(text(&answer, "xml")?)?.len(), 64);
    let es256 = token.path("es256");
    std::fs::create_dir(&es256)?;
    assert_verifies(&es256, &answer, &certs[0], "sha256", (before, after))?;

    let before = OffsetDateTime::now_utc();
    let answer = sign_json(
        &daemon,
        "rsa",
        serde_json::json!({
            "xml": AUTH_TOKEN_REQUEST,
            "algorithm": "RS256",
            "certificate_digest": "sha1",
            "signature_id": "ID-ksef-1",
        }),
    )?;
    let after = OffsetDateTime::now_utc();
    assert_eq!(text(&answer, "algorithm")?, "RS256");
    assert_eq!(text(&answer, "signature_id")?, "ID-ksef-1");
    let rs256 = token.path("rs256");
    std::fs::create_dir(&rs256)?;
    assert_verifies(&rs256, &answer, &certs[1], "sha1", (before, after))?;

    // PS256, which KSeF accepts too.
    let before = OffsetDateTime::now_utc();
    let answer = sign_json(
        &daemon,
        "rsa",
        serde_json::json!({ "xml": AUTH_TOKEN_REQUEST, "algorithm": "PS256" }),
    )?;
    let after = OffsetDateTime::now_utc();
    assert_eq!(text(&answer, "algorithm")?, "PS256");
    let ps256 = token.path("ps256");
    std::fs::create_dir(&ps256)?;
    assert_verifies(&ps256, &answer, &certs[1], "sha256", (before, after))?;

    let lines = common::daemon::wait_for_lines(&daemon.audit, 3)?;
    for (line, key) in lines.iter().zip(["ksef", "rsa"]) {
        let record: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(record["op"], "xades", "{line}");
        assert_eq!(record["key"], key, "{line}");
        assert_eq!(record["outcome"], "ok", "{line}");
        assert_eq!(
            record["input_sha256"].as_str().map(str::len),
            Some(64),
            "{line}"
        );
        assert!(
            record["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("#SignedProperties-")),
            "{line}"
        );
        assert!(
            !line.contains("5260250274") && !line.contains("Challenge"),
            "{line}"
        );
    }
    Ok(())
}

/// `xml` with what differs between two signatures of one document by one key masked:
/// the text of every DigestValue and of the SignatureValue, and the given strings.
fn masked(xml: &str, fresh: &[&str]) -> String {
    let mut out = xml.to_string();
    for value in fresh {
        out = out.replace(value, "(fresh)");
    }
    for tag in ["ds:DigestValue", "ds:SignatureValue"] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut rest = out.as_str();
        let mut result = String::new();
        while let Some(start) = rest.find(&open) {
            let start = start + open.len();
            result.push_str(&rest[..start]);
            result.push_str("(value)");
            rest = &rest[start..];
            rest = &rest[rest.find(&close).unwrap_or(0)..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// The raw form: the document in (`application/xml`, options as query parameters) and
/// out, with what the JSON answer says in `X-Hsm-Signer-*` headers. It signs what the
/// JSON form signs: the same document, but for the fresh values.
#[test]
fn raw_application_xml_answers_what_json_answers() -> Result {
    let token = TestToken::new()?;
    let (daemon, certs) = setup(&token, &[RSA], "")?;
    let dir = token.dir.path();
    let options = "algorithm=RS256&certificate_digest=sha1&signature_id=ID-raw";
    let (status, raw, headers) = post_raw(
        &daemon,
        dir,
        &format!("/v1/keys/rsa/xades/sign?{options}"),
        AUTH_TOKEN_REQUEST,
    )?;
    assert_eq!(status, 200, "{raw}");
    let json = sign_json(
        &daemon,
        "rsa",
        serde_json::json!({
            "xml": AUTH_TOKEN_REQUEST,
            "algorithm": "RS256",
            "certificate_digest": "sha1",
            "signature_id": "ID-raw",
        }),
    )?;
    let header = |name: &str| header(&headers, name);
    for field in [
        "signature_id",
        "certificate_digest",
        "algorithm",
        "algorithm_uri",
        "key",
        "certificate_sha256",
    ] {
        assert_eq!(
            header(&field.replace('_', "-"))?,
            text(&json, field)?,
            "{field}"
        );
    }
    let raw_properties = header("signed-properties-id")?;
    let raw_time = header("signing-time")?;
    assert!(raw.contains(&format!("<xades:SigningTime>{raw_time}<")));
    assert_eq!(
        masked(&raw, &[raw_properties, raw_time]),
        masked(
            text(&json, "xml")?,
            &[
                text(&json, "signed_properties_id")?,
                text(&json, "signing_time")?
            ]
        )
    );
    if have_xmlsec1() {
        let signed = token.path("raw-signed.xml");
        std::fs::write(&signed, &raw)?;
        let pem = token.path("rsa.pem");
        std::fs::write(&pem, openssl::x509::X509::from_der(&certs[0])?.to_pem()?)?;
        let (ok, out) = xmlsec1(
            &signed,
            &pem,
            &[("Id", format!("{XADES}:SignedProperties"))],
        )?;
        assert!(
            ok && out.contains("SignedInfo References (ok/all): 2/2"),
            "{out}"
        );
    }
    Ok(())
}

/// Each bad input gets its status and code, and the token's objects are as they were.
#[test]
fn bad_inputs_get_their_code_and_leave_the_token_unchanged() -> Result {
    let token = TestToken::new()?;
    let (daemon, _) = setup(
        &token,
        &[KSEF, SIGN_ONLY, DECRYPT],
        "max_xml_body_bytes = 4096",
    )?;
    let signed = sign_json(
        &daemon,
        "ksef",
        serde_json::json!({ "xml": AUTH_TOKEN_REQUEST }),
    )?;
    let objects = token.objects()?;

    let xades = |key: &str, body: serde_json::Value| -> Result<(u16, serde_json::Value)> {
        daemon.json(
            "POST",
            &format!("/v1/keys/{key}/xades/sign"),
            Some(&body.to_string()),
        )
    };
    let big = AUTH_TOKEN_REQUEST.replace(
        "</AuthTokenRequest>",
        &format!("<!-- {} --></AuthTokenRequest>", "x".repeat(5000)),
    );
    let cases: Vec<(&str, u16, &str, (u16, serde_json::Value))> = vec![
        (
            "already signed",
            422,
            "already_signed",
            xades("ksef", serde_json::json!({ "xml": text(&signed, "xml")? }))?,
        ),
        (
            "over max_xml_body_bytes",
            413,
            "payload_too_large",
            xades("ksef", serde_json::json!({ "xml": big }))?,
        ),
        (
            "a decrypt key",
            422,
            "wrong_purpose",
            xades("wk-enc", serde_json::json!({ "xml": AUTH_TOKEN_REQUEST }))?,
        ),
        (
            "operations without xades",
            403,
            "operation_not_allowed",
            xades(
                "sign-only",
                serde_json::json!({ "xml": AUTH_TOKEN_REQUEST }),
            )?,
        ),
        (
            "/sign on an operations = [\"xades\"] key",
            403,
            "operation_not_allowed",
            daemon.json(
                "POST",
                "/v1/keys/ksef/sign",
                Some(&common::daemon::sign_body("ES256", "digest", &[7; 32])),
            )?,
        ),
        (
            "a bad signature_id",
            400,
            "bad_id",
            xades(
                "ksef",
                serde_json::json!({ "xml": AUTH_TOKEN_REQUEST, "signature_id": "xpointer(/)" }),
            )?,
        ),
        (
            "an unknown certificate_digest",
            400,
            "bad_request",
            xades(
                "ksef",
                serde_json::json!({ "xml": AUTH_TOKEN_REQUEST, "certificate_digest": "md5" }),
            )?,
        ),
        (
            "an algorithm the key does not allow",
            422,
            "algorithm_not_allowed",
            xades(
                "ksef",
                serde_json::json!({ "xml": AUTH_TOKEN_REQUEST, "algorithm": "RS256" }),
            )?,
        ),
    ];
    for (what, status, code, (got, answer)) in cases {
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }
    let (status, answer) = daemon.json(
        "POST",
        "/v1/keys/ksef/xades/sign",
        Some(
            &serde_json::json!({ "xml": AUTH_TOKEN_REQUEST, "certificate_digest": "md5" })
                .to_string(),
        ),
    )?;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 400 && message.contains("sha256") && message.contains("sha1"),
        "{answer}"
    );
    let (status, raw, _) = post_raw(
        &daemon,
        token.dir.path(),
        "/v1/keys/ksef/xades/sign?certificate_digest=md5",
        AUTH_TOKEN_REQUEST,
    )?;
    assert!(status == 400 && raw.contains("\"bad_request\""), "{raw}");
    assert_eq!(token.objects()?, objects, "the token's objects changed");
    Ok(())
}

/// `hsm-signer sign-xml --profile xades` with `--certificate-digest` and
/// `--signature-id`: the exact bytes, verified by xmlsec1; the options are refused with
/// another profile.
#[test]
fn cli_sign_xml_profile_xades_writes_what_xmlsec1_verifies() -> Result {
    let token = TestToken::new()?;
    let (daemon, certs) = setup(&token, &[KSEF], "")?;
    let input = token.path("auth-token-request.xml");
    std::fs::write(&input, AUTH_TOKEN_REQUEST)?;
    let output = token.path("auth-token-request.signed.xml");
    let sign_xml = |profile: &str, output: &Path| {
        let mut cmd = token.hsm_signer();
        cmd.args(["sign-xml", "--socket"])
            .arg(&daemon.socket)
            .args(["--key", "ksef", "--profile", profile])
            .args(["--certificate-digest", "sha1", "--signature-id", "ID-cli"])
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(output);
        cmd
    };
    run_ok(&mut sign_xml("xades", &output))?;
    let signed = std::fs::read_to_string(&output)?;
    assert!(signed.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<AuthTokenRequest"));
    assert!(signed.contains(" Id=\"ID-cli\""), "{signed}");
    assert!(
        signed.contains("<ds:DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/>"),
        "{signed}"
    );
    if have_xmlsec1() {
        let pem = token.path("ksef.pem");
        std::fs::write(&pem, openssl::x509::X509::from_der(&certs[0])?.to_pem()?)?;
        let (ok, out) = xmlsec1(
            &output,
            &pem,
            &[("Id", format!("{XADES}:SignedProperties"))],
        )?;
        assert!(
            ok && out.contains("SignedInfo References (ok/all): 2/2"),
            "{out}"
        );
    }

    // Signed again: already_signed on standard error, a non-zero exit, no file.
    let again = token.path("again.xml");
    let stderr = run_fails(
        token
            .hsm_signer()
            .args(["sign-xml", "--socket"])
            .arg(&daemon.socket)
            .args(["--key", "ksef", "--profile", "xades", "--in"])
            .arg(&output)
            .arg("--out")
            .arg(&again),
    )?;
    assert!(stderr.contains("already_signed"), "{stderr}");
    assert!(!again.exists());
    let wss = token.path("wss.xml");
    let stderr = run_fails(&mut sign_xml("wss", &wss))?;
    assert!(
        stderr.contains("--certificate-digest and --signature-id apply to --profile xades only"),
        "{stderr}"
    );
    assert!(!wss.exists());
    Ok(())
}

fn example(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// examples/python/ksef_auth.py and examples/php/ksef_auth.php send the AuthTokenRequest
/// as `application/xml` and write the signed bytes, which xmlsec1 verifies; the headers
/// go to standard error.
#[test]
fn ksef_auth_examples_in_python_and_php_sign_what_xmlsec1_verifies() -> Result {
    let token = TestToken::new()?;
    let (daemon, certs) = setup(&token, &[KSEF], "")?;
    let input = token.path("auth-token-request.xml");
    std::fs::write(&input, AUTH_TOKEN_REQUEST)?;
    let pem = token.path("ksef.pem");
    std::fs::write(&pem, openssl::x509::X509::from_der(&certs[0])?.to_pem()?)?;
    for (program, script) in [
        ("python3", "python/ksef_auth.py"),
        ("php", "php/ksef_auth.php"),
    ] {
        if Command::new(program).arg("--version").output().is_err() {
            missing_precondition(&format!(
                "{program} is not installed (scripts/test installs it)"
            ))?;
            continue;
        }
        let out = run_ok(
            Command::new(program)
                .arg(example(script))
                .arg(&input)
                .env("HSM_SIGNER_SOCKET", &daemon.socket),
        )?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(
            stderr.contains("signature-id: Signature-") && stderr.contains("algorithm: ES256"),
            "{script}: {stderr}"
        );
        let signed = token.path(&format!("{}.signed.xml", program));
        std::fs::write(&signed, &out.stdout)?;
        if have_xmlsec1() {
            let (ok, text) = xmlsec1(
                &signed,
                &pem,
                &[("Id", format!("{XADES}:SignedProperties"))],
            )?;
            assert!(
                ok && text.contains("SignedInfo References (ok/all): 2/2"),
                "{script}: {text}"
            );
        }
        // A refusal: the daemon's code on standard error, a non-zero exit.
        let stderr = run_fails(
            Command::new(program)
                .arg(example(script))
                .arg(&signed)
                .env("HSM_SIGNER_SOCKET", &daemon.socket),
        )?;
        assert!(stderr.contains("422 already_signed"), "{script}: {stderr}");
    }
    Ok(())
}

/// docs/ksef.md's step 4 (and docs/pl/ksef.md's), run with bash as written, against a
/// daemon whose `ksef-auth` key is an EC P-256 key generated on a fresh token: curl's and
/// `sign-xml`'s signed documents are each checked by every XAdES verifier.
#[test]
fn ksef_md_step_4_runs_as_written() -> Result {
    for doc in ["docs/ksef.md", "docs/pl/ksef.md"] {
        let token = TestToken::new()?;
        let key = KeySetup {
            name: "ksef-auth",
            label: "ksef-auth",
            ..KSEF
        };
        let (daemon, certs) = setup(&token, &[key], "")?;
        let dir = token.path("doc");
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("auth-token-request.xml"), AUTH_TOKEN_REQUEST)?;
        std::fs::write(
            dir.join("ksef-auth.pem"),
            openssl::x509::X509::from_der(&certs[0])?.to_pem()?,
        )?;
        let block = doc_block(doc, "ksef-xades")?.replace(
            "/run/hsm-signer/hsm-signer.sock",
            &daemon.socket.display().to_string(),
        );
        let bin = Path::new(env!("CARGO_BIN_EXE_hsm-signer"))
            .parent()
            .ok_or("no directory")?;
        let path = format!("{}:{}", bin.display(), std::env::var("PATH")?);
        let before = OffsetDateTime::now_utc();
        run_ok(
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block])
                .current_dir(&dir)
                .env("PATH", path),
        )?;
        let after = OffsetDateTime::now_utc();
        for output in [
            "auth-token-request.signed.xml",
            "auth-token-request.cli.xml",
        ] {
            let signed = std::fs::read_to_string(dir.join(output))?;
            let signing_time = signed
                .split("<xades:SigningTime>")
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .ok_or_else(|| format!("{doc}: no SigningTime in {output}"))?;
            verifiers::xades_everywhere(&XadesCheck {
                dir: &dir,
                input: AUTH_TOKEN_REQUEST,
                signed: &signed,
                signing_time,
                cert_der: &certs[0],
                digest: "sha256",
                window: (before, after),
                tamper: ("<Nip>5260250274</Nip>", "<Nip>5260250275</Nip>"),
                xmlsec1: true,
            })?;
        }
    }
    Ok(())
}

/// One XAdES signature per token family: an EC P-256 key generated on the token signs
/// the AuthTokenRequest through the daemon, verified by every XAdES verifier.
fn xades_on_the_token(family: Family) -> Result {
    let token = TestToken::of(family)?;
    let (daemon, certs) = setup(&token, &[KSEF], "")?;
    let before = OffsetDateTime::now_utc();
    let answer = sign_json(
        &daemon,
        "ksef",
        serde_json::json!({ "xml": AUTH_TOKEN_REQUEST }),
    )?;
    let after = OffsetDateTime::now_utc();
    assert_eq!(signature_value(text(&answer, "xml")?)?.len(), 64);
    assert_verifies(
        token.dir.path(),
        &answer,
        &certs[0],
        "sha256",
        (before, after),
    )
}
on_families!(xades_on_the_token, [kryoptic, tpm]);
