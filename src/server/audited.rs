//! A request that asks for a key: its audit record and its metrics.
//!
//! The record of a request that reaches the token is written on the blocking thread
//! that did its work, after the token call and before the answer leaves: the session's
//! thread ([`Audited::run`]), or, for XML, the thread that parsed the document and took
//! a session for the signature alone ([`Audited::run_off_session`]). If the record
//! cannot be written, the signature is dropped and the caller gets 503
//! `audit_unavailable`. A request refused before the token (bad input,
//! policy, token down) is recorded off the async workers in [`Audited::finish`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;

use super::error::ApiError;
use super::metrics::{ErrorLabel, KeyLabel, RequestLabels};
use super::peer::Peer;
use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::audit::Record;
use crate::signer::{KeySigner, SignError};

/// What the record needs to know, filled in as the request is understood.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The key name asked for (escaped).
    pub key: String,
    /// The algorithm, resolved, or as given (escaped) when unknown.
    pub algorithm: String,
    /// SHA-256 of what is signed, hex.
    pub input_sha256: String,
    /// What the signature refers to (an XML reference URI).
    pub reference: Option<String>,
    /// SHA-256 of the signing key's certificate.
    pub cert_sha256: Option<String>,
    /// JWS and client assertions: SHA-256 of the protected header, hex.
    pub header_sha256: Option<String>,
    /// Client assertions: `aud`, `iss` and `jti` (escaped, at most 256 characters).
    pub aud: Option<String>,
    /// See `aud`.
    pub iss: Option<String>,
    /// See `aud`.
    pub jti: Option<String>,
}

/// One request's record in the making.
pub struct Audited {
    op: &'static str,
    peer: Peer,
    time: String,
    started: Instant,
    /// What is known so far.
    pub seen: Seen,
    recorded: bool,
}

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

/// A finished job's answer and what it saw, once its record is written.
type Closed<T> = (Result<T, ApiError>, Seen);

/// A job's means to write its request's record on the thread that ran it.
struct Recorder {
    claim: Arc<AtomicU8>,
    audit: Option<crate::audit::AuditLog>,
    template: Record,
    started: Instant,
}

impl Recorder {
    /// Claims the answer and writes the record (a failed write turns the answer into
    /// 503 `audit_unavailable`). `None` when the caller's deadline passed while the job
    /// ran: the handler has answered 503 and records that itself; this answer is dropped.
    fn close<T>(self, mut result: Result<T, ApiError>, seen: Seen) -> Option<Closed<T>> {
        if self
            .claim
            .compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The caller has had its 503; this answer never leaves, so its line is
            // written here.
            if let Err(e) = &result {
                if let Some(detail) = &e.log {
                    detail.write();
                }
            }
            return None;
        }
        if let Some(audit) = &self.audit {
            let (status, outcome) = status_of(&result);
            let record = fill(self.template, &seen, status, outcome, self.started);
            if let Err(e) = audit.record(record) {
                result = Err(ApiError::audit_unavailable(&e));
            }
        }
        Some((result, seen))
    }
}

impl Audited {
    /// A request of kind `op` (`sign`, `wss`, `saml`, …) from `peer`, starting now, and
    /// counted in flight until [`Audited::answer`].
    pub fn begin(op: &'static str, peer: Peer, state: &AppState) -> Self {
        state.metrics.in_flight.inc();
        Self {
            op,
            peer,
            time: crate::audit::now_rfc3339(),
            started: Instant::now(),
            seen: Seen::default(),
            recorded: false,
        }
    }

    /// Runs `job` on a token session (see [`KeySigner::run_job`]) and writes the record on the
    /// same thread before returning its answer. A stalled audit log refuses at once,
    /// before the token is touched.
    pub async fn run<T, F>(&mut self, state: &AppState, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeySigner, &mut Seen) -> Result<T, ApiError> + Send + 'static,
    {
        let recorder = self.recorder(state)?;
        let claim = recorder.claim.clone();
        let mut seen = self.seen.clone();
        let timeout = state.settings().request_timeout;
        let ran = state
            .signer
            .run(timeout, move |signer| {
                let result = job(signer, &mut seen);
                recorder.close(result, seen)
            })
            .await
            .map_err(ApiError::from);
        self.settle(&claim, ran)
    }

    /// Runs `job` on an XML thread ([`super::xml_threads`]), NOT on a token session,
    /// within `timeout`, and writes the record on that thread as [`Audited::run`] does.
    /// For work that must not hold a session while it runs (parsing and canonicalising a
    /// large XML document): the job takes a session itself for its token call alone. When `timeout`
    /// passes first, the caller gets 503 `token_timeout` and the job runs on to its end,
    /// its answer dropped.
    pub async fn run_off_session<T, F>(
        &mut self,
        state: &AppState,
        timeout: std::time::Duration,
        job: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Seen) -> Result<T, ApiError> + Send + 'static,
    {
        let recorder = self.recorder(state)?;
        let claim = recorder.claim.clone();
        let mut seen = self.seen.clone();
        let call = state.xml_threads.run(move || {
            let result = job(&mut seen);
            recorder.close(result, seen)
        });
        let ran = match tokio::time::timeout(timeout, call).await {
            Ok(Some(ran)) => Ok(ran),
            Ok(None) => Err(ApiError::internal(&"the XML job panicked")),
            Err(_) => Err(ApiError::from(SignError::Timeout(timeout))),
        };
        self.settle(&claim, ran)
    }

