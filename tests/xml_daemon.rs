//! The daemon signs SOAP envelopes (WS-Security) and SAML messages with keys on a real
//! SoftHSM2 token, over its socket through curl, and verifiers we did not write check
//! the answers against the key's certificate: xmlsec1, zeep + signxml
//! (tests/verifiers/verify_xml.py) and the JDK (tests/verifiers/VerifyXml.java), each
//! also saying WHAT was signed. Hostile documents get their status and code. The raw form
//! (`application/xml` in and out) signs what the JSON form signs, for curl, PHP's curl and
//! Python; an 8 MB envelope is signed under the default configuration; `max_xml_in_flight`
//! bounds the documents in work; a malformed document gets 400 while the token is down.

use crate::common;
use crate::common::daemon::EPUAP;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{header, post_raw, provision, sign_body, Daemon, KeySetup};
use common::fixtures::{KeySpec, Leaf};
use common::verifiers::*;
use common::*;

const AUTHN_ID: &str = "ID-6a7c8f2e-54e1-4d59-bb7a-1b3e36a0c111";

/// An unsigned TpUserInfo call as GSKO sends it: declaration, comments, indentation,
/// Polish text, `&amp;`, and a Header whose wsse:Security already has a UsernameToken.
const TP_USER_INFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- GSKO → ePUAP TpUserInfo -->
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:tpus="http://wsdl.tpuserinfo.epuap.gov.pl/"
                  xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">
  <soapenv:Header>
    <wsse:Security>
      <wsse:UsernameToken><wsse:Username>gmina</wsse:Username></wsse:UsernameToken>
    </wsse:Security>
  </soapenv:Header>
  <soapenv:Body>
    <!-- pytanie o użytkownika -->
    <tpus:GetTpUserInfo>
      <tpUserObjectsInfoRequest>
        <callerId>gmina-testowa</callerId>
        <userId>jan.kowalski</userId>
        <opis>Zażółć gęślą jaźń &amp; spółka</opis>
      </tpUserObjectsInfoRequest>
    </tpus:GetTpUserInfo>
  </soapenv:Body>
</soapenv:Envelope>
"#;

const SOAP12_ENVELOPE: &str = r#"<?xml version="1.0"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">
  <env:Header><a:To xmlns:a="http://www.w3.org/2005/08/addressing">https://epuap.example/tpSigning5</a:To></env:Header>
  <env:Body>
    <ns:addDocumentToSigning xmlns:ns="http://signing.ws.comarch.gov"><doc>PGRvYy8+</doc><opis>Wniosek &lt;pilny&gt; — Zażółć gęślą jaźń</opis></ns:addDocumentToSigning>
  </env:Body>
</env:Envelope>
"#;

const WK_AUTHN_REQUEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol"
    xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"
    xmlns:eidas="http://eidas.europa.eu/saml-extensions"
    AssertionConsumerServiceURL="https://gsko.gmina.example/wk/acs?a=1&amp;b=2"
    Destination="https://symulator.login.gov.pl/login/SingleSignOnService"
    ForceAuthn="true" ID="ID-6a7c8f2e-54e1-4d59-bb7a-1b3e36a0c111"
    IssueInstant="2026-03-01T10:00:00.000Z" Version="2.0">
  <!-- GSKO: logowanie przez Węzeł Krajowy -->
  <saml2:Issuer>https://gsko.gmina.example</saml2:Issuer>
  <saml2p:Extensions>
    <eidas:SPType>public</eidas:SPType>
  </saml2p:Extensions>
  <saml2p:NameIDPolicy AllowCreate="true" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"/>
</saml2p:AuthnRequest>
"#;

const ARTIFACT_RESOLVE: &str = r#"<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">
  <soap11:Body>
    <saml2p:ArtifactResolve xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" ID="_a3f1c0de" IssueInstant="2026-03-01T10:00:01.000Z" Version="2.0">
      <saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">https://gsko.gmina.example</saml2:Issuer>
      <saml2p:Artifact>AAQAAMFbLinlXaCM+FIxiDwGOLAy2T71gbpO7ZhNzAgEANlB90ECfpNEVLg=</saml2p:Artifact>
    </saml2p:ArtifactResolve>
  </soap11:Body>
</soap11:Envelope>"#;

/// The ePUAP RSA key (RS256) and the WK EC P-256 key (ES256).
fn keys() -> [KeySetup; 2] {
    [
        EPUAP,
        KeySetup {
            name: "wk",
            label: "gsko-wk-sign",
            spec: KeySpec::P256,
            algorithms: &["ES256"],
            extra: "",
        },
    ]
}

/// A token with both keys and a daemon on it; the leaves' certificates as PEM files.
struct Setup {
    daemon: Daemon,
    token: TestToken,
    rsa_pem: PathBuf,
    ec_pem: PathBuf,
}

fn setup(server_extra: &str) -> Result<Setup> {
    let token = TestToken::new()?;
    let keys = keys();
    let leaves: Vec<Leaf> = provision(&token, &keys)?;
    let rsa_pem = token.path("epuap.pem");
    std::fs::write(&rsa_pem, leaves[0].cert.to_pem()?)?;
    let ec_pem = token.path("wk.pem");
    std::fs::write(&ec_pem, leaves[1].cert.to_pem()?)?;
    let daemon = Daemon::start(&token, &keys, server_extra)?;
    Ok(Setup {
        daemon,
        token,
        rsa_pem,
        ec_pem,
    })
}

