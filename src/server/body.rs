//! Reading a request body with a size limit and a deadline, so a huge or a dribbling
//! body costs the daemon nothing. JSON endpoints and XML endpoints have limits of their
//! own, and a 413 names the setting that refused the body.

use std::time::Duration;

use axum::body::{Body, Bytes};

use super::error::ApiError;

/// Which setting bounds a body, for the 413 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `[server] max_body_bytes`: `sign` and the other JSON endpoints.
    Json,
    /// `[server] max_xml_body_bytes`: the endpoints that take an XML document.
    Xml,
    /// `[server] max_body_bytes` for `jws/sign` and `jwt/client-assertion`, whose
    /// payload cannot be replaced by a digest.
    Jose,
}

impl Limit {
    fn too_large(self, limit: usize) -> ApiError {
        match self {
            Limit::Json => ApiError::too_large(
                limit,
                "max_body_bytes",
                "send a digest to /sign instead of the data",
            ),
            Limit::Jose => ApiError::too_large(
                limit,
                "max_body_bytes",
                "a JWS payload must fit in it; an operator may raise it",
            ),
            Limit::Xml => ApiError::too_large(
                limit,
                "max_xml_body_bytes",
                "an operator may raise it for larger documents",
            ),
        }
    }
}

/// Reads the body of a JSON endpoint whole: at most `limit` bytes (else 413 naming
/// `max_body_bytes`), within `deadline` (else 408).
pub async fn read(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    read_under(body, limit, deadline, Limit::Json).await
}

/// Reads the body of a JOSE endpoint whole, as [`read`] does, with a 413 that does not
/// suggest a digest.
pub async fn read_jose(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    read_under(body, limit, deadline, Limit::Jose).await
}

/// Reads the body of an XML endpoint whole, as [`read`] does, under
/// `[server] max_xml_body_bytes`.
pub async fn read_xml(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    read_under(body, limit, deadline, Limit::Xml).await
}

async fn read_under(
    body: Body,
    limit: usize,
    deadline: Duration,
    kind: Limit,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(deadline, collect(body, limit)).await {
        Err(_) => Err(ApiError::too_slow()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = e.is::<http_body_util::LengthLimitError>()
                || e.to_string().contains("length limit");
            if too_large {
                Err(kind.too_large(limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "could not read the request body: {e}"
                )))
            }
        }
    }
}

/// The body's frames appended to one buffer sized from `Content-Length` (when it fits the
/// limit), so a large body is held once: collecting the frames and then joining them, as
/// `axum::body::to_bytes` does, holds it twice for a moment. The limit is
/// `http_body_util::Limited`'s.
async fn collect(body: Body, limit: usize) -> Result<Bytes, axum::BoxError> {
    use axum::body::HttpBody;
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    let announced = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut buffer = Vec::with_capacity(announced.min(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}
