//! The session pool: long-lived sessions on the current connection, checked out by a
//! request for one signature and returned after it.
//!
//! The signature is made on tokio's blocking pool, so that a caller's deadline holds
//! even if the token never answers (see docs/architecture.md for the measurements).

use std::sync::Arc;

use cryptoki::session::Session;

use super::{Connection, Shared, SignError, Signed};
use crate::algorithm::Algorithm;
use crate::token::{sign_digest, TokenError};

/// A session and the connection it belongs to. The session is declared first so it is
/// closed before the connection can be finalised.
pub(super) struct Held {
    session: Session,
    conn: Arc<Connection>,
}

/// Signs `digest` with the key labelled `label`; on a lost session, opens a new one
/// (logging in again if the token dropped the login) and tries once more before
/// declaring the token down.
pub(super) fn sign(
    shared: &Shared,
    label: &str,
    algorithm: Algorithm,
    digest: &[u8],
) -> Result<Signed, SignError> {
    for attempt in 0..2 {
        let held = checkout(shared)?;
        let key = held
            .conn
            .key(label)
            .ok_or_else(|| SignError::KeyMissing(label.to_string()));
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                checkin(shared, held);
                return Err(e);
            }
        };
        match sign_digest(&held.session, key.handle, algorithm, digest) {
            Ok(signature) => {
                checkin(shared, held);
                return Ok(Signed { signature, key });
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
                    tracing::warn!(error = %e, "signing session lost; retrying once on a new session");
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
