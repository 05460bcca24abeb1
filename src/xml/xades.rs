//! The XAdES-BES profile: an enveloped XML-DSig signature over a whole document, with the
//! signed properties KSeF's `AuthTokenRequest` and ePUAP's WS-Doręczyciel expect (ETSI
//! TS 101 903 v1.3.2, `SigningTime` and `SigningCertificate` v1).
//!
//! The `ds:Signature` is the last child of the document element. SignedInfo holds two
//! References, both exclusive c14n and SHA-256: `URI=""` (the document, through the
//! enveloped-signature transform) and `#<SignedProperties Id>` with
//! `Type="http://uri.etsi.org/01903#SignedProperties"`. `SigningCertificate` v1 is what
//! KSeF's Java client makes (DSS with `setEn319132(false)`) and what ePUAP's known client
//! sends: `CertDigest` (SHA-256, or SHA-1 for Doręczyciel) and `IssuerSerial`, whose
//! `X509IssuerName` is the issuer's RFC 4514 string and `X509SerialNumber` the decimal
//! serial.
//!
//! Digests and SignedInfo come from the XML core ([`super::dsig`], libxml2's c14n as
//! bytes); the answer is parsed again and re-digested before it is returned.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use der::Decode;
use libxml::tree::{Namespace, Node};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::dsig::{self, Reference, SigningCert, DS_NS};
use super::error::{sanitise, XmlError, XmlSignError};
use super::limits::XmlLimits;
use super::options::{CertificateDigest, XadesOptions, XadesSigned};
use super::parse::{self, Parsed};
use super::{raw, shape};

/// The XAdES 1.3.2 namespace.
pub const XADES_NS: &str = "http://uri.etsi.org/01903/v1.3.2#";
/// The `Type` of the Reference to SignedProperties.
pub const SIGNED_PROPERTIES_TYPE: &str = "http://uri.etsi.org/01903#SignedProperties";
pub use super::ns::SHA1;

/// What the re-parse check needs to know about what was signed.
struct Built {
    xml: String,
    signed: dsig::Signed,
    document_digest: Vec<u8>,
    properties: Reference,
    signature_id: String,
    signing_time: String,
}

pub(crate) fn sign<F, E>(
    xml: &[u8],
    opts: &XadesOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<XadesSigned, XmlSignError<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    // The tree is freed before the check parses the output again.
    let built = build(xml, opts, cert_der, sign)?;
    check_output(&built, opts)?;
    Ok(XadesSigned {
        signed_info_sha256: dsig::audit_hash(&built.signed),
        signature_id: built.signature_id,
        signed_properties_id: built.properties.id,
        signing_time: built.signing_time,
        xml: built.xml,
    })
}

fn build<F, E>(
    xml: &[u8],
    opts: &XadesOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<Built, XmlSignError<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let signer = SigningCert::new(opts.algorithm, cert_der)?;
    let issuer_serial = issuer_serial(cert_der)?;
    let (parsed, mut taken) = checked(xml, opts)?;
    let signature_id = match &opts.signature_id {
        Some(id) => id.clone(),
        None => dsig::fresh_id("Signature-", &taken),
    };
    taken.insert(signature_id.clone());
    let properties_id = dsig::fresh_id("SignedProperties-", &taken);

    // The document's digest before the signature goes in: with nothing added around it,
    // this is what a verifier gets after the enveloped-signature transform.
    let document = Reference {
        id: String::new(),
        enveloped: true,
        type_uri: None,
        digest: document_digest(&parsed)?,
    };
    // Its digest is filled in once SignedProperties is in place (below).
    let mut properties = Reference {
        id: properties_id,
        enveloped: false,
        type_uri: Some(SIGNED_PROPERTIES_TYPE),
        digest: Vec::new(),
    };
    let references = [document, properties.clone()];
    let mut skeleton = dsig::skeleton(&parsed.doc, opts.algorithm, &references)?;
    skeleton
        .signature
        .set_attribute("Id", &signature_id)
        .map_err(XmlError::internal)?;
    let ds = skeleton.ds.clone();
    let mut key_info = dsig::child(&mut skeleton.signature, &ds, "KeyInfo")?;
    let mut x509_data = dsig::child(&mut key_info, &ds, "X509Data")?;
    dsig::text_child(
        &mut x509_data,
        &ds,
        "X509Certificate",
        &signer.cert_base64(),
    )?;
    let signing_time = signing_time(opts.now)?;
    let qualifying = QualifyingProperties {
        target: &signature_id,
        properties_id: &properties.id,
        signing_time: &signing_time,
        digest: opts.certificate_digest,
        cert_der,
        issuer_serial: &issuer_serial,
    };
    let signed_properties = qualifying.build(&mut skeleton.signature, &ds)?;
    let mut root = parsed
        .doc
        .get_root_element()
        .ok_or_else(|| XmlError::internal("no document element"))?;
    root.add_child(&mut skeleton.signature)
        .map_err(XmlError::internal)?;
    properties.digest = dsig::exc_c14n_sha256(&parsed.doc, &signed_properties)?.to_vec();
    fill_digest(&skeleton.signature, 1, &properties.digest)?;
    let signed = dsig::sign(&mut skeleton, &signer, sign)?;
    let xml = parse::serialize(&parsed, xml.len() + 8192)?;
    Ok(Built {
        xml,
        signed,
        document_digest: references[0].digest.clone(),
        properties,
        signature_id,
        signing_time,
    })
}

