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
mod limits;
mod types;

pub use error::{JoseError, SignFailure};
pub use jwk::{jwk, thumbprint, Jwk, KeyUse};
pub use limits::{DEFAULT_LIFETIME_SECONDS, MAX_LIFETIME_SECONDS};
pub use types::{AssertionRequest, ClientAssertion, Include, Jws, JwsOptions, Payload};

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

/// Checks what [`sign_jws`] would refuse in the caller's input (the payload, then the
/// header), without a certificate: the HTTP handler answers these before it looks at
/// the algorithm or the key.
pub fn check_jws(payload: Payload<'_>, opts: &JwsOptions<'_>) -> Result<(), JoseError> {
    jws::check(payload, opts)
}

/// Checks what [`client_assertion`] would refuse in the caller's input, as [`check_jws`].
pub fn check_assertion(req: &AssertionRequest<'_>) -> Result<(), JoseError> {
    assertion::check(req)
}

#[cfg(test)]
mod tests;
