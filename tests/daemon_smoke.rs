//! The daemon starts on a test token, signs RS256 over the socket, and the signature
//! verifies with the openssl CLI against the certificate.

use crate::common;
use crate::common::daemon::EPUAP;
use base64::Engine;
use common::daemon::{openssl_verify, provision, Daemon};
use common::*;

#[test]
fn rs256_through_the_socket_verifies_with_openssl() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let data = b"<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"></ds:SignedInfo>";
    let body = serde_json::json!({"algorithm": "RS256", "data": base64::engine::general_purpose::STANDARD.encode(data)});
    let (status, answer) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body.to_string()))?;
    assert_eq!(status, 200, "{answer}");
    let signature = base64::engine::general_purpose::STANDARD
        .decode(answer["signature"].as_str().ok_or("no signature")?)?;
    assert_eq!(signature.len(), 256);
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        data,
        &signature,
        &["-sha256"]
    )?);
    assert!(daemon.stop()?.success());
    Ok(())
}
