//! The session pool and the retry rules of one private-key operation (a signature, an
//! ECDH derivation): a request checks out a long-lived session of the current connection,
//! or opens a new one when none is pooled, and returns it after the operation. A lost
//! session is recovered in place once (a logged-out token is logged in again, a closed
//! session replaced); a stale key handle looks the key up again; anything else is the
//! supervisor's. The functions here block: [`Signer`](super::Signer) runs them on tokio's
//! blocking pool, so that a caller's deadline holds even if the token never answers (see
//! docs/architecture.md for the measurements).

use std::sync::Arc;

use cryptoki::session::Session;

use zeroize::Zeroizing;

use super::api::{KeyInfo, Signed};
use super::connection::{Connection, TokenKey};
use super::error::SignError;
use super::shared::{reconnect_deadline, Held, Shared};
use crate::algorithm::Algorithm;
use crate::token::{ecdh_derive, sign_digest, TokenError};

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

/// Whose fault a failed operation is, as [`with_key`] decides from the error alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The session or the link: reopen the session, or reconnect.
    Link,
    /// A stale handle (the key changed) or CKR_GENERAL_ERROR (the key's or the token's):
    /// [`Connection::probe`] and a new look for the key say which.
    KeyOrToken,
    /// Neither: the request fails as it is, with the token and the key left alone.
    Request,
}

fn fault_of(error: &TokenError) -> Fault {
    if error.is_connection_lost() && !error.is_general_error() {
        Fault::Link
    } else if error.is_stale_handle() || error.is_general_error() {
        Fault::KeyOrToken
    } else {
        Fault::Request
    }
}

/// Runs `op` with the key labelled `label` on a pooled session, and decides whose fault
/// a failure is:
/// - a lost session is reopened (logging in again if the token dropped the login) and
///   the operation tried once more;
/// - a stale key handle is looked up again and tried once more;
/// - a key that is gone or broken while the token itself passes [`Connection::probe`]
///   is that key's fault: it is marked missing (503 `key_unavailable` for it alone) and
///   the other keys go on signing;
/// - anything that takes the token down wakes the supervisor, and this request waits
///   (briefly, within its deadline) for the reconnect and is tried once on the new
///   connection: signing is safe to repeat.
fn with_key<T>(
    shared: &Shared,
    label: &str,
    mut op: impl FnMut(&Session, &TokenKey) -> Result<T, TokenError>,
) -> Result<(T, Arc<TokenKey>), SignError> {
    let mut reconnected = false;
    // The connection the previous attempt used: the one a reconnect must replace.
    let mut last_generation = None;
    for attempt in 0..3 {
        let retry = attempt == 0 || (attempt == 1 && reconnected);
        let held = match checkout(shared) {
            Ok(held) => held,
            // The link went while this request was between attempts, or opening a session
            // lost it: wait for the reconnect once, as a failed operation does.
            Err(Lost { error, generation }) => match generation.or(last_generation) {
                Some(gone)
                    if !reconnected && shared.wait_for_reconnect(gone, reconnect_deadline()) =>
                {
                    tracing::warn!(%error, "token connection restored; trying once more on it");
                    reconnected = true;
                    continue;
                }
                _ => return Err(error),
            },
        };
        last_generation = Some(held.conn.generation);
        let wants = || shared.wants.lock().expect("wants lock").clone();
        let key = match held.conn.key_or_why(label) {
            Ok(key) => key,
            Err(reason) => {
                checkin(shared, held);
                return Err(match reason {
                    Some(reason) => SignError::KeyFault {
                        label: label.to_string(),
                        reason,
                    },
                    None => SignError::KeyMissing(label.to_string()),
                });
            }
        };
        let error = match op(&held.session, &key) {
            Ok(value) => {
                checkin(shared, held);
                return Ok((value, key));
            }
            Err(e) => e,
        };
        let conn = held.conn.clone();
        let fault = fault_of(&error);
        if fault == Fault::Link {
            // The session or the link: recover in place, or reconnect.
            drop(held);
            if retry && !reconnected && recover_in_place(shared, &conn, &error) {
                tracing::warn!(%error, "token session lost; retrying once on a new session");
                continue;
            }
        } else if fault == Fault::KeyOrToken {
            // The key, or the token? A stale handle means the key object changed (import
            // --replace under the daemon) or the token's objects went away;
            // CKR_GENERAL_ERROR from one key's operation may be either.
            checkin(shared, held);
            if conn.probe().is_ok() {
                let again = conn.refresh_key(label, &wants());
                match again {
                    Ok(()) if retry && error.is_stale_handle() => {
                        tracing::warn!(%error, label, "key handle no longer valid; found the key again");
                        continue;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, label, "the key is not usable; the token and the other keys are");
                        conn.mark_missing(label, &e);
                        return Err(SignError::KeyFault {
                            label: label.to_string(),
                            reason: e.to_string(),
                        });
                    }
                }
                if error.is_general_error() {
                    // Found again, and the token is well: this key fails on its own.
                    tracing::error!(%error, label, "the token fails this key's operation; the other keys sign");
                    conn.mark_missing(label, &error);
                    return Err(SignError::KeyFault {
                        label: label.to_string(),
                        reason: error.to_string(),
                    });
                }
                return Err(SignError::Failed(error));
            }
        } else {
            checkin(shared, held);
            return Err(SignError::Failed(error));
        }
        // The token is down: hand over to the supervisor, and wait for its reconnect.
        shared.mark_down(conn.generation, &error);
        let generation = conn.generation;
        drop(conn);
        if !reconnected && shared.wait_for_reconnect(generation, reconnect_deadline()) {
            tracing::warn!(%error, "token connection restored; trying once more on it");
            reconnected = true;
            continue;
        }
        return Err(SignError::Unavailable(error.to_string()));
    }
    Err(SignError::Unavailable("the token failed again".into()))
}

