//! The `--subject` of `generate`: OpenSSL's `/C=PL/O=Gmina Przykładowo/CN=host` form,
//! turned into an X.509 Name in the order written.
//!
//! Only that form is accepted. An RFC 4514 string (`CN=host,O=...,C=PL`) lists the same
//! attributes in the reverse order, so taking both would make the order of a name depend
//! on which form the officer happened to use; it is refused with the slash form to use
//! instead.
//!
//! countryName, serialNumber are PrintableString and emailAddress is IA5String, as RFC
//! 5280 requires; every other attribute is UTF8String, so Polish letters survive (what
//! `openssl req -subj` does with its default `string_mask = utf8only`). That includes
//! uniqueIdentifier (2.5.4.45), which X.520 defines as a BIT STRING but KSeF's clients
//! write as text (see [`super::ksef`]).
//!
//! The attributes of a KSeF certificate (givenName, surname, uniqueIdentifier,
//! organizationIdentifier) may also be named here, by name or by OID.

use der::asn1::{Any, Ia5StringRef, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::oid::ObjectIdentifier;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// Why a `--subject` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// Not the slash form.
    #[error("--subject {given:?} is not in OpenSSL's form: write it as /C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl (most general attribute first){}", suggestion(.given))]
    Form {
        /// What was given.
        given: String,
    },
    /// `TYPE=value` expected.
    #[error("--subject: {part:?} is not TYPE=value (e.g. CN=gsko.przykladowo.pl); a '/' inside a value is written \\/")]
    Part {
        /// The offending part.
        part: String,
    },
    /// Unknown attribute type.
    #[error("--subject: unknown attribute {name:?}; use C, ST, L, O, OU, CN, street, postalCode, serialNumber, givenName, surname, organizationIdentifier, uniqueIdentifier, emailAddress, or the OIDs 2.5.4.5, 2.5.4.97, 2.5.4.45")]
    Attribute {
        /// The type as given.
        name: String,
    },
    /// A value that its type cannot hold.
    #[error("--subject: {name}={value:?} {why}")]
    Value {
        /// The attribute.
        name: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A control, format or bidi character anywhere in the subject.
    #[error("--subject holds {character} ({shown}): control, format and bidi characters are refused, since they would add or reorder lines in the report and the record; type the subject again")]
    Unsafe {
        /// The first such character, as U+XXXX.
        character: String,
        /// The subject with each such character escaped.
        shown: String,
    },
    /// Nothing to identify the key.
    #[error("--subject has no CN: give at least /CN=... (for WK, the GSKO host name)")]
    NoCommonName,
}

/// How an attribute's value is encoded.
#[derive(Clone, Copy)]
pub(super) enum Encoding {
    Printable,
    Ia5,
    Utf8,
}

/// (name as OpenSSL writes it, OID, encoding, upper bound in characters from RFC 5280).
/// An attribute is found by its name or its OID in dotted form.
const ATTRIBUTES: &[(&str, &str, Encoding, usize)] = &[
    ("C", "2.5.4.6", Encoding::Printable, 2),
    ("ST", "2.5.4.8", Encoding::Utf8, 128),
    ("L", "2.5.4.7", Encoding::Utf8, 128),
    ("O", "2.5.4.10", Encoding::Utf8, 64),
    ("OU", "2.5.4.11", Encoding::Utf8, 64),
    ("CN", "2.5.4.3", Encoding::Utf8, 64),
    ("street", "2.5.4.9", Encoding::Utf8, 128),
    ("postalCode", "2.5.4.17", Encoding::Utf8, 40),
    ("serialNumber", "2.5.4.5", Encoding::Printable, 64),
    ("organizationIdentifier", "2.5.4.97", Encoding::Utf8, 128),
    ("givenName", "2.5.4.42", Encoding::Utf8, 32768),
    ("surname", "2.5.4.4", Encoding::Utf8, 32768),
    // X.520 has no upper bound for it (a BIT STRING there); 128 as for the identifier.
    ("uniqueIdentifier", "2.5.4.45", Encoding::Utf8, 128),
    ("emailAddress", "1.2.840.113549.1.9.1", Encoding::Ia5, 255),
];

/// Parses `/TYPE=value/TYPE=value...` into a Name, one attribute per RDN, in the
/// order written (the first is the outermost, as in `openssl req -subj`).
pub fn parse_subject(text: &str) -> Result<Name, SubjectError> {
    refuse_unsafe(text)?;
    let Some(body) = text.strip_prefix('/') else {
        return Err(SubjectError::Form { given: text.into() });
    };
    let mut rdns = Vec::new();
    let mut has_cn = false;
    for part in split_unescaped(body) {
        let (name, value) = part
            .split_once('=')
            .filter(|(n, v)| !n.trim().is_empty() && !v.is_empty())
            .ok_or_else(|| SubjectError::Part { part: part.clone() })?;
        let name = name.trim();
        let &(canonical, oid, encoding, max) = ATTRIBUTES
            .iter()
            .find(|(n, o, ..)| n.eq_ignore_ascii_case(name) || *o == name)
            .ok_or_else(|| SubjectError::Attribute { name: name.into() })?;
        has_cn |= canonical == "CN";
        rdns.push(rdn(canonical, oid, value, encoding, Some(max))?);
    }
    if !has_cn {
        return Err(SubjectError::NoCommonName);
    }
    Ok(RdnSequence(rdns))
}

/// One single-valued RDN: `value` encoded as `encoding`, at most `max` characters when a
/// bound is given.
pub(super) fn rdn(
    name: &'static str,
    oid: &str,
    value: &str,
    encoding: Encoding,
    max: Option<usize>,
) -> Result<RelativeDistinguishedName, SubjectError> {
    let atv = AttributeTypeAndValue {
        oid: ObjectIdentifier::new_unwrap(oid),
        value: encode_value(name, value, encoding, max)?,
    };
    let set = SetOfVec::try_from(vec![atv]).expect("one attribute is a valid SET OF");
    Ok(RelativeDistinguishedName(set))
}

/// Refuses text holding a control, format or bidi character ([`crate::text::is_unsafe`]).
pub(super) fn refuse_unsafe(text: &str) -> Result<(), SubjectError> {
    match text.chars().find(|&c| crate::text::is_unsafe(c)) {
        Some(c) => Err(SubjectError::Unsafe {
            character: format!("U+{:04X}", c as u32),
            shown: crate::text::printable(text, crate::text::WHOLE),
        }),
        None => Ok(()),
    }
}

fn encode_value(
    name: &'static str,
    value: &str,
    encoding: Encoding,
    max: Option<usize>,
) -> Result<Any, SubjectError> {
    let bad = |why| SubjectError::Value {
        name,
        value: value.into(),
        why,
    };
    if name == "C" && !(value.len() == 2 && value.chars().all(|c| c.is_ascii_uppercase())) {
        return Err(bad("must be two capital letters (ISO 3166), e.g. C=PL"));
    }
    if max.is_some_and(|max| value.chars().count() > max) {
        return Err(bad("is longer than RFC 5280 allows for this attribute"));
    }
    let any = match encoding {
        Encoding::Printable => PrintableStringRef::new(value)
            .map_err(|_| bad("may hold only A-Z a-z 0-9 space and '()+,-./:=?"))
            .and_then(|s| Any::encode_from(&s).map_err(|_| bad("cannot be encoded"))),
        Encoding::Ia5 => Ia5StringRef::new(value)
            .map_err(|_| bad("may hold only ASCII characters"))
            .and_then(|s| Any::encode_from(&s).map_err(|_| bad("cannot be encoded"))),
        Encoding::Utf8 => Utf8StringRef::new(value)
            .map_err(|_| bad("is not valid UTF-8"))
            .and_then(|s| Any::encode_from(&s).map_err(|_| bad("cannot be encoded"))),
    };
    any
}

/// Splits on '/' not preceded by a backslash, and unescapes `\/` and `\\`.
fn split_unescaped(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    parts.last_mut().expect("never empty").push(next);
                }
            }
            '/' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

