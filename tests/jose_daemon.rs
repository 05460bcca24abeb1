//! `jws/sign`, `jwt/client-assertion` and `jwk` through the daemon's socket (curl), each
//! token checked by two JOSE implementations this project did not write, Node's `jose`
//! and Python's `jwcrypto` (the verifiers of tests/jose.rs), against the certificate the
//! test made: what was signed (payload bytes, header, claims), not only that it verifies.
//! Every bad input of issue 22 gets its status and code, the token's objects unchanged;
//! the audit record of an assertion holds `aud`, `iss`, `jti` and hashes, no claim value.
//! One JWS per other token family (kryoptic, the TPM). docs/api.md's table of JOSE answers
//! is what the daemon answers. The e-Doręczenia examples (Python, PHP) get a token from a
//! stub OIDC token endpoint (tests/verifiers/oidc_stub.py).

use crate::common;
use crate::jose::verify_all;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use common::daemon::{provision, provision_with_args, sign_body, Daemon, KeySetup, WK, WK_ENC};
use common::fixtures::{KeySpec, Leaf};
use common::{run_ok, Family, Result, TestToken};

const CLIENT_ID: &str = "AE:PL-51234-56789-ABCDE-21";
const AUDIENCE: &str = "https://edoreczenia.example/oauth2/token";

/// The e-Doręczenia key as the docs recommend it: RSA-2048, narrowed to JOSE and to one
/// token endpoint.
const ED: KeySetup = KeySetup {
    name: "ed",
    label: "gsko-ed",
    spec: KeySpec::Rsa(2048),
    algorithms: &["RS256", "PS256"],
    extra: "operations = [\"jws\", \"jwt\"]\njwt_audiences = [\"https://edoreczenia.example/oauth2/token\"]",
};

/// RSA-4096, as one e-Doręczenia vendor's guide asks for; no `operations` (every
/// signing endpoint).
const ED_4096: KeySetup = KeySetup {
    name: "ed4096",
    label: "gsko-ed4096",
    spec: KeySpec::Rsa(4096),
    algorithms: &["RS256"],
    extra: "",
};

/// A key that signs client assertions and nothing else.
const JWT_ONLY: KeySetup = KeySetup {
    name: "jwt-only",
    label: "gsko-jwt-only",
    spec: KeySpec::P256,
    algorithms: &["ES256"],
    extra: "operations = [\"jwt\"]",
};

/// A JSON payload that a re-serialiser would change (key order, number text, non-ASCII).
const PAYLOAD: &str = r#"{"z":1.50,"a":"Gmina Przykładowo","big":12345678901234567890123,"nested":{"y":[1e3,true,null]}}"#;

fn pem(leaf: &Leaf) -> Result<String> {
    Ok(String::from_utf8(leaf.cert.to_pem()?)?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// POST `body` to `/v1/keys/{key}/{endpoint}`.
fn post(daemon: &Daemon, key: &str, endpoint: &str, body: &str) -> Result<(u16, Value)> {
    daemon.json("POST", &format!("/v1/keys/{key}/{endpoint}"), Some(body))
}

/// The protected header's bytes, as signed.
fn header_bytes(jws: &str) -> Result<Vec<u8>> {
    Ok(URL_SAFE_NO_PAD.decode(jws.split('.').next().unwrap_or_default())?)
}

/// The decoded parts of a compact JWS: header JSON, payload bytes, signature bytes.
fn parts(jws: &str) -> Result<(Value, Vec<u8>, Vec<u8>)> {
    let p: Vec<&str> = jws.split('.').collect();
    if p.len() != 3 {
        return Err(format!("not a compact JWS: {jws}").into());
    }
    Ok((
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[0])?)?,
        URL_SAFE_NO_PAD.decode(p[1])?,
        URL_SAFE_NO_PAD.decode(p[2])?,
    ))
}

fn jws_body(alg: &str) -> String {
    format!(
        r#"{{"payload":{PAYLOAD},"algorithm":"{alg}","header":{{"typ":"JOSE","cty":"json"}},"include":["kid","x5c","x5t#S256"]}}"#
    )
}