/// The checks that need only the document and `opts`, not the key: the parse and the
/// `[xml]` limits, no processing instruction outside the document element, the IDs, no
/// `ds:Signature` child of the document element yet, and the asked-for signature Id
/// (a plain ID not yet in the document). Returns the parsed document and its IDs.
fn checked(
    xml: &[u8],
    opts: &XadesOptions,
) -> Result<(Parsed, std::collections::HashSet<String>), XmlError> {
    let parsed = parse::parse(xml, opts.max_depth, &opts.limits)?;
    refuse_outer_instructions(&parsed)?;
    let found = shape::xades(&parsed.doc)?;
    if found.signed {
        return Err(XmlError::AlreadySigned(
            "the document element already holds a ds:Signature".into(),
        ));
    }
    if let Some(id) = &opts.signature_id {
        shape::check_reference_id(id)?;
        if found.ids.taken.contains(id) {
            return Err(XmlError::DuplicateId(sanitise(id, 64)));
        }
    }
    Ok((parsed, found.ids.taken))
}

/// [`checked`], for a caller that reports a malformed document before a refusal of the
/// algorithm or the key (the daemon's order of checks, docs/api.md).
pub(crate) fn check(xml: &[u8], opts: &XadesOptions) -> Result<(), XmlError> {
    checked(xml, opts).map(drop)
}

/// Refuses a processing instruction before or after the document element. XML-DSig's
/// `URI=""` covers it, and xmlsec1 digests it, but signxml digests the document element
/// only (its `Digest mismatch for reference 0` on such a document, seen in
/// tests/xades.rs): a signature over it would verify for one consumer and not another.
/// Comments outside are fine: c14n without comments leaves them out for everyone.
fn refuse_outer_instructions(parsed: &Parsed) -> Result<(), XmlError> {
    let root = parsed
        .doc
        .get_root_element()
        .ok_or_else(|| XmlError::internal("no document element"))?;
    let mut outer = Vec::new();
    let mut node = root.get_prev_sibling();
    while let Some(n) = node {
        node = n.get_prev_sibling();
        outer.push(n);
    }
    let mut node = root.get_next_sibling();
    while let Some(n) = node {
        node = n.get_next_sibling();
        outer.push(n);
    }
    if outer
        .iter()
        .any(|n| n.get_type() == Some(libxml::tree::NodeType::PiNode))
    {
        return Err(XmlError::BadXml {
            line: 0,
            column: 0,
            reason: "a processing instruction outside the document element, which XAdES verifiers disagree on (xmlsec1 signs it with the document, signxml does not); move it inside the document element or remove it".into(),
        });
    }
    Ok(())
}

/// SHA-256 of the exclusive c14n of the whole document (what `URI=""` selects).
fn document_digest(parsed: &Parsed) -> Result<Vec<u8>, XmlError> {
    let mut hasher = openssl::sha::Sha256::new();
    raw::exc_c14n_document(&parsed.doc, &mut |chunk| hasher.update(chunk))?;
    Ok(hasher.finish().to_vec())
}

/// Writes `digest` into the DigestValue of the `index`th Reference of the Signature.
fn fill_digest(signature: &Node, index: usize, digest: &[u8]) -> Result<(), XmlError> {
    let missing = || XmlError::internal("the skeleton has no such Reference");
    let signed_info = signature.get_first_element_child().ok_or_else(missing)?;
    let reference = signed_info
        .get_child_elements()
        .into_iter()
        .filter(|n| n.get_name() == "Reference")
        .nth(index)
        .ok_or_else(missing)?;
    let mut value = reference
        .get_child_elements()
        .into_iter()
        .find(|n| n.get_name() == "DigestValue")
        .ok_or_else(missing)?;
    value
        .append_text(&B64.encode(digest))
        .map_err(XmlError::internal)
}

