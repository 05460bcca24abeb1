//! The proof a generated key gives before it takes its label: a signature verified by
//! OpenSSL for a signing key, an ECDH secret equal to OpenSSL's for a decryption key,
//! and the attributes its purpose requires.

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use openssl::pkey::{PKey, Public};
use serde::Serialize;

use super::error::GenerateError;
use crate::algorithm::{verify_digest, Algorithm};
use crate::config::Purpose;
use crate::token::{ecdh_derive, sign_digest, KeyAttrs};

/// How the key proved itself.
#[derive(Debug, Clone, Serialize)]
pub struct GenProof {
    /// "signature" or "ecdh".
    pub method: &'static str,
    /// The signature algorithm, for a signature proof.
    pub algorithm: Option<Algorithm>,
    /// Whether the software side agreed.
    pub verified: bool,
}

/// What is wrong with the new key's attributes for its purpose; empty when nothing is.
pub(super) fn attribute_problems(a: &KeyAttrs, purpose: Purpose, dual_use: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut want = |ok: bool, what: &str| {
        if !ok {
            out.push(what.into());
        }
    };
    want(a.sensitive, "CKA_SENSITIVE is false");
    want(!a.extractable, "CKA_EXTRACTABLE is true");
    want(a.private, "CKA_PRIVATE is false");
    want(a.token, "CKA_TOKEN is false");
    want(
        !a.private_value_readable,
        "the private key value can be read from the token",
    );
    match purpose {
        Purpose::Sign => {
            want(a.sign, "CKA_SIGN is false");
            want(!a.derive, "CKA_DERIVE is true on a signing key");
        }
        Purpose::Decrypt => {
            want(a.derive, "CKA_DERIVE is false");
            want(dual_use || !a.sign, "CKA_SIGN is still true");
        }
    }
    out
}

/// Signs a fresh random challenge on the token and verifies it with OpenSSL against the
/// public key read from the token.
pub(super) fn prove_signature(
    session: &Session,
    key: ObjectHandle,
    algorithm: Algorithm,
    public: &PKey<Public>,
) -> Result<GenProof, GenerateError> {
    let mut challenge = [0u8; 32];
    openssl::rand::rand_bytes(&mut challenge).expect("OpenSSL's RNG works");
    let digest = algorithm.hash().digest(&challenge);
    let signature = sign_digest(session, key, algorithm, &digest)?;
    Ok(GenProof {
        method: "signature",
        algorithm: Some(algorithm),
        verified: verify_digest(public, algorithm, &digest, &signature).unwrap_or(false),
    })
}

/// ECDH between the token's key and a fresh software P-256 key: the token's shared
/// secret must equal the one OpenSSL computes from the token's public key.
pub(super) fn prove_ecdh(
    session: &Session,
    key: ObjectHandle,
    public: &PKey<Public>,
) -> Result<GenProof, GenerateError> {
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    let software = || -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
        let ephemeral = EcKey::generate(&group)?;
        let mut ctx = openssl::bn::BigNumContext::new()?;
        let point =
            ephemeral
                .public_key()
                .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
        let ephemeral = PKey::from_ec_key(ephemeral)?;
        let mut deriver = openssl::derive::Deriver::new(&ephemeral)?;
        deriver.set_peer(public)?;
        Ok((point, deriver.derive_to_vec()?))
    };
    let (point, expected) = software().map_err(|e| GenerateError::ProofFailed {
        why: format!("the software side of the ECDH proof failed: {e}"),
    })?;
    let expected = zeroize::Zeroizing::new(expected);
    let z = ecdh_derive(session, key, &point)?;
    Ok(GenProof {
        method: "ecdh",
        algorithm: None,
        verified: z.len() == expected.len() && openssl::memcmp::eq(&z, &expected),
    })
}
