//! WK's encrypted assertion, read: the one `saml2:EncryptedAssertion` in a SAML
//! Response, an ArtifactResponse (bare or in its SOAP envelope) or on its own, taken
//! apart into the bytes and parameters [`super::ecdh_es`] needs. Nothing here touches
//! a key.
//!
//! The shape (XML Encryption 1.1 as login.gov.pl sends it): `EncryptedData`
//! (aes256-gcm) whose `ds:KeyInfo` holds an `EncryptedKey` (kw-aes256) whose
//! `ds:KeyInfo` holds an `AgreementMethod` (ECDH-ES) with a `ConcatKDFParams` (SHA-256)
//! and the sender's ephemeral point in `OriginatorKeyInfo/ds:KeyValue/dsig11:ECKeyValue`.
//! An `EncryptedKey` beside the `EncryptedData` (SAML 2.0 §2.2.4 allows it) is taken
//! when there is none inside.

use base64::Engine;
use libxml::tree::Node;
use zeroize::Zeroizing;

use super::error::{sanitise, XmlError};
use super::parse;
use super::saml::SAML_NS;

const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
const XENC11_NS: &str = "http://www.w3.org/2009/xmlenc11#";
const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const DSIG11_NS: &str = "http://www.w3.org/2009/xmldsig11#";

const ECDH_ES: &str = "http://www.w3.org/2009/xmlenc11#ECDH-ES";
const CONCAT_KDF: &str = "http://www.w3.org/2009/xmlenc11#ConcatKDF";
const SHA256_URIS: [&str; 2] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha256",
];
const P256_URN: &str = "urn:oid:1.2.840.10045.3.1.7";

/// The content encryption of `EncryptedData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentAlgorithm {
    /// `…xmlenc11#aes256-gcm` (WK's).
    Aes256Gcm,
    /// `…xmlenc11#aes128-gcm`.
    Aes128Gcm,
}

impl ContentAlgorithm {
    fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            "http://www.w3.org/2009/xmlenc11#aes256-gcm" => Some(Self::Aes256Gcm),
            "http://www.w3.org/2009/xmlenc11#aes128-gcm" => Some(Self::Aes128Gcm),
            _ => None,
        }
    }
}

/// The key wrap of `EncryptedKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrap {
    /// `…xmlenc#kw-aes256` (WK's): a 32-byte KEK.
    Aes256,
    /// `…xmlenc#kw-aes128`: a 16-byte KEK.
    Aes128,
}

impl KeyWrap {
    fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            "http://www.w3.org/2001/04/xmlenc#kw-aes256" => Some(Self::Aes256),
            "http://www.w3.org/2001/04/xmlenc#kw-aes128" => Some(Self::Aes128),
            _ => None,
        }
    }

    /// The KEK length in bytes.
    pub fn kek_len(self) -> usize {
        match self {
            Self::Aes256 => 32,
            Self::Aes128 => 16,
        }
    }
}

/// Why an encrypted assertion was not decrypted. The HTTP layer gives each its code.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError<E> {
    /// The document was refused by the parser.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The structure is wrong: no or several EncryptedAssertions, a missing part, bad
    /// base64 or hex, a point that is not on P-256.
    #[error("bad encrypted assertion: {0}")]
    Structure(String),
    /// An algorithm URI this daemon does not implement.
    #[error("unsupported encryption algorithm {0}")]
    Unsupported(String),
    /// Any cryptographic failure (wrap, tag, another recipient): one message for all, so
    /// the answer tells a caller nothing about which step failed.
    #[error("the assertion could not be decrypted with this key")]
    Crypto,
    /// The token did not derive the secret.
    #[error("the token did not derive the ECDH secret: {0}")]
    Token(E),
}

/// A refusal while reading, before any key is used.
pub type Refused = DecryptError<std::convert::Infallible>;

impl Refused {
    /// The same refusal, as the error of a decryption whose token step fails with `E`.
    pub fn widen<E>(self) -> DecryptError<E> {
        match self {
            DecryptError::Xml(e) => DecryptError::Xml(e),
            DecryptError::Structure(m) => DecryptError::Structure(m),
            DecryptError::Unsupported(u) => DecryptError::Unsupported(u),
            DecryptError::Crypto => DecryptError::Crypto,
            DecryptError::Token(never) => match never {},
        }
    }
}

/// WK's encrypted assertion, taken apart; no libxml2 object, so it may cross threads.
pub struct WkEncrypted {
    /// The content algorithm named (the key size is taken from the unwrapped key).
    pub content: ContentAlgorithm,
    /// `EncryptedData`'s CipherValue: IV (12) ‖ ciphertext ‖ tag (16).
    pub ciphertext: Vec<u8>,
    /// The key wrap algorithm.
    pub wrap: KeyWrap,
    /// `EncryptedKey`'s CipherValue.
    pub wrapped_key: Vec<u8>,
    /// The sender's ephemeral P-256 point, uncompressed (65 bytes), not yet checked.
    pub ephemeral_point: Vec<u8>,
    /// AlgorithmID ‖ PartyUInfo ‖ PartyVInfo, hex-decoded exactly as sent.
    pub other_info: Zeroizing<Vec<u8>>,
}

