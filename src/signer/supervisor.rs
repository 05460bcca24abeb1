//! The supervisor: when a request finds the token lost, it retires the connection,
//! closes the sessions, finalises the module, and connects again with backoff (100 ms
//! doubling to 1 s); a request during a longer outage cuts the backoff short to 100 ms,
//! so the first request after the token is back finds it. A refused PIN stops it: it
//! never logs in again on its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::RECHECK_EVERY;
use super::connection::{Connection, Keys};
use super::shared::Shared;
use super::status::Status;
use crate::token::TokenError;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const SESSION_DRAIN: Duration = Duration::from_secs(2);

pub(super) fn run(shared: Arc<Shared>) {
    let mut generation = 1;
    loop {
        if !wait_for_trouble(&shared) {
            return;
        }
        retire(&shared);
        generation += 1;
        if !reconnect(&shared, generation) {
            return;
        }
    }
}

/// Sleeps until the token is down; false when stopping. While the token is up, looks
/// every [`RECHECK_EVERY`] for keys that were missing or broken (one key's fault does
/// not take the token down; see `pool::with_key`).
fn wait_for_trouble(shared: &Shared) -> bool {
    let mut status = shared.status.lock().expect("status lock");
    loop {
        match &*status {
            Status::Down { .. } => return true,
            Status::Stopping | Status::PinProblem { .. } => return false,
            Status::Up => {
                let (guard, waited) = shared
                    .wake
                    .wait_timeout(status, RECHECK_EVERY)
                    .expect("status lock");
                status = guard;
                if waited.timed_out() && *status == Status::Up {
                    drop(status);
                    recheck_missing_keys(shared);
                    status = shared.status.lock().expect("status lock");
                }
            }
        }
    }
}

fn recheck_missing_keys(shared: &Shared) {
    let Some(conn) = shared.conn.read().ok().and_then(|c| c.clone()) else {
        return;
    };
    let wants = shared.wants.lock().expect("wants lock").clone();
    conn.recheck_missing(&wants);
}

/// Takes the connection away, closes the pooled sessions, waits (bounded) for requests
/// in flight to give theirs back,
/// then drops it: C_CloseSession on the anchor, then C_Finalize.
fn retire(shared: &Shared) {
    let Some(old) = shared.conn.write().expect("connection lock").take() else {
        return;
    };
    shared.pool.lock().expect("pool lock").clear();
    let deadline = Instant::now() + SESSION_DRAIN;
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if Arc::strong_count(&old) > 1 {
        tracing::warn!(
            "requests still hold sessions of the lost connection; it is finalised when they end"
        );
    }
    drop(old);
}

/// Connects again until it works, the PIN is refused, or the daemon stops.
fn reconnect(shared: &Shared, generation: u64) -> bool {
    let started = Instant::now();
    let mut backoff = BACKOFF_START;
    loop {
        if matches!(
            *shared.status.lock().expect("status lock"),
            Status::Stopping
        ) {
            return false;
        }
        let wants = shared.wants.lock().expect("wants lock").clone();
        shared.attempting.store(true, Ordering::Release);
        shared.retry_now.store(false, Ordering::Release);
        let attempt = Connection::connect(
            &shared.module,
            &shared.selector,
            &shared.pin,
            &wants,
            generation,
            shared.counters.clone(),
            Keys::Tolerate,
        );
        shared.attempting.store(false, Ordering::Release);
        match attempt {
            Ok(conn) => {
                *shared.conn.write().expect("connection lock") = Some(Arc::new(conn));
                *shared.status.lock().expect("status lock") = Status::Up;
                // Requests that saw the connection go wait for this (see
                // `Shared::wait_for_reconnect`).
                shared.wake.notify_all();
                tracing::warn!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "token connection restored"
                );
                return true;
            }
            Err(
                e @ (TokenError::PinIncorrect { .. }
                | TokenError::PinLocked { .. }
                | TokenError::PinFinalTry { .. }),
            ) => {
                shared.mark_pin_problem(&e);
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, ?backoff, "token still unavailable");
                if let Status::Down { reason, .. } =
                    &mut *shared.status.lock().expect("status lock")
                {
                    *reason = e.to_string();
                }
                shared.failed_attempts.fetch_add(1, Ordering::AcqRel);
                wait_backoff(shared, backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Sleeps `backoff` after a failed attempt, or only [`BACKOFF_START`] when a request asks
/// for an attempt now (`Shared::ask_for_attempt`); returns at once when stopping.
fn wait_backoff(shared: &Shared, backoff: Duration) {
    let start = Instant::now();
    let mut status = shared.status.lock().expect("status lock");
    loop {
        if matches!(*status, Status::Stopping) {
            return;
        }
        let elapsed = start.elapsed();
        let asked = shared.retry_now.load(Ordering::Acquire);
        let until = if asked {
            BACKOFF_START.min(backoff)
        } else {
            backoff
        };
        if elapsed >= until {
            return;
        }
        status = shared
            .wake
            .wait_timeout(status, until - elapsed)
            .expect("status lock")
            .0;
    }
}
