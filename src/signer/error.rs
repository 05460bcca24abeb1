//! Why a signature (or a derivation) was not made.

use std::time::Duration;

use crate::token::TokenError;

/// Why a signature was not made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The queue is full.
    #[error("too many signing requests waiting")]
    Overloaded,
    /// The token is not reachable right now; retry shortly.
    #[error("token unavailable: {0}")]
    Unavailable(String),
    /// The PIN was refused or is locked; an operator must act.
    #[error("token login refused: {0}")]
    PinProblem(String),
    /// No answer in time.
    #[error("the token did not answer within {0:?}")]
    Timeout(Duration),
    /// The configured label is not on the token (it was removed, or not yet loaded).
    #[error("key \"{0}\" is not loaded from the token")]
    KeyMissing(String),
    /// This key was deleted or broke under the running daemon; the token and the other
    /// keys are fine.
    #[error("key \"{label}\" is not usable right now: {reason}")]
    KeyFault {
        /// The key's label.
        label: String,
        /// What the token said.
        reason: String,
    },
    /// The token refused the operation for another reason.
    #[error(transparent)]
    Failed(TokenError),
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}