impl WkEncrypted {
    /// The algorithms as the message names them, e.g. `ECDH-ES+kw-aes256+aes256-gcm`, for
    /// the audit record.
    pub fn algorithm_name(&self) -> &'static str {
        match (self.wrap, self.content) {
            (KeyWrap::Aes256, ContentAlgorithm::Aes256Gcm) => "ECDH-ES+kw-aes256+aes256-gcm",
            (KeyWrap::Aes256, ContentAlgorithm::Aes128Gcm) => "ECDH-ES+kw-aes256+aes128-gcm",
            (KeyWrap::Aes128, ContentAlgorithm::Aes256Gcm) => "ECDH-ES+kw-aes128+aes256-gcm",
            (KeyWrap::Aes128, ContentAlgorithm::Aes128Gcm) => "ECDH-ES+kw-aes128+aes128-gcm",
        }
    }

    /// SHA-256 of the ciphertext, for the audit record.
    pub fn ciphertext_sha256(&self) -> [u8; 32] {
        openssl::sha::sha256(&self.ciphertext)
    }
}

/// Parses `xml` safely (see [`parse`]) and reads its one encrypted assertion.
pub fn read(xml: &[u8], max_depth: usize) -> Result<WkEncrypted, Refused> {
    read_limited(xml, max_depth, &super::limits::XmlLimits::default())
}

/// [`read`] within the configured `[xml]` limits instead of the defaults.
pub fn read_limited(
    xml: &[u8],
    max_depth: usize,
    limits: &super::limits::XmlLimits,
) -> Result<WkEncrypted, Refused> {
    let parsed = parse::parse(xml, max_depth, limits)?;
    super::shape::ids(&parsed.doc)?;
    let root = parsed
        .doc
        .get_root_element()
        .ok_or_else(|| XmlError::internal("no root"))?;
    let found: Vec<Node> = parse::elements(&root)
        .into_iter()
        .filter(|n| is(n, SAML_NS, "EncryptedAssertion"))
        .collect();
    let assertion = match found.as_slice() {
        [one] => one,
        [] => return Err(structure("no saml2:EncryptedAssertion in the document")),
        many => {
            return Err(structure(format!(
                "{} saml2:EncryptedAssertion elements; exactly one is expected",
                many.len()
            )))
        }
    };
    let data = only_child(assertion, XENC_NS, "EncryptedData")?;
    let content_uri = encryption_method(&data)?;
    let content = ContentAlgorithm::from_uri(&content_uri)
        .ok_or_else(|| DecryptError::Unsupported(uri_text(&content_uri)))?;
    let ciphertext = cipher_value(&data)?;
    let key = encrypted_key(assertion, &data)?;
    let wrap_uri = encryption_method(&key)?;
    let wrap = KeyWrap::from_uri(&wrap_uri)
        .ok_or_else(|| DecryptError::Unsupported(uri_text(&wrap_uri)))?;
    let wrapped_key = cipher_value(&key)?;
    let agreement = only_child(
        &only_child(&key, DS_NS, "KeyInfo")?,
        XENC_NS,
        "AgreementMethod",
    )?;
    require_uri(&agreement, ECDH_ES)?;
    let other_info = concat_kdf_other_info(&agreement)?;
    let ephemeral_point = originator_point(&agreement)?;
    Ok(WkEncrypted {
        content,
        ciphertext,
        wrap,
        wrapped_key,
        ephemeral_point,
        other_info,
    })
}

/// The EncryptedKey in EncryptedData's KeyInfo, else the one beside EncryptedData.
fn encrypted_key(assertion: &Node, data: &Node) -> Result<Node, Refused> {
    let inside: Vec<Node> = children(data, DS_NS, "KeyInfo")
        .iter()
        .flat_map(|info| children(info, XENC_NS, "EncryptedKey"))
        .collect();
    let candidates = if inside.is_empty() {
        children(assertion, XENC_NS, "EncryptedKey")
    } else {
        inside
    };
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().expect("one")),
        0 => Err(structure(
            "no xenc:EncryptedKey in EncryptedData's KeyInfo or beside it",
        )),
        n => Err(structure(format!(
            "{n} xenc:EncryptedKey elements; exactly one is expected"
        ))),
    }
}

