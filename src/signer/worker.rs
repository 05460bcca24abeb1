//! A signing worker: one thread, one session, jobs from the shared queue.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use cryptoki::session::Session;

use super::{Connection, Job, Shared, SignError, Signed};
use crate::token::{sign_digest, TokenError};

/// The session this worker holds, and the connection it belongs to. The session is
/// declared first so it is closed before the connection can be finalised.
struct Held {
    session: Session,
    conn: Arc<Connection>,
}

/// How often an idle worker checks whether its connection was replaced.
const IDLE_CHECK: Duration = Duration::from_millis(100);

pub(super) fn run(shared: Arc<Shared>, jobs: Receiver<Job>) {
    let mut held: Option<Held> = None;
    loop {
        let job = match jobs.recv_timeout(IDLE_CHECK) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                drop_if_stale(&shared, &mut held);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if job.reply.is_closed() {
            // The caller gave up (timeout, disconnect): don't spend the token on it.
            continue;
        }
        let result = sign(&shared, &mut held, &job);
        let _ = job.reply.send(result);
    }
}

fn drop_if_stale(shared: &Shared, held: &mut Option<Held>) {
    let stale = held
        .as_ref()
        .is_some_and(|h| shared.current_generation() != Some(h.conn.generation));
    if stale {
        *held = None;
    }
}

/// Signs `job`; on a lost session, opens a new one (logging in again if the token
/// dropped the login) and tries once more before declaring the token down.
fn sign(shared: &Shared, held: &mut Option<Held>, job: &Job) -> Result<Signed, SignError> {
    drop_if_stale(shared, held);
    for attempt in 0..2 {
        let h = session(shared, held)?;
        let key = h
            .conn
            .key(&job.label)
            .ok_or_else(|| SignError::KeyMissing(job.label.to_string()))?;
        match sign_digest(&h.session, key.handle, job.algorithm, &job.digest) {
            Ok(signature) => return Ok(Signed { signature, key }),
            Err(e) if e.is_connection_lost() => {
                let conn = h.conn.clone();
                *held = None;
                if attempt == 0 && recover_in_place(shared, &conn, &e) {
                    tracing::warn!(error = %e, "signing session lost; retrying once on a new session");
                    continue;
                }
                shared.mark_down(conn.generation, &e);
                return Err(SignError::Unavailable(e.to_string()));
            }
            Err(e) => return Err(SignError::Failed(e)),
        }
    }
    Err(SignError::Unavailable("the token failed twice".into()))
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

fn session<'a>(shared: &Shared, held: &'a mut Option<Held>) -> Result<&'a Held, SignError> {
    if held.is_none() {
        let conn = shared.connection()?;
        let session = conn.open_session().map_err(|e| {
            if e.is_connection_lost() {
                shared.mark_down(conn.generation, &e);
            }
            SignError::Unavailable(e.to_string())
        })?;
        *held = Some(Held { session, conn });
    }
    Ok(held.as_ref().expect("just set"))
}