/// The `wsu:Id` of the Timestamp in a signed envelope, if it has one.
fn timestamp_id(xml: &str) -> Option<String> {
    let at = xml.find("Timestamp ")?;
    let rest = &xml[at..];
    let start = rest.find("Id=\"")? + 4;
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

fn post(daemon: &Daemon, path: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
    daemon.json("POST", path, Some(&body.to_string()))
}

/// Asks for a WS-Security signature; asserts 200 and returns the answer.
fn sign_wss(daemon: &Daemon, key: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let (status, answer) = post(daemon, &format!("/v1/keys/{key}/wss/sign"), &body)?;
    assert_eq!(status, 200, "{answer}");
    Ok(answer)
}

fn sign_saml(daemon: &Daemon, key: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let (status, answer) = post(daemon, &format!("/v1/keys/{key}/saml/sign"), &body)?;
    assert_eq!(status, 200, "{answer}");
    Ok(answer)
}

fn text<'a>(answer: &'a serde_json::Value, field: &str) -> Result<&'a str> {
    Ok(answer[field]
        .as_str()
        .ok_or_else(|| format!("no {field} in {answer}"))?)
}

/// Every verifier accepts the envelope and says it covers the Body (and Timestamp).
fn assert_wss_verifies(
    dir: &Path,
    envelope: &str,
    body_id: &str,
    cert: &Path,
    soap_ns: &str,
) -> Result {
    let xml = dir.join(format!("signed-{body_id}.xml"));
    std::fs::write(&xml, envelope)?;
    let ts = timestamp_id(envelope);
    let refs = if ts.is_some() { 2 } else { 1 };
    if have_xmlsec1() {
        let (ok, out) = xmlsec1(&xml, cert, &wss_id_attrs(soap_ns))?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
        assert!(
            out.contains(&format!("SignedInfo References (ok/all): {refs}/{refs}")),
            "{out}"
        );
    }
    if have_python() {
        let mut ids = vec![body_id];
        ids.extend(ts.as_deref());
        let (ok, out) = python("wss", &xml, cert, &ids)?;
        assert!(ok, "zeep/signxml rejected:\n{out}");
        assert!(out.contains("zeep: OK verify_envelope"), "{out}");
        assert!(
            out.contains(&format!("signxml: OK reference #{body_id} -> ")),
            "{out}"
        );
        assert!(out.contains(" Body, payload"), "{out}");
        if let Some(ts) = &ts {
            assert!(
                out.contains(&format!(
                    "signxml: OK reference #{ts} -> wsu:Timestamp Created="
                )),
                "{out}"
            );
        }
    }
    if have_java() {
        let (ok, out) = java(&xml, cert)?;
        assert!(ok, "java rejected:\n{out}");
        assert!(
            out.contains(&format!(
                "java: reference #{body_id} -> {{{soap_ns}}}Body valid=true"
            )),
            "{out}"
        );
        if let Some(ts) = &ts {
            assert!(
                out.contains(&format!(
                    "java: reference #{ts} -> {{{WSU}}}Timestamp valid=true"
                )),
                "{out}"
            );
        }
    }
    Ok(())
}

/// Every verifier accepts the message and says it covers `element` with `id`.
fn assert_saml_verifies(
    dir: &Path,
    xml_text: &str,
    element: &str,
    id: &str,
    cert: &Path,
) -> Result {
    let xml = dir.join(format!("signed-{id}.xml"));
    std::fs::write(&xml, xml_text)?;
    if have_xmlsec1() {
        let (ok, out) = xmlsec1(&xml, cert, &[("ID", format!("{SAMLP}:{element}"))])?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
        assert!(out.contains("SignedInfo References (ok/all): 1/1"), "{out}");
    }
    if have_python() {
        let (ok, out) = python("saml", &xml, cert, &[id])?;
        assert!(ok, "signxml rejected:\n{out}");
        assert!(
            out.contains(&format!(
                "signxml: OK reference #{id} -> {element} Issuer=https://gsko.gmina.example"
            )),
            "{out}"
        );
    }
    if have_java() {
        let (ok, out) = java(&xml, cert)?;
        assert!(ok, "java rejected:\n{out}");
        assert!(
            out.contains(&format!(
                "java: reference #{id} -> {{{SAMLP}}}{element} valid=true"
            )),
            "{out}"
        );
    }
    Ok(())
}

