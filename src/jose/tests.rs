//! Unit tests with software keys: every refusal with its code, the header and claims as
//! built, and the token's answer checked (a DER ECDSA signature, a wrong key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use time::macros::datetime;

use super::*;
use crate::algorithm::Algorithm;
use crate::algorithm::Scheme;

fn cert_for<T: HasPublic>(public: &PKeyRef<T>, signer: &PKey<Private>) -> Vec<u8> {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "gsko.przykladowo.pl")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(9).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(public).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

struct Key {
    key: PKey<Private>,
    der: Vec<u8>,
}

impl Key {
    fn rsa() -> Self {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        Key {
            der: cert_for(&key, &key),
            key,
        }
    }

    fn ec(nid: Nid) -> Self {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        Key {
            der: cert_for(&key, &key),
            key,
        }
    }

    /// What the token does: hash, sign, ECDSA as raw R || S.
    fn signer(&self, alg: Algorithm) -> impl FnOnce(&[u8]) -> Result<Vec<u8>, String> + '_ {
        move |data| {
            let digest = alg.hash().digest(data);
            match alg.scheme() {
                Scheme::Ecdsa => {
                    let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &*self.key.ec_key().unwrap())
                        .unwrap();
                    // The field size: 32, 48 or 66 bytes (P-521 is not 64).
                    let len = match alg {
                        Algorithm::Es512 => 66,
                        _ => alg.hash().output_len() as i32,
                    };
                    let mut raw = sig.r().to_vec_padded(len).unwrap();
                    raw.extend(sig.s().to_vec_padded(len).unwrap());
                    Ok(raw)
                }
                _ => {
                    let mut s = openssl::sign::Signer::new(alg.hash().md(), &self.key).unwrap();
                    if alg.scheme() == Scheme::RsaPss {
                        s.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS).unwrap();
                        s.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)
                            .unwrap();
                    }
                    Ok(s.sign_oneshot_to_vec(data).unwrap())
                }
            }
        }
    }
}

fn parts(jws: &str) -> (String, Vec<u8>, Vec<u8>) {
    let p: Vec<&str> = jws.split('.').collect();
    assert_eq!(p.len(), 3);
    (
        String::from_utf8(URL_SAFE_NO_PAD.decode(p[0]).unwrap()).unwrap(),
        URL_SAFE_NO_PAD.decode(p[1]).unwrap(),
        URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
    )
}

