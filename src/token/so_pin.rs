//! The security officer's PIN: unlocking a locked user PIN (C_InitPIN) and changing the
//! SO PIN (C_SetPIN while logged in as SO). Each is one SO login, never retried: on a
//! smart card a few wrong SO PINs (PUK) make the card unusable for good.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::error::TokenError;
use super::pin_flags::PinFlags;
use super::pin_length::{check_new_pin_length, check_pin_length};

/// The SO-PIN flags a token reports (CKF_SO_PIN_COUNT_LOW / FINAL_TRY / LOCKED).
pub fn so_pin_flags(ctx: &Pkcs11, slot: Slot) -> Option<PinFlags> {
    let info = ctx.get_token_info(slot).ok()?;
    Some(PinFlags {
        count_low: info.so_pin_count_low(),
        final_try: info.so_pin_final_try(),
        locked: info.so_pin_locked(),
    })
}

/// Logs the security officer in on `session`, once. Refuses without trying when the token
/// says the SO PIN is locked, or on its final try and `allow_final_try` is false.
pub fn so_login(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    session: &Session,
    so_pin: &SecretString,
    allow_final_try: bool,
) -> Result<(), TokenError> {
    let before = so_pin_flags(ctx, slot).unwrap_or_default();
    if before.locked {
        return Err(TokenError::SoPinLocked {
            token: token.into(),
        });
    }
    if before.final_try && !allow_final_try {
        return Err(TokenError::SoPinFinalTry {
            token: token.into(),
        });
    }
    check_pin_length(ctx, slot, token, so_pin)?;
    match session.login(UserType::So, Some(so_pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(TokenError::SoPinIncorrect {
            token: token.into(),
            flags: so_pin_flags(ctx, slot).unwrap_or_default(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(TokenError::SoPinLocked {
            token: token.into(),
        }),
        Err(e) => Err(TokenError::pkcs11(format!(
            "logging in as security officer to token \"{token}\" (if another program is logged in, such as the daemon, stop it first)"
        ))(e)),
    }
}

/// Sets a new user PIN with the SO PIN (C_InitPIN): the way out of a locked user PIN. One
/// SO login, never retried; the SO is logged out again afterwards.
pub fn unlock_user_pin(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    session: &Session,
    so_pin: &SecretString,
    new: &SecretString,
    allow_final_try: bool,
) -> Result<(), TokenError> {
    check_new_pin_length(ctx, slot, token, new)?;
    so_login(ctx, slot, token, session, so_pin, allow_final_try)?;
    let set = session.init_pin(new).map_err(TokenError::pkcs11(format!(
        "setting the user PIN (C_InitPIN) of token \"{token}\""
    )));
    // Logging out cannot undo C_InitPIN; a failure here only means the session ends later.
    let _ = session.logout();
    set
}

/// Changes the SO PIN: one SO login with `old`, then C_SetPIN, which PKCS#11 applies to the
/// user logged in (here the SO). Never retried.
pub fn change_so_pin(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    session: &Session,
    old: &SecretString,
    new: &SecretString,
    allow_final_try: bool,
) -> Result<(), TokenError> {
    check_new_pin_length(ctx, slot, token, new)?;
    so_login(ctx, slot, token, session, old, allow_final_try)?;
    let set = session
        .set_pin(old, new)
        .map_err(TokenError::pkcs11(format!(
            "changing the SO PIN (C_SetPIN) of token \"{token}\""
        )));
    let _ = session.logout();
    set
}
