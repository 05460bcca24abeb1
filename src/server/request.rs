//! The checks every key endpoint shares, in the one order in which their errors are
//! reported (docs/api.md, "Order of checks"): the peer, the key name and the key's
//! purpose ([`KeyRequest`], [`KeyLookup`]); the XML endpoints' place and body
//! ([`read_xml`]); the algorithm against the key's list ([`choose_algorithm`]); then,
//! once the key's details are known, its type and certificate ([`check_key`],
//! [`default_algorithm`]). A handler does its own body checks between them and nothing
//! else.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::audited::Audited;
use super::error::ApiError;
use super::peer::Peer;
use super::policy::KeyRule;
use super::state::AppState;
use crate::algorithm::{self, Algorithm};
use crate::cert::KeyKind;
use crate::config::{Operation, Purpose};
use crate::signer::KeyInfo;
use crate::text::printable;

/// What an audited key endpoint is: its name in the audit record and the purpose its
/// key must have.
pub trait Endpoint {
    /// The audit record's `op` (`sign`, `wss`, `saml`, `decrypt`, …).
    const OP: &'static str;
    /// The purpose the key must be configured with.
    const PURPOSE: Purpose;
    /// The operation a key's `operations` list must name, when it has one.
    const OPERATION: Operation;
}

/// A request for a key that passed the peer, key-name and purpose checks, with its audit
/// record begun. A refusal is answered (and recorded) by the extractor itself, so the
/// handler only sees admitted requests.
pub struct KeyRequest<E> {
    /// The shared state, as the router holds it.
    pub state: Arc<AppState>,
    /// The key's rule.
    pub rule: Arc<KeyRule>,
    /// The request's record, to be answered with [`Audited::answer`].
    pub audited: Audited,
    endpoint: PhantomData<E>,
}

impl<E: Endpoint + Send> FromRequestParts<Arc<AppState>> for KeyRequest<E> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let peer = peer_of(parts).map_err(IntoResponse::into_response)?;
        let mut audited = Audited::begin(E::OP, peer.clone(), state);
        match found_key(parts, state, &peer, &mut audited).await {
            Ok(rule) => match rule
                .require(E::PURPOSE)
                .and_then(|()| rule.require_operation(E::OPERATION))
            {
                Ok(()) => Ok(Self {
                    state: state.clone(),
                    rule,
                    audited,
                    endpoint: PhantomData,
                }),
                Err(e) => Err(audited.answer::<()>(state, Err(e)).await),
            },
            Err(e) => Err(audited.answer::<()>(state, Err(e)).await),
        }
    }
}

/// A key looked up without an audit record and for any purpose (`GET /v1/keys/{name}`
/// and its certificate).
pub struct KeyLookup {
    /// The key's rule.
    pub rule: Arc<KeyRule>,
}

impl FromRequestParts<Arc<AppState>> for KeyLookup {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = peer_of(parts)?;
        let policy = state.policy();
        policy.check_peer(&peer)?;
        let name = key_name(parts, state).await?;
        Ok(Self {
            rule: policy.key(&name, &peer)?,
        })
    }
}

/// The peer the listener attached to the request.
fn peer_of(parts: &Parts) -> Result<Peer, ApiError> {
    parts
        .extensions
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| ApiError::internal(&"no peer on the request"))
}

/// Steps 1 and 2: the peer, then the key name (noted in the record as given).
async fn found_key(
    parts: &mut Parts,
    state: &Arc<AppState>,
    peer: &Peer,
    audited: &mut Audited,
) -> Result<Arc<KeyRule>, ApiError> {
    let policy = state.policy();
    policy.check_peer(peer)?;
    let name = key_name(parts, state).await?;
    audited.seen.key = printable(&name, 128);
    policy.key(&name, peer)
}

async fn key_name(parts: &mut Parts, state: &Arc<AppState>) -> Result<String, ApiError> {
    let Path(name) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("bad key name in the path: {e}")))?;
    Ok(name)
}

/// A place among the XML requests in work, then the body under `max_xml_body_bytes`.
/// The place is held until the XML work ends.
pub async fn read_xml(
    state: &AppState,
    body: Body,
) -> Result<(OwnedSemaphorePermit, Bytes), ApiError> {
    let settings = state.settings();
    let place = xml_place(state, settings.request_timeout).await?;
    let bytes =
        super::body::read_xml(body, settings.max_xml_body_bytes, settings.read_timeout).await?;
    Ok((place, bytes))
}

