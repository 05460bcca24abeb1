//! The profiles' refusals and the closure contract. Verification by independent tools
//! lives in tests/xml_sign.rs.

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509};

use super::*;
use crate::algorithm::Algorithm;

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

fn wss(envelope: &str) -> Result<WssSigned, XmlSignError<String>> {
    let (key, der) = ec_key();
    sign_wss(
        envelope.as_bytes(),
        &WssOptions::new(Algorithm::Es256),
        &der,
        |d| es256(&key, d),
    )
}

fn saml(xml: &str, reference_id: Option<&str>) -> Result<SamlSigned, XmlSignError<String>> {
    let (key, der) = ec_key();
    let opts = SamlOptions {
        reference_id: reference_id.map(str::to_owned),
        ..SamlOptions::new(Algorithm::Es256)
    };
    sign_saml(xml.as_bytes(), &opts, &der, |d| es256(&key, d))
}

fn xml_error<T: std::fmt::Debug>(result: Result<T, XmlSignError<String>>) -> XmlError {
    match result {
        Err(XmlSignError::Xml(e)) => e,
        other => panic!("expected an XML error, got {other:?}"),
    }
}

const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

#[test]
fn two_bodies_no_body_and_other_roots_are_not_envelopes() {
    let two = format!("<s:Envelope xmlns:s=\"{S11}\"><s:Body/><s:Body/></s:Envelope>");
    let e = xml_error(wss(&two));
    assert_eq!(
        e,
        XmlError::NotSoapEnvelope("a second Body at line 1".into())
    );
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
fn an_existing_body_id_is_kept() -> Result<(), XmlSignError<String>> {
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
fn signature_goes_after_issuer_or_first() -> Result<(), XmlSignError<String>> {
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
    assert!(matches!(result, Err(XmlSignError::Token("token gone"))));
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
        Err(XmlSignError::Xml(XmlError::DoctypeForbidden))
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
        Err(XmlSignError::Xml(XmlError::SignatureMismatch))
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
        Err(XmlSignError::Xml(XmlError::AlgorithmMismatch(_)))
    ));
}

#[test]
fn the_audit_hash_is_sha256_of_what_the_closure_signed() -> Result<(), XmlSignError<String>> {
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
fn a_huge_non_ascii_text_node_is_signed_over_its_own_bytes() -> Result<(), XmlSignError<String>> {
    // libxml2 flushes its c14n output inside long texts; a chunk ending inside "ż" once
    // became U+FFFD in the digest. Bytes now go straight to SHA-256.
    for prefix in ["", "a", "ab"] {
        let text = format!("{prefix}{}", "ż".repeat(20_000));
        let xml = format!("<r ID=\"x\">{text}</r>");
        let signed = saml(&xml, None)?;
        assert!(signed.xml.contains(&text));
        assert!(!signed.xml.contains('\u{FFFD}'));
    }
    Ok(())
}

const S12: &str = "http://www.w3.org/2003/05/soap-envelope";

fn envelope(header: &str, body_attrs: &str, payload: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{S11}\" xmlns:wsu=\"{}\" xmlns:wsse=\"{}\" xmlns:ds=\"{}\">\
         {header}<s:Body{body_attrs}>{payload}</s:Body></s:Envelope>",
        wss::WSU_NS,
        wss::WSSE_NS,
        dsig::DS_NS
    )
}

fn code_of(xml: &str) -> &'static str {
    xml_error(wss(xml)).code()
}

#[test]
fn a_second_body_anywhere_outside_the_payload_is_not_an_envelope() {
    let fake = "<s:Body><evil/></s:Body>";
    let in_header = envelope(&format!("<s:Header>{fake}</s:Header>"), "", "<ok/>");
    let in_security = envelope(
        &format!("<s:Header><wsse:Security>{fake}</wsse:Security></s:Header>"),
        "",
        "<ok/>",
    );
    let soap12_before = format!(
        "<s:Envelope xmlns:s=\"{S11}\" xmlns:t=\"{S12}\"><t:Body><evil/></t:Body><s:Body/></s:Envelope>"
    );
    let soap11_before = format!(
        "<t:Envelope xmlns:t=\"{S12}\" xmlns:s=\"{S11}\"><s:Body><evil/></s:Body><t:Body/></t:Envelope>"
    );
    let x_body =
        format!("<s:Envelope xmlns:s=\"{S11}\" xmlns:x=\"urn:x\"><x:Body/><s:Body/></s:Envelope>");
    let bare_body = format!("<s:Envelope xmlns:s=\"{S11}\"><Body/><s:Body/></s:Envelope>");
    let after = format!("<s:Envelope xmlns:s=\"{S11}\"><s:Body/>\n<Body/></s:Envelope>");
    let deep = envelope(
        "<s:Header><a><b><c><x:Body xmlns:x=\"urn:x\"/></c></b></a></s:Header>",
        "",
        "",
    );
    for xml in [
        &in_header,
        &in_security,
        &soap12_before,
        &soap11_before,
        &x_body,
        &bare_body,
        &after,
        &deep,
    ] {
        let e = xml_error(wss(xml));
        assert_eq!(e.code(), "not_soap_envelope", "{xml}: {e}");
        assert!(e.to_string().contains("Body at line"), "{e}");
    }
    assert!(xml_error(wss(&after)).to_string().contains("line 2"));
}