#[test]
fn wss_tpuserinfo_soap11_rs256_verifies_and_a_tampered_body_does_not() -> Result {
    let s = setup("")?;
    // No algorithm given: the key's first allowed one, RS256.
    let answer = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": TP_USER_INFO}),
    )?;
    assert_eq!(answer["algorithm"], "RS256");
    assert_eq!(
        answer["algorithm_uri"],
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    );
    assert_eq!(answer["key"], "epuap");
    assert_eq!(text(&answer, "certificate_sha256")?.len(), 64);
    let envelope = text(&answer, "envelope")?;
    let body_id = text(&answer, "body_id")?;
    // What the caller wrote comes back as written, the UsernameToken kept.
    assert!(envelope.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- GSKO"));
    assert!(envelope.contains("<!-- pytanie o użytkownika -->"));
    assert!(envelope.contains("<opis>Zażółć gęślą jaźń &amp; spółka</opis>"));
    assert!(envelope
        .contains("<wsse:UsernameToken><wsse:Username>gmina</wsse:Username></wsse:UsernameToken>"));
    assert!(!envelope.contains("Timestamp"));
    assert_wss_verifies(s.token.dir.path(), envelope, body_id, &s.rsa_pem, SOAP11)?;

    // One character of the signed Body changed: every verifier rejects it.
    let tampered = envelope.replace("jan.kowalski", "jan.kowalskj");
    assert_ne!(tampered, envelope);
    let xml = s.token.path("tampered.xml");
    std::fs::write(&xml, &tampered)?;
    if have_xmlsec1() {
        let (ok, out) = xmlsec1(&xml, &s.rsa_pem, &wss_id_attrs(SOAP11))?;
        assert!(!ok, "xmlsec1 accepted a tampered Body:\n{out}");
        assert!(out.contains("data and digest do not match"), "{out}");
    }
    if have_python() {
        let (ok, out) = python("wss", &xml, &s.rsa_pem, &[body_id])?;
        assert!(!ok, "{out}");
        assert!(
            out.contains("zeep: REJECTED (SignatureVerificationFailed)"),
            "{out}"
        );
        assert!(out.contains("signxml: REJECTED (InvalidDigest"), "{out}");
    }
    if have_java() {
        let (ok, out) = java(&xml, &s.rsa_pem)?;
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!(
                "java: reference #{body_id} -> {{{SOAP11}}}Body valid=false"
            )),
            "{out}"
        );
    }
    Ok(())
}

#[test]
fn wss_soap12_es256_with_timestamp_signs_body_and_timestamp() -> Result {
    let s = setup("")?;
    let answer = sign_wss(
        &s.daemon,
        "wk",
        serde_json::json!({"envelope": SOAP12_ENVELOPE, "algorithm": "ES256", "timestamp_ttl_seconds": 300}),
    )?;
    assert_eq!(answer["algorithm"], "ES256");
    assert_eq!(
        answer["algorithm_uri"],
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    );
    let envelope = text(&answer, "envelope")?;
    assert!(envelope.contains("<wsu:Expires>"));
    assert!(timestamp_id(envelope).is_some(), "{envelope}");
    assert_wss_verifies(
        s.token.dir.path(),
        envelope,
        text(&answer, "body_id")?,
        &s.ec_pem,
        SOAP12,
    )?;
    Ok(())
}

#[test]
fn saml_wk_authn_request_es256_and_artifact_resolve_by_reference_id() -> Result {
    let s = setup("")?;
    let answer = sign_saml(
        &s.daemon,
        "wk",
        serde_json::json!({"xml": WK_AUTHN_REQUEST}),
    )?;
    assert_eq!(answer["algorithm"], "ES256");
    assert_eq!(answer["reference_uri"], format!("#{AUTHN_ID}"));
    let xml = text(&answer, "xml")?;
    use base64::Engine;
    let exact = base64::engine::general_purpose::STANDARD.decode(text(&answer, "xml_base64")?)?;
    assert_eq!(exact, xml.as_bytes());
    assert!(xml.contains("<saml2:Issuer>https://gsko.gmina.example</saml2:Issuer><ds:Signature"));
    assert!(xml.contains("<!-- GSKO: logowanie przez Węzeł Krajowy -->"));
    assert_saml_verifies(s.token.dir.path(), xml, "AuthnRequest", AUTHN_ID, &s.ec_pem)?;

    let answer = sign_saml(
        &s.daemon,
        "wk",
        serde_json::json!({"xml": ARTIFACT_RESOLVE, "algorithm": "ES256", "reference_id": "_a3f1c0de"}),
    )?;
    assert_eq!(answer["reference_uri"], "#_a3f1c0de");
    let xml = text(&answer, "xml")?;
    assert!(xml.starts_with("<soap11:Envelope"));
    assert_saml_verifies(
        s.token.dir.path(),
        xml,
        "ArtifactResolve",
        "_a3f1c0de",
        &s.ec_pem,
    )?;
    Ok(())
}

