//! `POST /v1/keys/{name}/jws/sign`: a compact JWS (RFC 7515) over the caller's payload,
//! built and checked by [`crate::jose`], signed on the token.
//!
//! The order of checks is the daemon's (docs/api.md): peer, key name, purpose, the key's
//! `operations` ([`KeyRequest`]); the body (`max_body_bytes`), its JSON, `include`, the
//! payload and the header ([`jose::check_jws`]); then the algorithm against the key's
//! list, the key, its type and certificate ([`resolve`]); then the token. The audit
//! record holds the SHA-256 of the payload (`input_sha256`) and of the protected header
//! (`header_sha256`), never the payload. What the client-assertion handler shares with
//! this one ([`resolve`], [`certificates`], [`signer_for`], [`api_error`]) is here, as
//! that endpoint signs as this one does.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::audited::{Audited, Seen};
use super::error::ApiError;
use super::policy::KeyRule;
use super::request::{
    check_key, choose_algorithm, default_algorithm, usable_key, Endpoint, KeyRequest,
};
use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::config::{Operation, Purpose};
use crate::jose::{self, Include, JwsOptions, Payload, SignFailure};
use crate::signer::{KeyInfo, KeySigner, SignError};
use crate::text::printable;

/// The body of `POST /v1/keys/{name}/jws/sign`. A member named twice at the top level
/// is refused by serde (`duplicate field`); inside `payload` and `header`, by
/// [`jose::check_jws`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsRequest {
    payload: Option<Box<RawValue>>,
    payload_base64: Option<String>,
    algorithm: Option<String>,
    header: Option<Box<RawValue>>,
    #[serde(default)]
    include: Vec<String>,
}

/// The answer.
#[derive(Debug, Serialize)]
struct JwsResponse {
    jws: String,
    algorithm: Algorithm,
    key: String,
    certificate_sha256: String,
}

/// `jws` in the audit record; the key must sign.
pub(super) struct JwsSign;

impl Endpoint for JwsSign {
    const OP: &'static str = "jws";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Jws;
}

pub(super) async fn jws(request: KeyRequest<JwsSign>, body: Body) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let result = jws_inner(&state, &rule, body, &mut audited).await;
    audited.answer(&state, result).await
}

/// The payload as sent: a JSON object's text, or standard base64.
enum OwnedPayload {
    Json(Box<RawValue>),
    Base64(String),
}

impl OwnedPayload {
    fn of(request: &mut JwsRequest) -> Result<Self, ApiError> {
        match (request.payload.take(), request.payload_base64.take()) {
            (Some(json), None) => Ok(OwnedPayload::Json(json)),
            (None, Some(b64)) => Ok(OwnedPayload::Base64(b64)),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "send either payload or payload_base64, not both",
            )),
            (None, None) => Err(ApiError::bad_request(
                "send payload (a JSON object) or payload_base64 (standard base64 bytes)",
            )),
        }
    }

    fn borrow(&self) -> Payload<'_> {
        match self {
            OwnedPayload::Json(raw) => Payload::Json(raw.get()),
            OwnedPayload::Base64(text) => Payload::Base64(text),
        }
    }
}

