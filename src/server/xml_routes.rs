//! `POST /v1/keys/{name}/wss/sign` and `POST /v1/keys/{name}/saml/sign`: the daemon signs
//! a whole XML document with [`crate::xml`] and answers with the final bytes, in JSON or
//! as the document itself ([`super::xml_form`]).
//!
//! The order of checks is the daemon's (docs/api.md): peer, key name, purpose
//! ([`KeyRequest`]); a place among the XML requests in work (`[server]
//! max_xml_in_flight`, waited for within `request_timeout_ms`), the body
//! (`max_xml_body_bytes`), its JSON or query options, and, on a blocking thread that
//! holds no token session, the parse and every structure check; then the algorithm
//! against the key's list, the key as last seen loaded, its type and certificate
//! validity. The algorithm and the key are resolved before the document is touched,
//! but a refusal of either is answered only once the document passed its own checks
//! ([`document_first`]). Only the signature itself takes a session ([`TokenCall`]). So a
//! malformed document gets 400 while the token is down, and a large envelope never
//! keeps `/sign` waiting for a session. libxml2 documents are not `Send` and never
//! reach an async worker. Neither the document nor any part of it goes to the audit
//! record or the log; the record holds the SHA-256 of the canonical SignedInfo and the
//! reference URIs.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::Audited;
use super::error::ApiError;
use super::policy::KeyRule;
use super::request::{
    check_key, choose_algorithm, default_algorithm, known_key, read_xml, Endpoint, KeyRequest,
};
use super::state::AppState;
use super::token_call::TokenCall;
use super::xml_form::{self, Answer, Form, Metadata};
use crate::algorithm::Algorithm;
use crate::config::{Operation, Purpose};
use crate::signer::{KeyInfo, SignError};
use crate::text::printable;
use crate::xml::{self, SamlOptions, WssOptions, XmlError, XmlSignError};

/// The longest Timestamp validity accepted, in seconds (one day).
const MAX_TTL_SECONDS: u32 = 86_400;

/// The JSON body of `POST /v1/keys/{name}/wss/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WssJson {
    envelope: String,
    algorithm: Option<String>,
    timestamp_ttl_seconds: Option<u32>,
}

/// The options of `wss/sign`: the JSON body's other fields, or the query parameters of
/// a raw one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WssQuery {
    algorithm: Option<String>,
    timestamp_ttl_seconds: Option<u32>,
}

/// The JSON body of `POST /v1/keys/{name}/saml/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamlJson {
    xml: String,
    algorithm: Option<String>,
    reference_id: Option<String>,
}

/// The options of `saml/sign`, as [`WssQuery`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamlQuery {
    algorithm: Option<String>,
    reference_id: Option<String>,
}

/// The JSON answer to a WS-Security request.
#[derive(Debug, Serialize)]
struct WssResponse {
    envelope: String,
    #[serde(flatten)]
    meta: WssMeta,
}

/// What a WS-Security answer says besides the envelope.
#[derive(Debug, Serialize)]
struct WssMeta {
    body_id: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    certificate_sha256: String,
    #[serde(skip)]
    reference_uris: Vec<String>,
}

impl Metadata for WssMeta {
    type Json = WssResponse;

    fn json(self, envelope: String) -> WssResponse {
        WssResponse {
            envelope,
            meta: self,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("body-id", self.body_id.clone()),
            ("reference-uri", self.reference_uris.join(" ")),
            ("algorithm", self.algorithm.name().into()),
            ("algorithm-uri", self.algorithm_uri.into()),
            ("key", self.key.clone()),
            ("certificate-sha256", self.certificate_sha256.clone()),
        ]
    }
}

/// The JSON answer to a SAML request.
#[derive(Debug, Serialize)]
struct SamlResponse {
    xml: String,
    xml_base64: String,
    #[serde(flatten)]
    meta: SamlMeta,
}

/// What a SAML answer says besides the document.
#[derive(Debug, Serialize)]
struct SamlMeta {
    reference_uri: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    certificate_sha256: String,
}

impl Metadata for SamlMeta {
    type Json = SamlResponse;