#[test]
fn hostile_documents_get_their_status_and_code_and_signing_still_works() -> Result {
    // The JSON endpoints' limit is far below the XML one: XML bodies never meet it.
    let s = setup("max_body_bytes = 4096\nmax_xml_body_bytes = 65536")?;
    let env = |body: &str| {
        format!("<soapenv:Envelope xmlns:soapenv=\"{SOAP11}\"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>")
    };
    let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
    let signed = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": TP_USER_INFO}),
    )?;
    let already = text(&signed, "envelope")?.to_string();
    // UTF-16LE bytes as the JSON string would carry them: every other byte NUL.
    let utf16: String = env("<x/>").chars().flat_map(|c| [c, '\0']).collect();
    let huge = env(&"x".repeat(70_000));
    let wss = "/v1/keys/epuap/wss/sign";
    let saml = "/v1/keys/wk/saml/sign";
    let cases: Vec<(&str, &str, serde_json::Value, u16, &str)> = vec![
        (
            "billion laughs",
            wss,
            serde_json::json!({"envelope": format!("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>{}", env("&lol3;"))}),
            400,
            "xml_doctype_forbidden",
        ),
        (
            "XXE",
            wss,
            serde_json::json!({"envelope": format!("<!DOCTYPE e [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}", env("<p>&xxe;</p>"))}),
            400,
            "xml_doctype_forbidden",
        ),
        (
            "declared UTF-16",
            wss,
            serde_json::json!({"envelope": format!("<?xml version=\"1.0\" encoding=\"UTF-16\"?>{}", env("<x/>"))}),
            400,
            "xml_encoding_unsupported",
        ),
        (
            "UTF-16LE bytes",
            wss,
            serde_json::json!({"envelope": utf16}),
            400,
            "xml_encoding_unsupported",
        ),
        (
            "200 levels deep",
            wss,
            serde_json::json!({"envelope": env(&deep)}),
            400,
            "xml_too_deep",
        ),
        (
            "duplicate IDs",
            saml,
            serde_json::json!({"xml": format!("<saml2p:AuthnRequest xmlns:saml2p=\"{SAMLP}\" ID=\"dup\"><x ID=\"dup\"/></saml2p:AuthnRequest>")}),
            400,
            "xml_duplicate_id",
        ),
        (
            "no ID to reference",
            saml,
            serde_json::json!({"xml": format!("<saml2p:AuthnRequest xmlns:saml2p=\"{SAMLP}\"/>")}),
            400,
            "xml_missing_id",
        ),
        (
            "not an envelope",
            wss,
            serde_json::json!({"envelope": WK_AUTHN_REQUEST}),
            422,
            "not_soap_envelope",
        ),
        (
            "already signed",
            wss,
            serde_json::json!({"envelope": already}),
            422,
            "already_signed",
        ),
        (
            "unknown reference_id",
            saml,
            serde_json::json!({"xml": ARTIFACT_RESOLVE, "reference_id": "_nope"}),
            422,
            "reference_not_found",
        ),
        (
            "malformed",
            wss,
            serde_json::json!({"envelope": "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>"}),
            400,
            "bad_xml",
        ),
        (
            "over max_xml_body_bytes",
            wss,
            serde_json::json!({"envelope": huge}),
            413,
            "payload_too_large",
        ),
        (
            "unknown field",
            wss,
            serde_json::json!({"envelope": TP_USER_INFO, "digest": "AA=="}),
            400,
            "bad_request",
        ),
        (
            "algorithm not allowed",
            saml,
            serde_json::json!({"xml": WK_AUTHN_REQUEST, "algorithm": "RS256"}),
            422,
            "algorithm_not_allowed",
        ),
        (
            "unknown algorithm",
            saml,
            serde_json::json!({"xml": WK_AUTHN_REQUEST, "algorithm": "HS256"}),
            422,
            "unsupported_algorithm",
        ),
        (
            "ttl zero",
            wss,
            serde_json::json!({"envelope": TP_USER_INFO, "timestamp_ttl_seconds": 0}),
            400,
            "bad_request",
        ),
        (
            "unknown key",
            "/v1/keys/nope/wss/sign",
            serde_json::json!({"envelope": TP_USER_INFO}),
            404,
            "unknown_key",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let (got, answer) = post(&s.daemon, path, &body)?;
        println!("{what}: {got} {answer}");
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("root:") && !message.contains("lol"),
            "{what}: {message}"
        );
        if status == 413 {
            assert!(
                message.contains("65536 bytes ([server] max_xml_body_bytes)"),
                "{what}: {message}"
            );
        }
    }
    // An envelope far over max_body_bytes, under max_xml_body_bytes, is signed; `sign`
    // keeps its own limit and names it.
    let answer = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": env(&"x".repeat(30_000))}),
    )?;
    assert_wss_verifies(
        s.token.dir.path(),
        text(&answer, "envelope")?,
        text(&answer, "body_id")?,
        &s.rsa_pem,
        SOAP11,
    )?;
    let (got, answer) = s.daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", &[b'a'; 5000])),
    )?;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4096 bytes ([server] max_body_bytes)")),
        "{answer}"
    );
    // The refusals left the daemon able to sign, and what it signs verifies.
    let answer = sign_saml(
        &s.daemon,
        "wk",
        serde_json::json!({"xml": WK_AUTHN_REQUEST}),
    )?;
    assert_saml_verifies(
        s.token.dir.path(),
        text(&answer, "xml")?,
        "AuthnRequest",
        AUTHN_ID,
        &s.ec_pem,
    )?;
    let answer = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": SOAP12_ENVELOPE}),
    )?;
    assert_wss_verifies(
        s.token.dir.path(),
        text(&answer, "envelope")?,
        text(&answer, "body_id")?,
        &s.rsa_pem,
        SOAP12,
    )?;
    Ok(())
}

