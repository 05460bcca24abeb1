//! One connection, from accept to close: the answers given here before the router (a peer no rule admits, a request without
//! exactly one Host), and the close: `Connection: close` and a lingering close whenever
//! an answer leaves part of the request body unread.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

use super::conn_io::{Activity, ConnIo};
use super::error::ApiError;
use super::peer::Peer;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per identity at most.
    pub max_per_identity: usize,
    /// Time allowed to send a request's headers.
    pub header_timeout: Duration,
    /// Time a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
}

impl ConnLimits {
    /// The limits `[server]` sets.
    pub fn of(config: &crate::config::Resolved) -> Self {
        let server = &config.config.server;
        Self {
            max_connections: server.max_connections,
            max_per_identity: server.max_connections_per_identity,
            header_timeout: config.read_timeout(),
            write_timeout: Duration::from_millis(server.write_timeout_ms),
        }
    }
}

/// A check run before each request of a connection, for an identity that can stop
/// holding while the connection stays open (a TLS client whose certificate was unpinned,
/// expired or revoked): the 403 to answer, after which the connection closes.
pub type Recheck = Arc<dyn Fn() -> Result<(), ApiError> + Send + Sync>;

/// Serves `stream` from `peer` until it closes, or until `activity` is told to close it
/// while idle; `admitted` is the policy's answer at accept, `recheck` the question asked
/// again before each request. `hold` (the connection's slots) is released when the
/// connection ends.
#[allow(clippy::too_many_arguments)]
pub fn serve<S, H>(
    stream: S,
    peer: Peer,
    admitted: bool,
    recheck: Option<Recheck>,
    app: Router,
    limits: &ConnLimits,
    graceful: Watcher,
    activity: Arc<Activity>,
    hold: H,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Send + 'static,
{
    let linger = Arc::new(AtomicBool::new(false));
    let io = ConnIo::new(
        stream,
        limits.write_timeout,
        linger.clone(),
        activity.clone(),
    );
    let responses = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let early = if admitted {
            recheck.as_ref().and_then(|check| check().err())
        } else {
            Some(refused(&peer))
        };
        let answered = answer(request, peer.clone(), early, app.clone(), linger.clone());
        let activity = responses.clone();
        async move {
            let response = answered.await?;
            Ok::<_, Infallible>(response.map(|body| {
                axum::body::Body::new(Responded {
                    inner: body,
                    activity,
                })
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(64)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service);
    let watched = graceful.watch(connection);
    async move {
        tokio::select! {
            ended = watched => if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            },
            () = activity.closing() => {
                tracing::debug!("closed an idle connection to admit another of its caller");
            }
        }
        drop(hold);
    }
}

/// One request's answer: `refusal` (a peer no longer or never admitted) or a bad Host
/// answered here, and the connection closes after it; else the router's. Marks the
/// connection to close, lingering, when the body was left unread.
async fn answer(
    request: Request<Incoming>,
    peer: Peer,
    refusal: Option<ApiError>,
    app: Router,
    linger: Arc<AtomicBool>,
) -> Result<Response<axum::body::Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let read = Arc::new(AtomicBool::new(body.is_end_stream()));
    let mut request = Request::from_parts(
        parts,
        axum::body::Body::new(Tracked {
            inner: body,
            read: read.clone(),
        }),
    );
    let early = refusal.or_else(|| host_problem(&request));
    let answered_here = early.is_some();
    let mut response = match early {
        Some(error) => error.into_response(),
        None => {
            request.extensions_mut().insert(peer);
            app.oneshot(request).await?
        }
    };
    let unread = !read.load(Ordering::Acquire);
    if unread || answered_here {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if unread {
        linger.store(true, Ordering::Release);
    }
    Ok(response)
}

/// The answer to a peer that no rule admitted at accept (logged, folded, by
/// [`super::notices::Notices`]).
fn refused(peer: &Peer) -> ApiError {
    super::policy::refusal(peer)
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host header.
fn host_problem<B>(request: &Request<B>) -> Option<ApiError> {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    (request.version() == Version::HTTP_11 && hosts != 1).then(|| {
        ApiError::bad_request(format!(
            "an HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2); this one has {hosts}"
        ))
    })
}

/// A response body that marks its connection idle once hyper has written the last of it
/// and dropped it.
struct Responded {
    inner: axum::body::Body,
    activity: Arc<Activity>,
}

impl Drop for Responded {
    fn drop(&mut self) {
        self.activity.responded();
    }
}

impl Body for Responded {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body, noting when it has been read to its end.
struct Tracked {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
