//! The daemon's token side: a pool of long-lived sessions on one logged-in connection,
//! a bounded wait for a free session in front of it, and a supervisor that reconnects
//! with backoff when the token or its link goes away.
//!
//! A request waits (boundedly) for one of `sessions` permits, checks out a pooled
//! session of the current connection (opening one when the pool holds none), signs on
//! tokio's blocking pool and returns the session. It logs in only to recover a session
//! the token logged out (once per request, never after a refused PIN); connecting,
//! reconnecting and looking again for missing keys are the supervisor's. When too many
//! wait, or the token is down, the caller hears so at once.

mod api;
mod connection;
mod counters;
mod error;
#[doc(hidden)]
pub mod null;
mod pool;
mod shared;
mod status;
mod supervisor;
mod want;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::algorithm::Algorithm;
use crate::token::{TokenError, TokenSelector};
pub use api::{Job, JobFuture, KeyInfo, KeySigner, Signed};
pub use connection::{Connection, Keys, TokenKey};
pub use counters::TokenCounters;
pub use error::SignError;
use shared::{with_deadline, Shared};
pub use status::Status;
pub use want::KeyWant;

/// The handle the server uses.
#[derive(Clone)]
pub struct Signer {
    shared: Arc<Shared>,
    supervisor: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    sessions: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue_depth: usize,
}

/// How the signer is set up.
pub struct SignerSettings {
    /// The module.
    pub module: std::path::PathBuf,
    /// The token.
    pub selector: TokenSelector,
    /// The PIN, read once.
    pub pin: SecretString,
    /// The keys to load.
    pub wants: Vec<KeyWant>,
    /// Sessions signing at once.
    pub sessions: usize,
    /// Requests that may wait for a session.
    pub queue_depth: usize,
    /// Where session and login counts go.
    pub counters: TokenCounters,
}

impl Signer {
    /// Connects (one login attempt), loads the keys and starts the supervisor. A refused
    /// PIN, a missing key or a module that is not there is returned, so `serve` exits
    /// with it. A token that cannot be reached yet (a network HSM whose link is not up at
    /// boot) is not: the daemon starts with the token down, answers 503 with the reason,
    /// and the supervisor connects as soon as it can.
    pub fn start(settings: SignerSettings) -> Result<Self, TokenError> {
        let (conn, status) = match Connection::connect(
            &settings.module,
            &settings.selector,
            &settings.pin,
            &settings.wants,
            1,
            settings.counters.clone(),
            Keys::AllRequired,
        ) {
            Ok(conn) => (Some(Arc::new(conn)), Status::Up),
            Err(e) if e.is_unreachable() => {
                tracing::error!(error = %e, "the token is not reachable at start; answering 503 and connecting in the background");
                let down = Status::Down {
                    reason: e.to_string(),
                    since: Some(Instant::now()),
                };
                (None, down)
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            conn: RwLock::new(conn),
            status: Mutex::new(status),
            wake: Condvar::new(),
            pin: settings.pin,
            module: settings.module,
            selector: settings.selector,
            wants: Mutex::new(settings.wants),
            counters: settings.counters,
            pool: Mutex::new(Vec::new()),
            failed_attempts: std::sync::atomic::AtomicU64::new(0),
            attempting: std::sync::atomic::AtomicBool::new(false),
            retry_now: std::sync::atomic::AtomicBool::new(false),
        });
        let sup = shared.clone();
        let supervisor = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervisor::run(sup))
            .expect("spawning the supervisor");
        Ok(Self {
            shared,
            supervisor: Arc::new(Mutex::new(Some(supervisor))),
            sessions: Arc::new(tokio::sync::Semaphore::new(settings.sessions)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue_depth: settings.queue_depth,
        })
    }

