//! Who is calling. On the Unix socket, the peer's credentials from SO_PEERCRED, taken by
//! the kernel when the connection was made, so a caller cannot claim to be someone else.
//! Over mutual TLS, the name pinned in `[[clients]]` for the SHA-256 of the certificate
//! the client proved it holds the key of in the handshake.

use std::sync::Arc;

use crate::audit::Caller;

/// The calling identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A process on this host, on the Unix socket.
    Local(Local),
    /// A client on another host, over mutual TLS.
    Remote(Remote),
}

/// A local process's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Effective uid.
    pub uid: u32,
    /// Effective primary gid.
    pub gid: u32,
    /// Process ID, when the kernel gives it.
    pub pid: Option<i32>,
}

/// A TLS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The `[[clients]]` name its certificate is pinned under; for a certificate that is
    /// not pinned, `sha256:` and the first 16 hex digits of its fingerprint.
    pub client: Arc<str>,
}

/// What per-identity limits, folded log lines and refusals count by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// A local uid.
    Uid(u32),
    /// A TLS client's name.
    Client(Arc<str>),
}

impl std::fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityKey::Uid(uid) => write!(f, "uid {uid}"),
            IdentityKey::Client(name) => write!(f, "client {name:?}"),
        }
    }
}

impl Peer {
    /// Reads the credentials of `stream`'s other end.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self::Local(Local {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        }))
    }

    /// A local peer (for tests and tools).
    pub fn local(uid: u32, gid: u32) -> Self {
        Self::Local(Local {
            uid,
            gid,
            pid: None,
        })
    }

    /// What limits and folding count this peer by.
    pub fn key(&self) -> IdentityKey {
        match self {
            Peer::Local(l) => IdentityKey::Uid(l.uid),
            Peer::Remote(r) => IdentityKey::Client(r.client.clone()),
        }
    }

    /// The peer as messages name it: `uid 33 / gid 33`, or `client "gsko-web1"`.
    pub fn describe(&self) -> String {
        match self {
            Peer::Local(l) => format!("uid {} / gid {}", l.uid, l.gid),
            Peer::Remote(r) => format!("client {:?}", r.client),
        }
    }

    /// The peer as the audit log records it.
    pub fn caller(&self) -> Caller {
        match self {
            Peer::Local(l) => Caller {
                uid: Some(l.uid),
                gid: Some(l.gid),
                pid: l.pid,
                client: None,
            },
            Peer::Remote(r) => Caller {
                client: Some(r.client.to_string()),
                ..Caller::default()
            },
        }
    }
}
