//! The user-PIN flags a token reports (count low, final try, locked), read before and
//! after a PIN operation and shown to the operator.

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;
use serde::Serialize;

/// The user-PIN flags a token reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PinFlags {
    /// CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since the last success.
    pub count_low: bool,
    /// CKF_USER_PIN_FINAL_TRY: the next wrong PIN locks it.
    pub final_try: bool,
    /// CKF_USER_PIN_LOCKED.
    pub locked: bool,
}

impl PinFlags {
    /// Reads the flags now.
    pub fn read(ctx: &Pkcs11, slot: Slot) -> Option<Self> {
        let info = ctx.get_token_info(slot).ok()?;
        Some(Self {
            count_low: info.user_pin_count_low(),
            final_try: info.user_pin_final_try(),
            locked: info.user_pin_locked(),
        })
    }
}

impl std::fmt::Display for PinFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.locked {
            f.write_str("LOCKED")
        } else if self.final_try {
            f.write_str("FINAL TRY: the next wrong PIN locks the token")
        } else if self.count_low {
            f.write_str("retry count low: wrong PINs have been entered")
        } else {
            f.write_str("no retry warnings reported by the token (not every token counts)")
        }
    }
}