fn assertion_body(alg: &str, lifetime: u32) -> String {
    json!({
        "client_id": CLIENT_ID, "audience": AUDIENCE, "lifetime_seconds": lifetime,
        "claims": {"scope": "ua"}, "algorithm": alg, "header": {"typ": "JWT"},
        "include": ["kid"],
    })
    .to_string()
}

/// RS256 and PS256 (RSA-2048), RS256 (RSA-4096) and ES256: a JWS and a client
/// assertion from each, verified by both verifiers with the certificate's key.
#[test]
fn jws_and_client_assertions_verify_with_both_verifiers() -> Result {
    let token = TestToken::new()?;
    let keys = [ED, ED_4096, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let cases = [
        ("ed", "RS256", &leaves[0], 256),
        ("ed", "PS256", &leaves[0], 256),
        ("ed4096", "RS256", &leaves[1], 512),
        ("wk", "ES256", &leaves[2], 64),
    ];
    let (mut tokens, mut assertions) = (Vec::new(), Vec::new());
    for (key, alg, leaf, sig_len) in cases {
        let der = leaf.cert.to_der()?;
        let (status, answer) = post(&daemon, key, "jws/sign", &jws_body(alg))?;
        assert_eq!(status, 200, "{key} {alg}: {answer}");
        assert_eq!(answer["algorithm"], alg);
        assert_eq!(answer["key"], key);
        assert_eq!(answer["certificate_sha256"], sha256_hex(&der), "{key}");
        let jws = answer["jws"].as_str().ok_or("no jws")?;
        let (header, payload, sig) = parts(jws)?;
        assert_eq!(
            payload,
            PAYLOAD.as_bytes(),
            "{key} {alg}: the payload as sent"
        );
        assert_eq!(sig.len(), sig_len, "{key} {alg}: ES256 is R || S, 64 bytes");
        assert_eq!(
            header["x5t#S256"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(&der))
        );
        tokens.push(json!({"jws": jws, "alg": alg, "cert_pem": pem(leaf)?}));

        let (status, answer) = post(
            &daemon,
            key,
            "jwt/client-assertion",
            &assertion_body(alg, 120),
        )?;
        assert_eq!(status, 200, "{key} {alg}: {answer}");
        assertions.push((answer.clone(), leaf));
    }
    for (name, answers) in verify_all(&tokens)? {
        for (answer, (key, alg, leaf, _)) in answers.iter().zip(cases) {
            let payload = STANDARD.decode(answer["payload_base64"].as_str().ok_or("payload")?)?;
            assert_eq!(payload, PAYLOAD.as_bytes(), "{name} {key} {alg}");
            let header = &answer["header"];
            assert_eq!(header["alg"], alg, "{name} {key}");
            assert_eq!(header["typ"], "JOSE", "{name} {key}");
            let der = leaf.cert.to_der()?;
            assert_eq!(header["x5c"][0], STANDARD.encode(&der), "{name} {key}");
            assert_eq!(
                header["x5c"].as_array().map(Vec::len),
                Some(2),
                "{name}: + CA"
            );
            let kid = hsm_signer::jose::thumbprint(&der)?;
            assert_eq!(header["kid"], kid.as_str(), "{name} {key}");
        }
    }
    let items: Vec<Value> = assertions
        .iter()
        .zip(cases)
        .map(|((answer, leaf), (_, alg, _, _))| {
            Ok(json!({
                "jws": answer["jws"], "alg": alg, "cert_pem": pem(leaf)?,
                "client_id": CLIENT_ID, "audience": AUDIENCE,
            }))
        })
        .collect::<Result<_>>()?;
    for (name, answers) in verify_all(&items)? {
        for (answer, (asked, _)) in answers.iter().zip(&assertions) {
            let claims = &answer["claims"];
            assert_eq!(claims["iss"], CLIENT_ID, "{name}");
            assert_eq!(claims["sub"], CLIENT_ID, "{name}");
            assert_eq!(claims["aud"], AUDIENCE, "{name}");
            assert_eq!(claims["scope"], "ua", "{name}");
            assert_eq!(claims["jti"], asked["jti"], "{name}");
            assert_eq!(claims["nbf"], claims["iat"], "{name}");
            let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
            assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(120), "{name}");
            let expires_at = time::OffsetDateTime::parse(
                asked["expires_at"].as_str().ok_or("expires_at")?,
                &Rfc3339,
            )?;
            assert_eq!(Some(expires_at.unix_timestamp()), exp, "{name}: expires_at");
            assert_eq!(answer["header"]["typ"], "JWT", "{name}");
        }
    }
    daemon.stop()?;
    Ok(())
}

