//! Enveloped XAdES-BES (`hsm_signer::xml::sign_xades`) with keys generated on a fresh
//! SoftHSM2 token by `hsm-signer generate`, the token signing SignedInfo through this
//! test's own PKCS#11 session. Every result is checked by verifiers this project did not
//! write, each saying what it validated:
//! - xmlsec1, both references (SignedProperties found by `--id-attr`);
//! - signxml's `XAdESVerifier` (x509_cert=, expect_references=2), which also checks the
//!   CertDigest, and, in the same script (tests/verifiers/verify_xades.py), lxml and
//!   `cryptography` for what no verifier checks: SigningTime, the CertDigest in SHA-256
//!   and SHA-1, IssuerSerial, the shape, and that the document less its signature
//!   canonicalises as the input;
//! - xadesjs on Node (tools/verifiers-xades, `npm ci` by scripts/test);
//! - the JDK's javax.xml.crypto (tests/verifiers/VerifyXml.java).

use crate::common;

use std::path::Path;

use common::verifiers::{self, XadesCheck, AUTH_TOKEN_REQUEST};
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_signer::algorithm::Algorithm;
use hsm_signer::xml::{
    sign_xades, CertificateDigest, XadesOptions, XadesSigned, XmlError, XmlSignError,
};
use time::OffsetDateTime;

/// A document of the kind sent through ePUAP's WS-Doręczyciel: the CRD "Dokument"
/// shape, Polish text, a prefixed namespace and an `xml:lang`.
fn doreczyciel_document() -> String {
    let text = "Zawiadamiam o wszczęciu postępowania w sprawie ustalenia wysokości opłaty za gospodarowanie odpadami komunalnymi. Źródło: Urząd Gminy Przykładowo, ul. Żółkiewskiego 1. "
        .repeat(200);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<wnio:Dokument xmlns:wnio="http://epuap.gov.pl/fe-model-web/wzor_lokalny/gmina-przykladowo/pismo-ogolne/" xmlns:str="http://crd.gov.pl/xml/schematy/struktura/2009/11/16/" xmlns:meta="http://crd.gov.pl/xml/schematy/meta/2009/11/16/" xml:lang="pl">
  <wnio:OpisDokumentu>
    <meta:Identyfikator typIdentyfikatora="idDokumentu"><meta:Wartosc>RF.3110.12.2026</meta:Wartosc></meta:Identyfikator>
    <meta:Data typDaty="utworzony">2026-12-07</meta:Data>
  </wnio:OpisDokumentu>
  <wnio:DaneDokumentu>
    <str:Naglowek><str:NazwaDokumentu>Zawiadomienie</str:NazwaDokumentu></str:Naglowek>
    <wnio:TrescDokumentu format="text/plain" kodowanie="UTF-8"><wnio:Wartosc>{text}</wnio:Wartosc></wnio:TrescDokumentu>
  </wnio:DaneDokumentu>
</wnio:Dokument>
"#
    )
}

/// A key generated on a fresh token with a self-signed certificate, and that
/// certificate (DER) read back with pkcs11-tool.
fn key_on_token(token: &TestToken, key_type: &str, subject: &str) -> Result<Vec<u8>> {
    run_ok(
        token
            .on_token("generate")
            .args([
                "--label",
                "xades",
                "--key-type",
                key_type,
                "--purpose",
                "sign",
            ])
            .args(["--subject", subject, "--self-signed-days", "30"]),
    )?;
    token.read_object("cert", "xades")
}

/// Signs `xml` on the token: the closure hands SignedInfo's c14n bytes to the private key
/// labelled `xades` (ECDSA over the SHA-256 digest, raw r||s as PKCS#11 returns it; RSA
/// as CKM_SHA256_RSA_PKCS).
fn sign_on_token(
    token: &TestToken,
    xml: &[u8],
    opts: &XadesOptions,
    cert: &[u8],
) -> Result<std::result::Result<XadesSigned, XmlSignError<String>>> {
    token.with_session(|session| {
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"xades".to_vec()),
            ])?
            .first()
            .ok_or("no private key labelled xades")?;
        Ok(sign_xades(xml, opts, cert, |data| {
            match opts.algorithm {
                Algorithm::Es256 => {
                    let digest = openssl::sha::sha256(data);
                    session.sign(&Mechanism::Ecdsa, key, &digest)
                }
                _ => session.sign(&Mechanism::Sha256RsaPkcs, key, data),
            }
            .map_err(|e| e.to_string())
        }))
    })
}

