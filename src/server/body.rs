//! Reading a request body with a size limit and a deadline, so a huge or a dribbling
//! body costs the daemon nothing.

use std::time::Duration;

use axum::body::{Body, Bytes};

use super::error::ApiError;

/// Reads `body` whole: at most `limit` bytes (else 413), within `deadline` (else 408).
pub async fn read(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::too_slow()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "could not read the request body: {e}"
                )))
            }
        }
    }
}
