//! `POST /v1/keys/{name}/saml/decrypt`: opens WK's encrypted assertion with a decrypt
//! key (ECDH-ES on the token, the rest in software, see [`crate::xml::ecdh_es`]).
//!
//! The checks before the token are those of the signing routes. Parsing, the point
//! check and the decryption run on a blocking thread that holds no token session; the
//! derivation alone takes one ([`TokenCall`]), so a malformed document gets 400 while
//! the token is down. The audit record holds the SHA-256 of the
//! ciphertext; the plaintext (it carries the citizen's PESEL) goes to the caller only,
//! never to the record or the log. The daemon does not verify WK's signature on the
//! assertion: the caller must (docs/wk.md).

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::Audited;
use super::error::ApiError;
use super::policy::KeyRule;
use super::request::{read_xml, Endpoint, KeyRequest};
use super::state::AppState;
use super::token_call::TokenCall;
use crate::config::{Operation, Purpose};
use crate::xml::{ecdh_es, enc, DEFAULT_MAX_DEPTH};

/// What the audit record names as the algorithm of a decryption refused before the
/// message's own algorithms are known.
const AUDIT_ALGORITHM: &str = "ECDH-ES";

/// The body of `POST /v1/keys/{name}/saml/decrypt`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptRequest {
    xml: String,
}

/// The answer: the assertion exactly as WK encrypted it. No `Debug`: it holds a PESEL.
#[derive(Serialize)]
struct DecryptResponse {
    assertion: String,
    assertion_base64: String,
    content_key_bits: usize,
    key: String,
}

/// `decrypt` in the audit record; the key must decrypt.
pub(super) struct Decrypt;

impl Endpoint for Decrypt {
    const OP: &'static str = "decrypt";
    const PURPOSE: Purpose = Purpose::Decrypt;
    const OPERATION: Operation = Operation::Decrypt;
}

pub(super) async fn decrypt(request: KeyRequest<Decrypt>, body: Body) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let result = decrypt_inner(&state, &rule, body, &mut audited).await;
    audited.answer(&state, result).await
}

async fn decrypt_inner(
    state: &AppState,
    rule: &KeyRule,
    body: Body,
    audited: &mut Audited,
) -> Result<DecryptResponse, ApiError> {
    let (place, bytes) = read_xml(state, body).await?;
    let request: DecryptRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid decrypt request: {e}"))
    })?;
    drop(bytes);
    audited.seen.algorithm = AUDIT_ALGORITHM.into();
    let label = rule.label.clone();
    let key_name = rule.name.clone();
    let document = request.xml;
    let limits = state.settings().xml_limits;
    let timeout = state.settings().request_timeout;
    let token = TokenCall::new(state, timeout);
    audited
        .run_off_session(state, timeout, move |seen| {
            let _place = place;
            let encrypted = enc::read_limited(document.as_bytes(), DEFAULT_MAX_DEPTH, &limits)
                .map_err(|e| ApiError::decrypt(e.widen()))?;
            drop(document);
            seen.input_sha256 = hex::encode(encrypted.ciphertext_sha256());
            seen.algorithm = encrypted.algorithm_name().into();
            let mut cert_sha256 = None;
            let decrypted = ecdh_es::decrypt(&encrypted, |point| {
                let (z, key) = token.derive(&label, point)?;
                cert_sha256 = Some(key.cert_sha256.clone());
                Ok(z)
            })
            .map_err(ApiError::decrypt)?;
            seen.cert_sha256 = cert_sha256;
            tracing::debug!(
                key = %key_name,
                ciphertext_bytes = encrypted.ciphertext.len(),
                plaintext_bytes = decrypted.plaintext.len(),
                content_key_bits = decrypted.content_key_bits,
                "WK assertion decrypted"
            );
            let assertion = std::str::from_utf8(&decrypted.plaintext).map_err(|_| {
                ApiError::unprocessable(
                    "bad_encrypted_assertion",
                    "bad encrypted assertion: the decrypted content is not UTF-8",
                )
            })?;
            Ok(DecryptResponse {
                assertion: assertion.to_owned(),
                assertion_base64: base64::engine::general_purpose::STANDARD
                    .encode(&*decrypted.plaintext),
                content_key_bits: decrypted.content_key_bits,
                key: key_name,
            })
        })
        .await
}
