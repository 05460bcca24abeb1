//! The XML-DSig parts both profiles share: exclusive c14n and digests through libxml2,
//! the `ds:Signature` skeleton, the call to the signing closure, and the check that the
//! final bytes, parsed again, still canonicalise to what was digested and signed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libxml::tree::c14n::{CanonicalizationMode, CanonicalizationOptions};
use libxml::tree::{Document, Namespace, Node};
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509;

use super::error::{SignError, XmlError};
use super::parse::{self, Parsed};
use crate::algorithm::{self, Algorithm, Hash, Scheme};

/// The XML-DSig namespace.
pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Exclusive XML canonicalisation 1.0, without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The enveloped-signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// SHA-256 as a DigestMethod.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// One `ds:Reference`: the element's ID and its digest.
pub(crate) struct Reference {
    pub id: String,
    pub enveloped: bool,
    pub digest: Vec<u8>,
}

impl Reference {
    /// Digests `node` (already in place, without the signature inside it) under `id`.
    pub fn of(node: &mut Node, id: &str, enveloped: bool, doc: &Parsed) -> Result<Self, XmlError> {
        let canonical = exc_c14n(node, doc)?;
        Ok(Reference {
            id: id.to_owned(),
            enveloped,
            digest: Hash::Sha256.digest(canonical.as_bytes()),
        })
    }

    pub fn uri(&self) -> String {
        format!("#{}", self.id)
    }
}

/// The certificate for KeyInfo, and its public key to check the token's answer with.
pub(crate) struct Signer {
    pub algorithm: Algorithm,
    pub cert_der: Vec<u8>,
    key: PKey<Public>,
}

impl Signer {
    pub fn new(algorithm: Algorithm, cert_der: &[u8]) -> Result<Self, XmlError> {
        let key = public_key_of(cert_der)?;
        let fits = match algorithm.scheme() {
            Scheme::RsaPkcs1 | Scheme::RsaPss => key.id() == Id::RSA,
            Scheme::Ecdsa => key.id() == Id::EC,
        };
        if !fits {
            return Err(XmlError::AlgorithmMismatch(algorithm.name().to_owned()));
        }
        Ok(Signer {
            algorithm,
            cert_der: cert_der.to_vec(),
            key,
        })
    }

    pub fn cert_base64(&self) -> String {
        B64.encode(&self.cert_der)
    }
}

/// The public key of the certificate `der`, from a small cache: OpenSSL 3 decodes a
/// certificate's key through its provider decoders, which cost about a third of an XML
/// signing request on the profile (`scripts/bench`), for a certificate that is the same
/// on every request of a key. Keyed by the whole DER, so a renewed certificate is parsed
/// afresh.
fn public_key_of(der: &[u8]) -> Result<PKey<Public>, XmlError> {
    use std::sync::Mutex;
    /// Keys a daemon signs with at once, and then some.
    const KEEP: usize = 16;
    static CACHE: Mutex<Vec<(Vec<u8>, PKey<Public>)>> = Mutex::new(Vec::new());
    if let Some((_, key)) = CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(cached, _)| cached.as_slice() == der)
    {
        return Ok(key.clone());
    }
    let cert = X509::from_der(der).map_err(|_| XmlError::BadCertificate("unreadable".into()))?;
    let key = cert
        .public_key()
        .map_err(|_| XmlError::BadCertificate("unsupported public key".into()))?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= KEEP {
        cache.remove(0);
    }
    cache.push((der.to_vec(), key.clone()));
    Ok(key)
}

/// The exclusive c14n (no comments, no inclusive prefixes) of `node` in its document.
///
/// The libxml crate (0.3.23) decodes libxml2's c14n output with `from_utf8_lossy` one
/// flush at a time, and libxml2 flushes inside a single text or attribute value longer
/// than 16,000 bytes; a multi-byte character cut there becomes U+FFFD and the digest would
/// cover another text. A canonical form with more U+FFFD than the whole input is refused
/// rather than signed.
pub(crate) fn exc_c14n(node: &mut Node, doc: &Parsed) -> Result<String, XmlError> {
    let canonical = node
        .canonicalize(CanonicalizationOptions {
            mode: CanonicalizationMode::ExclusiveCanonical1_0,
            with_comments: false,
            inclusive_ns_prefixes: Vec::new(),
        })
        .map_err(|()| XmlError::internal("exclusive c14n failed"))?;
    if canonical.matches('\u{FFFD}').count() > doc.replacement_chars {
        return Err(XmlError::internal(
            "a text or attribute value over 16000 bytes with non-ASCII characters \
             cannot be canonicalised safely (libxml crate output chunking); split it",
        ));
    }
    Ok(canonical)
}

/// A `ds:Signature` being built: its SignedInfo and the empty SignatureValue.
pub(crate) struct Skeleton {
    pub signature: Node,
    pub ds: Namespace,
    signed_info: Node,
    value: Node,
}

