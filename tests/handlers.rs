//! The HTTP handlers without a socket: `app(state)` with the null signer behind it, driven
//! with tower's `oneshot`. Statuses, JSON error shapes, policy refusals, the body limit,
//! the token's state, and the audit record, with the signatures checked against the
//! certificates the router itself serves.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use hsm_signer::audit::{AuditLog, OnFailure};
use hsm_signer::server::metrics::Metrics;
use hsm_signer::server::peer::Peer;
use hsm_signer::server::{app, AppState};
use hsm_signer::signer::null::NullSigner;
use hsm_signer::signer::Status;
use http_body_util::BodyExt;
use tempfile::TempDir;
use testresult::TestResult;
use tower::ServiceExt;

/// A router over a null signer with keys `ec` (ES256), `rsa` (RS256, allowed to uid
/// 4242 only besides the daemon's own) and `old` (ES256, certificate expired), an audit
/// log in `dir`, and an 8 KiB body limit.
struct Harness {
    dir: TempDir,
    state: Arc<AppState>,
    signer: Arc<NullSigner>,
}

fn harness() -> Result<Harness, Box<dyn std::error::Error>> {
    let dir = TempDir::new()?;
    let uid = nix::unistd::geteuid().as_raw();
    let config = format!(
        r#"
[token]
module = "/nonexistent/null.so"
token = "null"
pin_file = "/nonexistent/pin"
[server]
socket = "{socket}"
socket_mode = "0600"
max_body_bytes = 8192
[audit]
file = "{audit}"
[[keys]]
name = "ec"
label = "null-ec"
algorithms = ["ES256"]
[[keys]]
name = "rsa"
label = "null-rsa"
algorithms = ["RS256"]
allowed_uids = [{uid}]
[[keys]]
name = "old"
label = "null-old"
algorithms = ["ES256"]
"#,
        socket = dir.path().join("s.sock").display(),
        audit = dir.path().join("audit.jsonl").display(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config)?;
    let config = hsm_signer::config::load(&path)?;
    let signer = Arc::new(
        NullSigner::new()
            .with_ec("null-ec")?
            .with_rsa("null-rsa")?
            .with_expired_ec("null-old")?,
    );
    let (audit, _sync) = AuditLog::open(&dir.path().join("audit.jsonl"), OnFailure::Refuse)?;
    let state = Arc::new(AppState::new(
        signer.clone(),
        Some(audit),
        Metrics::default(),
        &config,
    ));
    Ok(Harness { dir, state, signer })
}

fn me() -> Peer {
    Peer::local(
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// Sends one request as `peer` and returns the status, Retry-After and JSON body.
async fn send(
    h: &Harness,
    peer: Peer,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
) -> Result<(StatusCode, Option<String>, serde_json::Value), Box<dyn std::error::Error>> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())?;
    request.extensions_mut().insert(peer);
    let response = app(h.state.clone()).oneshot(request).await?;
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let bytes = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok((status, retry, json))
}

fn sign_body(algorithm: &str, data: &[u8]) -> String {
    serde_json::json!({
        "algorithm": algorithm,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
    })
    .to_string()
}

fn error_code(json: &serde_json::Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error.code>")
}

fn audit_lines(h: &Harness) -> Vec<serde_json::Value> {
    std::fs::read_to_string(h.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_verifies_against_the_served_certificate_and_is_audited() -> TestResult {
    let h = harness()?;
    let data = b"<ds:SignedInfo>the bytes to sign</ds:SignedInfo>";
    for (key, alg) in [("ec", "ES256"), ("rsa", "RS256")] {
        let (status, _, json) = send(
            &h,
            me(),
            "POST",
            &format!("/v1/keys/{key}/sign"),
            sign_body(alg, data),
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{json}");
        let signature = base64::engine::general_purpose::STANDARD
            .decode(json["signature"].as_str().unwrap_or_default())?;
        let (status, _, cert) = send(
            &h,
            me(),
            "GET",
            &format!("/v1/keys/{key}/certificate?format=base64"),
            Body::empty(),
        )
        .await?;
        assert_eq!(status, StatusCode::OK);
        let der = base64::engine::general_purpose::STANDARD
            .decode(cert.as_str().unwrap_or_default().trim())?;
        let cert = openssl::x509::X509::from_der(&der)?;
        assert_eq!(
            json["certificate_sha256"].as_str(),
            Some(hex::encode(openssl::sha::sha256(&der)).as_str())
        );
        let algorithm = hsm_signer::algorithm::Algorithm::parse(alg).ok_or("algorithm")?;
        let digest = algorithm.hash().digest(data);
        let public = cert.public_key()?;
        assert!(hsm_signer::algorithm::verify_digest(
            &public, algorithm, &digest, &signature
        )?);
        // The same signature must not verify over other bytes.
        let other = algorithm.hash().digest(b"other bytes");
        assert!(!hsm_signer::algorithm::verify_digest(
            &public, algorithm, &other, &signature
        )?);
    }
    let lines = audit_lines(&h);
    assert_eq!(lines.len(), 2, "one record per signature: {lines:?}");
    let input = hex::encode(openssl::sha::sha256(data));
    for (line, key) in lines.iter().zip(["ec", "rsa"]) {
        assert_eq!(line["op"], "sign");
        assert_eq!(line["key"], key);
        assert_eq!(line["outcome"], "ok");
        assert_eq!(line["status"], 200);
        assert_eq!(line["input_sha256"].as_str(), Some(input.as_str()));
    }
    Ok(())
}

#[tokio::test]
async fn errors_have_their_status_and_a_stable_code() -> TestResult {
    let h = harness()?;
    let data = b"x";
    let cases: Vec<(String, String, StatusCode, &str)> = vec![
        (
            "/v1/keys/nope/sign".into(),
            sign_body("ES256", data),
            StatusCode::NOT_FOUND,
            "unknown_key",
        ),
        (
            "/v1/keys/ec/sign".into(),
            sign_body("RS256", data),
            StatusCode::UNPROCESSABLE_ENTITY,
            "algorithm_not_allowed",
        ),
        (
            "/v1/keys/ec/sign".into(),
            sign_body("HS256", data),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_algorithm",
        ),
        (
            "/v1/keys/old/sign".into(),
            sign_body("ES256", data),
            StatusCode::UNPROCESSABLE_ENTITY,
            "certificate_expired",
        ),
        (
            "/v1/keys/ec/sign".into(),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/keys/ec/sign".into(),
            r#"{"algorithm":"ES256"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/keys/ec/sign".into(),
            r#"{"algorithm":"ES256","digest":"AAAA"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_digest_length",
        ),
        (
            "/v1/keys/ec/sign".into(),
            r#"{"algorithm":"ES256","data":"%%%"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/keys/ec/saml/decrypt".into(),
            r#"{"xml":"<a/>"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_purpose",
        ),
    ];
    for (uri, body, want_status, want_code) in cases {
        let (status, _, json) = send(&h, me(), "POST", &uri, body.clone()).await?;
        assert_eq!(
            (status, error_code(&json)),
            (want_status, want_code),
            "{uri} {body}: {json}"
        );
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "a message that helps: {json}");
    }
    // Refused requests that named a key are audited too, with their outcome.
    let outcomes: Vec<String> = audit_lines(&h)
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        outcomes.contains(&"certificate_expired".to_string()),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o != "ok"), "{outcomes:?}");
    Ok(())
}

#[tokio::test]
async fn a_peer_no_rule_admits_is_refused_before_the_body_is_read() -> TestResult {
    let h = harness()?;
    let stranger = Peer::local(4242, 4242);
    let (status, _, json) = send(
        &h,
        stranger,
        "POST",
        "/v1/keys/ec/sign",
        sign_body("ES256", b"x"),
    )
    .await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{json}"
    );
    let (status, _, json) = send(
        &h,
        Peer::local(4242, 4242),
        "GET",
        "/v1/keys",
        Body::empty(),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    Ok(())
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() -> TestResult {
    let h = harness()?;
    let big = sign_body("ES256", &vec![b'a'; 8192]);
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/sign", big).await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{json}"
    );
    // Just under the limit still signs.
    let small = sign_body("ES256", &vec![b'a'; 4096]);
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/sign", small).await?;
    assert_eq!(status, StatusCode::OK, "{json}");
    Ok(())
}

#[tokio::test]
async fn a_token_that_is_down_or_refused_the_pin_gets_503_with_retry_after() -> TestResult {
    let h = harness()?;
    h.signer.set_status(Status::Down {
        reason: "CKR_DEVICE_ERROR".into(),
        since: None,
    });
    let (status, retry, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/ec/sign",
        sign_body("ES256", b"x"),
    )
    .await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable"),
        "{json}"
    );
    assert!(
        retry.is_some_and(|r| r.parse::<u32>().is_ok()),
        "Retry-After in seconds"
    );
    h.signer.set_status(Status::PinProblem {
        reason: "CKR_PIN_INCORRECT".into(),
    });
    let (status, _, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/ec/sign",
        sign_body("ES256", b"x"),
    )
    .await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::SERVICE_UNAVAILABLE, "pin_refused"),
        "{json}"
    );
    assert!(!json.to_string().contains("1234"), "no PIN in answers");
    h.signer.set_status(Status::Up);
    let (status, _, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/ec/sign",
        sign_body("ES256", b"x"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{json}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_sign_through_the_router_names_the_certificate_and_signs_the_reference() -> TestResult
{
    let h = harness()?;
    let xml = hsm_signer::bench::sample_authn_request();
    let body = serde_json::json!({ "xml": xml }).to_string();
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/saml/sign", body).await?;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json["reference_uri"],
        "#ID-6a7c8f2e-54e1-4d59-bb7a-1b3e36a0c111"
    );
    let signed = json["xml"].as_str().unwrap_or_default();
    assert!(signed.contains("SignatureValue>"), "{signed}");
    assert_eq!(json["algorithm"], "ES256");
    let lines = audit_lines(&h);
    assert_eq!(lines.last().map(|l| l["op"].clone()), Some("saml".into()));
    assert_eq!(
        lines.last().map(|l| l["outcome"].clone()),
        Some("ok".into())
    );
    Ok(())
}

/// The one order of checks (docs/api.md, "Order of checks"): with two faults in one
/// request, every endpoint reports the earlier step's. Peer, key name, purpose, body,
/// algorithm, token, key details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_reports_the_earliest_fault_in_one_order() -> TestResult {
    let h = harness()?;
    let stranger = Peer::local(4242 + 1, 4242 + 1);
    let envelope = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>x</s:Body></s:Envelope>"#;
    let saml = hsm_signer::bench::sample_authn_request();
    let wss = |envelope: &str, algorithm: &str| {
        serde_json::json!({ "envelope": envelope, "algorithm": algorithm }).to_string()
    };
    let saml_body = |xml: &str| serde_json::json!({ "xml": xml }).to_string();
    let digest = |algorithm: &str, len: usize| {
        serde_json::json!({
            "algorithm": algorithm,
            "digest": base64::engine::general_purpose::STANDARD.encode(vec![7u8; len]),
        })
        .to_string()
    };
    // 1 before 2: a peer no rule admits, asking for an unknown key.
    let (status, _, json) = send(&h, stranger, "POST", "/v1/keys/nope/sign", "{").await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{json}"
    );
    // 2 before 4: an unknown key with a malformed body.
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/nope/wss/sign", "{").await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::NOT_FOUND, "unknown_key"),
        "{json}"
    );
    // 3 before 4: a sign key asked to decrypt, with a malformed body.
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/saml/decrypt", "{").await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::UNPROCESSABLE_ENTITY, "wrong_purpose"),
        "{json}"
    );
    // 4 before 5: a digest of the wrong length for an algorithm the key does not allow.
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/sign", digest("RS256", 5)).await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_digest_length"),
        "{json}"
    );
    // 4 before 5: bad base64 with an unknown algorithm.
    let body = r#"{"algorithm":"XX999","data":"***"}"#;
    let (status, _, json) = send(&h, me(), "POST", "/v1/keys/ec/sign", body).await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{json}"
    );
    h.signer.set_status(Status::Down {
        reason: "CKR_DEVICE_ERROR".into(),
        since: None,
    });
    // 4 before 5 and 6: a malformed envelope, an unknown algorithm, the token down.
    let (status, _, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/ec/wss/sign",
        wss("<s:Envelope", "XX999"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    // 5 before 6, on every signing endpoint: an unknown algorithm, the token down.
    for (uri, body) in [
        ("/v1/keys/ec/sign", sign_body("XX999", b"x")),
        ("/v1/keys/ec/wss/sign", wss(envelope, "XX999")),
    ] {
        let (status, _, json) = send(&h, me(), "POST", uri, body).await?;
        assert_eq!(
            (status, error_code(&json)),
            (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_algorithm"),
            "{uri}: {json}"
        );
    }
    // 6 before 7: the expired key while the token is down.
    let (status, _, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/old/sign",
        sign_body("ES256", b"x"),
    )
    .await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable"),
        "{json}"
    );
    h.signer.set_status(Status::Up);
    // 4 before 7: a malformed document for the expired key; then a good one gets 7.
    let (status, _, json) = send(
        &h,
        me(),
        "POST",
        "/v1/keys/old/saml/sign",
        saml_body("<a><b></a>"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (status, _, json) =
        send(&h, me(), "POST", "/v1/keys/old/saml/sign", saml_body(&saml)).await?;
    assert_eq!(
        (status, error_code(&json)),
        (StatusCode::UNPROCESSABLE_ENTITY, "certificate_expired"),
        "{json}"
    );
    // Every refusal above that named a key is in the audit log, the extractor's too.
    let ops: Vec<String> = audit_lines(&h)
        .iter()
        .map(|l| l["op"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ops.contains(&"decrypt".to_owned()), "{ops:?}");
    assert_eq!(ops.len(), 11, "{ops:?}");
    Ok(())
}