/// 1,000 client assertions through the socket: each verifies in both verifiers for this
/// client and audience, lives the default 60 s, and has a jti of its own.
#[test]
fn a_thousand_client_assertions_never_repeat_a_jti() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[ED])?;
    let daemon = Daemon::start(&token, &[ED], "")?;
    let body = json!({"client_id": CLIENT_ID, "audience": AUDIENCE}).to_string();
    let mut items = Vec::new();
    for _ in 0..1000 {
        let (status, answer) = post(&daemon, "ed", "jwt/client-assertion", &body)?;
        assert_eq!(status, 200, "{answer}");
        items.push(json!({
            "jws": answer["jws"], "alg": "RS256", "cert_pem": pem(&leaves[0])?,
            "client_id": CLIENT_ID, "audience": AUDIENCE,
        }));
    }
    for (name, answers) in verify_all(&items)? {
        let mut jtis = std::collections::HashSet::new();
        for answer in &answers {
            let claims = &answer["claims"];
            assert_eq!(
                (&claims["iss"], &claims["aud"]),
                (&json!(CLIENT_ID), &json!(AUDIENCE))
            );
            let lifetime = claims["exp"].as_i64().zip(claims["iat"].as_i64());
            assert_eq!(lifetime.map(|(e, i)| e - i), Some(60), "{name}");
            let jti = claims["jti"].as_str().ok_or("no jti")?;
            assert_eq!(jti.len(), 32, "{name}: 128 bits in hex");
            jtis.insert(jti.to_string());
        }
        assert_eq!(jtis.len(), 1000, "{name}: every jti differs");
    }
    daemon.stop()?;
    Ok(())
}