    fn json(self, xml: String) -> SamlResponse {
        let xml_base64 = base64::engine::general_purpose::STANDARD.encode(xml.as_bytes());
        SamlResponse {
            xml,
            xml_base64,
            meta: self,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("reference-uri", self.reference_uri.clone()),
            ("algorithm", self.algorithm.name().into()),
            ("algorithm-uri", self.algorithm_uri.into()),
            ("key", self.key.clone()),
            ("certificate-sha256", self.certificate_sha256.clone()),
        ]
    }
}

/// The key as the XML work needs it, resolved before the document is touched.
pub(super) struct ResolvedKey {
    pub(super) label: String,
    pub(super) key_name: String,
    pub(super) algorithm: Algorithm,
    pub(super) cert_der: Vec<u8>,
}

/// `wss` in the audit record; the key must sign.
pub(super) struct Wss;

impl Endpoint for Wss {
    const OP: &'static str = "wss";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Wss;
}

/// `saml` in the audit record; the key must sign.
pub(super) struct Saml;

impl Endpoint for Saml {
    const OP: &'static str = "saml";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Saml;
}

pub(super) async fn wss(
    request: KeyRequest<Wss>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let form = Form::of(&headers);
    let result = wss_inner(&state, &rule, form, &uri, body, &mut audited).await;
    audited
        .answer_with(&state, result, Answer::into_response)
        .await
}

pub(super) async fn saml(
    request: KeyRequest<Saml>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let form = Form::of(&headers);
    let result = saml_inner(&state, &rule, form, &uri, body, &mut audited).await;
    audited
        .answer_with(&state, result, Answer::into_response)
        .await
}

/// The given algorithm against the key's list (no token needed), then the key as last
/// seen loaded (the token may be down since: the document is still parsed and checked,
/// and the token call then reports the outage), the default algorithm, the key's type
/// and the certificate's validity.
pub(super) fn resolve(
    state: &AppState,
    rule: &KeyRule,
    given: Option<&str>,
    audited: &mut Audited,
) -> Result<ResolvedKey, ApiError> {
    if let Some(given) = given {
        audited.seen.algorithm = printable(given, 128);
    }
    let given = given
        .map(|given| choose_algorithm(&rule.name, &rule.algorithms, given))
        .transpose()?;
    let key: Arc<KeyInfo> = known_key(state, rule)?;
    let algorithm = match given {
        Some(algorithm) => algorithm,
        None => default_algorithm(rule, key.kind)?,
    };
    audited.seen.algorithm = algorithm.name().into();
    check_key(rule, algorithm, key.kind, key.not_after)?;
    let cert_der = key.cert.to_der().map_err(|e| ApiError::internal(&e))?;
    Ok(ResolvedKey {
        label: rule.label.to_string(),
        key_name: rule.name.clone(),
        algorithm,
        cert_der,
    })
}

/// Any algorithm, for the checks of a document that do not depend on one.
pub(super) const ANY: Algorithm = Algorithm::Rs256;

/// Step 4 before steps 5 to 7: a refusal of the algorithm or the key (`refused`) is
/// answered only for a document that passes the checks needing only itself; a
/// malformed one gets its own answer. Costs a parse on this refusal path only: a
/// request that is signed parses its document once.
pub(super) fn document_first(check: Result<(), XmlError>, refused: ApiError) -> ApiError {
    match check {
        Err(e) => ApiError::xml(&e),
        Ok(()) => refused,
    }
}

pub(super) fn api_error(err: XmlSignError<SignError>) -> ApiError {
    match err {
        XmlSignError::Xml(e) => ApiError::xml(&e),
        XmlSignError::Token(e) => ApiError::from(e),
    }
}

fn check_ttl(ttl: Option<u32>) -> Result<(), ApiError> {
    match ttl {
        Some(ttl) if ttl == 0 || ttl > MAX_TTL_SECONDS => Err(ApiError::bad_request(format!(
            "timestamp_ttl_seconds must be 1 to {MAX_TTL_SECONDS}"
        ))),
        _ => Ok(()),
    }
}