fn jws_err(key: &Key, payload: Payload, opts: JwsOptions) -> JoseError {
    let alg = opts.algorithm.unwrap_or(Algorithm::Rs256);
    match sign_jws(payload, &opts, &key.der, &[], key.signer(alg)) {
        Err(SignFailure::Jose(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_json_payload_is_signed_as_sent_and_the_header_is_in_order() {
    let key = Key::rsa();
    let payload = r#"{"z":1.50,"a":12345678901234567890123,"ą":"ż"}"#;
    let opts = JwsOptions {
        header: Some(r#"{"typ":"JWT","cty":"x"}"#),
        include: &[Include::X5tS256, Include::Kid, Include::X5c],
        ..Default::default()
    };
    let chain = vec![key.der.clone()];
    let jws = sign_jws(
        Payload::Json(payload),
        &opts,
        &key.der,
        &chain,
        key.signer(Algorithm::Rs256),
    )
    .unwrap();
    let (header, body, sig) = parts(&jws.jws);
    assert_eq!(body, payload.as_bytes());
    assert_eq!(header, jws.protected_header);
    let kid = thumbprint(&key.der).unwrap();
    let x5t = URL_SAFE_NO_PAD.encode(openssl::sha::sha256(&key.der));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key.der);
    assert_eq!(
        header,
        format!(
            r#"{{"alg":"RS256","typ":"JWT","cty":"x","x5t#S256":"{x5t}","kid":"{kid}","x5c":["{b64}","{b64}"]}}"#
        )
    );
    let input = jws.jws.rsplit_once('.').unwrap().0;
    let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &key.key).unwrap();
    assert!(v.verify_oneshot(&sig, input.as_bytes()).unwrap());
}

#[test]
fn every_algorithm_signs_with_a_key_that_fits() {
    let rsa = Key::rsa();
    for alg in [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
    ] {
        let opts = JwsOptions {
            algorithm: Some(alg),
            ..Default::default()
        };
        let jws = sign_jws(
            Payload::Base64("AAEC"),
            &opts,
            &rsa.der,
            &[],
            rsa.signer(alg),
        )
        .unwrap();
        assert_eq!(parts(&jws.jws).1, [0, 1, 2]);
    }
    for (nid, alg, len) in [
        (Nid::X9_62_PRIME256V1, Algorithm::Es256, 64),
        (Nid::SECP384R1, Algorithm::Es384, 96),
        (Nid::SECP521R1, Algorithm::Es512, 132),
    ] {
        let ec = Key::ec(nid);
        let jws = sign_jws(
            Payload::Json("{}"),
            &JwsOptions::default(),
            &ec.der,
            &[],
            ec.signer(alg),
        )
        .unwrap();
        assert_eq!(jws.algorithm, alg, "the curve's algorithm is the default");
        assert_eq!(parts(&jws.jws).2.len(), len);
    }
}

#[test]
fn a_der_ecdsa_signature_or_a_wrong_key_is_refused() {
    let ec = Key::ec(Nid::X9_62_PRIME256V1);
    let der = |data: &[u8]| -> Result<Vec<u8>, String> {
        let digest = Algorithm::Es256.hash().digest(data);
        Ok(
            openssl::ecdsa::EcdsaSig::sign(&digest, &*ec.key.ec_key().unwrap())
                .unwrap()
                .to_der()
                .unwrap(),
        )
    };
    let got = sign_jws(
        Payload::Json("{}"),
        &JwsOptions::default(),
        &ec.der,
        &[],
        der,
    );
    assert!(matches!(
        got,
        Err(SignFailure::Jose(JoseError::SignatureMismatch))
    ));
    let other = Key::rsa();
    let rsa = Key::rsa();
    let got = sign_jws(
        Payload::Json("{}"),
        &JwsOptions::default(),
        &rsa.der,
        &[],
        other.signer(Algorithm::Rs256),
    );
    let err = match got {
        Err(SignFailure::Jose(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(err.code(), "signature_mismatch");
    assert!(!err.is_caller_fault());
}

#[test]
fn a_token_failure_is_passed_on() {
    let rsa = Key::rsa();
    let got = sign_jws(
        Payload::Json("{}"),
        &JwsOptions::default(),
        &rsa.der,
        &[],
        |_| Err::<Vec<u8>, _>("CKR_DEVICE_ERROR"),
    );
    assert!(matches!(got, Err(SignFailure::Token("CKR_DEVICE_ERROR"))));
}

#[test]
fn header_refusals_have_their_codes() {
    let key = Key::rsa();
    for (header, include, code) in [
        (r#"{"alg":"none"}"#, &[][..], "bad_header"),
        (r#"{"crit":["b64"]}"#, &[][..], "bad_header"),
        (r#"{"b64":false}"#, &[][..], "bad_header"),
        (r#"{"kid":"mine"}"#, &[Include::Kid][..], "header_conflict"),
        (r#"{"x5c":[]}"#, &[Include::X5c][..], "header_conflict"),
        (r#"{"typ":"JWT","typ":"JOSE"}"#, &[][..], "duplicate_key"),
        (r#"["typ"]"#, &[][..], "not_an_object"),
        (r#"{"typ":"#, &[][..], "bad_json"),
    ] {
        let opts = JwsOptions {
            header: Some(header),
            include,
            ..Default::default()
        };
        let err = jws_err(&key, Payload::Json("{}"), opts);
        assert_eq!(err.code(), code, "{header}: {err}");
        assert!(err.is_caller_fault());
    }
    // The caller may set kid when include does not.
    let opts = JwsOptions {
        header: Some(r#"{"kid":"mine"}"#),
        ..Default::default()
    };
    assert!(sign_jws(
        Payload::Json("{}"),
        &opts,
        &key.der,
        &[],
        key.signer(Algorithm::Rs256)
    )
    .is_ok());
}

#[test]
fn payload_and_algorithm_refusals_have_their_codes() {
    let rsa = Key::rsa();
    let ec = Key::ec(Nid::SECP384R1);
    let def = JwsOptions::default();
    assert_eq!(
        jws_err(&rsa, Payload::Json(r#"{"a":1,"a":1}"#), def).code(),
        "duplicate_key"
    );
    assert_eq!(
        jws_err(&rsa, Payload::Json("[1]"), def).code(),
        "not_an_object"
    );
    assert_eq!(jws_err(&rsa, Payload::Json("{"), def).code(), "bad_json");
    assert_eq!(
        jws_err(&rsa, Payload::Base64("AA-_"), def).code(),
        "bad_payload_base64"
    );
    assert_eq!(
        jws_err(&rsa, Payload::Base64("AAE"), def).code(),
        "bad_payload_base64"
    );
    let with = |algorithm| JwsOptions {
        algorithm: Some(algorithm),
        ..Default::default()
    };
    assert_eq!(
        jws_err(&rsa, Payload::Json("{}"), with(Algorithm::Rs1)).code(),
        "unsupported_algorithm"
    );
    assert_eq!(
        jws_err(&rsa, Payload::Json("{}"), with(Algorithm::Es256)).code(),
        "algorithm_mismatch"
    );
    let err = jws_err(&ec, Payload::Json("{}"), with(Algorithm::Es256));
    assert_eq!(err.code(), "algorithm_mismatch");
    assert_eq!(
        err.to_string(),
        "algorithm ES256 does not fit the certificate's EC P-384 key"
    );
    assert_eq!(
        jws_err(&ec, Payload::Json("{}"), with(Algorithm::Rs256)).code(),
        "algorithm_mismatch"
    );
    let err = sign_jws(
        Payload::Json("{}"),
        &def,
        b"not a certificate",
        &[],
        rsa.signer(Algorithm::Rs256),
    );
    assert!(matches!(
        err,
        Err(SignFailure::Jose(JoseError::BadCertificate(_)))
    ));
    let opts = JwsOptions {
        include: &[Include::X5c],
        ..Default::default()
    };
    let err = sign_jws(
        Payload::Json("{}"),
        &opts,
        &rsa.der,
        &[b"junk".to_vec()],
        rsa.signer(Algorithm::Rs256),
    );
    assert!(matches!(
        err,
        Err(SignFailure::Jose(JoseError::BadCertificate(_)))
    ));
}

#[test]
fn include_names_parse_exactly() {
    assert_eq!(Include::parse("x5t#S256"), Ok(Include::X5tS256));
    assert_eq!(Include::parse("kid"), Ok(Include::Kid));
    assert_eq!(Include::parse("x5c"), Ok(Include::X5c));
    for bad in ["KID", "x5t", "jwk", ""] {
        assert_eq!(Include::parse(bad).unwrap_err().code(), "bad_include");
    }
}

fn request<'a>(claims: Option<&'a str>, lifetime: Option<u32>) -> AssertionRequest<'a> {
    AssertionRequest {
        client_id: "AE:PL-12345-67890-ABCDE-12",
        audience: "https://edoreczenia.example/oauth2/token",
        lifetime_seconds: lifetime,
        claims,
        now: datetime!(2026-12-07 15:00:00.75 UTC),
        jws: JwsOptions::default(),
    }
}

#[test]
fn the_client_assertion_sets_the_rfc_7523_claims() {
    let key = Key::rsa();
    let req = request(Some(r#"{"scope":"ua","n":1.0}"#), None);
    let a = client_assertion(&req, &key.der, &[], key.signer(Algorithm::Rs256)).unwrap();
    let (_, body, _) = parts(&a.jws.jws);
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"iss":"AE:PL-12345-67890-ABCDE-12","sub":"AE:PL-12345-67890-ABCDE-12","aud":"https://edoreczenia.example/oauth2/token","iat":1796655600,"nbf":1796655600,"exp":1796655660,"jti":"{}","scope":"ua","n":1.0}}"#,
            a.jti
        )
    );
    assert_eq!(a.jti.len(), 32);
    assert!(a.jti.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.expires_at, datetime!(2026-12-07 15:01:00 UTC));
    assert_eq!(a.issued_at, datetime!(2026-12-07 15:00:00 UTC));
    let b = client_assertion(&req, &key.der, &[], key.signer(Algorithm::Rs256)).unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn client_assertion_refusals_have_their_codes() {
    let key = Key::rsa();
    let fails = |req: AssertionRequest| match client_assertion(
        &req,
        &key.der,
        &[],
        key.signer(Algorithm::Rs256),
    ) {
        Err(SignFailure::Jose(e)) => e,
        other => panic!("{other:?}"),
    };
    for claim in assertion::SET_CLAIMS {
        let claims = format!(r#"{{"x":1,"{claim}":"https://evil.example"}}"#);
        let err = fails(request(Some(&claims), None));
        assert_eq!(err.code(), "claims_override");
        assert!(err.to_string().contains(&format!("{claim:?}")), "{err}");
    }
    let err = fails(request(None, Some(301)));
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            "lifetime_too_long",
            "lifetime_seconds 301 is too long: at most 300 seconds"
        )
    );
    assert!(client_assertion(
        &request(None, Some(300)),
        &key.der,
        &[],
        key.signer(Algorithm::Rs256)
    )
    .is_ok());
    assert_eq!(fails(request(None, Some(0))).code(), "bad_lifetime");
    assert_eq!(
        fails(request(Some(r#"{"a":1,"a":2}"#), None)).code(),
        "duplicate_key"
    );
    assert_eq!(fails(request(Some("[]"), None)).code(), "not_an_object");
    let mut req = request(None, None);
    req.client_id = "";
    assert_eq!(fails(req).code(), "missing_field");
    let mut req = request(None, None);
    req.audience = "";
    assert_eq!(fails(req).code(), "missing_field");
}

/// RFC 7638 §3.1's example key and thumbprint, in a certificate signed by another key.
#[test]
fn the_thumbprint_matches_rfc_7638s_example() {
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let public = Rsa::from_public_components(
        BigNum::from_slice(&URL_SAFE_NO_PAD.decode(n).unwrap()).unwrap(),
        BigNum::from_u32(65537).unwrap(),
    )
    .unwrap();
    let public = PKey::from_rsa(public).unwrap();
    let der = cert_for(&public, &Key::rsa().key);
    assert_eq!(
        thumbprint(&der).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    let jwk = jwk(&der, &[], KeyUse::Sig).unwrap();
    assert_eq!(
        (jwk.n.as_deref(), jwk.e.as_deref()),
        (Some(n), Some("AQAB"))
    );
}

#[test]
fn the_jwk_of_an_ec_key_pads_its_coordinates() {
    let key = Key::ec(Nid::SECP521R1);
    let jwk = jwk(&key.der, &[], KeyUse::Enc).unwrap();
    let value = serde_json::to_value(&jwk).unwrap();
    assert_eq!(value["kty"], "EC");
    assert_eq!(value["crv"], "P-521");
    assert_eq!(value["use"], "enc");
    assert_eq!(URL_SAFE_NO_PAD.decode(jwk.x.unwrap()).unwrap().len(), 66);
    assert_eq!(URL_SAFE_NO_PAD.decode(jwk.y.unwrap()).unwrap().len(), 66);
    assert!(value.get("n").is_none());
    assert_eq!(value["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(value["kid"], thumbprint(&key.der).unwrap());
}

#[test]
fn keys_jose_does_not_carry_are_refused() {
    let ed = PKey::generate_ed25519().unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "ed25519")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&ed).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&ed, MessageDigest::null()).unwrap();
    let ed_der = b.build().to_der().unwrap();
    let k1 = Key::ec(Nid::SECP256K1);
    for der in [&ed_der, &k1.der] {
        let err = jwk(der, &[], KeyUse::Sig).unwrap_err();
        assert_eq!(err.code(), "unsupported_key", "{err}");
        assert!(!err.is_caller_fault());
        let got = sign_jws(
            Payload::Json("{}"),
            &JwsOptions::default(),
            der,
            &[],
            |_| Ok::<_, String>(Vec::new()),
        );
        assert!(matches!(
            got,
            Err(SignFailure::Jose(JoseError::UnsupportedKey(_)))
        ));
    }
}

/// [`check_jws`] and [`check_assertion`], which the HTTP handlers run before they look at
/// the algorithm or the key, refuse what signing refuses in the caller's input, with the
/// same codes, and pass what signs.
#[test]
fn the_checks_without_a_certificate_refuse_what_signing_refuses() {
    let key = Key::rsa();
    let cases: [(Payload, Option<&str>, &[Include]); 7] = [
        (Payload::Json(r#"{"a":1,"a":1}"#), None, &[]),
        (Payload::Json("[1]"), None, &[]),
        (Payload::Base64("AA-_"), None, &[]),
        (Payload::Json("{}"), Some(r#"{"alg":"none"}"#), &[]),
        (Payload::Json("{}"), Some(r#"{"crit":["b64"]}"#), &[]),
        (Payload::Json("{}"), Some(r#"{"kid":"k"}"#), &[Include::Kid]),
        (Payload::Json("{}"), Some(r#"{"typ":1,"typ":2}"#), &[]),
    ];
    for (payload, header, include) in cases {
        let opts = JwsOptions {
            header,
            include,
            ..Default::default()
        };
        let checked = check_jws(payload, &opts).unwrap_err();
        assert_eq!(
            checked,
            jws_err(&key, payload, opts),
            "{payload:?} {header:?}"
        );
    }
    let opts = JwsOptions {
        header: Some(r#"{"typ":"JOSE"}"#),
        include: &[Include::Kid, Include::X5c],
        ..Default::default()
    };
    assert!(check_jws(Payload::Json(r#"{"n":1.50}"#), &opts).is_ok());

    let mut refused = vec![
        request(Some(r#"{"aud":"https://evil.example"}"#), None),
        request(None, Some(301)),
        request(None, Some(0)),
        request(Some(r#"{"a":1,"a":2}"#), None),
        request(None, None),
        request(None, None),
    ];
    refused[4].client_id = "";
    refused[5].jws.header = Some(r#"{"b64":false}"#);
    for req in refused {
        let checked = check_assertion(&req).unwrap_err();
        match client_assertion(&req, &key.der, &[], key.signer(Algorithm::Rs256)) {
            Err(SignFailure::Jose(e)) => assert_eq!(checked, e),
            other => panic!("{other:?}"),
        }
    }
    assert!(check_assertion(&request(Some(r#"{"scope":"ua"}"#), Some(300))).is_ok());
}
