//! The PKCS#12 input: Sigillum's `.p12` opened with its password, into key material.
//!
//! ePUAP integration files are legacy PKCS#12 (RC2-40 for the certificates, 3DES for the
//! key, SHA-1 MAC), which OpenSSL 3 refuses unless its legacy provider is loaded, so this
//! module loads it once per process. Newer PBES2 files (PBKDF2-HMAC-SHA256, AES-CBC) need
//! only the default provider.

use std::path::Path;
use std::sync::OnceLock;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::x509::X509;
use secrecy::{ExposeSecret, SecretString};

use crate::cert::{cert_matches_key, key_kind, KeyKind, KeyKindError};

/// What a `.p12` holds once opened. The private key stays inside OpenSSL, which clears
/// its private numbers when it is freed.
pub struct KeyMaterial {
    /// The private key.
    pub key: PKey<Private>,
    /// The certificate for `key`, when the file carries it.
    pub cert: Option<X509>,
    /// The other certificates in the file (normally the CA chain), in file order.
    pub chain: Vec<X509>,
    /// The friendlyName of the key's certificate, if the file has one.
    pub friendly_name: Option<String>,
    /// What kind of key it is.
    pub kind: KeyKind,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kind", &self.kind)
            .field("friendly_name", &self.friendly_name)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Why a `.p12` could not be opened. No variant carries the password.
#[derive(Debug, thiserror::Error)]
pub enum P12Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not DER PKCS#12 at all, or cut short.
    #[error("{path} is not a PKCS#12 file or is truncated ({size} bytes): download the .p12 from Sigillum's e-mail again and compare its size")]
    NotPkcs12 {
        /// The file.
        path: String,
        /// Its size.
        size: usize,
    },
    /// The MAC did not verify: almost always the wrong password.
    #[error("wrong password for {path} (the file's integrity check failed): check the keyboard layout, Polish letters and trailing spaces from copy-paste; this is the .p12 password chosen in the MC form, not the revocation password")]
    WrongPassword {
        /// The file.
        path: String,
    },
    /// Encrypted with an algorithm this OpenSSL cannot do.
    #[error("{path} uses an encryption algorithm this OpenSSL cannot decrypt ({detail}); is the OpenSSL legacy provider (ossl-modules/legacy.so) installed?")]
    Unsupported {
        /// The file.
        path: String,
        /// OpenSSL's reason.
        detail: String,
    },
    /// Opened, but no private key inside.
    #[error("{path} holds no private key (only certificates): this is probably the .cer from Sigillum's e-mail, not the .p12")]
    NoPrivateKey {
        /// The file.
        path: String,
    },
    /// The key is of a kind hsm-signer does not support.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        source: KeyKindError,
    },
    /// Some other OpenSSL failure.
    #[error("cannot open {path}: {detail}")]
    Other {
        /// The file.
        path: String,
        /// OpenSSL's reason.
        detail: String,
    },
}

static PROVIDERS: OnceLock<Result<(Provider, Provider), String>> = OnceLock::new();

/// Loads OpenSSL's legacy provider (RC2, 3DES-era PBEs) next to the default one, once.
///
/// Loading any provider explicitly disables the implicit default, so both are loaded and
/// kept for the life of the process.
pub fn load_legacy_provider() -> Result<(), String> {
    PROVIDERS
        .get_or_init(|| {
            let default = Provider::load(None, "default").map_err(|e| e.to_string())?;
            let legacy = Provider::try_load(None, "legacy", true).map_err(|e| e.to_string())?;
            Ok((default, legacy))
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// Opens the `.p12` at `path` with `password`.
pub fn open_file(path: &Path, password: &SecretString) -> Result<KeyMaterial, P12Error> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| P12Error::Read {
        path: name.clone(),
        source,
    })?;
    open(&bytes, password, &name)
}

/// Opens PKCS#12 `bytes` with `password`; `name` says which file in messages.
pub fn open(bytes: &[u8], password: &SecretString, name: &str) -> Result<KeyMaterial, P12Error> {
    if let Err(detail) = load_legacy_provider() {
        tracing::warn!(%detail, "OpenSSL legacy provider not loaded; legacy .p12 files will fail");
    }
    let path = name.to_string();
    let p12 = Pkcs12::from_der(bytes).map_err(|_| P12Error::NotPkcs12 {
        path: path.clone(),
        size: bytes.len(),
    })?;
    let parsed = p12
        .parse2(password.expose_secret())
        .map_err(|e| classify(e, &path))?;
    let key = parsed
        .pkey
        .ok_or_else(|| P12Error::NoPrivateKey { path: path.clone() })?;
    let kind = key_kind(&key).map_err(|source| P12Error::Key {
        path: path.clone(),
        source,
    })?;
    let mut others: Vec<X509> = parsed
        .ca
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();
    // PKCS12_parse pairs key and certificate by localKeyId; files without one leave the
    // key's certificate among the others, so find it by its public key.
    let cert = match parsed.cert {
        Some(c) if cert_matches_key(&c, &key) => Some(c),
        Some(c) => {
            others.insert(0, c);
            take_matching(&mut others, &key)
        }
        None => take_matching(&mut others, &key),
    };
    let friendly_name = cert
        .as_ref()
        .and_then(|c| c.alias())
        .map(|a| String::from_utf8_lossy(a).trim().to_string())
        .filter(|a| !a.is_empty());
    Ok(KeyMaterial {
        key,
        cert,
        chain: others,
        friendly_name,
        kind,
    })
}

fn take_matching(certs: &mut Vec<X509>, key: &PKey<Private>) -> Option<X509> {
    let at = certs.iter().position(|c| cert_matches_key(c, key))?;
    Some(certs.remove(at))
}

fn classify(err: openssl::error::ErrorStack, path: &str) -> P12Error {
    let path = path.to_string();
    let reasons: Vec<String> = err
        .errors()
        .iter()
        .filter_map(|e| e.reason().map(str::to_string))
        .collect();
    let detail = reasons.join("; ");
    if reasons.iter().any(|r| r.contains("mac verify")) {
        P12Error::WrongPassword { path }
    } else if reasons.iter().any(|r| r.contains("unsupported")) {
        P12Error::Unsupported { path, detail }
    } else if reasons
        .iter()
        .any(|r| r.contains("decrypt") || r.contains("bad decrypt"))
    {
        // A MAC-less file with the wrong password fails at decryption instead.
        P12Error::WrongPassword { path }
    } else {
        P12Error::Other { path, detail }
    }
}
