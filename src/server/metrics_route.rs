//! `GET /metrics`: the counters in OpenMetrics text, for an admitted peer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::error::ApiError;
use super::peer::Peer;
use super::state::AppState;

pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    state.policy().check_peer(&peer)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}
