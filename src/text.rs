//! Text from outside (a certificate's names, a `.p12`'s friendlyName, a token's label, a
//! caller's request) shown in a harmless form: it can neither start a new line in a
//! report, a record or a log, nor reorder what follows it on screen.
//!
//! A DN may legally hold a newline or U+202E RIGHT-TO-LEFT OVERRIDE; printed raw into the
//! import record, such a name forges `Issuer:` or `SHA-256:` lines for the security
//! register. Every such character is shown as `\u{…}` instead. `--json` output keeps the
//! exact values: a program reading it gets the bytes, a person reading text gets this.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// No bound: records and reports show a value whole.
pub const WHOLE: usize = usize::MAX;

/// True for a character [`printable`] escapes: control (C0, C1, DEL), format (bidi
/// embeddings, overrides and isolates such as U+202E, zero-width characters), line and
/// paragraph separators (U+2028, U+2029), and what no font shows (surrogates, private
/// use, unassigned).
pub fn is_unsafe(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
    )
}

/// `text` with every [`is_unsafe`] character shown as `\u{…}` (e.g. `\u{000a}`,
/// `\u{202e}`), cut after `max` characters of the input ([`WHOLE`] for no cut). A
/// backslash is left as it is: the escapes are for a reader, not for a parser.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().take(max) {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_and_bidi_are_escaped_letters_kept() {
        assert_eq!(
            printable("Urząd\nIssuer: CN=x\u{202e}\u{200b}\u{1b}[31m", WHOLE),
            "Urząd\\u{000a}Issuer: CN=x\\u{202e}\\u{200b}\\u{001b}[31m"
        );
        assert_eq!(printable("Gmina Przykładowo", 5), "Gmina");
        assert!(is_unsafe('\u{2066}') && is_unsafe('\u{2028}') && !is_unsafe('ż'));
    }
}
