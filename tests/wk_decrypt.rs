//! The daemon opens WK's (login.gov.pl) encrypted assertions with an EC P-256 key on a
//! real SoftHSM2 token (imported with `--allow-derive`, configured `purpose =
//! "decrypt"`). The messages are built by an independent implementation, Python
//! `cryptography` (tests/verifiers/wk_encrypt.py), never by this project's code, and
//! the answers are compared byte for byte with what was encrypted.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{provision_with_args, serve_once, wait_for_lines, Daemon};
use common::fixtures::{parse_p11_objects, Leaf};
use common::*;

use crate::common::daemon::{WK_ENC, WK_SIGN};

/// A PESEL no test input shares by accident, and a surname with every Polish letter.
const PESEL: &str = "44051401458";
const SURNAME: &str = "Źdźbło-Żółtkiewicz";

/// The decrypted assertion as WK would put it in the EncryptedAssertion.
fn assertion(extra: &str) -> String {
    format!(
        r#"<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a{extra}" IssueInstant="2026-11-29T10:00:00.000Z" Version="2.0"><saml2:Issuer>int.login.gov.pl</saml2:Issuer><saml2:AttributeStatement><saml2:Attribute Name="http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier"><saml2:AttributeValue>PESEL-{PESEL}</saml2:AttributeValue></saml2:Attribute><saml2:Attribute Name="http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName"><saml2:AttributeValue>{SURNAME}</saml2:AttributeValue></saml2:Attribute><saml2:Attribute Name="http://eidas.europa.eu/attributes/naturalperson/CurrentGivenName"><saml2:AttributeValue>Zażółć Gęślą Jaźń {extra}</saml2:AttributeValue></saml2:Attribute></saml2:AttributeStatement></saml2:Assertion>"#
    )
}

fn verifier() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/verifiers/wk_encrypt.py")
}

/// A WK message encrypted to `leaf` by wk_encrypt.py with `args`: the XML and the
/// EncryptedData CipherValue bytes.
fn encrypt(
    token: &TestToken,
    leaf: &Leaf,
    plaintext: &str,
    args: &[&str],
) -> Result<(String, Vec<u8>)> {
    let stem = format!("m{}", std::process::id() ^ rand_u32());
    let (cert, input, out, cipher) = (
        token.path(&format!("{stem}.pem")),
        token.path(&format!("{stem}.assertion")),
        token.path(&format!("{stem}.xml")),
        token.path(&format!("{stem}.cipher")),
    );
    std::fs::write(&cert, leaf.cert.to_pem()?)?;
    std::fs::write(&input, plaintext)?;
    run_ok(
        Command::new("python3")
            .arg(verifier())
            .arg("--cert")
            .arg(&cert)
            .arg("--assertion")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg("--cipher-out")
            .arg(&cipher)
            .args(args),
    )?;
    Ok((std::fs::read_to_string(&out)?, std::fs::read(&cipher)?))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rng");
    u32::from_ne_bytes(b)
}

fn decrypt(daemon: &Daemon, key: &str, xml: &str) -> Result<(u16, serde_json::Value)> {
    let body = serde_json::json!({ "xml": xml }).to_string();
    daemon.json("POST", &format!("/v1/keys/{key}/saml/decrypt"), Some(&body))
}

/// A token with the decrypt key (imported with --allow-derive) and an ES256 sign key,
/// and the daemon serving both.
fn setup(env: &[(&str, &str)]) -> Result<(TestToken, Vec<Leaf>, Daemon)> {
    let token = TestToken::new()?;
    let leaves = provision_with_args(&token, &[WK_ENC, WK_SIGN], &[&["--allow-derive"], &[]])?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &[WK_ENC, WK_SIGN], ""))?;
    let daemon = Daemon::start_with_env(&token, config, env)?;
    Ok((token, leaves, daemon))
}

