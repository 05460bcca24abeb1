//! `hsm-signer generate`: keys born on the token, each test on its own fresh SoftHSM2
//! token, checked with tools this project did not write: pkcs11-tool for the objects
//! and their attributes, the openssl CLI for the CSR and the certificate, xmlsec1 for a
//! SAML signature the daemon makes with a generated key.

use crate::common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{Daemon, KeySetup};
use common::fixtures::*;
use common::*;
use openssl::pkey::PKey;
use openssl::x509::X509;

const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";
const SUBJECT: &str = "/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl";

/// `generate` on `token` with the given extra arguments, `--json`, expected to succeed.
fn generate(token: &TestToken, args: &[&str]) -> Result<serde_json::Value> {
    let out = run_ok(
        token
            .on_token("generate")
            .args(["--subject", SUBJECT, "--json"])
            .args(args),
    )?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn str_of(v: &serde_json::Value) -> Result<&str> {
    Ok(v.as_str().ok_or_else(|| format!("not a string: {v}"))?)
}

/// The private key, public key and certificate labelled `label`, as pkcs11-tool sees them.
struct Objects {
    private: P11Object,
    public: P11Object,
    cert: Option<P11Object>,
}

fn objects_labelled(token: &TestToken, label: &str) -> Result<Objects> {
    let all = p11_objects(token)?;
    let find = |kind: &str| {
        let mut found = all
            .iter()
            .filter(|o| o.is(kind) && o.label() == Some(label))
            .cloned();
        let one = found.next();
        assert!(
            found.next().is_none(),
            "two {kind} objects labelled {label}"
        );
        one
    };
    Ok(Objects {
        private: find("Private Key").ok_or("no private key")?,
        public: find("Public Key").ok_or("no public key")?,
        cert: find("Certificate"),
    })
}

/// Writes an object's DER value, read with pkcs11-tool, to `out`.
fn read_object(token: &TestToken, kind: &str, label: &str, out: &Path) -> Result {
    Ok(std::fs::write(out, token.read_object(kind, label)?)?)
}

fn openssl(args: &[&str]) -> Result<String> {
    let out = run_ok(Command::new("openssl").args(args))?;
    Ok(String::from_utf8(out.stdout)? + &String::from_utf8_lossy(&out.stderr))
}

/// The self-signed certificate read back from the token, also written as PEM.
fn token_cert(token: &TestToken, label: &str) -> Result<(X509, PathBuf)> {
    let der = token.path(&format!("{label}.der"));
    read_object(token, "cert", label, &der)?;
    let cert = X509::from_der(&std::fs::read(&der)?)?;
    let pem = token.path(&format!("{label}.pem"));
    std::fs::write(&pem, cert.to_pem()?)?;
    Ok((cert, pem))
}

/// The public key object labelled `label`, read with pkcs11-tool. OpenSC 0.23's
/// pkcs11-tool cannot turn a P-384 public key object into a key ("cannot create
/// EVP_PKEY", even for a key it generated itself), so for EC keys it falls back to
/// CKA_EC_PARAMS and CKA_EC_POINT read through this test's own cryptoki session.
/// The curve is taken from `cert`; only the point is compared then.
fn token_public_key(
    token: &TestToken,
    label: &str,
    cert: &X509,
) -> Result<PKey<openssl::pkey::Public>> {
    let der = token.path("pub.der");
    if read_object(token, "pubkey", label, &der).is_ok() {
        return Ok(PKey::public_key_from_der(&std::fs::read(&der)?)?);
    }
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let point = token.with_session(|session| {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        let handle = *found.first().ok_or("no public key object")?;
        let point = session
            .get_attributes(handle, &[AttributeType::EcPoint])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(v) => Some(v),
                _ => None,
            });
        Ok(point.ok_or("no CKA_EC_POINT")?)
    })?;
    let cert_key = cert.public_key()?.ec_key()?;
    let group = cert_key.group();
    // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
    let raw = &point[point.len() - (1 + 2 * group.degree().div_ceil(8) as usize)..];
    let mut ctx = openssl::bn::BigNumContext::new()?;
    let point = openssl::ec::EcPoint::from_bytes(group, raw, &mut ctx)?;
    Ok(PKey::from_ec_key(openssl::ec::EcKey::from_public_key(
        group, &point,
    )?)?)
}

