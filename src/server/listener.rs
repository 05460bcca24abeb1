//! The Unix socket: created safely with the configured mode, and served one connection
//! at a time per task, each tagged with its peer's credentials.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::peer::Peer;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another daemon answers on the path.
    #[error("{0} is in use by a running process (another hsm-signer?); stop it or choose another [server] socket")]
    InUse(String),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; not touching it: remove it or choose another [server] socket")]
    NotSocket(String),
    /// Other failures.
    #[error("cannot set up the socket {path}: {detail}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        detail: String,
    },
}

/// The listening socket systemd passed (socket activation), if any: fd 3 when
/// `LISTEN_FDS=1` and `LISTEN_PID` is this process. systemd owns it (path, mode and group
/// come from the .socket unit) and keeps it open while the daemon restarts, so callers
/// wait in its backlog instead of failing.
pub fn inherited() -> Result<Option<UnixListener>, SocketError> {
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    if !ours || std::env::var("LISTEN_FDS").ok().as_deref() != Some("1") {
        return Ok(None);
    }
    let io = |what: &str, e: &dyn std::fmt::Display| SocketError::Io {
        path: "fd 3 from systemd".into(),
        detail: format!("{what}: {e}"),
    };
    let Some(listener) = listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(|e| io("LISTEN_FDS=1, but fd 3 is unusable", &e))?
    else {
        return Ok(None);
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| io("set_nonblocking", &e))?;
    UnixListener::from_std(listener)
        .map(Some)
        .map_err(|e| io("registering with tokio", &e))
}

/// Binds `path` with permission bits `mode` (and group `group`), replacing an existing
/// path only if it is a stale socket nobody answers on.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let name = path.display().to_string();
    let io = |what: &str, e: &dyn std::fmt::Display| SocketError::Io {
        path: name.clone(),
        detail: format!("{what}: {e}"),
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotSocket(name));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(name));
        }
        tracing::info!(socket = %name, "removing a stale socket");
        std::fs::remove_file(path).map_err(|e| io("removing the stale socket", &e))?;
    }
    // No moment where the socket exists with looser permissions than configured.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| io("bind", &e))?;
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(|e| io("looking up socket_group", &e))?
            .ok_or_else(|| io("socket_group", &format!("no group named {group:?}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io("chown", &e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", &e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io("set_nonblocking", &e))?;
    UnixListener::from_std(listener).map_err(|e| io("registering with tokio", &e))
}

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time allowed to send a request's headers.
    pub header_timeout: Duration,
}

/// Accepts connections until `stop` fires, then lets requests in flight finish within
/// `grace`.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    limits: ConnLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing the connection");
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(peer);
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_headers(64)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still running after the grace period; stopping anyway"
        );
    }
}
