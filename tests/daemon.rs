//! End-to-end tests of `hsm-signer serve` (issue 3) on real SoftHSM2, one token and one
//! daemon per test: every algorithm through the socket, checked with `openssl dgst`
//! against the imported certificate; the key, certificate, health and metrics endpoints;
//! bad requests with their status and code while the daemon keeps serving; the
//! `hsm-signer sign` client; many clients at once; slow and idle clients.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::daemon::{
    openssl_verify, parse_http, provision, provision_with_ca, raw_http, raw_post, raw_to_der,
    sign_body, signature_of, wait_for_lines, Daemon, KeySetup,
};
use common::fixtures::{KeySpec, Leaf};
use common::*;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use serde_json::{json, Value};

use crate::common::daemon::EPUAP_EVERY_RSA as EPUAP;

use crate::common::daemon::WK;

const P384: KeySetup = KeySetup {
    name: "p384",
    label: "gsko-p384",
    spec: KeySpec::P384,
    algorithms: &["ES384"],
    extra: "",
};

/// SignedInfo-like bytes, as GSKO sends them.
const SIGNED_INFO: &[u8] = b"<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:SignedInfo>";

/// The hash an algorithm name uses: its name for `openssl dgst`, and the digest.
fn hash_of(alg: &str) -> (&'static str, MessageDigest) {
    if alg.ends_with('1') {
        ("sha1", MessageDigest::sha1())
    } else if alg.ends_with("256") {
        ("sha256", MessageDigest::sha256())
    } else if alg.ends_with("384") {
        ("sha384", MessageDigest::sha384())
    } else {
        ("sha512", MessageDigest::sha512())
    }
}

/// `openssl dgst` options for `alg`: the hash, and for PSS the padding, a salt as long
/// as the hash and MGF1 with the same hash.
fn dgst_args(alg: &str) -> Vec<String> {
    let (name, md) = hash_of(alg);
    let mut args = vec![format!("-{name}")];
    if alg.starts_with("PS") {
        for opt in [
            "rsa_padding_mode:pss".to_string(),
            format!("rsa_pss_saltlen:{}", md.size()),
            format!("rsa_mgf1_md:{name}"),
        ] {
            args.push("-sigopt".into());
            args.push(opt);
        }
    }
    args
}

fn digest(alg: &str, data: &[u8]) -> Result<Vec<u8>> {
    Ok(openssl::hash::hash(hash_of(alg).1, data)?.to_vec())
}

/// `openssl dgst -verify` of `signature` over `data` with `leaf`'s certificate.
fn cli_verifies(
    token: &TestToken,
    leaf: &Leaf,
    alg: &str,
    data: &[u8],
    sig: &[u8],
) -> Result<bool> {
    let args = dgst_args(alg);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl_verify(token.dir.path(), &leaf.cert, data, sig, &args)
}

fn post_sign(daemon: &Daemon, key: &str, body: &str) -> Result<(u16, Value)> {
    daemon.json("POST", &format!("/v1/keys/{key}/sign"), Some(body))
}

/// Signs `data` (or its digest) with `key`/`alg`, checks the answer's fields, and returns
/// the signature.
fn sign_ok(daemon: &Daemon, key: &str, alg: &str, field: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let (status, answer) = post_sign(daemon, key, &sign_body(alg, field, bytes))?;
    assert_eq!(status, 200, "{key} {alg} {field}: {answer}");
    assert_eq!(answer["key"], key);
    signature_of(&answer)
}