async fn jws_inner(
    state: &AppState,
    rule: &KeyRule,
    body: Body,
    audited: &mut Audited,
) -> Result<JwsResponse, ApiError> {
    let bytes = read_body(state, body).await?;
    let mut request: JwsRequest = parse_body(&bytes, "jws sign")?;
    drop(bytes);
    let payload = OwnedPayload::of(&mut request)?;
    let include = includes(&request.include)?;
    let header = request.header.take();
    let opts = JwsOptions {
        algorithm: None,
        header: header.as_deref().map(RawValue::get),
        include: &include,
    };
    jose::check_jws(payload.borrow(), &opts).map_err(|e| ApiError::jose(&e))?;
    let algorithm = resolve(state, rule, request.algorithm.as_deref(), &mut audited.seen).await?;
    let (label, key_name) = (rule.label.clone(), rule.name.clone());
    audited
        .run(state, move |signer, seen| {
            let key = signer.usable_key(&label)?;
            let (cert_der, chain) = certificates(&key)?;
            let opts = JwsOptions {
                algorithm: Some(algorithm),
                header: header.as_deref().map(RawValue::get),
                include: &include,
            };
            let signed = jose::sign_jws(
                payload.borrow(),
                &opts,
                &cert_der,
                &chain,
                signer_for(signer, &label, algorithm),
            )
            .map_err(api_error)?;
            seen.input_sha256 = hex::encode(signed.payload_sha256);
            seen.header_sha256 = Some(hex::encode(signed.header_sha256));
            seen.cert_sha256 = Some(key.cert_sha256.clone());
            Ok(JwsResponse {
                jws: signed.jws,
                algorithm: signed.algorithm,
                key: key_name,
                certificate_sha256: key.cert_sha256.clone(),
            })
        })
        .await
}

/// The body under `[server] max_body_bytes`, as for `/sign`.
pub(super) async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let settings = state.settings();
    super::body::read_jose(body, settings.max_body_bytes, settings.read_timeout).await
}

/// The body as `T`: 400 for JSON that is not one, an unknown field, or a field twice.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid {what} request: {e}")))
}

/// `include`'s names (`kid`, `x5c`, `x5t#S256`).
pub(super) fn includes(names: &[String]) -> Result<Vec<Include>, ApiError> {
    names
        .iter()
        .map(|n| Include::parse(n).map_err(|e| ApiError::jose(&e)))
        .collect()
}

/// Steps 5 to 7: the algorithm given against the key's list, then the key as loaded
/// now ([`usable_key`]: a reconnect moments away is waited for, a token that stays down
/// is 503), the default algorithm when none was given, the key's type and the
/// certificate's validity. [`jose`] then checks that the algorithm
/// is a JOSE one for this key's curve.
pub(super) async fn resolve(
    state: &AppState,
    rule: &KeyRule,
    given: Option<&str>,
    seen: &mut Seen,
) -> Result<Algorithm, ApiError> {
    if let Some(given) = given {
        seen.algorithm = printable(given, 128);
    }
    let given = given
        .map(|given| choose_algorithm(&rule.name, &rule.algorithms, given))
        .transpose()?;
    let key = usable_key(state, rule).await?;
    let algorithm = match given {
        Some(algorithm) => algorithm,
        None => default_algorithm(rule, key.kind)?,
    };
    seen.algorithm = algorithm.name().into();
    check_key(rule, algorithm, key.kind, key.not_after)?;
    Ok(algorithm)
}

/// The key's certificate and chain, DER, for the header's `kid`, `x5c`, `x5t#S256`.
pub(super) fn certificates(key: &KeyInfo) -> Result<(Vec<u8>, Vec<Vec<u8>>), ApiError> {
    let der = key.cert.to_der().map_err(|e| ApiError::internal(&e))?;
    let chain = key
        .chain
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::internal(&e))?;
    Ok((der, chain))
}

/// The closure [`jose`] signs with: the hash in software, the private-key operation on
/// this session (ECDSA comes back as `R || S`, as RFC 7518 wants).
pub(super) fn signer_for<'a>(
    signer: &'a dyn KeySigner,
    label: &'a Arc<str>,
    algorithm: Algorithm,
) -> impl FnOnce(&[u8]) -> Result<Vec<u8>, SignError> + 'a {
    move |input| {
        let digest = algorithm.hash().digest(input);
        signer
            .sign_now(label, algorithm, &digest)
            .map(|s| s.signature)
    }
}

/// A JOSE failure as the caller sees it ([`ApiError::jose`]), or the token's.
pub(super) fn api_error(err: SignFailure<SignError>) -> ApiError {
    match err {
        SignFailure::Jose(e) => ApiError::jose(&e),
        SignFailure::Token(e) => ApiError::from(e),
    }
}
