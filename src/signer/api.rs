//! The interface the HTTP layer signs through: [`KeySigner`]. The daemon's token-backed
//! [`super::Signer`] implements it, and so does the bench-and-test-only
//! [`super::null::NullSigner`], so the real router can run without a token (the
//! benchmark's floor, and handler tests through `app(state)` without a socket).
//!
//! What a handler learns about a key is [`KeyInfo`]: label, kind, certificate, chain. The
//! token's object handle stays inside the token-backed signer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::x509::X509;
use zeroize::Zeroizing;

use super::error::SignError;
use super::status::Status;
use super::want::KeyWant;
use crate::algorithm::Algorithm;
use crate::cert::KeyKind;

/// What the daemon knows about a key it signs with, without the token's handle.
pub struct KeyInfo {
    /// CKA_LABEL.
    pub label: String,
    /// Kind and size.
    pub kind: KeyKind,
    /// Its certificate.
    pub cert: X509,
    /// CA certificates above it found on the token, nearest first.
    pub chain: Vec<X509>,
    /// SHA-256 of the certificate, hex: tells callers which certificate signed.
    pub cert_sha256: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: i64,
}

/// A signature and the key that made it.
pub struct Signed {
    /// The raw signature (ECDSA: r || s).
    pub signature: Vec<u8>,
    /// The key, as loaded when it signed.
    pub key: Arc<KeyInfo>,
}

/// A job for [`KeySigner::run_job`]: runs once, where a token call may block.
pub type Job = Box<dyn FnOnce(&dyn KeySigner) + Send>;

/// The future [`KeySigner::run_job`] returns.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SignError>> + Send + 'a>>;

/// What the server needs from the token side. Use `run` (on `dyn KeySigner`)
/// rather than [`KeySigner::run_job`] directly: it carries the job's result back.
pub trait KeySigner: Send + Sync {
    /// The key labelled `label` as currently loaded.
    fn key(&self, label: &str) -> Option<Arc<KeyInfo>>;

    /// The key labelled `label`, to sign with, decrypt with or show: why not, if the
    /// token is down or the key is not loaded (fast: no token call).
    fn usable_key(&self, label: &str) -> Result<Arc<KeyInfo>, SignError>;

    /// Why the key labelled `label` is not usable now, when the signer knows (it was
    /// deleted or broke under the running daemon). No token call.
    fn key_problem(&self, _label: &str) -> Option<String> {
        None
    }

    /// The token's state now.
    fn status(&self) -> Status;

    /// The token's label.
    fn token_label(&self) -> Option<String>;

    /// Loads a new set of keys (on reload); may call the token, so not on an async worker.
    fn reload_keys(&self, wants: Vec<KeyWant>) -> Result<(), SignError>;

    /// Signs `digest` now, on the calling thread: inside a job of
    /// [`KeySigner::run_job`], or on a thread of its own.
    fn sign_now(
        &self,
        label: &str,
        algorithm: Algorithm,
        digest: &[u8],
    ) -> Result<Signed, SignError>;

    /// Z = ECDH(key labelled `label`, `point`) now, on the calling thread (as
    /// [`KeySigner::sign_now`]). `point` must already be checked to lie on P-256.
    fn derive_now(
        &self,
        label: &str,
        point: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Arc<KeyInfo>), SignError>;

    /// Returns once the token is up; while it is down, waits (within `timeout`) for the
    /// reconnect when it may be moments away, and answers why not when it stays away.
    /// No token call on this task. The default: the state as it is, no wait.
    fn await_token(&self, _timeout: Duration) -> JobFuture<'_> {
        let up = match self.status() {
            Status::Up => Ok(()),
            Status::Down { reason, .. } => Err(SignError::Unavailable(reason)),
            Status::PinProblem { reason } => Err(SignError::PinProblem(reason)),
            Status::Stopping => Err(SignError::ShuttingDown),
        };
        Box::pin(std::future::ready(up))
    }

    /// Runs `job` once a session is free, within `timeout` from now, where it may block
    /// on the token. When the deadline passes first, the future returns
    /// [`SignError::Timeout`] on time and the job runs on to its end, its effects unseen.
    fn run_job(&self, timeout: Duration, job: Job) -> JobFuture<'_>;
}

impl dyn KeySigner {
    /// Runs `job` as [`KeySigner::run_job`] does, and returns what it returned.
    pub async fn run<T, F>(&self, timeout: Duration, job: F) -> Result<T, SignError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeySigner) -> T + Send + 'static,
    {
        let out = Arc::new(Mutex::new(None));
        let slot = out.clone();
        self.run_job(
            timeout,
            Box::new(move |signer| {
                let value = job(signer);
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            }),
        )
        .await?;
        let value = out.lock().unwrap_or_else(|p| p.into_inner()).take();
        value
            .ok_or_else(|| SignError::Unavailable("the signing job ended without an answer".into()))
    }

    /// Signs `digest` with the key labelled `label`, waiting at most `timeout`.
    pub async fn sign(
        &self,
        label: Arc<str>,
        algorithm: Algorithm,
        digest: Vec<u8>,
        timeout: Duration,
    ) -> Result<Signed, SignError> {
        self.run(timeout, move |signer| {
            signer.sign_now(&label, algorithm, &digest)
        })
        .await?
    }
}
