//! What the pool, the supervisor and the signer's handles share: the current connection,
//! the token's state, the pooled sessions, and how long a request may wait for a
//! reconnect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::session::Session;
use secrecy::SecretString;

use super::connection::Connection;
use super::counters::TokenCounters;
use super::error::SignError;
use super::status::Status;
use super::want::KeyWant;
use crate::token::{TokenError, TokenSelector};

/// A session and the connection it belongs to. The session is declared first so it is
/// closed before the connection can be finalised.
pub(super) struct Held {
    pub(super) session: Session,
    pub(super) conn: Arc<Connection>,
}

thread_local! {
    /// The deadline of the request whose job runs on this thread (set by
    /// [`Signer::run_job`](super::Signer)): how long a request that lost the token may wait for the
    /// supervisor's reconnect before it answers 503.
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// How long a request that saw the connection go may wait for the reconnect, at most
/// (and never past its own deadline): a token back within this is not an outage to the
/// caller; one that is not gets 503 without making every request wait.
pub(super) const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// Runs `f` with `deadline` as this thread's request deadline.
pub(super) fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    DEADLINE.with(|d| d.set(Some(deadline)));
    let out = f();
    DEADLINE.with(|d| d.set(None));
    out
}

/// Until when a request on this thread may wait for a reconnect.
pub(super) fn reconnect_deadline() -> Instant {
    let cap = Instant::now() + RECONNECT_WAIT;
    DEADLINE
        .with(|d| d.get())
        .map_or(cap, |deadline| deadline.min(cap))
}

/// Everything the pool, the supervisor and the handles share.
pub(super) struct Shared {
    pub(super) conn: RwLock<Option<Arc<Connection>>>,
    pub(super) status: Mutex<Status>,
    pub(super) wake: Condvar,
    pub(super) pin: SecretString,
    pub(super) module: std::path::PathBuf,
    pub(super) selector: TokenSelector,
    pub(super) wants: Mutex<Vec<KeyWant>>,
    pub(super) counters: TokenCounters,
    pub(super) pool: Mutex<Vec<Held>>,
    /// Reconnect attempts the supervisor has finished without success.
    pub(super) failed_attempts: AtomicU64,
    /// The supervisor is in a reconnect attempt right now.
    pub(super) attempting: AtomicBool,
    /// A request asked the supervisor for an attempt now rather than after its backoff.
    pub(super) retry_now: AtomicBool,
}

impl Shared {
    /// The connection to use, or why there is none (fast: no token call).
    pub(super) fn connection(&self) -> Result<Arc<Connection>, SignError> {
        match &*self.status.lock().expect("status lock") {
            Status::Up => {}
            Status::Down { reason, .. } => return Err(SignError::Unavailable(reason.clone())),
            Status::PinProblem { reason } => return Err(SignError::PinProblem(reason.clone())),
            Status::Stopping => return Err(SignError::ShuttingDown),
        }
        self.conn
            .read()
            .expect("connection lock")
            .clone()
            .ok_or_else(|| SignError::Unavailable("reconnecting".into()))
    }

    pub(super) fn current_generation(&self) -> Option<u64> {
        self.conn.read().ok()?.as_ref().map(|c| c.generation)
    }

    /// Records that generation `generation` lost the token, and wakes the supervisor.
    pub(super) fn mark_down(&self, generation: u64, error: &TokenError) {
        let mut status = self.status.lock().expect("status lock");
        if *status == Status::Up && self.current_generation() == Some(generation) {
            tracing::error!(%error, "token connection lost; reconnecting");
            *status = Status::Down {
                reason: error.to_string(),
                since: Some(Instant::now()),
            };
            self.wake.notify_all();
        }
    }

    /// While an outage is younger than [`RECONNECT_WAIT`], until when a request may wait
    /// for its reconnect; `None` when the token is not down, or down for longer.
    pub(super) fn young_outage_until(&self) -> Option<Instant> {
        match &*self.status.lock().expect("status lock") {
            Status::Down {
                since: Some(since), ..
            } if since.elapsed() < RECONNECT_WAIT => Some(*since + RECONNECT_WAIT),
            _ => None,
        }
    }

    /// Waits until a connection newer than `generation` is up, or `until`; true when one
    /// is. The supervisor wakes waiters when it restores the connection.
    pub(super) fn wait_for_reconnect(&self, generation: u64, until: Instant) -> bool {
        let mut status = self.status.lock().expect("status lock");
        loop {
            match &*status {
                Status::Up if self.current_generation().is_some_and(|g| g > generation) => {
                    return true
                }
                Status::Stopping | Status::PinProblem { .. } => return false,
                _ => {}
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            status = self
                .wake
                .wait_timeout(status, until - now)
                .expect("status lock")
                .0;
        }
    }

    /// During an outage older than [`RECONNECT_WAIT`]: asks the supervisor to try to
    /// connect now instead of after its backoff (it still leaves `BACKOFF_START` between
    /// attempts), and returns how many failed attempts a request must see before it knows
    /// that an attempt begun after this call failed too (see [`Self::attempt_failed_since`]).
    /// So the first request after a token comes back finds it, and while it stays away each
    /// request costs one quick attempt, not a wait to the end of the backoff.
    pub(super) fn ask_for_attempt(&self) -> u64 {
        let failed = self.failed_attempts.load(Ordering::Acquire);
        let in_progress = u64::from(self.attempting.load(Ordering::Acquire));
        self.retry_now.store(true, Ordering::Release);
        let _guard = self.status.lock().expect("status lock");
        self.wake.notify_all();
        failed + in_progress + 1
    }

    /// Whether the attempt [`Self::ask_for_attempt`] asked for has failed.
    pub(super) fn attempt_failed_since(&self, needed: u64) -> bool {
        self.failed_attempts.load(Ordering::Acquire) >= needed
    }

    pub(super) fn mark_pin_problem(&self, error: &TokenError) {
        tracing::error!(%error, "the token refused the PIN; not logging in again until restarted");
        *self.status.lock().expect("status lock") = Status::PinProblem {
            reason: error.to_string(),
        };
    }
}
