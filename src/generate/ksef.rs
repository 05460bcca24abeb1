//! The `--subject-json` of `generate`: the JSON that KSeF's
//! `GET /certificates/enrollments/data` returns, turned into the X.509 Name that KSeF
//! expects in the CSR, attribute for attribute (`certyfikaty-KSeF.md`).
//!
//! The order is the C# client's (CIRFMF/ksef-client-csharp, `CryptographyService.cs`):
//! CN, SN (surname), GN (givenName), O, organizationIdentifier (2.5.4.97), C,
//! serialNumber, uniqueIdentifier (2.5.4.45), the first written first in the DER. The
//! Java client (CIRFMF/ksef-client-java) puts GN last. Whether KSeF compares the order
//! cannot be checked offline; this follows the C# client, as issue 22 asks.
//!
//! The string types are both clients' (BouncyCastle's BCStyle): PrintableString for C and
//! serialNumber, UTF8String for every other attribute, uniqueIdentifier included, which
//! X.520 defines as a BIT STRING but KSeF's clients write as text. RFC 5280's length
//! bounds, which `--subject` enforces, do not apply: KSeF decides what its names hold.

use serde::Deserialize;
use x509_cert::name::{Name, RdnSequence};

use super::subject::{rdn, refuse_unsafe, Encoding, SubjectError};

/// Why a `--subject-json` was refused.
#[derive(Debug, thiserror::Error)]
pub enum KsefSubjectError {
    /// Not the JSON of `GET /certificates/enrollments/data`.
    #[error("--subject-json: not the JSON of KSeF's GET /certificates/enrollments/data ({0}); save that answer unchanged and give its file")]
    Json(#[from] serde_json::Error),
    /// No commonName.
    #[error("--subject-json has no commonName: KSeF's enrollment data always names one; give the answer of GET /certificates/enrollments/data unchanged")]
    NoCommonName,
    /// Both the current and the older given-name fields.
    #[error("--subject-json holds both givenName and givenNames: KSeF answers with one of them; give its answer unchanged")]
    TwoGivenNames,
    /// A field present but empty.
    #[error("--subject-json: {field} is empty; KSeF gives a value or leaves the field out")]
    Empty {
        /// The JSON field.
        field: &'static str,
    },
    /// A value its type cannot hold, or unsafe text.
    #[error("--subject-json: {field}: {why}")]
    Value {
        /// The JSON field.
        field: &'static str,
        /// What is wrong, as `--subject` says it.
        why: String,
    },
}

/// The enrollment data, as KSeF names its fields. An unknown field is refused: it may be
/// an attribute KSeF expects in the CSR, and a subject without it would be refused later.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnrollmentData {
    common_name: Option<String>,
    country_name: Option<String>,
    given_name: Option<String>,
    /// The older form of `givenName`.
    given_names: Option<Vec<String>>,
    surname: Option<String>,
    serial_number: Option<String>,
    unique_identifier: Option<String>,
    organization_name: Option<String>,
    organization_identifier: Option<String>,
}

