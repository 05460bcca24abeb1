//! What a certificate says, in the form operators and GSKO read it: subject, issuer,
//! serial, validity, days left, fingerprint, and the kind and size of its key.
//!
//! Shared by the import report, `list`, and the daemon's key endpoints, so that all
//! three describe a key the same way.

use der::{Decode, Encode};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKeyRef};
use openssl::x509::{X509NameRef, X509Ref, X509};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The kind and size of a key, as far as signing needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum KeyKind {
    /// An RSA key with a modulus of this many bits.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// An EC key on a NIST prime curve.
    Ec {
        /// The curve.
        curve: Curve,
    },
}

/// The EC curves hsm-signer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Curve {
    /// secp256r1 / prime256v1.
    #[serde(rename = "P-256")]
    P256,
    /// secp384r1.
    #[serde(rename = "P-384")]
    P384,
    /// secp521r1.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// Length in bytes of one coordinate, and so of r and of s in a raw signature.
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn from_nid(nid: Nid) -> Option<Self> {
        match nid {
            Nid::X9_62_PRIME256V1 => Some(Curve::P256),
            Nid::SECP384R1 => Some(Curve::P384),
            Nid::SECP521R1 => Some(Curve::P521),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::Ec { curve } => write!(f, "EC {}", curve.name()),
        }
    }
}

impl Curve {
    /// The NIST name, e.g. "P-256".
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// A key that hsm-signer cannot store or use.
#[derive(Debug, thiserror::Error)]
pub enum KeyKindError {
    /// Not RSA or EC.
    #[error("unsupported key type {0}: hsm-signer handles RSA (2048 bits or more) and EC P-256/P-384/P-521 keys")]
    Type(String),
    /// An EC curve other than the NIST prime curves.
    #[error("unsupported EC curve {0}: hsm-signer handles P-256, P-384 and P-521")]
    Curve(String),
    /// An RSA key too short to be safe.
    #[error("RSA key of {0} bits is too short: hsm-signer requires at least 2048 bits")]
    RsaTooShort(u32),
}

/// Works out what kind of key this is, refusing what hsm-signer does not support.
pub fn key_kind<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> Result<KeyKind, KeyKindError> {
    match key.id() {
        Id::RSA => {
            let bits = key.bits();
            if bits < 2048 {
                return Err(KeyKindError::RsaTooShort(bits));
            }
            Ok(KeyKind::Rsa { bits })
        }
        Id::EC => {
            let ec = key
                .ec_key()
                .map_err(|e| KeyKindError::Type(e.to_string()))?;
            let nid = ec.group().curve_name();
            nid.and_then(Curve::from_nid)
                .map(|curve| KeyKind::Ec { curve })
                .ok_or_else(|| {
                    KeyKindError::Curve(
                        nid.and_then(|n| n.short_name().ok())
                            .unwrap_or("with explicit parameters")
                            .to_string(),
                    )
                })
        }
        other => Err(KeyKindError::Type(id_name(other))),
    }
}

fn id_name(id: Id) -> String {
    match id {
        Id::DSA => "DSA".into(),
        Id::ED25519 => "Ed25519".into(),
        Id::ED448 => "Ed448".into(),
        Id::DH => "DH".into(),
        other => format!("(OpenSSL id {})", other.as_raw()),
    }
}

/// A certificate's facts, ready to print or serialise.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Subject DN, one line, RFC 2253 order reversed as OpenSSL prints it.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number in hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days from now to `not_after`; negative once expired.
    pub days_left: i64,
    /// SHA-256 over the DER certificate, hex.
    pub sha256: String,
    /// The key's kind and size.
    pub key: KeyKind,
    /// End of validity, Unix seconds (for expiry checks).
    #[serde(skip)]
    pub not_after_unix: i64,
}

