//! The token layer's error: what was being done, and the PKCS#11 call and value that failed.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use super::pin_flags::PinFlags;
use super::summary::TokenSummary;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module file does not exist or does not load: the only error that lists the
    /// modules found on this system, since the path itself may be what is wrong.
    #[error("cannot load the PKCS#11 module {path}: {detail}\n{}", found_list(.found))]
    ModuleLoad {
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        detail: String,
        /// Modules found on this system, to suggest.
        found: Vec<PathBuf>,
    },
    /// The module loaded but C_Initialize failed: its configuration or its device.
    #[error("the PKCS#11 module {path} loaded but did not initialise: {}. {hint}", describe(.cause))]
    ModuleInit {
        /// The path given.
        path: PathBuf,
        /// cryptoki's error, with the CKR_ code.
        cause: CkError,
        /// What this module reads, to check ([`super::ModuleFamily::setup_hint`]).
        hint: &'static str,
    },
    /// No token matches the selector.
    #[error("no token matches {selector} in {module}\n{}", tokens_list(.seen, .hint))]
    TokenNotFound {
        /// The selector as given.
        selector: String,
        /// The module.
        module: PathBuf,
        /// The tokens the module shows.
        seen: Vec<TokenSummary>,
        /// What this module reads, to check when it shows no token.
        hint: &'static str,
    },
    /// More than one token matches.
    #[error("{selector} matches {} tokens; select one by serial (pkcs11:serial=...)\n{}", .matches.len(), tokens_list(.matches, ""))]
    TokenAmbiguous {
        /// The selector as given.
        selector: String,
        /// The matching tokens.
        matches: Vec<TokenSummary>,
    },
    /// C_Login said the PIN is wrong. Never retried.
    #[error("wrong PIN for token \"{token}\" (C_Login returned CKR_PIN_INCORRECT); not retried, because smart cards lock after a few wrong PINs. Token PIN status now: {flags}")]
    PinIncorrect {
        /// The token label.
        token: String,
        /// The PIN flags read right after the failure.
        flags: PinFlags,
    },
    /// The user PIN is locked (CKR_PIN_LOCKED, or CKF_USER_PIN_LOCKED). On a TPM this is
    /// the TPM's dictionary-attack lockout, which the SO PIN does not lift.
    #[error("{}", pin_locked_text(.token, *.tpm_lockout))]
    PinLocked {
        /// The token label.
        token: String,
        /// The token is a TPM (tpm2-pkcs11): the lock is its dictionary-attack lockout.
        tpm_lockout: bool,
    },
    /// The token says the next wrong PIN locks it, and the caller did not accept the risk.
    #[error("token \"{token}\" reports that the next wrong PIN locks it (CKF_USER_PIN_FINAL_TRY); not logging in. If you are sure of the PIN, re-run with --pin-final-try")]
    PinFinalTry {
        /// The token label.
        token: String,
    },
    /// C_Login as security officer said the SO PIN is wrong. Never retried.
    #[error("wrong SO PIN for token \"{token}\" (C_Login as SO returned CKR_PIN_INCORRECT); not retried, because a card whose SO PIN (PUK) locks cannot be unlocked at all. SO PIN status now: {flags}")]
    SoPinIncorrect {
        /// The token label.
        token: String,
        /// The SO-PIN flags read right after the failure.
        flags: PinFlags,
    },
    /// The SO PIN is locked.
    #[error("the SO PIN of token \"{token}\" is locked: the token can no longer be unlocked; only re-initialising it (which destroys its keys) or the vendor can help")]
    SoPinLocked {
        /// The token label.
        token: String,
    },
    /// The token says the next wrong SO PIN locks it.
    #[error("token \"{token}\" reports that the next wrong SO PIN locks it (CKF_SO_PIN_FINAL_TRY); not logging in. If you are sure of the SO PIN, re-run with --pin-final-try")]
    SoPinFinalTry {
        /// The token label.
        token: String,
    },
    /// The PIN has a length the token does not accept.
    #[error("the PIN for token \"{token}\" has a length the token does not accept (CKR_PIN_LEN_RANGE); check the PIN file for extra characters")]
    PinLength {
        /// The token label.
        token: String,
    },
    /// The PIN given to log in is outside the token's length limits (checked before
    /// C_Login, so that no try is spent on a PIN the token cannot hold).
    #[error("the PIN for token \"{token}\" has {length} bytes; the token takes {min} to {max}: not logging in, so no try was spent. Check that the PIN file or variable holds the PIN and nothing else")]
    CurrentPinLength {
        /// The token label.
        token: String,
        /// The PIN's length in bytes.
        length: usize,
        /// The token's minimum.
        min: usize,
        /// The token's maximum.
        max: usize,
    },
    /// A new PIN outside the token's length limits (checked before C_SetPIN).
    #[error("the new PIN has {length} characters; token \"{token}\" takes {min} to {max}: nothing was changed")]
    NewPinLength {
        /// The token label.
        token: String,
        /// The new PIN's length in bytes.
        length: usize,
        /// The token's minimum.
        min: usize,
        /// The token's maximum.
        max: usize,
    },
    /// The token lacks a mechanism a key needs.
    #[error("token \"{token}\" does not offer {mechanism}, which {purpose} needs")]
    MechanismMissing {
        /// The token label.
        token: String,
        /// The mechanism.
        mechanism: String,
        /// What needs it.
        purpose: String,
    },
    /// A key pair just generated on the token cannot be read back or used.
    #[error("the key pair just generated on the token is unusable: {detail}")]
    GeneratedKey {
        /// What is wrong.
        detail: String,
    },
    /// No private key with this label.
    #[error("no private key labelled \"{label}\" on token \"{token}\" (is the PIN for the right token? `hsm-signer list` shows what is there)")]
    KeyNotFound {
        /// The label.
        label: String,
        /// The token label.
        token: String,
    },
    /// A key found, but with no certificate beside it.
    #[error("the key \"{label}\" on token \"{token}\" has no certificate with the same CKA_ID; import it with its certificate")]
    CertificateMissing {
        /// The label.
        label: String,
        /// The token label.
        token: String,
    },
    /// A stored object could not be understood.
    #[error("object \"{label}\" on token \"{token}\": {detail}")]
    BadObject {
        /// The label.
        label: String,
        /// The token label.
        token: String,
        /// What is wrong.
        detail: String,
    },
    /// The token answers but shows no objects any more: its store went away under us.
    #[error("token \"{token}\" answers but shows no objects any more (its store was removed or replaced)")]
    TokenEmpty {
        /// The token label.
        token: String,
    },
    /// Any other PKCS#11 failure.
    #[error("{doing}: {}", describe(.cause))]
    Pkcs11 {
        /// What hsm-signer was doing.
        doing: String,
        /// cryptoki's error, with the PKCS#11 function. Not a `source`: its own text is a
        /// paragraph from the PKCS#11 spec; [`describe`] gives the function and CKR_ name.
        cause: CkError,
    },
}

