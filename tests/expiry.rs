//! Expiry watch: `hsm-signer check` in the monitoring-plugin convention (0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN; summary line first, perfdata after `|`), the daemon's health
//! turning to "warning" for a certificate that expires in 10 days, and an expired
//! certificate refused for signing unless its key allows it.

use crate::common;
use std::process::Command;

use base64::Engine;
use common::daemon::{Daemon, KeySetup};
use common::fixtures::{import_cmd, secret_file, write_p12, Ca, KeySpec, Leaf};
use common::*;
use openssl::asn1::Asn1Time;

fn import_expiring(token: &TestToken, label: &str, not_after: Asn1Time) -> Result<Leaf> {
    let ca = Ca::sigillum()?;
    let key = KeySpec::Rsa(2048).generate()?;
    let leaf = Leaf {
        cert: ca.issue_until(&key, "gsko.przykladowo.pl", not_after)?,
        key,
    };
    let password = secret_file(token.dir.path(), "pw", "hasło")?;
    let p12 = token.path(&format!("{label}.p12"));
    write_p12(&p12, &leaf, &ca, label, "hasło")?;
    run_ok(&mut import_cmd(token, &p12, &password))?;
    Ok(leaf)
}

/// `check` takes no PIN: it reads public certificate objects only, so it cannot spend
/// PIN tries from cron.
fn check(token: &TestToken, args: &[&str]) -> Result<(i32, Vec<String>)> {
    let out = token
        .hsm_signer()
        .args(["check", "--module", MODULE, "--token", &token.label])
        .args(args)
        .output()?;
    let lines = String::from_utf8(out.stdout)?
        .lines()
        .map(String::from)
        .collect();
    Ok((out.status.code().ok_or("killed")?, lines))
}

#[test]
fn check_exit_codes_follow_the_monitoring_plugin_convention() -> Result {
    let token = TestToken::new()?;
    import_expiring(&token, "soon", Asn1Time::days_from_now(10)?)?;
    let (code, lines) = check(&token, &["--warn-days", "30", "--crit-days", "7"])?;
    assert_eq!(code, 1, "{lines:?}");
    assert!(
        lines[0].starts_with("WARNING - soon: 9 days left")
            || lines[0].starts_with("WARNING - soon: 10 days left"),
        "{lines:?}"
    );
    let perfdata = lines[0].split_once(" | ").ok_or("no perfdata")?.1;
    assert!(
        perfdata.contains("'days_left_soon'=9;30;7")
            || perfdata.contains("'days_left_soon'=10;30;7"),
        "perfdata: {lines:?}"
    );
    let (code, lines) = check(&token, &["--warn-days", "60", "--crit-days", "30"])?;
    assert_eq!(code, 2, "{lines:?}");
    assert!(lines[0].starts_with("CRITICAL - "), "{lines:?}");
    let (code, lines) = check(&token, &["--warn-days", "5", "--crit-days", "2"])?;
    assert_eq!(code, 0, "{lines:?}");
    assert!(lines[0].starts_with("OK - "), "{lines:?}");
    let (code, lines) = check(&token, &["--label", "absent"])?;
    assert_eq!(code, 3, "{lines:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_hsm-signer"))
        .env("SOFTHSM2_CONF", &token.conf)
        .args(["check", "--module", MODULE, "--token", "no-such-token"])
        .output()?;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8(out.stdout)?.starts_with("UNKNOWN - no token matches"));
    Ok(())
}

/// The signature in `answer` is RS256 over b"x" by `leaf`'s key.
fn assert_signs(leaf: &Leaf, answer: &serde_json::Value) -> Result {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(answer["signature"].as_str().ok_or("no signature")?)?;
    let public = leaf.cert.public_key()?;
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public)?;
    assert!(
        verifier.verify_oneshot(&signature, b"x")?,
        "signature does not verify: {answer}"
    );
    Ok(())
}

#[test]
fn health_warns_ten_days_before_expiry_and_expired_keys_do_not_sign() -> Result {
    let token = TestToken::new()?;
    let soon = import_expiring(&token, "soon", Asn1Time::days_from_now(10)?)?;
    let past = import_expiring(&token, "expired", Asn1Time::from_unix(1_700_000_000)?)?;
    let allowed = import_expiring(&token, "expired-ok", Asn1Time::from_unix(1_700_000_000)?)?;
    let keys = [
        KeySetup::rs256("soon", "soon"),
        KeySetup::rs256("expired", "expired"),
        KeySetup {
            name: "expired-ok",
            label: "expired-ok",
            spec: KeySpec::Rsa(2048),
            algorithms: &["RS256"],
            extra: "allow_expired = true",
        },
    ];
    let daemon = Daemon::start(&token, &keys, "")?;
    let body = serde_json::json!({"algorithm": "RS256", "data": base64::engine::general_purpose::STANDARD.encode(b"x")}).to_string();
    let (status, answer) = daemon.json("POST", "/v1/keys/expired/sign", Some(&body))?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("certificate_expired")),
        "{answer}"
    );
    let (status, answer) = daemon.json("POST", "/v1/keys/expired-ok/sign", Some(&body))?;
    assert_eq!(status, 200, "allow_expired key: {answer}");
    assert_signs(&allowed, &answer)?;
    let (status, answer) = daemon.json("POST", "/v1/keys/soon/sign", Some(&body))?;
    assert_eq!(status, 200, "{answer}");
    assert_signs(&soon, &answer)?;
    assert_eq!(
        answer["certificate_sha256"].as_str(),
        Some(hex::encode(soon.cert.digest(openssl::hash::MessageDigest::sha256())?).as_str())
    );
    // With the expired key configured, health is unavailable; the reasons name both keys.
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 503, "{health}");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("\\\"expired\\\": certificate expired"),
        "{reasons}"
    );
    assert!(
        reasons.contains("\\\"soon\\\": certificate expires in"),
        "{reasons}"
    );
    drop(past);
    let (_, metrics) = daemon.curl("GET", "/metrics", None)?;
    assert!(
        metrics.contains("hsm_signer_certificate_days_left{key=\"soon\"} 9")
            || metrics.contains("hsm_signer_certificate_days_left{key=\"soon\"} 10"),
        "{metrics}"
    );
    daemon.stop()?;

    // Only the soon-expiring key: health is 200 with status "warning".
    let keys = [KeySetup::rs256("soon", "soon")];
    let daemon = Daemon::start(&token, &keys, "")?;
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("warning")),
        "{health}"
    );
    assert_eq!(health["keys"][0]["signs"], true);
    daemon.stop()?;
    Ok(())
}
