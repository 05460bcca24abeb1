//! The CSR and the self-signed certificate of a key born on the token, built with
//! `x509_cert::builder` around a signer whose private half stays on the token: the
//! to-be-signed bytes are hashed here and signed with the raw mechanism
//! ([`crate::token::sign_digest`]), and an ECDSA `r || s` becomes the DER that X.509 and
//! PKCS#10 want.

use std::cell::RefCell;
use std::time::Duration;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use der::asn1::{Any, BitString, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::builder::{Builder, CertificateBuilder, Profile, RequestBuilder};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};
use x509_cert::time::Validity;
use x509_cert::Certificate;

use crate::algorithm::{ecdsa_raw_to_der, Algorithm, Scheme};
use crate::token::{sign_digest, KeyUse, TokenError};

/// How the CSR file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsrFormat {
    /// PEM, for a CA that takes a file.
    Pem,
    /// Base64 of the DER, one line with no line break, as KSeF's
    /// `POST /certificates/enrollments` takes it in its `csr` field.
    DerBase64,
}

/// Why the CSR or certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// The token refused to sign.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The structure could not be built or encoded.
    #[error("building the {what}: {detail}")]
    Build {
        /// CSR or certificate.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The token's signature over it does not verify with its own public key.
    #[error("the token's signature on the {what} does not verify against the new public key")]
    BadSignature {
        /// CSR or certificate.
        what: &'static str,
    },
}

/// The new key's SubjectPublicKeyInfo (DER), as the builder's "verifying key".
#[derive(Clone)]
pub struct SpkiDer(pub Vec<u8>);

impl EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<der::Document> {
        Ok(der::Document::from_der(&self.0)?)
    }
}

/// A signature made on the token, already in its X.509 form (DER for ECDSA).
pub struct TokenSignature(Vec<u8>);

impl SignatureBitStringEncoding for TokenSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// Signs for `x509_cert::builder` with a key on the token. A token error is kept aside,
/// since the `signature` crate's error cannot carry it with its type.
pub struct TokenSigner<'a> {
    session: &'a Session,
    key: ObjectHandle,
    algorithm: Algorithm,
    spki: SpkiDer,
    failure: RefCell<Option<TokenError>>,
}

impl<'a> TokenSigner<'a> {
    /// A signer with `key`, whose public key is `spki`, using `algorithm`.
    pub fn new(
        session: &'a Session,
        key: ObjectHandle,
        algorithm: Algorithm,
        spki: Vec<u8>,
    ) -> Self {
        Self {
            session,
            key,
            algorithm,
            spki: SpkiDer(spki),
            failure: RefCell::new(None),
        }
    }

    fn error(&self, what: &'static str, e: x509_cert::builder::Error) -> X509Error {
        match self.failure.borrow_mut().take() {
            Some(token) => X509Error::Token(token),
            None => X509Error::Build {
                what,
                detail: e.to_string(),
            },
        }
    }
}

impl signature::Keypair for TokenSigner<'_> {
    type VerifyingKey = SpkiDer;

    fn verifying_key(&self) -> SpkiDer {
        self.spki.clone()
    }
}

impl DynSignatureAlgorithmIdentifier for TokenSigner<'_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        let (oid, parameters) = match self.algorithm {
            // RFC 5758 3.2: the ECDSA identifiers have no parameters.
            Algorithm::Es256 => ("1.2.840.10045.4.3.2", None),
            Algorithm::Es384 => ("1.2.840.10045.4.3.3", None),
            Algorithm::Es512 => ("1.2.840.10045.4.3.4", None),
            // RFC 4055 5: NULL parameters for sha*WithRSAEncryption.
            Algorithm::Rs384 => ("1.2.840.113549.1.1.12", Some(Any::null())),
            Algorithm::Rs512 => ("1.2.840.113549.1.1.13", Some(Any::null())),
            _ => ("1.2.840.113549.1.1.11", Some(Any::null())),
        };
        Ok(AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters,
        })
    }
}

impl signature::Signer<TokenSignature> for TokenSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<TokenSignature, signature::Error> {
        let digest = self.algorithm.hash().digest(msg);
        let raw = sign_digest(self.session, self.key, self.algorithm, &digest).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            signature::Error::new()
        })?;
        let bytes = match self.algorithm.scheme() {
            Scheme::Ecdsa => ecdsa_raw_to_der(&raw).map_err(signature::Error::from_source)?,
            _ => raw,
        };
        Ok(TokenSignature(bytes))
    }
}

