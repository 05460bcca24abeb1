//! What the key import and the certificate import share while they stage objects on the
//! token: the objects created so far (removed again on failure), the labels of CA
//! certificates and temporary objects, and bounded reading of input files.

use std::path::Path;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use openssl::x509::X509;
use zeroize::Zeroizing;

use super::error::ImportError;
use crate::secret::bounded;

/// Reads a small input file (a `.p12`, a certificate) within [`bounded::SMALL_FILE`].
pub(crate) fn read_small(path: &Path) -> Result<Zeroizing<Vec<u8>>, bounded::ReadError> {
    bounded::read(path, bounded::SMALL_FILE).map(|(bytes, _)| bytes)
}

/// The objects this import created so far, in creation order.
#[derive(Default)]
pub(crate) struct Created {
    /// The key, its public key and its certificate: the ones that take the final label.
    pub(crate) own: Vec<ObjectHandle>,
    /// CA certificates added (those not already on the token).
    pub(crate) authorities: Vec<ObjectHandle>,
}

impl Created {
    pub(crate) fn roll_back(
        self,
        session: &Session,
        cause: ImportError,
        temp_label: &str,
    ) -> ImportError {
        let mut failures = Vec::new();
        for handle in self.own.iter().chain(&self.authorities).rev() {
            if let Err(e) = session.destroy_object(*handle) {
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            tracing::info!("import rolled back; no object left on the token");
            cause
        } else {
            ImportError::CleanupFailed {
                cause: Box::new(cause),
                left: failures.len(),
                cleanup: failures.join("; "),
                temp_label: temp_label.to_string(),
            }
        }
    }
}

/// The label of a CA certificate: its friendlyName, else its CN, else "CA".
pub(crate) fn ca_label(cert: &X509) -> String {
    if let Some(alias) = cert.alias() {
        return String::from_utf8_lossy(alias).into_owned();
    }
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "CA".into())
}

/// Eight hex digits, for a temporary label no one else uses.
pub(crate) fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).expect("OpenSSL's RNG works");
    hex::encode(bytes)
}