#[test]
fn every_algorithm_signs_data_and_digests_that_openssl_verifies() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK, P384];
    let leaves = provision(&token, &keys)?;
    // A second name on the RSA key, the only one that allows SHA-1.
    let config = token.path("config.toml");
    let text = Daemon::config_text(&token, &keys, "")
        + "\n[[keys]]\nname = \"legacy\"\nlabel = \"gsko-epuap\"\nalgorithms = [\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"]\n";
    std::fs::write(&config, text)?;
    let daemon = Daemon::start_with(&token, config)?;
    let cases: [(&str, &str, usize, &Leaf); 9] = [
        ("epuap", "RS256", 256, &leaves[0]),
        ("epuap", "RS384", 256, &leaves[0]),
        ("epuap", "RS512", 256, &leaves[0]),
        ("epuap", "PS256", 256, &leaves[0]),
        ("epuap", "PS384", 256, &leaves[0]),
        ("epuap", "PS512", 256, &leaves[0]),
        ("legacy", "RS1", 256, &leaves[0]),
        ("wk", "ES256", 64, &leaves[1]),
        ("p384", "ES384", 96, &leaves[2]),
    ];
    for (key, alg, len, leaf) in cases {
        let from_data = sign_ok(&daemon, key, alg, "data", SIGNED_INFO)?;
        let from_digest = sign_ok(&daemon, key, alg, "digest", &digest(alg, SIGNED_INFO)?)?;
        for sig in [&from_data, &from_digest] {
            assert_eq!(sig.len(), len, "{key} {alg}");
            let checked = if alg.starts_with("ES") {
                raw_to_der(sig)?
            } else {
                sig.clone()
            };
            assert!(
                cli_verifies(&token, leaf, alg, SIGNED_INFO, &checked)?,
                "{key} {alg}: openssl dgst rejects the signature"
            );
        }
        if alg.starts_with("RS") {
            // PKCS#1 v1.5 is deterministic: hashing here or in the daemon is the same.
            assert_eq!(from_data, from_digest, "{alg}");
        }
    }
    // The check can fail: the same signature over other bytes does not verify.
    let sig = sign_ok(&daemon, "epuap", "RS256", "data", SIGNED_INFO)?;
    assert!(!cli_verifies(
        &token,
        &leaves[0],
        "RS256",
        b"other bytes",
        &sig
    )?);
    Ok(())
}

#[test]
fn xmldsig_uris_name_algorithms_and_der_is_offered_for_ecdsa() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK, P384];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let uris = [
        (
            "epuap",
            "RS256",
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            &leaves[0],
        ),
        (
            "epuap",
            "RS512",
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            &leaves[0],
        ),
        (
            "epuap",
            "PS256",
            "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1",
            &leaves[0],
        ),
        (
            "wk",
            "ES256",
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            &leaves[1],
        ),
        (
            "p384",
            "ES384",
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
            &leaves[2],
        ),
    ];
    for (key, alg, uri, leaf) in uris {
        let (status, answer) = post_sign(&daemon, key, &sign_body(uri, "data", SIGNED_INFO))?;
        assert_eq!(status, 200, "{uri}: {answer}");
        assert_eq!(answer["algorithm"], alg);
        assert_eq!(answer["algorithm_uri"], uri);
        assert_eq!(answer["format"], "raw");
        assert_eq!(answer["certificate_sha256"], leaf.sha256_hex()?);
        let sig = signature_of(&answer)?;
        let sig = if alg.starts_with("ES") {
            raw_to_der(&sig)?
        } else {
            sig
        };
        assert!(cli_verifies(&token, leaf, alg, SIGNED_INFO, &sig)?, "{uri}");
    }
    for (key, alg, leaf) in [("wk", "ES256", &leaves[1]), ("p384", "ES384", &leaves[2])] {
        let mut body: Value = serde_json::from_str(&sign_body(alg, "data", SIGNED_INFO))?;
        body["format"] = "der".into();
        let (status, answer) = post_sign(&daemon, key, &body.to_string())?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["format"], "der");
        let der = signature_of(&answer)?;
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        EcdsaSig::from_der(&der)?;
        assert!(
            cli_verifies(&token, leaf, alg, SIGNED_INFO, &der)?,
            "{alg} der"
        );
    }
    // SHA-1 only where configured: here nowhere, by name or by URI.
    for rs1 in ["RS1", "http://www.w3.org/2000/09/xmldsig#rsa-sha1"] {
        let (status, answer) = post_sign(&daemon, "epuap", &sign_body(rs1, "data", SIGNED_INFO))?;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["code"], "algorithm_not_allowed");
        assert!(answer.get("signature").is_none());
    }
    // An algorithm of the wrong family for the key is refused the same way.
    let (status, answer) = post_sign(&daemon, "wk", &sign_body("RS256", "data", SIGNED_INFO))?;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("algorithm_not_allowed"))
    );
    Ok(())
}