/// The CSR verifies, keeps the Polish subject byte for byte, and encodes countryName as
/// PrintableString and the rest as UTF8String.
fn assert_csr(csr: &Path) -> Result {
    let csr = csr.to_str().ok_or("path")?;
    let verify = openssl(&["req", "-verify", "-in", csr, "-noout"])?;
    assert!(verify.contains("verify OK"), "{verify}");
    let subject = openssl(&["req", "-in", csr, "-noout", "-subject", "-nameopt", "utf8"])?;
    assert_eq!(
        subject.trim(),
        "subject=C=PL, O=Gmina Przykładowo, CN=gsko.przykladowo.pl"
    );
    let asn1 = openssl(&["asn1parse", "-in", csr])?;
    assert!(asn1.contains("PRINTABLESTRING   :PL"), "{asn1}");
    assert!(
        asn1.contains("UTF8STRING        :Gmina Przykładowo"),
        "{asn1}"
    );
    assert!(
        asn1.contains("UTF8STRING        :gsko.przykladowo.pl"),
        "{asn1}"
    );
    Ok(())
}

/// One signing key of `key_type`: generated with a CSR and a self-signed certificate,
/// then checked object by object.
fn sign_key(key_type: &str) -> Result {
    let token = TestToken::new()?;
    let csr = token.path("wk-sign.csr");
    let report = generate(
        &token,
        &[
            "--label",
            "wk-sign",
            "--key-type",
            key_type,
            "--purpose",
            "sign",
            "--csr",
            csr.to_str().ok_or("path")?,
            "--self-signed-days",
            "730",
        ],
    )?;
    assert_eq!(report["purpose"], "sign");
    assert_eq!(report["proof"]["method"], "signature");
    assert_eq!(report["proof"]["verified"], true);
    assert_eq!(report["dual_use"], false);
    let id = str_of(&report["id"])?;

    // pkcs11-tool: protection, usage, and one CKA_ID on all three objects.
    let o = objects_labelled(&token, "wk-sign")?;
    let access = o.private.field("Access").unwrap_or("");
    assert!(
        access.contains("sensitive") && access.contains("never extractable"),
        "{:?}",
        o.private
    );
    assert!(!access.contains(", extractable"), "{:?}", o.private);
    assert_eq!(o.private.field("Usage"), Some("sign"), "{:?}", o.private);
    let cert_obj = o.cert.ok_or("no certificate object")?;
    for obj in [&o.private, &o.public, &cert_obj] {
        assert_eq!(obj.id(), Some(id), "{obj:?}");
    }

    // The certificate: the token's public key, verifies itself, ID = SKI rule.
    let (cert, pem) = token_cert(&token, "wk-sign")?;
    let token_public = token_public_key(&token, "wk-sign", &cert)?;
    assert!(cert.public_key()?.public_eq(&token_public));
    let pem_path = pem.to_str().ok_or("path")?;
    let verified = openssl(&["verify", "-CAfile", pem_path, pem_path])?;
    assert_eq!(verified.trim(), format!("{pem_path}: OK"));
    assert_eq!(
        hex::encode(hsm_signer::cert::CertDer::of(&cert)?.default_id()),
        id
    );
    assert_eq!(
        cert.subject_key_id().map(|s| hex::encode(s.as_slice())),
        Some(id.to_string())
    );

    // The CSR carries the same key.
    assert_csr(&csr)?;
    let req = openssl::x509::X509Req::from_pem(&std::fs::read(&csr)?)?;
    assert!(req.public_key()?.public_eq(&token_public));

    // A signature made on the token by pkcs11-tool verifies against the certificate.
    sign_with_pkcs11_tool_and_verify(&token, "wk-sign", &cert)?;
    Ok(())
}

