//! The HTTP API: routes and handlers. `app(state)` builds the router, so handlers can be
//! tested without a socket.

use crate::text::printable;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::{Audited, Seen};
use super::error::ApiError;
use super::peer::Peer;
use super::policy::KeyRule;
use super::state::AppState;
use crate::algorithm::{self, Algorithm, Scheme};
use crate::cert::{CertInfo, KeyKind};
use crate::config::Purpose;

/// The router with every endpoint.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{name}", get(get_key))
        .route("/v1/keys/{name}/certificate", get(get_certificate))
        .route("/v1/keys/{name}/sign", post(sign))
        .route("/v1/keys/{name}/wss/sign", post(super::xml_routes::wss))
        .route("/v1/keys/{name}/saml/sign", post(super::xml_routes::saml))
        .route(
            "/v1/keys/{name}/saml/decrypt",
            post(super::decrypt_route::decrypt),
        )
        .route("/v1/health", get(super::health::handler))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The body of `POST /v1/keys/{name}/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    algorithm: String,
    data: Option<String>,
    digest: Option<String>,
    format: Option<String>,
}

/// The answer to a signing request.
#[derive(Debug, Serialize)]
struct SignResponse {
    signature: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    format: &'static str,
    certificate_sha256: String,
}

async fn sign(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let mut audited = Audited::begin("sign", peer.clone(), &state);
    let result = sign_inner(&state, &peer, name, body, &mut audited).await;
    audited.answer(&state, result).await
}

async fn sign_inner(
    state: &AppState,
    peer: &Peer,
    name: Result<Path<String>, PathRejection>,
    body: Body,
    audited: &mut Audited,
) -> Result<SignResponse, ApiError> {
    let policy = state.policy();
    policy.admit(peer)?;
    let Path(name) =
        name.map_err(|e| ApiError::bad_request(format!("bad key name in the path: {e}")))?;
    audited.seen.key = printable(&name, 128);
    let rule = policy.key(&name, peer)?;
    rule.require(Purpose::Sign)?;
    let settings = state.settings();
    let bytes = super::body::read(body, settings.max_body_bytes, settings.read_timeout).await?;
    let DecodedSign {
        algorithm,
        der,
        digest,
    } = decode(&bytes, &rule.name, &rule.algorithms, &mut audited.seen)?;
    let key = state.signer.key_for_signing(&rule.label)?;
    check_key(&rule, algorithm, key.kind, key.not_after)?;
    let label = rule.label.clone();
    let key_name = rule.name.clone();
    audited
        .run(state, move |signer, seen| {
            let signed = signer.sign_now(&label, algorithm, &digest)?;
            seen.cert_sha256 = Some(signed.key.cert_sha256.clone());
            let signature = if der {
                algorithm::ecdsa_raw_to_der(&signed.signature)
                    .map_err(|e| ApiError::internal(&e))?
            } else {
                signed.signature
            };
            Ok(SignResponse {
                signature: base64::engine::general_purpose::STANDARD.encode(signature),
                algorithm,
                algorithm_uri: algorithm.xmldsig_uri(),
                key: key_name,
                format: if der { "der" } else { "raw" },
                certificate_sha256: signed.key.cert_sha256.clone(),
            })
        })
        .await
}

/// A signing request's body once decoded and checked, ready for the token.
#[derive(Debug)]
pub struct DecodedSign {
    /// The algorithm asked for, one the key allows.
    pub algorithm: Algorithm,
    /// True when an ECDSA signature is wanted as DER instead of raw r||s.
    pub der: bool,
    /// The digest to sign, as long as the algorithm's hash.
    pub digest: Vec<u8>,
}

/// Decodes the body of `POST /v1/keys/{key}/sign` for a key allowing `algorithms`, as the
/// handler does before it touches the token. Public for the fuzz target (it reads what a
/// hostile caller sends).
pub fn decode_sign_request(
    body: &[u8],
    key: &str,
    algorithms: &[Algorithm],
) -> Result<DecodedSign, ApiError> {
    decode(body, key, algorithms, &mut Seen::default())
}

fn decode(
    body: &[u8],
    key: &str,
    algorithms: &[Algorithm],
    seen: &mut Seen,
) -> Result<DecodedSign, ApiError> {
    let request: SignRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid sign request: {e}")))?;
    seen.algorithm = printable(&request.algorithm, 128);
    let algorithm = choose_algorithm(key, algorithms, &request.algorithm)?;
    seen.algorithm = algorithm.name().into();
    let der = wants_der(&request, algorithm)?;
    let input = decode_input(&request)?;
    seen.input_sha256 = hex::encode(openssl::sha::sha256(input.bytes()));
    let digest = input.into_digest(algorithm)?;
    Ok(DecodedSign {
        algorithm,
        der,
        digest,
    })
}

pub(super) fn choose_algorithm(
    key: &str,
    allowed: &[Algorithm],
    given: &str,
) -> Result<Algorithm, ApiError> {
    let algorithm = Algorithm::parse(given).ok_or_else(|| {
        let known: Vec<&str> = algorithm::ALL.iter().map(|a| a.name()).collect();
        ApiError::unprocessable(
            "unsupported_algorithm",
            format!(
                "unknown algorithm {:?}; known: {} or their XML-DSig URIs",
                printable(given, 128),
                known.join(", ")
            ),
        )
    })?;
    if !allowed.contains(&algorithm) {
        let allowed: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
        return Err(ApiError::unprocessable(
            "algorithm_not_allowed",
            format!(
                "key {key:?} is not configured for {algorithm}; it allows {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(algorithm)
}

fn wants_der(request: &SignRequest, algorithm: Algorithm) -> Result<bool, ApiError> {
    match request.format.as_deref() {
        None | Some("raw") => Ok(false),
        Some("der") if algorithm.scheme() == Scheme::Ecdsa => Ok(true),
        Some("der") => Err(ApiError::bad_request(
            "format \"der\" applies to ECDSA signatures only",
        )),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {:?}: use \"raw\" (r||s, XML-DSig) or \"der\"",
            printable(other, 128)
        ))),
    }
}

enum Input {
    Data(Vec<u8>),
    Digest(Vec<u8>),
}

impl Input {
    fn bytes(&self) -> &[u8] {
        match self {
            Input::Data(b) | Input::Digest(b) => b,
        }
    }

    fn into_digest(self, algorithm: Algorithm) -> Result<Vec<u8>, ApiError> {
        let hash = algorithm.hash();
        match self {
            Input::Data(data) => Ok(hash.digest(&data)),
            Input::Digest(d) if d.len() == hash.output_len() => Ok(d),
            Input::Digest(d) => Err(ApiError::unprocessable(
                "bad_digest_length",
                format!(
                    "{algorithm} takes a {}-byte digest; got {} bytes",
                    hash.output_len(),
                    d.len()
                ),
            )),
        }
    }
}

fn decode_input(request: &SignRequest) -> Result<Input, ApiError> {
    let decode = |field: &str, text: &str| {
        let engine = &base64::engine::general_purpose::STANDARD;
        engine
            .decode(text.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim()))
            .map_err(|_| ApiError::bad_request(format!("{field} is not valid base64")))
    };
    match (&request.data, &request.digest) {
        (Some(data), None) => Ok(Input::Data(decode("data", data)?)),
        (None, Some(digest)) => Ok(Input::Digest(decode("digest", digest)?)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send either data or digest, not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "send data (base64 bytes to hash and sign) or digest (base64 hash)",
        )),
    }
}

pub(super) fn check_key(
    rule: &KeyRule,
    algorithm: Algorithm,
    kind: KeyKind,
    not_after: i64,
) -> Result<(), ApiError> {
    if !algorithm.fits(kind) {
        return Err(ApiError::unprocessable(
            "algorithm_mismatch",
            format!(
                "key {:?} is {kind}; {algorithm} needs another key type",
                rule.name
            ),
        ));
    }
    if !rule.allow_expired && time::OffsetDateTime::now_utc().unix_timestamp() > not_after {
        return Err(ApiError::unprocessable(
            "certificate_expired",
            format!("the certificate of key {:?} has expired; import the renewed certificate (or set allow_expired)", rule.name),
        ));
    }
    Ok(())
}

pub(super) fn now_rfc3339() -> String {
    crate::audit::now_rfc3339()
}

/// A key as `GET /v1/keys` describes it.
#[derive(Debug, Serialize)]
struct KeyView {
    name: String,
    label: String,
    purpose: Purpose,
    available: bool,
    key: Option<KeyKind>,
    algorithms: Vec<Algorithm>,
    algorithm_uris: Vec<&'static str>,
    certificate: Option<CertInfo>,
    chain_length: usize,
}

fn view(state: &AppState, rule: &KeyRule) -> KeyView {
    let key = state.signer.key(&rule.label);
    KeyView {
        name: rule.name.clone(),
        label: rule.label.to_string(),
        purpose: rule.purpose,
        available: key.is_some(),
        key: key.as_ref().map(|k| k.kind),
        algorithms: rule.algorithms.clone(),
        algorithm_uris: rule.algorithms.iter().map(|a| a.xmldsig_uri()).collect(),
        certificate: key.as_ref().and_then(|k| CertInfo::of(&k.cert).ok()),
        chain_length: key.as_ref().map(|k| k.chain.len()).unwrap_or(0),
    }
}

async fn list_keys(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    policy.admit(&peer)?;
    let keys: Vec<KeyView> = policy
        .names_for(&peer)
        .iter()
        .map(|r| view(&state, r))
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

async fn get_key(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let rule = admitted_rule(&state, &peer, name)?;
    Ok(Json(view(&state, &rule)).into_response())
}

fn admitted_rule(
    state: &AppState,
    peer: &Peer,
    name: Result<Path<String>, PathRejection>,
) -> Result<Arc<KeyRule>, ApiError> {
    let policy = state.policy();
    policy.admit(peer)?;
    let Path(name) =
        name.map_err(|e| ApiError::bad_request(format!("bad key name in the path: {e}")))?;
    policy.key(&name, peer)
}

/// `?format=pem|der|base64&chain=true|false`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertQuery {
    format: Option<String>,
    chain: Option<bool>,
}

async fn get_certificate(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<CertQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let rule = admitted_rule(&state, &peer, name)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let key = state.signer.key_for_signing(&rule.label)?;
    let leaf = key.cert.to_der().map_err(|e| ApiError::internal(&e))?;
    match query.format.as_deref().unwrap_or("pem") {
        "der" => Ok(([(header::CONTENT_TYPE, "application/pkix-cert")], leaf).into_response()),
        "base64" => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            base64::engine::general_purpose::STANDARD.encode(leaf),
        )
            .into_response()),
        "pem" => {
            let mut pem = key.cert.to_pem().map_err(|e| ApiError::internal(&e))?;
            if query.chain.unwrap_or(true) {
                for ca in &key.chain {
                    pem.extend(ca.to_pem().map_err(|e| ApiError::internal(&e))?);
                }
            }
            Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
        }
        other => Err(ApiError::bad_request(format!(
            "format {:?}: use pem, der or base64",
            printable(other, 128)
        ))),
    }
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    state.policy().admit(&peer)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}
