//! Signature algorithms by the names callers use (JOSE-style `RS256`, XML-DSig URIs), the
//! digest each one takes, and a software verifier used to prove token signatures.
//!
//! Everything is signed as a pre-computed digest: the input is hashed here (or arrives
//! hashed), and the token does only the private-key operation. That one path serves data
//! and digest requests alike, sends 32–64 bytes to the token instead of the whole message,
//! and works on tokens that lack combined mechanisms such as CKM_ECDSA_SHA256 (SoftHSM
//! 2.6.1 has none).

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKeyRef};
use openssl::rsa::Padding;
use serde::{Serialize, Serializer};

use crate::cert::KeyKind;

/// A hash function a signature algorithm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1, for legacy RSA only.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// OpenSSL's handle for this hash.
    pub fn md(self) -> MessageDigest {
        match self {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    /// The same hash as an `MdRef`, for `PkeyCtx`.
    pub fn md_ref(self) -> &'static openssl::md::MdRef {
        match self {
            Hash::Sha1 => openssl::md::Md::sha1(),
            Hash::Sha256 => openssl::md::Md::sha256(),
            Hash::Sha384 => openssl::md::Md::sha384(),
            Hash::Sha512 => openssl::md::Md::sha512(),
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        openssl::hash::hash(self.md(), data)
            .map(|d| d.to_vec())
            .expect("OpenSSL provides SHA-1 and SHA-2")
    }

    /// The DER DigestInfo prefix that PKCS#1 v1.5 puts before the digest (RFC 8017 §9.2,
    /// note 1): fixed bytes per hash, so no ASN.1 encoder is needed.
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// The padding / scheme family of an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1,
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash.
    RsaPss,
    /// ECDSA.
    Ecdsa,
}

/// A signature algorithm hsm-signer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSA PKCS#1 v1.5 with SHA-1 (legacy; off unless a key allows it).
    Rs1,
    /// RSA PKCS#1 v1.5 with SHA-256 (XML-DSig rsa-sha256; what ePUAP wants).
    Rs256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    Rs384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    Rs512,
    /// RSA-PSS with SHA-256.
    Ps256,
    /// RSA-PSS with SHA-384.
    Ps384,
    /// RSA-PSS with SHA-512.
    Ps512,
    /// ECDSA with SHA-256 (login.gov.pl).
    Es256,
    /// ECDSA with SHA-384.
    Es384,
    /// ECDSA with SHA-512.
    Es512,
}

/// Every algorithm, in the order they are listed to callers.
pub const ALL: [Algorithm; 10] = [
    Algorithm::Rs256,
    Algorithm::Rs384,
    Algorithm::Rs512,
    Algorithm::Ps256,
    Algorithm::Ps384,
    Algorithm::Ps512,
    Algorithm::Es256,
    Algorithm::Es384,
    Algorithm::Es512,
    Algorithm::Rs1,
];

impl Algorithm {
    /// The short name (`RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs1 => "RS1",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
        }
    }

    /// The XML-DSig algorithm URI (RFC 6931 for the -more ones).
    pub fn xmldsig_uri(self) -> &'static str {
        match self {
            Algorithm::Rs1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            Algorithm::Rs256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            Algorithm::Rs384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            Algorithm::Rs512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            Algorithm::Ps256 => "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1",
            Algorithm::Ps384 => "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1",
            Algorithm::Ps512 => "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1",
            Algorithm::Es256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            Algorithm::Es384 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
            Algorithm::Es512 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        }
    }

    /// Parses a short name (case-insensitive) or an XML-DSig URI.
    pub fn parse(text: &str) -> Option<Self> {
        ALL.into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(text) || a.xmldsig_uri() == text)
    }

    /// The hash it signs.
    pub fn hash(self) -> Hash {
        match self {
            Algorithm::Rs1 => Hash::Sha1,
            Algorithm::Rs256 | Algorithm::Ps256 | Algorithm::Es256 => Hash::Sha256,
            Algorithm::Rs384 | Algorithm::Ps384 | Algorithm::Es384 => Hash::Sha384,
            Algorithm::Rs512 | Algorithm::Ps512 | Algorithm::Es512 => Hash::Sha512,
        }
    }

    /// Its scheme.
    pub fn scheme(self) -> Scheme {
        match self {
            Algorithm::Rs1 | Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512 => {
                Scheme::RsaPkcs1
            }
            Algorithm::Ps256 | Algorithm::Ps384 | Algorithm::Ps512 => Scheme::RsaPss,
            Algorithm::Es256 | Algorithm::Es384 | Algorithm::Es512 => Scheme::Ecdsa,
        }
    }

    /// True when a key of `kind` can make this signature.
    pub fn fits(self, kind: KeyKind) -> bool {
        matches!(
            (self.scheme(), kind),
            (Scheme::RsaPkcs1 | Scheme::RsaPss, KeyKind::Rsa { .. })
                | (Scheme::Ecdsa, KeyKind::Ec { .. })
        )
    }

    /// The algorithm a key proves itself with after import.
    pub fn proof_for(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Rsa { .. } => Algorithm::Rs256,
            KeyKind::Ec { .. } => Algorithm::Es256,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Algorithm::parse(text).ok_or_else(|| format!("unknown algorithm {text:?}"))
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Algorithm::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown algorithm {text:?}")))
    }
}

/// Converts a raw `r || s` ECDSA signature (what PKCS#11 and XML-DSig use) to DER.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?.to_der()
}

/// Verifies `signature` over `digest` with `key` in software (OpenSSL), independent of
/// the token. ECDSA signatures are raw `r || s`.
pub fn verify_digest<T: HasPublic>(
    key: &PKeyRef<T>,
    alg: Algorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    match alg.scheme() {
        Scheme::Ecdsa => {
            let sig = EcdsaSig::from_der(&ecdsa_raw_to_der(signature)?)?;
            sig.verify(digest, &*key.ec_key()?)
        }
        scheme => {
            let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key)?;
            ctx.verify_init()?;
            ctx.set_signature_md(alg.hash().md_ref())?;
            if scheme == Scheme::RsaPss {
                ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
                ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::custom(
                    alg.hash().output_len() as i32,
                ))?;
                ctx.set_rsa_mgf1_md(alg.hash().md_ref())?;
            } else {
                ctx.set_rsa_padding(Padding::PKCS1)?;
            }
            Ok(ctx.verify(digest, signature).unwrap_or(false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_uris_parse_to_the_same_algorithm() {
        for alg in ALL {
            assert_eq!(Algorithm::parse(alg.name()), Some(alg));
            assert_eq!(Algorithm::parse(&alg.name().to_lowercase()), Some(alg));
            assert_eq!(Algorithm::parse(alg.xmldsig_uri()), Some(alg));
        }
        assert_eq!(Algorithm::parse("HS256"), None);
        assert_eq!(Algorithm::parse(""), None);
    }

    #[test]
    fn digest_info_prefix_ends_with_the_digest_length() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let prefix = hash.digest_info_prefix();
            assert_eq!(*prefix.last().unwrap() as usize, hash.output_len());
            assert_eq!(prefix[1] as usize, prefix.len() - 2 + hash.output_len());
        }
    }
}