#[test]
fn ec_p256_sign_key() -> Result {
    sign_key("ec-p256")
}

#[test]
fn ec_p384_sign_key() -> Result {
    sign_key("ec-p384")
}

#[test]
fn rsa_2048_sign_key() -> Result {
    sign_key("rsa-2048")
}

#[test]
fn rsa_3072_sign_key() -> Result {
    sign_key("rsa-3072")
}

#[test]
fn rsa_4096_sign_key() -> Result {
    sign_key("rsa-4096")
}

#[test]
fn ec_p256_decrypt_key_derives_and_no_longer_signs() -> Result {
    let token = TestToken::new()?;
    let csr = token.path("wk-enc.csr");
    let report = generate(
        &token,
        &[
            "--label",
            "wk-enc",
            "--key-type",
            "ec-p256",
            "--purpose",
            "decrypt",
            "--csr",
            csr.to_str().ok_or("path")?,
            "--self-signed-days",
            "730",
        ],
    )?;
    assert_eq!(report["purpose"], "decrypt");
    assert_eq!(report["proof"]["method"], "ecdh");
    assert_eq!(report["proof"]["verified"], true);
    assert_eq!(report["dual_use"], false);
    assert_eq!(report["attributes"]["sign"], false);
    assert_eq!(report["attributes"]["derive"], true);
    let id = str_of(&report["id"])?;

    let o = objects_labelled(&token, "wk-enc")?;
    assert_eq!(o.private.field("Usage"), Some("derive"), "{:?}", o.private);
    let access = o.private.field("Access").unwrap_or("");
    assert!(
        access.contains("sensitive") && access.contains("never extractable"),
        "{:?}",
        o.private
    );
    let cert_obj = o.cert.ok_or("no certificate object")?;
    for obj in [&o.private, &o.public, &cert_obj] {
        assert_eq!(obj.id(), Some(id), "{obj:?}");
    }

    // The key signed its own CSR and certificate before CKA_SIGN was cleared.
    assert_csr(&csr)?;
    let (cert, pem) = token_cert(&token, "wk-enc")?;
    let pem_path = pem.to_str().ok_or("path")?;
    let verified = openssl(&["verify", "-CAfile", pem_path, pem_path])?;
    assert_eq!(verified.trim(), format!("{pem_path}: OK"));
    let text = openssl(&["x509", "-in", pem_path, "-noout", "-ext", "keyUsage"])?;
    assert!(text.contains("Key Agreement"), "{text}");

    // Now it cannot sign...
    let digest = token.path("digest");
    std::fs::write(&digest, [7u8; 32])?;
    let refused = run_fails(
        token
            .pkcs11_tool()
            .args(["--sign", "-m", "ECDSA", "--id", id, "--input-file"])
            .arg(&digest)
            .arg("-o")
            .arg(token.path("sig")),
    )?;
    assert!(
        refused.contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
        "{refused}"
    );

    // ...but ECDH through pkcs11-tool gives what OpenSSL computes from the certificate.
    let peer = KeySpec::P256.generate()?;
    let peer_pub = token.path("peer.der");
    std::fs::write(&peer_pub, peer.public_key_to_der()?)?;
    let z_token = token.path("z");
    run_ok(
        token
            .pkcs11_tool()
            .args(["--derive", "-m", "ECDH1-DERIVE", "--id", id, "--input-file"])
            .arg(&peer_pub)
            .arg("--output-file")
            .arg(&z_token),
    )?;
    let cert_public = cert.public_key()?;
    let mut deriver = openssl::derive::Deriver::new(&peer)?;
    deriver.set_peer(&cert_public)?;
    assert_eq!(std::fs::read(&z_token)?, deriver.derive_to_vec()?);

    // `list` says what the key is for, and finds nothing wrong with it.
    let list = run_ok(&mut token.on_token("list"))?;
    let list = String::from_utf8(list.stdout)?;
    assert!(
        list.contains("Use:          decrypt (ECDH, CKA_DERIVE)"),
        "{list}"
    );
    assert!(!list.contains("PROBLEM"), "{list}");
    Ok(())
}

