//! Why an import did not happen, or what a failed one left on the token.

use std::path::PathBuf;

use crate::cert::CertError;
use crate::p12::P12Error;
use crate::token::{TokenError, UnwrapError};

/// Why an import did not happen. In every case the token is as it was, except
/// [`ImportError::Finish`], which says exactly what is left.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The `.p12` could not be opened.
    #[error(transparent)]
    P12(#[from] P12Error),
    /// The certificate file could not be read.
    #[error("cannot read the certificate file {path}: {detail}")]
    CertFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The certificate file is for another key.
    #[error("the certificate in {path} ({subject}, serial {serial}) does not belong to the private key in {p12}: check you have the files from the same Sigillum e-mail")]
    CertMismatch {
        /// The certificate file.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// Its serial.
        serial: String,
        /// The `.p12`.
        p12: PathBuf,
    },
    /// No certificate for the key anywhere.
    #[error("{p12} holds a private key but no certificate for it: pass the certificate from Sigillum's e-mail with --cert")]
    NoCertificate {
        /// The `.p12`.
        p12: PathBuf,
    },
    /// A certificate could not be described.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// No label given and no friendlyName.
    #[error("{p12} has no friendlyName to use as the label: pass --label NAME (e.g. --label gsko-epuap)")]
    NoLabel {
        /// The `.p12`.
        p12: PathBuf,
    },
    /// Objects with the label or ID already exist.
    #[error("token \"{token}\" already holds {count} object(s) with label \"{label}\" or ID {id}: re-run with --replace to replace them (the old key stays until the new one is proven), or choose another --label/--id")]
    Exists {
        /// The token.
        token: String,
        /// The label.
        label: String,
        /// The ID in hex.
        id: String,
        /// How many objects.
        count: usize,
    },
    /// The token refused or failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `import-cert`: the certificate is for another key.
    #[error("the certificate in {path} ({certificate}) is not for the key \"{label}\" on token \"{token}\" (its public key differs from the token's {against}); nothing was changed. A renewed certificate must be issued for the same key: for a new key, import its .p12 under a new label")]
    KeyMismatch {
        /// The certificate file.
        path: PathBuf,
        /// Its subject and serial.
        certificate: String,
        /// The key's label.
        label: String,
        /// The token.
        token: String,
        /// What it was compared with.
        against: &'static str,
    },
    /// `import-cert`: nothing on the token says what the key's public key is.
    #[error("the key \"{label}\" on token \"{token}\" has neither a public key object nor a certificate with its CKA_ID, so a new certificate cannot be checked against it: re-import the key from its .p12")]
    NoTokenPublicKey {
        /// The key's label.
        label: String,
        /// The token.
        token: String,
    },
    /// The token takes no private key through PKCS#11: it refuses C_CreateObject of one
    /// and no mechanism can unwrap one. Nothing was written.
    #[error("token \"{token}\" takes no private key through PKCS#11: {refusal}, and none of its mechanisms can unwrap a key (no CKF_UNWRAP), so neither --method create nor --method unwrap can work. Nothing was written to the token. {path}")]
    NoKeyImport {
        /// The token.
        token: String,
        /// How it refused.
        refusal: String,
        /// What to do instead, for this token's family.
        path: &'static str,
    },
    /// The wrapped import failed.
    #[error("wrapped import: {0}")]
    Unwrap(#[from] UnwrapError),
    /// The new key did not prove itself; everything created was removed.
    #[error("the key was stored but failed its proof ({why}); every object created was removed, the token is as it was")]
    ProofFailed {
        /// What failed.
        why: String,
    },
    /// `import-cert`: the key on the token did not prove itself against the new
    /// certificate; the certificate was not kept.
    #[error("the key \"{label}\" on token \"{token}\" failed its proof with the new certificate ({why}); the certificate was not kept and the token is as it was")]
    CertProofFailed {
        /// The key's label.
        label: String,
        /// The token.
        token: String,
        /// What failed.
        why: String,
    },
    /// Creation failed and so did some of the clean-up.
    #[error("{cause}; removing the {left} object(s) already created also failed ({cleanup}): remove objects labelled \"{temp_label}\" with `hsm-signer remove --label {temp_label}`")]
    CleanupFailed {
        /// The first failure.
        cause: Box<ImportError>,
        /// How many objects are left.
        left: usize,
        /// The clean-up error.
        cleanup: String,
        /// Their label.
        temp_label: String,
    },
    /// The report on the stored key could not be made.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// The switch to the final label went wrong after the proof.
    #[error("the new key is on the token and proven, but finishing the import failed: {0}")]
    Finish(String),
}