/// Decrypts a good message and checks the exact bytes: the daemon still works.
fn still_decrypts(token: &TestToken, leaf: &Leaf, daemon: &Daemon) -> Result {
    let plaintext = assertion("still");
    let (xml, _) = encrypt(token, leaf, &plaintext, &[])?;
    let (status, answer) = decrypt(daemon, "wk-enc", &xml)?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["assertion"], plaintext.as_str());
    Ok(())
}

#[test]
fn decrypts_wk_messages_to_the_exact_plaintext() -> Result {
    let (token, leaves, daemon) = setup(&[])?;
    let enc = &leaves[0];
    let cases: &[(&str, &[&str], u64)] = &[
        ("soap-256", &[], 256),
        ("soap-128-under-aes256-uri", &["--content-bits", "128"], 128),
        ("response", &["--shape", "response"], 256),
        ("bare", &["--shape", "bare"], 256),
        ("key-beside", &["--key-beside"], 256),
        ("kw-aes128", &["--kw-bits", "128"], 256),
        (
            "party-v-gmina",
            &["--party-v", "https://e-urzad.gmina-wąchock.pl/saml"],
            256,
        ),
        ("party-v-short", &["--party-v", "gsko"], 256),
        (
            "party-u-prod",
            &[
                "--party-u",
                "login.gov.pl",
                "--party-v",
                "urn:gsko:sp:0000000001",
            ],
            256,
        ),
    ];
    let mut latencies = Vec::new();
    for (name, args, bits) in cases {
        let plaintext = assertion(name);
        let (xml, _) = encrypt(&token, enc, &plaintext, args)?;
        let started = Instant::now();
        let (status, answer) = decrypt(&daemon, "wk-enc", &xml)?;
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["assertion"], plaintext.as_str(), "{name}");
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            answer["assertion_base64"]
                .as_str()
                .ok_or("no assertion_base64")?,
        )?;
        assert_eq!(raw, plaintext.as_bytes(), "{name}: exact bytes");
        assert_eq!(answer["content_key_bits"], *bits, "{name}");
        assert_eq!(answer["key"], "wk-enc");
    }
    latencies.sort();
    eprintln!(
        "decrypt round trip through curl: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    let (_, keys) = daemon.json("GET", "/v1/keys", None)?;
    let purposes: Vec<(String, String)> = keys["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .map(|k| (k["name"].to_string(), k["purpose"].to_string()))
        .collect();
    assert_eq!(
        purposes,
        [
            ("\"wk-enc\"".to_string(), "\"decrypt\"".to_string()),
            ("\"wk-sign\"".to_string(), "\"sign\"".to_string())
        ]
    );
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["keys"][0]["derives"], true, "{health}");
    assert_eq!(health["keys"][0]["signs"], false, "{health}");
    assert_eq!(health["keys"][1]["signs"], true, "{health}");
    Ok(())
}

#[test]
fn every_cryptographic_failure_is_one_answer() -> Result {
    let (token, leaves, daemon) = setup(&[])?;
    let enc = &leaves[0];
    let mut messages = Vec::new();
    for args in [
        &["--tamper", "tag"][..],
        &["--tamper", "wrapped"][..],
        &["--other-recipient"][..],
    ] {
        let (xml, _) = encrypt(&token, enc, &assertion("bad"), args)?;
        let (status, answer) = decrypt(&daemon, "wk-enc", &xml)?;
        assert_eq!(status, 422, "{args:?}: {answer}");
        assert_eq!(answer["error"]["code"], "decrypt_failed", "{args:?}");
        messages.push(answer["error"]["message"].to_string());
        still_decrypts(&token, enc, &daemon)?;
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    Ok(())
}

#[test]
fn bad_structure_and_points_are_refused_before_the_token() -> Result {
    let (token, leaves, daemon) = setup(&[])?;
    let enc = &leaves[0];
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--point", "offcurve"],
            "bad_encrypted_assertion",
            "not a point on P-256",
        ),
        (
            &["--point", "zero"],
            "bad_encrypted_assertion",
            "not a point on P-256",
        ),
        (&["--point", "p384"], "bad_encrypted_assertion", "P-256"),
        (
            &["--twice"],
            "bad_encrypted_assertion",
            "2 saml2:EncryptedAssertion",
        ),
        (
            &[
                "--content-uri",
                "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            ],
            "unsupported_encryption",
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
        ),
    ];
    for (args, code, says) in cases {
        let (xml, _) = encrypt(&token, enc, &assertion("x"), args)?;
        let (status, answer) = decrypt(&daemon, "wk-enc", &xml)?;
        assert_eq!(status, 422, "{args:?}: {answer}");
        assert_eq!(answer["error"]["code"], *code, "{args:?}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{args:?}: {message:?} should say {says:?}"
        );
        still_decrypts(&token, enc, &daemon)?;
    }
    // The parser's refusals are those of the signing routes.
    let (status, answer) = decrypt(
        &daemon,
        "wk-enc",
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>",
    )?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("xml_doctype_forbidden"))
    );
    let (status, answer) = decrypt(
        &daemon,
        "wk-enc",
        "<saml2p:Response xmlns:saml2p=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>",
    )?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("bad_encrypted_assertion"))
    );
    still_decrypts(&token, enc, &daemon)
}

