//! Proof that a key on the token works: it signs a fresh random challenge, the signature
//! verifies in software (OpenSSL) against the certificate, and the key's protection
//! attributes read back as they must be.

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use openssl::x509::X509Ref;
use serde::Serialize;

use crate::algorithm::Algorithm;
use crate::cert::KeyKind;
use crate::token::{read_key_attrs, sign_digest, KeyAttrs, TokenError};

/// What the proof found.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// Whether the signature verified against the certificate.
    pub signature_verified: bool,
    /// The key's attributes as read back.
    pub attributes: KeyAttrs,
}

impl Proof {
    /// True when the key signs correctly and is stored as a key must be.
    pub fn passed(&self) -> bool {
        self.failure().is_none()
    }

    /// Why the proof failed, in words; `None` when it passed.
    pub fn failure(&self) -> Option<String> {
        let mut why: Vec<&str> = problems(&self.attributes);
        if !self.signature_verified {
            why.insert(
                0,
                "the token's signature does not verify against the certificate",
            );
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// What is wrong with how a key is stored, in words; empty when nothing is.
pub fn problems(a: &KeyAttrs) -> Vec<&'static str> {
    {
        let mut out = Vec::new();
        if !a.sensitive {
            out.push("CKA_SENSITIVE is false");
        }
        if a.extractable {
            out.push("CKA_EXTRACTABLE is true");
        }
        if !a.private {
            out.push("CKA_PRIVATE is false");
        }
        if !a.token {
            out.push("CKA_TOKEN is false (the key would vanish with the session)");
        }
        // A key-agreement key (CKA_DERIVE, from `generate --purpose decrypt`) is meant
        // not to sign.
        if !a.sign && !a.derive {
            out.push("CKA_SIGN is false");
        }
        if a.private_value_readable {
            out.push("the private key value can be read from the token");
        }
        out
    }
}

/// Signs a fresh 32-byte random challenge with `key` and verifies it against `cert`.
pub fn prove(
    session: &Session,
    key: ObjectHandle,
    kind: KeyKind,
    cert: &X509Ref,
) -> Result<Proof, TokenError> {
    let algorithm = Algorithm::proof_for(kind);
    let mut challenge = [0u8; 32];
    openssl::rand::rand_bytes(&mut challenge).expect("OpenSSL's RNG works");
    let digest = algorithm.hash().digest(&challenge);
    let signature = sign_digest(session, key, algorithm, &digest)?;
    let signature_verified = cert
        .public_key()
        .and_then(|pk| crate::algorithm::verify_digest(&pk, algorithm, &digest, &signature))
        .unwrap_or(false);
    Ok(Proof {
        algorithm,
        signature_verified,
        attributes: read_key_attrs(session, key, kind)?,
    })
}
