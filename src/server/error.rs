//! The one place where failures become HTTP statuses and JSON error bodies.
//!
//! Callers get a stable `code` and a message that helps them; PKCS#11 details go to the
//! log only. An error carries its log line ([`LogDetail`]) to the answer, and the
//! router's [`log_refusal`] layer writes it as the answer leaves, once per answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::Purpose;
use crate::signer::SignError;
use crate::xml::enc::DecryptError;

/// An API failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// For the caller.
    pub message: String,
    /// Seconds for Retry-After, on 503.
    pub retry_after: Option<u32>,
    /// What the daemon's log says of it; never sent to the caller.
    pub log: Option<LogDetail>,
}

/// An error's line in the daemon's log, written by [`log_refusal`] when the answer
/// leaves (or by [`LogDetail::write`] for an answer that never does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDetail {
    /// The audit log refused the request's record.
    AuditUnavailable(String),
    /// Our own failure.
    Internal(String),
    /// The token is not reachable.
    TokenUnavailable(String),
    /// The token refused the PIN.
    PinProblem(String),
    /// A configured key is not loaded.
    KeyMissing(String),
    /// One key is missing or broken; the others sign.
    KeyFault {
        /// Its label.
        label: String,
        /// Why.
        reason: String,
    },
}

impl LogDetail {
    /// Writes the line.
    pub fn write(&self) {
        match self {
            LogDetail::AuditUnavailable(error) => {
                tracing::error!(%error, "refusing: the audit log cannot record the request")
            }
            LogDetail::Internal(detail) => tracing::error!(%detail, "internal error"),
            LogDetail::TokenUnavailable(reason) => {
                tracing::warn!(%reason, "refusing: token unavailable")
            }
            LogDetail::PinProblem(reason) => tracing::error!(%reason, "refusing: PIN problem"),
            LogDetail::KeyMissing(label) => {
                tracing::error!(%label, "configured key not loaded from the token")
            }
            LogDetail::KeyFault { label, reason } => tracing::error!(
                %label,
                %reason,
                "refusing: this key is not usable; the other keys sign"
            ),
        }
    }
}

