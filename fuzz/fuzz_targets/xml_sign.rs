//! A whole document through `xml::sign_wss` or `xml::sign_saml`, as a hostile caller may
//! send it to `wss/sign` or `saml/sign`, signed by a software P-256 key. The first byte
//! chooses the profile and its options; the rest is the document. Besides not panicking,
//! not hanging and not blowing up (libFuzzer's -timeout and -rss_limit_mb), no input may
//! end in an internal error: with a signer that always works, `xml_internal` means the
//! re-parse check found the returned bytes differ from what was signed, or libxml2 failed
//! where it should not.
#![no_main]

use std::sync::OnceLock;

use hsm_signer::algorithm::{Algorithm, Hash};
use hsm_signer::xml::{sign_saml, sign_wss, SamlOptions, XmlSignError, WssOptions, XmlError};
use libfuzzer_sys::fuzz_target;
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509};

/// One key and certificate for the whole run: making them per input would be most of
/// the work.
fn key() -> &'static (PKey<Private>, Vec<u8>) {
    static KEY: OnceLock<(PKey<Private>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "fuzz").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let der = b.build().to_der().unwrap();
        (key, der)
    })
}

/// ES256 as the token does it: raw r‖s over SHA-256 of the bytes.
fn es256(data: &[u8]) -> Result<Vec<u8>, String> {
    let digest = Hash::Sha256.digest(data);
    let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &*key().0.ec_key().unwrap())
        .map_err(|e| e.to_string())?;
    let mut raw = sig.r().to_vec_padded(32).unwrap();
    raw.extend(sig.s().to_vec_padded(32).unwrap());
    Ok(raw)
}

fn check<T>(result: Result<T, XmlSignError<String>>) {
    match result {
        Ok(_) => {}
        Err(XmlSignError::Xml(XmlError::Internal(why))) => panic!("internal error: {why}"),
        Err(XmlSignError::Xml(_)) => {}
        Err(XmlSignError::Token(why)) => panic!("the software signer failed: {why}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, document)) = input.split_first() else {
        return;
    };
    let der = &key().1;
    match choice % 4 {
        0 => check(sign_wss(document, &WssOptions::new(Algorithm::Es256), der, es256)),
        1 => {
            let opts = WssOptions {
                timestamp_ttl_seconds: Some(300),
                ..WssOptions::new(Algorithm::Es256)
            };
            check(sign_wss(document, &opts, der, es256));
        }
        2 => check(sign_saml(document, &SamlOptions::new(Algorithm::Es256), der, es256)),
        _ => {
            // The ID to sign: the first line of the document, when there is one.
            let text = String::from_utf8_lossy(document);
            let (id, rest) = text.split_once('\n').unwrap_or(("_a", &text));
            let opts = SamlOptions {
                reference_id: Some(id.to_owned()),
                ..SamlOptions::new(Algorithm::Es256)
            };
            check(sign_saml(rest.as_bytes(), &opts, der, es256));
        }
    }
});