/// `X509IssuerName` and `X509SerialNumber` of a certificate.
struct IssuerSerial {
    issuer: String,
    serial: String,
}

fn issuer_serial(cert_der: &[u8]) -> Result<IssuerSerial, XmlError> {
    let bad = |what: &str| XmlError::BadCertificate(what.to_owned());
    let cert = openssl::x509::X509::from_der(cert_der).map_err(|_| bad("unreadable"))?;
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_dec_str().map(|s| s.to_string()))
        .map_err(|_| bad("unreadable serial number"))?;
    let issuer_der = cert
        .issuer_name()
        .to_der()
        .map_err(|_| bad("unreadable issuer"))?;
    let issuer =
        x509_cert::name::Name::from_der(&issuer_der).map_err(|_| bad("unreadable issuer"))?;
    Ok(IssuerSerial {
        issuer: rfc4514(&issuer),
        serial,
    })
}

/// The RFC 4514 string of `name`: most specific RDN first, RFC 4514's keywords for the
/// nine attribute types it names (section 3) and the dotted OID with the value's DER in
/// hex (`#...`, section 2.4) for every other, UTF-8 text as it is. Characters that RFC
/// 4514 escapes are escaped, and so are control, format and bidi characters (as `\XX` per
/// UTF-8 byte), which XML 1.0 cannot carry or a reader would misread.
fn rfc4514(name: &x509_cert::name::Name) -> String {
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    use der::{Encode, Tag, Tagged};
    const KEYWORDS: &[(&str, &str)] = &[
        ("2.5.4.3", "CN"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.6", "C"),
        ("2.5.4.9", "STREET"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("0.9.2342.19200300.100.1.1", "UID"),
    ];
    let mut rdns = Vec::with_capacity(name.0.len());
    for rdn in name.0.iter().rev() {
        let mut atvs = Vec::new();
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let keyword = KEYWORDS.iter().find(|(o, _)| *o == oid).map(|(_, k)| *k);
            let text = match atv.value.tag() {
                Tag::Utf8String => Utf8StringRef::try_from(&atv.value).ok().map(|s| s.as_str()),
                Tag::PrintableString => PrintableStringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str()),
                _ => None,
            };
            atvs.push(match (keyword, text) {
                (Some(keyword), Some(text)) => format!("{keyword}={}", escape(text)),
                _ => format!(
                    "{oid}=#{}",
                    hex::encode(atv.value.to_der().unwrap_or_default())
                ),
            });
        }
        rdns.push(atvs.join("+"));
    }
    rdns.join(",")
}

/// RFC 4514 section 2.4's escaping of one value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c == '\0' || crate::text::is_unsafe(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `ds:Object/xades:QualifyingProperties` with SigningTime and SigningCertificate v1.
struct QualifyingProperties<'a> {
    target: &'a str,
    properties_id: &'a str,
    signing_time: &'a str,
    digest: CertificateDigest,
    cert_der: &'a [u8],
    issuer_serial: &'a IssuerSerial,
}

impl QualifyingProperties<'_> {
    /// Adds the Object to `signature`; returns SignedProperties, to be digested in place.
    fn build(&self, signature: &mut Node, ds: &Namespace) -> Result<Node, XmlError> {
        let mut object = dsig::child(signature, ds, "Object")?;
        let mut qualifying = object
            .new_child(None, "QualifyingProperties")
            .map_err(XmlError::internal)?;
        let xades =
            Namespace::new("xades", XADES_NS, &mut qualifying).map_err(XmlError::internal)?;
        qualifying
            .set_namespace(&xades)
            .map_err(XmlError::internal)?;
        qualifying
            .set_attribute("Target", &format!("#{}", self.target))
            .map_err(XmlError::internal)?;
        let mut properties = dsig::child(&mut qualifying, &xades, "SignedProperties")?;
        properties
            .set_attribute("Id", self.properties_id)
            .map_err(XmlError::internal)?;
        let mut ssp = dsig::child(&mut properties, &xades, "SignedSignatureProperties")?;
        dsig::text_child(&mut ssp, &xades, "SigningTime", self.signing_time)?;
        let mut signing_cert = dsig::child(&mut ssp, &xades, "SigningCertificate")?;
        let mut cert = dsig::child(&mut signing_cert, &xades, "Cert")?;
        let mut cert_digest = dsig::child(&mut cert, &xades, "CertDigest")?;
        dsig::child(&mut cert_digest, ds, "DigestMethod")?
            .set_attribute("Algorithm", self.digest.method())
            .map_err(XmlError::internal)?;
        dsig::text_child(
            &mut cert_digest,
            ds,
            "DigestValue",
            &B64.encode(self.digest.digest(self.cert_der)),
        )?;
        let mut issuer_serial = dsig::child(&mut cert, &xades, "IssuerSerial")?;
        dsig::text_child(
            &mut issuer_serial,
            ds,
            "X509IssuerName",
            &self.issuer_serial.issuer,
        )?;
        dsig::text_child(
            &mut issuer_serial,
            ds,
            "X509SerialNumber",
            &self.issuer_serial.serial,
        )?;
        Ok(properties)
    }
}