#[test]
fn csr_signed_by_a_ca_goes_in_with_import_cert() -> Result {
    let token = TestToken::new()?;
    let csr = token.path("wk.csr");
    let report = generate(
        &token,
        &[
            "--label",
            "wk-sign",
            "--key-type",
            "ec-p256",
            "--purpose",
            "sign",
            "--csr",
            csr.to_str().ok_or("path")?,
        ],
    )?;
    assert!(report["certificate"].is_null());
    // The CA side, done by the openssl CLI from the CSR file alone.
    let ca = Ca::sigillum()?;
    let (ca_pem, ca_key) = (token.path("ca.pem"), token.path("ca.key"));
    std::fs::write(&ca_pem, ca.cert.to_pem()?)?;
    std::fs::write(&ca_key, ca.key.private_key_to_pem_pkcs8()?)?;
    let issued_path = token.path("issued.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "730",
                "-copy_extensions",
                "copy",
                "-in",
            ])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_pem)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-out")
            .arg(&issued_path),
    )?;
    let issued = X509::from_pem(&std::fs::read(&issued_path)?)?;
    run_ok(
        token
            .on_token("import-cert")
            .args(["--label", "wk-sign", "--cert"])
            .arg(&issued_path),
    )?;
    let o = objects_labelled(&token, "wk-sign")?;
    let cert_obj = o.cert.ok_or("no certificate after import-cert")?;
    assert_eq!(cert_obj.id(), Some(str_of(&report["id"])?));
    sign_with_pkcs11_tool_and_verify(&token, "wk-sign", &issued)?;
    Ok(())
}

// --- Refusals: a specific message, non-zero exit, the token unchanged ---

/// A token that already holds an imported key labelled "gsko-existing".
struct Refusing {
    token: TestToken,
    before: Vec<String>,
}

fn refusing() -> Result<Refusing> {
    let token = TestToken::new()?;
    let before = baseline(&token, "gsko-existing")?;
    Ok(Refusing { token, before })
}

impl Refusing {
    /// Runs `cmd`, which must fail saying each of `needles`, and leave the token as it was.
    fn refused(&self, cmd: &mut Command, needles: &[&str]) -> Result<String> {
        let out = cmd.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "succeeded: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
        }
        assert_eq!(self.token.objects()?, self.before, "the token changed");
        Ok(stderr)
    }

    fn generate(&self, pin: bool) -> Command {
        let mut cmd = if pin {
            self.token.on_token("generate")
        } else {
            let mut cmd = self.token.hsm_signer();
            cmd.args(["generate", "--module", MODULE, "--token", &self.token.label]);
            cmd
        };
        cmd.args(["--label", "wk-sign", "--key-type", "ec-p256"])
            .args(["--purpose", "sign", "--self-signed-days", "30"]);
        cmd
    }
}

#[test]
fn existing_label_is_refused() -> Result {
    let r = refusing()?;
    let mut cmd = r.token.on_token("generate");
    cmd.args(["--label", "gsko-existing", "--key-type", "ec-p256"])
        .args(["--purpose", "sign", "--self-signed-days", "30"])
        .args(["--subject", SUBJECT]);
    r.refused(
        &mut cmd,
        &[
            "already holds 3 object(s) labelled \"gsko-existing\"",
            "choose another --label",
            "nothing was created",
        ],
    )?;
    Ok(())
}

#[test]
fn decrypt_with_rsa_is_refused() -> Result {
    let r = refusing()?;
    let mut cmd = r.token.on_token("generate");
    cmd.args(["--label", "wk-enc", "--key-type", "rsa-2048"])
        .args(["--purpose", "decrypt", "--self-signed-days", "30"])
        .args(["--subject", SUBJECT]);
    r.refused(
        &mut cmd,
        &[
            "--purpose decrypt takes --key-type ec-p256 only",
            "RSA-2048",
        ],
    )?;
    Ok(())
}