#[test]
fn audit_records_wss_and_saml_with_signed_info_hash_and_references_but_no_document() -> Result {
    let s = setup("")?;
    let wss = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": TP_USER_INFO, "timestamp_ttl_seconds": 60}),
    )?;
    let saml = sign_saml(
        &s.daemon,
        "wk",
        serde_json::json!({"xml": WK_AUTHN_REQUEST}),
    )?;
    let (status, _) = post(
        &s.daemon,
        "/v1/keys/wk/saml/sign",
        &serde_json::json!({"xml": ARTIFACT_RESOLVE, "reference_id": "_nope"}),
    )?;
    assert_eq!(status, 422);
    let body_id = text(&wss, "body_id")?;
    let ts = timestamp_id(text(&wss, "envelope")?).ok_or("no timestamp")?;
    let lines = common::daemon::wait_for_lines(&s.daemon.audit, 3)?;
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let ops: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["op"] == "wss" || r["op"] == "saml")
        .collect();
    assert_eq!(ops.len(), 3, "{lines:?}");
    let w = ops[0];
    assert_eq!(
        (
            w["op"].as_str(),
            w["key"].as_str(),
            w["algorithm"].as_str(),
            w["status"].as_u64()
        ),
        (Some("wss"), Some("epuap"), Some("RS256"), Some(200))
    );
    assert_eq!(w["input_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        w["reference"].as_str(),
        Some(format!("#{body_id} #{ts}").as_str())
    );
    assert_eq!(w["cert_sha256"], wss["certificate_sha256"]);
    let m = ops[1];
    assert_eq!(
        (m["op"].as_str(), m["key"].as_str(), m["algorithm"].as_str()),
        (Some("saml"), Some("wk"), Some("ES256"))
    );
    assert_eq!(m["input_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        m["reference"].as_str(),
        Some(format!("#{AUTHN_ID}").as_str())
    );
    assert_eq!(m["cert_sha256"], saml["certificate_sha256"]);
    let refused = ops[2];
    assert_eq!(
        (
            refused["op"].as_str(),
            refused["status"].as_u64(),
            refused["outcome"].as_str()
        ),
        (Some("saml"), Some(422), Some("reference_not_found"))
    );
    let all = lines.join("\n");
    for secret in [
        "jan.kowalski",
        "Zażółć",
        "gsko.gmina.example",
        "Envelope",
        "AAQAAMFb",
        "Issuer",
    ] {
        assert!(
            !all.contains(secret),
            "the audit file holds document text {secret:?}: {all}"
        );
    }
    Ok(())
}

#[test]
fn cli_sign_xml_writes_exact_bytes_that_xmlsec1_verifies_and_reports_refusals() -> Result {
    let s = setup("")?;
    let input = s.token.path("tpuserinfo.xml");
    std::fs::write(&input, TP_USER_INFO)?;
    let output = s.token.path("tpuserinfo.signed.xml");
    run_ok(
        s.token
            .hsm_signer()
            .args(["sign-xml", "--socket"])
            .arg(&s.daemon.socket)
            .args([
                "--key",
                "epuap",
                "--profile",
                "wss",
                "--timestamp-ttl",
                "300",
                "--in",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&output),
    )?;
    let signed = std::fs::read_to_string(&output)?;
    assert!(signed.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- GSKO"));
    assert!(timestamp_id(&signed).is_some());
    if have_xmlsec1() {
        let (ok, out) = xmlsec1(&output, &s.rsa_pem, &wss_id_attrs(SOAP11))?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
        assert!(out.contains("SignedInfo References (ok/all): 2/2"), "{out}");
    }

    let input = s.token.path("authn.xml");
    std::fs::write(&input, WK_AUTHN_REQUEST)?;
    let output = s.token.path("authn.signed.xml");
    run_ok(
        s.token
            .hsm_signer()
            .args(["sign-xml", "--socket"])
            .arg(&s.daemon.socket)
            .args([
                "--key",
                "wk",
                "--profile",
                "saml",
                "--algorithm",
                "ES256",
                "--in",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&output),
    )?;
    if have_xmlsec1() {
        let id_attr = format!("{SAMLP}:AuthnRequest");
        let (ok, out) = xmlsec1(&output, &s.ec_pem, &[("ID", id_attr)])?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
        assert!(out.contains("SignedInfo References (ok/all): 1/1"), "{out}");
    }

    // A refusal: the daemon's code and message on standard error, a non-zero exit, no file.
    let input = s.token.path("xxe.xml");
    std::fs::write(
        &input,
        "<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><e>&x;</e>",
    )?;
    let output = s.token.path("xxe.signed.xml");
    let stderr = run_fails(
        s.token
            .hsm_signer()
            .args(["sign-xml", "--socket"])
            .arg(&s.daemon.socket)
            .args(["--key", "epuap", "--profile", "wss", "--in"])
            .arg(&input)
            .arg("--out")
            .arg(&output),
    )?;
    assert!(stderr.contains("xml_doctype_forbidden"), "{stderr}");
    assert!(stderr.contains("XML with a DOCTYPE is refused"), "{stderr}");
    assert!(!output.exists());
    Ok(())
}

#[test]
fn token_gone_gives_503_token_unavailable_and_xml_signing_resumes_when_it_is_back() -> Result {
    let s = setup("")?;
    let wss = serde_json::json!({"envelope": TP_USER_INFO});
    sign_wss(&s.daemon, "epuap", wss.clone())?;
    let dir = s.token.token_dir()?;
    let aside = s.token.path("token-moved-away");
    std::fs::rename(&dir, &aside)?;
    // The first request reaches the token call inside the XML signing (XmlSignError::Token);
    // the later ones are refused before it.
    for n in 0..3 {
        let (status, answer) = post(&s.daemon, "/v1/keys/epuap/wss/sign", &wss)?;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (503, Some("token_unavailable")),
            "wss {n}: {answer}"
        );
        let (status, answer) = post(
            &s.daemon,
            "/v1/keys/wk/saml/sign",
            &serde_json::json!({"xml": WK_AUTHN_REQUEST}),
        )?;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (503, Some("token_unavailable")),
            "saml {n}: {answer}"
        );
    }
    let log = s.daemon.log_text();
    assert!(log.contains("token connection lost"), "{log}");
    // The document is parsed and checked before the token's state (docs/api.md, the
    // order of checks): a malformed one is the caller's to fix, token or no token.
    let (status, answer) = post(
        &s.daemon,
        "/v1/keys/epuap/wss/sign",
        &serde_json::json!({"envelope": "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>"}),
    )?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("bad_xml")),
        "{answer}"
    );
    let (status, answer) = post(
        &s.daemon,
        "/v1/keys/wk/saml/sign",
        &serde_json::json!({"xml": WK_AUTHN_REQUEST, "reference_id": "_nope"}),
    )?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("reference_not_found")),
        "{answer}"
    );
    std::fs::rename(&aside, &dir)?;
    let back = std::time::Instant::now();
    let answer = loop {
        let (status, answer) = post(&s.daemon, "/v1/keys/epuap/wss/sign", &wss)?;
        if status == 200 {
            break answer;
        }
        assert!(
            back.elapsed() < std::time::Duration::from_secs(5),
            "{answer}: {}",
            s.daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let envelope = text(&answer, "envelope")?;
    if have_xmlsec1() {
        let xml = s.token.path("after.xml");
        std::fs::write(&xml, envelope)?;
        let (ok, out) = xmlsec1(&xml, &s.rsa_pem, &wss_id_attrs(SOAP11))?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
    }
    let audit = std::fs::read_to_string(&s.daemon.audit)?;
    assert!(
        audit.lines().any(
            |l| l.contains("\"op\":\"wss\"") && l.contains("\"outcome\":\"token_unavailable\"")
        ),
        "{audit}"
    );
    Ok(())
}

/// XML-DSig 1.1 wants ECDSA values as raw r‖s, each exactly 32 bytes for P-256. Some
/// public clients drop a leading zero byte of r or s: 1 signature in 128 then fails.
/// 1,200 AuthnRequests signed through the daemon (over one keep-alive connection) must all
/// carry 64-byte values; those whose r or s starts with a zero byte are also checked with
/// xmlsec1 against the certificate.
#[test]
fn ecdsa_values_keep_their_leading_zero_bytes() -> Result {
    let s = setup("")?;
    let script = r#"
import base64, http.client, json, re, socket, sys
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix)
conn = Unix(sys.argv[1])
request = open(sys.argv[2], encoding="utf-8").read()
lengths, zeros = {}, []
for n in range(int(sys.argv[3])):
    body = json.dumps({"xml": request.replace("ID-6a7c8f2e", "ID-%08x" % n)})
    conn.request("POST", "/v1/keys/wk/saml/sign", body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    value = re.search(r"<ds:SignatureValue>([^<]*)</ds:SignatureValue>", answer["xml"]).group(1)
    raw = base64.b64decode(value)
    lengths[len(raw)] = lengths.get(len(raw), 0) + 1
    if raw[0] == 0 or raw[32] == 0:
        name = "%s/zero-%d.xml" % (sys.argv[4], n)
        open(name, "wb").write(base64.b64decode(answer["xml_base64"]))
        zeros.append(name)
print(json.dumps({"lengths": lengths, "zeros": zeros}))
"#;
    let request = s.token.path("authn.xml");
    std::fs::write(&request, WK_AUTHN_REQUEST)?;
    let out = run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(&s.daemon.socket)
            .arg(&request)
            .arg("1200")
            .arg(s.token.dir.path()),
    )?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["lengths"],
        serde_json::json!({"64": 1200}),
        "{report}"
    );
    let zeros = report["zeros"].as_array().ok_or("zeros")?;
    eprintln!(
        "{} of 1200 ES256 values had r or s starting with a zero byte",
        zeros.len()
    );
    // (1 - 2/256)^1200 < 0.0001: a run with none would mean the values were not random.
    assert!(!zeros.is_empty(), "{report}");
    for file in zeros {
        let file = Path::new(file.as_str().ok_or("name")?);
        let (ok, log) = xmlsec1(file, &s.ec_pem, &[("ID", format!("{SAMLP}:AuthnRequest"))])?;
        assert!(ok, "{}: {log}", file.display());
    }
    Ok(())
}

