//! `POST /v1/keys/{name}/wss/sign` and `POST /v1/keys/{name}/saml/sign`: the daemon signs
//! a whole XML document with [`crate::xml`] and answers with the final bytes.
//!
//! The checks before the token are those of `/sign`, in the same order. Everything that
//! touches the document (parse, c14n, signature insertion, the re-parse check) runs
//! inside [`Audited::run`], on the blocking thread that holds the token session:
//! libxml2 documents are not `Send` and never reach an async worker. Neither the
//! document nor any part of it goes to the audit record or the log; the record holds
//! the SHA-256 of the canonical SignedInfo and the reference URIs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::Audited;
use super::error::ApiError;
use super::peer::Peer;
use super::policy::KeyRule;
use super::routes::{check_key, choose_algorithm, printable};
use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::cert::KeyKind;
use crate::config::Purpose;
use crate::signer::{KeySigner, SignError as TokenSignError};
use crate::xml::{self, SamlOptions, SignError, WssOptions};

/// The longest Timestamp validity accepted, in seconds (one day).
const MAX_TTL_SECONDS: u32 = 86_400;

/// The body of `POST /v1/keys/{name}/wss/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WssRequest {
    envelope: String,
    algorithm: Option<String>,
    timestamp_ttl_seconds: Option<u32>,
}

/// The body of `POST /v1/keys/{name}/saml/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamlRequest {
    xml: String,
    algorithm: Option<String>,
    reference_id: Option<String>,
}

/// The answer to a WS-Security request.
#[derive(Debug, Serialize)]
struct WssResponse {
    envelope: String,
    body_id: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    certificate_sha256: String,
}

/// The answer to a SAML request.
#[derive(Debug, Serialize)]
struct SamlResponse {
    xml: String,
    xml_base64: String,
    reference_uri: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    certificate_sha256: String,
}

/// What both handlers know once the request passed every check before the token.
struct Admitted {
    label: String,
    key_name: String,
    algorithm: Algorithm,
    cert_der: Vec<u8>,
}

pub(super) async fn wss(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let mut audited = Audited::begin("wss", peer.clone(), &state);
    let result = wss_inner(&state, &peer, name, body, &mut audited).await;
    audited.answer(&state, result).await
}

pub(super) async fn saml(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let mut audited = Audited::begin("saml", peer.clone(), &state);
    let result = saml_inner(&state, &peer, name, body, &mut audited).await;
    audited.answer(&state, result).await
}

/// Policy, key name, purpose, body: the `/sign` order up to the JSON parse.
pub(super) async fn admit_and_read(
    state: &AppState,
    peer: &Peer,
    name: Result<Path<String>, PathRejection>,
    body: Body,
    audited: &mut Audited,
    wanted: Purpose,
) -> Result<(Arc<KeyRule>, axum::body::Bytes), ApiError> {
    let policy = state.policy();
    policy.admit(peer)?;
    let Path(name) =
        name.map_err(|e| ApiError::bad_request(format!("bad key name in the path: {e}")))?;
    audited.seen.key = printable(&name);
    let rule = policy.key(&name, peer)?;
    rule.require(wanted)?;
    let settings = state.settings();
    let bytes =
        super::body::read_xml(body, settings.max_xml_body_bytes, settings.read_timeout).await?;
    Ok((rule, bytes))
}

/// The key, the algorithm (given, or the key's first allowed one that fits it) and the
/// certificate checks: the `/sign` order after the JSON parse.
fn resolve(
    state: &AppState,
    rule: &KeyRule,
    given: Option<&str>,
    audited: &mut Audited,
) -> Result<Admitted, ApiError> {
    if let Some(given) = given {
        audited.seen.algorithm = printable(given);
    }
    let key = state.signer.key_for_signing(&rule.label)?;
    let algorithm = match given {
        Some(given) => choose_algorithm(&rule.name, &rule.algorithms, given)?,
        None => default_algorithm(rule, key.kind)?,
    };
    audited.seen.algorithm = algorithm.name().into();
    check_key(rule, algorithm, key.kind, key.not_after)?;
    let cert_der = key.cert.to_der().map_err(|e| ApiError::internal(&e))?;
    Ok(Admitted {
        label: rule.label.to_string(),
        key_name: rule.name.clone(),
        algorithm,
        cert_der,
    })
}

/// The key's first configured algorithm that fits its type.
fn default_algorithm(rule: &KeyRule, kind: KeyKind) -> Result<Algorithm, ApiError> {
    rule.algorithms
        .iter()
        .copied()
        .find(|a| a.fits(kind))
        .ok_or_else(|| {
            ApiError::unprocessable(
                "algorithm_mismatch",
                format!(
                    "key {:?} is {kind}; none of its configured algorithms fits it",
                    rule.name
                ),
            )
        })
}

