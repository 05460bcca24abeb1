//! The Unix socket: created safely with the configured mode, and its accept loop, which
//! yields each connection with its peer's credentials to the [`Admission`] both listeners
//! share.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;

use super::admission::Admission;
pub use super::admission::PeerFilter;
pub use super::conn::ConnLimits;
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
    /// Other users may write to the socket's directory.
    #[error("the socket directory {dir} (mode {mode:o}) is writable by other users without the sticky bit: they could swap the socket for a symlink; make it 0755 (as hsm-signer.socket's DirectoryMode does) or choose another [server] socket")]
    UnsafeDir {
        /// The directory.
        dir: String,
        /// Its permission bits.
        mode: u32,
    },
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
///
/// The socket is bound, given its group and mode inside a private 0700 directory made
/// next to `path`, and only then renamed into place: chown and chmod on `path` itself
/// would follow a symlink another user swapped in after the bind (CWE-367). rename
/// replaces such a symlink instead of following it.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let name = path.display().to_string();
    let io = |what: &str, e: &dyn std::fmt::Display| SocketError::Io {
        path: name.clone(),
        detail: format!("{what}: {e}"),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    check_dir(dir)?;
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
    let gid = match group {
        Some(group) => Some(
            nix::unistd::Group::from_name(group)
                .map_err(|e| io("looking up socket_group", &e))?
                .ok_or_else(|| io("socket_group", &format!("no group named {group:?}")))?
                .gid,
        ),
        None => None,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io("socket", &"the path has no file name"))?;
    let private = nix::unistd::mkdtemp(&dir.join(".hsm-signer-bind.XXXXXX"))
        .map_err(|e| io("creating a private directory next to the socket", &e))?;
    let staged = private.join(file_name);
    let bound = bind_staged(&staged, mode, gid).and_then(|listener| {
        std::fs::rename(&staged, path)
            .map(|()| listener)
            .map_err(|e| ("moving the socket into place", e.to_string()))
    });
    let _ = std::fs::remove_file(&staged);
    if let Err(e) = std::fs::remove_dir(&private) {
        tracing::warn!(dir = %private.display(), error = %e, "could not remove the private bind directory");
    }
    let listener = bound.map_err(|(what, e)| io(what, &e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io("set_nonblocking", &e))?;
    UnixListener::from_std(listener).map_err(|e| io("registering with tokio", &e))
}

/// Binds `staged` (in a directory only this process can enter) and sets its group and
/// mode there, where no other user can swap the path for a symlink.
fn bind_staged(
    staged: &Path,
    mode: u32,
    gid: Option<nix::unistd::Gid>,
) -> Result<std::os::unix::net::UnixListener, (&'static str, String)> {
    // No moment where the socket exists with looser permissions than configured.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(staged);
    umask(old);
    let listener = bound.map_err(|e| ("bind", e.to_string()))?;
    if let Some(gid) = gid {
        nix::unistd::chown(staged, None, Some(gid)).map_err(|e| ("chown", e.to_string()))?;
    }
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ("chmod", e.to_string()))?;
    Ok(listener)
}

/// Refuses a socket directory that other users may write to without the sticky bit:
/// there they could replace the socket, or put a symlink where it is about to be.
fn check_dir(dir: &Path) -> Result<(), SocketError> {
    let meta = std::fs::metadata(dir).map_err(|e| SocketError::Io {
        path: dir.display().to_string(),
        detail: format!("the socket's directory: {e}"),
    })?;
    let bits = meta.permissions().mode();
    if bits & 0o022 != 0 && bits & 0o1000 == 0 {
        return Err(SocketError::UnsafeDir {
            dir: dir.display().to_string(),
            mode: bits & 0o7777,
        });
    }
    Ok(())
}

/// Accepts connections until `stop` fires, each handed with its peer's credentials to
/// `admission` (shared with the TLS listener); then lets requests in flight finish within
/// `grace`.
pub async fn serve(
    listener: UnixListener,
    admission: Arc<Admission>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    warn_if_few_files(admission.limits().max_connections);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    admission.notices().accept_failed("socket", &e);
                    // EMFILE/ENFILE stay until a connection closes: do not spin on them.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        match Peer::of(&stream) {
            Ok(peer) => admission.serve(stream, peer, None, graceful.watcher()),
            Err(e) => admission.notices().no_peer(&e),
        }
    }
    admission.notices().flush();
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

/// The pause after a failed accept.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A start-time warning when the open-file limit cannot hold `max_connections`.
fn warn_if_few_files(max_connections: usize) {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < max_connections as u64 + 64 {
            tracing::warn!(
                limit = soft,
                max_connections,
                "the open-file limit is below max_connections plus 64; raise LimitNOFILE (contrib/hsm-signer.service) or lower [server] max_connections"
            );
        }
    }
}