#[test]
fn operations_that_do_not_fit_the_purpose_are_refused_before_the_token() -> Result {
    let r = refusing()?;
    r.refused(
        r.generate(false)
            .args(["--subject", SUBJECT, "--operations", "jwt,decrypt"]),
        &[
            "--operations decrypt does not fit --purpose sign",
            "nothing was created",
        ],
    )?;
    r.refused(
        r.generate(false)
            .args(["--subject", SUBJECT, "--operations", "jwt,xml"]),
        &[
            "unknown operation \"xml\"",
            "sign, wss, saml, decrypt, jws, jwt, xades",
        ],
    )?;
    Ok(())
}

/// `generate` prints the key's `[[keys]]` table with the operations asked for (text), and a
/// decryption key's with `["decrypt"]` and no algorithm (JSON); that such tables load as a
/// configuration is checked by `generate::rule`'s unit tests.
#[test]
fn the_printed_keys_table_names_the_operations() -> Result {
    let token = TestToken::new()?;
    let out = token
        .on_token("generate")
        .args([
            "--label",
            "ksef-auth",
            "--key-type",
            "ec-p256",
            "--purpose",
            "sign",
        ])
        .args(["--subject", SUBJECT, "--self-signed-days", "30"])
        .args(["--operations", "xades,jws"])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: String = text
        .lines()
        .skip_while(|l| !l.starts_with("Configure:"))
        .skip(1)
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(
        table.starts_with("[[keys]]\nname = \"ksef-auth\"\nlabel = \"ksef-auth\"\nalgorithms = [\"ES256\"]\noperations = [\"xades\", \"jws\"]\n"),
        "{table}"
    );
    let json = generate(
        &token,
        &[
            "--label",
            "wk-enc",
            "--key-type",
            "ec-p256",
            "--purpose",
            "decrypt",
            "--self-signed-days",
            "30",
        ],
    )?;
    let decrypt = str_of(&json["config"])?;
    assert!(
        decrypt.contains("purpose = \"decrypt\"\noperations = [\"decrypt\"]\n"),
        "{decrypt}"
    );
    assert!(!decrypt.contains("algorithms"), "{decrypt}");
    Ok(())
}

#[test]
fn bad_subjects_are_refused_with_the_form_to_use() -> Result {
    let r = refusing()?;
    r.refused(
        r.generate(true).args([
            "--subject",
            "CN=gsko.przykladowo.pl,O=Gmina Przykładowo,C=PL",
        ]),
        &[
            "is not in OpenSSL's form",
            "RFC 4514",
            "/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl",
        ],
    )?;
    r.refused(
        r.generate(true).args(["--subject", "/C=Polska/CN=x"]),
        &["C=\"Polska\" must be two capital letters"],
    )?;
    r.refused(
        r.generate(true).args(["--subject", "/C=PL/O=Gmina"]),
        &["--subject has no CN"],
    )?;
    r.refused(
        r.generate(true).args(["--subject", "/C=PL/FOO=1/CN=x"]),
        &["unknown attribute \"FOO\""],
    )?;
    Ok(())
}

#[test]
fn wrong_pin_is_tried_once() -> Result {
    let r = refusing()?;
    let wrong = secret_file(r.token.dir.path(), "wrong.pin", "4321")?;
    let spy_log = r.token.path("spy.log");
    let mut cmd = r.token.hsm_signer();
    cmd.env("PKCS11SPY", MODULE)
        .env("PKCS11SPY_OUTPUT", &spy_log)
        .args([
            "generate",
            "--module",
            "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
        ])
        .args(["--token", &r.token.label, "--pin-file"])
        .arg(&wrong)
        .args([
            "--label",
            "wk-sign",
            "--key-type",
            "ec-p256",
            "--purpose",
            "sign",
        ])
        .args(["--self-signed-days", "30", "--subject", SUBJECT]);
    let out = cmd.output()?;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("wrong PIN for token \"{}\"", r.token.label))
            && stderr.contains("not retried"),
        "{stderr}"
    );
    let spy = std::fs::read_to_string(&spy_log)?;
    assert_eq!(spy.matches("C_Login").count(), 1, "{spy}");
    assert!(
        !spy.contains("C_GenerateKeyPair"),
        "generated before login?"
    );
    assert_eq!(r.token.objects()?, r.before);
    Ok(())
}

