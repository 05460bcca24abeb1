//! The import flow: `.p12` → key material → token objects → proof.
//!
//! All or nothing. The new objects are created under a temporary label and proven (a
//! challenge signed on the token and verified in software, attributes read back) before
//! they take the real label. A failure before that point destroys every object created.
//! With `--replace`, the old objects are first moved aside under a `.replaced-*` label,
//! the new ones take the label, and only then are the old ones destroyed, so the label
//! never points at nothing and never at a key that did not prove itself.
//!
//! The private key reaches the token one of two ways ([`Method`]): C_CreateObject with
//! the key in the template, or, on tokens that refuse plaintext private keys, wrapped
//! and C_UnwrapKey'd (see [`crate::token::unwrap_private_key`]). Everything else (the
//! public key, the certificates, the proof, the label switch) is the same for both.
//!
//! [`certificate`] puts a renewed certificate beside a key already on the token.

pub mod certificate;
mod error;
mod staging;

pub use error::ImportError;
pub(crate) use staging::random_suffix;
use staging::{ca_label, read_small, Created};

use std::path::{Path, PathBuf};

use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::x509::X509;
use secrecy::SecretString;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cert::{cert_matches_key, load_cert_bytes, CertDer, CertError, CertInfo};
use crate::p12::{self, KeyMaterial, P12Error};
use crate::proof::{prove, Proof};
use crate::report::KeyReport;
use crate::token::{
    cert_template, check_unwrap_mechanisms, ckr_name, find_objects, offers_any_unwrap,
    private_key_template, public_key_template, refuses_plaintext_keys, relabel, unwrap_private_key,
    unwrapped_key_template, CertCategory, ModuleFamily, OpenToken, StoredKey, TokenError,
};

/// How the private key was put on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// C_CreateObject with the key in the template.
    Create,
    /// Wrapped in software, then C_UnwrapKey on the token.
    Unwrap,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Create => "create",
            Method::Unwrap => "unwrap",
        })
    }
}

/// Which method the officer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodChoice {
    /// Only C_CreateObject.
    Create,
    /// Only the wrapped import.
    Unwrap,
    /// C_CreateObject, and the wrapped import if the token refuses plaintext keys.
    #[default]
    Auto,
}

/// What the officer asked to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The `.p12` file.
    pub p12: PathBuf,
    /// The separate certificate file, checked against the key.
    pub cert: Option<PathBuf>,
    /// CKA_LABEL; defaults to the friendlyName.
    pub label: Option<String>,
    /// CKA_ID; defaults to [`CertDer::default_id`].
    pub id: Option<Vec<u8>>,
    /// Replace objects that already carry the label or ID.
    pub replace: bool,
    /// Set CKA_DERIVE on an EC key (for ECDH).
    pub allow_derive: bool,
    /// How to put the private key on the token.
    pub method: MethodChoice,
}

/// What an import stored, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// How the private key reached the token.
    pub method: Method,
    /// The stored key, described and proven.
    #[serde(flatten)]
    pub report: KeyReport,
}

/// A `.p12` opened and checked, ready to store: nothing has touched the token yet.
pub struct Prepared {
    material: KeyMaterial,
    cert: X509,
    cert_der: CertDer,
    label: String,
    id: Vec<u8>,
    request: ImportRequest,
}

impl Prepared {
    /// The label the key will get.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The certificate, described.
    pub fn cert_info(&self) -> Result<CertInfo, CertError> {
        CertInfo::of(&self.cert)
    }
}

/// Opens and checks everything that does not need the token: the `.p12` with its
/// password, the certificate file, the label and the ID.
pub fn prepare(request: ImportRequest, password: &SecretString) -> Result<Prepared, ImportError> {
    let bytes = read_p12(&request.p12)?;
    prepare_bytes(request, &bytes, password)
}

/// Reads a `.p12` from `path`: at most 1 MiB within 2 s, and never from a device, a
/// socket or a FIFO with no writer (see [`crate::secret::bounded`]).
pub fn read_p12(path: &Path) -> Result<Zeroizing<Vec<u8>>, ImportError> {
    read_small(path).map_err(|e| {
        ImportError::from(P12Error::Read {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })
    })
}