/// Python jwcrypto's RFC 7638 thumbprint of a JWK, and of the certificate's public key.
fn jwcrypto_thumbprints(jwk: &Value, cert_pem: &str) -> Result<(String, String)> {
    const SCRIPT: &str = "import json, sys\n\
from cryptography import x509\n\
from jwcrypto import jwk\n\
item = json.load(sys.stdin)\n\
cert = x509.load_pem_x509_certificate(item['cert_pem'].encode())\n\
print(jwk.JWK.from_json(json.dumps(item['jwk'])).thumbprint())\n\
print(jwk.JWK.from_pyca(cert.public_key()).thumbprint())\n";
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(
        json!({"jwk": jwk, "cert_pem": cert_pem})
            .to_string()
            .as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err("jwcrypto refused the JWK".into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    Ok((
        lines.next().ok_or("no thumbprint")?.to_string(),
        lines.next().ok_or("no thumbprint")?.to_string(),
    ))
}

/// The JWK of an RSA, an EC and a decrypt key: jwcrypto computes the same thumbprint
/// from it and from the certificate's key, and it is the `kid`; `use` is `enc` for the
/// decrypt key; both verifiers verify a JWS with the JWK, and report the thumbprint.
#[test]
fn the_jwk_is_the_certificates_key_and_its_kid_the_thumbprint() -> Result {
    let token = TestToken::new()?;
    let keys = [ED, WK, WK_ENC];
    let leaves = provision_with_args(&token, &keys, &[&[], &[], &["--allow-derive"]])?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let mut items = Vec::new();
    for ((key, leaf), (kty, key_use)) in
        keys.iter()
            .zip(&leaves)
            .zip([("RSA", "sig"), ("EC", "sig"), ("EC", "enc")])
    {
        let (status, jwk) = daemon.json("GET", &format!("/v1/keys/{}/jwk", key.name), None)?;
        assert_eq!(status, 200, "{}: {jwk}", key.name);
        assert_eq!(
            (jwk["kty"].as_str(), jwk["use"].as_str()),
            (Some(kty), Some(key_use))
        );
        let der = leaf.cert.to_der()?;
        assert_eq!(jwk["x5c"][0], STANDARD.encode(&der), "{}", key.name);
        assert_eq!(
            jwk["x5t#S256"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(&der))
        );
        let (of_jwk, of_cert) = jwcrypto_thumbprints(&jwk, &pem(leaf)?)?;
        assert_eq!(
            of_jwk, of_cert,
            "{}: the JWK is the certificate's key",
            key.name
        );
        assert_eq!(
            jwk["kid"],
            of_jwk.as_str(),
            "{}: kid is the thumbprint",
            key.name
        );
        if key_use == "sig" {
            let alg = key.algorithms[0];
            let (status, answer) = post(&daemon, key.name, "jws/sign", &jws_body(alg))?;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(
                parts(answer["jws"].as_str().ok_or("jws")?)?.0["kid"],
                jwk["kid"]
            );
            items.push(json!({"jws": answer["jws"], "alg": alg, "jwk": jwk}));
        }
    }
    for (name, answers) in verify_all(&items)? {
        for (answer, item) in answers.iter().zip(&items) {
            assert_eq!(answer["thumbprint"], item["jwk"]["kid"], "{name}");
        }
    }
    daemon.stop()?;
    Ok(())
}

/// Every bad input of issue 22, each with its status and code, and the token's objects
/// (pkcs11-tool) the same after them all. A client assertion from the `jwt`-only key
/// and a JWS from `ed` are signed too, so the refusals are not a broken daemon's.
#[test]
fn bad_inputs_get_their_codes_and_leave_the_token_unchanged() -> Result {
    let token = TestToken::new()?;
    let keys = [ED, WK, WK_ENC, JWT_ONLY];
    provision_with_args(&token, &keys, &[&[], &[], &["--allow-derive"]])?;
    let daemon = Daemon::start(&token, &keys, "max_body_bytes = 4096")?;
    let before = token.objects()?;
    let assertion = |extra: Value| {
        let mut body = json!({"client_id": CLIENT_ID, "audience": AUDIENCE});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body.to_string()
    };
    let big = format!(r#"{{"payload":{{"x":"{}"}}}}"#, "a".repeat(5000));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("ed", "jws/sign", big, 413, "payload_too_large"),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"header":{"alg":"none"}}"#.into(),
            400,
            "bad_header",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"header":{"crit":["b64"]}}"#.into(),
            400,
            "bad_header",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"header":{"b64":false}}"#.into(),
            400,
            "bad_header",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"header":{"kid":"x"},"include":["kid"]}"#.into(),
            400,
            "header_conflict",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{"a":1,"a":2}}"#.into(),
            400,
            "duplicate_key",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{"n":{"b":1,"b":1}}}"#.into(),
            400,
            "duplicate_key",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"payload":{}}"#.into(),
            400,
            "bad_request",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload_base64":"!!"}"#.into(),
            400,
            "bad_payload_base64",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":[1]}"#.into(),
            400,
            "not_an_object",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"include":["x5u"]}"#.into(),
            400,
            "bad_include",
        ),
        (
            "ed",
            "jws/sign",
            r#"{"payload":{},"algorithm":"ES256"}"#.into(),
            422,
            "algorithm_not_allowed",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"lifetime_seconds": 301})),
            400,
            "lifetime_too_long",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"lifetime_seconds": 0})),
            400,
            "bad_lifetime",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"claims": {"aud": "https://evil.example/"}})),
            400,
            "claims_override",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"claims": {"jti": "fixed"}})),
            400,
            "claims_override",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"header": {"alg": "HS256"}})),
            400,
            "bad_header",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"audience": "https://evil.example/oauth2/token"})),
            403,
            "audience_not_allowed",
        ),
        (
            "ed",
            "jwt/client-assertion",
            assertion(json!({"client_id": ""})),
            400,
            "missing_field",
        ),
        (
            "ed",
            "sign",
            sign_body("RS256", "data", b"x"),
            403,
            "operation_not_allowed",
        ),
        (
            "wk-enc",
            "jws/sign",
            r#"{"payload":{}}"#.into(),
            422,
            "wrong_purpose",
        ),
        (
            "wk-enc",
            "jwt/client-assertion",
            assertion(json!({})),
            422,
            "wrong_purpose",
        ),
        (
            "jwt-only",
            "jws/sign",
            r#"{"payload":{}}"#.into(),
            403,
            "operation_not_allowed",
        ),
        (
            "jwt-only",
            "sign",
            sign_body("ES256", "data", b"x"),
            403,
            "operation_not_allowed",
        ),
        (
            "jwt-only",
            "saml/sign",
            r#"{"xml":"<a ID=\"_1\"/>"}"#.into(),
            403,
            "operation_not_allowed",
        ),
        (
            "nope",
            "jws/sign",
            r#"{"payload":{}}"#.into(),
            404,
            "unknown_key",
        ),
    ];
    for (key, endpoint, body, status, code) in &cases {
        let (got, answer) = post(&daemon, key, endpoint, body)?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{key} {endpoint} {}: {answer}",
            &body[..body.len().min(120)]
        );
    }
    let (status, answer) = post(
        &daemon,
        "jwt-only",
        "jwt/client-assertion",
        &assertion(json!({})),
    )?;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&daemon, "ed", "jws/sign", r#"{"payload":{}}"#)?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(token.objects()?, before, "the token's objects changed");
    daemon.stop()?;
    Ok(())
}