#[test]
fn a_key_does_one_job() -> Result {
    let (token, leaves, daemon) = setup(&[])?;
    let (xml, _) = encrypt(&token, &leaves[0], &assertion("p"), &[])?;
    let (status, answer) = decrypt(&daemon, "wk-sign", &xml)?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("wrong_purpose")),
        "{answer}"
    );
    let sign = common::daemon::sign_body("ES256", "data", b"AuthnRequest");
    let (status, answer) = daemon.json("POST", "/v1/keys/wk-enc/sign", Some(&sign))?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("wrong_purpose")),
        "{answer}"
    );
    let saml = serde_json::json!({ "xml": "<saml2p:AuthnRequest xmlns:saml2p=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_x\"/>" }).to_string();
    let (status, answer) = daemon.json("POST", "/v1/keys/wk-enc/saml/sign", Some(&saml))?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("wrong_purpose")),
        "{answer}"
    );
    let wss = serde_json::json!({ "envelope": "<e/>" }).to_string();
    let (status, answer) = daemon.json("POST", "/v1/keys/wk-enc/wss/sign", Some(&wss))?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("wrong_purpose")),
        "{answer}"
    );
    // The sign key still signs, and the decrypt key still decrypts.
    let (status, answer) = daemon.json("POST", "/v1/keys/wk-sign/sign", Some(&sign))?;
    assert_eq!(status, 200, "{answer}");
    still_decrypts(&token, &leaves[0], &daemon)
}

#[test]
fn a_decrypt_key_without_derive_is_refused_with_the_fix() -> Result {
    let token = TestToken::new()?;
    let leaves = provision_with_args(&token, &[WK_ENC, WK_SIGN], &[&[], &[]])?;
    // At start.
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &[WK_ENC, WK_SIGN], ""))?;
    let (status, log) = serve_once(&token, &config)?;
    assert!(!status.success());
    assert!(log.contains("CKA_DERIVE false"), "{log}");
    assert!(log.contains("--allow-derive"), "{log}");
    assert!(log.contains("hsm-signer import"), "{log}");
    // On reload: the daemon runs with the sign key, then the decrypt key is added.
    std::fs::write(&config, Daemon::config_text(&token, &[WK_SIGN], ""))?;
    let daemon = Daemon::start_with(&token, config.clone())?;
    std::fs::write(&config, Daemon::config_text(&token, &[WK_ENC, WK_SIGN], ""))?;
    daemon.signal("HUP")?;
    common::daemon::wait_until(Duration::from_secs(10), "the reload's refusal", || {
        Ok(daemon.log_text().contains("--allow-derive"))
    })?;
    // The document is read and checked before the key's presence (docs/api.md, the order
    // of checks), so a message that is not WK's gets its own answer...
    let (status, answer) = decrypt(&daemon, "wk-enc", "<x/>")?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("bad_encrypted_assertion")),
        "{answer}"
    );
    // ...and a real one hears that the key is not usable.
    let (xml, _) = encrypt(&token, &leaves[0], &assertion("noderive"), &[])?;
    let (status, answer) = decrypt(&daemon, "wk-enc", &xml)?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("key_unavailable")),
        "{answer}"
    );
    Ok(())
}