    /// Tells the supervisor to stop and closes the pooled sessions.
    pub fn stop(&self) {
        *self.shared.status.lock().expect("status lock") = Status::Stopping;
        self.shared.wake.notify_all();
        self.sessions.close();
        self.shared.pool.lock().expect("pool lock").clear();
        // Wait (briefly) for the supervisor, so that the token connection is not
        // finalised on its thread while the process exits.
        let handle = self.supervisor.lock().expect("supervisor lock").take();
        if let Some(handle) = handle {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl KeySigner for Signer {
    fn key(&self, label: &str) -> Option<Arc<KeyInfo>> {
        Some(
            self.shared
                .conn
                .read()
                .ok()?
                .as_ref()?
                .key(label)?
                .info
                .clone(),
        )
    }

    fn usable_key(&self, label: &str) -> Result<Arc<KeyInfo>, SignError> {
        self.shared
            .connection()?
            .key_or_why(label)
            .map(|k| k.info.clone())
            .map_err(|why| match why {
                Some(reason) => SignError::KeyFault {
                    label: label.to_string(),
                    reason,
                },
                None => SignError::KeyMissing(label.to_string()),
            })
    }

    fn key_problem(&self, label: &str) -> Option<String> {
        let conn = self.shared.conn.read().ok()?.clone()?;
        conn.missing(label).map(|m| m.reason)
    }

    fn status(&self) -> Status {
        self.shared.status.lock().expect("status lock").clone()
    }

    fn token_label(&self) -> Option<String> {
        Some(self.shared.conn.read().ok()?.as_ref()?.token_label.clone())
    }

    /// While the token is down, the set is kept for the reconnect and the error says so;
    /// when a key is not found, the keys loaded before stay and the new ones are not
    /// served until the next reload finds them.
    fn reload_keys(&self, wants: Vec<KeyWant>) -> Result<(), SignError> {
        let conn = match self.shared.connection() {
            Ok(conn) => conn,
            Err(e) => {
                *self.shared.wants.lock().expect("wants lock") = wants;
                return Err(e);
            }
        };
        conn.load_keys(&wants).map_err(SignError::Failed)?;
        *self.shared.wants.lock().expect("wants lock") = wants;
        Ok(())
    }

    fn sign_now(
        &self,
        label: &str,
        algorithm: Algorithm,
        digest: &[u8],
    ) -> Result<Signed, SignError> {
        pool::sign(&self.shared, label, algorithm, digest)
    }

    fn derive_now(
        &self,
        label: &str,
        point: &[u8],
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, Arc<KeyInfo>), SignError> {
        pool::derive(&self.shared, label, point)
    }

    /// Never queue behind a lost token. In an outage's first second the reconnect may be
    /// moments away: wait for it. Later, ask the supervisor for one attempt now and wait for
    /// that attempt alone: a token that is back serves this request, one that is not
    /// answers 503 after one quick attempt, not after a backoff.
    fn await_token(&self, timeout: Duration) -> JobFuture<'_> {
        Box::pin(async move {
            if let Err(down) = self.shared.connection() {
                let (until, needed) = match self.shared.young_outage_until() {
                    Some(until) => (until, None),
                    None if matches!(down, SignError::Unavailable(_)) => (
                        Instant::now() + shared::RECONNECT_WAIT,
                        Some(self.shared.ask_for_attempt()),
                    ),
                    None => return Err(down),
                };
                let until = until.min(Instant::now() + timeout);
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    match self.shared.connection() {
                        Ok(_) => break,
                        Err(e) if Instant::now() >= until => return Err(e),
                        Err(e) if needed.is_some_and(|n| self.shared.attempt_failed_since(n)) => {
                            return Err(e)
                        }
                        Err(_) => {}
                    }
                }
            }
            Ok(())
        })
    }

    /// The job waits for the token ([`KeySigner::await_token`]) and for one of `sessions`
    /// permits, then runs on tokio's blocking pool, so that the caller's deadline holds even
    /// when the token never answers (a hung network HSM): the caller gets 503, and the
    /// session's permit stays taken until the call returns, if ever.
    fn run_job(&self, timeout: Duration, job: Job) -> JobFuture<'_> {
        Box::pin(async move {
            self.await_token(timeout).await?;
            if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_depth {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(SignError::Overloaded);
            }
            let started = tokio::time::Instant::now();
            let permit = tokio::time::timeout(timeout, self.sessions.clone().acquire_owned()).await;
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            let permit = match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(SignError::ShuttingDown),
                Err(_) => return Err(SignError::Timeout(timeout)),
            };
            let me = self.clone();
            let deadline = Instant::now() + timeout.saturating_sub(started.elapsed());
            let call = tokio::task::spawn_blocking(move || {
                with_deadline(deadline, || job(&me));
                drop(permit);
            });
            match tokio::time::timeout_at(started + timeout, call).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(panicked)) => Err(SignError::Unavailable(format!(
                    "the signing call failed: {panicked}"
                ))),
                Err(_) => {
                    tracing::error!(
                        ?timeout,
                        "the token did not answer in time; its session stays busy until it does"
                    );
                    Err(SignError::Timeout(timeout))
                }
            }
        })
    }
}