/// [`prepare`] for a `.p12` already read into memory (from standard input); `request.p12`
/// only names it in messages.
pub fn prepare_bytes(
    request: ImportRequest,
    bytes: &[u8],
    password: &SecretString,
) -> Result<Prepared, ImportError> {
    let material = p12::open(bytes, password, &request.p12.display().to_string())?;
    prepare_material(request, material)
}

fn prepare_material(
    request: ImportRequest,
    material: KeyMaterial,
) -> Result<Prepared, ImportError> {
    let cert = pick_certificate(&request, &material)?;
    let cert_der = CertDer::of(&cert)?;
    let label = request
        .label
        .clone()
        .or_else(|| material.friendly_name.clone())
        .ok_or_else(|| ImportError::NoLabel {
            p12: request.p12.clone(),
        })?;
    let id = request.id.clone().unwrap_or_else(|| cert_der.default_id());
    Ok(Prepared {
        material,
        cert,
        cert_der,
        label,
        id,
        request,
    })
}

fn pick_certificate(request: &ImportRequest, material: &KeyMaterial) -> Result<X509, ImportError> {
    let Some(path) = &request.cert else {
        return material
            .cert
            .clone()
            .ok_or_else(|| ImportError::NoCertificate {
                p12: request.p12.clone(),
            });
    };
    let file_err = |detail: String| ImportError::CertFile {
        path: path.clone(),
        detail,
    };
    let bytes = read_small(path).map_err(|e| file_err(e.to_string()))?;
    let cert = load_cert_bytes(&bytes)
        .map_err(|_| file_err("not a DER or PEM X.509 certificate".into()))?;
    if !cert_matches_key(&cert, &material.key) {
        let info = CertInfo::of(&cert)?;
        return Err(ImportError::CertMismatch {
            path: path.clone(),
            subject: info.subject,
            serial: info.serial,
            p12: request.p12.clone(),
        });
    }
    Ok(cert)
}

/// Stores `prepared` on the logged-in token, proves it, and reports what is stored.
pub fn store(token: &OpenToken, prepared: Prepared) -> Result<Imported, ImportError> {
    let session = &token.session;
    let existing = existing_objects(session, &prepared.label, &prepared.id)?;
    if !existing.is_empty() && !prepared.request.replace {
        return Err(ImportError::Exists {
            token: token.info.label.clone(),
            label: prepared.label.clone(),
            id: hex::encode(&prepared.id),
            count: existing.len(),
        });
    }
    if prepared.request.method == MethodChoice::Unwrap {
        // Before anything is created, so a missing mechanism leaves nothing to undo.
        if let Err(e) = check_unwrap_mechanisms(&token.module, token.slot, &token.info.label) {
            return Err(no_key_import(token, None).unwrap_or(e.into()));
        }
    }
    let temp_label = format!("{}.importing-{}", prepared.label, random_suffix());
    let mut created = Created::default();
    let method = match stage(token, &prepared, &temp_label, &mut created) {
        Ok(method) => method,
        Err(cause) => return Err(created.roll_back(session, cause, &temp_label)),
    };
    commit(session, &prepared, &created, &existing)?;
    let stored = StoredKey::find(session, &token.info.label, &prepared.label)?;
    let proof = prove(session, stored.handle, stored.kind, &stored.cert)?;
    let report = KeyReport::new(
        session,
        &token.info,
        &stored,
        Some(proof),
        &prepared.material.chain,
    )?;
    Ok(Imported { method, report })
}

/// Objects that would collide: the same label (any class) or the same ID.
fn existing_objects(
    session: &Session,
    label: &str,
    id: &[u8],
) -> Result<Vec<ObjectHandle>, TokenError> {
    let mut found = find_objects(session, None, Some(label), None)?;
    for class in [
        ObjectClass::PRIVATE_KEY,
        ObjectClass::PUBLIC_KEY,
        ObjectClass::CERTIFICATE,
    ] {
        found.extend(find_objects(session, Some(class), None, Some(id))?);
    }
    found.sort_by_key(|h| h.handle());
    found.dedup();
    Ok(found)
}

