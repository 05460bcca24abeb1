//! The `[[keys]]` table `generate` prints for the new key, to paste into the daemon's
//! configuration: its name, label, purpose, algorithm and the narrow `operations` list
//! docs/operations.md recommends for every new key.

use crate::cert::{Curve, KeyKind};
use crate::config::{is_key_name, Operation, Purpose};

/// The operations a key of `purpose` may be limited to: `decrypt` for a decryption key,
/// every signing operation for a signing key.
pub fn fits(purpose: Purpose, operation: Operation) -> bool {
    (operation == Operation::Decrypt) == (purpose == Purpose::Decrypt)
}

/// The `[[keys]]` table for a generated key, as TOML lines. `operations` is what the
/// officer named; without it a decryption key gets `["decrypt"]`, a KSeF key (from
/// `--subject-json`) `["xades"]`, and another signing key a commented line that says
/// how to choose, since only the officer knows what the key is for.
pub fn key_rule(
    label: &str,
    kind: KeyKind,
    purpose: Purpose,
    operations: Option<&[Operation]>,
    ksef: bool,
) -> String {
    let name = if is_key_name(label) { label } else { "NAME" };
    let mut lines = vec![
        "[[keys]]".to_string(),
        format!("name = \"{name}\""),
        format!("label = {}", toml_string(label)),
    ];
    match purpose {
        Purpose::Decrypt => lines.push("purpose = \"decrypt\"".into()),
        Purpose::Sign => lines.push(format!("algorithms = [\"{}\"]", algorithm(kind))),
    }
    let chosen: Option<Vec<Operation>> = match (operations, purpose) {
        (Some(list), _) => Some(list.to_vec()),
        (None, Purpose::Decrypt) => Some(vec![Operation::Decrypt]),
        (None, Purpose::Sign) if ksef => Some(vec![Operation::Xades]),
        (None, Purpose::Sign) => None,
    };
    match chosen {
        Some(list) => {
            let names: Vec<String> = list.iter().map(|o| format!("\"{}\"", o.name())).collect();
            lines.push(format!("operations = [{}]", names.join(", ")));
        }
        None => lines.push(
            "# operations = [...]: what this key is for: \"wss\" (ePUAP), \"saml\" (login.gov.pl), \"jwt\" (e-Doręczenia), \"xades\" (KSeF, Doręczyciel), \"sign\" (a raw signature); `generate --operations` prints it"
                .into(),
        ),
    }
    lines.push(
        "# allowed_uids = [33]: only these local callers (GSKO's PHP-FPM user), docs/operations.md"
            .into(),
    );
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The algorithm the daemon's rule names for a key of this kind.
fn algorithm(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Ec { curve: Curve::P256 } => "ES256",
        KeyKind::Ec { curve: Curve::P384 } => "ES384",
        KeyKind::Ec { curve: Curve::P521 } => "ES512",
        KeyKind::Rsa { .. } => "RS256",
    }
}

/// A TOML basic string (the label may hold any character).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The printed table, with a socket and a token, is a configuration the daemon loads,
    /// with the operations and algorithm asked for.
    fn loads(rule: &str) -> Config {
        let text = format!(
            "[token]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"GSKO\"\npin_file = \"/etc/hsm-signer/pin\"\n\n{}",
            rule
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).expect("write");
        crate::config::load(&path)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .config
    }

    #[test]
    fn a_ksef_key_gets_xades_only() {
        let rule = key_rule(
            "ksef-auth",
            KeyKind::Ec { curve: Curve::P256 },
            Purpose::Sign,
            None,
            true,
        );
        assert!(rule.contains("operations = [\"xades\"]"), "{rule}");
        let config = loads(&rule);
        assert_eq!(
            config.keys[0].operations.as_deref(),
            Some(&[Operation::Xades][..])
        );
        assert_eq!(config.keys[0].algorithms.len(), 1);
    }

    #[test]
    fn a_decryption_key_gets_decrypt_and_no_algorithm() {
        let rule = key_rule(
            "gsko-wk-enc",
            KeyKind::Ec { curve: Curve::P256 },
            Purpose::Decrypt,
            None,
            false,
        );
        let config = loads(&rule);
        assert_eq!(config.keys[0].purpose, Purpose::Decrypt);
        assert_eq!(
            config.keys[0].operations.as_deref(),
            Some(&[Operation::Decrypt][..])
        );
    }

    #[test]
    fn named_operations_are_printed_and_a_bad_label_gets_a_placeholder_name() {
        let rule = key_rule(
            "e-Doręczenia \"2026\"",
            KeyKind::Rsa { bits: 4096 },
            Purpose::Sign,
            Some(&[Operation::Jwt, Operation::Jws]),
            false,
        );
        assert!(rule.contains("name = \"NAME\""), "{rule}");
        let config = loads(&rule.replace("\"NAME\"", "\"edoreczenia\""));
        assert_eq!(config.keys[0].label, "e-Doręczenia \"2026\"");
        assert_eq!(
            config.keys[0].operations.as_deref(),
            Some(&[Operation::Jwt, Operation::Jws][..])
        );
    }

    #[test]
    fn a_signing_key_without_operations_gets_advice_not_a_guess() {
        let rule = key_rule(
            "gsko-epuap",
            KeyKind::Rsa { bits: 2048 },
            Purpose::Sign,
            None,
            false,
        );
        assert!(rule.contains("# operations = [...]"), "{rule}");
        assert_eq!(loads(&rule).keys[0].operations, None);
    }

    #[test]
    fn decrypt_fits_only_a_decryption_key() {
        assert!(fits(Purpose::Decrypt, Operation::Decrypt));
        assert!(!fits(Purpose::Decrypt, Operation::Xades));
        assert!(!fits(Purpose::Sign, Operation::Decrypt));
        assert!(
            Operation::ALL
                .iter()
                .filter(|o| fits(Purpose::Sign, **o))
                .count()
                == 6
        );
    }
}