/// TpUserInfo with a fixed Body `wsu:Id`: with no Timestamp, what is signed (SignedInfo)
/// is then the same on every request, and RSA PKCS#1 v1.5 gives the same signature.
fn tp_user_info_with_body_id() -> String {
    TP_USER_INFO.replace(
        "<soapenv:Body>",
        &format!("<soapenv:Body xmlns:wsu=\"{WSU}\" wsu:Id=\"id-body-1\">"),
    )
}

/// The envelope with the BinarySecurityToken's random `wsu:Id` (`X509-` and 32 hex
/// digits) masked: the only part of two signings of the same input that differs.
fn mask_token_ids(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find("X509-") {
        let end = (at + 5 + 32).min(rest.len());
        out.push_str(&rest[..at]);
        out.push_str("X509-*");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn signature_value(xml: &str) -> Result<String> {
    let start = xml
        .find("SignatureValue>")
        .ok_or_else(|| format!("no SignatureValue in {xml}"))?
        + "SignatureValue>".len();
    let end = xml[start..]
        .find('<')
        .ok_or("unterminated SignatureValue")?;
    Ok(xml[start..start + end].to_string())
}

/// The raw form: the document itself in (`application/xml`, options as query
/// parameters) and out (`application/xml`, metadata in `X-Hsm-Signer-*`). It signs what
/// the JSON form signs, byte for byte; curl, PHP's curl (examples/php/raw_wss.php) and
/// Python's http.client all get it, xmlsec1 verifies it, and refusals stay JSON.
#[test]
fn raw_xml_in_and_out_signs_what_json_signs_for_curl_php_and_python() -> Result {
    let s = setup("")?;
    let dir = s.token.dir.path();
    let envelope = tp_user_info_with_body_id();
    let json = sign_wss(
        &s.daemon,
        "epuap",
        serde_json::json!({"envelope": envelope, "algorithm": "RS256"}),
    )?;
    let from_json = text(&json, "envelope")?;
    let wss = "/v1/keys/epuap/wss/sign";

    // curl: the same envelope as the body, the algorithm as a query parameter.
    let (status, raw, headers) =
        post_raw(&s.daemon, dir, &format!("{wss}?algorithm=RS256"), &envelope)?;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(
        header(&headers, "(content-type)")?,
        "application/xml; charset=utf-8"
    );
    assert_eq!(signature_value(&raw)?, signature_value(from_json)?);
    assert_eq!(mask_token_ids(&raw), mask_token_ids(from_json));
    assert_ne!(raw, from_json, "the token ids are fresh on each request");
    for (name, field) in [
        ("body-id", "body_id"),
        ("algorithm", "algorithm"),
        ("algorithm-uri", "algorithm_uri"),
        ("key", "key"),
        ("certificate-sha256", "certificate_sha256"),
    ] {
        assert_eq!(header(&headers, name)?, text(&json, field)?, "{name}");
    }
    assert_eq!(header(&headers, "reference-uri")?, "#id-body-1");
    assert_wss_verifies(dir, &raw, "id-body-1", &s.rsa_pem, SOAP11)?;

    // A Timestamp asked for in the query is there and signed.
    let (status, raw_ts, headers) = post_raw(
        &s.daemon,
        dir,
        &format!("{wss}?timestamp_ttl_seconds=300"),
        &envelope,
    )?;
    assert_eq!(status, 200, "{raw_ts}");
    let ts = timestamp_id(&raw_ts).ok_or("no Timestamp")?;
    assert_eq!(
        header(&headers, "reference-uri")?,
        format!("#id-body-1 #{ts}")
    );
    assert_wss_verifies(dir, &raw_ts, "id-body-1", &s.rsa_pem, SOAP11)?;

    // SAML, by reference_id, with the RSA key: deterministic, so byte for byte the same.
    let saml = "/v1/keys/epuap/saml/sign";
    let json = sign_saml(
        &s.daemon,
        "epuap",
        serde_json::json!({"xml": ARTIFACT_RESOLVE, "reference_id": "_a3f1c0de"}),
    )?;
    let (status, raw, headers) = post_raw(
        &s.daemon,
        dir,
        &format!("{saml}?reference_id=_a3f1c0de&algorithm=RS256"),
        ARTIFACT_RESOLVE,
    )?;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(raw, text(&json, "xml")?);
    assert_eq!(header(&headers, "reference-uri")?, "#_a3f1c0de");
    if have_xmlsec1() {
        let file = dir.join("raw-artifact-resolve.xml");
        std::fs::write(&file, &raw)?;
        let (ok, out) = xmlsec1(
            &file,
            &s.rsa_pem,
            &[("ID", format!("{SAMLP}:ArtifactResolve"))],
        )?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
    }

    // Refusals stay JSON, with the codes of the JSON form.
    let refusals: Vec<(String, &str, u16, &str)> = vec![
        (wss.into(), "<soapenv:Envelope", 400, "bad_xml"),
        (format!("{wss}?digest=AA"), &envelope, 400, "bad_request"),
        (
            format!("{wss}?algorithm=HS256"),
            &envelope,
            422,
            "unsupported_algorithm",
        ),
        (
            format!("{wss}?timestamp_ttl_seconds=0"),
            &envelope,
            400,
            "bad_request",
        ),
    ];
    for (path, document, status, code) in refusals {
        let (got, body, headers) = post_raw(&s.daemon, dir, &path, document)?;
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {answer}"
        );
        assert_eq!(header(&headers, "(content-type)")?, "application/json");
    }
    // Query parameters on a JSON request are refused, not ignored.
    let (got, answer) = post(
        &s.daemon,
        &format!("{wss}?timestamp_ttl_seconds=60"),
        &serde_json::json!({"envelope": envelope}),
    )?;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{answer}"
    );

    // PHP's curl (examples/php/raw_wss.php).
    if have(
        "php with php-curl",
        Command::new("php").args(["-r", "exit(function_exists('curl_init') ? 0 : 1);"]),
    ) {
        let input = dir.join("php-input.xml");
        std::fs::write(&input, &envelope)?;
        let out = run_ok(
            Command::new("php")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/php/raw_wss.php"))
                .arg(format!("--socket={}", s.daemon.socket.display()))
                .arg("--key=epuap")
                .arg(&input),
        )?;
        let signed = String::from_utf8(out.stdout)?;
        let meta = String::from_utf8(out.stderr)?;
        assert_eq!(
            signature_value(&signed)?,
            signature_value(from_json)?,
            "{meta}"
        );
        assert!(meta.contains("body-id: id-body-1"), "{meta}");
        assert!(meta.contains("algorithm: RS256"), "{meta}");
        assert_wss_verifies(dir, &signed, "id-body-1", &s.rsa_pem, SOAP11)?;
        // A refusal is the JSON error, turned into HsmSignerError.
        std::fs::write(&input, "<soapenv:Envelope")?;
        let out = Command::new("php")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/php/raw_wss.php"))
            .arg(format!("--socket={}", s.daemon.socket.display()))
            .arg(&input)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("400 bad_xml"),
            "{err}"
        );
    }

    // Python's http.client, as a caller without curl would do it.
    let script = r#"
