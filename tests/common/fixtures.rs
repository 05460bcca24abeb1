//! Fixtures made at test time, never checked in: a Sigillum-like CA, certificates for a
//! municipality's GSKO signed by it, and `.p12` files written by the independent writers
//! real files come from (the openssl crate and CLI, Java keytool, GnuTLS certtool).
//!
//! Also the cross-checks that use tools this project did not write: pkcs11-tool to list
//! what landed on the token and to sign with it, and `openssl dgst` to verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};

use super::{run_fails, run_ok, write_secret, Result, TestToken};

/// What operators type: a .p12 password with Polish letters.
pub const POLISH_PASSWORD: &str = "Zażółć gęślą jaźń";
/// The municipality's GSKO host, the CN of every leaf certificate.
pub const GSKO_CN: &str = "gsko.przykladowo.pl";

/// A kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this many bits.
    Rsa(u32),
    /// EC P-256.
    P256,
    /// EC P-384.
    P384,
    /// EC P-521.
    P521,
    /// Ed25519 (which hsm-signer refuses).
    Ed25519,
}

impl KeySpec {
    /// A fresh key. OpenSSL is C, so even RSA-4096 is quick in a debug build.
    pub fn generate(self) -> Result<PKey<Private>> {
        let ec = |nid: Nid| -> Result<PKey<Private>> {
            Ok(PKey::from_ec_key(EcKey::generate(
                EcGroup::from_curve_name(nid)?.as_ref(),
            )?)?)
        };
        match self {
            KeySpec::Rsa(bits) => Ok(PKey::from_rsa(Rsa::generate(bits)?)?),
            KeySpec::P256 => ec(Nid::X9_62_PRIME256V1),
            KeySpec::P384 => ec(Nid::SECP384R1),
            KeySpec::P521 => ec(Nid::SECP521R1),
            KeySpec::Ed25519 => Ok(PKey::generate_ed25519()?),
        }
    }

    /// True for the EC curves.
    pub fn is_ec(self) -> bool {
        matches!(self, KeySpec::P256 | KeySpec::P384 | KeySpec::P521)
    }
}

/// A certification authority standing in for Sigillum (PCCE, PWPW).
pub struct Ca {
    /// Its key.
    pub key: PKey<Private>,
    /// Its self-signed certificate.
    pub cert: X509,
}

/// A key and the certificate the CA issued for it.
pub struct Leaf {
    /// The private key.
    pub key: PKey<Private>,
    /// The certificate.
    pub cert: X509,
}

fn name(entries: &[(&str, &str)]) -> Result<X509Name> {
    let mut name = X509NameBuilder::new()?;
    for (field, value) in entries {
        name.append_entry_by_text(field, value)?;
    }
    Ok(name.build())
}

