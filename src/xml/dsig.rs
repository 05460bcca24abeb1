//! The XML-DSig parts both profiles share: exclusive c14n and digests through libxml2
//! (bytes straight from its output buffer, see [`super::raw`]), the `ds:Signature`
//! skeleton, the call to the signing closure, and the check that the final bytes, parsed
//! again, still canonicalise to what was digested and signed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libxml::tree::{Document, Namespace, Node};
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509;

use super::error::{XmlError, XmlSignError};
use super::limits::XmlLimits;
use super::parse::{self, Parsed};
use super::raw;
use super::shape::{self, Path};
use crate::algorithm::{self, Algorithm, Hash, Scheme};

pub use super::ns::DS_NS;
/// Exclusive XML canonicalisation 1.0, without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The enveloped-signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// SHA-256 as a DigestMethod.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// One `ds:Reference`: the element's ID (empty for `URI=""`, the whole document), its
/// `Type` if any, and its digest.
#[derive(Clone)]
pub(crate) struct Reference {
    pub id: String,
    pub enveloped: bool,
    pub type_uri: Option<&'static str>,
    pub digest: Vec<u8>,
}

impl Reference {
    /// Digests `node` (already in place, without the signature inside it) under `id`.
    pub fn of(node: &Node, id: &str, enveloped: bool, doc: &Parsed) -> Result<Self, XmlError> {
        Ok(Reference {
            id: id.to_owned(),
            enveloped,
            type_uri: None,
            digest: exc_c14n_sha256(&doc.doc, node)?.to_vec(),
        })
    }

    pub fn uri(&self) -> String {
        if self.id.is_empty() {
            String::new()
        } else {
            format!("#{}", self.id)
        }
    }
}

/// The certificate for KeyInfo, and its public key to check the token's answer with.
pub(crate) struct SigningCert {
    pub algorithm: Algorithm,
    pub cert_der: Vec<u8>,
    key: PKey<Public>,
}

