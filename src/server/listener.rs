//! The Unix socket: created safely with the configured mode, and the accept loop: the
//! connection limits, the policy's answer for each peer, and folded notices. Each
//! connection is then served by [`super::conn`].

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::conn::{self, Identities, IdentityKey};
use super::fold::Fold;
use super::peer::Peer;
pub use conn::ConnLimits;

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

/// Accepts connections until `stop` fires, then lets requests in flight finish within
/// `grace`. `admit` is the policy's answer for a peer, asked once per connection: a peer
/// it refuses gets one 403 and the connection closes.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    limits: ConnLimits,
    admit: Admission,
    audit: Option<crate::audit::AuditLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    warn_if_few_files(limits.max_connections);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let identities = Identities::new(limits.max_per_identity);
    let mut notices = Notices::new(audit);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    notices.accept_failed(&e);
                    // EMFILE/ENFILE stay until a connection closes: do not spin on them.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = tick.tick() => {
                notices.flush();
                continue;
            }
            _ = stop.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            notices.full(limits.max_connections);
            continue;
        };
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                notices.no_peer(&e);
                continue;
            }
        };
        let admitted = admit(&peer);
        if !admitted {
            notices.refused(&peer);
        }
        let Some(counted) = identities.enter(peer.key()) else {
            notices.identity_full(peer.key(), limits.max_per_identity);
            continue;
        };
        tokio::spawn(conn::serve(
            stream,
            peer,
            admitted,
            None,
            app.clone(),
            &limits,
            graceful.watcher(),
            (slot, counted),
        ));
    }
    notices.flush();
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

/// The policy's answer for a peer at accept: true if some rule admits it. Cheap, and
/// silent: the listener logs refusals, folded.
pub type Admission = Arc<dyn Fn(&Peer) -> bool + Send + Sync>;

/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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

/// What the accept loop logs, each folded to one line per second (per uid where there
/// is one) with the count of what was folded: a flood must not flood the journal.
struct Notices {
    /// Refusals are also audited, folded the same way (one record per uid per second).
    audit: Option<crate::audit::AuditLog>,
    refused: Fold<IdentityKey>,
    identity_full: Fold<IdentityKey>,
    full: Fold<()>,
    accept_failed: Fold<()>,
    no_peer: Fold<()>,
}

impl Notices {
    fn new(audit: Option<crate::audit::AuditLog>) -> Self {
        let second = Duration::from_secs(1);
        Self {
            audit,
            refused: Fold::new(second),
            identity_full: Fold::new(second),
            full: Fold::new(second),
            accept_failed: Fold::new(second),
            no_peer: Fold::new(second),
        }
    }
}

impl Notices {
    fn refused(&mut self, peer: &Peer) {
        if let Some(folded) = self.refused.event(peer.key(), Instant::now()) {
            tracing::warn!(peer = %peer.describe(), folded, "refused a connection from a peer no rule admits");
            self.audit_refusal(Some(peer), peer.key(), 1 + folded);
        }
    }

    /// A `refused_peer` record: `count` connections refused (this one, plus those folded
    /// since the last record for the uid). Written on a blocking thread, not awaited: the
    /// accept loop never waits on the disk, and the fold bounds the rate.
    fn audit_refusal(&self, peer: Option<&Peer>, key: IdentityKey, count: u64) {
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let mut record = crate::audit::Record::system("refused_peer", "forbidden")
            .with_detail(serde_json::json!({ "connections": count }));
        record.status = 403;
        record.caller = match (peer, key) {
            (Some(peer), _) => peer.caller(),
            (None, IdentityKey::Uid(uid)) => crate::audit::Caller {
                uid: Some(uid),
                ..Default::default()
            },
            (None, IdentityKey::Client(name)) => crate::audit::Caller {
                client: Some(name.to_string()),
                ..Default::default()
            },
        };
        tokio::task::spawn_blocking(move || audit.record(record));
    }

    fn identity_full(&mut self, key: IdentityKey, max: usize) {
        if let Some(folded) = self.identity_full.event(key.clone(), Instant::now()) {
            tracing::warn!(
                identity = %key,
                max,
                folded,
                "max_connections_per_identity reached; closing a new connection"
            );
        }
    }

    fn full(&mut self, max: usize) {
        if let Some(folded) = self.full.event((), Instant::now()) {
            tracing::warn!(
                max,
                folded,
                "connection limit reached; closing a new connection"
            );
        }
    }

    fn accept_failed(&mut self, e: &std::io::Error) {
        if let Some(folded) = self.accept_failed.event((), Instant::now()) {
            tracing::warn!(error = %e, folded, "accept failed (EMFILE: raise LimitNOFILE); retrying in 100 ms");
        }
    }

    fn no_peer(&mut self, e: &std::io::Error) {
        if let Some(folded) = self.no_peer.event((), Instant::now()) {
            tracing::warn!(error = %e, folded, "no peer credentials; closing the connection");
        }
    }

    /// Logs the counts of the windows that ended.
    fn flush(&mut self) {
        let now = Instant::now();
        for (key, n) in self.refused.ended(now) {
            tracing::warn!(
                identity = %key,
                folded = n,
                "refused {n} more from {key} in the last second"
            );
            self.audit_refusal(None, key, n);
        }
        for (key, n) in self.identity_full.ended(now) {
            tracing::warn!(
                identity = %key,
                folded = n,
                "max_connections_per_identity: closed {n} more from {key} in the last second"
            );
        }
        for ((), n) in self.full.ended(now) {
            tracing::warn!(
                folded = n,
                "connection limit: closed {n} more in the last second"
            );
        }
        for ((), n) in self.accept_failed.ended(now) {
            tracing::warn!(
                folded = n,
                "accept failed {n} more times in the last second"
            );
        }
        for ((), n) in self.no_peer.ended(now) {
            tracing::warn!(
                folded = n,
                "no peer credentials: closed {n} more in the last second"
            );
        }
    }
}