/// Why no session could be had, and which connection went down, when one did: the token
/// is down already (the connection the supervisor is replacing), or opening a session on
/// the current one lost it.
struct Lost {
    error: SignError,
    generation: Option<u64>,
}

/// A session of the current connection: a pooled one, or a new one.
fn checkout(shared: &Shared) -> Result<Held, Lost> {
    let conn = shared.connection().map_err(|error| Lost {
        generation: match error {
            SignError::Unavailable(_) => shared.current_generation(),
            _ => None,
        },
        error,
    })?;
    if let Some(held) = shared.pool.lock().expect("pool lock").pop() {
        if held.conn.generation == conn.generation {
            return Ok(held);
        }
    }
    let session = conn.open_session().map_err(|e| {
        let lost = e.is_connection_lost();
        if lost {
            shared.mark_down(conn.generation, &e);
        }
        Lost {
            error: SignError::Unavailable(e.to_string()),
            generation: lost.then_some(conn.generation),
        }
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

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;
    use cryptoki::error::{Error as CkError, RvError};

    use super::*;

    fn failed(rv: RvError) -> TokenError {
        TokenError::Pkcs11 {
            doing: "signing".into(),
            cause: CkError::Pkcs11(rv, Function::Sign),
        }
    }

    /// Each CKR value `with_key` treats apart, and what it makes of it.
    #[test]
    fn each_ckr_value_is_the_fault_of_the_link_the_key_or_the_request() {
        use RvError::*;
        let cases = [
            (SessionHandleInvalid, Fault::Link),
            (SessionClosed, Fault::Link),
            (DeviceRemoved, Fault::Link),
            (TokenNotPresent, Fault::Link),
            (DeviceError, Fault::Link),
            (UserNotLoggedIn, Fault::Link),
            (CryptokiNotInitialized, Fault::Link),
            (SlotIdInvalid, Fault::Link),
            (GeneralError, Fault::KeyOrToken),
            (KeyHandleInvalid, Fault::KeyOrToken),
            (ObjectHandleInvalid, Fault::KeyOrToken),
            (DataLenRange, Fault::Request),
            (MechanismInvalid, Fault::Request),
            (KeyFunctionNotPermitted, Fault::Request),
            (KeyTypeInconsistent, Fault::Request),
            (FunctionFailed, Fault::Request),
            (HostMemory, Fault::Request),
            (OperationActive, Fault::Request),
        ];
        for (rv, fault) in cases {
            assert_eq!(fault_of(&failed(rv)), fault, "{rv:?}");
        }
    }

    /// An error without a CKR value: a token that went empty is the link's fault.
    #[test]
    fn a_token_gone_empty_is_the_links_fault() {
        let gone = TokenError::TokenEmpty { token: "t".into() };
        assert_eq!(fault_of(&gone), Fault::Link, "{gone}");
    }
}
