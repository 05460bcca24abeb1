//! The WS-Security X.509 token profile for SOAP 1.1 and 1.2, in the shape ePUAP clients
//! send: `wsse:Security` with a `wsse:BinarySecurityToken` and a `ds:Signature` over the
//! Body (and, optionally, a `wsu:Timestamp`), KeyInfo pointing at the token.

use libxml::tree::{Document, Namespace, Node};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

use super::dsig::{self, Reference, SigningCert};
use super::error::{XmlError, XmlSignError};
pub use super::ns::{SOAP11_NS, SOAP12_NS, WSSE_NS, WSU_NS};
use super::options::{WssOptions, WssSigned};
use super::parse;
use super::shape;

/// ValueType of an X.509 v3 BinarySecurityToken.
pub const X509V3: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
/// EncodingType of a base64 BinarySecurityToken.
pub const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

pub(crate) fn sign<B, F, E>(
    envelope: B,
    opts: &WssOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<WssSigned, XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    // The tree is freed before the check parses the output again: only one tree of the
    // document is in memory at a time.
    let (built, signed, references) = build(envelope, opts, cert_der, sign)?;
    dsig::check_output(
        &built.xml,
        opts.max_depth,
        &opts.limits,
        &signed,
        &references,
    )?;
    Ok(WssSigned {
        reference_uris: references.iter().map(Reference::uri).collect(),
        signed_info_sha256: dsig::audit_hash(&signed),
        ..built
    })
}

/// Parses, checks and signs; the signed envelope with its IDs (the reference URIs and
/// the audit hash are filled in by [`sign`]). The input is freed once parsed.
fn build<B, F, E>(
    envelope: B,
    opts: &WssOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<(WssSigned, dsig::Signed, Vec<Reference>), XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let signer = SigningCert::new(opts.algorithm, cert_der)?;
    let parsed = parse::parse(envelope.as_ref(), opts.max_depth, &opts.limits)?;
    let size = envelope.as_ref().len();
    drop(envelope);
    let shape = shape::wss(&parsed.doc)?;
    if opts.timestamp_ttl_seconds.is_some() && shape.timestamped {
        return Err(XmlError::AlreadyTimestamped.into());
    }
    let mut taken = shape.ids.taken;
    // Every element is found by its path before the tree changes.
    let mut body = shape::node_at(&parsed.doc, &shape.body)?;
    let existing = match &shape.security {
        Some(path) => Some(shape::node_at(&parsed.doc, path)?),
        None => None,
    };
    let mut header = match &shape.header {
        Some(path) => shape::node_at(&parsed.doc, path)?,
        None => new_header(&parsed.doc)?,
    };
    let mut security = match existing {
        Some(security) => security,
        None => new_security(&parsed.doc, &mut header)?,
    };
    let wsse = security
        .get_namespace()
        .ok_or_else(|| XmlError::internal("Security without namespace"))?;
    let wsu = ns_in_scope(&parsed.doc, &mut security, WSU_NS, "wsu")?;

    let body_id = match shape.body_id {
        Some(id) => id,
        None => {
            let id = dsig::fresh_id("id-", &taken);
            let body_wsu = ns_in_scope(&parsed.doc, &mut body, WSU_NS, "wsu")?;
            body.set_property_ns("Id", &id, &body_wsu)
                .map_err(XmlError::internal)?;
            taken.insert(id.clone());
            id
        }
    };
    let mut references = vec![Reference::of(&body, &body_id, false, &parsed)?];
    let mut timestamp_id = None;
    if let Some(ttl) = opts.timestamp_ttl_seconds {
        let id = dsig::fresh_id("TS-", &taken);
        taken.insert(id.clone());
        let timestamp = timestamp(&parsed.doc, &mut security, &wsu, &id, opts.now, ttl)?;
        references.push(Reference::of(&timestamp, &id, false, &parsed)?);
        timestamp_id = Some(id);
    }

    let token_id = dsig::fresh_id("X509-", &taken);
    let mut token = dsig::text_child(
        &mut security,
        &wsse,
        "BinarySecurityToken",
        &signer.cert_base64(),
    )?;
    set(&mut token, "EncodingType", BASE64_BINARY)?;
    set(&mut token, "ValueType", X509V3)?;
    token
        .set_property_ns("Id", &token_id, &wsu)
        .map_err(XmlError::internal)?;

    let mut skeleton = dsig::skeleton(&parsed.doc, opts.algorithm, &references)?;
    let mut key_info = dsig::child(&mut skeleton.signature, &skeleton.ds, "KeyInfo")?;
    security
        .add_child(&mut skeleton.signature)
        .map_err(XmlError::internal)?;
    // The STR goes in once the Signature sits inside Security, so that it uses the
    // Security element's own wsse prefix.
    let mut str_node = dsig::child(&mut key_info, &wsse, "SecurityTokenReference")?;
    let mut reference = dsig::child(&mut str_node, &wsse, "Reference")?;
    set(&mut reference, "URI", &format!("#{token_id}"))?;
    set(&mut reference, "ValueType", X509V3)?;

    let signed = dsig::sign(&mut skeleton, &signer, sign)?;
    let xml = parse::serialize(&parsed, size + 4096)?;
    let built = WssSigned {
        xml,
        reference_uris: Vec::new(),
        body_id,
        timestamp_id,
        token_id,
        signed_info_sha256: [0; 32],
    };
    Ok((built, signed, references))
}

