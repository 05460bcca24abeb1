//! `POST /v1/keys/{name}/jwt/client-assertion`: the RFC 7523 client assertion an
//! authorisation server's token endpoint takes (e-Doręczenia's `client_credentials`),
//! built by [`crate::jose`] with `iss` = `sub` = `client_id`, `aud`, `iat`, `nbf`, `exp`
//! (at most 300 s ahead) and a random `jti`, and signed as `jws/sign` signs.
//!
//! The order of checks is `jws/sign`'s ([`super::jws_route`]), with the caller's fields
//! ([`jose::check_assertion`]) and then the key's `jwt_audiences` at the end of the body
//! checks. The audit record holds `aud`, `iss` and `jti` (escaped, at most 256
//! characters each), the protected header's SHA-256 and the claims set's SHA-256
//! (`input_sha256`); never the caller's `claims`.

use axum::body::Body;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::audited::Audited;
use super::error::ApiError;
use super::jws_route::{
    api_error, certificates, includes, parse_body, read_body, resolve, signer_for,
};
use super::policy::KeyRule;
use super::request::{Endpoint, KeyRequest};
use super::state::AppState;
use crate::algorithm::Algorithm;
use crate::config::{Operation, Purpose};
use crate::jose::{self, AssertionRequest, Include, JwsOptions};
use crate::text::printable;

/// The longest `aud`, `iss` and `jti` the audit record keeps, in characters.
const AUDITED_CHARS: usize = 256;

/// The body of `POST /v1/keys/{name}/jwt/client-assertion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionBody {
    client_id: String,
    audience: String,
    lifetime_seconds: Option<u32>,
    claims: Option<Box<RawValue>>,
    algorithm: Option<String>,
    header: Option<Box<RawValue>>,
    #[serde(default)]
    include: Vec<String>,
}

impl AssertionBody {
    /// What [`jose`] is asked to build, issued at `now`.
    fn asked<'a>(
        &'a self,
        include: &'a [Include],
        now: OffsetDateTime,
        algorithm: Option<Algorithm>,
    ) -> AssertionRequest<'a> {
        AssertionRequest {
            client_id: &self.client_id,
            audience: &self.audience,
            lifetime_seconds: self.lifetime_seconds,
            claims: self.claims.as_deref().map(RawValue::get),
            now,
            jws: JwsOptions {
                algorithm,
                header: self.header.as_deref().map(RawValue::get),
                include,
            },
        }
    }
}

/// The answer.
#[derive(Debug, Serialize)]
struct AssertionResponse {
    jws: String,
    jti: String,
    issued_at: String,
    expires_at: String,
    algorithm: Algorithm,
    key: String,
    certificate_sha256: String,
}

/// `jwt` in the audit record; the key must sign.
pub(super) struct ClientAssertion;

impl Endpoint for ClientAssertion {
    const OP: &'static str = "jwt";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Jwt;
}

pub(super) async fn client_assertion(request: KeyRequest<ClientAssertion>, body: Body) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let result = assertion_inner(&state, &rule, body, &mut audited).await;
    audited.answer(&state, result).await
}

async fn assertion_inner(
    state: &AppState,
    rule: &KeyRule,
    body: Body,
    audited: &mut Audited,
) -> Result<AssertionResponse, ApiError> {
    let bytes = read_body(state, body).await?;
    let request: AssertionBody = parse_body(&bytes, "client assertion")?;
    drop(bytes);
    audited.seen.aud = Some(printable(&request.audience, AUDITED_CHARS));
    audited.seen.iss = Some(printable(&request.client_id, AUDITED_CHARS));
    let include = includes(&request.include)?;
    let now = OffsetDateTime::now_utc();
    jose::check_assertion(&request.asked(&include, now, None)).map_err(|e| ApiError::jose(&e))?;
    rule.require_audience(&request.audience)?;
    let algorithm = resolve(state, rule, request.algorithm.as_deref(), &mut audited.seen).await?;
    let (label, key_name) = (rule.label.clone(), rule.name.clone());
    audited
        .run(state, move |signer, seen| {
            let key = signer.usable_key(&label)?;
            let (cert_der, chain) = certificates(&key)?;
            let req = request.asked(&include, OffsetDateTime::now_utc(), Some(algorithm));
            let signed = jose::client_assertion(
                &req,
                &cert_der,
                &chain,
                signer_for(signer, &label, algorithm),
            )
            .map_err(api_error)?;
            seen.jti = Some(printable(&signed.jti, AUDITED_CHARS));
            seen.input_sha256 = hex::encode(signed.jws.payload_sha256);
            seen.header_sha256 = Some(hex::encode(signed.jws.header_sha256));
            seen.cert_sha256 = Some(key.cert_sha256.clone());
            Ok(AssertionResponse {
                jws: signed.jws.jws,
                jti: signed.jti,
                issued_at: rfc3339(signed.issued_at)?,
                expires_at: rfc3339(signed.expires_at)?,
                algorithm: signed.jws.algorithm,
                key: key_name,
                certificate_sha256: key.cert_sha256.clone(),
            })
        })
        .await
}

fn rfc3339(at: OffsetDateTime) -> Result<String, ApiError> {
    at.format(&Rfc3339).map_err(|e| ApiError::internal(&e))
}
