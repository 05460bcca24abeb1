//! The SAML profile: an enveloped XML-DSig signature over one element with an `ID` (a WK
//! AuthnRequest, ArtifactResolve or LogoutRequest), placed right after its `saml:Issuer`.

use libxml::tree::Node;

use super::dsig::{self, Reference, SigningCert};
use super::error::{sanitise, XmlError, XmlSignError};
use super::options::{SamlOptions, SamlSigned};
use super::parse;
use super::shape;

/// The SAML 2.0 assertion namespace, where `Issuer` lives.
pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

pub(crate) fn sign<B, F, E>(
    xml: B,
    opts: &SamlOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<SamlSigned, XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    // The tree is freed before the check parses the output again: only one tree of the
    // document is in memory at a time.
    let (xml, signed, references) = build(xml, opts, cert_der, sign)?;
    dsig::check_output(&xml, opts.max_depth, &opts.limits, &signed, &references)?;
    Ok(SamlSigned {
        xml,
        reference_uri: references[0].uri(),
        signed_info_sha256: dsig::audit_hash(&signed),
    })
}

/// Parses, checks and signs: the signed document, what was signed and the reference.
/// The input is freed once parsed.
fn build<B, F, E>(
    xml: B,
    opts: &SamlOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<(String, dsig::Signed, [Reference; 1]), XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let signer = SigningCert::new(opts.algorithm, cert_der)?;
    let parsed = parse::parse(xml.as_ref(), opts.max_depth, &opts.limits)?;
    let size = xml.as_ref().len();
    drop(xml);
    let found = shape::saml(&parsed.doc, opts.reference_id.as_deref())?;
    let mut target = shape::node_at(&parsed.doc, &found.target)?;
    if found.signed {
        return Err(
            XmlError::AlreadySigned(format!("{} has a ds:Signature", name_of(&target))).into(),
        );
    }
    // Digested before the signature goes in: with no whitespace added around it, this
    // equals what a verifier sees after the enveloped-signature transform.
    let reference = Reference::of(&target, &found.id, true, &parsed)?;
    let references = [reference];
    let mut skeleton = dsig::skeleton(&parsed.doc, opts.algorithm, &references)?;
    let mut key_info = dsig::child(&mut skeleton.signature, &skeleton.ds, "KeyInfo")?;
    let mut x509_data = dsig::child(&mut key_info, &skeleton.ds, "X509Data")?;
    dsig::text_child(
        &mut x509_data,
        &skeleton.ds,
        "X509Certificate",
        &signer.cert_base64(),
    )?;
    place(&mut target, &mut skeleton.signature)?;
    let signed = dsig::sign(&mut skeleton, &signer, sign)?;
    let xml = parse::serialize(&parsed, size + 4096)?;
    Ok((xml, signed, references))
}

/// Right after the element's `saml:Issuer` child, or as its first child.
fn place(target: &mut Node, signature: &mut Node) -> Result<(), XmlError> {
    let issuer = target.get_child_elements().into_iter().find(|c| {
        c.get_name() == "Issuer" && c.get_namespace().is_some_and(|ns| ns.get_href() == SAML_NS)
    });
    let placed = match (issuer, target.get_first_child()) {
        (Some(mut issuer), _) => issuer.add_next_sibling(signature),
        (None, Some(mut first)) => first.add_prev_sibling(signature),
        (None, None) => target.add_child(signature).map_err(Into::into),
    };
    placed.map_err(XmlError::internal)
}

fn name_of(node: &Node) -> String {
    sanitise(&node.get_name(), 40)
}
