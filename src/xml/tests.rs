//! The profiles' refusals and the closure contract. Verification by independent tools
//! lives in tests/xml_sign.rs.

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509};

use super::*;

fn ec_key() -> (PKey<Private>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "test").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let der = b.build().to_der().unwrap();
    (key, der)
}

/// ES256 as the token does it: raw r||s over SHA-256 of the bytes.
fn es256(key: &PKey<Private>, data: &[u8]) -> Result<Vec<u8>, String> {
    let digest = crate::algorithm::Hash::Sha256.digest(data);
    let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &*key.ec_key().unwrap()).unwrap();
    let mut raw = sig.r().to_vec_padded(32).unwrap();
    raw.extend(sig.s().to_vec_padded(32).unwrap());
    Ok(raw)
}

fn wss(envelope: &str) -> Result<WssSigned, SignError<String>> {
    let (key, der) = ec_key();
    sign_wss(
        envelope.as_bytes(),
        &WssOptions::new(Algorithm::Es256),
        &der,
        |d| es256(&key, d),
    )
}

fn saml(xml: &str, reference_id: Option<&str>) -> Result<SamlSigned, SignError<String>> {
    let (key, der) = ec_key();
    let opts = SamlOptions {
        reference_id: reference_id.map(str::to_owned),
        ..SamlOptions::new(Algorithm::Es256)
    };
    sign_saml(xml.as_bytes(), &opts, &der, |d| es256(&key, d))
}

fn xml_error<T: std::fmt::Debug>(result: Result<T, SignError<String>>) -> XmlError {
    match result {
        Err(SignError::Xml(e)) => e,
        other => panic!("expected an XML error, got {other:?}"),
    }
}

const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

#[test]
fn two_bodies_no_body_and_other_roots_are_not_envelopes() {
    let two = format!("<s:Envelope xmlns:s=\"{S11}\"><s:Body/><s:Body/></s:Envelope>");
    let e = xml_error(wss(&two));
    assert_eq!(e, XmlError::NotSoapEnvelope("two Body elements".into()));
    assert_eq!(e.code(), "not_soap_envelope");
    let none = format!("<s:Envelope xmlns:s=\"{S11}\"><s:Header/></s:Envelope>");
    assert_eq!(
        xml_error(wss(&none)),
        XmlError::NotSoapEnvelope("no Body element".into())
    );
    let e = xml_error(wss("<Envelope><Body/></Envelope>"));
    assert!(e.to_string().contains("root element is Envelope"), "{e}");
    let e = xml_error(wss(
        "<p:AuthnRequest xmlns:p=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"a\"/>",
    ));
    assert!(e.to_string().contains("AuthnRequest"), "{e}");
}

#[test]
fn a_signed_security_header_is_already_signed() {
    let env = format!(
        "<s:Envelope xmlns:s=\"{S11}\"><s:Header><wsse:Security xmlns:wsse=\"{}\">\
         <ds:Signature xmlns:ds=\"{}\"/></wsse:Security></s:Header><s:Body/></s:Envelope>",
        wss::WSSE_NS,
        dsig::DS_NS
    );
    let e = xml_error(wss(&env));
    assert_eq!(e.code(), "already_signed");
}

#[test]
fn an_existing_body_id_is_kept() -> Result<(), SignError<String>> {
    let env = format!(
        "<s:Envelope xmlns:s=\"{S11}\"><s:Body xmlns:wsu=\"{}\" wsu:Id=\"body-1\"><x/></s:Body></s:Envelope>",
        wss::WSU_NS
    );
    let signed = wss(&env)?;
    assert_eq!(signed.body_id, "body-1");
    assert_eq!(signed.reference_uris, ["#body-1"]);
    assert_eq!(signed.xml.matches("body-1").count(), 2, "{}", signed.xml);
    Ok(())
}

const AUTHN: &str = "<saml2p:AuthnRequest xmlns:saml2p=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
    xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"ID-1\" Version=\"2.0\">\
    <saml2:Issuer>https://gmina.example</saml2:Issuer></saml2p:AuthnRequest>";

