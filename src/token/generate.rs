//! Keys born on the token: C_GenerateKeyPair with the protection attributes every stored
//! key gets, the public half read back as a SubjectPublicKeyInfo, the CKA_SIGN switch
//! for key-agreement keys, and an ECDH derivation for their proof.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};

use super::error::TokenError;
use super::family::ModuleFamily;
use crate::cert::{Curve, KeyKind};

/// What the new key is for; decides CKA_SIGN and CKA_DERIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Signing only: CKA_SIGN true, CKA_DERIVE false.
    Sign,
    /// ECDH only, in the end. Generated with CKA_SIGN true as well, because its CSR or
    /// certificate needs one signature by the key itself; [`disable_signing`] then
    /// clears it.
    Agree,
}

/// The named-curve OID, DER-encoded, that goes in CKA_EC_PARAMS.
pub fn curve_params(curve: Curve) -> Vec<u8> {
    let oid = der::oid::ObjectIdentifier::new_unwrap(match curve {
        Curve::P256 => "1.2.840.10045.3.1.7",
        Curve::P384 => "1.3.132.0.34",
        Curve::P521 => "1.3.132.0.35",
    });
    der::Encode::to_der(&oid).expect("an OID encodes")
}

fn curve_nid(curve: Curve) -> Nid {
    match curve {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::P384 => Nid::SECP384R1,
        Curve::P521 => Nid::SECP521R1,
    }
}

/// The key-pair generation mechanism for `kind`.
pub fn pair_gen_mechanism(kind: KeyKind) -> MechanismType {
    match kind {
        KeyKind::Rsa { .. } => MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        KeyKind::Ec { .. } => MechanismType::ECC_KEY_PAIR_GEN,
    }
}

/// Generates a key pair labelled `label` (no CKA_ID yet: it is the SHA-1 of the public
/// key, known only afterwards). Returns (public key, private key).
///
/// The private key is on the token, private, sensitive and never extractable, set
/// explicitly since SoftHSM defaults CKA_SENSITIVE to false.
///
/// Where [`ModuleFamily::decrypt_attribute_breaks_generate`] (tpm2-pkcs11) the templates
/// leave CKA_ENCRYPT and CKA_DECRYPT out; [`clear_decrypt`] then tries to switch
/// decryption off.
pub fn generate_key_pair(
    session: &Session,
    family: ModuleFamily,
    kind: KeyKind,
    key_use: KeyUse,
    label: &str,
) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(true),
        Attribute::Sign(true),
        Attribute::Unwrap(false),
        Attribute::Derive(key_use == KeyUse::Agree),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if !family.decrypt_attribute_breaks_generate() {
        public.push(Attribute::Encrypt(false));
        private.push(Attribute::Decrypt(false));
    }
    let mechanism = match kind {
        KeyKind::Rsa { bits } => {
            public.extend([
                Attribute::ModulusBits((bits as u64).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyKind::Ec { curve } => {
            public.push(Attribute::EcParams(curve_params(curve)));
            Mechanism::EccKeyPairGen
        }
    };
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(TokenError::pkcs11(format!(
            "generating a {kind} key pair (C_GenerateKeyPair)"
        )))
}

/// Reads the public key object back and turns it into an OpenSSL public key (and so a
/// SubjectPublicKeyInfo), for the CSR, the certificate and the proof.
pub fn read_public_key(
    session: &Session,
    public: ObjectHandle,
    kind: KeyKind,
) -> Result<PKey<Public>, TokenError> {
    let bad = |detail: String| TokenError::GeneratedKey { detail };
    match kind {
        KeyKind::Rsa { .. } => {
            let attrs = session
                .get_attributes(
                    public,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(TokenError::pkcs11("reading the new RSA public key"))?;
            let (mut n, mut e) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(bad("the token returned no modulus or exponent".into()));
            };
            let rsa = BigNum::from_slice(&n)
                .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                .and_then(|(n, e)| openssl::rsa::Rsa::from_public_components(n, e))
                .and_then(PKey::from_rsa)
                .map_err(|err| bad(err.to_string()))?;
            Ok(rsa)
        }
        KeyKind::Ec { curve } => {
            let attrs = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(TokenError::pkcs11("reading the new EC public key"))?;
            let point = attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(v) => Some(v),
                    _ => None,
                })
                .ok_or_else(|| bad("the token returned no CKA_EC_POINT".into()))?;
            ec_public_key(curve, &point).map_err(bad)
        }
    }
}

/// CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (PKCS#11 2.40);
/// some tokens return the bare point, so both are accepted.
fn ec_public_key(curve: Curve, ck_point: &[u8]) -> Result<PKey<Public>, String> {
    let raw = match der::Decode::from_der(ck_point) {
        Ok(octets) => der::asn1::OctetString::into_bytes(octets),
        Err(_) => ck_point.to_vec(),
    };
    let group = EcGroup::from_curve_name(curve_nid(curve)).map_err(|e| e.to_string())?;
    let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
    let point = EcPoint::from_bytes(&group, &raw, &mut ctx)
        .map_err(|e| format!("CKA_EC_POINT is not a {} point: {e}", curve.name()))?;
    EcKey::from_public_key(&group, &point)
        .and_then(PKey::from_ec_key)
        .map_err(|e| e.to_string())
}

/// Sets CKA_ID and CKA_SUBJECT (DER name) on the new objects, as import does for its
/// key and public key: the ID is known only once the public key is.
pub fn identify(
    session: &Session,
    objects: &[ObjectHandle],
    id: &[u8],
    subject: &[u8],
) -> Result<(), TokenError> {
    for &object in objects {
        session
            .update_attributes(
                object,
                &[
                    Attribute::Id(id.to_vec()),
                    Attribute::Subject(subject.to_vec()),
                ],
            )
            .map_err(TokenError::pkcs11(
                "setting CKA_ID and CKA_SUBJECT on the new key",
            ))?;
    }
    Ok(())
}

/// Clears CKA_SIGN on a key-agreement key and reads it back. `Ok(true)` when the token
/// now says CKA_SIGN is false; `Ok(false)` when it refused the change (C_SetAttributeValue
/// failed) or accepted it but still reports true.
pub fn disable_signing(session: &Session, key: ObjectHandle) -> Result<bool, TokenError> {
    if let Err(e) = session.update_attributes(key, &[Attribute::Sign(false)]) {
        tracing::warn!(error = %e, "the token refused to clear CKA_SIGN on the new key");
        return Ok(false);
    }
    let sign = session
        .get_attributes(key, &[AttributeType::Sign])
        .map_err(TokenError::pkcs11("reading CKA_SIGN back"))?
        .into_iter()
        .any(|a| matches!(a, Attribute::Sign(true)));
    Ok(!sign)
}

/// Clears CKA_DECRYPT on a new key where the token made it true (tpm2-pkcs11). Returns
/// whether the key can still decrypt, as the token reports it afterwards.
pub fn clear_decrypt(session: &Session, key: ObjectHandle) -> Result<bool, TokenError> {
    let decrypts = |session: &Session| -> Result<bool, TokenError> {
        Ok(session
            .get_attributes(key, &[AttributeType::Decrypt])
            .map_err(TokenError::pkcs11("reading CKA_DECRYPT of the new key"))?
            .into_iter()
            .any(|a| matches!(a, Attribute::Decrypt(true))))
    };
    if !decrypts(session)? {
        return Ok(false);
    }
    if let Err(e) = session.update_attributes(key, &[Attribute::Decrypt(false)]) {
        tracing::info!(error = %e, "the token keeps CKA_DECRYPT true on the new key");
    }
    decrypts(session)
}
