//! The router: one line per endpoint. `app(state)` builds it, so handlers can be tested
//! without a socket; each handler is a file of its own, and what handlers share is in
//! [`super::request`].

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use super::error::{self, ApiError};
use super::state::AppState;
use super::xades_route;
use super::{decrypt_route, health, keys_route, metrics_route, sign_route, xml_routes};
use super::{jwk_route, jws_route, jwt_route};

/// The router with every endpoint.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/keys", get(keys_route::list_keys))
        .route("/v1/keys/{name}", get(keys_route::get_key))
        .route(
            "/v1/keys/{name}/certificate",
            get(keys_route::get_certificate),
        )
        .route("/v1/keys/{name}/sign", post(sign_route::sign))
        .route("/v1/keys/{name}/wss/sign", post(xml_routes::wss))
        .route("/v1/keys/{name}/saml/sign", post(xml_routes::saml))
        .route("/v1/keys/{name}/saml/decrypt", post(decrypt_route::decrypt))
        .route("/v1/keys/{name}/xades/sign", post(xades_route::sign))
        .route("/v1/keys/{name}/jws/sign", post(jws_route::jws))
        .route(
            "/v1/keys/{name}/jwt/client-assertion",
            post(jwt_route::client_assertion),
        )
        .route("/v1/keys/{name}/jwk", get(jwk_route::get_jwk))
        .route("/v1/health", get(health::handler))
        .route("/metrics", get(metrics_route::metrics))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(error::log_refusal))
        .with_state(state)
}
