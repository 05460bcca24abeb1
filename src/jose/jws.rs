//! Compact JWS (RFC 7515 §7.1): the protected header, the payload as the caller sent it,
//! one call to the signing closure (the token), and a check of its answer against the
//! certificate before the token string is returned.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::{JoseError, SignFailure};
use super::json;
use super::jwk::{self, Params};
use super::types::{Include, Jws, JwsOptions, Payload};
use crate::algorithm;

/// Header members the caller may never set: `alg` is the daemon's, and `crit` / `b64`
/// (RFC 7797) would make verifiers read the token differently from what was signed.
const RESERVED: [&str; 3] = ["alg", "crit", "b64"];

pub(crate) fn sign<F, E>(
    payload: Payload<'_>,
    opts: &JwsOptions<'_>,
    cert_der: &[u8],
    chain: &[Vec<u8>],
    sign: F,
) -> Result<Jws, SignFailure<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let (params, key) = Params::of(cert_der)?;
    let algorithm = opts.algorithm.unwrap_or_else(|| params.default_algorithm());
    params.check(algorithm)?;
    let payload = payload_bytes(payload)?;
    let header = protected_header(algorithm.name(), opts, &params, cert_der, chain)?;
    let payload_sha256 = Sha256::digest(&payload).into();

    let mut signing_input = URL_SAFE_NO_PAD.encode(header.as_bytes());
    signing_input.push('.');
    signing_input.push_str(&URL_SAFE_NO_PAD.encode(&payload));

    let value = sign(signing_input.as_bytes()).map_err(SignFailure::Token)?;
    // RFC 7518 §3.4: ECDSA is R || S, each as long as the field; a DER signature (or
    // one with a byte dropped) is refused here rather than passed on.
    let length_fits = params.ecdsa_len().is_none_or(|len| value.len() == len);
    let digest = algorithm.hash().digest(signing_input.as_bytes());
    let verified =
        length_fits && algorithm::verify_digest(&key, algorithm, &digest, &value).unwrap_or(false);
    if !verified {
        return Err(JoseError::SignatureMismatch.into());
    }
    signing_input.push('.');
    signing_input.push_str(&URL_SAFE_NO_PAD.encode(&value));
    Ok(Jws {
        jws: signing_input,
        algorithm,
        header_sha256: Sha256::digest(header.as_bytes()).into(),
        payload_sha256,
        protected_header: header,
    })
}

/// What [`sign`] refuses in the caller's input, checked without a certificate or an
/// algorithm: the payload, then the header. The HTTP handler calls it first, so a bad
/// body is answered before the algorithm, the key and the token (docs/api.md, "The
/// order in which errors are reported").
pub(crate) fn check(payload: Payload<'_>, opts: &JwsOptions<'_>) -> Result<(), JoseError> {
    payload_bytes(payload)?;
    caller_header(opts)?;
    Ok(())
}

/// The bytes the JWS carries: a JSON object's text exactly as sent (checked first), or
/// the decoded `payload_base64`.
fn payload_bytes(payload: Payload<'_>) -> Result<Vec<u8>, JoseError> {
    match payload {
        Payload::Json(text) => {
            json::object("payload", text)?;
            Ok(text.as_bytes().to_vec())
        }
        Payload::Base64(text) => STANDARD
            .decode(text)
            .map_err(|_| JoseError::BadPayloadBase64),
    }
}

/// `{"alg":…, <caller's members in order>, <included members>}`, without whitespace
/// between members; each caller value keeps its exact text.
pub(crate) fn protected_header(
    alg: &str,
    opts: &JwsOptions<'_>,
    params: &Params,
    cert_der: &[u8],
    chain: &[Vec<u8>],
) -> Result<String, JoseError> {
    let members = caller_header(opts)?;
    let mut out = String::from("{");
    push_member(&mut out, "alg", &json_string(alg));
    for (name, value) in &members {
        push_member(&mut out, name, value.get());
    }
    let mut included: Vec<Include> = Vec::new();
    for include in opts.include {
        if included.contains(include) {
            continue;
        }
        included.push(*include);
        let value = match include {
            Include::Kid => json_string(&params.thumbprint()),
            Include::X5c => {
                serde_json::to_string(&jwk::x5c(cert_der, chain)?).map_err(JoseError::internal)?
            }
            Include::X5tS256 => json_string(&jwk::x5t_s256(cert_der)),
        };
        push_member(&mut out, include.name(), &value);
    }
    out.push('}');
    Ok(out)
}

/// The caller's header members, none of them [`RESERVED`] or also named in `include`.
fn caller_header(opts: &JwsOptions<'_>) -> Result<Vec<json::Member>, JoseError> {
    let members = match opts.header {
        Some(text) => json::object("header", text)?,
        None => Vec::new(),
    };
    for (name, _) in &members {
        if RESERVED.contains(&name.as_str()) {
            return Err(JoseError::ReservedHeader(JoseError::name(name)));
        }
        if opts.include.iter().any(|i| i.name() == name) {
            return Err(JoseError::HeaderConflict(JoseError::name(name)));
        }
    }
    Ok(members)
}

pub(crate) fn push_member(out: &mut String, name: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(&json_string(name));
    out.push(':');
    out.push_str(value);
}

pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
