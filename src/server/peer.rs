//! Who is calling: the peer's credentials from SO_PEERCRED, taken by the kernel when the
//! connection was made, so a caller cannot claim to be someone else.

use serde::Serialize;

/// The calling process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective primary gid.
    pub gid: u32,
    /// Process ID, when the kernel gives it.
    pub pid: Option<i32>,
}

impl Peer {
    /// Reads the credentials of `stream`'s other end.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}