#[test]
fn no_pin_source_without_a_terminal_is_refused() -> Result {
    let r = refusing()?;
    r.refused(
        r.generate(false).args(["--subject", SUBJECT]),
        &[
            "no token PIN given and no terminal to ask on",
            "--pin-file",
            "HSM_SIGNER_PIN",
        ],
    )?;
    Ok(())
}

#[test]
fn unwritable_csr_path_is_refused_before_the_token_is_touched() -> Result {
    let r = refusing()?;
    r.refused(
        r.generate(true)
            .args(["--subject", SUBJECT, "--csr", "/nonexistent-dir/wk.csr"]),
        &[
            "cannot write the CSR to /nonexistent-dir/wk.csr",
            "does not exist",
            "nothing was created",
        ],
    )?;
    Ok(())
}

#[test]
fn failure_after_generation_removes_everything_created() -> Result {
    // The CSR is the one file here larger than RLIMIT_FSIZE: a subject of twelve
    // 64-character OUs makes it about 1.7 kB, while SoftHSM's object files stay under
    // 1.2 kB. With SIGXFSZ ignored (the shell's `trap "" XFSZ` survives exec), writing it
    // fails with EFBIG after the key exists and is proven. pkcs11-spy logs every call
    // into a FIFO (no pipe is under RLIMIT_FSIZE), to show that the key was made and
    // then destroyed.
    let r = refusing()?;
    let spy_fifo = r.token.path("spy.fifo");
    nix::unistd::mkfifo(&spy_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let reader = {
        let fifo = spy_fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo))
    };
    let mut subject = String::from("/C=PL/O=Gmina Przykładowo");
    for i in 0..12 {
        subject.push_str(&format!("/OU={i:02}{}", "x".repeat(62)));
    }
    subject.push_str("/CN=gsko.przykladowo.pl");
    let csr = r.token.path("wk.csr");
    let mut cmd = Command::new("bash");
    cmd.envs(r.token.env.iter().map(|(k, v)| (k, v)))
        .env("PKCS11SPY", MODULE)
        .env("PKCS11SPY_OUTPUT", &spy_fifo)
        .args([
            "-c",
            r#"trap "" XFSZ; exec prlimit --fsize=1500 -- "$@""#,
            "bash",
        ])
        .arg(env!("CARGO_BIN_EXE_hsm-signer"))
        .args(["generate", "--module", SPY, "--token", &r.token.label])
        .arg("--pin-file")
        .arg(&r.token.pin_file)
        .args([
            "--label",
            "wk-sign",
            "--key-type",
            "ec-p256",
            "--purpose",
            "sign",
        ])
        .args(["--subject", &subject, "--csr"])
        .arg(&csr);
    let refused = r.refused(
        &mut cmd,
        &[
            &format!(
                "writing the CSR to {} failed: File too large",
                csr.display()
            ),
            "every object created was removed, the token is as it was",
        ],
    );
    // Should the spy never have opened its FIFO, this open ends the reader's wait.
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&spy_fifo),
    );
    let spy = reader.join().map_err(|_| "spy reader panicked")??;
    refused?;
    assert!(!csr.exists(), "a partial CSR was left behind");
    assert_eq!(spy.matches("C_GenerateKeyPair").count(), 1, "{spy}");
    // The key and its public key, destroyed.
    assert_eq!(spy.matches("C_DestroyObject").count(), 2, "{spy}");
    Ok(())
}

