//! The public key of a certificate as JOSE sees it: the JWK (RFC 7517, RFC 7518 §6), its
//! RFC 7638 thumbprint, and the `x5c` / `x5t#S256` members, all read from the DER
//! certificate with OpenSSL.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::JoseError;
use crate::algorithm::{Algorithm, Scheme};

/// What a JWK's key is for (`use`, RFC 7517 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    /// Signatures.
    Sig,
    /// Encryption (WK's decrypt key).
    Enc,
}

/// A public key in JWK form, with the certificate members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: &'static str,
    /// `sig` or `enc`.
    #[serde(rename = "use")]
    pub key_use: KeyUse,
    /// The RFC 7638 thumbprint (SHA-256, base64url).
    pub kid: String,
    /// RSA modulus, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve (`P-256`, `P-384`, `P-521`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    /// EC x coordinate, base64url, padded to the field size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url, padded to the field size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The certificate, then its chain, each standard base64 DER (RFC 7517 §4.7).
    pub x5c: Vec<String>,
    /// SHA-256 of the certificate's DER, base64url.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The key parameters of a certificate's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Params {
    Rsa {
        n: String,
        e: String,
    },
    Ec {
        crv: &'static str,
        x: String,
        y: String,
    },
}

impl Params {
    /// Reads the public key of `cert_der`.
    pub(crate) fn of(cert_der: &[u8]) -> Result<(Self, PKey<Public>), JoseError> {
        let key = X509::from_der(cert_der)
            .map_err(|_| JoseError::BadCertificate("unreadable".into()))?
            .public_key()
            .map_err(|_| JoseError::UnsupportedKey("unreadable public key".into()))?;
        let b64 = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
        let params = match key.id() {
            Id::RSA => {
                let rsa = key.rsa().map_err(JoseError::internal)?;
                Params::Rsa {
                    n: b64(rsa.n().to_vec()),
                    e: b64(rsa.e().to_vec()),
                }
            }
            Id::EC => {
                let ec = key.ec_key().map_err(JoseError::internal)?;
                let group = ec.group();
                let crv = match group.curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => "P-256",
                    Some(Nid::SECP384R1) => "P-384",
                    Some(Nid::SECP521R1) => "P-521",
                    _ => {
                        return Err(JoseError::UnsupportedKey(
                            "an EC curve JOSE does not name".into(),
                        ))
                    }
                };
                let (x, y) = coordinates(&ec, (group.degree() as i32 + 7) / 8)
                    .map_err(JoseError::internal)?;
                Params::Ec {
                    crv,
                    x: b64(x),
                    y: b64(y),
                }
            }
            _ => return Err(JoseError::UnsupportedKey("neither RSA nor EC".into())),
        };
        Ok((params, key))
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic
    /// order, without whitespace, base64url. The member values are base64url text and
    /// fixed names, so none needs JSON escaping.
    pub(crate) fn thumbprint(&self) -> String {
        let canonical = match self {
            Params::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Params::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The key's name in messages (`RSA`, `EC P-384`).
    pub(crate) fn describe(&self) -> String {
        match self {
            Params::Rsa { .. } => "RSA".into(),
            Params::Ec { crv, .. } => format!("EC {crv}"),
        }
    }

    /// The algorithm used when the caller names none: RS256 for RSA, and for EC the one
    /// RFC 7518 pairs with the curve.
    pub(crate) fn default_algorithm(&self) -> Algorithm {
        match self {
            Params::Rsa { .. } => Algorithm::Rs256,
            Params::Ec { crv: "P-384", .. } => Algorithm::Es384,
            Params::Ec { crv: "P-521", .. } => Algorithm::Es512,
            Params::Ec { .. } => Algorithm::Es256,
        }
    }

    /// Checks that `algorithm` is a JOSE algorithm this key can make.
    pub(crate) fn check(&self, algorithm: Algorithm) -> Result<(), JoseError> {
        if algorithm == Algorithm::Rs1 {
            return Err(JoseError::UnsupportedAlgorithm(algorithm.name().into()));
        }
        let fits = match (algorithm.scheme(), self) {
            (Scheme::RsaPkcs1 | Scheme::RsaPss, Params::Rsa { .. }) => true,
            (Scheme::Ecdsa, Params::Ec { .. }) => self.default_algorithm() == algorithm,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(JoseError::AlgorithmMismatch {
                algorithm: algorithm.name().into(),
                key: self.describe(),
            })
        }
    }

    /// The length of an ECDSA `R || S` for this key, or `None` for RSA.
    pub(crate) fn ecdsa_len(&self) -> Option<usize> {
        match self {
            Params::Rsa { .. } => None,
            Params::Ec { crv, .. } => Some(match *crv {
                "P-256" => 64,
                "P-384" => 96,
                _ => 132,
            }),
        }
    }
}

fn coordinates(
    ec: &openssl::ec::EcKey<Public>,
    len: i32,
) -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    let mut ctx = BigNumContext::new()?;
    let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
    Ok((x.to_vec_padded(len)?, y.to_vec_padded(len)?))
}

/// `x5c`: the certificate, then the chain, each standard base64 of its DER. Every chain
/// entry must be a certificate.
pub(crate) fn x5c(cert_der: &[u8], chain: &[Vec<u8>]) -> Result<Vec<String>, JoseError> {
    for der in chain {
        X509::from_der(der)
            .map_err(|_| JoseError::BadCertificate("a chain entry is unreadable".into()))?;
    }
    Ok(std::iter::once(cert_der)
        .chain(chain.iter().map(Vec::as_slice))
        .map(|der| STANDARD.encode(der))
        .collect())
}

/// `x5t#S256`: SHA-256 of the certificate's DER, base64url.
pub(crate) fn x5t_s256(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der))
}

/// The JWK of `cert_der`'s public key, with `kid` (its RFC 7638 thumbprint), `x5c` (the
/// certificate and `chain`), `x5t#S256` and `use`.
pub fn jwk(cert_der: &[u8], chain: &[Vec<u8>], key_use: KeyUse) -> Result<Jwk, JoseError> {
    let (params, _) = Params::of(cert_der)?;
    let kid = params.thumbprint();
    let x5c = x5c(cert_der, chain)?;
    let (kty, n, e, crv, x, y) = match params {
        Params::Rsa { n, e } => ("RSA", Some(n), Some(e), None, None, None),
        Params::Ec { crv, x, y } => ("EC", None, None, Some(crv), Some(x), Some(y)),
    };
    Ok(Jwk {
        kty,
        key_use,
        kid,
        n,
        e,
        crv,
        x,
        y,
        x5c,
        x5t_s256: x5t_s256(cert_der),
    })
}

/// The RFC 7638 thumbprint of `cert_der`'s public key (the `kid` this module sets).
pub fn thumbprint(cert_der: &[u8]) -> Result<String, JoseError> {
    Ok(Params::of(cert_der)?.0.thumbprint())
}
