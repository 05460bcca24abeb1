//! What each signing profile is asked for and what it answers: the options and results of
//! [`super::sign_wss`], [`super::sign_saml`] and [`super::sign_xades`], in a file of their
//! own so that the profiles' files use it, never `xml/mod.rs`.

use time::OffsetDateTime;

use super::limits::XmlLimits;
use super::parse::DEFAULT_MAX_DEPTH;
use crate::algorithm::Algorithm;

/// How to sign a SOAP envelope with WS-Security.
#[derive(Debug, Clone)]
pub struct WssOptions {
    /// The signature algorithm (ePUAP: RS256).
    pub algorithm: Algorithm,
    /// Adds a signed `wsu:Timestamp` valid this many seconds from `now` (the Apache CXF
    /// shape); `None` for the .NET client's shape without one.
    pub timestamp_ttl_seconds: Option<u32>,
    /// "Now" for the Timestamp's Created.
    pub now: OffsetDateTime,
    /// The deepest element nesting accepted in the input.
    pub max_depth: usize,
    /// The `[xml]` limits on the input's shape.
    pub limits: XmlLimits,
}

impl WssOptions {
    /// No Timestamp, the default depth limit and `[xml]` limits, now = the system clock.
    pub fn new(algorithm: Algorithm) -> Self {
        WssOptions {
            algorithm,
            timestamp_ttl_seconds: None,
            now: OffsetDateTime::now_utc(),
            max_depth: DEFAULT_MAX_DEPTH,
            limits: XmlLimits::default(),
        }
    }
}

/// How to sign a SAML message.
#[derive(Debug, Clone)]
pub struct SamlOptions {
    /// The signature algorithm (WK: ES256).
    pub algorithm: Algorithm,
    /// The `ID` of the element to sign; `None` signs the root.
    pub reference_id: Option<String>,
    /// The deepest element nesting accepted in the input.
    pub max_depth: usize,
    /// The `[xml]` limits on the input's shape.
    pub limits: XmlLimits,
}

impl SamlOptions {
    /// Signs the root, with the default depth limit and `[xml]` limits.
    pub fn new(algorithm: Algorithm) -> Self {
        SamlOptions {
            algorithm,
            reference_id: None,
            max_depth: DEFAULT_MAX_DEPTH,
            limits: XmlLimits::default(),
        }
    }
}

/// How to sign a document with enveloped XAdES-BES ([`sign_xades`]).
#[derive(Debug, Clone)]
pub struct XadesOptions {
    /// The signature algorithm: RS256/384/512, PS256/384/512, ES256/384/512 (KSeF
    /// accepts RSA of 2048 bits or more and ECDSA P-256 or larger).
    pub algorithm: Algorithm,
    /// The digest of the certificate in `SigningCertificate`: SHA-256 (KSeF, default) or
    /// SHA-1 (ePUAP's Doręczyciel).
    pub certificate_digest: CertificateDigest,
    /// The `Id` of the `ds:Signature`; `None` for a fresh `Signature-<128 random bits>`.
    /// Must be a plain ID (`bad_id` otherwise) not already in the document.
    pub signature_id: Option<String>,
    /// "Now" for `SigningTime` (written in UTC, whole seconds).
    pub now: OffsetDateTime,
    /// The deepest element nesting accepted in the input.
    pub max_depth: usize,
    /// The `[xml]` limits on the input's shape.
    pub limits: XmlLimits,
}

impl XadesOptions {
    /// SHA-256 certificate digest, a fresh signature Id, now = the system clock, the
    /// default depth and limits.
    pub fn new(algorithm: Algorithm) -> Self {
        XadesOptions {
            algorithm,
            certificate_digest: CertificateDigest::Sha256,
            signature_id: None,
            now: OffsetDateTime::now_utc(),
            max_depth: DEFAULT_MAX_DEPTH,
            limits: XmlLimits::default(),
        }
    }
}

/// A document signed with XAdES-BES.
#[derive(Debug, Clone)]
pub struct XadesSigned {
    /// The final document, to send byte for byte.
    pub xml: String,
    /// The `Id` of the `ds:Signature` (QualifyingProperties' `Target` is `#` + this).
    pub signature_id: String,
    /// The `Id` of `xades:SignedProperties`, the second Reference's target.
    pub signed_properties_id: String,
    /// `SigningTime` as written (RFC 3339, UTC, e.g. `2026-12-07T15:04:05Z`).
    pub signing_time: String,
    /// SHA-256 of the canonical SignedInfo, for the audit record.
    pub signed_info_sha256: [u8; 32],
}

/// A signed SOAP envelope.
#[derive(Debug, Clone)]
pub struct WssSigned {
    /// The final envelope, to send byte for byte.
    pub xml: String,
    /// The Body's `wsu:Id` (kept if it had one).
    pub body_id: String,
    /// The Timestamp's `wsu:Id`, when one was added.
    pub timestamp_id: Option<String>,
    /// The BinarySecurityToken's `wsu:Id`.
    pub token_id: String,
    /// The references signed, in SignedInfo order (`#body`, then `#timestamp`).
    pub reference_uris: Vec<String>,
    /// SHA-256 of the canonical SignedInfo, for the audit record.
    pub signed_info_sha256: [u8; 32],
}

/// A signed SAML message.
#[derive(Debug, Clone)]
pub struct SamlSigned {
    /// The final document, to send byte for byte.
    pub xml: String,
    /// The reference signed, `#<ID>`.
    pub reference_uri: String,
    /// SHA-256 of the canonical SignedInfo, for the audit record.
    pub signed_info_sha256: [u8; 32],
}

/// The digest of the signing certificate in `SigningCertificate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateDigest {
    /// SHA-256: KSeF, and the default.
    #[default]
    Sha256,
    /// SHA-1: what ePUAP's Doręczyciel client sends.
    Sha1,
}

impl CertificateDigest {
    pub(crate) fn method(self) -> &'static str {
        match self {
            CertificateDigest::Sha256 => super::dsig::SHA256,
            CertificateDigest::Sha1 => super::ns::SHA1,
        }
    }

    pub(crate) fn digest(self, der: &[u8]) -> Vec<u8> {
        let md = match self {
            CertificateDigest::Sha256 => openssl::hash::MessageDigest::sha256(),
            CertificateDigest::Sha1 => openssl::hash::MessageDigest::sha1(),
        };
        openssl::hash::hash(md, der)
            .expect("OpenSSL hashes in memory")
            .to_vec()
    }
}
