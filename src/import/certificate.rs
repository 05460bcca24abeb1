//! A renewed certificate for a key already on the token (`import-cert`).
//!
//! Sigillum can reissue a certificate for the same key: new serial, new validity. The new
//! certificate is refused unless its public key is the token key's public key (read from
//! the public key object beside it, or else from the certificate it replaces). It is
//! created under a temporary label, the key proves itself against it, and only then does
//! it take the key's label and the old certificate go: on any failure the old one stays.
//! CA certificates from `--chain` that the token lacks are added in the same all-or-nothing
//! step.

use std::path::{Path, PathBuf};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::x509::X509;

use super::error::ImportError;
use super::staging::{ca_label, random_suffix, read_small, Created};
use crate::cert::{key_kind, load_cert_bytes, CertDer, CertError, CertInfo};
use crate::proof::prove;
use crate::report::KeyReport;
use crate::token::{
    cert_template, find_objects, relabel, CertCategory, OpenToken, StoredKey, TokenError,
};

/// What the officer asked to put on the token.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// CKA_LABEL of the key on the token.
    pub label: String,
    /// The new certificate (DER or PEM).
    pub cert: PathBuf,
    /// CA certificate files (DER, or PEM with one or more certificates).
    pub chain: Vec<PathBuf>,
}

/// What happened to the key's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertOutcome {
    /// The key had no certificate; now it has this one.
    Added,
    /// Another certificate for the key was there; this one took its place.
    Replaced,
    /// The token already held exactly this certificate; nothing was added.
    Unchanged,
}

/// What `import-cert` did about CKA_EXTRACTABLE on the key (true after `tpm2_ptool
/// import`, for example).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum ExtractableChange {
    /// The key was not extractable; nothing to do.
    AlreadyFalse,
    /// The key was extractable; C_SetAttributeValue set it false and it reads back false.
    Cleared,
    /// The key was extractable and still is: the token refused the change (the detail
    /// says how).
    Refused(String),
}

/// What `import-cert` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertImported {
    /// Added, replaced, or already there.
    pub outcome: CertOutcome,
    /// The certificate that was replaced, when one was.
    pub replaced: Option<CertInfo>,
    /// What became of CKA_EXTRACTABLE on the key.
    pub extractable: ExtractableChange,
    /// The key with its new certificate, proven; its `chain` lists the CA certificates
    /// added.
    #[serde(flatten)]
    pub report: KeyReport,
}

/// The private key the certificate is for.
struct TokenKey {
    handle: ObjectHandle,
    id: Vec<u8>,
}

/// Puts the certificate `request` names beside the key labelled `request.label`.
pub fn import_cert(token: &OpenToken, request: &CertRequest) -> Result<CertImported, ImportError> {
    let session = &token.session;
    let new = read_cert(&request.cert)?;
    let chain = read_chain(&request.chain)?;
    let key = find_key(token, &request.label)?;
    check_same_key(token, &key, request, &new)?;
    let new_der = CertDer::of(&new)?;
    let old = find_objects(session, Some(ObjectClass::CERTIFICATE), None, Some(&key.id))?;
    let old_der = match old.first() {
        Some(&h) => Some(cert_value(session, h)?),
        None => None,
    };
    let unchanged = old.len() == 1 && old_der.as_deref() == Some(new_der.value.as_slice());
    let replaced = match (&old_der, unchanged) {
        (Some(der), false) => Some(describe(der)?),
        _ => None,
    };
    let outcome = match (unchanged, &replaced) {
        (true, _) => CertOutcome::Unchanged,
        (false, Some(_)) => CertOutcome::Replaced,
        (false, None) => CertOutcome::Added,
    };

    let temp_label = format!("{}.importing-{}", request.label, random_suffix());
    let mut created = Created::default();
    let mut added = Vec::new();
    let staged = stage(
        token,
        (&new, &new_der),
        &key,
        &chain,
        (&temp_label, &request.label),
        unchanged,
        (&mut created, &mut added),
    );
    if let Err(cause) = staged {
        return Err(created.roll_back(session, cause, &temp_label));
    }
    if !unchanged {
        swap(session, &request.label, created, &old)?;
    }
    let extractable = clear_extractable(session, key.handle)?;
    let stored = StoredKey::find(session, &token.info.label, &request.label)?;
    let proof = prove(session, stored.handle, stored.kind, &stored.cert)?;
    let report = KeyReport::new(session, &token.info, &stored, Some(proof), &added)?;
    Ok(CertImported {
        outcome,
        replaced,
        extractable,
        report,
    })
}

