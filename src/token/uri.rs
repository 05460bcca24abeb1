//! `--token`: a token label, or an RFC 7512 `pkcs11:` URI.
//!
//! Path attributes select the token (`token`, `serial`, `manufacturer`, `model`) and the
//! object (`object`, `id`); the query attributes `module-path` and `pin-source` are
//! honoured. `pin-value` is refused: a PIN in a URI is a PIN in argv and shell history.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::summary::TokenSummary;

/// Which token (and optionally which object) to use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// The text as given, for messages.
    pub given: String,
    /// CKA token label (`token=`).
    pub label: Option<String>,
    /// Token serial number (`serial=`).
    pub serial: Option<String>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
    /// Object label (`object=`).
    pub object: Option<String>,
    /// Object ID (`id=`, percent-encoded bytes).
    pub id: Option<Vec<u8>>,
    /// Module to load (`?module-path=`).
    pub module_path: Option<PathBuf>,
    /// File holding the PIN (`?pin-source=`, a path or `file:` URI).
    pub pin_source: Option<PathBuf>,
}

/// A `--token` value that is not a usable selector.
#[derive(Debug, thiserror::Error)]
pub enum UriError {
    /// Bad syntax.
    #[error("invalid PKCS#11 URI {given:?}: {why}")]
    Syntax {
        /// The URI.
        given: String,
        /// What is wrong.
        why: String,
    },
    /// `pin-value` present.
    #[error("the PKCS#11 URI carries pin-value: a PIN on the command line is visible to every local user; use pin-source=FILE, --pin-file or HSM_SIGNER_PIN instead")]
    PinValue,
    /// An empty label.
    #[error("--token is empty: give a token label or a pkcs11: URI")]
    Empty,
}

impl TokenSelector {
    /// Parses a label or a `pkcs11:` URI.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        if text.trim().is_empty() {
            return Err(UriError::Empty);
        }
        let Some(rest) = text.strip_prefix("pkcs11:") else {
            return Ok(Self {
                given: format!("token label \"{text}\""),
                label: Some(text.to_string()),
                ..Self::default()
            });
        };
        let mut sel = Self {
            given: text.to_string(),
            ..Self::default()
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = split_attr(text, part)?;
            let decoded = || decode_str(text, value);
            match name {
                "token" => sel.label = Some(decoded()?),
                "serial" => sel.serial = Some(decoded()?),
                "manufacturer" => sel.manufacturer = Some(decoded()?),
                "model" => sel.model = Some(decoded()?),
                "object" => sel.object = Some(decoded()?),
                "id" => sel.id = Some(percent_decode_str(value).collect()),
                // Other path attributes (type, library-*, slot-*) narrow nothing we need.
                _ => {}
            }
        }
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = split_attr(text, part)?;
            match name {
                "module-path" => sel.module_path = Some(PathBuf::from(decode_str(text, value)?)),
                "pin-source" => {
                    let source = decode_str(text, value)?;
                    let path = source.strip_prefix("file:").unwrap_or(&source);
                    let path = path.strip_prefix("//").unwrap_or(path);
                    sel.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => return Err(UriError::PinValue),
                _ => {}
            }
        }
        Ok(sel)
    }

    /// True when `token` satisfies every token attribute given.
    pub fn matches(&self, token: &TokenSummary) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.label, &token.label)
            && eq(&self.serial, &token.serial)
            && eq(&self.manufacturer, &token.manufacturer)
            && eq(&self.model, &token.model)
    }
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.given)
    }
}

fn split_attr<'a>(given: &str, part: &'a str) -> Result<(&'a str, &'a str), UriError> {
    part.split_once('=').ok_or_else(|| UriError::Syntax {
        given: given.to_string(),
        why: format!("attribute {part:?} has no '='"),
    })
}

fn decode_str(given: &str, value: &str) -> Result<String, UriError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| UriError::Syntax {
            given: given.to_string(),
            why: format!("{value:?} is not UTF-8 once decoded"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_a_label() -> Result<(), UriError> {
        let sel = TokenSelector::parse("GSKO urząd")?;
        assert_eq!(sel.label.as_deref(), Some("GSKO urząd"));
        assert_eq!(sel.serial, None);
        Ok(())
    }

    #[test]
    fn uri_attributes_and_query_are_decoded() -> Result<(), UriError> {
        let sel = TokenSelector::parse(
            "pkcs11:token=GSKO%20Gmina;serial=1a2b;object=gsko-epuap;id=%01%ff?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/hsm-signer/pin",
        )?;
        assert_eq!(sel.label.as_deref(), Some("GSKO Gmina"));
        assert_eq!(sel.serial.as_deref(), Some("1a2b"));
        assert_eq!(sel.object.as_deref(), Some("gsko-epuap"));
        assert_eq!(sel.id, Some(vec![0x01, 0xff]));
        assert_eq!(
            sel.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(sel.pin_source, Some(PathBuf::from("/etc/hsm-signer/pin")));
        Ok(())
    }

    #[test]
    fn pin_value_and_garbage_are_refused() {
        assert!(matches!(
            TokenSelector::parse("pkcs11:token=A?pin-value=1234"),
            Err(UriError::PinValue)
        ));
        assert!(matches!(
            TokenSelector::parse("pkcs11:token"),
            Err(UriError::Syntax { .. })
        ));
        assert!(matches!(TokenSelector::parse(" "), Err(UriError::Empty)));
    }
}