/// The audit record of a client assertion holds `aud`, `iss`, `jti` and the protected
/// header's SHA-256, never a claim value; a JWS's holds the payload's and the header's
/// SHA-256, never the payload; a refused audience is recorded with the audience asked
/// (escaped) and the client id (cut to 256 characters).
#[test]
fn audit_records_hold_hashes_and_names_never_claims_or_payloads() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[ED])?;
    let daemon = Daemon::start(&token, &[ED], "")?;
    let secret = "Tajna-wartość-0xDEADBEEF";
    let body = json!({
        "client_id": CLIENT_ID, "audience": AUDIENCE,
        "claims": {"private_claim": secret},
    });
    let (status, answer) = post(&daemon, "ed", "jwt/client-assertion", &body.to_string())?;
    assert_eq!(status, 200, "{answer}");
    let (_, claims, _) = parts(answer["jws"].as_str().ok_or("jws")?)?;
    let header_text = header_bytes(answer["jws"].as_str().ok_or("jws")?)?;
    let jws_body = format!(r#"{{"payload":{{"private_field":"{secret}"}}}}"#);
    let (status, signed) = post(&daemon, "ed", "jws/sign", &jws_body)?;
    assert_eq!(status, 200, "{signed}");
    let (_, jws_payload, _) = parts(signed["jws"].as_str().ok_or("jws")?)?;
    let jws_header = header_bytes(signed["jws"].as_str().ok_or("jws")?)?;
    let long_client = "A".repeat(300);
    let evil = json!({"client_id": long_client, "audience": "https://evil.example/\u{202e}x"});
    let (status, _) = post(&daemon, "ed", "jwt/client-assertion", &evil.to_string())?;
    assert_eq!(status, 403);

    let lines = common::daemon::wait_for_lines(&daemon.audit, 3)?;
    let text = lines.join("\n");
    assert!(
        !text.contains("Tajna") && !text.contains("private_"),
        "{text}"
    );
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let jwt: Vec<&Value> = records.iter().filter(|r| r["op"] == "jwt").collect();
    let ok = jwt
        .iter()
        .find(|r| r["status"] == 200)
        .ok_or("no jwt record")?;
    assert_eq!(ok["aud"], AUDIENCE);
    assert_eq!(ok["iss"], CLIENT_ID);
    assert_eq!(ok["jti"], answer["jti"]);
    assert_eq!(ok["header_sha256"], sha256_hex(&header_text));
    assert_eq!(ok["input_sha256"], sha256_hex(&claims));
    assert_eq!(ok["algorithm"], "RS256");
    let refused = jwt
        .iter()
        .find(|r| r["status"] == 403)
        .ok_or("no refusal record")?;
    assert_eq!(refused["outcome"], "audience_not_allowed");
    assert_eq!(refused["aud"], "https://evil.example/\\u{202e}x", "escaped");
    assert_eq!(refused["iss"], "A".repeat(256), "cut to 256 characters");
    let jws = records
        .iter()
        .find(|r| r["op"] == "jws")
        .ok_or("no jws record")?;
    assert_eq!(jws["input_sha256"], sha256_hex(&jws_payload));
    assert_eq!(jws["header_sha256"], sha256_hex(&jws_header));
    assert!(
        jws.get("aud").is_none() && jws.get("jti").is_none(),
        "{jws}"
    );
    daemon.stop()?;
    Ok(())
}

