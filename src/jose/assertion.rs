//! The RFC 7523 client assertion (§2.2, §3): a JWT whose `iss` and `sub` are the client,
//! `aud` the token endpoint, short-lived, with a random `jti`, signed as any JWS is.

use time::{Duration, OffsetDateTime};

use super::error::{JoseError, SignFailure};
use super::json;
use super::jws::{json_string, push_member};
use super::types::{AssertionRequest, ClientAssertion, Payload};

/// The claims the daemon sets; `claims` may add others, never these.
pub const SET_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"];

pub(crate) fn build<F, E>(
    req: &AssertionRequest<'_>,
    cert_der: &[u8],
    chain: &[Vec<u8>],
    sign: F,
) -> Result<ClientAssertion, SignFailure<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let (lifetime, extra) = checked(req)?;

    let jti = jti()?;
    let issued_at = req.now.unix_timestamp();
    let expires_at = req.now + Duration::seconds(lifetime.into());
    let mut claims = String::from("{");
    push_member(&mut claims, "iss", &json_string(req.client_id));
    push_member(&mut claims, "sub", &json_string(req.client_id));
    push_member(&mut claims, "aud", &json_string(req.audience));
    push_member(&mut claims, "iat", &issued_at.to_string());
    push_member(&mut claims, "nbf", &issued_at.to_string());
    push_member(&mut claims, "exp", &expires_at.unix_timestamp().to_string());
    push_member(&mut claims, "jti", &json_string(&jti));
    for (name, value) in &extra {
        push_member(&mut claims, name, value.get());
    }
    claims.push('}');

    let jws = super::jws::sign(Payload::Json(&claims), &req.jws, cert_der, chain, sign)?;
    Ok(ClientAssertion {
        jws,
        jti,
        issued_at: truncate(req.now),
        expires_at: truncate(expires_at),
    })
}

/// What [`build`] refuses in the caller's input, checked without a certificate: the
/// client, the audience, the lifetime, the claims, then the header (as
/// [`super::jws::check`]). The HTTP handler calls it before the algorithm and the key.
pub(crate) fn check(req: &AssertionRequest<'_>) -> Result<(), JoseError> {
    checked(req)?;
    super::jws::check(Payload::Json("{}"), &req.jws)
}

/// The lifetime and the extra claims, once the caller's fields are checked.
fn checked(req: &AssertionRequest<'_>) -> Result<(u32, Vec<json::Member>), JoseError> {
    if req.client_id.is_empty() {
        return Err(JoseError::MissingField("client_id"));
    }
    if req.audience.is_empty() {
        return Err(JoseError::MissingField("audience"));
    }
    let lifetime = req
        .lifetime_seconds
        .unwrap_or(super::limits::DEFAULT_LIFETIME_SECONDS);
    if lifetime == 0 {
        return Err(JoseError::LifetimeZero);
    }
    if lifetime > super::limits::MAX_LIFETIME_SECONDS {
        return Err(JoseError::LifetimeTooLong(lifetime));
    }
    let extra = match req.claims {
        Some(text) => json::object("claims", text)?,
        None => Vec::new(),
    };
    if let Some((name, _)) = extra.iter().find(|(n, _)| SET_CLAIMS.contains(&n.as_str())) {
        return Err(JoseError::ClaimsOverride(JoseError::name(name)));
    }
    Ok((lifetime, extra))
}

/// 128 random bits from OpenSSL's CSPRNG, as 32 lowercase hex digits.
fn jti() -> Result<String, JoseError> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).map_err(JoseError::internal)?;
    Ok(hex::encode(bytes))
}

/// Whole seconds, as the JWT carries them.
fn truncate(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}
