//! tpm2-pkcs11 on swtpm test tokens: PLACEHOLDER. Another change brings the real backend
//! (swtpm, tpm2-abrmd on a private D-Bus, `tpm2_ptool init` / `addtoken`) with this same
//! `create`; until then the TPM family is off (HSM_SIGNER_TEST_TPM unset) and this only
//! says so.

use super::{Backend, Result};

/// A fresh tpm2-pkcs11 token labelled `label`: not wired yet.
pub fn create(label: &str, _so_pin: &str, _pin: &str) -> Result<Backend> {
    Err(format!("TPM family not wired yet (token {label:?} not created)").into())
}
