//! The types a JOSE request and answer are made of, shared by the files of `jose/`: what is
//! signed (the payload, the options, the header members computed from the certificate) and
//! what comes back (the JWS, the client assertion).

use time::OffsetDateTime;

use crate::algorithm::Algorithm;
use crate::jose::error::JoseError;

/// A protected-header member computed from the key's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// `kid`: the RFC 7638 thumbprint of the public key.
    Kid,
    /// `x5c`: the certificate and its chain, standard base64 DER.
    X5c,
    /// `x5t#S256`: SHA-256 of the certificate's DER, base64url.
    X5tS256,
}

impl Include {
    /// The header member's name.
    pub fn name(self) -> &'static str {
        match self {
            Include::Kid => "kid",
            Include::X5c => "x5c",
            Include::X5tS256 => "x5t#S256",
        }
    }

    /// Parses a member name as the caller writes it (exactly, case included).
    pub fn parse(text: &str) -> Result<Self, JoseError> {
        [Include::Kid, Include::X5c, Include::X5tS256]
            .into_iter()
            .find(|i| i.name() == text)
            .ok_or_else(|| JoseError::UnknownInclude(JoseError::name(text)))
    }
}

/// What a JWS carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A JSON object's text, signed exactly as given (the handler passes serde_json's
    /// `RawValue::get()` of the request's `payload`).
    Json(&'a str),
    /// Standard base64 (with padding) of arbitrary bytes.
    Base64(&'a str),
}

/// How to sign a JWS.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwsOptions<'a> {
    /// The algorithm; `None` takes RS256 for RSA keys and the curve's ES algorithm for EC.
    pub algorithm: Option<Algorithm>,
    /// The caller's protected-header members, as a JSON object's text.
    pub header: Option<&'a str>,
    /// Members to compute from the certificate.
    pub include: &'a [Include],
}

/// A signed compact JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The token: `header.payload.signature`, each base64url.
    pub jws: String,
    /// The algorithm it was signed with.
    pub algorithm: Algorithm,
    /// The protected header's JSON text.
    pub protected_header: String,
    /// SHA-256 of the protected header's text, for the audit record.
    pub header_sha256: [u8; 32],
    /// SHA-256 of the payload's bytes (the JSON text, or the decoded `payload_base64`),
    /// for the audit record.
    pub payload_sha256: [u8; 32],
}

/// What the client assertion says, beyond the signing options.
#[derive(Debug, Clone, Copy)]
pub struct AssertionRequest<'a> {
    /// The client id: `iss` and `sub`.
    pub client_id: &'a str,
    /// The token endpoint: `aud`. The handler checks it against the key's
    /// `jwt_audiences` ([`crate::config::KeyConfig::allows_audience`]) first.
    pub audience: &'a str,
    /// Seconds until `exp`, 1 to [`MAX_LIFETIME_SECONDS`]; `None` for
    /// [`DEFAULT_LIFETIME_SECONDS`].
    pub lifetime_seconds: Option<u32>,
    /// More claims, as a JSON object's text; none of [`assertion::SET_CLAIMS`].
    pub claims: Option<&'a str>,
    /// `iat` and `nbf`; `exp` is this plus the lifetime.
    pub now: OffsetDateTime,
    /// Algorithm, header and include, as for [`sign_jws`].
    pub jws: JwsOptions<'a>,
}

/// A signed client assertion.
#[derive(Debug, Clone)]
pub struct ClientAssertion {
    /// The JWS.
    pub jws: Jws,
    /// Its `jti` (32 hex digits, 128 random bits).
    pub jti: String,
    /// `iat` (and `nbf`), whole seconds.
    pub issued_at: OffsetDateTime,
    /// `exp`, whole seconds.
    pub expires_at: OffsetDateTime,
}
