//! Wrapped import (`import --method unwrap`) against real SoftHSM2: every key type the
//! plain import handles, checked by hsm-signer's proof and independently by pkcs11-tool
//! and openssl; what is left on the token (exactly key, public key, certificate, CA, and
//! no session objects); the key's protection; `--method auto`; and a failure in the
//! middle of the unwrap, which must leave the token as it was.

use crate::common;

use std::path::PathBuf;

use common::fixtures::*;
use common::*;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType as T, ObjectClass};
use hsm_signer::import::{self, ImportError, ImportRequest, Method, MethodChoice};
use hsm_signer::token::{OpenToken, TokenSelector};
use secrecy::SecretString;
use serde_json::Value;

struct Setup {
    token: TestToken,
    leaf: Leaf,
    p12: PathBuf,
    password: PathBuf,
}

fn setup(spec: KeySpec) -> Result<Setup> {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(spec)?;
    let p12 = token.path("gsko.p12");
    write_p12(&p12, &leaf, &ca, "gsko-wrapped", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12.pw", POLISH_PASSWORD)?;
    Ok(Setup {
        token,
        leaf,
        p12,
        password,
    })
}

fn import_json(s: &Setup, method: &str) -> Result<Value> {
    let out = run_ok(
        import_cmd(&s.token, &s.p12, &s.password)
            .args(["--method", method])
            .arg("--json"),
    )?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Exactly four objects on the token, as pkcs11-tool lists them: the key, its public key
/// and its certificate under one label and ID, and the CA certificate.
fn assert_exactly_key_pubkey_cert_ca(s: &Setup, id: &str) -> Result {
    let objects = p11_objects(&s.token)?;
    let count = |kind: &str| objects.iter().filter(|o| o.is(kind)).count();
    assert_eq!(objects.len(), 4, "{objects:#?}");
    assert_eq!(count("Private Key"), 1, "{objects:#?}");
    assert_eq!(count("Public Key"), 1, "{objects:#?}");
    assert_eq!(count("Certificate"), 2, "{objects:#?}");
    for o in &objects {
        if o.label() == Some("gsko-wrapped") {
            assert_eq!(o.id(), Some(id), "{o:#?}");
        } else {
            assert!(o.is("Certificate"), "stray object {o:#?}");
            assert_eq!(o.label(), Some("Sigillum Test CA"), "{o:#?}");
        }
    }
    let key = objects
        .iter()
        .find(|o| o.is("Private Key"))
        .ok_or("no key")?;
    // Sensitive, and neither "extractable" nor "never extractable" (an imported key).
    assert_eq!(key.field("Access"), Some("sensitive"), "{key:#?}");
    let usage = key.field("Usage").ok_or("no Usage line")?;
    assert!(usage.split(", ").any(|u| u == "sign"), "{usage}");
    assert!(
        !usage.contains("unwrap") && !usage.contains("decrypt"),
        "{usage}"
    );
    Ok(())
}

fn unwrap_import_of(spec: KeySpec, kind: Value) -> Result {
    let s = setup(spec)?;
    let report = import_json(&s, "unwrap")?;
    assert_eq!(report["method"], "unwrap", "{report:#}");
    assert_eq!(report["key"], kind, "{report:#}");
    assert_eq!(report["proof"]["signature_verified"], true, "{report:#}");
    assert_eq!(report["attributes"]["sensitive"], true, "{report:#}");
    assert_eq!(report["attributes"]["extractable"], false, "{report:#}");
    assert_eq!(
        report["certificate"]["serial"],
        s.leaf.serial_hex()?,
        "{report:#}"
    );
    let id = report["id"].as_str().ok_or("no id")?;
    assert_exactly_key_pubkey_cert_ca(&s, id)?;
    sign_with_pkcs11_tool_and_verify(&s.token, "gsko-wrapped", &s.leaf.cert)?;
    // hsm-signer's own verify, in a new process, on what was left.
    let text = String::from_utf8(
        run_ok(s.token.on_token("verify").args(["--label", "gsko-wrapped"]))?.stdout,
    )?;
    assert!(text.starts_with("Key works."), "{text}");
    Ok(())
}

#[test]
fn unwrap_rsa_2048() -> Result {
    unwrap_import_of(
        KeySpec::Rsa(2048),
        serde_json::json!({"type": "RSA", "bits": 2048}),
    )
}

#[test]
fn unwrap_rsa_3072() -> Result {
    unwrap_import_of(
        KeySpec::Rsa(3072),
        serde_json::json!({"type": "RSA", "bits": 3072}),
    )
}

#[test]
fn unwrap_rsa_4096() -> Result {
    unwrap_import_of(
        KeySpec::Rsa(4096),
        serde_json::json!({"type": "RSA", "bits": 4096}),
    )
}

#[test]
fn unwrap_ec_p256() -> Result {
    unwrap_import_of(
        KeySpec::P256,
        serde_json::json!({"type": "EC", "curve": "P-256"}),
    )
}

#[test]
fn unwrap_ec_p384() -> Result {
    unwrap_import_of(
        KeySpec::P384,
        serde_json::json!({"type": "EC", "curve": "P-384"}),
    )
}

#[test]
fn unwrap_ec_p521() -> Result {
    unwrap_import_of(
        KeySpec::P521,
        serde_json::json!({"type": "EC", "curve": "P-521"}),
    )
}

#[test]
fn auto_on_softhsm_creates_and_says_so() -> Result {
    let s = setup(KeySpec::P256)?;
    let text = String::from_utf8(
        run_ok(import_cmd(&s.token, &s.p12, &s.password).args(["--method", "auto"]))?.stdout,
    )?;
    assert!(text.starts_with("Imported and proven.\n"), "{text}");
    assert!(
        text.contains("Method:       create (the key was written with C_CreateObject)"),
        "{text}"
    );
    // The default is auto, and JSON says the same.
    let again = setup(KeySpec::Rsa(2048))?;
    let out = run_ok(import_cmd(&again.token, &again.p12, &again.password).arg("--json"))?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["method"], "create", "{report:#}");
    Ok(())
}

#[test]
fn unwrap_text_output_names_the_method() -> Result {
    let s = setup(KeySpec::Rsa(2048))?;
    let text = String::from_utf8(
        run_ok(import_cmd(&s.token, &s.p12, &s.password).args(["--method", "unwrap"]))?.stdout,
    )?;
    assert!(
        text.contains("Method:       unwrap (the key entered the token wrapped"),
        "{text}"
    );
    Ok(())
}

#[test]
fn unwrapped_key_is_sensitive_and_cannot_be_read_out() -> Result {
    let s = setup(KeySpec::Rsa(2048))?;
    import_json(&s, "unwrap")?;
    s.token.with_session(|session| {
        let keys = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"gsko-wrapped".to_vec()),
        ])?;
        let [key] = keys.as_slice() else {
            return Err(format!("{} private keys", keys.len()).into());
        };
        let secret = [T::PrivateExponent, T::Prime1, T::Prime2, T::Coefficient];
        let info = session.get_attribute_info(*key, &secret)?;
        assert!(
            info.iter().all(|i| matches!(i, AttributeInfo::Sensitive)),
            "{info:?}"
        );
        for flag in session.get_attributes(
            *key,
            &[
                T::Sensitive,
                T::Extractable,
                T::Token,
                T::Private,
                T::Unwrap,
            ],
        )? {
            match flag {
                Attribute::Sensitive(b) | Attribute::Token(b) | Attribute::Private(b) => {
                    assert!(b, "{flag:?}")
                }
                Attribute::Extractable(b) | Attribute::Unwrap(b) => assert!(!b, "{flag:?}"),
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        // The modulus is public and there: the query works, the token built the key.
        assert!(matches!(
            session.get_attribute_info(*key, &[T::Modulus])?[..],
            [AttributeInfo::Available(256)]
        ));
        Ok(())
    })
}