/// A random positive 63-bit serial, so that its hex has no leading zero byte and every
/// certificate's serial differs.
fn random_serial() -> Result<Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(63, MsbOption::ONE, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn builder(subject: &X509Name, key: &PKey<Private>, days: u32) -> Result<X509Builder> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

impl Ca {
    /// "C=PL, O=Polska Wytwórnia Papierów Wartościowych S.A., CN=Sigillum Test CA".
    pub fn sigillum() -> Result<Self> {
        Self::named("Sigillum Test CA")
    }

    /// A CA with this CN, RSA-2048, valid ten years.
    pub fn named(cn: &str) -> Result<Self> {
        let key = KeySpec::Rsa(2048).generate()?;
        let subject = name(&[
            ("C", "PL"),
            ("O", "Polska Wytwórnia Papierów Wartościowych S.A."),
            ("CN", cn),
        ])?;
        let mut b = builder(&subject, &key, 3650)?;
        b.set_issuer_name(&subject)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            cert: b.build(),
            key,
        })
    }

    /// Issues a 2-year certificate for `key`: "C=PL, O=Gmina Przykładowo, CN=`cn`", with a
    /// Subject Key Identifier made by OpenSSL's default (RFC 5280 method 1) hash.
    pub fn issue(&self, key: &PKey<Private>, cn: &str) -> Result<X509> {
        self.issue_until(key, cn, Asn1Time::days_from_now(730)?)
    }

    /// Like [`Ca::issue`], valid from a day ago until `not_after` (which may be past).
    pub fn issue_until(&self, key: &PKey<Private>, cn: &str, not_after: Asn1Time) -> Result<X509> {
        let subject = name(&[("C", "PL"), ("O", "Gmina Przykładowo"), ("CN", cn)])?;
        let mut b = builder(&subject, key, 730)?;
        let yesterday = Asn1Time::from_unix(time_now() - 86_400)?;
        b.set_not_before(&yesterday)?;
        b.set_not_after(&not_after)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .non_repudiation()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// A fresh key of `spec` with a certificate for [`GSKO_CN`].
    pub fn leaf(&self, spec: KeySpec) -> Result<Leaf> {
        let key = spec.generate()?;
        let cert = self.issue(&key, GSKO_CN)?;
        Ok(Leaf { key, cert })
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Leaf {
    /// The serial as hsm-signer reports it: lower-case hex.
    pub fn serial_hex(&self) -> Result<String> {
        Ok(self
            .cert
            .serial_number()
            .to_bn()?
            .to_hex_str()?
            .to_lowercase())
    }

    /// The certificate's SHA-256 fingerprint, lower-case hex.
    pub fn sha256_hex(&self) -> Result<String> {
        Ok(hex::encode(self.cert.digest(MessageDigest::sha256())?))
    }
}

/// A leaf's key, certificate and CA certificate as PEM files, for the CLI writers.
pub struct Pem {
    /// PKCS#8 private key.
    pub key: PathBuf,
    /// The leaf certificate.
    pub cert: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
}

/// Writes `leaf` and `ca` as `STEM.key`, `STEM.pem`, `STEM-ca.pem` in `dir`.
pub fn write_pem(dir: &Path, stem: &str, leaf: &Leaf, ca: &Ca) -> Result<Pem> {
    let pem = Pem {
        key: dir.join(format!("{stem}.key")),
        cert: dir.join(format!("{stem}.pem")),
        ca: dir.join(format!("{stem}-ca.pem")),
    };
    std::fs::write(&pem.key, leaf.key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(&pem.cert, leaf.cert.to_pem()?)?;
    std::fs::write(&pem.ca, ca.cert.to_pem()?)?;
    Ok(pem)
}

/// Writes `value` to `dir/name` with mode 0600 and returns the path.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    write_secret(&path, value)?;
    Ok(path)
}

/// How the openssl crate encrypts a `.p12` it builds.
#[derive(Debug, Clone, Copy)]
pub struct Pbes2 {
    /// The cipher for both the key and the certificates (AES_128_CBC or AES_256_CBC).
    pub cipher: Nid,
    /// PBKDF2 and MAC iterations.
    pub iter: u32,
}

/// Builds a PBES2 `.p12` (PBKDF2-HMAC-SHA256, AES-CBC, SHA-256 MAC) with the openssl
/// crate's `Pkcs12::builder()`. `chain` goes in as the CA certificates.
pub fn p12_in_code(
    key: &PKey<Private>,
    cert: Option<&X509>,
    chain: &[&X509],
    friendly_name: Option<&str>,
    password: &str,
    pbes2: Pbes2,
) -> Result<Vec<u8>> {
    let mut b = Pkcs12::builder();
    b.pkey(key)
        .key_algorithm(pbes2.cipher)
        .cert_algorithm(pbes2.cipher)
        .mac_md(MessageDigest::sha256())
        .key_iter(pbes2.iter)
        .mac_iter(pbes2.iter);
    if let Some(cert) = cert {
        b.cert(cert);
    }
    if let Some(name) = friendly_name {
        b.name(name);
    }
    if !chain.is_empty() {
        let mut stack = Stack::new()?;
        for c in chain {
            stack.push((*c).clone())?;
        }
        b.ca(stack);
    }
    Ok(b.build2(password)?.to_der()?)
}

/// The usual fixture: `leaf` and its CA in a PBES2 AES-256 `.p12` written to `path`.
pub fn write_p12(path: &Path, leaf: &Leaf, ca: &Ca, name: &str, password: &str) -> Result<()> {
    let der = p12_in_code(
        &leaf.key,
        Some(&leaf.cert),
        &[&ca.cert],
        Some(name),
        password,
        Pbes2 {
            cipher: Nid::AES_256_CBC,
            iter: 2048,
        },
    )?;
    std::fs::write(path, der)?;
    Ok(())
}

/// `openssl pkcs12 -export` from `pem` (key, certificate and CA) into `out`, with the
/// password from `password_file` and `extra` arguments (`-legacy`, `-keypbe ...`).
pub fn openssl_export(
    pem: &Pem,
    out: &Path,
    name: &str,
    password_file: &Path,
    extra: &[&str],
) -> Result<()> {
    run_ok(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-name", name, "-inkey"])
            .arg(&pem.key)
            .arg("-in")
            .arg(&pem.cert)
            .arg("-certfile")
            .arg(&pem.ca)
            .arg("-passout")
            .arg(format!("file:{}", password_file.display()))
            .arg("-out")
            .arg(out)
            .args(extra),
    )?;
    Ok(())
}

/// `openssl pkcs12 -info -noout` on `p12` (plus `extra`, e.g. `-legacy`): what the
/// independent reader says about how the file is protected.
pub fn openssl_info(p12: &Path, password_file: &Path, extra: &[&str]) -> Result<Output> {
    Ok(Command::new("openssl")
        .args(["pkcs12", "-info", "-noout", "-in"])
        .arg(p12)
        .arg("-passin")
        .arg(format!("file:{}", password_file.display()))
        .args(extra)
        .output()?)
}

/// Java keytool rewrites the PKCS#12 `src` into a new PKCS12 keystore `dest` (Java 17:
/// PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, HmacPBESHA256 MAC). Java's PBKDF2 takes
/// ASCII passwords only, so `password` must be ASCII.
pub fn keytool_import(src: &Path, dest: &Path, password: &str) -> Result<()> {
    run_ok(
        Command::new("keytool")
            .env("KT_PASS", password)
            .args(["-importkeystore", "-noprompt", "-srcstoretype", "PKCS12"])
            .args(["-deststoretype", "PKCS12", "-srckeystore"])
            .arg(src)
            .arg("-destkeystore")
            .arg(dest)
            .args([
                "-srcstorepass:env",
                "KT_PASS",
                "-deststorepass:env",
                "KT_PASS",
            ]),
    )?;
    Ok(())
}

/// Java keytool generates a self-signed key pair (`keyalg` args such as `-keyalg EC
/// -groupname secp256r1`) straight into a PKCS12 keystore; the alias is the friendlyName.
pub fn keytool_genkeypair(dest: &Path, alias: &str, password: &str, keyalg: &[&str]) -> Result<()> {
    run_ok(
        Command::new("keytool")
            .env("KT_PASS", password)
            .args(["-genkeypair", "-storetype", "PKCS12", "-keystore"])
            .arg(dest)
            .args(["-alias", alias, "-validity", "730"])
            .args([
                "-dname",
                "CN=gsko.przykladowo.pl, O=Gmina Przykladowo, C=PL",
            ])
            .args(["-storepass:env", "KT_PASS"])
            .args(keyalg),
    )?;
    Ok(())
}

/// GnuTLS `certtool --to-p12` from `pem` into DER `out` (GnuTLS 3.7: PBES2 AES-128-CBC,
/// PBKDF2-HMAC-SHA256, 600,000 iterations). certtool takes one certificate, so the file
/// carries the leaf only.
pub fn certtool_to_p12(pem: &Pem, out: &Path, name: &str, password: &str) -> Result<()> {
    run_ok(
        Command::new("certtool")
            .args(["--to-p12", "--outder", "--load-privkey"])
            .arg(&pem.key)
            .arg("--load-certificate")
            .arg(&pem.cert)
            .args(["--p12-name", name, "--password", password, "--outfile"])
            .arg(out),
    )?;
    Ok(())
}

/// `hsm-signer import --p12 P12 --password-file PW` on `token`.
pub fn import_cmd(token: &TestToken, p12: &Path, password_file: &Path) -> Command {
    let mut cmd = token.on_token("import");
    cmd.arg("--p12")
        .arg(p12)
        .arg("--password-file")
        .arg(password_file);
    cmd
}

/// Imports a fresh RSA-2048 key labelled `label` (its own CA) and returns the token's
/// objects afterwards: a token with something on it, to show a fault leaves it alone.
pub fn baseline(token: &TestToken, label: &str) -> Result<Vec<String>> {
    let ca = Ca::named("Baseline CA")?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("baseline.p12");
    write_p12(&p12, &leaf, &ca, label, "baseline")?;
    let pw = secret_file(token.dir.path(), "baseline.pw", "baseline")?;
    run_ok(&mut import_cmd(token, &p12, &pw))?;
    let objects = token.objects()?;
    assert_eq!(objects.len(), 4, "key, public key, cert, CA: {objects:#?}");
    Ok(objects)
}

/// One object as `pkcs11-tool --list-objects` shows it.
#[derive(Debug, Clone)]
pub struct P11Object {
    /// The header line, e.g. "Private Key Object; RSA".
    pub header: String,
    /// Its "name: value" lines.
    pub fields: Vec<(String, String)>,
}

impl P11Object {
    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Its CKA_LABEL.
    pub fn label(&self) -> Option<&str> {
        self.field("label")
    }

    /// Its CKA_ID, hex.
    pub fn id(&self) -> Option<&str> {
        self.field("ID")
    }

    /// The header starts with `kind` ("Private Key", "Public Key", "Certificate").
    pub fn is(&self, kind: &str) -> bool {
        self.header.starts_with(&format!("{kind} Object"))
    }
}

/// Parses `pkcs11-tool --list-objects` output.
pub fn parse_p11_objects(text: &str) -> Vec<P11Object> {
    let mut out: Vec<P11Object> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.contains("Object;") {
            out.push(P11Object {
                header: line.trim().to_string(),
                fields: Vec::new(),
            });
        } else if let (Some(last), Some((name, value))) = (out.last_mut(), line.split_once(':')) {
            last.fields
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// Every object on `token`, as pkcs11-tool (logged in) sees it.
pub fn p11_objects(token: &TestToken) -> Result<Vec<P11Object>> {
    let out = run_ok(token.pkcs11_tool().arg("--list-objects"))?;
    Ok(parse_p11_objects(&String::from_utf8(out.stdout)?))
}

/// Signs with the private key labelled `label` through pkcs11-tool, and verifies the
/// signature with `openssl dgst` against the public key of `cert` (the certificate the
/// fixture made, not anything read from the token). SoftHSM 2.6.1 lacks CKM_ECDSA_SHA256,
/// so EC keys sign a SHA-256 digest made here with plain CKM_ECDSA.
///
/// A control run verifies the same signature over other data and must fail, so this
/// check can fail.
pub fn sign_with_pkcs11_tool_and_verify(token: &TestToken, label: &str, cert: &X509) -> Result {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let other = dir.path().join("other");
    let sig = dir.path().join("sig");
    let public = dir.path().join("pub.pem");
    std::fs::write(&data, "<ds:SignedInfo>GSKO AuthnRequest</ds:SignedInfo>")?;
    std::fs::write(&other, "<ds:SignedInfo>something else</ds:SignedInfo>")?;
    std::fs::write(&public, cert.public_key()?.public_key_to_pem()?)?;
    let is_ec = cert.public_key()?.ec_key().is_ok();
    // pkcs11-tool's --sign takes the first private key when given only a label (OpenSC
    // 0.23), so name the key by its CKA_ID as well.
    let id = p11_objects(token)?
        .into_iter()
        .find(|o| o.is("Private Key") && o.label() == Some(label))
        .and_then(|o| o.id().map(str::to_string))
        .ok_or_else(|| format!("no private key labelled {label:?} on the token"))?;
    let mut sign = token.pkcs11_tool();
    sign.args(["--sign", "--label", label, "--id", &id, "--output-file"])
        .arg(&sig);
    if is_ec {
        let digest = dir.path().join("digest");
        std::fs::write(
            &digest,
            openssl::hash::hash(MessageDigest::sha256(), &std::fs::read(&data)?)?,
        )?;
        sign.args(["--mechanism", "ECDSA", "--signature-format", "openssl"])
            .arg("--input-file")
            .arg(&digest);
    } else {
        sign.args(["--mechanism", "SHA256-RSA-PKCS", "--input-file"])
            .arg(&data);
    }
    run_ok(&mut sign)?;
    let verify = |file: &Path| {
        let mut cmd = Command::new("openssl");
        cmd.args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig)
            .arg(file);
        cmd
    };
    let ok = run_ok(&mut verify(&data))?;
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("Verified OK"),
        "{ok:?}"
    );
    run_fails(&mut verify(&other))?;
    Ok(())
}
