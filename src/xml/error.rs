//! What can go wrong while signing XML, each with a stable machine code for the HTTP layer.
//!
//! Messages name at most a short, sanitised element name or ID: never document content.

/// Why an XML document was not signed (a token failure is [`XmlSignError::Token`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("malformed XML at line {line}, column {column}: {reason}")]
    BadXml {
        /// 1-based line of the first error libxml2 reported (0 when unknown).
        line: u32,
        /// 1-based column (0 when unknown).
        column: u32,
        /// libxml2's message, sanitised and shortened.
        reason: String,
    },
    /// The document has a `<!DOCTYPE`: refused before parsing, so no entity ever expands.
    #[error("XML with a DOCTYPE is refused (no DTDs or entities)")]
    DoctypeForbidden,
    /// Not UTF-8: another declared encoding, a UTF-16/32 byte order mark, or invalid bytes.
    #[error("only UTF-8 XML is accepted: {0}")]
    EncodingUnsupported(String),
    /// Elements nest deeper than the limit.
    #[error("XML nests deeper than {0} elements")]
    TooDeep(usize),
    /// Two elements carry the same `ID` / `Id` / `wsu:Id` / `xml:id` value.
    #[error("two elements have the same ID {0:?}")]
    DuplicateId(String),
    /// The document passes one of the `[xml]` limits (named by its configuration key).
    #[error("XML too complex: more than {value} ([xml] {limit})")]
    TooComplex {
        /// The `[xml]` key of the limit passed.
        limit: &'static str,
        /// Its value.
        value: usize,
    },
    /// An ID used as a reference (or named by `reference_id`) is not a plain name.
    #[error("bad ID to reference: {0}")]
    BadId(String),
    /// An element to be referenced carries two ID attributes with different values.
    #[error(
        "element {element} (line {line}) has two different IDs; a verifier could resolve either"
    )]
    AmbiguousId {
        /// The element's name, sanitised.
        element: String,
        /// Its line.
        line: u32,
    },
    /// `timestamp_ttl_seconds` asked for a Timestamp, and the Security header has one.
    #[error("the wsse:Security header already holds a wsu:Timestamp; send it without one, or leave out timestamp_ttl_seconds to keep it as it is")]
    AlreadyTimestamped,
    /// Not a SOAP 1.1 / 1.2 envelope with exactly one Body.
    #[error("not a SOAP envelope: {0}")]
    NotSoapEnvelope(String),
    /// The element (or its wsse:Security header) already holds a ds:Signature.
    #[error("already signed: {0}")]
    AlreadySigned(String),
    /// No element has the requested ID.
    #[error("no element has ID {0:?}")]
    ReferenceNotFound(String),
    /// The element to sign has no `ID` attribute to reference.
    #[error("element {0} has no ID attribute to reference")]
    MissingId(String),
    /// The certificate given for KeyInfo is not DER X.509.
    #[error("the certificate is not DER X.509: {0}")]
    BadCertificate(String),
    /// The key or algorithm cannot make the signature (e.g. RSA algorithm, EC certificate).
    #[error("algorithm {0} does not fit the certificate's key")]
    AlgorithmMismatch(String),
    /// The token's signature does not verify with the certificate's public key.
    #[error(
        "the signature returned does not verify with the certificate (wrong key on the token?)"
    )]
    SignatureMismatch,
    /// libxml2 failed where it should not (canonicalisation, tree editing, re-parse check).
    #[error("internal XML error: {0}")]
    Internal(String),
}

impl XmlError {
    /// The stable machine code the HTTP layer reports.
    pub fn code(&self) -> &'static str {
        match self {
            XmlError::BadXml { .. } => "bad_xml",
            XmlError::DoctypeForbidden => "xml_doctype_forbidden",
            XmlError::EncodingUnsupported(_) => "xml_encoding_unsupported",
            XmlError::TooDeep(_) => "xml_too_deep",
            XmlError::DuplicateId(_) => "xml_duplicate_id",
            XmlError::TooComplex { .. } => "xml_too_complex",
            XmlError::BadId(_) => "bad_id",
            XmlError::AmbiguousId { .. } => "ambiguous_id",
            XmlError::AlreadyTimestamped => "already_timestamped",
            XmlError::NotSoapEnvelope(_) => "not_soap_envelope",
            XmlError::AlreadySigned(_) => "already_signed",
            XmlError::ReferenceNotFound(_) => "reference_not_found",
            XmlError::MissingId(_) => "xml_missing_id",
            XmlError::BadCertificate(_) => "bad_certificate",
            XmlError::AlgorithmMismatch(_) => "algorithm_mismatch",
            XmlError::SignatureMismatch => "signature_mismatch",
            XmlError::Internal(_) => "xml_internal",
        }
    }

    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        XmlError::Internal(sanitise(&what.to_string(), 120))
    }
}

/// Why signing failed: the XML (the caller's fault, mostly 400) or the token (503).
#[derive(Debug, thiserror::Error)]
pub enum XmlSignError<E> {
    /// The document was refused or could not be processed.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The signing closure (the token) failed.
    #[error("the token did not sign: {0}")]
    Token(E),
}

/// Keeps printable ASCII letters, digits and a few punctuation marks, at most `max`
/// characters: enough to name an element or an ID, never enough to leak content.
pub(crate) fn sanitise(text: &str, max: usize) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " :_.,-#()'".contains(c) {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect();
    if text.trim().chars().count() > max {
        out.push('…');
    }
    out
}

/// libxml2's message with its quoted parts (values, namespace URIs, encodings: content)
/// replaced by `...`, then sanitised; element names, which it does not quote, stay.
pub(crate) fn without_quoted(message: &str) -> String {
    let unquoted: String = message
        .split('\'')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "..." } else { part })
        .collect();
    sanitise(&unquoted, 80)
}