/// An EC P-256 key on `family`'s token, named `wk`: imported where the family takes
/// private keys, generated on the token (self-signed) on the TPM. Its certificate.
fn p256_on(token: &TestToken) -> Result<openssl::x509::X509> {
    if token.family.takes_private_keys() {
        return Ok(provision(token, &[WK])?.remove(0).cert);
    }
    run_ok(token.on_token("generate").args([
        "--label",
        WK.label,
        "--key-type",
        "ec-p256",
        "--purpose",
        "sign",
        "--subject",
        "/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl",
        "--self-signed-days",
        "730",
    ]))?;
    Ok(openssl::x509::X509::from_der(
        &token.read_object("cert", WK.label)?,
    )?)
}

/// One ES256 JWS on the family's token, verified by both verifiers; where the family
/// takes an imported key (kryoptic; the TPM has no RSA-4096), also an RSA-4096 client
/// assertion.
fn one_jws_per_family(family: Family) -> Result {
    let token = TestToken::of(family)?;
    let cert = p256_on(&token)?;
    let mut keys = vec![WK];
    let mut items = Vec::new();
    let rsa_4096 = if family.takes_private_keys() {
        keys.push(ED_4096);
        Some(provision(&token, &[ED_4096])?.remove(0))
    } else {
        None
    };
    let daemon = Daemon::start(&token, &keys, "")?;
    let (status, answer) = post(&daemon, "wk", "jws/sign", &jws_body("ES256"))?;
    assert_eq!(status, 200, "{family}: {answer}");
    let wk_pem = String::from_utf8(cert.to_pem()?)?;
    items.push(json!({"jws": answer["jws"], "alg": "ES256", "cert_pem": wk_pem}));
    if let Some(leaf) = &rsa_4096 {
        let (status, answer) = post(
            &daemon,
            "ed4096",
            "jwt/client-assertion",
            &assertion_body("RS256", 300),
        )?;
        assert_eq!(status, 200, "{family}: {answer}");
        items.push(json!({
            "jws": answer["jws"], "alg": "RS256", "cert_pem": pem(leaf)?,
            "client_id": CLIENT_ID, "audience": AUDIENCE,
        }));
    }
    for (name, answers) in verify_all(&items)? {
        let payload = STANDARD.decode(answers[0]["payload_base64"].as_str().ok_or("payload")?)?;
        assert_eq!(payload, PAYLOAD.as_bytes(), "{family} {name}");
        if rsa_4096.is_some() {
            let claims = &answers[1]["claims"];
            assert_eq!(claims["aud"], AUDIENCE, "{family} {name}");
            let lifetime = claims["exp"].as_i64().zip(claims["iat"].as_i64());
            assert_eq!(lifetime.map(|(e, i)| e - i), Some(300), "{family} {name}");
        }
    }
    daemon.stop()?;
    Ok(())
}
on_families!(one_jws_per_family, [kryoptic, tpm]);