impl SigningCert {
    pub fn new(algorithm: Algorithm, cert_der: &[u8]) -> Result<Self, XmlError> {
        let key = public_key_of(cert_der)?;
        let fits = match algorithm.scheme() {
            Scheme::RsaPkcs1 | Scheme::RsaPss => key.id() == Id::RSA,
            Scheme::Ecdsa => key.id() == Id::EC,
        };
        if !fits {
            return Err(XmlError::AlgorithmMismatch(algorithm.name().to_owned()));
        }
        Ok(SigningCert {
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

/// SHA-256 of the exclusive c14n of `node` in `doc`, hashed as libxml2 writes it.
pub(crate) fn exc_c14n_sha256(doc: &Document, node: &Node) -> Result<[u8; 32], XmlError> {
    let mut hasher = openssl::sha::Sha256::new();
    raw::exc_c14n(doc, node, &mut |chunk| hasher.update(chunk))?;
    Ok(hasher.finish())
}

/// The exclusive c14n of `node` in `doc`, as bytes.
pub(crate) fn exc_c14n(doc: &Document, node: &Node) -> Result<Vec<u8>, XmlError> {
    let mut out = Vec::new();
    raw::exc_c14n(doc, node, &mut |chunk| out.extend_from_slice(chunk))?;
    Ok(out)
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
        if let Some(type_uri) = reference.type_uri {
            r.set_attribute("Type", type_uri)
                .map_err(XmlError::internal)?;
        }
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
    pub signed_info: Vec<u8>,
    /// The base64 SignatureValue.
    pub value_base64: String,
}

/// Canonicalises SignedInfo (the skeleton must be in place), has `sign` sign it, checks
/// the answer against the certificate, and fills in SignatureValue.
pub(crate) fn sign<F, E>(
    skeleton: &mut Skeleton,
    signer: &SigningCert,
    sign: F,
) -> Result<Signed, XmlSignError<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    // In a document of its own: libxml2 then walks SignedInfo, not the whole envelope.
    // The re-parse check compares it with SignedInfo's c14n in place.
    let mut signed_info = Vec::new();
    raw::exc_c14n_alone(&skeleton.signed_info, &mut |chunk| {
        signed_info.extend_from_slice(chunk)
    })?;
    let value = sign(&signed_info).map_err(XmlSignError::Token)?;
    let digest = signer.algorithm.hash().digest(&signed_info);
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
/// One parse, one walk to find the signature and the referenced elements, then c14n of
/// SignedInfo and of each referenced subtree only.
pub(crate) fn check_output(
    output: &str,
    max_depth: usize,
    limits: &XmlLimits,
    signed: &Signed,
    references: &[Reference],
) -> Result<(), XmlError> {
    let broken = |what: &str| XmlError::internal(format!("re-parse check: {what}"));
    // The signature adds a few levels, elements and declarations.
    let reparsed = parse::parse(
        output.as_bytes(),
        max_depth + 8,
        &limits.with_room_for_signature(),
    )?;
    let found = find_signed(&reparsed.doc, signed, references)?;
    let (Some(signature), Some(signed_info)) = (found.signature, found.signed_info) else {
        return Err(broken("signature not found"));
    };
    let mut signature = shape::node_at(&reparsed.doc, &signature)?;
    let signed_info = shape::node_at(&reparsed.doc, &signed_info)?;
    let mut targets = Vec::with_capacity(references.len());
    for paths in &found.references {
        match paths.as_slice() {
            [path] => targets.push(shape::node_at(&reparsed.doc, path)?),
            [] => return Err(broken("reference not found")),
            _ => return Err(broken("reference found twice")),
        }
    }
    if exc_c14n(&reparsed.doc, &signed_info)? != signed.signed_info {
        return Err(broken("SignedInfo differs"));
    }
    signature.unlink_node();
    signature.set_rust_owned();
    for (node, reference) in targets.iter().zip(references) {
        if exc_c14n_sha256(&reparsed.doc, node)?.as_slice() != reference.digest {
            return Err(broken("digest differs"));
        }
    }
    Ok(())
}

/// Where the re-parsed document holds our signature and each referenced element.
struct Found {
    signature: Option<Path>,
    signed_info: Option<Path>,
    /// For each reference, every element carrying its ID (one, when all is well).
    references: Vec<Vec<Path>>,
}

fn find_signed(
    doc: &Document,
    signed: &Signed,
    references: &[Reference],
) -> Result<Found, XmlError> {
    let mut found = Found {
        signature: None,
        signed_info: None,
        references: vec![Vec::new(); references.len()],
    };
    let mut path: Path = Vec::new();
    // A SignedInfo seen under a ds:Signature, kept until its SignatureValue matches.
    let mut candidate: Option<Path> = None;
    raw::walk(doc, |element, depth, index| {
        if depth >= 2 {
            path.truncate(depth - 2);
            path.push(index);
        }
        if element.is(DS_NS, "SignedInfo") {
            candidate = Some(path.clone());
        }
        if element.is(DS_NS, "SignatureValue")
            && found.signature.is_none()
            && element.text() == signed.value_base64.as_bytes()
        {
            let parent = path[..path.len().saturating_sub(1)].to_vec();
            if candidate
                .as_ref()
                .is_some_and(|c| c[..c.len() - 1] == parent[..])
            {
                found.signed_info = candidate.take();
                found.signature = Some(parent);
            }
        }
        for attr in element.attributes() {
            if !shape::is_id_attribute(attr.name(), attr.namespace()) {
                continue;
            }
            let value = attr.value();
            for (i, reference) in references.iter().enumerate() {
                if *value == *reference.id.as_bytes() && !found.references[i].contains(&path) {
                    found.references[i].push(path.clone());
                }
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// SHA-256 of the canonical SignedInfo, for the audit record.
pub(crate) fn audit_hash(signed: &Signed) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Hash::Sha256.digest(&signed.signed_info));
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