/// Runs every verifier on `signed` ([`verifiers::xades_everywhere`]).
fn verify_everywhere(
    dir: &Path,
    input: &str,
    signed: &XadesSigned,
    cert_der: &[u8],
    digest: &str,
    window: (OffsetDateTime, OffsetDateTime),
    tamper: (&str, &str),
) -> Result {
    verifiers::xades_everywhere(&XadesCheck {
        dir,
        input,
        signed: &signed.xml,
        signing_time: &signed.signing_time,
        cert_der,
        digest,
        window,
        tamper,
        xmlsec1: true,
    })
}

#[test]
fn ksef_auth_token_request_ec_p256_on_the_token() -> Result {
    let token = TestToken::new()?;
    let cert = key_on_token(
        &token,
        "ec-p256",
        "/C=PL/O=Gmina Przykładowo/2.5.4.97=VATPL-5260250274/CN=Gmina Przykładowo KSeF",
    )?;
    let before = OffsetDateTime::now_utc();
    let opts = XadesOptions::new(Algorithm::Es256);
    let signed = sign_on_token(&token, AUTH_TOKEN_REQUEST.as_bytes(), &opts, &cert)??;
    let after = OffsetDateTime::now_utc();
    assert!(signed.signature_id.starts_with("Signature-"));
    assert!(signed
        .xml
        .starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<AuthTokenRequest"));
    // ECDSA's SignatureValue is R||S: 64 bytes for P-256, never DER.
    let value = signed
        .xml
        .split("SignatureValue>")
        .nth(1)
        .ok_or("no SignatureValue")?
        .trim_end_matches("</ds:");
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(value)?
            .len(),
        64
    );
    verify_everywhere(
        &token.path(""),
        AUTH_TOKEN_REQUEST,
        &signed,
        &cert,
        "sha256",
        (before, after),
        ("<Nip>5260250274</Nip>", "<Nip>5260250275</Nip>"),
    )
}

/// Comments before, inside and after the document element are kept and left out of
/// the digest by every verifier (c14n without comments). A processing instruction
/// outside the document element is refused: xmlsec1 digests it as part of `URI=""`,
/// signxml does not (seen when this test signed one: xmlsec1 OK, signxml "Digest
/// mismatch for reference 0").
#[test]
fn comments_kept_outer_processing_instruction_refused() -> Result {
    let token = TestToken::new()?;
    let cert = key_on_token(&token, "ec-p256", "/C=PL/CN=Gmina Przykładowo KSeF")?;
    let input = AUTH_TOKEN_REQUEST
        .replace("<AuthTokenRequest", "<!-- przed -->\n<AuthTokenRequest")
        .replace(
            "</ContextIdentifier>",
            "</ContextIdentifier>\n  <!-- komentarz --><?inside processing?>",
        )
        + "<!-- po -->\n";
    let before = OffsetDateTime::now_utc();
    let opts = XadesOptions::new(Algorithm::Es256);
    let signed = sign_on_token(&token, input.as_bytes(), &opts, &cert)??;
    let after = OffsetDateTime::now_utc();
    assert!(signed.xml.contains("<!-- przed -->") && signed.xml.contains("<!-- po -->"));
    verify_everywhere(
        &token.path(""),
        &input,
        &signed,
        &cert,
        "sha256",
        (before, after),
        ("<?inside processing?>", "<?inside changed?>"),
    )?;

    let with_pi = AUTH_TOKEN_REQUEST.replace(
        "<AuthTokenRequest",
        "<?xml-stylesheet type=\"text/xsl\" href=\"auth.xsl\"?>\n<AuthTokenRequest",
    );
    match sign_xades(
        with_pi.as_bytes(),
        &opts,
        &cert,
        |_| -> std::result::Result<Vec<u8>, String> { Err("the token must not be asked".into()) },
    ) {
        Err(XmlSignError::Xml(e @ XmlError::BadXml { .. })) => {
            assert!(
                e.to_string().contains("processing instruction outside"),
                "{e}"
            );
            Ok(())
        }
        other => Err(format!("{:?}", other.map(|s| s.signature_id)).into()),
    }
}