#[test]
fn the_sign_client_writes_signatures_that_openssl_verifies() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let data = token.path("signed-info.xml");
    std::fs::write(&data, SIGNED_INFO)?;
    let client = |args: &[&str]| {
        let mut cmd = token.hsm_signer();
        cmd.arg("sign")
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args);
        cmd
    };
    let path = |name: &str| token.path(name).display().to_string();

    // --in / --out, binary.
    run_ok(&mut client(&[
        "--key",
        "epuap",
        "--algorithm",
        "RS256",
        "--in",
        &path("signed-info.xml"),
        "--out",
        &path("rs.sig"),
    ]))?;
    let sig = std::fs::read(token.path("rs.sig"))?;
    assert_eq!(sig.len(), 256);
    assert!(cli_verifies(
        &token,
        &leaves[0],
        "RS256",
        SIGNED_INFO,
        &sig
    )?);

    // --digest: the file holds the SHA-256, the signature is over the data.
    std::fs::write(token.path("digest.bin"), digest("PS256", SIGNED_INFO)?)?;
    run_ok(&mut client(&[
        "--key",
        "epuap",
        "--algorithm",
        "PS256",
        "--digest",
        "--in",
        &path("digest.bin"),
        "--out",
        &path("ps.sig"),
    ]))?;
    let sig = std::fs::read(token.path("ps.sig"))?;
    assert!(cli_verifies(
        &token,
        &leaves[0],
        "PS256",
        SIGNED_INFO,
        &sig
    )?);

    // --base64 to standard output.
    let out = run_ok(&mut client(&[
        "--key",
        "wk",
        "--algorithm",
        "ES256",
        "--base64",
        "--in",
        &path("signed-info.xml"),
    ]))?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.ends_with('\n'));
    let raw = B64.decode(text.trim_end())?;
    assert_eq!(raw.len(), 64);
    assert!(cli_verifies(
        &token,
        &leaves[1],
        "ES256",
        SIGNED_INFO,
        &raw_to_der(&raw)?
    )?);

    // --format der, input from standard input.
    let mut cmd = client(&[
        "--key",
        "wk",
        "--algorithm",
        "ES256",
        "--format",
        "der",
        "--out",
        &path("es.der"),
    ]);
    cmd.stdin(std::fs::File::open(&data)?);
    run_ok(&mut cmd)?;
    let der = std::fs::read(token.path("es.der"))?;
    assert!(cli_verifies(
        &token,
        &leaves[1],
        "ES256",
        SIGNED_INFO,
        &der
    )?);

    // A refusal is an error exit that names the daemon's code, and writes no output.
    let err = run_fails(&mut client(&[
        "--key",
        "nope",
        "--algorithm",
        "RS256",
        "--in",
        &path("signed-info.xml"),
        "--out",
        &path("none.sig"),
    ]))?;
    assert!(err.contains("404") && err.contains("unknown_key"), "{err}");
    assert!(!token.path("none.sig").exists());
    Ok(())
}

