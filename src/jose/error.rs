//! What can go wrong while building a JWS, a client assertion or a JWK, each with a stable
//! machine code for the HTTP layer.
//!
//! Messages name at most a short, sanitised member name: never a header value, a claim
//! value or payload content.

use crate::xml::error::sanitise;

/// Why a JWS, client assertion or JWK was not produced (a token failure is
/// [`SignFailure::Token`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// A JSON text given by the caller does not parse.
    #[error("{what} is not valid JSON: {reason}")]
    BadJson {
        /// Which input (`payload`, `header`, `claims`).
        what: &'static str,
        /// serde_json's reason, with line and column.
        reason: String,
    },
    /// A JSON text that must be an object is something else.
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
    /// An object (at any depth) names the same member twice; verifiers disagree on
    /// which one counts, so such a text is never signed.
    #[error("{what} has the member {key:?} twice; send each member once")]
    DuplicateKey {
        /// Which input.
        what: &'static str,
        /// The repeated name, sanitised.
        key: String,
    },
    /// The caller's header names a member the daemon alone sets (`alg`) or one that
    /// would change how the token is read (`crit`, `b64`, RFC 7797).
    #[error("the header may not set {0:?}: the daemon sets alg, and crit and b64 are refused")]
    ReservedHeader(String),
    /// The caller's header names a member that `include` also computes.
    #[error("the header sets {0:?}, which include also sets; send it in one place only")]
    HeaderConflict(String),
    /// `include` names something other than `kid`, `x5c`, `x5t#S256`.
    #[error("include may name kid, x5c and x5t#S256, not {0:?}")]
    UnknownInclude(String),
    /// `payload_base64` is not standard base64.
    #[error("payload_base64 is not standard base64 (RFC 4648 section 4, with padding)")]
    BadPayloadBase64,
    /// The algorithm has no JOSE name (RS1).
    #[error("algorithm {0} has no JOSE name; use RS256, PS256 or ES256 and the like")]
    UnsupportedAlgorithm(String),
    /// The algorithm does not fit the certificate's key (an RSA algorithm for an EC key,
    /// or ES256 for a P-384 key: RFC 7518 ties each ES algorithm to one curve).
    #[error("algorithm {algorithm} does not fit the certificate's {key} key")]
    AlgorithmMismatch {
        /// The algorithm asked for.
        algorithm: String,
        /// The key (`RSA`, `EC P-384`).
        key: String,
    },
    /// The certificate's key is of a type JOSE does not carry here.
    #[error("the certificate's key cannot be used for JOSE: {0}")]
    UnsupportedKey(String),
    /// The certificate (or a chain entry) is not DER X.509.
    #[error("the certificate is not DER X.509: {0}")]
    BadCertificate(String),
    /// `claims` names one of the members the daemon sets.
    #[error("claims may not set {0:?}: the daemon sets iss, sub, aud, iat, nbf, exp and jti")]
    ClaimsOverride(String),
    /// `lifetime_seconds` is above the limit.
    #[error("lifetime_seconds {0} is too long: at most {max} seconds", max = super::limits::MAX_LIFETIME_SECONDS)]
    LifetimeTooLong(u32),
    /// `lifetime_seconds` is 0.
    #[error("lifetime_seconds must be at least 1")]
    LifetimeZero,
    /// A required text (`client_id`, `audience`) is empty.
    #[error("{0} must not be empty")]
    MissingField(&'static str),
    /// The token's signature does not verify with the certificate's public key.
    #[error(
        "the signature returned does not verify with the certificate (wrong key on the token?)"
    )]
    SignatureMismatch,
    /// OpenSSL failed where it should not.
    #[error("internal JOSE error: {0}")]
    Internal(String),
}

impl JoseError {
    /// The stable machine code the HTTP layer reports.
    pub fn code(&self) -> &'static str {
        match self {
            JoseError::BadJson { .. } => "bad_json",
            JoseError::NotAnObject(_) => "not_an_object",
            JoseError::DuplicateKey { .. } => "duplicate_key",
            JoseError::ReservedHeader(_) => "bad_header",
            JoseError::HeaderConflict(_) => "header_conflict",
            JoseError::UnknownInclude(_) => "bad_include",
            JoseError::BadPayloadBase64 => "bad_payload_base64",
            JoseError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            JoseError::AlgorithmMismatch { .. } => "algorithm_mismatch",
            JoseError::UnsupportedKey(_) => "unsupported_key",
            JoseError::BadCertificate(_) => "bad_certificate",
            JoseError::ClaimsOverride(_) => "claims_override",
            JoseError::LifetimeTooLong(_) => "lifetime_too_long",
            JoseError::LifetimeZero => "bad_lifetime",
            JoseError::MissingField(_) => "missing_field",
            JoseError::SignatureMismatch => "signature_mismatch",
            JoseError::Internal(_) => "jose_internal",
        }
    }

    /// True when the caller's input is at fault (HTTP 400); false for the certificate,
    /// the token's answer or an internal failure.
    pub fn is_caller_fault(&self) -> bool {
        !matches!(
            self,
            JoseError::UnsupportedKey(_)
                | JoseError::BadCertificate(_)
                | JoseError::SignatureMismatch
                | JoseError::Internal(_)
        )
    }

    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        JoseError::Internal(sanitise(&what.to_string(), 120))
    }

    pub(crate) fn name(text: &str) -> String {
        sanitise(text, 40)
    }
}

/// Why signing failed: the input (see [`JoseError`]) or the token.
#[derive(Debug, thiserror::Error)]
pub enum SignFailure<E> {
    /// The request was refused or could not be processed.
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// The signing closure (the token) failed.
    #[error("the token did not sign: {0}")]
    Token(E),
}