/// The keyUsage for a key of this use: digitalSignature for signing keys, keyAgreement
/// for ECDH keys.
fn key_usage(key_use: KeyUse) -> KeyUsage {
    KeyUsage(match key_use {
        KeyUse::Sign => KeyUsages::DigitalSignature.into(),
        KeyUse::Agree => KeyUsages::KeyAgreement.into(),
    })
}

/// A PKCS#10 request for `subject`, signed on the token and checked with OpenSSL, as PEM
/// or as base64 of the DER on one line.
pub fn csr_text(
    signer: &TokenSigner<'_>,
    subject: Name,
    key_use: KeyUse,
    format: CsrFormat,
) -> Result<String, X509Error> {
    const WHAT: &str = "CSR";
    let build = |detail: String| X509Error::Build { what: WHAT, detail };
    let mut builder = RequestBuilder::new(subject, signer).map_err(|e| build(e.to_string()))?;
    builder
        .add_extension(&key_usage(key_use))
        .map_err(|e| build(e.to_string()))?;
    let req: CertReq = builder
        .build::<TokenSignature>()
        .map_err(|e| signer.error(WHAT, e))?;
    let der = req.to_der().map_err(|e| build(e.to_string()))?;
    let parsed = openssl::x509::X509Req::from_der(&der).map_err(|e| build(e.to_string()))?;
    let pkey = parsed.public_key().map_err(|e| build(e.to_string()))?;
    if !parsed.verify(&pkey).unwrap_or(false) {
        return Err(X509Error::BadSignature { what: WHAT });
    }
    match format {
        CsrFormat::Pem => {
            let pem = parsed.to_pem().map_err(|e| build(e.to_string()))?;
            String::from_utf8(pem).map_err(|e| build(e.to_string()))
        }
        CsrFormat::DerBase64 => {
            use base64::Engine as _;
            Ok(base64::engine::general_purpose::STANDARD.encode(&der))
        }
    }
}

/// A self-signed certificate for `subject` valid `days` days from now, signed on the
/// token: basicConstraints CA:FALSE, the keyUsage of `key_use`, and the subject and
/// authority key identifiers both equal to `id` (the key's CKA_ID).
pub fn self_signed(
    signer: &TokenSigner<'_>,
    subject: Name,
    days: u32,
    key_use: KeyUse,
    id: &[u8],
) -> Result<openssl::x509::X509, X509Error> {
    const WHAT: &str = "self-signed certificate";
    let build = |detail: String| X509Error::Build { what: WHAT, detail };
    let validity = Validity::from_now(Duration::from_secs(u64::from(days) * 86_400))
        .map_err(|e| build(e.to_string()))?;
    let spki =
        SubjectPublicKeyInfoOwned::from_der(&signer.spki.0).map_err(|e| build(e.to_string()))?;
    let key_id = OctetString::new(id).map_err(|e| build(e.to_string()))?;
    let mut builder = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        random_serial().map_err(|e| build(e.to_string()))?,
        validity,
        subject,
        spki,
        signer,
    )
    .map_err(|e| build(e.to_string()))?;
    let added = |r: Result<(), x509_cert::builder::Error>| r.map_err(|e| build(e.to_string()));
    added(builder.add_extension(&BasicConstraints {
        ca: false,
        path_len_constraint: None,
    }))?;
    added(builder.add_extension(&key_usage(key_use)))?;
    added(builder.add_extension(&SubjectKeyIdentifier(key_id.clone())))?;
    added(builder.add_extension(&AuthorityKeyIdentifier {
        key_identifier: Some(key_id),
        ..Default::default()
    }))?;
    let cert: Certificate = builder
        .build::<TokenSignature>()
        .map_err(|e| signer.error(WHAT, e))?;
    let der = cert.to_der().map_err(|e| build(e.to_string()))?;
    let parsed = openssl::x509::X509::from_der(&der).map_err(|e| build(e.to_string()))?;
    let pkey = parsed.public_key().map_err(|e| build(e.to_string()))?;
    if !parsed.verify(&pkey).unwrap_or(false) {
        return Err(X509Error::BadSignature { what: WHAT });
    }
    Ok(parsed)
}

/// 16 random bytes, positive and without a leading zero (RFC 5280 4.1.2.2).
fn random_serial() -> Result<SerialNumber, der::Error> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).expect("OpenSSL's RNG works");
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes)
}