    /// What a job needs to write its own record, or the refusal of a stalled audit log.
    fn recorder(&mut self, state: &AppState) -> Result<Recorder, ApiError> {
        if let Some(refused) = state.audit.as_ref().and_then(|a| a.refuses_now()) {
            // Counted by the log for its outage record; a write now would only wait.
            self.recorded = true;
            return Err(ApiError::audit_unavailable(&refused));
        }
        Ok(Recorder {
            claim: Arc::new(AtomicU8::new(PENDING)),
            audit: state.audit.clone(),
            template: self.template(),
            started: self.started,
        })
    }

    /// The handler's side once the job ended or its deadline passed.
    fn settle<T>(
        &mut self,
        claim: &AtomicU8,
        ran: Result<Option<Closed<T>>, ApiError>,
    ) -> Result<T, ApiError> {
        match ran {
            Ok(Some((result, seen))) => {
                self.seen = seen;
                self.recorded = true;
                result
            }
            Ok(None) => Err(ApiError::internal(&"a finished job was marked abandoned")),
            Err(e) => {
                if claim
                    .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // The job finished just as the deadline passed and wrote its own
                    // record; the caller still hears of the timeout.
                    self.recorded = true;
                }
                Err(e)
            }
        }
    }

    /// Counts the request in the metrics and, unless [`Audited::run`] wrote it already,
    /// writes its record on a blocking thread (bounded: a stalled log does not hold the
    /// answer). Returns `result` unchanged.
    pub async fn finish<T>(
        self,
        state: &AppState,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (status, outcome) = status_of(&result);
        self.count(state, status, outcome);
        if self.recorded {
            return result;
        }
        let Some(audit) = state.audit.clone() else {
            return result;
        };
        let record = fill(self.template(), &self.seen, status, outcome, self.started);
        let write = tokio::task::spawn_blocking(move || audit.record(record));
        match tokio::time::timeout(crate::audit::STALLED_AFTER, write).await {
            Ok(Ok(Ok(()))) => result,
            Ok(Ok(Err(e))) => match result {
                Ok(_) => Err(ApiError::audit_unavailable(&e)),
                Err(refused) => Err(refused),
            },
            _ => match result {
                Ok(_) => Err(ApiError::audit_unavailable(&crate::audit::Unavailable(
                    "the audit write did not return in time".into(),
                ))),
                Err(refused) => Err(refused),
            },
        }
    }

    /// [`Audited::finish`], then the HTTP answer: the JSON of `result`, or its error.
    pub async fn answer<T: serde::Serialize>(
        self,
        state: &AppState,
        result: Result<T, ApiError>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        self.answer_with(state, result, |answer| axum::Json(answer).into_response())
            .await
    }

    /// [`Audited::finish`], then the HTTP answer: `ok` of `result`, or its error (JSON).
    pub async fn answer_with<T>(
        self,
        state: &AppState,
        result: Result<T, ApiError>,
        ok: impl FnOnce(T) -> axum::response::Response,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let result = self.finish(state, result).await;
        state.metrics.in_flight.dec();
        match result {
            Ok(answer) => ok(answer),
            Err(e) => e.into_response(),
        }
    }

    fn template(&self) -> Record {
        let mut record = Record::system(self.op, "");
        record.time = self.time.clone();
        record.caller = self.peer.caller();
        record
    }

    /// Metrics: labels only for configured keys and known algorithms, so a caller
    /// cannot grow the label set.
    fn count(&self, state: &AppState, status: StatusCode, outcome: &'static str) {
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::INTERNAL_SERVER_ERROR
        {
            state
                .metrics
                .token_errors
                .get_or_create(&ErrorLabel {
                    code: outcome.into(),
                })
                .inc();
        }
        if !state.policy().has_key(&self.seen.key) {
            return;
        }
        let algorithm = Algorithm::parse(&self.seen.algorithm)
            .map(|a| a.name())
            .unwrap_or("unknown");
        state
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                key: self.seen.key.clone(),
                algorithm: algorithm.into(),
                outcome: outcome.into(),
            })
            .inc();
        state
            .metrics
            .latency
            .get_or_create(&KeyLabel {
                key: self.seen.key.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

fn status_of<T>(result: &Result<T, ApiError>) -> (StatusCode, &'static str) {
    match result {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => (e.status, e.code),
    }
}

fn fill(
    mut record: Record,
    seen: &Seen,
    status: StatusCode,
    outcome: &str,
    started: Instant,
) -> Record {
    record.key = seen.key.clone();
    record.algorithm = seen.algorithm.clone();
    record.input_sha256 = seen.input_sha256.clone();
    record.reference = seen.reference.clone();
    record.cert_sha256 = seen.cert_sha256.clone();
    record.header_sha256 = seen.header_sha256.clone();
    record.aud = seen.aud.clone();
    record.iss = seen.iss.clone();
    record.jti = seen.jti.clone();
    record.outcome = outcome.into();
    record.status = status.as_u16();
    record.duration_us = started.elapsed().as_micros() as u64;
    record
}