#[test]
fn the_key_stays_on_the_token_and_the_pesel_stays_out_of_logs() -> Result {
    let (token, leaves, daemon) = setup(&[("HSM_SIGNER_LOG", "trace")])?;
    let plaintext = assertion("audit");
    let (xml, cipher) = encrypt(&token, &leaves[0], &plaintext, &[])?;
    let (status, answer) = decrypt(&daemon, "wk-enc", &xml)?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["assertion"]
        .as_str()
        .unwrap_or_default()
        .contains(PESEL));
    // The audit record: op decrypt, the ciphertext's hash, nothing of the plaintext.
    let lines = wait_for_lines(&daemon.audit, 1)?;
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let record = records
        .iter()
        .find(|r| r["op"] == "decrypt")
        .ok_or_else(|| format!("no decrypt record in {lines:?}"))?;
    assert_eq!(record["key"], "wk-enc");
    assert_eq!(record["status"], 200);
    assert_eq!(record["algorithm"], "ECDH-ES+kw-aes256+aes256-gcm");
    assert_eq!(
        record["input_sha256"],
        hex::encode(openssl::sha::sha256(&cipher))
    );
    let audit = std::fs::read_to_string(&daemon.audit)?;
    let log = daemon.log_text();
    // Trace level took effect (cryptoki's lines, off by default, are there) and the
    // decryption was logged, without the plaintext.
    assert!(
        log.contains("cryptoki"),
        "the log runs at trace level: {log}"
    );
    assert!(log.contains("WK assertion decrypted"), "{log}");
    for text in [&audit, &log] {
        assert!(!text.contains(PESEL), "PESEL leaked");
        assert!(!text.contains(SURNAME), "surname leaked");
        assert!(!text.contains(&hex::encode(PESEL)), "PESEL leaked as hex");
    }
    // The key is still sensitive and not extractable (pkcs11-tool, a tool we did not write).
    let out = run_ok(token.pkcs11_tool().arg("--list-objects"))?;
    let objects = parse_p11_objects(&String::from_utf8(out.stdout)?);
    let key = objects
        .iter()
        .find(|o| o.is("Private Key") && o.label() == Some(WK_ENC.label))
        .ok_or_else(|| format!("no private key {}: {objects:#?}", WK_ENC.label))?;
    // pkcs11-tool prints "extractable" when CKA_EXTRACTABLE is set; an imported key is
    // "sensitive" and nothing else.
    assert_eq!(key.field("Access"), Some("sensitive"), "{key:#?}");
    let usage = key.field("Usage").ok_or("no Usage line")?;
    assert!(usage.split(", ").any(|u| u == "derive"), "{key:#?}");
    // No derived secret became a token object (CKA_TOKEN false, destroyed at once).
    assert!(objects.iter().all(|o| !o.is("Secret Key")), "{objects:#?}");
    Ok(())
}

/// `saml/decrypt` parses within the configured `[xml]` limits, not the defaults: with
/// `max_elements = 50`, a document of 61 elements is refused as too complex before its
/// structure is read, and a WK message within the limit still decrypts.
#[test]
fn decrypt_applies_the_configured_xml_limits() -> Result {
    let token = TestToken::new()?;
    let leaves = provision_with_args(&token, &[WK_ENC, WK_SIGN], &[&["--allow-derive"], &[]])?;
    let config = token.path("config.toml");
    std::fs::write(
        &config,
        Daemon::config_text(&token, &[WK_ENC, WK_SIGN], "[xml]\nmax_elements = 50"),
    )?;
    let daemon = Daemon::start_with_env(&token, config, &[])?;
    let many = format!("<r>{}</r>", "<x/>".repeat(60));
    let (status, answer) = decrypt(&daemon, "wk-enc", &many)?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("xml_too_complex")),
        "{answer}"
    );
    still_decrypts(&token, &leaves[0], &daemon)
}