/// The key of docs/api.md's JOSE examples.
const EDORECZENIA: KeySetup = KeySetup {
    name: "edoreczenia",
    label: "gsko-edoreczenia",
    spec: KeySpec::Rsa(2048),
    algorithms: &["RS256"],
    extra: "operations = [\"jwt\", \"jws\"]\njwt_audiences = [\"https://edoreczenia.example/oauth2/token\"]",
};

/// The code spans of a Markdown table cell (no backticks inside them here).
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// docs/api.md's table of JOSE answers, row by row: each request (to `edoreczenia`, or to
/// the key named after "to") gets exactly the status and body the doc shows, and so does
/// the 413 quoted under it.
#[test]
fn the_jose_answers_in_api_md_are_what_the_daemon_answers() -> Result {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))?;
    let lines: Vec<&str> = doc.lines().collect();
    let heading = lines
        .iter()
        .position(|l| *l == "### Errors of the JOSE endpoints")
        .ok_or("docs/api.md: no JOSE errors heading")?;
    let table = heading
        + lines[heading..]
            .iter()
            .position(|l| l.starts_with("| Request | Status | Body |"))
            .ok_or("docs/api.md: no JOSE answers table")?;
    let rows: Vec<&str> = lines[table + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .copied()
        .collect();
    assert!(rows.len() >= 10, "only {} rows", rows.len());

    let token = TestToken::new()?;
    let keys = [EDORECZENIA, WK_ENC];
    provision_with_args(&token, &keys, &[&[], &["--allow-derive"]])?;
    let daemon = Daemon::start(&token, &keys, "")?;
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let request = spans(cells[0]);
        let key = request.get(2).copied().unwrap_or("edoreczenia");
        let status: u16 = cells[1].trim().parse()?;
        let body = spans(cells[2]).first().copied().ok_or("no body")?;
        let (got_status, got) = daemon.curl(
            "POST",
            &format!("/v1/keys/{key}/{}", request[0]),
            Some(request[1]),
        )?;
        assert_eq!(
            (got_status, got.as_str()),
            (status, body),
            "docs/api.md: {row}"
        );
    }
    let big = format!(r#"{{"payload":{{"x":"{}"}}}}"#, "a".repeat(1 << 20));
    let (status, body) = common::daemon::parse_http(&common::daemon::raw_http(
        &daemon.socket,
        &common::daemon::raw_post("/v1/keys/edoreczenia/jws/sign", &big),
        std::time::Duration::from_secs(10),
    )?)?;
    let quoted = format!("`{}`", String::from_utf8(body)?);
    assert_eq!(status, 413);
    assert!(doc.contains(&quoted), "docs/api.md does not quote {quoted}");
    daemon.stop()?;
    Ok(())
}

/// tests/verifiers/oidc_stub.py, running: a token endpoint on loopback that verifies
/// client assertions with jwcrypto against a certificate. Killed when dropped.
struct OidcStub {
    child: std::process::Child,
    /// Its token URL (`http://127.0.0.1:PORT/oauth2/token`).
    url: String,
    log: std::path::PathBuf,
}

impl OidcStub {
    fn start(dir: &std::path::Path, cert_pem: &std::path::Path) -> Result<Self> {
        use std::io::BufRead;
        let log = dir.join("oidc_stub.log");
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/verifiers/oidc_stub.py"
            ))
            .arg(cert_pem)
            .arg(CLIENT_ID)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut url = String::new();
        let read = child
            .stdout
            .take()
            .ok_or("no stdout")
            .map(std::io::BufReader::new)
            .map(|mut out| out.read_line(&mut url));
        let stub = Self {
            child,
            url: url.trim().to_string(),
            log,
        };
        read??;
        if !stub.url.starts_with("http://127.0.0.1:") {
            return Err(format!("oidc_stub.py did not start: {}", stub.log_text()).into());
        }
        Ok(stub)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OidcStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `tool` runs; a missing one fails under CI.
