//! What the signer needs to know about one configured key: its label, the algorithms it
//! will be asked for, and its purpose.

use crate::algorithm::Algorithm;
use crate::config::Purpose;

/// What a connection needs to know about one configured key.
#[derive(Debug, Clone)]
pub struct KeyWant {
    /// CKA_LABEL.
    pub label: String,
    /// The algorithms it will be asked for (none for a decrypt key).
    pub algorithms: Vec<Algorithm>,
    /// Signing, or ECDH for WK's assertions.
    pub purpose: Purpose,
}