/// Creates everything under `temp_label` and proves the key. Records each object in
/// `created` as soon as it exists, so a failure can remove it. Returns how the private
/// key got there.
fn stage(
    token: &OpenToken,
    p: &Prepared,
    temp_label: &str,
    created: &mut Created,
) -> Result<Method, ImportError> {
    let session = &token.session;
    let create = |what: &str, template: &[Attribute]| {
        session
            .create_object(template)
            .map_err(TokenError::pkcs11(format!(
                "creating the {what} on the token"
            )))
    };
    let (key, method) = put_private_key(token, p, temp_label)?;
    created.own.push(key);
    let public = public_key_template(p.material.kind, &p.cert_der, temp_label, &p.id);
    created.own.push(create("public key", &public)?);
    let cert = cert_template(&p.cert_der, temp_label, &p.id, CertCategory::TokenUser);
    created.own.push(create("certificate", &cert)?);
    for ca in &p.material.chain {
        let der = CertDer::of(ca)?;
        let present = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Value(der.value.clone()),
            ])
            .map_err(TokenError::pkcs11("looking for the CA certificate"))?;
        if present.is_empty() {
            let label = ca_label(ca);
            let template = cert_template(&der, &label, &der.default_id(), CertCategory::Authority);
            created
                .authorities
                .push(create("CA certificate", &template)?);
        }
    }
    let proof = prove(session, key, p.material.kind, &p.cert)?;
    check_proof(&proof)?;
    Ok(method)
}

/// Puts the private key on the token as the request says: created, unwrapped, or
/// created with a fall-back to unwrapped when the token refuses plaintext keys.
fn put_private_key(
    token: &OpenToken,
    p: &Prepared,
    label: &str,
) -> Result<(ObjectHandle, Method), ImportError> {
    match p.request.method {
        MethodChoice::Create => match create_key(&token.session, p, label) {
            Ok(key) => Ok((key, Method::Create)),
            Err(ImportError::Token(e)) if e.rv().is_some_and(refuses_plaintext_keys) => {
                Err(refused_create(token, &e).unwrap_or(ImportError::Token(e)))
            }
            Err(e) => Err(e),
        },
        MethodChoice::Unwrap => Ok((unwrap_key(token, p, label)?, Method::Unwrap)),
        MethodChoice::Auto => match create_key(&token.session, p, label) {
            Ok(key) => Ok((key, Method::Create)),
            Err(ImportError::Token(e)) if e.rv().is_some_and(refuses_plaintext_keys) => {
                if let Some(no_way_in) = refused_create(token, &e) {
                    return Err(no_way_in);
                }
                tracing::warn!(
                    "token \"{}\" refuses a plaintext private key (C_CreateObject returned {}); importing it wrapped instead (C_UnwrapKey)",
                    crate::text::printable(&token.info.label, crate::text::WHOLE),
                    e.rv().map(ckr_name).unwrap_or_default()
                );
                Ok((unwrap_key(token, p, label)?, Method::Unwrap))
            }
            Err(e) => Err(e),
        },
    }
}

/// [`ImportError::NoKeyImport`] when the token, having refused C_CreateObject of the
/// private key with `e`, offers no unwrap either; `None` when another way may work.
fn refused_create(token: &OpenToken, e: &TokenError) -> Option<ImportError> {
    let refusal = format!(
        "C_CreateObject of the private key returned {}",
        e.rv().map(ckr_name).unwrap_or_default()
    );
    no_key_import(token, Some(&refusal))
}

