//! The token's state as the daemon sees it (health shows it).

use std::time::Instant;

use serde::Serialize;

/// The token's state as the daemon sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Connected and logged in.
    Up,
    /// Lost; the supervisor is reconnecting.
    Down {
        /// Why.
        reason: String,
        /// Seconds since it went down.
        #[serde(skip)]
        since: Option<Instant>,
    },
    /// The PIN was refused: no automatic login until an operator restarts the daemon.
    PinProblem {
        /// What the token said.
        reason: String,
    },
    /// Stopping.
    Stopping,
}
