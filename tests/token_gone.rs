//! Token gone and back: the SoftHSM token's directory is moved away under a running
//! daemon, then put back. While it is gone, requests fail fast with 503 and health says
//! why; once it is back, signing resumes by itself (the supervisor reconnects, which is
//! what makes SoftHSM read the directory again), and every signature verifies.

use crate::common;
use crate::common::daemon::EPUAP;
use std::time::{Duration, Instant};

use base64::Engine;
use common::daemon::{provision, Daemon};
use common::*;

#[test]
fn requests_fail_fast_while_the_token_is_gone_and_signing_resumes_when_it_is_back() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let public = leaves[0].cert.public_key()?;
    let sign = |n: u32| -> Result<(u16, Duration)> {
        let data = format!("<SignedInfo n=\"{n}\"/>");
        let body = serde_json::json!({"algorithm": "RS256", "data": base64::engine::general_purpose::STANDARD.encode(&data)});
        let started = Instant::now();
        let (status, answer) =
            daemon.json("POST", "/v1/keys/epuap/sign", Some(&body.to_string()))?;
        let took = started.elapsed();
        if status == 200 {
            let signature = base64::engine::general_purpose::STANDARD
                .decode(answer["signature"].as_str().ok_or("no signature")?)?;
            let mut verifier =
                openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public)?;
            assert!(
                verifier.verify_oneshot(&signature, data.as_bytes())?,
                "wrong signature for request {n}"
            );
        } else {
            assert_eq!(
                (status, answer["error"]["code"].as_str()),
                (503, Some("token_unavailable")),
                "{answer}"
            );
        }
        Ok((status, took))
    };
    assert_eq!(sign(0)?.0, 200);

    let dir = token.token_dir()?;
    let aside = token.path("token-moved-away");
    std::fs::rename(&dir, &aside)?;
    let mut failed = 0;
    for n in 1..=5 {
        let (status, took) = sign(n)?;
        assert_eq!(status, 503, "request {n} while the token is gone");
        assert!(
            took < Duration::from_secs(2),
            "request {n} took {took:?} instead of failing fast"
        );
        failed += 1;
    }
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["reasons"].to_string().contains("token unavailable"),
        "{health}"
    );

    std::fs::rename(&aside, &dir)?;
    let back = Instant::now();
    let mut n = 100;
    loop {
        n += 1;
        if sign(n)?.0 == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "signing did not resume within 5 s: {}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("token gone: {failed} requests failed fast with 503; signing resumed {:?} after the token was back", back.elapsed());
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    daemon.stop()?;
    Ok(())
}
