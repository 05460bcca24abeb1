//! `POST /v1/keys/{name}/xades/sign`: the daemon signs a whole document with enveloped
//! XAdES-BES ([`crate::xml::sign_xades`]): KSeF's `AuthTokenRequest`, ePUAP's
//! Doręczyciel documents. It answers in JSON or with the document itself
//! ([`super::xml_form`]), exactly as `wss/sign` and `saml/sign` do
//! ([`super::xml_routes`], whose order of checks, key resolution and off-session work it
//! shares). The audit record holds the SHA-256 of the canonical SignedInfo and the
//! SignedProperties' reference, never the document.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::Audited;
use super::error::ApiError;
use super::policy::KeyRule;
use super::request::{read_xml, Endpoint, KeyRequest};
use super::state::AppState;
use super::token_call::TokenCall;
use super::xml_form::{self, Answer, Form, Metadata};
use super::xml_routes::{api_error, document_first, resolve, ANY};
use crate::algorithm::Algorithm;
use crate::config::{Operation, Purpose};
use crate::text::printable;
use crate::xml::{self, CertificateDigest, XadesOptions};

/// The JSON body of `POST /v1/keys/{name}/xades/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XadesJson {
    xml: String,
    algorithm: Option<String>,
    certificate_digest: Option<CertificateDigest>,
    signature_id: Option<String>,
}

/// The options of `xades/sign`: the JSON body's other fields, or the query parameters
/// of a raw one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XadesQuery {
    algorithm: Option<String>,
    certificate_digest: Option<CertificateDigest>,
    signature_id: Option<String>,
}

/// The JSON answer.
#[derive(Debug, Serialize)]
struct XadesResponse {
    xml: String,
    xml_base64: String,
    #[serde(flatten)]
    meta: XadesMeta,
}

/// What the answer says besides the document.
#[derive(Debug, Serialize)]
struct XadesMeta {
    signature_id: String,
    signed_properties_id: String,
    signing_time: String,
    certificate_digest: CertificateDigest,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    certificate_sha256: String,
}

impl Metadata for XadesMeta {
    type Json = XadesResponse;

    fn json(self, xml: String) -> XadesResponse {
        let xml_base64 = base64::engine::general_purpose::STANDARD.encode(xml.as_bytes());
        XadesResponse {
            xml,
            xml_base64,
            meta: self,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let digest = match self.certificate_digest {
            CertificateDigest::Sha256 => "sha256",
            CertificateDigest::Sha1 => "sha1",
        };
        vec![
            ("signature-id", self.signature_id.clone()),
            ("signed-properties-id", self.signed_properties_id.clone()),
            ("signing-time", self.signing_time.clone()),
            ("certificate-digest", digest.into()),
            ("algorithm", self.algorithm.name().into()),
            ("algorithm-uri", self.algorithm_uri.into()),
            ("key", self.key.clone()),
            ("certificate-sha256", self.certificate_sha256.clone()),
        ]
    }
}

/// `xades` in the audit record; the key must sign.
pub(super) struct Xades;

impl Endpoint for Xades {
    const OP: &'static str = "xades";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Xades;
}

pub(super) async fn sign(
    request: KeyRequest<Xades>,
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
    let result = sign_inner(&state, &rule, form, &uri, body, &mut audited).await;
    audited
        .answer_with(&state, result, Answer::into_response)
        .await
}

async fn sign_inner(
    state: &AppState,
    rule: &KeyRule,
    form: Form,
    uri: &Uri,
    body: Body,
    audited: &mut Audited,
) -> Result<Answer<XadesMeta>, ApiError> {
    let (place, bytes) = read_xml(state, body).await?;
    let (document, options) = xml_form::decode(
        form,
        uri,
        bytes,
        "xades sign",
        |r: XadesJson| {
            let options = XadesQuery {
                algorithm: r.algorithm,
                certificate_digest: r.certificate_digest,
                signature_id: r.signature_id,
            };
            (Bytes::from(r.xml), options)
        },
        |q: XadesQuery| q,
    )?;
    let key = resolve(state, rule, options.algorithm.as_deref(), audited);
    let certificate_digest = options.certificate_digest.unwrap_or_default();
    let signature_id = options.signature_id;
    let limits = state.settings().xml_limits;
    let timeout = state.settings().request_timeout;
    let token = TokenCall::new(state, timeout);
    audited
        .run_off_session(state, timeout, move |seen| {
            let _place = place;
            let options = |algorithm| XadesOptions {
                certificate_digest,
                signature_id: signature_id.clone(),
                limits,
                ..XadesOptions::new(algorithm)
            };
            let key = key.map_err(|refused| {
                document_first(xml::check_xades(&document, &options(ANY)), refused)
            })?;
            let opts = options(key.algorithm);
            let mut cert_sha256 = None;
            let signed = xml::sign_xades(&document, &opts, &key.cert_der, |info| {
                let signed = token.sign(&key.label, key.algorithm, info)?;
                cert_sha256 = Some(signed.key.cert_sha256.clone());
                Ok(signed.signature)
            })
            .map_err(api_error)?;
            drop(document);
            seen.input_sha256 = hex::encode(signed.signed_info_sha256);
            seen.reference = Some(printable(&format!("#{}", signed.signed_properties_id), 256));
            seen.cert_sha256 = cert_sha256.clone();
            Ok(Answer {
                form,
                meta: XadesMeta {
                    signature_id: signed.signature_id,
                    signed_properties_id: signed.signed_properties_id,
                    signing_time: signed.signing_time,
                    certificate_digest,
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