/// [`ImportError::NoKeyImport`] when no mechanism of the token can unwrap a key and the
/// token refused C_CreateObject of the private key (`create_refusal`) or is known to
/// (tpm2-pkcs11); `None` when another way may work.
fn no_key_import(token: &OpenToken, create_refusal: Option<&str>) -> Option<ImportError> {
    if offers_any_unwrap(token.module.ctx(), token.slot) {
        return None;
    }
    let (refusal, path) = if !ModuleFamily::of(token.module.ctx()).takes_private_keys() {
        let how = create_refusal
            .unwrap_or("C_CreateObject of a private key returns CKR_ATTRIBUTE_VALUE_INVALID");
        (
            format!("it is a TPM (tpm2-pkcs11), which makes private keys only inside the TPM ({how})"),
            "Generate the key on the TPM instead (`hsm-signer generate`, recommended: the key never exists outside it), or import the .p12's key with `tpm2_ptool import` and then put its certificate beside it with `hsm-signer import-cert --label LABEL --cert CERT`. docs/tpm.md shows both, and what `tpm2_ptool import` costs: the PIN on its command line, the key in a file, and a key left CKA_EXTRACTABLE.",
        )
    } else {
        (
            create_refusal?.to_string(),
            "Generate the key on the token instead (`hsm-signer generate`), or bring it in with the token vendor's own import tool, then put the certificate beside it with `hsm-signer import-cert --label LABEL --cert CERT`.",
        )
    };
    Some(ImportError::NoKeyImport {
        token: token.info.label.clone(),
        refusal,
        path,
    })
}

/// C_CreateObject with the key material in a template that is wiped when dropped.
fn create_key(session: &Session, p: &Prepared, label: &str) -> Result<ObjectHandle, ImportError> {
    let template = private_key_template(
        &p.material,
        &p.cert_der,
        label,
        &p.id,
        p.request.allow_derive,
    )
    .map_err(|e| ImportError::ProofFailed { why: e.to_string() })?;
    Ok(session
        .create_object(&template.0)
        .map_err(TokenError::pkcs11("creating the private key on the token"))?)
}

/// The wrapped import: the key leaves this process only encrypted. Checks the token's
/// mechanisms first, which also picks the RFC 5649 code it offers.
fn unwrap_key(token: &OpenToken, p: &Prepared, label: &str) -> Result<ObjectHandle, ImportError> {
    let wrap = check_unwrap_mechanisms(&token.module, token.slot, &token.info.label)?;
    let template = unwrapped_key_template(
        p.material.kind,
        &p.cert_der,
        label,
        &p.id,
        p.request.allow_derive,
    );
    Ok(unwrap_private_key(
        &token.module,
        &token.session,
        wrap,
        &p.material.key,
        &template,
    )?)
}

pub(crate) fn check_proof(proof: &Proof) -> Result<(), ImportError> {
    match proof.failure() {
        None => Ok(()),
        Some(why) => Err(ImportError::ProofFailed { why }),
    }
}

/// Moves the new, proven objects to the final label; with `--replace`, moves the old
/// ones aside first and destroys them last.
fn commit(
    session: &Session,
    p: &Prepared,
    created: &Created,
    existing: &[ObjectHandle],
) -> Result<(), ImportError> {
    let aside = format!("{}.replaced-{}", p.label, random_suffix());
    let old: Vec<ObjectHandle> = existing
        .iter()
        .copied()
        .filter(|h| !created.own.contains(h) && !created.authorities.contains(h))
        .collect();
    relabel(session, &old, &aside).map_err(|e| {
        ImportError::Finish(format!(
            "{e}; the old key still carries its label, the new one is labelled \"{}.importing-*\"",
            p.label
        ))
    })?;
    if let Err(e) = relabel(session, &created.own, &p.label) {
        // Put the old key back under its label so callers keep working.
        let restored = relabel(session, &old, &p.label).is_ok();
        return Err(ImportError::Finish(format!(
            "{e}; old key {}",
            if restored {
                "restored under its label".to_string()
            } else {
                format!("left under the label \"{aside}\"")
            }
        )));
    }
    for handle in old {
        if let Err(e) = session.destroy_object(handle) {
            tracing::warn!(error = %e, label = %crate::text::printable(&aside, crate::text::WHOLE), "an old object could not be removed; remove it with `hsm-signer remove`");
        }
    }
    Ok(())
}