/// Sets CKA_EXTRACTABLE false on a key that has it true (PKCS#11 allows that change, and
/// only that one), and says what the token did. A key imported with `tpm2_ptool import`
/// comes with it true.
fn clear_extractable(
    session: &Session,
    key: ObjectHandle,
) -> Result<ExtractableChange, ImportError> {
    let extractable = |session: &Session| -> Result<bool, TokenError> {
        Ok(session
            .get_attributes(key, &[AttributeType::Extractable])
            .map_err(TokenError::pkcs11("reading the key's CKA_EXTRACTABLE"))?
            .into_iter()
            .any(|a| matches!(a, Attribute::Extractable(true))))
    };
    if !extractable(session)? {
        return Ok(ExtractableChange::AlreadyFalse);
    }
    if let Err(e) = session.update_attributes(key, &[Attribute::Extractable(false)]) {
        let e = TokenError::pkcs11("setting CKA_EXTRACTABLE to false")(e);
        return Ok(ExtractableChange::Refused(e.to_string()));
    }
    Ok(if extractable(session)? {
        ExtractableChange::Refused(
            "C_SetAttributeValue succeeded, but the key still reads CKA_EXTRACTABLE true".into(),
        )
    } else {
        ExtractableChange::Cleared
    })
}

fn find_key(token: &OpenToken, label: &str) -> Result<TokenKey, ImportError> {
    let session = &token.session;
    let keys = find_objects(session, Some(ObjectClass::PRIVATE_KEY), Some(label), None)?;
    let [handle] = keys.as_slice() else {
        return Err(match keys.len() {
            0 => TokenError::KeyNotFound {
                label: label.into(),
                token: token.info.label.clone(),
            },
            n => TokenError::BadObject {
                label: label.into(),
                token: token.info.label.clone(),
                detail: format!("{n} private keys carry this label; remove the extra ones"),
            },
        }
        .into());
    };
    let id = session
        .get_attributes(*handle, &[AttributeType::Id])
        .map_err(TokenError::pkcs11("reading the key's CKA_ID"))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default();
    Ok(TokenKey {
        handle: *handle,
        id,
    })
}

fn describe(der: &[u8]) -> Result<CertInfo, ImportError> {
    let cert = X509::from_der(der).map_err(CertError::from)?;
    Ok(CertInfo::of(&cert)?)
}

/// Creates the CA certificates the token lacks (recorded in `added` too) and, unless the
/// token already holds it, the new certificate under `temp_label`; then proves the key
/// against the new certificate.
fn stage(
    token: &OpenToken,
    (new, new_der): (&X509, &CertDer),
    key: &TokenKey,
    chain: &[X509],
    (temp_label, label): (&str, &str),
    unchanged: bool,
    (created, added): (&mut Created, &mut Vec<X509>),
) -> Result<(), ImportError> {
    let session = &token.session;
    let create = |what: &str, template: &[Attribute]| {
        session
            .create_object(template)
            .map_err(TokenError::pkcs11(format!(
                "creating the {what} on the token"
            )))
    };
    for ca in chain {
        let der = CertDer::of(ca)?;
        if cert_present(session, &der.value)? {
            continue;
        }
        let template = cert_template(
            &der,
            &ca_label(ca),
            &der.default_id(),
            CertCategory::Authority,
        );
        created
            .authorities
            .push(create("CA certificate", &template)?);
        added.push(ca.clone());
    }
    if unchanged {
        return Ok(());
    }
    let template = cert_template(new_der, temp_label, &key.id, CertCategory::TokenUser);
    created.own.push(create("certificate", &template)?);
    let public = new.public_key().map_err(CertError::from)?;
    let kind = key_kind(public.as_ref()).map_err(CertError::from)?;
    let mut proof = prove(session, key.handle, kind, new)?;
    // CKA_EXTRACTABLE is dealt with once the certificate is in place
    // ([`clear_extractable`]); everything else must hold now.
    proof.attributes.extractable = false;
    match proof.failure() {
        None => Ok(()),
        Some(why) => Err(ImportError::CertProofFailed {
            label: label.to_string(),
            token: token.info.label.clone(),
            why,
        }),
    }
}

/// The new certificate takes the label; then the old ones go. If the relabel fails, the
/// new objects are removed and the old certificate stays as it was.
fn swap(
    session: &Session,
    label: &str,
    created: Created,
    old: &[ObjectHandle],
) -> Result<(), ImportError> {
    if let Err(e) = relabel(session, &created.own, label) {
        return Err(created.roll_back(session, e.into(), label));
    }
    for &handle in old {
        if let Err(e) = session.destroy_object(handle) {
            tracing::warn!(error = %e, label = %crate::text::printable(label, crate::text::WHOLE), "the old certificate could not be removed (the new one is in place); remove it with pkcs11-tool --delete-object");
        }
    }
    Ok(())
}

