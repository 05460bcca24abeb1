//! What is on a token: list its keys, prove one, remove one.

use cryptoki::object::ObjectHandle;

use crate::cert::CertInfo;
use crate::proof::prove;
use crate::report::{KeyReport, ReportError};
use crate::token::{find_objects, OpenToken, StoredKey, TokenError};

/// Why an inventory command failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The token failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A report could not be made.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The key did not prove itself.
    #[error("the key \"{label}\" on token \"{token}\" failed its proof: {why}")]
    ProofFailed {
        /// The label.
        label: String,
        /// The token.
        token: String,
        /// What failed.
        why: String,
    },
}

/// One entry of `list`: a key described, or why it could not be.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Listed {
    /// A key with its certificate.
    Key(Box<KeyReport>),
    /// A key that could not be described (no certificate, say).
    Problem {
        /// What is wrong.
        problem: String,
    },
}

/// Every private key on the token, described (no signing: `list` must be quick).
pub fn list(token: &OpenToken) -> Result<Vec<Listed>, InventoryError> {
    let mut out = Vec::new();
    for found in StoredKey::all(&token.session, &token.info.label)? {
        out.push(match found {
            Ok(key) => Listed::Key(Box::new(KeyReport::new(
                &token.session,
                &token.info,
                &key,
                None,
                &[],
            )?)),
            Err(e) => Listed::Problem {
                problem: e.to_string(),
            },
        });
    }
    Ok(out)
}

/// Proves the key labelled `label`: signs a challenge, verifies it, reads attributes.
pub fn verify(token: &OpenToken, label: &str) -> Result<KeyReport, InventoryError> {
    let key = StoredKey::find(&token.session, &token.info.label, label)?;
    let proof = prove(&token.session, key.handle, key.kind, &key.cert)?;
    let report = KeyReport::new(&token.session, &token.info, &key, Some(proof.clone()), &[])?;
    if let Some(why) = proof.failure() {
        return Err(InventoryError::ProofFailed {
            label: label.into(),
            token: token.info.label.clone(),
            why,
        });
    }
    Ok(report)
}

/// The objects `remove` would destroy: every object labelled `label`.
pub fn objects_labelled(token: &OpenToken, label: &str) -> Result<Vec<ObjectHandle>, TokenError> {
    find_objects(&token.session, None, Some(label), None)
}

/// Destroys `objects`; stops at the first failure and says how many were removed.
pub fn remove(
    token: &OpenToken,
    label: &str,
    objects: &[ObjectHandle],
) -> Result<usize, TokenError> {
    for (done, handle) in objects.iter().enumerate() {
        token
            .session
            .destroy_object(*handle)
            .map_err(TokenError::pkcs11(format!(
                "removing object {} of {} labelled \"{label}\" ({done} removed so far)",
                done + 1,
                objects.len()
            )))?;
    }
    Ok(objects.len())
}

/// Every certificate object on the token with its label, read without logging in
/// (certificates are public objects). CA certificates are included: an expiring chain
/// matters too.
pub fn certificates(token: &OpenToken) -> Result<Vec<(String, CertInfo)>, InventoryError> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let session = &token.session;
    let mut out = Vec::new();
    for handle in find_objects(session, Some(ObjectClass::CERTIFICATE), None, None)? {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Value])
            .map_err(TokenError::pkcs11("reading a certificate object"))?;
        let (mut label, mut der) = (String::new(), None);
        for attr in attrs {
            match attr {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Value(v) => der = Some(v),
                _ => {}
            }
        }
        let info = der
            .and_then(|d| openssl::x509::X509::from_der(&d).ok())
            .and_then(|c| CertInfo::of(&c).ok());
        if let Some(info) = info {
            out.push((label, info));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
