//! A token opened for one job: module loaded, token selected, one session.

use std::path::Path;

use cryptoki::session::Session;
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::error::TokenError;
use super::login::{change_pin, login};
use super::module::Module;
use super::pin_flags::PinFlags;
use super::so_pin::{change_so_pin, so_pin_flags, unlock_user_pin};
use super::summary::TokenSummary;
use super::uri::TokenSelector;

/// A module, the selected token and an open session on it.
pub struct OpenToken {
    /// The session (dropped before the module, so C_CloseSession precedes C_Finalize).
    pub session: Session,
    /// The selected token.
    pub info: TokenSummary,
    /// Its slot.
    pub slot: Slot,
    /// The module.
    pub module: Module,
}

impl OpenToken {
    /// Loads `module`, finds the token `selector` names and opens a session,
    /// read-write when `rw`.
    pub fn open(module: &Path, selector: &TokenSelector, rw: bool) -> Result<Self, TokenError> {
        let module = Module::open(module)?;
        let (slot, info) = module.find_token(selector)?;
        let doing = format!("opening a session on token \"{}\"", info.label);
        let session = if rw {
            module.ctx().open_rw_session(slot)
        } else {
            module.ctx().open_ro_session(slot)
        }
        .map_err(TokenError::pkcs11(doing))?;
        Ok(Self {
            session,
            info,
            slot,
            module,
        })
    }

    /// Logs the user in, once; see [`login`].
    pub fn login(&self, pin: &SecretString, allow_final_try: bool) -> Result<(), TokenError> {
        login(
            self.module.ctx(),
            self.slot,
            &self.info.label,
            &self.session,
            pin,
            allow_final_try,
        )
    }

    /// Changes the user PIN, once; see [`change_pin`]. Needs a read-write session.
    pub fn change_pin(
        &self,
        old: &SecretString,
        new: &SecretString,
        allow_final_try: bool,
    ) -> Result<(), TokenError> {
        change_pin(
            self.module.ctx(),
            self.slot,
            &self.info.label,
            &self.session,
            old,
            new,
            allow_final_try,
        )
    }

    /// The user-PIN and SO-PIN flags the token reports now.
    pub fn pin_flags(&self) -> (PinFlags, PinFlags) {
        let ctx = self.module.ctx();
        (
            PinFlags::read(ctx, self.slot).unwrap_or_default(),
            so_pin_flags(ctx, self.slot).unwrap_or_default(),
        )
    }

    /// Sets a new user PIN with the SO PIN (C_InitPIN), once; see [`unlock_user_pin`].
    /// Needs a read-write session.
    pub fn unlock_user_pin(
        &self,
        so_pin: &SecretString,
        new: &SecretString,
        allow_final_try: bool,
    ) -> Result<(), TokenError> {
        unlock_user_pin(
            self.module.ctx(),
            self.slot,
            &self.info.label,
            &self.session,
            so_pin,
            new,
            allow_final_try,
        )
    }

    /// Changes the SO PIN, once; see [`change_so_pin`]. Needs a read-write session.
    pub fn change_so_pin(
        &self,
        old: &SecretString,
        new: &SecretString,
        allow_final_try: bool,
    ) -> Result<(), TokenError> {
        change_so_pin(
            self.module.ctx(),
            self.slot,
            &self.info.label,
            &self.session,
            old,
            new,
            allow_final_try,
        )
    }
}
