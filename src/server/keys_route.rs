//! `GET /v1/keys`, `GET /v1/keys/{name}` and its certificate: what the token holds for
//! the keys a peer may use. No audit record: nothing is signed or opened.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::peer::Peer;
use super::policy::KeyRule;
use super::request::{usable_key, KeyLookup};
use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::cert::{CertInfo, KeyKind};
use crate::config::Purpose;
use crate::text::printable;

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

pub(super) async fn list_keys(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    policy.check_peer(&peer)?;
    let keys: Vec<KeyView> = policy
        .names_for(&peer)
        .iter()
        .map(|r| view(&state, r))
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

pub(super) async fn get_key(
    State(state): State<Arc<AppState>>,
    KeyLookup { rule }: KeyLookup,
) -> Response {
    Json(view(&state, &rule)).into_response()
}

/// `?format=pem|der|base64&chain=true|false`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertQuery {
    format: Option<String>,
    chain: Option<bool>,
}

pub(super) async fn get_certificate(
    State(state): State<Arc<AppState>>,
    KeyLookup { rule }: KeyLookup,
    query: Result<Query<CertQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let key = usable_key(&state, &rule).await?;
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