/// For an RFC 4514-looking string, the slash form with the order reversed.
fn suggestion(given: &str) -> String {
    let parts: Vec<&str> = given.split(',').map(str::trim).collect();
    if parts.len() < 2 || !parts.iter().all(|p| p.contains('=')) || given.contains('\\') {
        return String::new();
    }
    let slash: String = parts.iter().rev().map(|p| format!("/{p}")).collect();
    format!(". That looks like RFC 4514, which lists the attributes the other way round; the same name in OpenSSL's form is {slash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Encode, Tag, Tagged};

    #[test]
    fn keeps_order_and_polish_letters_with_country_printable() {
        let name = parse_subject("/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl").unwrap();
        let tags: Vec<(String, Tag)> = name
            .0
            .iter()
            .map(|rdn| {
                let atv = rdn.0.get(0).unwrap();
                (atv.oid.to_string(), atv.value.tag())
            })
            .collect();
        assert_eq!(
            tags,
            [
                ("2.5.4.6".to_string(), Tag::PrintableString),
                ("2.5.4.10".to_string(), Tag::Utf8String),
                ("2.5.4.3".to_string(), Tag::Utf8String),
            ]
        );
        let der = name.to_der().unwrap();
        let needle = "Gmina Przykładowo".as_bytes();
        assert!(der.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn escaped_slash_stays_in_the_value() {
        let name = parse_subject(r"/O=A\/B/CN=x").unwrap();
        let value = name.0[0].0.get(0).unwrap().value.value().to_vec();
        assert_eq!(value, b"A/B");
    }

    #[test]
    fn refusals_say_what_to_write() {
        let rfc = parse_subject("CN=gsko.przykladowo.pl,O=Gmina,C=PL").unwrap_err();
        assert!(rfc
            .to_string()
            .contains("/C=PL/O=Gmina/CN=gsko.przykladowo.pl"));
        assert!(matches!(
            parse_subject("/C=Polska/CN=x"),
            Err(SubjectError::Value { name: "C", .. })
        ));
        assert!(matches!(
            parse_subject("/XX=1/CN=x"),
            Err(SubjectError::Attribute { .. })
        ));
        assert!(matches!(
            parse_subject("/O=Gmina"),
            Err(SubjectError::NoCommonName)
        ));
        assert!(matches!(
            parse_subject("/CN"),
            Err(SubjectError::Part { .. })
        ));
    }
}
