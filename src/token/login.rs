//! Logging in with the user PIN: once, never retried.
//!
//! Smart cards lock after a few wrong PINs, so a failed C_Login is reported with the PIN
//! status the token shows and is never repeated. CKR_USER_ALREADY_LOGGED_IN is success:
//! login state belongs to the application and token, not to one session.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::error::TokenError;
use super::family::ModuleFamily;
use super::pin_flags::PinFlags;
use super::pin_length::{check_new_pin_length, check_pin_length};

/// Logs the user in on `session`, once.
///
/// Refuses without trying when the token says the PIN is locked, or says the next wrong
/// PIN locks it and `allow_final_try` is false, or when the PIN's length is outside the
/// token's limits.
pub fn login(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    session: &Session,
    pin: &SecretString,
    allow_final_try: bool,
) -> Result<(), TokenError> {
    guard(ctx, slot, token, allow_final_try)?;
    check_pin_length(ctx, slot, token, pin)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(pin_error(ctx, slot, token, e, "logging in to token")),
    }
}

/// Refuses without trying when the token says the PIN is locked, or says the next wrong
/// PIN locks it and `allow_final_try` is false.
fn guard(ctx: &Pkcs11, slot: Slot, token: &str, allow_final_try: bool) -> Result<(), TokenError> {
    let before = PinFlags::read(ctx, slot).unwrap_or_default();
    if before.locked {
        return Err(TokenError::PinLocked {
            token: token.into(),
            tpm_lockout: ModuleFamily::of(ctx).locks_out_as_a_device(),
        });
    }
    if before.final_try && !allow_final_try {
        return Err(TokenError::PinFinalTry {
            token: token.into(),
        });
    }
    Ok(())
}

/// A failed C_Login or C_SetPIN, named: a wrong PIN with the flags the token now shows.
fn pin_error(ctx: &Pkcs11, slot: Slot, token: &str, e: CkError, doing: &str) -> TokenError {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => TokenError::PinIncorrect {
            token: token.into(),
            flags: PinFlags::read(ctx, slot).unwrap_or_default(),
        },
        // tpm2-pkcs11 reports the TPM's dictionary-attack lockout this way (its token
        // flags never show CKF_USER_PIN_LOCKED).
        CkError::Pkcs11(RvError::PinLocked, _) => TokenError::PinLocked {
            token: token.into(),
            tpm_lockout: ModuleFamily::of(ctx).locks_out_as_a_device(),
        },
        CkError::Pkcs11(RvError::PinLenRange, _) => TokenError::PinLength {
            token: token.into(),
        },
        e => TokenError::pkcs11(format!("{doing} \"{token}\""))(e),
    }
}

/// Changes the user PIN from `old` to `new` with one C_SetPIN in a read-write session
/// that is not logged in (PKCS#11 then changes the CKU_USER PIN after checking `old`):
/// one attempt, never retried. The same guards as [`login`] come first: a locked token,
/// or one on its final try without `allow_final_try`, is not touched. The new PIN's
/// length is checked against the token's limits before the call.
pub fn change_pin(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    session: &Session,
    old: &SecretString,
    new: &SecretString,
    allow_final_try: bool,
) -> Result<(), TokenError> {
    guard(ctx, slot, token, allow_final_try)?;
    check_pin_length(ctx, slot, token, old)?;
    check_new_pin_length(ctx, slot, token, new)?;
    session.set_pin(old, new).map_err(|e| {
        pin_error(
            ctx,
            slot,
            token,
            e,
            "changing the user PIN (C_SetPIN) of token",
        )
    })
}