#[test]
fn the_csr_is_a_new_file_never_written_through_a_symlink() -> Result {
    let r = refusing()?;
    let target = r.token.path("precious.txt");
    std::fs::write(&target, "keep me")?;
    let link = r.token.path("wk.csr");
    std::os::unix::fs::symlink(&target, &link)?;
    for force in [false, true] {
        let mut cmd = r.generate(true);
        cmd.args(["--subject", SUBJECT, "--csr"]).arg(&link);
        if force {
            cmd.arg("--force");
        }
        r.refused(
            &mut cmd,
            &[
                &format!("cannot write the CSR to {}", link.display()),
                "it is a symbolic link, which is never written through or replaced",
                "nothing was created",
            ],
        )?;
    }
    assert_eq!(std::fs::read_to_string(&target)?, "keep me");
    // An existing regular file is kept, unless --force replaces it.
    let old = r.token.path("old.csr");
    std::fs::write(&old, "old")?;
    r.refused(
        r.generate(true)
            .args(["--subject", SUBJECT, "--csr"])
            .arg(&old),
        &["it already exists (regular file)", "--force"],
    )?;
    assert_eq!(std::fs::read_to_string(&old)?, "old");
    run_ok(
        r.generate(true)
            .args(["--subject", SUBJECT, "--force", "--csr"])
            .arg(&old),
    )?;
    assert_csr(&old)?;
    Ok(())
}

// --- The daemon signs with a generated key ---

const AUTHN_ID: &str = "ID-6a7c8f2e-54e1-4d59-bb7a-1b3e36a0c111";

fn authn_request() -> String {
    format!(
        r#"<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" AssertionConsumerServiceURL="https://gsko.przykladowo.pl/wk/acs" Destination="https://symulator.login.gov.pl/login/SingleSignOnService" ID="{AUTHN_ID}" IssueInstant="2026-03-01T10:00:00.000Z" Version="2.0"><saml2:Issuer>https://gsko.przykladowo.pl</saml2:Issuer><saml2p:NameIDPolicy AllowCreate="true"/></saml2p:AuthnRequest>"#
    )
}

fn xmlsec1_verify(xml: &Path, cert: &Path) -> Result<(bool, String)> {
    let out = Command::new("xmlsec1")
        .args([
            "--verify",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest",
            "--pubkey-cert-pem",
        ])
        .arg(cert)
        .arg(xml)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

#[test]
fn daemon_signs_an_authn_request_with_a_generated_key() -> Result {
    let token = TestToken::new()?;
    generate(
        &token,
        &[
            "--label",
            "wk-sign",
            "--key-type",
            "ec-p256",
            "--purpose",
            "sign",
            "--self-signed-days",
            "730",
        ],
    )?;
    let (_, self_pem) = token_cert(&token, "wk-sign")?;
    let setup = KeySetup {
        name: "wk",
        label: "wk-sign",
        spec: KeySpec::P256,
        algorithms: &["ES256"],
        extra: "",
    };
    let daemon = Daemon::start(&token, &[setup], "")?;
    let body = serde_json::json!({ "xml": authn_request() });
    let (status, answer) = daemon.json("POST", "/v1/keys/wk/saml/sign", Some(&body.to_string()))?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["algorithm"], "ES256");
    let signed = str_of(&answer["xml"])?;
    let xml = token.path("signed.xml");
    std::fs::write(&xml, signed)?;
    let (ok, out) = xmlsec1_verify(&xml, &self_pem)?;
    assert!(ok, "xmlsec1 rejected:\n{out}");
    assert!(out.contains("SignedInfo References (ok/all): 1/1"), "{out}");

    // Control: the same signature over a changed Issuer must not verify.
    let tampered = token.path("tampered.xml");
    std::fs::write(
        &tampered,
        signed.replace("https://gsko.przykladowo.pl<", "https://evil.example<"),
    )?;
    let (ok, out) = xmlsec1_verify(&tampered, &self_pem)?;
    assert!(!ok, "xmlsec1 accepted a tampered request:\n{out}");
    Ok(())
}
