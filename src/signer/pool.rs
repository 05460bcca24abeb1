//! The session pool: long-lived sessions on the current connection, checked out by a
//! request for one private-key operation (a signature, an ECDH derivation) and returned
//! after it.
//!
//! The signature is made on tokio's blocking pool, so that a caller's deadline holds
//! even if the token never answers (see docs/architecture.md for the measurements).

use std::sync::Arc;

use cryptoki::session::Session;

use zeroize::Zeroizing;

use super::{Connection, KeyInfo, Shared, SignError, Signed, TokenKey};
use crate::algorithm::Algorithm;
use crate::token::{ecdh_derive, sign_digest, TokenError};

/// A session and the connection it belongs to. The session is declared first so it is
/// closed before the connection can be finalised.
pub(super) struct Held {
    session: Session,
    conn: Arc<Connection>,
}

/// Signs `digest` with the key labelled `label` (see [`with_key`] for the retry rules).
pub(super) fn sign(
    shared: &Shared,
    label: &str,
    algorithm: Algorithm,
    digest: &[u8],
) -> Result<Signed, SignError> {
    let (signature, key) = with_key(shared, label, |session, key| {
        sign_digest(session, key.handle, algorithm, digest)
    })?;
    Ok(Signed {
        signature,
        key: key.info.clone(),
    })
}

/// Z = ECDH(key labelled `label`, `point`) on the token (see [`with_key`]).
pub(super) fn derive(
    shared: &Shared,
    label: &str,
    point: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Arc<KeyInfo>), SignError> {
    let (z, key) = with_key(shared, label, |session, key| {
        ecdh_derive(session, key.handle, point)
    })?;
    Ok((z, key.info.clone()))
}

/// Runs `op` with the key labelled `label` on a pooled session; on a lost session,
/// opens a new one (logging in again if the token dropped the login) and tries once
/// more before declaring the token down. A stale key handle is looked up once again.
fn with_key<T>(
    shared: &Shared,
    label: &str,
    mut op: impl FnMut(&Session, &TokenKey) -> Result<T, TokenError>,
) -> Result<(T, Arc<TokenKey>), SignError> {
    for attempt in 0..2 {
        let held = checkout(shared)?;
        let Some(key) = held.conn.key(label) else {
            checkin(shared, held);
            return Err(SignError::KeyMissing(label.to_string()));
        };
        match op(&held.session, &key) {
            Ok(value) => {
                checkin(shared, held);
                return Ok((value, key));
            }
            Err(e) if attempt == 0 && e.is_stale_handle() => {
                // The key was replaced on the token (import --replace) under the running
                // daemon, or the token's objects went away: find this key again and try
                // once more. A key that is gone takes the connection down, so that the
                // supervisor reconnects until it is back (a restored SoftHSM token
                // directory, say, is only seen after C_Finalize and C_Initialize).
                tracing::warn!(error = %e, label, "key handle no longer valid; finding the key again");
                let wants = shared.wants.lock().expect("wants lock").clone();
                let refreshed = held.conn.refresh_key(label, &wants);
                let generation = held.conn.generation;
                checkin(shared, held);
                match refreshed {
                    Ok(()) => continue,
                    Err(e @ TokenError::KeyNotFound { .. }) => {
                        shared.mark_down(generation, &e);
                        return Err(SignError::Unavailable(e.to_string()));
                    }
                    Err(other) => return Err(SignError::Failed(other)),
                }
            }
            Err(e) if e.is_connection_lost() => {
                let conn = held.conn.clone();
                drop(held);
                if attempt == 0 && recover_in_place(shared, &conn, &e) {
                    tracing::warn!(error = %e, "token session lost; retrying once on a new session");
                    continue;
                }
                shared.mark_down(conn.generation, &e);
                return Err(SignError::Unavailable(e.to_string()));
            }
            Err(e) => {
                checkin(shared, held);
                return Err(SignError::Failed(e));
            }
        }
    }
    Err(SignError::Unavailable("the token failed twice".into()))
}

/// A session of the current connection: a pooled one, or a new one.
fn checkout(shared: &Shared) -> Result<Held, SignError> {
    let conn = shared.connection()?;
    if let Some(held) = shared.pool.lock().expect("pool lock").pop() {
        if held.conn.generation == conn.generation {
            return Ok(held);
        }
    }
    let session = conn.open_session().map_err(|e| {
        if e.is_connection_lost() {
            shared.mark_down(conn.generation, &e);
        }
        SignError::Unavailable(e.to_string())
    })?;
    Ok(Held { session, conn })
}

/// Returns a session to the pool, unless its connection was replaced meanwhile.
fn checkin(shared: &Shared, held: Held) {
    if shared.current_generation() == Some(held.conn.generation) {
        shared.pool.lock().expect("pool lock").push(held);
    }
}

/// After a lost session: a logged-out token is logged in again once; anything else is
/// left to the supervisor. Returns true when a retry makes sense.
fn recover_in_place(shared: &Shared, conn: &Connection, error: &TokenError) -> bool {
    use cryptoki::error::RvError;
    match error.rv() {
        Some(RvError::UserNotLoggedIn) => match conn.relogin(&shared.pin) {
            Ok(()) => true,
            Err(e @ (TokenError::PinIncorrect { .. } | TokenError::PinLocked { .. })) => {
                shared.mark_pin_problem(&e);
                false
            }
            Err(_) => false,
        },
        Some(RvError::SessionHandleInvalid | RvError::SessionClosed) => true,
        _ => false,
    }
}