impl TokenError {
    /// Wraps a cryptoki error with what was being done.
    pub fn pkcs11(doing: impl Into<String>) -> impl FnOnce(CkError) -> TokenError {
        let doing = doing.into();
        move |cause| TokenError::Pkcs11 { doing, cause }
    }

    /// The PKCS#11 return value, when this is a PKCS#11 failure.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            TokenError::Pkcs11 {
                cause: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            TokenError::PinIncorrect { .. } => Some(RvError::PinIncorrect),
            TokenError::PinLocked { .. } => Some(RvError::PinLocked),
            _ => None,
        }
    }

    /// True when an object handle stopped being valid: the object was destroyed or
    /// replaced by another application.
    pub fn is_stale_handle(&self) -> bool {
        matches!(
            self.rv(),
            Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid)
        )
    }

    /// True when the token cannot be reached now but may be later: its link or device is
    /// down, the module loads but cannot initialise (a network HSM's client module with no
    /// server yet), or no token matches yet. Not a wrong PIN, a missing key or a module
    /// file that is not there.
    pub fn is_unreachable(&self) -> bool {
        self.is_connection_lost() || matches!(self, TokenError::ModuleInit { .. })
    }

    /// True when the token or its link is gone or the session was lost: worth reopening.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
                    | RvError::UserNotLoggedIn
                    | RvError::CryptokiNotInitialized
                    | RvError::SlotIdInvalid
                    | RvError::GeneralError
            )
        ) || matches!(
            self,
            TokenError::TokenNotFound { .. } | TokenError::TokenEmpty { .. }
        )
    }

    /// CKR_GENERAL_ERROR: the token's "something failed", which may be one key's fault
    /// (kryoptic answers a deleted key's C_SignInit so) or the whole token's.
    pub fn is_general_error(&self) -> bool {
        matches!(self.rv(), Some(RvError::GeneralError))
    }

    /// True when the fault belongs to one key (not found, no certificate, unusable
    /// object), not to the token: the other keys can go on signing.
    pub fn is_key_fault(&self) -> bool {
        matches!(
            self,
            TokenError::KeyNotFound { .. }
                | TokenError::CertificateMissing { .. }
                | TokenError::BadObject { .. }
        )
    }
}

