//! JWS, client assertions and JWKs from `hsm_signer::jose`, signed by keys on a real
//! SoftHSM2 token (imported from a `.p12` by the `hsm-signer` binary, then signed with
//! through this process's own cryptoki session and the daemon's `token::sign`), and
//! checked by two JOSE implementations this project did not write: Node's `jose`
//! (tools/verifiers/verify_jose.mjs, pinned in package-lock.json, `npm ci` in
//! scripts/test) and Python's `jwcrypto` (tests/verifiers/verify_jose.py). Each verifier
//! reports *what* it verified (header, payload, claims, thumbprint), and the test
//! compares that with what was asked.
//!
//! `rsa_4096_end_to_end` runs on SoftHSM2 and kryoptic (`on_families!`): RSA-4096 keys
//! imported and generated, signed with by the daemon, and a client assertion signed
//! through the daemon's `/sign`.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_signer::algorithm::Algorithm;
use hsm_signer::jose::{self, AssertionRequest, Include, JwsOptions, KeyUse, Payload, SignFailure};
use serde_json::{json, Value};

use common::fixtures::{import_cmd, secret_file, write_p12, Ca, KeySpec, Leaf};
use common::{missing_precondition, run_ok, under_ci, Result, TestToken};

const LABEL: &str = "gsko-jose";
const CLIENT_ID: &str = "AE:PL-51234-56789-ABCDE-21";
const AUDIENCE: &str = "https://edoreczenia.example/oauth2/token";

/// A key on a fresh token, its certificate and its CA (the chain).
struct TokenKey {
    token: TestToken,
    leaf: Leaf,
    ca: Ca,
}

impl TokenKey {
    fn new(spec: KeySpec) -> Result<Self> {
        let token = TestToken::new()?;
        let ca = Ca::sigillum()?;
        let leaf = ca.leaf(spec)?;
        let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
        let p12 = token.path("key.p12");
        write_p12(&p12, &leaf, &ca, LABEL, "hasło")?;
        run_ok(&mut import_cmd(&token, &p12, &password))?;
        Ok(TokenKey { token, leaf, ca })
    }

    fn der(&self) -> Result<Vec<u8>> {
        Ok(self.leaf.cert.to_der()?)
    }

    fn chain(&self) -> Result<Vec<Vec<u8>>> {
        Ok(vec![self.ca.cert.to_der()?])
    }

    fn pem(&self) -> Result<String> {
        Ok(String::from_utf8(self.leaf.cert.to_pem()?)?)
    }

    /// Runs `f` with the token's signing closure for `alg`: the hash in software, the
    /// private-key operation on the token, as the daemon does.
    fn with_signer<T>(
        &self,
        alg: Algorithm,
        f: impl FnOnce(&mut dyn FnMut(&[u8]) -> std::result::Result<Vec<u8>, String>) -> T,
    ) -> Result<T> {
        self.token.with_session(|session| {
            let key = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(LABEL.into()),
                ])?
                .into_iter()
                .next()
                .ok_or("the imported key is not on the token")?;
            let mut sign = |data: &[u8]| {
                let digest = alg.hash().digest(data);
                hsm_signer::token::sign_digest(session, key, alg, &digest)
                    .map_err(|e| e.to_string())
            };
            Ok(f(&mut sign))
        })
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The two verifiers that are installed (both, under CI).
pub(crate) fn verifiers() -> Result<Vec<(&'static str, Command)>> {
    let node_modules = repo().join("tools/verifiers/node_modules/jose");
    let python_ok = Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut out = Vec::new();
    if node_modules.is_dir() {
        let mut node = Command::new("node");
        node.arg(repo().join("tools/verifiers/verify_jose.mjs"));
        out.push(("node jose", node));
    } else {
        missing_precondition("Node's jose (cd tools/verifiers && npm ci)")?;
    }
    if python_ok {
        let mut py = Command::new("python3");
        py.arg(repo().join("tests/verifiers/verify_jose.py"));
        out.push(("python jwcrypto", py));
    } else {
        missing_precondition("Python jwcrypto (pip install jwcrypto)")?;
    }
    if under_ci() && out.len() != 2 {
        return Err("both JOSE verifiers must run under CI".into());
    }
    Ok(out)
}

/// Sends `items` to one verifier and returns its per-item answers.
pub(crate) fn verify(name: &str, mut cmd: Command, items: &[Value]) -> Result<Vec<Value>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(serde_json::to_string(items)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("{name} refused: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    if answers.len() != items.len() {
        return Err(format!("{name} answered {} of {} items", answers.len(), items.len()).into());
    }
    Ok(answers)
}