#[test]
fn doreczyciel_document_rsa_2048_sha1_cert_digest_on_the_token() -> Result {
    let token = TestToken::new()?;
    let cert = key_on_token(
        &token,
        "rsa-2048",
        "/C=PL/O=Gmina Przykładowo, Urząd Gminy/CN=ePUAP Gmina Przykładowo",
    )?;
    let input = doreczyciel_document();
    let before = OffsetDateTime::now_utc();
    let mut opts = XadesOptions::new(Algorithm::Rs256);
    opts.certificate_digest = CertificateDigest::Sha1;
    opts.signature_id = Some("ID-doreczyciel-1".into());
    let signed = sign_on_token(&token, input.as_bytes(), &opts, &cert)??;
    let after = OffsetDateTime::now_utc();
    assert_eq!(signed.signature_id, "ID-doreczyciel-1");
    verify_everywhere(
        &token.path(""),
        &input,
        &signed,
        &cert,
        "sha1",
        (before, after),
        ("Zawiadomienie<", "Wezwanie<"),
    )
}

/// What is refused, before the token is asked to sign anything.
#[test]
fn refusals_never_reach_the_token() -> Result {
    let token = TestToken::new()?;
    let cert = key_on_token(&token, "ec-p256", "/C=PL/CN=Gmina Przykładowo KSeF")?;
    let opts = XadesOptions::new(Algorithm::Es256);
    let signed = sign_on_token(&token, AUTH_TOKEN_REQUEST.as_bytes(), &opts, &cert)??;

    let refused = |xml: &[u8], opts: &XadesOptions| -> Result<XmlError> {
        match sign_xades(
            xml,
            opts,
            &cert,
            |_| -> std::result::Result<Vec<u8>, String> {
                Err("the token must not be asked".into())
            },
        ) {
            Err(XmlSignError::Xml(e)) => Ok(e),
            Err(XmlSignError::Token(e)) => Err(e.into()),
            Ok(_) => Err("signed".into()),
        }
    };
    assert!(matches!(
        refused(signed.xml.as_bytes(), &opts)?,
        XmlError::AlreadySigned(_)
    ));
    let mut bad_id = XadesOptions::new(Algorithm::Es256);
    bad_id.signature_id = Some("xpointer(/)".into());
    assert!(matches!(
        refused(AUTH_TOKEN_REQUEST.as_bytes(), &bad_id)?,
        XmlError::BadId(_)
    ));
    let with_id = AUTH_TOKEN_REQUEST.replace("<Challenge>", "<Challenge Id=\"S1\">");
    let mut clash = XadesOptions::new(Algorithm::Es256);
    clash.signature_id = Some("S1".into());
    assert!(matches!(
        refused(with_id.as_bytes(), &clash)?,
        XmlError::DuplicateId(_)
    ));
    assert!(matches!(
        refused(
            AUTH_TOKEN_REQUEST.as_bytes(),
            &XadesOptions::new(Algorithm::Rs256)
        )?,
        XmlError::AlgorithmMismatch(_)
    ));
    let mut tight = XadesOptions::new(Algorithm::Es256);
    tight.limits.max_elements = 3;
    assert!(matches!(
        refused(AUTH_TOKEN_REQUEST.as_bytes(), &tight)?,
        XmlError::TooComplex { .. }
    ));
    let mut shallow = XadesOptions::new(Algorithm::Es256);
    shallow.max_depth = 1;
    assert!(matches!(
        refused(AUTH_TOKEN_REQUEST.as_bytes(), &shallow)?,
        XmlError::TooDeep(1)
    ));
    let doctype = format!(
        "<!DOCTYPE x [<!ENTITY e \"x\">]>{}",
        &AUTH_TOKEN_REQUEST[39..]
    );
    assert!(matches!(
        refused(doctype.as_bytes(), &opts)?,
        XmlError::DoctypeForbidden
    ));
    Ok(())
}
