//! Why nothing was generated, or what a failed generation left on the token.

use std::path::PathBuf;

use super::x509::X509Error;
use crate::cert::{CertError, KeyKind};
use crate::token::TokenError;

/// Why nothing was generated. The token is as it was in every case but
/// [`GenerateError::CleanupFailed`], which names what is left.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Decryption keys are ECDH P-256 keys.
    #[error("--purpose decrypt takes --key-type ec-p256 only (login.gov.pl encrypts the assertion with ECDH-ES on P-256), not {kind}; nothing was created")]
    DecryptNeedsP256 {
        /// What was asked for.
        kind: KeyKind,
    },
    /// Neither a CSR nor a certificate asked for.
    #[error("give --csr FILE, --self-signed-days N, or both: the public key must reach login.gov.pl in a certificate; nothing was created")]
    NothingToRegister,
    /// `--allow-dual-use` with a signing key.
    #[error("--allow-dual-use applies to --purpose decrypt only")]
    DualUseForSign,
    /// `--operations` names an operation the key's purpose cannot do.
    #[error("--operations {operation} does not fit --purpose {purpose}: a decryption key does \"decrypt\" only, a signing key anything but \"decrypt\"; nothing was created")]
    OperationForPurpose {
        /// The operation named.
        operation: &'static str,
        /// The key's purpose.
        purpose: crate::config::Purpose,
    },
    /// `--self-signed-days 0`.
    #[error("--self-signed-days must be at least 1")]
    NoDays,
    /// The CSR cannot be written there; checked before the token is touched.
    #[error("cannot write the CSR to {path}: {why}; nothing was created")]
    CsrPath {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Something already carries the label.
    #[error("token \"{token}\" already holds {count} object(s) labelled \"{label}\": choose another --label, or remove them first with `hsm-signer remove --label {label}`; nothing was created")]
    Exists {
        /// The token.
        token: String,
        /// The label.
        label: String,
        /// How many.
        count: usize,
    },
    /// Something already carries the new key's ID.
    #[error("token \"{token}\" already holds an object with the new key's ID {id}")]
    IdExists {
        /// The token.
        token: String,
        /// The ID in hex.
        id: String,
    },
    /// The token failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The CSR or certificate could not be made.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// The certificate could not be described.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The token kept CKA_SIGN on the decryption key.
    #[error("token \"{token}\" did not clear CKA_SIGN on the new decryption key, so it could also sign. Re-run with --allow-dual-use to accept a key that both decrypts and signs (login.gov.pl asks for two separate keys)")]
    SignNotCleared {
        /// The token.
        token: String,
    },
    /// The new key did not prove itself.
    #[error("the new key failed its proof: {why}")]
    ProofFailed {
        /// What failed.
        why: String,
    },
    /// Writing the CSR failed.
    #[error("writing the CSR to {path} failed: {detail}")]
    CsrWrite {
        /// The path.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A failure after generation; everything created was removed.
    #[error("{0}; every object created was removed, the token is as it was")]
    RolledBack(Box<GenerateError>),
    /// A failure after generation, and the clean-up failed too.
    #[error("{cause}; removing the {left} object(s) created also failed ({cleanup}): remove them with `hsm-signer remove --label {temp_label}`")]
    CleanupFailed {
        /// The first failure.
        cause: Box<GenerateError>,
        /// How many objects are left.
        left: usize,
        /// The clean-up errors.
        cleanup: String,
        /// Their label.
        temp_label: String,
    },
}
