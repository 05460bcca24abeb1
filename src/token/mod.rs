//! The PKCS#11 token: load a module, pick a token by label or URI, log in without ever
//! retrying a PIN, create and find objects, sign, and derive an ECDH secret.
//!
//! Errors keep the PKCS#11 function and return value that failed, so the log can say
//! `C_Login returned CKR_PIN_INCORRECT`, and the layers above decide what the operator or
//! the caller is told.

mod derive;
mod error;
mod family;
mod generate;
mod login;
mod module;
mod objects;
mod open;
mod pin_flags;
mod pin_length;
mod probe;
mod raw;
mod sign;
mod so_pin;
pub mod softhsm;
mod summary;
mod unwrap;
mod uri;

pub use derive::{check_derive_mechanism, ecdh_derive, P256_SECRET_LEN};
pub use error::{ckr_name, describe, TokenError};
pub use family::{offers_any_unwrap, ModuleFamily};
pub use generate::{
    clear_decrypt, curve_params, disable_signing, generate_key_pair, identify, pair_gen_mechanism,
    read_public_key, KeyUse,
};
pub use login::{change_pin, login};
pub use module::{discover_modules, Module};
pub use objects::{
    cert_template, find_objects, private_key_template, public_key_template, read_key_attrs,
    relabel, CertCategory, KeyAttrs, SensitiveTemplate, StoredKey,
};
pub use open::OpenToken;
pub use pin_flags::PinFlags;
pub use pin_length::check_new_pin_length;
pub use probe::{probe as probe_module, Probe};
pub use sign::{check_mechanisms, sign_digest};
pub use so_pin::{change_so_pin, so_login, so_pin_flags, unlock_user_pin};
pub use summary::TokenSummary;
pub use unwrap::{
    check_unwrap_mechanisms, refuses_plaintext_keys, unwrap_private_key, unwrapped_key_template,
    KeyWrap, UnwrapError,
};
pub use uri::{TokenSelector, UriError};
