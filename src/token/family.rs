//! Which PKCS#11 implementation a module is, for messages that name the settings that
//! implementation reads: SOFTHSM2_CONF means nothing to kryoptic, and a TPM's store is
//! found through TPM2_PKCS11_STORE.

use std::path::Path;

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;

/// A PKCS#11 implementation hsm-signer knows the configuration of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleFamily {
    /// SoftHSM2 (libsofthsm2.so).
    SoftHsm,
    /// kryoptic (libkryoptic_pkcs11.so).
    Kryoptic,
    /// tpm2-pkcs11 (libtpm2_pkcs11.so).
    Tpm2,
    /// p11-kit's client module, forwarding to a `p11-kit server`.
    P11KitClient,
    /// Any other: a vendor's HSM, smart-card or cloud module.
    Other,
}

impl ModuleFamily {
    /// The family of the module at `path`, from its file name and, when known, the
    /// manufacturer C_GetInfo gives (which survives a renamed or symlinked file).
    pub fn detect(path: &Path, manufacturer: Option<&str>) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let maker = manufacturer.unwrap_or_default().to_lowercase();
        if name.contains("softhsm") || maker.starts_with("softhsm") {
            ModuleFamily::SoftHsm
        } else if name.contains("kryoptic") || maker.contains("kryoptic") {
            ModuleFamily::Kryoptic
        } else if name.contains("tpm2_pkcs11")
            || name.contains("tpm2-pkcs11")
            || maker.contains("tpm2-software")
        {
            ModuleFamily::Tpm2
        } else if name.contains("p11-kit-client") {
            ModuleFamily::P11KitClient
        } else {
            ModuleFamily::Other
        }
    }

    /// The family of a loaded module from C_GetInfo's manufacturer alone (where only the
    /// context is at hand).
    pub fn of(ctx: &Pkcs11) -> Self {
        match ctx.get_library_info() {
            Ok(info) => Self::detect(Path::new(""), Some(info.manufacturer_id())),
            Err(_) => ModuleFamily::Other,
        }
    }

    /// Whether the module takes a private key through PKCS#11 (C_CreateObject or
    /// C_UnwrapKey). tpm2-pkcs11 does not: it makes private keys only inside the TPM and
    /// answers C_CreateObject of one with CKR_ATTRIBUTE_VALUE_INVALID (tpm2-pkcs11 1.9);
    /// keys reach it by `tpm2_ptool import` (docs/tpm.md). Every other family does, or is
    /// asked and refuses with a CKR value of its own.
    pub fn takes_private_keys(self) -> bool {
        self != ModuleFamily::Tpm2
    }

    /// Whether C_GenerateKeyPair fails when the templates set CKA_ENCRYPT / CKA_DECRYPT.
    /// tpm2-pkcs11 creates every TPM key for signing and decryption alike and refuses a
    /// template that asks otherwise ("User specified and TPM specified attr mismatch",
    /// CKR_GENERAL_ERROR, tpm2-pkcs11 1.9), so on it the templates leave both out and
    /// decryption is switched off afterwards, where the token allows it
    /// ([`clear_decrypt`](super::generate::clear_decrypt)); the new key may still decrypt.
    pub fn decrypt_attribute_breaks_generate(self) -> bool {
        self == ModuleFamily::Tpm2
    }

    /// Whether CKR_PIN_LOCKED can mean a dictionary-attack lockout of the device rather
    /// than a locked PIN: tpm2-pkcs11 reports the TPM's lockout this way, and its token
    /// flags never show CKF_USER_PIN_LOCKED, so the message names the TPM's lockout
    /// recovery instead of an SO PIN reset.
    pub fn locks_out_as_a_device(self) -> bool {
        self == ModuleFamily::Tpm2
    }

    /// What to check when the module initialises but shows no token, or fails to
    /// initialise: the settings this implementation reads.
    pub fn setup_hint(self) -> &'static str {
        match self {
            ModuleFamily::SoftHsm => "SoftHSM finds its tokens in the directory that the file named by SOFTHSM2_CONF (default /etc/softhsm/softhsm2.conf) sets as directories.tokendir: is SOFTHSM2_CONF set for this process (sudo drops it without --preserve-env=SOFTHSM2_CONF; runuser -u keeps it), is that directory readable by this account, and is the token initialised (softhsm2-util --init-token)?",
            ModuleFamily::Kryoptic => "kryoptic finds its tokens through the file KRYOPTIC_CONF names ([[slots]] with dbtype and dbargs, the token's database): is KRYOPTIC_CONF set for this process (sudo drops it without --preserve-env=KRYOPTIC_CONF; runuser -u keeps it), does the database exist and is it readable by this account, and is the token initialised (pkcs11-tool --init-token)?",
            ModuleFamily::Tpm2 => "tpm2-pkcs11 finds its tokens in the store TPM2_PKCS11_STORE names and the TPM through TPM2_PKCS11_TCTI (e.g. device:/dev/tpmrm0, or tabrmd for tpm2-abrmd): are both set for this process, is the TPM reachable by this account, and was the token added (tpm2_ptool addtoken)?",
            ModuleFamily::P11KitClient => "p11-kit's client module forwards to the `p11-kit server` that P11_KIT_SERVER_ADDRESS names: is it set for this process, and is the server running and serving this token?",
            ModuleFamily::Other => "is the card in the reader, the HSM reachable from this machine, and the token initialised with the vendor's tool?",
        }
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
    fn families_by_file_name_and_manufacturer() {
        let at = |p: &str, m: Option<&str>| ModuleFamily::detect(Path::new(p), m);
        assert_eq!(
            at("/usr/lib/softhsm/libsofthsm2.so", None),
            ModuleFamily::SoftHsm
        );
        assert_eq!(
            at("/x/release/libkryoptic_pkcs11.so", None),
            ModuleFamily::Kryoptic
        );
        assert_eq!(
            at("/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so", None),
            ModuleFamily::Tpm2
        );
        assert_eq!(
            at("/opt/hsm/lib/token.so", Some("Kryoptic Project")),
            ModuleFamily::Kryoptic
        );
        assert_eq!(
            at("/opt/safenet/libCryptoki2_64.so", None),
            ModuleFamily::Other
        );
        assert!(ModuleFamily::Kryoptic
            .setup_hint()
            .contains("KRYOPTIC_CONF"));
        assert!(!ModuleFamily::Kryoptic
            .setup_hint()
            .contains("SOFTHSM2_CONF"));
        assert!(ModuleFamily::Tpm2
            .setup_hint()
            .contains("TPM2_PKCS11_STORE"));
        assert!(ModuleFamily::Tpm2.setup_hint().contains("TPM2_PKCS11_TCTI"));
        assert!(!ModuleFamily::Other.setup_hint().contains("SOFTHSM2_CONF"));
        assert_eq!(
            at("/x.so", Some("tpm2-software.github.io         ")),
            ModuleFamily::Tpm2
        );
    }
}