import http.client, socket, sys
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix)
conn = Unix(sys.argv[1])
conn.request("POST", "/v1/keys/epuap/wss/sign", open(sys.argv[2], "rb").read(), {"Content-Type": "text/xml; charset=utf-8"})
answer = conn.getresponse()
assert answer.status == 200, answer.read()
sys.stderr.write("body-id: %s\n" % answer.getheader("X-Hsm-Signer-Body-Id"))
sys.stdout.buffer.write(answer.read())
"#;
    let input = dir.join("python-input.xml");
    std::fs::write(&input, &envelope)?;
    let out = run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(&s.daemon.socket)
            .arg(&input),
    )?;
    let signed = String::from_utf8(out.stdout)?;
    assert_eq!(signature_value(&signed)?, signature_value(from_json)?);
    assert!(String::from_utf8(out.stderr)?.contains("body-id: id-body-1"));
    assert_wss_verifies(dir, &signed, "id-body-1", &s.rsa_pem, SOAP11)?;
    Ok(())
}

/// `max_xml_in_flight` places are taken before the body is read: with one place, a
/// request whose body is still arriving holds it, a second XML request waits for it
/// within `request_timeout_ms` and then gets 503 `overloaded`, while `/sign` (which needs
/// no place) is served. Once the first body arrives it is signed.
#[test]
fn xml_places_bound_the_documents_in_work_and_leave_sign_alone() -> Result {
    use std::io::{Read, Write};
    let s = setup("max_xml_in_flight = 1\nrequest_timeout_ms = 300\nread_timeout_ms = 20000")?;
    let envelope = tp_user_info_with_body_id();
    let (head, tail) = envelope.split_at(100);
    let mut first = std::os::unix::net::UnixStream::connect(&s.daemon.socket)?;
    first.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    first.write_all(
        format!(
            "POST /v1/keys/epuap/wss/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            envelope.len()
        )
        .as_bytes(),
    )?;
    // The first request holds the place once the daemon waits for the rest of its body.
    let wss = serde_json::json!({"envelope": envelope});
    let mut refused = serde_json::Value::Null;
    common::daemon::wait_until(
        std::time::Duration::from_secs(10),
        "a second XML request to find no place",
        || {
            let (status, answer) = post(&s.daemon, "/v1/keys/epuap/wss/sign", &wss)?;
            refused = answer;
            Ok(status == 503)
        },
    )?;
    assert_eq!(refused["error"]["code"], "overloaded", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[server] max_xml_in_flight")),
        "{refused}"
    );
    let (status, answer) = s.daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", b"x")),
    )?;
    assert_eq!(status, 200, "{answer}");
    first.write_all(tail.as_bytes())?;
    let mut reply = Vec::new();
    first.read_to_end(&mut reply)?;
    let (status, body) = common::daemon::parse_http(&reply)?;
    let signed = String::from_utf8(body)?;
    assert_eq!(status, 200, "{signed}");
    assert_wss_verifies(s.token.dir.path(), &signed, "id-body-1", &s.rsa_pem, SOAP11)?;
    Ok(())
}