fn have(tool: &str) -> Result<bool> {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::missing_precondition(&format!("{tool} (scripts/test installs it)"))?;
    }
    Ok(ok)
}

/// examples/python/edoreczenia_token.py and examples/php/edoreczenia_token.php get an
/// access token from the stub token endpoint with an assertion the daemon signed (RS256,
/// RSA-2048, as the e-Doręczenia SDKs use); the stub refuses an assertion for another
/// audience with `invalid_client`, and the examples exit non-zero with its answer.
#[test]
fn the_edoreczenia_examples_get_an_access_token_from_a_stub_token_endpoint() -> Result {
    let mut runtimes = Vec::new();
    if have("python3")? {
        runtimes.push((
            "python3",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/python/edoreczenia_token.py"
            ),
        ));
    }
    if have("php")? {
        runtimes.push((
            "php",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/php/edoreczenia_token.php"
            ),
        ));
    }
    let token = TestToken::new()?;
    let keys = [KeySetup {
        extra: "operations = [\"jwt\"]",
        ..EDORECZENIA
    }];
    let leaves = provision(&token, &keys)?;
    let cert = token.path("edoreczenia.pem");
    std::fs::write(&cert, leaves[0].cert.to_pem()?)?;
    let stub = OidcStub::start(token.dir.path(), &cert)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    for (runtime, script) in runtimes {
        let run = |audience: Option<&str>| -> Result<std::process::Output> {
            let mut cmd = std::process::Command::new(runtime);
            cmd.arg(script)
                .arg("--socket")
                .arg(&daemon.socket)
                .args(["--client-id", CLIENT_ID]);
            if let Some(audience) = audience {
                cmd.args(["--audience", audience]);
            }
            Ok(cmd
                .arg(&stub.url)
                .env_remove("HSM_SIGNER_SOCKET")
                .output()?)
        };
        let out = run(None)?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{runtime}: {stderr}\nstub: {}",
            stub.log_text()
        );
        let answer: Value = serde_json::from_str(&stdout)?;
        assert_eq!(answer["token_type"], "Bearer", "{runtime}: {answer}");
        assert!(
            answer["access_token"]
                .as_str()
                .is_some_and(|t| t.len() >= 32),
            "{runtime}: {answer}"
        );

        let out = run(Some("https://edoreczenia.example/oauth2/token"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{runtime}: a wrong audience got a token"
        );
        assert!(
            stderr.contains("401") && stderr.contains("invalid_client"),
            "{runtime}: {stderr}"
        );
    }
    let log = stub.log_text();
    assert!(
        log.contains("200 ok") && log.contains("401 invalid_client"),
        "{log}"
    );
    daemon.stop()?;
    Ok(())
}

/// docs/edoreczenia.md and docs/pl/edoreczenia.md, section 4: their console blocks run as
/// a reader would paste them, against a daemon with the key of their section 3 (less its
/// `allowed_uids`, as the test runs as root): the assertion is made, decoded with jq and
/// verified with `openssl dgst`.
#[test]
fn edoreczenia_md_steps_run_against_a_daemon() -> Result {
    let token = TestToken::new()?;
    let keys = [KeySetup {
        extra:
            "operations = [\"jwt\"]\njwt_audiences = [\"https://edoreczenia.example/oauth2/token\"]",
        ..EDORECZENIA
    }];
    provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "allowed_uids = [0]")?;
    for doc in ["docs/edoreczenia.md", "docs/pl/edoreczenia.md"] {
        crate::api_doc::run_doc_steps(doc, "<!-- run: tests/jose_daemon.rs -->", &daemon, 10)?;
    }
    daemon.stop()?;
    Ok(())
}