/// The layer that logs each answer's [`LogDetail`], so a constructor of [`ApiError`]
/// logs nothing itself and an error is logged once, when it is answered.
pub async fn log_refusal(response: Response) -> Response {
    if let Some(detail) = response.extensions().get::<LogDetail>() {
        detail.write();
    }
    response
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            log: None,
        }
    }

    fn logged(self, detail: LogDetail) -> Self {
        Self {
            log: Some(detail),
            ..self
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 403: this peer may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such key.
    pub fn unknown_key(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no key named {name:?} is configured"),
        )
    }

    /// 404: no such route.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see GET /v1/keys and docs/api.md",
        )
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    }

    /// 408: the client was too slow sending its request.
    pub fn too_slow() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
    }

    /// 413: the body passed `[server] {setting}`; `hint` says what the caller can do.
    pub fn too_large(limit: usize, setting: &str, hint: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over {limit} bytes ([server] {setting}); {hint}"),
        )
    }

    /// An XML document refused or not signed: 400 for what the parser refuses, 422 for
    /// a well-formed document that cannot be signed as asked, 500 for our own failures.
    /// The message names at most a sanitised element name or ID, never content.
    pub fn xml(err: &crate::xml::XmlError) -> Self {
        use crate::xml::XmlError as X;
        match err {
            X::BadXml { .. }
            | X::DoctypeForbidden
            | X::EncodingUnsupported(_)
            | X::TooDeep(_)
            | X::DuplicateId(_)
            | X::TooComplex { .. }
            | X::BadId(_)
            | X::AmbiguousId { .. }
            | X::MissingId(_) => Self::new(StatusCode::BAD_REQUEST, err.code(), err.to_string()),
            X::NotSoapEnvelope(_)
            | X::AlreadySigned(_)
            | X::AlreadyTimestamped
            | X::ReferenceNotFound(_)
            | X::AlgorithmMismatch(_) => Self::unprocessable(err.code(), err.to_string()),
            X::BadCertificate(_) | X::SignatureMismatch | X::Internal(_) => Self::internal(err),
        }
    }

    /// 403 `operation_not_allowed`: the key's `operations` list leaves this endpoint out.
    pub fn operation_not_allowed(name: &str, operation: crate::config::Operation) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "operation_not_allowed",
            format!("key {name:?} is not configured for {operation} ([[keys]] operations)"),
        )
    }

    /// 403 `audience_not_allowed`: the key's `jwt_audiences` does not list the audience
    /// a client assertion asks for.
    pub fn audience_not_allowed(name: &str, audience: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "audience_not_allowed",
            format!(
                "key {name:?} may not sign client assertions for audience {:?} ([[keys]] jwt_audiences)",
                crate::text::printable(audience, 256)
            ),
        )
    }

    /// A JWS or client assertion not made: 400 for the caller's JSON, header, claims or
    /// lifetime, 422 for an algorithm that does not fit (as for `/sign`), 500 for the
    /// certificate or the token's answer (logged). The message names at most a
    /// sanitised member name, never a value.
    pub fn jose(err: &crate::jose::JoseError) -> Self {
        use crate::jose::JoseError as J;
        match err {
            J::UnsupportedAlgorithm(_) | J::AlgorithmMismatch { .. } => {
                Self::unprocessable(err.code(), err.to_string())
            }
            _ if err.is_caller_fault() => {
                Self::new(StatusCode::BAD_REQUEST, err.code(), err.to_string())
            }
            _ => Self::internal(err),
        }
    }

    /// 422 `wrong_purpose`: a decrypt key asked to sign, or a sign key asked to decrypt.
    pub fn wrong_purpose(name: &str, purpose: Purpose, wanted: Purpose) -> Self {
        Self::unprocessable(
            "wrong_purpose",
            format!("key {name:?} is configured with purpose = \"{purpose}\"; it cannot be used to {wanted}"),
        )
    }

    /// A WK assertion not decrypted: the parser's refusals as for signing, 422 for the
    /// structure, an unsupported algorithm or any cryptographic failure (one message for
    /// every such failure, so the answer is no oracle), the token's failures as for
    /// signing.
    pub fn decrypt(err: DecryptError<SignError>) -> Self {
        match err {
            DecryptError::Xml(e) => Self::xml(&e),
            DecryptError::Structure(message) => Self::unprocessable(
                "bad_encrypted_assertion",
                format!("bad encrypted assertion: {message}"),
            ),
            DecryptError::Unsupported(uri) => Self::unprocessable(
                "unsupported_encryption",
                format!("unsupported encryption algorithm {uri:?}; WK uses ECDH-ES with ConcatKDF (SHA-256), kw-aes256 and aes256-gcm"),
            ),
            e @ DecryptError::Crypto => Self::unprocessable("decrypt_failed", e.to_string()),
            DecryptError::Token(e) => e.into(),
        }
    }

    /// 422 with a code of its own.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503 with Retry-After.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 503: the audit log cannot record the request, so it is not served.
    pub fn audit_unavailable(err: &crate::audit::Unavailable) -> Self {
        Self::unavailable(
            "audit_unavailable",
            "the audit log cannot record this request, so it is refused; an operator must check the audit file (disk space, permissions)",
            5,
        )
        .logged(LogDetail::AuditUnavailable(err.to_string()))
    }

    /// 500: details logged, not sent.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the details",
        )
        .logged(LogDetail::Internal(detail.to_string()))
    }
}

impl From<SignError> for ApiError {
    fn from(err: SignError) -> Self {
        match err {
            SignError::Overloaded => ApiError::unavailable(
                "overloaded",
                "too many signing requests waiting; retry shortly",
                1,
            ),
            SignError::Unavailable(reason) => ApiError::unavailable(
                "token_unavailable",
                "the token is not reachable right now; retry shortly",
                2,
            )
            .logged(LogDetail::TokenUnavailable(reason.to_string())),
            SignError::Timeout(after) => ApiError::unavailable(
                "token_timeout",
                format!(
                    "the token did not answer within {} ms; retry shortly",
                    after.as_millis()
                ),
                1,
            ),
            SignError::PinProblem(reason) => ApiError::unavailable("pin_refused", "the token refused the daemon's PIN; an operator must fix the PIN and restart the daemon", 60)
                .logged(LogDetail::PinProblem(reason.to_string())),
            SignError::KeyMissing(label) => ApiError::unavailable(
                "key_unavailable",
                "this key is not loaded from the token; an operator must check the token",
                30,
            )
            .logged(LogDetail::KeyMissing(label.to_string())),
            SignError::KeyFault { label, reason } => ApiError::unavailable(
                "key_unavailable",
                "this key is missing or broken on the token (the other keys still sign); an operator must check it with `hsm-signer verify`",
                5,
            )
            .logged(LogDetail::KeyFault {
                label: label.to_string(),
                reason: reason.to_string(),
            }),
            SignError::ShuttingDown => ApiError::unavailable(
                "shutting_down",
                "the daemon is restarting; retry shortly",
                1,
            ),
            SignError::Failed(e) => ApiError::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(detail) = self.log {
            response.extensions_mut().insert(detail);
        }
        response
    }
}
