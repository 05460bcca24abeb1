//! A token call made from a blocking thread that does XML work: the session is taken for
//! that one call (within the request's deadline) and given back, never held for the
//! parse or the c14n.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::signer::{KeyInfo, KeySigner, SignError, Signed};

/// A token call made from the blocking thread that does the XML work: it waits for a
/// session (within the request's deadline), runs on it, and gives it back, so the
/// session is held for that one call and not for the parse or the c14n.
pub(super) struct TokenCall {
    signer: Arc<dyn KeySigner>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    deadline: Instant,
}

impl TokenCall {
    /// For a request whose XML work starts now and may take `timeout` in all. Call on
    /// the runtime (it keeps a handle to it).
    pub(super) fn new(state: &AppState, timeout: Duration) -> Self {
        Self {
            signer: state.signer.clone(),
            runtime: tokio::runtime::Handle::current(),
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Signs the hash of `signed_info` on a session (ECDSA as raw r||s). Blocks.
    pub(super) fn sign(
        &self,
        label: &str,
        algorithm: Algorithm,
        signed_info: &[u8],
    ) -> Result<Signed, SignError> {
        let digest = algorithm.hash().digest(signed_info);
        let label = label.to_owned();
        self.on_session(move |signer| signer.sign_now(&label, algorithm, &digest))
    }

    /// Z = ECDH(key labelled `label`, `point`) on a session. Blocks.
    pub(super) fn derive(
        &self,
        label: &str,
        point: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Arc<KeyInfo>), SignError> {
        let (label, point) = (label.to_owned(), point.to_vec());
        self.on_session(move |signer| signer.derive_now(&label, &point))
    }

    fn on_session<T, F>(&self, call: F) -> Result<T, SignError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeySigner) -> Result<T, SignError> + Send + 'static,
    {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SignError::Timeout(self.timeout));
        }
        match self.runtime.block_on(self.signer.run(left, call)) {
            Ok(result) => result,
            Err(SignError::Timeout(_)) => Err(SignError::Timeout(self.timeout)),
            Err(e) => Err(e),
        }
    }
}