#[test]
fn key_and_certificate_endpoints_describe_what_was_imported() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let (ca, leaves) = provision_with_ca(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;

    let (status, list) = daemon.json("GET", "/v1/keys", None)?;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["keys"]
        .as_array()
        .ok_or("no keys array")?
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["epuap", "wk"]);

    let (status, rsa) = daemon.json("GET", "/v1/keys/epuap", None)?;
    assert_eq!(status, 200, "{rsa}");
    assert_eq!(rsa["label"], "gsko-epuap");
    assert_eq!(rsa["available"], true);
    assert_eq!(rsa["key"], json!({"type": "RSA", "bits": 2048}));
    assert_eq!(rsa["algorithms"], json!(EPUAP.algorithms));
    assert_eq!(
        rsa["algorithm_uris"][0],
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    );
    let cert = &rsa["certificate"];
    assert_eq!(
        cert["subject"],
        "CN=gsko.przykladowo.pl, O=Gmina Przykładowo, C=PL"
    );
    assert_eq!(
        cert["issuer"],
        "CN=Sigillum Test CA, O=Polska Wytwórnia Papierów Wartościowych S.A., C=PL"
    );
    assert_eq!(cert["serial"], leaves[0].serial_hex()?);
    assert_eq!(cert["sha256"], leaves[0].sha256_hex()?);
    let days = cert["days_left"].as_i64().ok_or("no days_left")?;
    assert!((729..=730).contains(&days), "issued for 730 days: {days}");
    assert_eq!(rsa["chain_length"], 1);

    let (status, ec) = daemon.json("GET", "/v1/keys/wk", None)?;
    assert_eq!(status, 200, "{ec}");
    assert_eq!(ec["key"], json!({"type": "EC", "curve": "P-256"}));
    assert_eq!(ec["algorithms"], json!(["ES256"]));
    assert_eq!(ec["certificate"]["serial"], leaves[1].serial_hex()?);

    let get = |query: &str| {
        daemon.curl_with(
            &[],
            "GET",
            &format!("/v1/keys/epuap/certificate{query}"),
            None,
            &[],
        )
    };
    let leaf_pem = leaves[0].cert.to_pem()?;
    let chain_pem = [leaf_pem.clone(), ca.cert.to_pem()?].concat();
    assert_eq!(
        get("")?,
        (200, chain_pem.clone()),
        "default: PEM with the chain"
    );
    assert_eq!(get("?format=pem&chain=true")?, (200, chain_pem));
    assert_eq!(get("?chain=false")?, (200, leaf_pem));
    assert_eq!(get("?format=der")?, (200, leaves[0].cert.to_der()?));
    let (status, b64) = get("?format=base64")?;
    assert_eq!(status, 200);
    assert_eq!(
        B64.decode(String::from_utf8(b64)?.trim())?,
        leaves[0].cert.to_der()?
    );
    for bad in ["?format=jks", "?chain=maybe", "?format=der&owner=me"] {
        let (status, body) = get(bad)?;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body)?["error"]["code"],
            "bad_request",
            "{bad}"
        );
    }

    let (status, answer) = daemon.json("GET", "/v1/keys/nope", None)?;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_key"))
    );
    let (status, answer) = daemon.json("GET", "/v1/keys/nope/certificate", None)?;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_key"))
    );
    Ok(())
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn health_signs_with_every_key_and_metrics_count_each_outcome() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;

    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["token"], token.label.as_str());
    assert_eq!(health["token_state"]["state"], "up");
    let checked = health["keys"].as_array().ok_or("no keys")?;
    assert_eq!(checked.len(), 2);
    for key in checked {
        assert_eq!(key["signs"], true, "{key}");
        assert!(key["days_left"].as_i64().is_some_and(|d| d > 700), "{key}");
    }

    for _ in 0..3 {
        let sig = sign_ok(&daemon, "epuap", "RS256", "data", SIGNED_INFO)?;
        assert!(cli_verifies(
            &token,
            &leaves[0],
            "RS256",
            SIGNED_INFO,
            &sig
        )?);
    }
    sign_ok(&daemon, "wk", "ES256", "data", SIGNED_INFO)?;
    for bad in [31, 33] {
        let (status, _) = post_sign(
            &daemon,
            "epuap",
            &sign_body("RS256", "digest", &vec![7; bad]),
        )?;
        assert_eq!(status, 422);
    }
    let (status, _) = post_sign(&daemon, "epuap", &sign_body("RS1", "data", b"x"))?;
    assert_eq!(status, 422);

    let (status, text) = daemon.curl_with(&[], "GET", "/metrics", None, &[])?;
    assert_eq!(status, 200);
    let text = String::from_utf8(text)?;
    let requests = |key: &str, alg: &str, outcome: &str| {
        metric(
            &text,
            &format!("hsm_signer_sign_requests_total{{key=\"{key}\",algorithm=\"{alg}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(requests("epuap", "RS256", "ok"), Some(3.0), "{text}");
    assert_eq!(requests("wk", "ES256", "ok"), Some(1.0), "{text}");
    assert_eq!(
        requests("epuap", "RS256", "bad_digest_length"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests("epuap", "RS1", "algorithm_not_allowed"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "hsm_signer_sign_duration_seconds_count{key=\"epuap\"}"
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "hsm_signer_sign_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(metric(&text, "hsm_signer_healthy"), Some(1.0), "{text}");
    let days = metric(&text, "hsm_signer_certificate_days_left{key=\"wk\"}").ok_or("no days")?;
    assert!(days > 700.0, "{text}");
    Ok(())
}

/// A request that must fail, and how.
struct Bad {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    code: &'static str,
    /// Reaches the signing handler, so it leaves an audit line.
    audited: bool,
}

fn bad_requests() -> Vec<Bad> {
    let sign = "/v1/keys/epuap/sign";
    let case = |what, path, body: String, status, code| Bad {
        what,
        method: "POST",
        path,
        body,
        status,
        code,
        audited: true,
    };
    let data = B64.encode(SIGNED_INFO);
    vec![
        case(
            "malformed JSON",
            sign,
            "{\"algorithm\": \"RS256\", \"data\": ".into(),
            400,
            "bad_request",
        ),
        case(
            "not JSON at all",
            sign,
            "algorithm=RS256".into(),
            400,
            "bad_request",
        ),
        case(
            "unknown field",
            sign,
            json!({"algorithm": "RS256", "data": data, "key": "x"}).to_string(),
            400,
            "bad_request",
        ),
        case(
            "invalid base64",
            sign,
            json!({"algorithm": "RS256", "data": "***not base64***"}).to_string(),
            400,
            "bad_request",
        ),
        case(
            "both data and digest",
            sign,
            json!({"algorithm": "RS256", "data": data, "digest": B64.encode([1u8; 32])})
                .to_string(),
            400,
            "bad_request",
        ),
        case(
            "neither data nor digest",
            sign,
            json!({"algorithm": "RS256"}).to_string(),
            400,
            "bad_request",
        ),
        case(
            "31-byte digest",
            sign,
            sign_body("RS256", "digest", &[1; 31]),
            422,
            "bad_digest_length",
        ),
        case(
            "33-byte digest",
            sign,
            sign_body("RS256", "digest", &[1; 33]),
            422,
            "bad_digest_length",
        ),
        case(
            "SHA-256 digest for RS512",
            sign,
            sign_body("RS512", "digest", &[1; 32]),
            422,
            "bad_digest_length",
        ),
        case(
            "unknown algorithm",
            sign,
            sign_body("HS256", "data", b"x"),
            422,
            "unsupported_algorithm",
        ),
        case(
            "format der on RSA",
            sign,
            json!({"algorithm": "RS256", "data": data, "format": "der"}).to_string(),
            400,
            "bad_request",
        ),
        case(
            "unknown format",
            sign,
            json!({"algorithm": "RS256", "data": data, "format": "pem"}).to_string(),
            400,
            "bad_request",
        ),
        case(
            "unknown key",
            "/v1/keys/nope/sign",
            sign_body("RS256", "data", b"x"),
            404,
            "unknown_key",
        ),
        case(
            "../ in the key name",
            "/v1/keys/..%2F..%2Fetc%2Fpasswd/sign",
            sign_body("RS256", "data", b"x"),
            404,
            "unknown_key",
        ),
        case(
            "NUL in the key name",
            "/v1/keys/epuap%00/sign",
            sign_body("RS256", "data", b"x"),
            404,
            "unknown_key",
        ),
        case(
            "body over max_body_bytes",
            sign,
            sized_body(4097),
            413,
            "payload_too_large",
        ),
        Bad {
            what: "GET on the sign route",
            method: "GET",
            path: sign,
            body: String::new(),
            status: 405,
            code: "method_not_allowed",
            audited: false,
        },
        Bad {
            what: "unknown path",
            method: "GET",
            path: "/v1/nothing",
            body: String::new(),
            status: 404,
            code: "not_found",
            audited: false,
        },
        Bad {
            what: "literal ../ in the path",
            method: "POST",
            path: "/v1/keys/../keys/epuap/sign",
            body: sign_body("RS256", "data", b"x"),
            status: 404,
            code: "not_found",
            audited: false,
        },
    ]
}

/// A valid RS256 request padded with JSON whitespace to exactly `len` bytes.
fn sized_body(len: usize) -> String {
    let mut body = sign_body("RS256", "data", SIGNED_INFO);
    assert!(body.len() <= len);
    body.extend(std::iter::repeat_n(' ', len - body.len()));
    body
}

#[test]
fn bad_requests_get_their_status_and_code_and_the_daemon_keeps_serving() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "max_body_bytes = 4096")?;
    let good = || -> Result {
        // Exactly at the limit is accepted.
        let (status, answer) = post_sign(&daemon, "epuap", &sized_body(4096))?;
        assert_eq!(status, 200, "{answer}");
        let sig = signature_of(&answer)?;
        assert!(cli_verifies(
            &token,
            &leaves[0],
            "RS256",
            SIGNED_INFO,
            &sig
        )?);
        Ok(())
    };
    good()?;
    let cases = bad_requests();
    for case in &cases {
        let body = (!case.body.is_empty()).then_some(case.body.as_str());
        let (status, bytes) =
            daemon.curl_with(&[], case.method, case.path, body, &["--path-as-is"])?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not JSON ({e}): {:?}",
                case.what,
                String::from_utf8_lossy(&bytes)
            )
        })?;
        assert_eq!(status, case.status, "{}: {answer}", case.what);
        assert_eq!(
            answer["error"]["code"], case.code,
            "{}: {answer}",
            case.what
        );
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(answer.get("signature").is_none(), "{}", case.what);
        good()?;
    }
    // 405 names the method that works.
    let answer = raw_http(
        &daemon.socket,
        b"GET /v1/keys/epuap/sign HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )?;
    let head = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(
        head.contains("\r\nallow: post"),
        "405 without Allow: {head}"
    );
    // Every request that reached the signing handler is in the audit log with its outcome,
    // in order, between the good ones; a hostile key name is kept printable.
    let audited: Vec<&Bad> = cases.iter().filter(|c| c.audited).collect();
    let lines = wait_for_lines(&daemon.audit, 1 + 2 * audited.len())?;
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let refused: Vec<&Value> = records.iter().filter(|r| r["outcome"] != "ok").collect();
    assert_eq!(refused.len(), audited.len());
    for (record, case) in refused.iter().zip(&audited) {
        assert_eq!(record["outcome"], case.code, "{}: {record}", case.what);
        assert_eq!(record["status"], case.status, "{}", case.what);
        assert!(
            record.get("cert_sha256").is_none(),
            "{}: nothing signed",
            case.what
        );
    }
    let nul = refused.iter().find(|r| {
        r["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("epuap") && k != "epuap")
    });
    assert_eq!(
        nul.ok_or("no record of the NUL name")?["key"],
        "epuap\\u{0000}"
    );
    // A chunked body has no Content-Length to check up front; the limit holds anyway.
    let chunk = "a".repeat(3000);
    let chunked = format!(
        "POST /v1/keys/epuap/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{n:x}\r\n{chunk}\r\n{n:x}\r\n{chunk}\r\n0\r\n\r\n",
        n = chunk.len()
    );
    let answer = raw_http(&daemon.socket, chunked.as_bytes(), Duration::from_secs(5))?;
    let (status, body) = parse_http(&answer)?;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        serde_json::from_slice::<Value>(&body)?["error"]["code"],
        "payload_too_large"
    );
    good()
}

#[test]
fn a_header_flood_is_refused_and_the_daemon_keeps_serving() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let mut request = String::from("GET /v1/health HTTP/1.1\r\nHost: hsm-signer\r\n");
    for n in 0..200 {
        request.push_str(&format!("X-Flood-{n}: {}\r\n", "v".repeat(20)));
    }
    request.push_str("\r\n");
    let answer = raw_http(&daemon.socket, request.as_bytes(), Duration::from_secs(5))?;
    if !answer.is_empty() {
        let (status, _) = parse_http(&answer)?;
        assert_eq!(status, 431, "{}", String::from_utf8_lossy(&answer));
    }
    // A huge single header line is refused too.
    let long = format!(
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let answer = raw_http(&daemon.socket, long.as_bytes(), Duration::from_secs(5))?;
    if !answer.is_empty() {
        let (status, _) = parse_http(&answer)?;
        assert_eq!(status, 431, "{}", String::from_utf8_lossy(&answer));
    }
    let sig = sign_ok(&daemon, "wk", "ES256", "data", SIGNED_INFO)?;
    assert!(cli_verifies(
        &token,
        &leaves[0],
        "ES256",
        SIGNED_INFO,
        &raw_to_der(&sig)?
    )?);
    Ok(())
}

/// Signs `data` over a connection of its own and verifies the signature in-process.
fn one_client_request(
    daemon: &Daemon,
    key: &str,
    alg: &str,
    pkey: &openssl::pkey::PKey<openssl::pkey::Public>,
    data: &[u8],
) -> Result {
    let body = sign_body(alg, "data", data);
    let answer = raw_http(
        &daemon.socket,
        &raw_post(&format!("/v1/keys/{key}/sign"), &body),
        Duration::from_secs(30),
    )?;
    let (status, body) = parse_http(&answer)?;
    let answer: Value = serde_json::from_slice(&body)?;
    if status != 200 {
        return Err(format!("{status} {answer}").into());
    }
    let sig = signature_of(&answer)?;
    let checked = if alg == "ES256" {
        raw_to_der(&sig)?
    } else {
        sig
    };
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), pkey)?;
    verifier.update(data)?;
    if !verifier.verify(&checked)? {
        return Err("the signature does not verify".into());
    }
    Ok(())
}