/// A certificate that cannot be described.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// OpenSSL could not read a field.
    #[error("cannot read the certificate: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The DER structure could not be parsed.
    #[error("cannot parse the certificate: {0}")]
    Der(#[from] der::Error),
    /// The key in it is unsupported.
    #[error(transparent)]
    Key(#[from] KeyKindError),
}

impl CertInfo {
    /// Describes `cert`.
    pub fn of(cert: &X509Ref) -> Result<Self, CertError> {
        let der = cert.to_der()?;
        let parsed = x509_cert::Certificate::from_der(&der)?;
        let validity = &parsed.tbs_certificate.validity;
        let not_before = validity.not_before.to_unix_duration().as_secs() as i64;
        let not_after = validity.not_after.to_unix_duration().as_secs() as i64;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(Self {
            subject: dn_line(cert.subject_name()),
            issuer: dn_line(cert.issuer_name()),
            serial: hex::encode(parsed.tbs_certificate.serial_number.as_bytes()),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            days_left: (not_after - now).div_euclid(86_400),
            sha256: hex::encode(Sha256::digest(&der)),
            key: key_kind(cert.public_key()?.as_ref())?,
            not_after_unix: not_after,
        })
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// A DN on one line, `CN=..., O=..., C=PL`, with UTF-8 kept (Polish names stay readable).
pub fn dn_line(name: &X509NameRef) -> String {
    let mut parts = Vec::new();
    for entry in name.entries() {
        let key = entry.object().nid().short_name().unwrap_or("?");
        let value = entry.data().to_string().unwrap_or_else(|_| "?".into());
        parts.push(format!("{key}={value}"));
    }
    parts.reverse();
    parts.join(", ")
}

/// The parts of a certificate a PKCS#11 certificate object and a key's CKA_ID need.
#[derive(Debug, Clone)]
pub struct CertDer {
    /// The whole certificate.
    pub value: Vec<u8>,
    /// DER subject name.
    pub subject: Vec<u8>,
    /// DER issuer name.
    pub issuer: Vec<u8>,
    /// DER INTEGER of the serial number (CKA_SERIAL_NUMBER wants the encoding, tag included).
    pub serial: Vec<u8>,
    /// The subjectPublicKey BIT STRING's content.
    pub public_key_bits: Vec<u8>,
    /// DER of the algorithm parameters (for EC: the named-curve OID, which is CKA_EC_PARAMS).
    pub key_params: Option<Vec<u8>>,
}

impl CertDer {
    /// Splits `cert` into the DER pieces PKCS#11 wants.
    pub fn of(cert: &X509Ref) -> Result<Self, CertError> {
        let value = cert.to_der()?;
        let parsed = x509_cert::Certificate::from_der(&value)?;
        let tbs = &parsed.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        Ok(Self {
            subject: tbs.subject.to_der()?,
            issuer: tbs.issuer.to_der()?,
            serial: tbs.serial_number.to_der()?,
            public_key_bits: spki.subject_public_key.raw_bytes().to_vec(),
            key_params: spki
                .algorithm
                .parameters
                .as_ref()
                .map(|p| p.to_der())
                .transpose()?,
            value,
        })
    }

    /// The default CKA_ID: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1).
    ///
    /// Most CAs compute the Subject Key Identifier this way, so the ID usually equals the
    /// certificate's SKI, and it is the same for the key, its public key and its certificate
    /// whichever file or tool they came from.
    pub fn default_id(&self) -> Vec<u8> {
        openssl::hash::hash(MessageDigest::sha1(), &self.public_key_bits)
            .map(|d| d.to_vec())
            .unwrap_or_default()
    }
}

/// True when `cert` carries the public half of `key`.
pub fn cert_matches_key<T: openssl::pkey::HasPublic>(cert: &X509Ref, key: &PKeyRef<T>) -> bool {
    cert.public_key()
        .map(|pk| pk.public_eq(key))
        .unwrap_or(false)
}

/// Reads a certificate file as DER (`.cer`) or PEM, whichever it is.
pub fn load_cert_bytes(bytes: &[u8]) -> Result<X509, openssl::error::ErrorStack> {
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        X509::from_pem(bytes)
    } else {
        X509::from_der(bytes)
    }
}