/// Refuses a certificate for another key: compares its public key with the public key
/// object beside the key (same CKA_ID), or else with the certificate it replaces.
fn check_same_key(
    token: &OpenToken,
    key: &TokenKey,
    request: &CertRequest,
    new: &X509,
) -> Result<(), ImportError> {
    let session = &token.session;
    let new_der = CertDer::of(new)?;
    let on_token = token_public_key(session, &key.id)?;
    let (matches, against) = match on_token {
        Some(parts) => (parts == PublicParts::of_cert(&new_der), "public key object"),
        None => {
            let old = find_objects(session, Some(ObjectClass::CERTIFICATE), None, Some(&key.id))?;
            let Some(&first) = old.first() else {
                return Err(ImportError::NoTokenPublicKey {
                    label: request.label.clone(),
                    token: token.info.label.clone(),
                });
            };
            let old = X509::from_der(&cert_value(session, first)?).map_err(CertError::from)?;
            let old_der = CertDer::of(&old)?;
            (
                PublicParts::of_cert(&old_der) == PublicParts::of_cert(&new_der),
                "current certificate",
            )
        }
    };
    if matches {
        return Ok(());
    }
    let info = CertInfo::of(new)?;
    Err(ImportError::KeyMismatch {
        path: request.cert.clone(),
        certificate: format!("{}, serial {}", info.subject, info.serial),
        label: request.label.clone(),
        token: token.info.label.clone(),
        against,
    })
}

/// A public key reduced to what both a certificate and a PKCS#11 object carry.
#[derive(Debug, PartialEq, Eq)]
enum PublicParts {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { params: Vec<u8>, point: Vec<u8> },
    Unknown,
}

impl PublicParts {
    fn of_cert(cert: &CertDer) -> Self {
        if let Ok(rsa) = openssl::rsa::Rsa::public_key_from_der_pkcs1(&cert.public_key_bits) {
            return PublicParts::Rsa {
                n: rsa.n().to_vec(),
                e: rsa.e().to_vec(),
            };
        }
        match &cert.key_params {
            Some(params) => PublicParts::Ec {
                params: params.clone(),
                point: cert.public_key_bits.clone(),
            },
            None => PublicParts::Unknown,
        }
    }
}

/// The public key object with this CKA_ID, reduced to [`PublicParts`].
fn token_public_key(session: &Session, id: &[u8]) -> Result<Option<PublicParts>, TokenError> {
    let Some(&handle) =
        find_objects(session, Some(ObjectClass::PUBLIC_KEY), None, Some(id))?.first()
    else {
        return Ok(None);
    };
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        )
        .map_err(TokenError::pkcs11("reading the public key beside the key"))?;
    let (mut n, mut e, mut params, mut point) = (None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::Modulus(v) => n = Some(strip_zeros(v)),
            Attribute::PublicExponent(v) => e = Some(strip_zeros(v)),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(unwrap_octet_string(v)),
            _ => {}
        }
    }
    Ok(match (n, e, params, point) {
        (Some(n), Some(e), _, _) => Some(PublicParts::Rsa { n, e }),
        (_, _, Some(params), Some(point)) => Some(PublicParts::Ec { params, point }),
        _ => None,
    })
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..zeros);
    v
}

/// CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some tokens give
/// the bare point. An uncompressed point has an odd length and starts with 0x04.
fn unwrap_octet_string(v: Vec<u8>) -> Vec<u8> {
    use der::Decode;
    match der::asn1::OctetString::from_der(&v) {
        Ok(o) if o.as_bytes().len() % 2 == 1 && o.as_bytes().first() == Some(&4) => {
            o.as_bytes().to_vec()
        }
        _ => v,
    }
}

fn cert_value(session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, TokenError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(TokenError::pkcs11("reading a certificate"))?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default())
}

fn cert_present(session: &Session, der: &[u8]) -> Result<bool, TokenError> {
    Ok(!session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Value(der.to_vec()),
        ])
        .map_err(TokenError::pkcs11("looking for a certificate"))?
        .is_empty())
}

fn read_cert(path: &Path) -> Result<X509, ImportError> {
    let bytes = read_small(path).map_err(|e| ImportError::CertFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    load_cert_bytes(&bytes).map_err(|_| ImportError::CertFile {
        path: path.to_path_buf(),
        detail: "not a DER or PEM X.509 certificate".into(),
    })
}

fn read_chain(paths: &[PathBuf]) -> Result<Vec<X509>, ImportError> {
    let mut out = Vec::new();
    for path in paths {
        let bytes = read_small(path).map_err(|e| ImportError::CertFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let certs = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            X509::stack_from_pem(&bytes)
        } else {
            X509::from_der(&bytes).map(|c| vec![c])
        }
        .map_err(|_| ImportError::CertFile {
            path: path.clone(),
            detail: "not DER or PEM X.509 certificate(s)".into(),
        })?;
        out.extend(certs);
    }
    Ok(out)
}
