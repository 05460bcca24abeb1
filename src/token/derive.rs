//! ECDH on the token: the shared secret Z for a peer's point, the one private-key
//! operation behind WK's encrypted assertions.
//!
//! C_DeriveKey with CKM_ECDH1_DERIVE and the NULL KDF gives Z as a session
//! CKK_GENERIC_SECRET object; its CKA_VALUE is read once and the object destroyed at
//! once. The KDF runs in software: SoftHSM 2.6.1 offers only the NULL KDF, and the
//! token KDFs (CKD_SHA256_KDF is X9.63) are not XML Encryption's ConcatKDF anyway.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use super::error::TokenError;

/// The length of Z for P-256: the x coordinate of the shared point.
pub const P256_SECRET_LEN: usize = 32;

/// Checks that the token offers CKM_ECDH1_DERIVE, from its C_GetMechanismList.
pub fn check_derive_mechanism(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    purpose: &str,
) -> Result<(), TokenError> {
    let offered = ctx
        .get_mechanism_list(slot)
        .map_err(TokenError::pkcs11(format!(
            "reading the mechanism list of token \"{token}\""
        )))?;
    if offered.contains(&MechanismType::ECDH1_DERIVE) {
        Ok(())
    } else {
        Err(TokenError::MechanismMissing {
            token: token.into(),
            mechanism: MechanismType::ECDH1_DERIVE.to_string(),
            purpose: purpose.into(),
        })
    }
}

/// Z = ECDH(`key`, `point`) on the token. `point` must be an uncompressed P-256 point
/// the caller has already checked is on the curve: the token is never handed an
/// invalid-curve point.
pub fn ecdh_derive(
    session: &Session,
    key: ObjectHandle,
    point: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let params = Ecdh1DeriveParams::new(EcKdf::null(), point);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::ValueLen((P256_SECRET_LEN as u64).into()),
    ];
    let secret = session
        .derive_key(&Mechanism::Ecdh1Derive(params), key, &template)
        .map_err(TokenError::pkcs11(
            "deriving the ECDH secret (CKM_ECDH1_DERIVE into a session CKK_GENERIC_SECRET with CKA_SENSITIVE false, CKA_EXTRACTABLE true)",
        ))?;
    let value = read_value(session, secret);
    // Destroyed whatever the read gave: Z must not outlive this call on the token.
    let destroyed = session
        .destroy_object(secret)
        .map_err(TokenError::pkcs11("destroying the derived ECDH secret"));
    let value = value?;
    destroyed?;
    Ok(value)
}

fn read_value(session: &Session, secret: ObjectHandle) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let attrs = session
        .get_attributes(secret, &[AttributeType::Value])
        .map_err(TokenError::pkcs11(
            "reading CKA_VALUE of the derived ECDH secret",
        ))?;
    let mut value = Zeroizing::new(Vec::new());
    for attr in attrs {
        if let Attribute::Value(mut v) = attr {
            std::mem::swap(&mut *value, &mut v);
        }
    }
    if value.len() != P256_SECRET_LEN {
        return Err(TokenError::BadObject {
            label: String::new(),
            token: String::new(),
            detail: format!(
                "the token refused to reveal CKA_VALUE of the derived ECDH secret (got {} bytes, want {P256_SECRET_LEN}): it must allow a session CKK_GENERIC_SECRET with CKA_SENSITIVE false and CKA_EXTRACTABLE true",
                value.len()
            ),
        });
    }
    Ok(value)
}