// --- In this process, through the library: session objects are visible only to the
// application that made them, so this is where their absence can be checked. ---

fn request(s: &Setup, method: MethodChoice) -> ImportRequest {
    ImportRequest {
        p12: s.p12.clone(),
        cert: None,
        label: None,
        id: None,
        replace: false,
        allow_derive: false,
        method,
    }
}

fn open(token: &TestToken, rw: bool) -> Result<OpenToken> {
    let open = OpenToken::open(
        std::path::Path::new(MODULE),
        &TokenSelector::parse(&token.label)?,
        rw,
    )?;
    open.login(&SecretString::from(PIN), false)?;
    Ok(open)
}

fn session_objects(token: &OpenToken) -> Result<usize> {
    Ok(token
        .session
        .find_objects(&[Attribute::Token(false)])?
        .len())
}

#[test]
fn no_session_object_is_left_after_an_unwrap_import() -> Result {
    let s = setup(KeySpec::P384)?;
    let token = open(&s.token, true)?;
    assert_eq!(session_objects(&token)?, 0);
    let password = SecretString::from(POLISH_PASSWORD);
    let prepared = import::prepare(request(&s, MethodChoice::Unwrap), &password)?;
    let imported = import::store(&token, prepared)?;
    assert_eq!(imported.method, Method::Unwrap);
    assert_eq!(
        session_objects(&token)?,
        0,
        "the transport key pair or the AES key was left behind"
    );
    // Token objects: the key, its public key, its certificate and the CA, nothing else.
    assert_eq!(
        token.session.find_objects(&[Attribute::Token(true)])?.len(),
        4
    );
    Ok(())
}

#[test]
fn failure_in_the_middle_of_an_unwrap_leaves_the_token_and_session_clean() -> Result {
    // A read-only session may hold session objects but not token objects: the transport
    // key pair and the AES key are made, and the final C_UnwrapKey of the private key
    // (a token object) fails with CKR_SESSION_READ_ONLY, after three temporary objects
    // exist. Everything must be gone afterwards.
    let s = setup(KeySpec::Rsa(2048))?;
    let before = baseline(&s.token, "gsko-existing")?;
    let token = open(&s.token, false)?;
    let password = SecretString::from(POLISH_PASSWORD);
    let prepared = import::prepare(request(&s, MethodChoice::Unwrap), &password)?;
    let err = match import::store(&token, prepared) {
        Ok(_) => return Err("an import through a read-only session succeeded".into()),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, ImportError::Unwrap(_)), "{err:?}");
    assert!(
        text.contains("unwrapping the private key into the token (CKM_AES_KEY_WRAP_PAD)")
            && text.contains("UnwrapKey returned CKR_SESSION_READ_ONLY"),
        "{text}"
    );
    assert_eq!(
        session_objects(&token)?,
        0,
        "temporary objects left: {text}"
    );
    drop(token);
    assert_eq!(s.token.objects()?, before, "token changed");
    Ok(())
}