#[test]
fn saml_refusals() {
    let e = xml_error(saml(AUTHN, Some("ID-2")));
    assert_eq!(e, XmlError::ReferenceNotFound("ID-2".into()));
    assert_eq!(e.code(), "reference_not_found");
    let e = xml_error(saml("<r><a ID=\"x\"/></r>", None));
    assert_eq!(e, XmlError::MissingId("r".into()));
    let signed = saml(AUTHN, None).expect("signs");
    let e = xml_error(saml(&signed.xml, None));
    assert_eq!(e.code(), "already_signed");
}

#[test]
fn signature_goes_after_issuer_or_first() -> Result<(), SignError<String>> {
    let signed = saml(AUTHN, None)?;
    assert!(
        signed.xml.contains("</saml2:Issuer><ds:Signature"),
        "{}",
        signed.xml
    );
    assert_eq!(signed.reference_uri, "#ID-1");
    let signed = saml("<r><a ID=\"x\"><b/></a></r>", Some("x"))?;
    assert!(
        signed.xml.contains("<a ID=\"x\"><ds:Signature"),
        "{}",
        signed.xml
    );
    Ok(())
}

#[test]
fn a_token_failure_is_not_an_xml_error() {
    let (_, der) = ec_key();
    let result = sign_saml(
        AUTHN.as_bytes(),
        &SamlOptions::new(Algorithm::Es256),
        &der,
        |_| Err::<Vec<u8>, _>("token gone"),
    );
    assert!(matches!(result, Err(SignError::Token("token gone"))));
}

#[test]
fn the_closure_is_not_called_for_a_refused_document() {
    let (_, der) = ec_key();
    let result = sign_saml(
        b"<!DOCTYPE a><a ID=\"x\"/>",
        &SamlOptions::new(Algorithm::Es256),
        &der,
        |_| -> Result<Vec<u8>, ()> { panic!("called") },
    );
    assert!(matches!(
        result,
        Err(SignError::Xml(XmlError::DoctypeForbidden))
    ));
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let (other, _) = ec_key();
    let (_, der) = ec_key();
    let result = sign_saml(
        AUTHN.as_bytes(),
        &SamlOptions::new(Algorithm::Es256),
        &der,
        |d| es256(&other, d),
    );
    assert!(matches!(
        result,
        Err(SignError::Xml(XmlError::SignatureMismatch))
    ));
}

#[test]
fn an_rsa_algorithm_with_an_ec_certificate_is_refused() {
    let (key, der) = ec_key();
    let result = sign_saml(
        AUTHN.as_bytes(),
        &SamlOptions::new(Algorithm::Rs256),
        &der,
        |d| es256(&key, d),
    );
    assert!(matches!(
        result,
        Err(SignError::Xml(XmlError::AlgorithmMismatch(_)))
    ));
}

#[test]
fn the_audit_hash_is_sha256_of_what_the_closure_signed() -> Result<(), SignError<String>> {
    let (key, der) = ec_key();
    let mut seen = Vec::new();
    let signed = sign_saml(
        AUTHN.as_bytes(),
        &SamlOptions::new(Algorithm::Es256),
        &der,
        |d| {
            seen = d.to_vec();
            es256(&key, d)
        },
    )?;
    assert!(seen.starts_with(b"<ds:SignedInfo xmlns:ds="));
    assert_eq!(
        signed.signed_info_sha256.to_vec(),
        crate::algorithm::Hash::Sha256.digest(&seen)
    );
    Ok(())
}

#[test]
fn a_huge_non_ascii_text_node_is_refused_not_signed_wrong() {
    // The libxml crate (0.3.23) decodes c14n output per 16 KB chunk; a chunk ending
    // inside "ż" would change the digested text. Such input is refused.
    for prefix in ["", "a"] {
        let xml = format!("<r ID=\"x\">{prefix}{}</r>", "ż".repeat(20_000));
        match saml(&xml, None) {
            Ok(signed) => assert_eq!(prefix, "", "{}", signed.reference_uri),
            Err(e) => assert_eq!(xml_error(Err::<(), _>(e)).code(), "xml_internal"),
        }
    }
    let ascii = format!("<r ID=\"x\">a{}</r>", "z".repeat(100_000));
    assert!(saml(&ascii, None).is_ok());
}
