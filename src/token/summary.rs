//! What a module says about one of its tokens, for `hsm-signer tokens`, a token's
//! selection and the messages that list the tokens found.

use serde::Serialize;

/// What the module says about one token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenSummary {
    /// Slot ID (changes when SoftHSM initialises tokens; select by label or serial).
    pub slot: u64,
    /// Token label.
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Whether the user PIN has been set.
    pub user_pin_initialized: bool,
}