/// A tpSigning call carrying a document of `payload_bytes` random bytes in base64, in
/// lines of 76 characters as MIME encoders write it, with a fixed Body `wsu:Id`.
fn envelope_with_document(payload_bytes: usize) -> Result<String> {
    use base64::Engine;
    let mut random = vec![0u8; payload_bytes];
    openssl::rand::rand_bytes(&mut random)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&random);
    let mut lines = String::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for chunk in encoded.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk)?);
        lines.push('\n');
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"{SOAP11}\" xmlns:wsu=\"{WSU}\"><soapenv:Header/><soapenv:Body wsu:Id=\"id-body-1\"><ns:addDocumentToSigning xmlns:ns=\"http://signing.ws.comarch.gov\"><doc>{lines}</doc><successURL>https://gsko.gmina.example/ok</successURL></ns:addDocumentToSigning></soapenv:Body></soapenv:Envelope>\n"
    ))
}

/// An 8 MB envelope (a scanned PDF of 6 MiB in base64) is signed under the default
/// configuration, in both forms, with the same signature, and xmlsec1 verifies it.
#[test]
fn an_8_mb_envelope_is_signed_under_the_default_configuration() -> Result {
    let s = setup("")?;
    let dir = s.token.dir.path();
    let envelope = envelope_with_document(6 * 1024 * 1024)?;
    assert!(envelope.len() > 8_000_000, "{}", envelope.len());
    let (status, raw, headers) = post_raw(&s.daemon, dir, "/v1/keys/epuap/wss/sign", &envelope)?;
    assert_eq!(status, 200, "{}", &raw[..raw.len().min(500)]);
    assert_eq!(header(&headers, "body-id")?, "id-body-1");
    let file = dir.join("signed-8mb.xml");
    std::fs::write(&file, &raw)?;
    if have_xmlsec1() {
        let (ok, out) = xmlsec1(&file, &s.rsa_pem, &wss_id_attrs(SOAP11))?;
        assert!(ok, "xmlsec1 rejected:\n{out}");
        assert!(out.contains("SignedInfo References (ok/all): 1/1"), "{out}");
    }
    // The JSON form, from a file: 8 MB is too long for curl's command line.
    let body = dir.join("8mb.json");
    std::fs::write(&body, serde_json::json!({"envelope": envelope}).to_string())?;
    let (status, answer) = s.daemon.curl_with(
        &[],
        "POST",
        "/v1/keys/epuap/wss/sign",
        None,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
        ],
    )?;
    let json: serde_json::Value = serde_json::from_slice(&answer)?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        signature_value(text(&json, "envelope")?)?,
        signature_value(&raw)?
    );
    Ok(())
}
