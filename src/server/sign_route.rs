//! `POST /v1/keys/{name}/sign`: signs a digest (or the hash of the data) given in JSON
//! and answers with the signature. The body is checked whole before the algorithm
//! against the key's list, and both before the token ([`super::request`]).

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::audited::{Audited, Seen};
use super::error::ApiError;
use super::policy::KeyRule;
use super::request::{check_key, choose_algorithm, usable_key, Endpoint, KeyRequest};
use super::state::AppState;
use crate::algorithm::{self, Algorithm, Scheme};
use crate::config::{Operation, Purpose};
use crate::text::printable;

/// The body of `POST /v1/keys/{name}/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    algorithm: String,
    data: Option<String>,
    digest: Option<String>,
    format: Option<String>,
}

/// The answer to a signing request.
#[derive(Debug, Serialize)]
struct SignResponse {
    signature: String,
    algorithm: Algorithm,
    algorithm_uri: &'static str,
    key: String,
    format: &'static str,
    certificate_sha256: String,
}

/// `sign` in the audit record; the key must sign.
pub(super) struct Sign;

impl Endpoint for Sign {
    const OP: &'static str = "sign";
    const PURPOSE: Purpose = Purpose::Sign;
    const OPERATION: Operation = Operation::Sign;
}

pub(super) async fn sign(request: KeyRequest<Sign>, body: Body) -> Response {
    let KeyRequest {
        state,
        rule,
        mut audited,
        ..
    } = request;
    let result = sign_inner(&state, &rule, body, &mut audited).await;
    audited.answer(&state, result).await
}

async fn sign_inner(
    state: &AppState,
    rule: &KeyRule,
    body: Body,
    audited: &mut Audited,
) -> Result<SignResponse, ApiError> {
    let settings = state.settings();
    let bytes = super::body::read(body, settings.max_body_bytes, settings.read_timeout).await?;
    let DecodedSign {
        algorithm,
        der,
        digest,
    } = decode(&bytes, &rule.name, &rule.algorithms, &mut audited.seen)?;
    let key = usable_key(state, rule).await?;
    check_key(rule, algorithm, key.kind, key.not_after)?;
    let label = rule.label.clone();
    let key_name = rule.name.clone();
    audited
        .run(state, move |signer, seen| {
            let signed = signer.sign_now(&label, algorithm, &digest)?;
            seen.cert_sha256 = Some(signed.key.cert_sha256.clone());
            let signature = if der {
                algorithm::ecdsa_raw_to_der(&signed.signature)
                    .map_err(|e| ApiError::internal(&e))?
            } else {
                signed.signature
            };
            Ok(SignResponse {
                signature: base64::engine::general_purpose::STANDARD.encode(signature),
                algorithm,
                algorithm_uri: algorithm.xmldsig_uri(),
                key: key_name,
                format: if der { "der" } else { "raw" },
                certificate_sha256: signed.key.cert_sha256.clone(),
            })
        })
        .await
}

/// A signing request's body once decoded and checked, ready for the token.
#[derive(Debug)]
pub struct DecodedSign {
    /// The algorithm asked for, one the key allows.
    pub algorithm: Algorithm,
    /// True when an ECDSA signature is wanted as DER instead of raw r||s.
    pub der: bool,
    /// The digest to sign, as long as the algorithm's hash.
    pub digest: Vec<u8>,
}

/// Decodes the body of `POST /v1/keys/{key}/sign` for a key allowing `algorithms`, as the
/// handler does before it touches the token. Public for the fuzz target (it reads what a
/// hostile caller sends).
pub fn decode_sign_request(
    body: &[u8],
    key: &str,
    algorithms: &[Algorithm],
) -> Result<DecodedSign, ApiError> {
    decode(body, key, algorithms, &mut Seen::default())
}

/// Step 4, what needs only the body (its JSON, the format, base64, and, when the
/// algorithm's name is known, the digest's length and whether DER fits it); then step
/// 5, the algorithm's name and the key's allowed list.
fn decode(
    body: &[u8],
    key: &str,
    algorithms: &[Algorithm],
    seen: &mut Seen,
) -> Result<DecodedSign, ApiError> {
    let request: SignRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid sign request: {e}")))?;
    seen.algorithm = printable(&request.algorithm, 128);
    let format = format_of(&request)?;
    let input = decode_input(&request)?;
    seen.input_sha256 = hex::encode(openssl::sha::sha256(input.bytes()));
    if let Some(named) = Algorithm::parse(&request.algorithm) {
        wants_der(format, named)?;
        input.check_length(named)?;
    }
    let algorithm = choose_algorithm(key, algorithms, &request.algorithm)?;
    seen.algorithm = algorithm.name().into();
    let der = wants_der(format, algorithm)?;
    let digest = input.into_digest(algorithm)?;
    Ok(DecodedSign {
        algorithm,
        der,
        digest,
    })
}

/// The signature's format as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Der,
}

fn format_of(request: &SignRequest) -> Result<Format, ApiError> {
    match request.format.as_deref() {
        None | Some("raw") => Ok(Format::Raw),
        Some("der") => Ok(Format::Der),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {:?}: use \"raw\" (r||s, XML-DSig) or \"der\"",
            printable(other, 128)
        ))),
    }
}

fn wants_der(format: Format, algorithm: Algorithm) -> Result<bool, ApiError> {
    match format {
        Format::Raw => Ok(false),
        Format::Der if algorithm.scheme() == Scheme::Ecdsa => Ok(true),
        Format::Der => Err(ApiError::bad_request(
            "format \"der\" applies to ECDSA signatures only",
        )),
    }
}

enum Input {
    Data(Vec<u8>),
    Digest(Vec<u8>),
}

impl Input {
    fn bytes(&self) -> &[u8] {
        match self {
            Input::Data(b) | Input::Digest(b) => b,
        }
    }

    /// A digest as long as `algorithm`'s hash, or data of any length.
    fn check_length(&self, algorithm: Algorithm) -> Result<(), ApiError> {
        let hash = algorithm.hash();
        match self {
            Input::Digest(d) if d.len() != hash.output_len() => Err(ApiError::unprocessable(
                "bad_digest_length",
                format!(
                    "{algorithm} takes a {}-byte digest; got {} bytes",
                    hash.output_len(),
                    d.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn into_digest(self, algorithm: Algorithm) -> Result<Vec<u8>, ApiError> {
        self.check_length(algorithm)?;
        match self {
            Input::Data(data) => Ok(algorithm.hash().digest(&data)),
            Input::Digest(d) => Ok(d),
        }
    }
}

fn decode_input(request: &SignRequest) -> Result<Input, ApiError> {
    let decode = |field: &str, text: &str| {
        let engine = &base64::engine::general_purpose::STANDARD;
        engine
            .decode(text.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim()))
            .map_err(|_| ApiError::bad_request(format!("{field} is not valid base64")))
    };
    match (&request.data, &request.digest) {
        (Some(data), None) => Ok(Input::Data(decode("data", data)?)),
        (None, Some(digest)) => Ok(Input::Digest(decode("digest", digest)?)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send either data or digest, not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "send data (base64 bytes to hash and sign) or digest (base64 hash)",
        )),
    }
}