/// `CKR_PIN_INCORRECT` from cryptoki's `PinIncorrect`.
pub fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for ch in camel.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// A cryptoki error as "C_Initialize returned CKR_GENERAL_ERROR": the function as
/// PKCS#11 names it and the CKR_ name of the value, never cryptoki's paragraph from the
/// spec, which names neither.
pub fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => {
            format!("{} returned {}", c_name(*function), ckr_name(*rv))
        }
        other => other.to_string(),
    }
}

/// `C_GetInterface` from cryptoki's `Function::GetInterface` (whose Display is
/// "Function::GetInterface").
fn c_name(function: cryptoki::context::Function) -> String {
    format!("C_{function:?}")
}

/// The cure differs: a card's SO unblocks the user PIN; a TPM's lockout is cleared with
/// the TPM's lockout authorisation (or ends by itself after the recovery time).
fn pin_locked_text(token: &str, tpm_lockout: bool) -> String {
    if tpm_lockout {
        format!(
            "token \"{token}\" is a TPM in dictionary-attack lockout (C_Login returned CKR_PIN_LOCKED): the TPM refuses every PIN until the lockout is cleared. It counts wrong PINs and also unclean restarts (power loss, a killed TPM or tpm2-abrmd); the SO PIN does not help. Check the PIN file first, then clear the lockout with the TPM's lockout authorisation: `tpm2_dictionarylockout --clear-lockout` (add `--auth file:FILE` if a lockout auth is set; `tpm2_getcap properties-variable` shows TPM2_PT_LOCKOUT_COUNTER and inLockout), or wait for the TPM's lockout recovery time"
        )
    } else {
        format!(
            "the user PIN of token \"{token}\" is locked: nothing can log in until the security officer unlocks it with the SO PIN (`hsm-signer pin unlock`, or the token vendor's tool)"
        )
    }
}

fn found_list(found: &[PathBuf]) -> String {
    if found.is_empty() {
        return "No PKCS#11 modules were found in the usual places; install the token vendor's module (for SoftHSM2: apt-get install softhsm2).".into();
    }
    let mut text = String::from("PKCS#11 modules found on this system:");
    for path in found {
        text.push_str(&format!("\n  {}", path.display()));
    }
    text
}

fn tokens_list(seen: &[TokenSummary], hint: &str) -> String {
    if seen.is_empty() {
        return format!("The module shows no token. {hint}");
    }
    let mut text = String::from("Tokens seen:");
    for t in seen {
        text.push_str(&format!(
            "\n  slot {}: label \"{}\", serial {}, {} {}",
            t.slot, t.label, t.serial, t.manufacturer, t.model
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_tpm_names_the_dictionary_attack_lockout_and_its_cure() {
        let tpm = TokenError::PinLocked {
            token: "T".into(),
            tpm_lockout: true,
        }
        .to_string();
        assert!(tpm.contains("dictionary-attack lockout"), "{tpm}");
        assert!(
            tpm.contains("tpm2_dictionarylockout --clear-lockout"),
            "{tpm}"
        );
        assert!(tpm.contains("CKR_PIN_LOCKED"), "{tpm}");
        assert!(!tpm.contains("unlocks it (with the SO PIN"), "{tpm}");
        let card = TokenError::PinLocked {
            token: "T".into(),
            tpm_lockout: false,
        }
        .to_string();
        assert!(card.contains("SO PIN") && !card.contains("tpm2_"), "{card}");
    }

    #[test]
    fn ckr_names_match_the_spec() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
        assert_eq!(ckr_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
    }

    #[test]
    fn errors_name_the_c_function_and_the_ckr_code() {
        use cryptoki::context::Function;
        let err = CkError::Pkcs11(RvError::GeneralError, Function::Initialize);
        assert_eq!(describe(&err), "C_Initialize returned CKR_GENERAL_ERROR");
        let err = CkError::Pkcs11(RvError::DeviceError, Function::GetInterface);
        assert_eq!(describe(&err), "C_GetInterface returned CKR_DEVICE_ERROR");
    }
}
