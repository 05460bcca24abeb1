//! A PIN's length against the token's limits, checked before any call that spends a try:
//! the current PIN (user or SO) before C_Login, a new PIN before C_SetPIN or C_InitPIN.

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;
use secrecy::{ExposeSecret, SecretString};

use super::error::TokenError;

/// Refuses a PIN about to be presented (C_Login, or the old PIN of C_SetPIN) whose length
/// is outside the token's ulMinPinLen..ulMaxPinLen: an empty PIN, one character, or a
/// megabyte read from the wrong file would otherwise spend a try on a card that locks
/// after three. A token with a protected authentication path (a PIN pad) takes the PIN
/// there, so its limits say nothing about this value; it is exempt. Limits a token does
/// not fill in (a maximum of 0, or below the minimum) are not enforced.
pub fn check_pin_length(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    pin: &SecretString,
) -> Result<(), TokenError> {
    let info = ctx
        .get_token_info(slot)
        .map_err(TokenError::pkcs11(format!(
            "reading token \"{token}\"'s PIN limits"
        )))?;
    let (min, max) = (info.min_pin_length(), info.max_pin_length());
    if info.protected_authentication_path() || max == 0 || max < min {
        return Ok(());
    }
    let length = pin.expose_secret().len();
    if length < min || length > max {
        return Err(TokenError::CurrentPinLength {
            token: token.into(),
            length,
            min,
            max,
        });
    }
    Ok(())
}

/// Checks a new PIN's length against the token's limits, before any call that spends it.
pub fn check_new_pin_length(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    new: &SecretString,
) -> Result<(), TokenError> {
    let info = ctx
        .get_token_info(slot)
        .map_err(TokenError::pkcs11(format!(
            "reading token \"{token}\"'s PIN limits"
        )))?;
    let length = new.expose_secret().len();
    if length < info.min_pin_length() || length > info.max_pin_length() {
        return Err(TokenError::NewPinLength {
            token: token.into(),
            length,
            min: info.min_pin_length(),
            max: info.max_pin_length(),
        });
    }
    Ok(())
}