#[test]
fn header_elements_named_envelope_header_or_body_are_refused() {
    for name in ["Envelope", "Header", "Body"] {
        for element in [
            format!("<{name}/>"),
            format!("<x:{name} xmlns:x=\"urn:x\"/>"),
            format!("<s:{name}/>"),
            format!("<wsse:Security><q><{name}/></q></wsse:Security>"),
        ] {
            let xml = envelope(&format!("<s:Header>{element}</s:Header>"), "", "");
            let e = xml_error(wss(&xml));
            assert_eq!(e.code(), "not_soap_envelope", "{xml}");
            assert!(
                e.to_string().contains(&format!("element {name} at line 1")),
                "{e}"
            );
        }
    }
}

#[test]
fn bodies_and_signatures_inside_the_payload_are_signed() -> Result<(), XmlSignError<String>> {
    let payload =
        "<doc><s:Body>inner</s:Body><Body/><x:Envelope xmlns:x=\"urn:x\"><x:Header/></x:Envelope>\
         <ds:Signature><ds:SignedInfo/></ds:Signature></doc>";
    let signed = wss(&envelope("<s:Header/>", "", payload))?;
    assert!(signed.xml.contains(payload), "{}", signed.xml);
    Ok(())
}

#[test]
fn a_signature_anywhere_in_the_header_is_already_signed() {
    for header in [
        "<s:Header><wsse:Security><x><ds:Signature/></x></wsse:Security></s:Header>",
        "<s:Header><wsse:Security s:actor=\"urn:other\"><ds:Signature/></wsse:Security></s:Header>",
        "<s:Header><a><b><ds:Signature/></b></a></s:Header>",
    ] {
        let e = xml_error(wss(&envelope(header, "", "")));
        assert_eq!(e.code(), "already_signed", "{header}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}

#[test]
fn xml_id_joins_the_duplicate_check() {
    for payload in [
        "<a xml:id=\"x1\"/><b xml:id=\"x1\"/>",
        "<a xml:id=\"x1\"/><b ID=\"x1\"/>",
        "<a wsu:Id=\"x1\"/><b xml:id=\"x1\"/>",
    ] {
        let e = xml_error(wss(&envelope("", "", payload)));
        assert_eq!(e, XmlError::DuplicateId("x1".into()), "{payload}");
    }
    // The same value twice on one element counts once.
    assert!(wss(&envelope("", "", "<a ID=\"x1\" xml:id=\"x1\"/>")).is_ok());
}

#[test]
fn body_ids_that_are_not_plain_names_are_refused() {
    for id in ["xpointer(/)", "", " body", "body ", "#body", "a:b", "-a"] {
        let xml = envelope("", &format!(" wsu:Id=\"{id}\""), "");
        let e = xml_error(wss(&xml));
        assert_eq!(e.code(), "bad_id", "{id:?}");
        assert!(e.to_string().contains(&format!("\"{id}\"")), "{e}");
    }
    let long = "a".repeat(129);
    assert_eq!(
        code_of(&envelope("", &format!(" wsu:Id=\"{long}\""), "")),
        "bad_id"
    );
    // A leading digit is fine: PHP's uniqid() makes such IDs.
    let ok = wss(&envelope("", " wsu:Id=\"5f3a9c2e1b7d4\"", "")).expect("signs");
    assert_eq!(ok.reference_uris, ["#5f3a9c2e1b7d4"]);
}

#[test]
fn a_body_id_in_the_wrong_namespace_or_twice_is_refused() {
    // wsu bound to another namespace: 400, not 500.
    let wrong = format!(
        "<s:Envelope xmlns:s=\"{S11}\" xmlns:wsu=\"urn:not-wsu\"><s:Body wsu:Id=\"b\"/></s:Envelope>"
    );
    assert_eq!(code_of(&wrong), "bad_id");
    assert_eq!(code_of(&envelope("", " ID=\"b\"", "")), "bad_id");
    let two = envelope("", " ID=\"a\" wsu:Id=\"b\"", "");
    let e = xml_error(wss(&two));
    assert_eq!(
        e,
        XmlError::AmbiguousId {
            element: "Body".into(),
            line: 1
        }
    );
    assert_eq!(e.code(), "ambiguous_id");
    let same = wss(&envelope("", " ID=\"b\" wsu:Id=\"b\"", "")).expect("same value counts once");
    assert_eq!(same.body_id, "b");
}

#[test]
fn saml_ids_must_be_plain_and_alone() {
    let e = xml_error(saml(AUTHN, Some("xpointer(/)")));
    assert_eq!(e.code(), "bad_id");
    let e = xml_error(saml("<r ID=\"a b\"/>", None));
    assert_eq!(e.code(), "bad_id");
    let e = xml_error(saml("<r ID=\"a\" xml:id=\"b\"/>", None));
    assert_eq!(e.code(), "ambiguous_id");
    // Elsewhere in the document two IDs on one element are payload.
    assert!(saml("<r ID=\"a\"><p ID=\"b\" Id=\"c\"/></r>", None).is_ok());
}

fn with_timestamp() -> String {
    envelope(
        "<s:Header><wsse:Security><wsu:Timestamp wsu:Id=\"TS-1\"><wsu:Created>2026-01-01T00:00:00Z</wsu:Created></wsu:Timestamp></wsse:Security></s:Header>",
        "",
        "<x/>",
    )
}

#[test]
fn an_existing_timestamp_with_a_ttl_is_already_timestamped() {
    let (key, der) = ec_key();
    let opts = WssOptions {
        timestamp_ttl_seconds: Some(300),
        ..WssOptions::new(Algorithm::Es256)
    };
    let result = sign_wss(with_timestamp().as_bytes(), &opts, &der, |d| es256(&key, d));
    let e = xml_error(result);
    assert_eq!(e, XmlError::AlreadyTimestamped);
    assert_eq!(e.code(), "already_timestamped");
}

#[test]
fn an_existing_timestamp_without_a_ttl_is_left_as_sent() -> Result<(), XmlSignError<String>> {
    let signed = wss(&with_timestamp())?;
    assert_eq!(signed.reference_uris.len(), 1);
    assert_eq!(signed.timestamp_id, None);
    assert!(signed.xml.contains("<wsu:Timestamp wsu:Id=\"TS-1\">"));
    Ok(())
}

fn wss_with(xml: &str, limits: XmlLimits) -> Result<WssSigned, XmlSignError<String>> {
    let (key, der) = ec_key();
    let opts = WssOptions {
        limits,
        ..WssOptions::new(Algorithm::Es256)
    };
    sign_wss(xml.as_bytes(), &opts, &der, |d| es256(&key, d))
}

#[test]
fn each_complexity_limit_signs_at_it_and_refuses_past_it() {
    let limits = XmlLimits {
        max_namespaces_in_scope: 6,
        max_namespace_declarations: 8,
        max_attributes_per_element: 5,
        max_elements: 12,
    };
    let wrap = |payload: &str| {
        format!("<s:Envelope xmlns:s=\"{S11}\"><s:Body>{payload}</s:Body></s:Envelope>")
    };
    let ns = |n: usize| {
        (0..n)
            .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
            .collect::<String>()
    };
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=\"v\"")).collect::<String>();
    let cases = [
        // (limit, at it, past it)
        (
            "max_namespaces_in_scope",
            wrap(&format!("<a{}/>", ns(5))),
            wrap(&format!("<a{}/>", ns(6))),
        ),
        (
            "max_namespace_declarations",
            wrap(&format!("<a{}/><b{}/>", ns(4), ns(3))),
            wrap(&format!("<a{}/><b{}/>", ns(4), ns(4))),
        ),
        (
            "max_attributes_per_element",
            wrap(&format!("<a{}/>", attrs(5))),
            wrap(&format!("<a{}/>", attrs(6))),
        ),
        (
            "max_elements",
            wrap(&"<a/>".repeat(10)),
            wrap(&"<a/>".repeat(11)),
        ),
    ];
    for (limit, at, past) in cases {
        if let Err(e) = wss_with(&at, limits) {
            panic!("{limit}: refused at the limit: {e}");
        }
        let e = xml_error(wss_with(&past, limits));
        assert_eq!(e.code(), "xml_too_complex", "{limit}");
        assert!(e.to_string().contains(limit), "{e}");
    }
}

#[test]
fn a_relative_namespace_uri_is_malformed_input_not_an_internal_error() {
    for xml in [
        format!("<s:Envelope xmlns:s=\"{S11}\" xmlns:w=\"relative/uri\"><s:Body><w:x/></s:Body></s:Envelope>"),
        format!("<s:Envelope xmlns:s=\"{S11}\"><s:Body><x xmlns=\"rel\"/></s:Body></s:Envelope>"),
    ] {
        let e = xml_error(wss(&xml));
        assert_eq!(e.code(), "bad_xml", "{e}");
        assert!(e.to_string().contains("relative or malformed namespace URI"), "{e}");
    }
    let e = xml_error(saml(
        "<r xmlns:x=\"relative/uri\" ID=\"a\"><x:y/></r>",
        None,
    ));
    assert_eq!(e.code(), "bad_xml", "{e}");
    // Undeclaring the default namespace is fine.
    assert!(saml("<r xmlns=\"urn:r\" ID=\"a\"><y xmlns=\"\"/></r>", None).is_ok());
}