/// One of `max_xml_in_flight` places, taken before the body is read so that the bodies
/// held at once are bounded; a request waits for one at most `wait`.
async fn xml_place(state: &AppState, wait: Duration) -> Result<OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(wait, state.xml_places.clone().acquire_owned()).await {
        Ok(Ok(place)) => Ok(place),
        Ok(Err(closed)) => Err(ApiError::internal(&closed)),
        Err(_) => Err(ApiError::unavailable(
            "overloaded",
            format!(
                "too many XML documents in work ([server] max_xml_in_flight); none finished within {} ms; retry shortly",
                wait.as_millis()
            ),
            1,
        )),
    }
}

/// Step 5: the algorithm's name, then the key's allowed list.
pub fn choose_algorithm(
    key: &str,
    allowed: &[Algorithm],
    given: &str,
) -> Result<Algorithm, ApiError> {
    let algorithm = Algorithm::parse(given).ok_or_else(|| {
        let known: Vec<&str> = algorithm::ALL.iter().map(|a| a.name()).collect();
        ApiError::unprocessable(
            "unsupported_algorithm",
            format!(
                "unknown algorithm {:?}; known: {} or their XML-DSig URIs",
                printable(given, 128),
                known.join(", ")
            ),
        )
    })?;
    if !allowed.contains(&algorithm) {
        let allowed: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
        return Err(ApiError::unprocessable(
            "algorithm_not_allowed",
            format!(
                "key {key:?} is not configured for {algorithm}; it allows {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(algorithm)
}

/// Step 6: the token's state and the key's presence, then the key's details for step 7.
/// While the token is down this waits, within the request's timeout, for a reconnect that
/// may be moments away ([`crate::signer::KeySigner::await_token`]), so a request that
/// arrives just after the link dropped is served on the new connection, not refused.
pub async fn usable_key(state: &AppState, rule: &KeyRule) -> Result<Arc<KeyInfo>, ApiError> {
    state
        .signer
        .await_token(state.settings().request_timeout)
        .await?;
    Ok(state.signer.usable_key(&rule.label)?)
}

/// For the XML endpoints, whose document is checked before the token is asked: the key's
/// details as last seen loaded, so steps 5 and 7 do not wait for the token, whose own state
/// (step 6) the one token call then reports (waiting as [`usable_key`] does). A key the
/// daemon has never seen loaded since it started has nothing to check with, and gets
/// step 6 first, as the token is now.
pub fn known_key(state: &AppState, rule: &KeyRule) -> Result<Arc<KeyInfo>, ApiError> {
    match state.last_known_key(&rule.label) {
        Some(key) => Ok(key),
        None => Ok(state.signer.usable_key(&rule.label)?),
    }
}

/// Step 7: the key's type against the algorithm, then its certificate's validity.
pub fn check_key(
    rule: &KeyRule,
    algorithm: Algorithm,
    kind: KeyKind,
    not_after: i64,
) -> Result<(), ApiError> {
    if !algorithm.fits(kind) {
        return Err(ApiError::unprocessable(
            "algorithm_mismatch",
            format!(
                "key {:?} is {kind}; {algorithm} needs another key type",
                rule.name
            ),
        ));
    }
    if !rule.allow_expired && time::OffsetDateTime::now_utc().unix_timestamp() > not_after {
        return Err(ApiError::unprocessable(
            "certificate_expired",
            format!("the certificate of key {:?} has expired; import the renewed certificate (or set allow_expired)", rule.name),
        ));
    }
    Ok(())
}

/// Step 7, when no algorithm was asked for: the key's first configured algorithm that
/// fits its type.
pub fn default_algorithm(rule: &KeyRule, kind: KeyKind) -> Result<Algorithm, ApiError> {
    rule.algorithms
        .iter()
        .copied()
        .find(|a| a.fits(kind))
        .ok_or_else(|| {
            ApiError::unprocessable(
                "algorithm_mismatch",
                format!(
                    "key {:?} is {kind}; none of its configured algorithms fits it",
                    rule.name
                ),
            )
        })
}
