//! The health report's shape and the last one, shared: what `GET /v1/health` answers
//! and [`super::state::AppState`] keeps between checks.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::protection::Protection;
use crate::audit::AuditState;
use crate::config::Purpose;
use crate::signer::Status;

/// The last self-test, shared.
#[derive(Default)]
pub struct HealthState {
    pub(super) last: tokio::sync::Mutex<Option<(Instant, Arc<Report>)>>,
}

/// The health report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "ok", "warning" (a certificate expires soon) or "unavailable".
    pub status: &'static str,
    /// Why it is not "ok".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The token's label.
    pub token: Option<String>,
    /// The token's state.
    pub token_state: Status,
    /// The audit log's state ("ok" when none is configured).
    pub audit: AuditState,
    /// Each key's self-test.
    pub keys: Vec<KeyHealth>,
    /// When this check ran.
    pub checked_at: String,
}

/// One key's self-test.
#[derive(Debug, Clone, Serialize)]
pub struct KeyHealth {
    /// Key name.
    pub name: String,
    /// Signing or decrypting.
    pub purpose: Purpose,
    /// Whether a test signature was made and verified (sign keys).
    pub signs: bool,
    /// Decrypt keys: whether an ECDH on the token with a fresh software key gave the
    /// same secret as the software side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derives: Option<bool>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Days until its certificate expires.
    pub days_left: Option<i64>,
    /// End of the certificate's validity.
    pub not_after: Option<String>,
    /// The test signature's round trip, milliseconds.
    pub latency_ms: Option<f64>,
    /// CKA_EXTRACTABLE and CKA_SENSITIVE as the token reports them; `null` until read.
    /// A key with `extractable: true` or `sensitive: false` could leave the token, and
    /// makes the status "warning".
    pub protection: Option<Protection>,
}

impl KeyHealth {
    /// The key's self-test passed.
    pub fn passed(&self) -> bool {
        match self.purpose {
            Purpose::Sign => self.signs,
            Purpose::Decrypt => self.derives == Some(true),
        }
    }
}