fn set(node: &mut Node, name: &str, value: &str) -> Result<(), XmlError> {
    node.set_attribute(name, value).map_err(XmlError::internal)
}

/// A new `Header`, with the Envelope's prefix, before the Envelope's first element.
fn new_header(doc: &Document) -> Result<Node, XmlError> {
    let root = doc
        .get_root_element()
        .ok_or_else(|| XmlError::internal("no root"))?;
    let ns = root.get_namespace();
    let mut header = Node::new("Header", ns, doc).map_err(|()| XmlError::internal("new Header"))?;
    let mut first = root
        .get_first_element_child()
        .ok_or_else(|| XmlError::internal("Envelope without children"))?;
    first
        .add_prev_sibling(&mut header)
        .map_err(XmlError::internal)?;
    Ok(header)
}

/// A new `wsse:Security` at the Header's end.
fn new_security(doc: &Document, header: &mut Node) -> Result<Node, XmlError> {
    let mut security =
        Node::new("Security", None, doc).map_err(|()| XmlError::internal("new Security"))?;
    header
        .add_child(&mut security)
        .map_err(XmlError::internal)?;
    let wsse = ns_in_scope(doc, &mut security, WSSE_NS, "wsse")?;
    security.set_namespace(&wsse).map_err(XmlError::internal)?;
    Ok(security)
}

/// `wsu:Timestamp` with Created = `now` and Expires = `now + ttl`, first in Security.
fn timestamp(
    doc: &Document,
    security: &mut Node,
    wsu: &Namespace,
    id: &str,
    now: OffsetDateTime,
    ttl_seconds: u32,
) -> Result<Node, XmlError> {
    let format = |t: OffsetDateTime| {
        t.to_offset(UtcOffset::UTC)
            .format(TIME_FORMAT)
            .map_err(XmlError::internal)
    };
    let created = format(now)?;
    let expires = format(now + Duration::seconds(i64::from(ttl_seconds)))?;
    let mut timestamp = Node::new("Timestamp", Some(wsu.clone()), doc)
        .map_err(|()| XmlError::internal("new Timestamp"))?;
    match security.get_first_child() {
        Some(mut first) => first.add_prev_sibling(&mut timestamp),
        None => security.add_child(&mut timestamp).map_err(Into::into),
    }
    .map_err(XmlError::internal)?;
    timestamp
        .set_property_ns("Id", id, wsu)
        .map_err(XmlError::internal)?;
    dsig::text_child(&mut timestamp, wsu, "Created", &created)?;
    dsig::text_child(&mut timestamp, wsu, "Expires", &expires)?;
    Ok(timestamp)
}

/// A namespace for `href` usable on `node`: one in scope with a prefix, or a new
/// declaration on `node` with `prefix` (or `prefix1`, … if that one is taken).
fn ns_in_scope(
    doc: &Document,
    node: &mut Node,
    href: &str,
    prefix: &str,
) -> Result<Namespace, XmlError> {
    if let Some(ns) = node
        .get_namespaces(doc)
        .into_iter()
        .find(|ns| ns.get_href() == href && !ns.get_prefix().is_empty())
    {
        return Ok(ns);
    }
    let mut candidate = prefix.to_owned();
    let mut n = 1;
    while node.lookup_namespace_uri(&candidate).is_some() {
        candidate = format!("{prefix}{n}");
        n += 1;
    }
    Namespace::new(&candidate, href, node).map_err(XmlError::internal)
}