/// Parses the answer again and checks it canonicalises to exactly what was signed: the
/// same SignedInfo bytes, the same SignedProperties digest in place, and, with the
/// signature taken out, the same document digest. Its IDs must be unique, so that the
/// SignedProperties reference resolves to one element only.
fn check_output(built: &Built, opts: &XadesOptions) -> Result<(), XmlError> {
    let broken = |what: &str| XmlError::internal(format!("re-parse check: {what}"));
    // XAdES adds ten levels below the document element and 32 elements.
    let limits = XmlLimits {
        max_elements: opts.limits.max_elements + 64,
        ..opts.limits.with_room_for_signature()
    };
    let reparsed = parse::parse(built.xml.as_bytes(), opts.max_depth.max(2) + 10, &limits)?;
    let ids = shape::ids(&reparsed.doc)?;
    if !ids.taken.contains(&built.properties.id) || !ids.taken.contains(&built.signature_id) {
        return Err(broken("an ID is missing"));
    }
    let root = reparsed
        .doc
        .get_root_element()
        .ok_or_else(|| broken("no document element"))?;
    let mut signature = root
        .get_child_elements()
        .pop()
        .filter(|n| is_ds(n, "Signature"))
        .ok_or_else(|| broken("the ds:Signature is not the last child"))?;
    let children = signature.get_child_elements();
    let signed_info = children
        .first()
        .filter(|n| is_ds(n, "SignedInfo"))
        .ok_or_else(|| broken("no SignedInfo"))?;
    if dsig::exc_c14n(&reparsed.doc, signed_info)? != built.signed.signed_info {
        return Err(broken("SignedInfo differs"));
    }
    let properties = children
        .iter()
        .filter(|n| is_ds(n, "Object"))
        .flat_map(|o| o.get_child_elements())
        .flat_map(|q| q.get_child_elements())
        .find(|p| p.get_attribute("Id").as_deref() == Some(built.properties.id.as_str()))
        .ok_or_else(|| broken("SignedProperties not found"))?;
    if dsig::exc_c14n_sha256(&reparsed.doc, &properties)?.as_slice() != built.properties.digest {
        return Err(broken("SignedProperties digest differs"));
    }
    signature.unlink_node();
    signature.set_rust_owned();
    let mut hasher = openssl::sha::Sha256::new();
    raw::exc_c14n_document(&reparsed.doc, &mut |chunk| hasher.update(chunk))?;
    if hasher.finish().as_slice() != built.document_digest {
        return Err(broken("document digest differs"));
    }
    Ok(())
}

fn is_ds(node: &Node, name: &str) -> bool {
    node.get_name() == name
        && node
            .get_namespace()
            .is_some_and(|ns| ns.get_href() == DS_NS)
}

/// `now` as `SigningTime` holds it: UTC, whole seconds, `Z`.
fn signing_time(now: OffsetDateTime) -> Result<String, XmlError> {
    now.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(XmlError::internal)?
        .format(&Rfc3339)
        .map_err(XmlError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_most_specific_first_escaped_oids_in_hex() {
        // Built as RFC 4514 writes it, most specific first (x509-cert parses that form).
        let name: x509_cert::name::Name =
            "CN=\\ #Certum\\ ,2.5.4.97=VATPL-1,O=Gmina Przykładowo\\, Urząd,C=PL"
                .parse()
                .unwrap();
        assert_eq!(
            rfc4514(&name),
            "CN=\\ #Certum\\ ,2.5.4.97=#0c07564154504c2d31,O=Gmina Przykładowo\\, Urząd,C=PL"
        );
        assert_eq!(escape("a\u{202e}b"), "a\\E2\\80\\AEb");
    }
}
