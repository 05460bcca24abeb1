//! JOSE for the systems of 2026 (issue 22): compact JWS (RFC 7515) over a caller's
//! payload, the RFC 7523 client assertion e-Doręczenia's token endpoint takes, and the
//! JWK (RFC 7517) of a key's certificate, for registering the system.
//!
//! Like [`crate::xml`], every entry point is a pure function that builds the bytes to sign,
//! has a closure (the token) sign them, checks the answer against the certificate's
//! public key, and returns the result; the HTTP handlers only call these. The closure
//! receives the JWS signing input (`BASE64URL(header) "." BASE64URL(payload)`), hashes it
//! with the algorithm's hash and returns the signature: RSA as PKCS#1 v1.5 or PSS bytes,
//! ECDSA as raw `R || S` (what PKCS#11's CKM_ECDSA returns and RFC 7518 §3.4 wants).
//!
//! The caller's JSON texts (payload, header, claims) are read by [`json`]: refused with
//! a member named twice at any depth, otherwise kept byte for byte, so what the caller
//! sent is what is signed. The path: [`json`] (read the caller's texts) → [`jws`] (header,
//! signing input, the closure, the check) and [`assertion`] (the claims, then [`jws`]);
//! [`jwk`] reads the certificate's key for the JWK, `kid`, `x5c` and `x5t#S256`.

pub mod assertion;
pub mod error;
mod json;
pub mod jwk;
pub mod jws;

use time::OffsetDateTime;

use crate::algorithm::Algorithm;
pub use error::{JoseError, SignFailure};
pub use jwk::{jwk, thumbprint, Jwk, KeyUse};

/// The longest client assertion lifetime, in seconds.
pub const MAX_LIFETIME_SECONDS: u32 = 300;
/// The lifetime when the caller names none, in seconds.
pub const DEFAULT_LIFETIME_SECONDS: u32 = 60;

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

/// Signs `payload` as a compact JWS with the key of `cert_der` (`chain` follows it in
/// `x5c`).
///
/// `sign` receives the JWS signing input and returns the signature value (RSA: PKCS#1
/// v1.5 or PSS bytes; ECDSA: raw `R || S`); it is called at most once, and its answer is
/// checked against `cert_der`'s public key before it is used.
pub fn sign_jws<F, E>(
    payload: Payload<'_>,
    opts: &JwsOptions<'_>,
    cert_der: &[u8],
    chain: &[Vec<u8>],
    sign: F,
) -> Result<Jws, SignFailure<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    jws::sign(payload, opts, cert_der, chain, sign)
}

/// Builds and signs an RFC 7523 client assertion, as [`sign_jws`] signs.
pub fn client_assertion<F, E>(
    req: &AssertionRequest<'_>,
    cert_der: &[u8],
    chain: &[Vec<u8>],
    sign: F,
) -> Result<ClientAssertion, SignFailure<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    assertion::build(req, cert_der, chain, sign)
}

#[cfg(test)]
mod tests;