/// The signing closure's work: hash the canonical SignedInfo, sign on the token (ECDSA
/// as raw r||s) and note which certificate signed.
fn token_sign(
    signer: &dyn KeySigner,
    label: &str,
    algorithm: Algorithm,
    signed_info: &[u8],
    cert_sha256: &mut Option<String>,
) -> Result<Vec<u8>, TokenSignError> {
    let digest = algorithm.hash().digest(signed_info);
    let signed = signer.sign_now(label, algorithm, &digest)?;
    *cert_sha256 = Some(signed.key.cert_sha256.clone());
    Ok(signed.signature)
}

fn api_error(err: SignError<TokenSignError>) -> ApiError {
    match err {
        SignError::Xml(e) => ApiError::xml(&e),
        SignError::Token(e) => ApiError::from(e),
    }
}

async fn wss_inner(
    state: &AppState,
    peer: &Peer,
    name: Result<Path<String>, PathRejection>,
    body: Body,
    audited: &mut Audited,
) -> Result<WssResponse, ApiError> {
    let (rule, bytes) = admit_and_read(state, peer, name, body, audited, Purpose::Sign).await?;
    let request: WssRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid wss sign request: {e}"))
    })?;
    drop(bytes);
    if let Some(ttl) = request.timestamp_ttl_seconds {
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(ApiError::bad_request(format!(
                "timestamp_ttl_seconds must be 1 to {MAX_TTL_SECONDS}"
            )));
        }
    }
    let admitted = resolve(state, &rule, request.algorithm.as_deref(), audited)?;
    let Admitted {
        label,
        key_name,
        algorithm,
        cert_der,
    } = admitted;
    let envelope = request.envelope;
    let ttl = request.timestamp_ttl_seconds;
    audited
        .run(state, move |signer, seen| {
            let opts = WssOptions {
                timestamp_ttl_seconds: ttl,
                ..WssOptions::new(algorithm)
            };
            let mut cert_sha256 = None;
            let signed = xml::sign_wss(envelope.as_bytes(), &opts, &cert_der, |info| {
                token_sign(signer, &label, algorithm, info, &mut cert_sha256)
            })
            .map_err(api_error)?;
            seen.input_sha256 = hex::encode(signed.signed_info_sha256);
            seen.reference = Some(signed.reference_uris.join(" "));
            seen.cert_sha256 = cert_sha256.clone();
            Ok(WssResponse {
                envelope: signed.xml,
                body_id: signed.body_id,
                algorithm,
                algorithm_uri: algorithm.xmldsig_uri(),
                key: key_name,
                certificate_sha256: cert_sha256.unwrap_or_default(),
            })
        })
        .await
}

async fn saml_inner(
    state: &AppState,
    peer: &Peer,
    name: Result<Path<String>, PathRejection>,
    body: Body,
    audited: &mut Audited,
) -> Result<SamlResponse, ApiError> {
    let (rule, bytes) = admit_and_read(state, peer, name, body, audited, Purpose::Sign).await?;
    let request: SamlRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid saml sign request: {e}"))
    })?;
    drop(bytes);
    let admitted = resolve(state, &rule, request.algorithm.as_deref(), audited)?;
    let Admitted {
        label,
        key_name,
        algorithm,
        cert_der,
    } = admitted;
    let document = request.xml;
    let reference_id = request.reference_id;
    audited
        .run(state, move |signer, seen| {
            let opts = SamlOptions {
                reference_id,
                ..SamlOptions::new(algorithm)
            };
            let mut cert_sha256 = None;
            let signed = xml::sign_saml(document.as_bytes(), &opts, &cert_der, |info| {
                token_sign(signer, &label, algorithm, info, &mut cert_sha256)
            })
            .map_err(api_error)?;
            seen.input_sha256 = hex::encode(signed.signed_info_sha256);
            seen.reference = Some(signed.reference_uri.clone());
            seen.cert_sha256 = cert_sha256.clone();
            Ok(SamlResponse {
                xml_base64: base64::engine::general_purpose::STANDARD.encode(signed.xml.as_bytes()),
                xml: signed.xml,
                reference_uri: signed.reference_uri,
                algorithm,
                algorithm_uri: algorithm.xmldsig_uri(),
                key: key_name,
                certificate_sha256: cert_sha256.unwrap_or_default(),
            })
        })
        .await
}
