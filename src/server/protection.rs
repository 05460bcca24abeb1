//! Keys that could leave the token: CKA_EXTRACTABLE true, or CKA_SENSITIVE false.
//!
//! `import` and `generate` never store such a key, and `verify` refuses one, but a key
//! put on the token by another tool can be one: `tpm2_ptool import` leaves every key
//! CKA_EXTRACTABLE true (the TPM could duplicate it under another parent). `serve` reads
//! the two attributes of every configured key at start and on reload, warns about each
//! such key, and shows it in `/v1/health` (a per-key `extractable` field, status
//! "warning"). With `[server] refuse_extractable_keys = true` it refuses to start, or to
//! reload, while a configured key is one.
//!
//! The attributes are read on a session of its own in the signer's already logged-in
//! module: the login belongs to the application, so this makes no second C_Login.

use std::collections::HashMap;
use std::path::Path;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use serde::Serialize;

use crate::token::{find_objects, OpenToken, TokenError, TokenSelector};

/// How a configured key is protected, as the token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Protection {
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
}

impl Protection {
    /// True when the key could leave the token in some form.
    pub fn can_leave(self) -> bool {
        self.extractable || !self.sensitive
    }

    /// What is wrong, in the words `verify` uses.
    pub fn problems(self) -> String {
        let mut out = Vec::new();
        if self.extractable {
            out.push("CKA_EXTRACTABLE is true");
        }
        if !self.sensitive {
            out.push("CKA_SENSITIVE is false");
        }
        out.join(", ")
    }
}

/// CKA_LABEL → protection, for the labels found.
pub type Protections = HashMap<String, Protection>;

/// Reads CKA_EXTRACTABLE and CKA_SENSITIVE of the private key labelled with each of
/// `labels`. Labels not found (or found twice) are left out: the signer reports them.
pub fn inspect(
    module: &Path,
    selector: &TokenSelector,
    labels: &[String],
) -> Result<Protections, TokenError> {
    let token = OpenToken::open(module, selector, false)?;
    let mut out = Protections::new();
    for label in labels {
        let keys = find_objects(
            &token.session,
            Some(ObjectClass::PRIVATE_KEY),
            Some(label),
            None,
        )?;
        let [key] = keys.as_slice() else {
            continue;
        };
        let attrs = token
            .session
            .get_attributes(
                *key,
                &[AttributeType::Extractable, AttributeType::Sensitive],
            )
            .map_err(TokenError::pkcs11(format!(
                "reading CKA_EXTRACTABLE and CKA_SENSITIVE of \"{label}\""
            )))?;
        // A token that does not answer an attribute is taken at its worst.
        let mut protection = Protection {
            extractable: true,
            sensitive: false,
        };
        for attr in attrs {
            match attr {
                Attribute::Extractable(b) => protection.extractable = b,
                Attribute::Sensitive(b) => protection.sensitive = b,
                _ => {}
            }
        }
        out.insert(label.clone(), protection);
    }
    Ok(out)
}

/// One line per key that could leave the token, `name` (label): problems.
pub fn leaving<'a>(
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    found: &Protections,
) -> Vec<String> {
    keys.into_iter()
        .filter_map(|(name, label)| {
            let p = found.get(label)?;
            p.can_leave()
                .then(|| format!("key \"{name}\" (label \"{label}\"): {}", p.problems()))
        })
        .collect()
}

/// Why the daemon will not serve: keys that could leave the token, with
/// `refuse_extractable_keys = true`.
pub fn refusal(leaving: &[String]) -> String {
    format!(
        "refuse_extractable_keys = true and {} could leave the token: {}. A key imported with `tpm2_ptool import` is CKA_EXTRACTABLE true until `hsm-signer import-cert` clears it (where the token allows); otherwise generate the key on the token (`hsm-signer generate`) or import it with `hsm-signer import`, or set refuse_extractable_keys = false to serve it with a warning",
        if leaving.len() == 1 { "a configured key" } else { "configured keys" },
        leaving.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_that_can_leave_are_named() {
        let mut found = Protections::new();
        found.insert(
            "a".into(),
            Protection {
                extractable: true,
                sensitive: true,
            },
        );
        found.insert(
            "b".into(),
            Protection {
                extractable: false,
                sensitive: true,
            },
        );
        let lines = leaving([("epuap", "a"), ("wk", "b"), ("gone", "c")], &found);
        assert_eq!(
            lines,
            vec!["key \"epuap\" (label \"a\"): CKA_EXTRACTABLE is true".to_string()]
        );
        assert!(refusal(&lines).contains("refuse_extractable_keys = true"));
    }
}