/// Builds `<ds:Signature xmlns:ds>` with SignedInfo over `references` and an empty
/// SignatureValue; the caller adds KeyInfo and puts it in place before [`sign`].
pub(crate) fn skeleton(
    doc: &Document,
    algorithm: Algorithm,
    references: &[Reference],
) -> Result<Skeleton, XmlError> {
    let mut signature =
        Node::new("Signature", None, doc).map_err(|()| XmlError::internal("new Signature"))?;
    let ds = Namespace::new("ds", DS_NS, &mut signature).map_err(XmlError::internal)?;
    signature.set_namespace(&ds).map_err(XmlError::internal)?;
    let mut signed_info = child(&mut signature, &ds, "SignedInfo")?;
    child(&mut signed_info, &ds, "CanonicalizationMethod")?
        .set_attribute("Algorithm", EXC_C14N)
        .map_err(XmlError::internal)?;
    child(&mut signed_info, &ds, "SignatureMethod")?
        .set_attribute("Algorithm", algorithm.xmldsig_uri())
        .map_err(XmlError::internal)?;
    for reference in references {
        let mut r = child(&mut signed_info, &ds, "Reference")?;
        r.set_attribute("URI", &reference.uri())
            .map_err(XmlError::internal)?;
        let mut transforms = child(&mut r, &ds, "Transforms")?;
        if reference.enveloped {
            child(&mut transforms, &ds, "Transform")?
                .set_attribute("Algorithm", ENVELOPED)
                .map_err(XmlError::internal)?;
        }
        child(&mut transforms, &ds, "Transform")?
            .set_attribute("Algorithm", EXC_C14N)
            .map_err(XmlError::internal)?;
        child(&mut r, &ds, "DigestMethod")?
            .set_attribute("Algorithm", SHA256)
            .map_err(XmlError::internal)?;
        text_child(&mut r, &ds, "DigestValue", &B64.encode(&reference.digest))?;
    }
    let value = child(&mut signature, &ds, "SignatureValue")?;
    Ok(Skeleton {
        signature,
        ds,
        signed_info,
        value,
    })
}

/// A new child element in namespace `ns`.
pub(crate) fn child(parent: &mut Node, ns: &Namespace, name: &str) -> Result<Node, XmlError> {
    parent
        .new_child(Some(ns.clone()), name)
        .map_err(XmlError::internal)
}

/// A new child element in namespace `ns` holding `text`.
pub(crate) fn text_child(
    parent: &mut Node,
    ns: &Namespace,
    name: &str,
    text: &str,
) -> Result<Node, XmlError> {
    parent
        .add_text_child(Some(ns.clone()), name, text)
        .map_err(XmlError::internal)
}

/// What [`sign`] produced.
pub(crate) struct Signed {
    /// The exc-c14n bytes of SignedInfo that were signed.
    pub signed_info: String,
    /// The base64 SignatureValue.
    pub value_base64: String,
}

/// Canonicalises SignedInfo (the skeleton must be in place), has `sign` sign it, checks
/// the answer against the certificate, and fills in SignatureValue.
pub(crate) fn sign<F, E>(
    skeleton: &mut Skeleton,
    signer: &Signer,
    doc: &Parsed,
    sign: F,
) -> Result<Signed, SignError<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let signed_info = exc_c14n(&mut skeleton.signed_info, doc)?;
    let value = sign(signed_info.as_bytes()).map_err(SignError::Token)?;
    let digest = signer.algorithm.hash().digest(signed_info.as_bytes());
    let verified =
        algorithm::verify_digest(&signer.key, signer.algorithm, &digest, &value).unwrap_or(false);
    if !verified {
        return Err(XmlError::SignatureMismatch.into());
    }
    let value_base64 = B64.encode(&value);
    skeleton
        .value
        .append_text(&value_base64)
        .map_err(XmlError::internal)?;
    Ok(Signed {
        signed_info,
        value_base64,
    })
}

/// Parses `output` again and checks that it canonicalises to exactly what was signed:
/// the same SignedInfo bytes and, with the signature taken out, the same digests. This
/// catches any difference between the tree we signed and the bytes the caller sends.
pub(crate) fn check_output(
    output: &str,
    max_depth: usize,
    signed: &Signed,
    references: &[Reference],
) -> Result<(), XmlError> {
    let broken = |what: &str| Err(XmlError::internal(format!("re-parse check: {what}")));
    // The signature adds a few levels under the signed element.
    let reparsed = parse::parse(output.as_bytes(), max_depth + 8)?;
    let root = reparsed
        .doc
        .get_root_element()
        .ok_or_else(|| XmlError::internal("re-parse check: no root"))?;
    let all = parse::elements(&root);
    let is_ds = |n: &Node, name: &str| {
        n.get_name() == name && n.get_namespace().is_some_and(|ns| ns.get_href() == DS_NS)
    };
    let Some(mut signature) = all
        .iter()
        .find(|n| {
            is_ds(n, "Signature")
                && n.get_child_elements()
                    .iter()
                    .any(|c| is_ds(c, "SignatureValue") && c.get_content() == signed.value_base64)
        })
        .cloned()
    else {
        return broken("signature not found");
    };
    let Some(mut signed_info) = signature
        .get_child_elements()
        .into_iter()
        .find(|c| is_ds(c, "SignedInfo"))
    else {
        return broken("SignedInfo not found");
    };
    if exc_c14n(&mut signed_info, &reparsed)? != signed.signed_info {
        return broken("SignedInfo differs");
    }
    signature.unlink_node();
    signature.set_rust_owned();
    for reference in references {
        let Some(mut node) = all
            .iter()
            .find(|n| parse::id_of(n).as_deref() == Some(reference.id.as_str()))
            .cloned()
        else {
            return broken("reference not found");
        };
        let digest = Hash::Sha256.digest(exc_c14n(&mut node, &reparsed)?.as_bytes());
        if digest != reference.digest {
            return broken("digest differs");
        }
    }
    Ok(())
}

/// SHA-256 of the canonical SignedInfo, for the audit record.
pub(crate) fn audit_hash(signed: &Signed) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Hash::Sha256.digest(signed.signed_info.as_bytes()));
    out
}

/// A fresh ID not yet in the document: `prefix` and 128 random bits in hex.
pub(crate) fn fresh_id(prefix: &str, taken: &std::collections::HashSet<String>) -> String {
    loop {
        let mut bytes = [0u8; 16];
        openssl::rand::rand_bytes(&mut bytes).expect("OpenSSL's RNG works");
        let id = format!("{prefix}{}", hex::encode(bytes));
        if !taken.contains(&id) {
            return id;
        }
    }
}
