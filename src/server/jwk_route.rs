//! `GET /v1/keys/{name}/jwk`: the key's public key as a JWK (RFC 7517), with `kid` (its
//! RFC 7638 thumbprint), `x5c` and `x5t#S256`, for registering the system with an
//! authorisation server. Like the certificate, it is served for a key of any purpose
//! (`use` is `enc` for a decrypt key) and not audited: nothing is signed or opened.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::jws_route::certificates;
use super::request::{usable_key, KeyLookup};
use super::state::AppState;
use crate::config::Purpose;
use crate::jose::{self, KeyUse};

pub(super) async fn get_jwk(
    State(state): State<Arc<AppState>>,
    KeyLookup { rule }: KeyLookup,
) -> Result<Response, ApiError> {
    let key = usable_key(&state, &rule).await?;
    let (der, chain) = certificates(&key)?;
    let key_use = match rule.purpose {
        Purpose::Decrypt => KeyUse::Enc,
        Purpose::Sign => KeyUse::Sig,
    };
    let jwk = jose::jwk(&der, &chain, key_use).map_err(|e| ApiError::jose(&e))?;
    Ok(Json(jwk).into_response())
}