/// Many clients at once, each signing distinct data. The signatures are verified in this
/// process with the openssl crate: OpenSSL is a library independent of the token and of
/// the daemon (which hands the token a digest; OpenSSL verifies over the data), and
/// checking 400 signatures in-process keeps the test fast.
#[test]
fn sixteen_clients_at_once_all_get_valid_signatures() -> Result {
    const THREADS: usize = 16;
    const EACH: usize = 25;
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let public: Vec<_> = leaves
        .iter()
        .map(|l| l.cert.public_key())
        .collect::<std::result::Result<_, _>>()?;
    let started = Instant::now();
    let results: Vec<std::result::Result<Vec<Vec<u8>>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (daemon, public) = (&daemon, &public);
                let (key, alg, pkey) = if t % 2 == 0 {
                    ("epuap", "RS256", &public[0])
                } else {
                    ("wk", "ES256", &public[1])
                };
                scope.spawn(move || {
                    (0..EACH)
                        .map(|n| {
                            let data =
                                format!("<ds:SignedInfo>client {t} request {n}</ds:SignedInfo>");
                            one_client_request(daemon, key, alg, pkey, data.as_bytes())
                                .map_err(|e| format!("client {t} request {n}: {e}"))?;
                            Ok(data.into_bytes())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect()
    });
    let mut all = HashSet::new();
    for result in results {
        all.extend(result?);
    }
    assert_eq!(
        all.len(),
        THREADS * EACH,
        "every request with distinct data"
    );
    eprintln!("{} signatures in {:?}", THREADS * EACH, started.elapsed());
    // Every request is in the audit log, and the chain held under concurrent writers.
    let lines = wait_for_lines(&daemon.audit, THREADS * EACH)?;
    assert_eq!(lines.len(), THREADS * EACH);
    assert!(lines.iter().all(|l| l.contains("\"outcome\":\"ok\"")));
    let out = run_ok(
        token
            .hsm_signer()
            .args(["audit", "verify"])
            .arg(&daemon.audit),
    )?;
    assert!(String::from_utf8(out.stdout)?.starts_with(&format!("OK: {} lines", THREADS * EACH)));
    Ok(())
}

#[test]
fn idle_and_slow_clients_are_cut_off_while_others_are_served() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "read_timeout_ms = 500")?;
    let started = Instant::now();
    let raw = |request: &[u8]| {
        raw_http(&daemon.socket, request, Duration::from_secs(5)).map_err(|e| e.to_string())
    };
    let (silent, partial, stalled_body) = std::thread::scope(|scope| {
        let silent = scope.spawn(|| (raw(b""), started.elapsed()));
        let partial = scope.spawn(|| {
            (
                raw(b"POST /v1/keys/wk/sign HTTP/1.1\r\nHost: x\r\n"),
                started.elapsed(),
            )
        });
        let stalled_body = scope.spawn(|| {
            let head = b"POST /v1/keys/wk/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"alg";
            (raw(head), started.elapsed())
        });
        // Meanwhile another client is served at once.
        std::thread::sleep(Duration::from_millis(100));
        let served = sign_ok(&daemon, "wk", "ES256", "data", SIGNED_INFO);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "served while the others wait"
        );
        let sig = served.expect("the other client is served");
        assert!(cli_verifies(
            &token,
            &leaves[0],
            "ES256",
            SIGNED_INFO,
            &raw_to_der(&sig).expect("der")
        )
        .expect("openssl"));
        (silent.join(), partial.join(), stalled_body.join())
    });
    for (what, joined) in [("silent", silent), ("partial headers", partial)] {
        let (answer, after) = joined.map_err(|_| "client thread panicked")?;
        let answer = answer?;
        assert!(
            after >= Duration::from_millis(400) && after < Duration::from_secs(3),
            "{what} client cut off after {after:?}, not about 500 ms"
        );
        if !answer.is_empty() {
            assert_eq!(
                parse_http(&answer)?.0,
                408,
                "{what}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    let (answer, after) = stalled_body.map_err(|_| "client thread panicked")?;
    let (status, body) = parse_http(&answer?)?;
    assert_eq!(status, 408);
    assert_eq!(
        serde_json::from_slice::<Value>(&body)?["error"]["code"],
        "request_timeout"
    );
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(3),
        "{after:?}"
    );
    Ok(())
}

/// `[[keys]] operations` narrows a key to the endpoints it names, through the real socket:
/// two names on one RSA key, one for `wss` only, one for `sign` only. Each is refused 403
/// `operation_not_allowed` on the other endpoint, with an audit record, and the allowed
/// one signs (checked with openssl, and the envelope's SignatureValue present).
#[test]
fn operations_limit_a_key_to_the_endpoints_it_names() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let config = token.path("config.toml");
    let text = Daemon::config_text(&token, &[], "")
        + "\n[[keys]]\nname = \"wss-only\"\nlabel = \"gsko-epuap\"\nalgorithms = [\"RS256\"]\noperations = [\"wss\"]\n"
        + "\n[[keys]]\nname = \"sign-only\"\nlabel = \"gsko-epuap\"\nalgorithms = [\"RS256\"]\noperations = [\"sign\"]\n";
    std::fs::write(&config, text)?;
    let daemon = Daemon::start_with(&token, config)?;

    let (status, answer) = post_sign(
        &daemon,
        "wss-only",
        &sign_body("RS256", "data", SIGNED_INFO),
    )?;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "operation_not_allowed", "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "key \"wss-only\" is not configured for sign ([[keys]] operations)"
    );
    let signature = sign_ok(&daemon, "sign-only", "RS256", "data", SIGNED_INFO)?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        SIGNED_INFO,
        &signature,
        &["-sha256"]
    )?);

    let envelope = "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><a>b</a></soap:Body></soap:Envelope>";
    let body = json!({ "envelope": envelope }).to_string();
    let (status, answer) = daemon.json("POST", "/v1/keys/sign-only/wss/sign", Some(&body))?;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "operation_not_allowed", "{answer}");
    let (status, answer) = daemon.json("POST", "/v1/keys/wss-only/wss/sign", Some(&body))?;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["envelope"]
            .as_str()
            .is_some_and(|e| e.contains("SignatureValue")),
        "{answer}"
    );
    let lines = wait_for_lines(&daemon.audit, 4)?;
    let refused = lines
        .iter()
        .filter(|l| l.contains("operation_not_allowed"))
        .count();
    assert_eq!(refused, 2, "{lines:?}");
    daemon.stop()?;
    Ok(())
}
