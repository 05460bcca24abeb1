//! The private-key operation: a digest in, a signature out.
//!
//! Only the raw mechanisms are used (CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS,
//! CKM_ECDSA), with hashing done by the caller; see [`crate::algorithm`] for why.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use super::error::TokenError;
use crate::algorithm::{Algorithm, Hash, Scheme};

fn mechanism_type(scheme: Scheme) -> MechanismType {
    match scheme {
        Scheme::RsaPkcs1 => MechanismType::RSA_PKCS,
        Scheme::RsaPss => MechanismType::RSA_PKCS_PSS,
        Scheme::Ecdsa => MechanismType::ECDSA,
    }
}

fn pss_params(hash: Hash) -> PkcsPssParams {
    let (hash_alg, mgf) = match hash {
        Hash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    };
    PkcsPssParams {
        hash_alg,
        mgf,
        s_len: (hash.output_len() as u64).into(),
    }
}

/// Checks that the token offers the mechanism each of `algorithms` needs, from its
/// C_GetMechanismList, rather than assuming.
pub fn check_mechanisms(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    purpose: &str,
    algorithms: &[Algorithm],
) -> Result<(), TokenError> {
    let offered = ctx
        .get_mechanism_list(slot)
        .map_err(TokenError::pkcs11(format!(
            "reading the mechanism list of token \"{token}\""
        )))?;
    for alg in algorithms {
        let needed = mechanism_type(alg.scheme());
        if !offered.contains(&needed) {
            return Err(TokenError::MechanismMissing {
                token: token.into(),
                mechanism: needed.to_string(),
                purpose: format!("{alg} for {purpose}"),
            });
        }
    }
    Ok(())
}

/// Signs `digest` (already hashed with `alg`'s hash) with `key`. ECDSA signatures come
/// back raw `r || s`, as PKCS#11 and XML-DSig both define them.
pub fn sign_digest(
    session: &Session,
    key: ObjectHandle,
    alg: Algorithm,
    digest: &[u8],
) -> Result<Vec<u8>, TokenError> {
    let hash = alg.hash();
    let result = match alg.scheme() {
        Scheme::RsaPkcs1 => {
            let mut input = Zeroizing::new(hash.digest_info_prefix().to_vec());
            input.extend_from_slice(digest);
            session.sign(&Mechanism::RsaPkcs, key, &input)
        }
        Scheme::RsaPss => session.sign(&Mechanism::RsaPkcsPss(pss_params(hash)), key, digest),
        Scheme::Ecdsa => session.sign(&Mechanism::Ecdsa, key, digest),
    };
    result.map_err(TokenError::pkcs11(format!("signing with {alg}")))
}