/// AlgorithmID ‖ PartyUInfo ‖ PartyVInfo from the ConcatKDFParams (SHA-256).
fn concat_kdf_other_info(agreement: &Node) -> Result<Zeroizing<Vec<u8>>, Refused> {
    let method = child_in(agreement, &[XENC11_NS, XENC_NS], "KeyDerivationMethod")?;
    require_uri(&method, CONCAT_KDF)?;
    let params = child_in(&method, &[XENC11_NS, XENC_NS], "ConcatKDFParams")?;
    let digest = only_child(&params, DS_NS, "DigestMethod")?;
    let digest_uri = algorithm_attr(&digest)?;
    if !SHA256_URIS.contains(&digest_uri.as_str()) {
        return Err(DecryptError::Unsupported(uri_text(&digest_uri)));
    }
    let mut out = Zeroizing::new(Vec::new());
    // WK's values are used exactly as hex-decoded: XML Encryption 1.1's padding-bits
    // byte is not dropped (libxmlsec1 1.3 drops it and fails on WK's messages).
    for name in ["AlgorithmID", "PartyUInfo", "PartyVInfo"] {
        let text = params
            .get_property_no_ns(name)
            .ok_or_else(|| structure(format!("ConcatKDFParams has no {name}")))?;
        let bytes = hex::decode(text.trim())
            .map_err(|_| structure(format!("ConcatKDFParams {name} is not hex")))?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// The base64 `dsig11:PublicKey` of the originator (65 bytes for P-256).
fn originator_point(agreement: &Node) -> Result<Vec<u8>, Refused> {
    let originator = only_child(agreement, XENC_NS, "OriginatorKeyInfo")?;
    let value = only_child(&originator, DS_NS, "KeyValue")?;
    let ec = only_child(&value, DSIG11_NS, "ECKeyValue")?;
    if let Some(curve) = children(&ec, DSIG11_NS, "NamedCurve").first() {
        let uri = curve.get_property_no_ns("URI").unwrap_or_default();
        if uri.trim() != P256_URN {
            return Err(structure(format!(
                "the ephemeral key's curve {} is not P-256",
                sanitise(&uri, 60)
            )));
        }
    }
    let point = base64_text(
        &only_child(&ec, DSIG11_NS, "PublicKey")?,
        "dsig11:PublicKey",
    )?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(structure(format!(
            "the ephemeral public key is {} bytes; an uncompressed P-256 point (65 bytes, 0x04 first) is expected",
            point.len()
        )));
    }
    Ok(point)
}

fn cipher_value(parent: &Node) -> Result<Vec<u8>, Refused> {
    let data = only_child(parent, XENC_NS, "CipherData")?;
    base64_text(
        &only_child(&data, XENC_NS, "CipherValue")?,
        "xenc:CipherValue",
    )
}

fn base64_text(node: &Node, what: &str) -> Result<Vec<u8>, Refused> {
    let text: String = node
        .get_content()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| structure(format!("{what} is not base64")))
}

/// The `Algorithm` of `node`'s one `xenc:EncryptionMethod`.
fn encryption_method(node: &Node) -> Result<String, Refused> {
    algorithm_attr(&only_child(node, XENC_NS, "EncryptionMethod")?)
}

/// `node`'s `Algorithm` attribute, trimmed.
fn algorithm_attr(node: &Node) -> Result<String, Refused> {
    node.get_property_no_ns("Algorithm")
        .map(|a| a.trim().to_owned())
        .ok_or_else(|| {
            structure(format!(
                "{} has no Algorithm",
                sanitise(&node.get_name(), 40)
            ))
        })
}

/// Refuses `node` unless its `Algorithm` is `expected`.
fn require_uri(node: &Node, expected: &str) -> Result<(), Refused> {
    let uri = algorithm_attr(node)?;
    if uri == expected {
        Ok(())
    } else {
        Err(DecryptError::Unsupported(uri_text(&uri)))
    }
}

fn is(node: &Node, ns: &str, name: &str) -> bool {
    node.get_name() == name && node.get_namespace().is_some_and(|n| n.get_href() == ns)
}

fn children(parent: &Node, ns: &str, name: &str) -> Vec<Node> {
    parent
        .get_child_elements()
        .into_iter()
        .filter(|c| is(c, ns, name))
        .collect()
}

fn only_child(parent: &Node, ns: &str, name: &str) -> Result<Node, Refused> {
    child_in(parent, &[ns], name)
}

fn child_in(parent: &Node, namespaces: &[&str], name: &str) -> Result<Node, Refused> {
    let found: Vec<Node> = namespaces
        .iter()
        .flat_map(|ns| children(parent, ns, name))
        .collect();
    match found.len() {
        1 => Ok(found.into_iter().next().expect("one")),
        0 => Err(structure(format!(
            "{} has no {name}",
            sanitise(&parent.get_name(), 40)
        ))),
        n => Err(structure(format!(
            "{} has {n} {name} elements; one is expected",
            sanitise(&parent.get_name(), 40)
        ))),
    }
}

/// An algorithm URI as the error names it: printable ASCII without quotes or angle
/// brackets, at most 100 characters (a URI, never document content).
fn uri_text(uri: &str) -> String {
    let mut out: String = uri
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !"\"'<>\\".contains(c) {
                c
            } else {
                '?'
            }
        })
        .take(100)
        .collect();
    if uri.trim().chars().count() > 100 {
        out.push('…');
    }
    out
}

fn structure(message: impl Into<String>) -> Refused {
    DecryptError::Structure(message.into())
}