/// Parses the enrollment data into a Name, one attribute per RDN, in the C# client's
/// order (see the module docs). Absent and `null` fields are left out.
pub fn parse_subject_json(json: &str) -> Result<Name, KsefSubjectError> {
    let data: EnrollmentData = serde_json::from_str(json)?;
    if data.common_name.is_none() {
        return Err(KsefSubjectError::NoCommonName);
    }
    let given_name = match (data.given_name, data.given_names) {
        (Some(_), Some(_)) => return Err(KsefSubjectError::TwoGivenNames),
        (Some(one), None) => Some(one),
        // The older array holds a person's given names in order; written as one
        // givenName, separated by spaces, as the newer single field carries them.
        (None, Some(many)) => Some(many.join(" ")),
        (None, None) => None,
    };
    let fields = [
        (
            "commonName",
            "CN",
            "2.5.4.3",
            Encoding::Utf8,
            data.common_name,
        ),
        ("surname", "SN", "2.5.4.4", Encoding::Utf8, data.surname),
        ("givenName", "GN", "2.5.4.42", Encoding::Utf8, given_name),
        (
            "organizationName",
            "O",
            "2.5.4.10",
            Encoding::Utf8,
            data.organization_name,
        ),
        (
            "organizationIdentifier",
            "organizationIdentifier",
            "2.5.4.97",
            Encoding::Utf8,
            data.organization_identifier,
        ),
        (
            "countryName",
            "C",
            "2.5.4.6",
            Encoding::Printable,
            data.country_name,
        ),
        (
            "serialNumber",
            "serialNumber",
            "2.5.4.5",
            Encoding::Printable,
            data.serial_number,
        ),
        (
            "uniqueIdentifier",
            "uniqueIdentifier",
            "2.5.4.45",
            Encoding::Utf8,
            data.unique_identifier,
        ),
    ];
    let mut rdns = Vec::new();
    for (field, name, oid, encoding, value) in fields {
        let Some(value) = value else { continue };
        if value.is_empty() {
            return Err(KsefSubjectError::Empty { field });
        }
        let made = refuse_unsafe(&value).and_then(|()| rdn(name, oid, &value, encoding, None));
        rdns.push(made.map_err(|e| KsefSubjectError::Value {
            field,
            why: match e {
                SubjectError::Value { value, why, .. } => format!("{value:?} {why}"),
                SubjectError::Unsafe {
                    character, shown, ..
                } => format!(
                    "{shown:?} holds {character}: control, format and bidi characters are refused"
                ),
                other => other.to_string(),
            },
        })?);
    }
    Ok(RdnSequence(rdns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Tag, Tagged};

    fn oids_and_tags(name: &Name) -> Vec<(String, Tag)> {
        name.0
            .iter()
            .map(|rdn| {
                let atv = rdn.0.get(0).unwrap();
                (atv.oid.to_string(), atv.value.tag())
            })
            .collect()
    }

    #[test]
    fn every_field_in_the_csharp_order_with_bcstyle_types() {
        let name = parse_subject_json(
            r#"{"uniqueIdentifier":"u-1","serialNumber":"TINPL-5260250274","countryName":"PL",
            "organizationIdentifier":"VATPL-5260250274","organizationName":"Gmina Przykładowo",
            "givenName":"Łucja","surname":"Żółć","commonName":"Urząd Gminy"}"#,
        )
        .unwrap();
        let utf8 = Tag::Utf8String;
        let printable = Tag::PrintableString;
        let expected: Vec<(String, Tag)> = [
            ("2.5.4.3", utf8),
            ("2.5.4.4", utf8),
            ("2.5.4.42", utf8),
            ("2.5.4.10", utf8),
            ("2.5.4.97", utf8),
            ("2.5.4.6", printable),
            ("2.5.4.5", printable),
            ("2.5.4.45", utf8),
        ]
        .into_iter()
        .map(|(o, t)| (o.to_string(), t))
        .collect();
        assert_eq!(oids_and_tags(&name), expected);
    }

    #[test]
    fn older_given_names_nulls_and_long_values() {
        let long = "A".repeat(300);
        let json = format!(
            r#"{{"commonName":"{long}","givenNames":["Jan","Maria"],"surname":null,"countryName":"PL"}}"#
        );
        let name = parse_subject_json(&json).unwrap();
        assert_eq!(name.0.len(), 3);
        assert_eq!(name.0[1].0.get(0).unwrap().value.value(), b"Jan Maria");
    }

    #[test]
    fn refusals() {
        let refused = |json: &str| parse_subject_json(json).unwrap_err();
        assert!(matches!(
            refused(r#"{"countryName":"PL"}"#),
            KsefSubjectError::NoCommonName
        ));
        assert!(matches!(
            refused(r#"{"commonName":"x","givenName":"a","givenNames":["a"]}"#),
            KsefSubjectError::TwoGivenNames
        ));
        assert!(matches!(
            refused(r#"{"commonName":"x","nickname":"a"}"#),
            KsefSubjectError::Json(_)
        ));
        assert!(matches!(
            refused(r#"{"commonName":"x","commonName":"y"}"#),
            KsefSubjectError::Json(_)
        ));
        assert!(matches!(
            refused(r#"{"commonName":"x\u202egnp.exe"}"#),
            KsefSubjectError::Value {
                field: "commonName",
                ..
            }
        ));
        assert!(matches!(
            refused(r#"{"commonName":"x","serialNumber":"PESEL_ż"}"#),
            KsefSubjectError::Value {
                field: "serialNumber",
                ..
            }
        ));
        assert!(matches!(
            refused(r#"{"commonName":""}"#),
            KsefSubjectError::Empty { .. }
        ));
    }
}