/// Has every verifier check `items`; returns each verifier's answers.
pub(crate) fn verify_all(items: &[Value]) -> Result<Vec<(&'static str, Vec<Value>)>> {
    let mut out = Vec::new();
    for (name, cmd) in verifiers()? {
        out.push((name, verify(name, cmd, items)?));
    }
    Ok(out)
}

/// A JSON payload with key order, number text and non-ASCII that a re-serialiser would
/// change, signed by `spec` with each of `algs`: both verifiers accept it with the
/// certificate's key and report the exact payload bytes and the header asked for.
fn jws_verifies(spec: KeySpec, algs: &[Algorithm]) -> Result {
    let key = TokenKey::new(spec)?;
    let (der, chain) = (key.der()?, key.chain()?);
    let payload = r#"{"z":1.50,"big":12345678901234567890123,"a":"Gmina Przykładowo","nested":{"y":[1e3,true,null]}}"#;
    let mut items = Vec::new();
    for &alg in algs {
        let opts = JwsOptions {
            algorithm: Some(alg),
            header: Some(r#"{"typ":"JOSE","cty":"json"}"#),
            include: &[Include::Kid, Include::X5c, Include::X5tS256],
        };
        let signed = key.with_signer(alg, |sign| {
            jose::sign_jws(Payload::Json(payload), &opts, &der, &chain, sign)
        })??;
        items.push(json!({"jws": signed.jws, "alg": alg.name(), "cert_pem": key.pem()?}));
    }
    let kid = jose::thumbprint(&der)?;
    for (name, answers) in verify_all(&items)? {
        for (answer, alg) in answers.iter().zip(algs) {
            let got = STANDARD.decode(answer["payload_base64"].as_str().ok_or("no payload")?)?;
            assert_eq!(got, payload.as_bytes(), "{name} {alg}: payload");
            let header = &answer["header"];
            assert_eq!(header["alg"], alg.name(), "{name}");
            assert_eq!(header["typ"], "JOSE", "{name}");
            assert_eq!(header["kid"], kid.as_str(), "{name}");
            assert_eq!(
                header["x5c"],
                json!([STANDARD.encode(&der), STANDARD.encode(&chain[0])]),
                "{name}"
            );
        }
    }
    Ok(())
}

#[test]
fn jws_rsa_2048_every_rsa_algorithm() -> Result {
    use Algorithm::*;
    jws_verifies(
        KeySpec::Rsa(2048),
        &[Rs256, Rs384, Rs512, Ps256, Ps384, Ps512],
    )
}

#[test]
fn jws_rsa_4096() -> Result {
    jws_verifies(KeySpec::Rsa(4096), &[Algorithm::Rs256, Algorithm::Ps256])
}

#[test]
fn jws_ec_p256_is_r_and_s() -> Result {
    jws_verifies(KeySpec::P256, &[Algorithm::Es256])
}

#[test]
fn jws_ec_p384_is_r_and_s() -> Result {
    jws_verifies(KeySpec::P384, &[Algorithm::Es384])
}

/// A binary payload (`payload_base64`) comes out byte for byte.
#[test]
fn jws_binary_payload() -> Result {
    let key = TokenKey::new(KeySpec::P256)?;
    let der = key.der()?;
    let bytes: Vec<u8> = (0..=255).collect();
    let b64 = STANDARD.encode(&bytes);
    let signed = key.with_signer(Algorithm::Es256, |sign| {
        jose::sign_jws(
            Payload::Base64(&b64),
            &JwsOptions::default(),
            &der,
            &[],
            sign,
        )
    })??;
    let items = [json!({"jws": signed.jws, "alg": "ES256", "cert_pem": key.pem()?})];
    for (name, answers) in verify_all(&items)? {
        assert_eq!(answers[0]["payload_base64"], b64.as_str(), "{name}");
        assert_eq!(answers[0]["header"], json!({"alg": "ES256"}), "{name}");
    }
    Ok(())
}

/// 1,000 client assertions from an RSA-2048 key on the token: each verifies in both
/// verifiers as an RFC 7523 assertion for this client and audience, lives 120 s, and has
/// its own jti.
#[test]
fn client_assertions_verify_and_never_repeat_a_jti() -> Result {
    let key = TokenKey::new(KeySpec::Rsa(2048))?;
    let der = key.der()?;
    let now = time::OffsetDateTime::now_utc();
    let mut items = Vec::new();
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..1000 {
        let req = AssertionRequest {
            client_id: CLIENT_ID,
            audience: AUDIENCE,
            lifetime_seconds: Some(120),
            claims: Some(r#"{"scope":"ua"}"#),
            now,
            jws: JwsOptions {
                header: Some(r#"{"typ":"JWT"}"#),
                include: &[Include::Kid],
                ..Default::default()
            },
        };
        let a = key.with_signer(Algorithm::Rs256, |sign| {
            jose::client_assertion(&req, &der, &[], sign)
        })??;
        assert!(jtis.insert(a.jti.clone()), "jti {} repeated", a.jti);
        items.push(json!({
            "jws": a.jws.jws, "alg": "RS256", "cert_pem": key.pem()?,
            "client_id": CLIENT_ID, "audience": AUDIENCE, "jti": a.jti,
        }));
    }
    for (name, answers) in verify_all(&items)? {
        let mut seen = std::collections::HashSet::new();
        for (answer, item) in answers.iter().zip(&items) {
            let claims = &answer["claims"];
            assert_eq!(claims["iss"], CLIENT_ID, "{name}");
            assert_eq!(claims["sub"], CLIENT_ID, "{name}");
            assert_eq!(claims["aud"], AUDIENCE, "{name}");
            assert_eq!(claims["scope"], "ua", "{name}");
            assert_eq!(claims["jti"], item["jti"], "{name}");
            let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
            assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(120), "{name}");
            assert_eq!(claims["nbf"], claims["iat"], "{name}");
            assert!(
                seen.insert(claims["jti"].to_string()),
                "{name}: jti repeated"
            );
        }
        assert_eq!(seen.len(), 1000, "{name}");
    }
    Ok(())
}

/// The JWK of each key type: both verifiers import it and verify a JWS with it, and
/// the `kid` is the thumbprint they compute.
#[test]
fn jwk_imports_and_its_kid_is_the_thumbprint() -> Result {
    let mut items = Vec::new();
    let mut kids = Vec::new();
    for (spec, alg) in [
        (KeySpec::Rsa(2048), Algorithm::Rs256),
        (KeySpec::Rsa(4096), Algorithm::Ps512),
        (KeySpec::P256, Algorithm::Es256),
        (KeySpec::P384, Algorithm::Es384),
    ] {
        let key = TokenKey::new(spec)?;
        let (der, chain) = (key.der()?, key.chain()?);
        let jwk = jose::jwk(&der, &chain, KeyUse::Sig)?;
        let opts = JwsOptions {
            algorithm: Some(alg),
            ..Default::default()
        };
        let signed = key.with_signer(alg, |sign| {
            jose::sign_jws(
                Payload::Json(r#"{"hello":"JWK"}"#),
                &opts,
                &der,
                &chain,
                sign,
            )
        })??;
        kids.push(jwk.kid.clone());
        items.push(json!({"jws": signed.jws, "alg": alg.name(), "jwk": jwk}));
    }
    for (name, answers) in verify_all(&items)? {
        for (answer, kid) in answers.iter().zip(&kids) {
            assert_eq!(answer["thumbprint"], kid.as_str(), "{name}");
        }
    }
    Ok(())
}

/// The token's answer is checked: a key on the token that is not the certificate's is
/// refused before any token string is made.
#[test]
fn a_token_key_that_is_not_the_certificates_is_refused() -> Result {
    let key = TokenKey::new(KeySpec::Rsa(2048))?;
    let other = key.ca.leaf(KeySpec::Rsa(2048))?.cert.to_der()?;
    let got = key.with_signer(Algorithm::Rs256, |sign| {
        jose::sign_jws(
            Payload::Json("{}"),
            &JwsOptions::default(),
            &other,
            &[],
            sign,
        )
    })?;
    match got {
        Err(SignFailure::Jose(e)) => assert_eq!(e.code(), "signature_mismatch"),
        other => return Err(format!("expected signature_mismatch, got {other:?}").into()),
    }
    Ok(())
}

/// The verifiers can fail: a token whose payload was swapped after signing is refused by
/// each of them.
#[test]
fn a_tampered_token_is_refused_by_each_verifier() -> Result {
    let key = TokenKey::new(KeySpec::P256)?;
    let der = key.der()?;
    let signed = key.with_signer(Algorithm::Es256, |sign| {
        jose::sign_jws(
            Payload::Json(r#"{"amount":1}"#),
            &JwsOptions::default(),
            &der,
            &[],
            sign,
        )
    })??;
    let parts: Vec<&str> = signed.jws.split('.').collect();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"amount":9}"#);
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    let items = [json!({"jws": tampered, "alg": "ES256", "cert_pem": key.pem()?})];
    for (name, cmd) in verifiers()? {
        assert!(
            verify(name, cmd, &items).is_err(),
            "{name} accepted a tampered token"
        );
    }
    Ok(())
}

/// RSA-4096, as e-Doręczenia vendors ask for, end to end on a family: a key imported
/// from a 4096-bit `.p12` and one made by `generate --key-type rsa-4096 --csr`, both
/// served by the daemon; each `/sign` answer (RS256 and PS256, 512 bytes) is checked by
/// the openssl CLI, and a client assertion whose signature comes from the daemon's
/// `/sign` is checked by both JOSE verifiers. The TPM has no RSA-4096 (docs/tokens.md).
fn rsa_4096_end_to_end(family: common::Family) -> Result {
    use common::daemon::{openssl_verify, sign_body, signature_of, Daemon, KeySetup};

    let token = TestToken::of(family)?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(4096))?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let p12 = token.path("ed.p12");
    write_p12(&p12, &leaf, &ca, "gsko-ed-imported", "hasło")?;
    run_ok(&mut import_cmd(&token, &p12, &password))?;

    let csr = token.path("ed.csr");
    run_ok(
        token
            .on_token("generate")
            .args([
                "--label",
                "gsko-ed",
                "--key-type",
                "rsa-4096",
                "--purpose",
                "sign",
            ])
            .args([
                "--subject",
                "/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl",
            ])
            .arg("--csr")
            .arg(&csr)
            .args(["--self-signed-days", "730"]),
    )?;
    let req = openssl::x509::X509Req::from_pem(&std::fs::read(&csr)?)?;
    assert_eq!(req.public_key()?.bits(), 4096, "{family}: the CSR's key");
    let generated = openssl::x509::X509::from_der(&token.read_object("cert", "gsko-ed")?)?;
    assert!(req.public_key()?.public_eq(&*generated.public_key()?));

    let keys = [
        KeySetup {
            name: "ed-imported",
            label: "gsko-ed-imported",
            spec: KeySpec::Rsa(4096),
            algorithms: &["RS256", "PS256"],
            extra: "operations = [\"sign\", \"jwt\"]",
        },
        KeySetup {
            name: "ed",
            label: "gsko-ed",
            spec: KeySpec::Rsa(4096),
            algorithms: &["RS256", "PS256"],
            extra: "",
        },
    ];
    let daemon = Daemon::start(&token, &keys, "")?;
    let data = b"e-Doreczenia client assertion signing input";
    for (name, cert) in [("ed-imported", &leaf.cert), ("ed", &generated)] {
        for (alg, args) in [
            ("RS256", vec!["-sha256"]),
            (
                "PS256",
                vec![
                    "-sha256",
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:32",
                    "-sigopt",
                    "rsa_mgf1_md:sha256",
                ],
            ),
        ] {
            let (status, answer) = daemon.json(
                "POST",
                &format!("/v1/keys/{name}/sign"),
                Some(&sign_body(alg, "data", data)),
            )?;
            assert_eq!(status, 200, "{family} {name} {alg}: {answer}");
            let sig = signature_of(&answer)?;
            assert_eq!(sig.len(), 512, "{family} {name} {alg}");
            assert!(
                openssl_verify(token.dir.path(), cert, data, &sig, &args)?,
                "{family} {name} {alg}: openssl rejects the signature"
            );
            assert!(
                !openssl_verify(token.dir.path(), cert, b"other", &sig, &args)?,
                "{family} {name} {alg}: the check cannot fail"
            );
        }
    }

    // A client assertion whose signature the daemon makes.
    let der = generated.to_der()?;
    let req = AssertionRequest {
        client_id: CLIENT_ID,
        audience: AUDIENCE,
        lifetime_seconds: None,
        claims: None,
        now: time::OffsetDateTime::now_utc(),
        jws: JwsOptions::default(),
    };
    let assertion = jose::client_assertion(&req, &der, &[], |input: &[u8]| {
        let (status, answer) = daemon
            .json(
                "POST",
                "/v1/keys/ed/sign",
                Some(&sign_body("RS256", "data", input)),
            )
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {answer}"));
        }
        signature_of(&answer).map_err(|e| e.to_string())
    })?;
    let pem = String::from_utf8(generated.to_pem()?)?;
    let items = [json!({
        "jws": assertion.jws.jws, "alg": "RS256", "cert_pem": pem,
        "client_id": CLIENT_ID, "audience": AUDIENCE,
    })];
    for (name, answers) in verify_all(&items)? {
        assert_eq!(
            answers[0]["claims"]["jti"],
            assertion.jti.as_str(),
            "{name}"
        );
        let claims = &answers[0]["claims"];
        let lifetime = claims["exp"].as_i64().zip(claims["iat"].as_i64());
        assert_eq!(lifetime.map(|(e, i)| e - i), Some(60), "{family} {name}");
    }
    daemon.stop()?;
    Ok(())
}
on_families!(rsa_4096_end_to_end, [softhsm, kryoptic]);
