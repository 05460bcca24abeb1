//! Which PKCS#11 implementation a module is, for the few places where one behaves
//! differently enough to need its own handling or its own advice.

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;

/// The implementations hsm-signer knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// tpm2-pkcs11 (a TPM 2.0 behind PKCS#11): takes no private key through PKCS#11,
    /// makes every key it generates both sign and decrypt, and answers a TPM
    /// dictionary-attack lockout with CKR_PIN_LOCKED.
    Tpm2Pkcs11,
    /// Anything else.
    Other,
}

/// What C_GetInfo's manufacturerID says for tpm2-pkcs11 (1.x).
const TPM2_PKCS11_MANUFACTURER: &str = "tpm2-software.github.io";

impl Family {
    /// The family of the loaded module, from C_GetInfo.
    pub fn of(ctx: &Pkcs11) -> Self {
        match ctx.get_library_info() {
            Ok(info) => Self::from_manufacturer(info.manufacturer_id()),
            Err(_) => Family::Other,
        }
    }

    fn from_manufacturer(manufacturer: &str) -> Self {
        if manufacturer.trim_end() == TPM2_PKCS11_MANUFACTURER {
            Family::Tpm2Pkcs11
        } else {
            Family::Other
        }
    }

    /// True for tpm2-pkcs11.
    pub fn is_tpm(self) -> bool {
        self == Family::Tpm2Pkcs11
    }
}

/// Whether any mechanism of the token has CKF_UNWRAP, so that some wrapped import could
/// work at all. A token whose list or flags cannot be read counts as offering one: this
/// answer is used only to say "no way in through PKCS#11", which must be sure.
pub fn offers_any_unwrap(ctx: &Pkcs11, slot: Slot) -> bool {
    let Ok(mechanisms) = ctx.get_mechanism_list(slot) else {
        return true;
    };
    mechanisms.into_iter().any(|m| {
        ctx.get_mechanism_info(slot, m)
            .map(|info| info.unwrap())
            .unwrap_or(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2_pkcs11_is_known_by_its_manufacturer() {
        assert_eq!(
            Family::from_manufacturer("tpm2-software.github.io         "),
            Family::Tpm2Pkcs11
        );
        assert_eq!(Family::from_manufacturer("SoftHSM"), Family::Other);
    }
}