async fn wss_inner(
    state: &AppState,
    rule: &KeyRule,
    form: Form,
    uri: &Uri,
    body: Body,
    audited: &mut Audited,
) -> Result<Answer<WssMeta>, ApiError> {
    let (place, bytes) = read_xml(state, body).await?;
    let (envelope, options) = xml_form::decode(
        form,
        uri,
        bytes,
        "wss sign",
        |r: WssJson| {
            let options = WssQuery {
                algorithm: r.algorithm,
                timestamp_ttl_seconds: r.timestamp_ttl_seconds,
            };
            (Bytes::from(r.envelope), options)
        },
        |q: WssQuery| q,
    )?;
    check_ttl(options.timestamp_ttl_seconds)?;
    let key = resolve(state, rule, options.algorithm.as_deref(), audited);
    let ttl = options.timestamp_ttl_seconds;
    let limits = state.settings().xml_limits;
    let timeout = state.settings().request_timeout;
    let token = TokenCall::new(state, timeout);
    audited
        .run_off_session(state, timeout, move |seen| {
            let _place = place;
            let options = |algorithm| WssOptions {
                timestamp_ttl_seconds: ttl,
                limits,
                ..WssOptions::new(algorithm)
            };
            let key = key.map_err(|refused| {
                document_first(xml::check_wss(&envelope, &options(ANY)), refused)
            })?;
            let opts = options(key.algorithm);
            let mut cert_sha256 = None;
            // Taken by value: the body is freed once libxml2 has parsed it.
            let signed = xml::sign_wss(envelope, &opts, &key.cert_der, |info| {
                let signed = token.sign(&key.label, key.algorithm, info)?;
                cert_sha256 = Some(signed.key.cert_sha256.clone());
                Ok(signed.signature)
            })
            .map_err(api_error)?;
            seen.input_sha256 = hex::encode(signed.signed_info_sha256);
            seen.reference = Some(printable(&signed.reference_uris.join(" "), 256));
            seen.cert_sha256 = cert_sha256.clone();
            Ok(Answer {
                form,
                meta: WssMeta {
                    body_id: signed.body_id,
                    algorithm: key.algorithm,
                    algorithm_uri: key.algorithm.xmldsig_uri(),
                    key: key.key_name,
                    certificate_sha256: cert_sha256.unwrap_or_default(),
                    reference_uris: signed.reference_uris,
                },
                document: signed.xml,
            })
        })
        .await
}

async fn saml_inner(
    state: &AppState,
    rule: &KeyRule,
    form: Form,
    uri: &Uri,
    body: Body,
    audited: &mut Audited,
) -> Result<Answer<SamlMeta>, ApiError> {
    let (place, bytes) = read_xml(state, body).await?;
    let (document, options) = xml_form::decode(
        form,
        uri,
        bytes,
        "saml sign",
        |r: SamlJson| {
            let options = SamlQuery {
                algorithm: r.algorithm,
                reference_id: r.reference_id,
            };
            (Bytes::from(r.xml), options)
        },
        |q: SamlQuery| q,
    )?;
    let key = resolve(state, rule, options.algorithm.as_deref(), audited);
    let reference_id = options.reference_id;
    let limits = state.settings().xml_limits;
    let timeout = state.settings().request_timeout;
    let token = TokenCall::new(state, timeout);
    audited
        .run_off_session(state, timeout, move |seen| {
            let _place = place;
            let options = |algorithm| SamlOptions {
                reference_id: reference_id.clone(),
                limits,
                ..SamlOptions::new(algorithm)
            };
            let key = key.map_err(|refused| {
                document_first(xml::check_saml(&document, &options(ANY)), refused)
            })?;
            let opts = options(key.algorithm);
            let mut cert_sha256 = None;
            let signed = xml::sign_saml(document, &opts, &key.cert_der, |info| {
                let signed = token.sign(&key.label, key.algorithm, info)?;
                cert_sha256 = Some(signed.key.cert_sha256.clone());
                Ok(signed.signature)
            })
            .map_err(api_error)?;
            seen.input_sha256 = hex::encode(signed.signed_info_sha256);
            seen.reference = Some(printable(&signed.reference_uri, 256));
            seen.cert_sha256 = cert_sha256.clone();
            Ok(Answer {
                form,
                meta: SamlMeta {
                    reference_uri: signed.reference_uri,
                    algorithm: key.algorithm,
                    algorithm_uri: key.algorithm.xmldsig_uri(),
                    key: key.key_name,
                    certificate_sha256: cert_sha256.unwrap_or_default(),
                },
                document: signed.xml,
            })
        })
        .await
}
