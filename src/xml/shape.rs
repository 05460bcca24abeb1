//! The one walk over a parsed document that does every check of its shape together:
//! duplicate IDs, the SOAP envelope's structure (one Body, one meaning), signatures and
//! Timestamps already in the Header, and the element a signature will reference.
//!
//! It finds the elements the profiles then edit by their position (a path of child
//! indices), so that nothing walks the document again to find them.

use std::collections::HashSet;

use libxml::tree::{Document, Node};

use super::error::{sanitise, XmlError};
use super::ns::{DS_NS, SOAP11_NS, SOAP12_NS, WSSE_NS, WSU_NS};
use super::raw::{self, Element};

/// The namespace of `xml:id`.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// What an ID used as a reference must look like: a plain name, so that no verifier
/// reads it as an XPointer (`xpointer(/)`), an empty or whitespace-padded reference, or a
/// QName, and so that it can go to the audit record as it is. A leading digit is allowed:
/// PHP's `uniqid()` makes such IDs.
pub fn is_plain_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    matches!(bytes.first(), Some(b) if b.is_ascii_alphanumeric() || *b == b'_')
        && bytes.len() <= 128
        && bytes.iter().all(|&b| ok(b))
}

/// Refuses an ID that is to be referenced and is not [`is_plain_id`].
pub fn check_reference_id(id: &str) -> Result<(), XmlError> {
    if is_plain_id(id) {
        Ok(())
    } else {
        Err(XmlError::BadId(format!(
            "{} is not a plain name (^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}$)",
            quoted_id(id)
        )))
    }
}

/// An ID for a message: quoted, untrimmed (so padding shows), at most 64 characters,
/// anything but letters, digits and `_.-:#()/ ` shown as `?`.
fn quoted_id(id: &str) -> String {
    let mut out: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-:#()/ ".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if id.chars().count() > 64 {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// Where an element sits, as indices among element children from the root (`[]`).
pub(crate) type Path = Vec<usize>;

/// The element at `path` in `doc`.
pub(crate) fn node_at(doc: &Document, path: &[usize]) -> Result<Node, XmlError> {
    let missing = || XmlError::internal("an element found by the walk is gone");
    let mut node = doc.get_root_element().ok_or_else(missing)?;
    for &index in path {
        node = node.get_first_element_child().ok_or_else(missing)?;
        for _ in 0..index {
            node = node.get_next_element_sibling().ok_or_else(missing)?;
        }
    }
    Ok(node)
}

/// Whether an attribute is one of the IDs this crate knows: `ID`, `Id`, `wsu:Id` (any
/// namespace, as verifiers told to match by name do) and `xml:id`.
pub(crate) fn is_id_attribute(name: &[u8], ns: Option<&[u8]>) -> bool {
    name == b"ID" || name == b"Id" || (name == b"id" && ns == Some(XML_NS.as_bytes()))
}

/// Refuses a namespace declaration that exclusive c14n cannot render (a relative or
/// malformed URI), as malformed input rather than a failure of ours.
fn canonicalisable(element: &Element<'_>) -> Result<(), XmlError> {
    if element.namespaces_canonicalisable() {
        return Ok(());
    }
    Err(XmlError::BadXml {
        line: element.line(),
        column: 0,
        reason: format!(
            "element {} declares a relative or malformed namespace URI, which XML canonicalisation refuses",
            name_of(element)
        ),
    })
}

/// The distinct ID values of one element, in attribute order.
fn ids_of(element: &Element<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for attr in element.attributes() {
        if is_id_attribute(attr.name(), attr.namespace()) {
            let value = String::from_utf8_lossy(&attr.value()).into_owned();
            if !out.contains(&value) {
                out.push(value);
            }
        }
    }
    out
}

/// Every ID value in the document, each at most once.
#[derive(Default)]
pub(crate) struct Ids {
    /// The values seen.
    pub taken: HashSet<String>,
}

impl Ids {
    /// Adds the element's IDs; the same value on two elements is refused.
    fn add(&mut self, values: &[String]) -> Result<(), XmlError> {
        for value in values {
            if !self.taken.insert(value.clone()) {
                return Err(XmlError::DuplicateId(sanitise(value, 64)));
            }
        }
        Ok(())
    }
}

/// The name of an element for a message: its local name, sanitised.
fn name_of(element: &Element<'_>) -> String {
    sanitise(&String::from_utf8_lossy(element.name()), 40)
}

/// Refuses an element that is to be referenced and holds two different IDs.
fn unambiguous(element: &Element<'_>, values: &[String]) -> Result<(), XmlError> {
    if values.len() > 1 {
        return Err(XmlError::AmbiguousId {
            element: name_of(element),
            line: element.line(),
        });
    }
    Ok(())
}

/// Walks the document only for its IDs (the decryption path).
pub(crate) fn ids(doc: &Document) -> Result<Ids, XmlError> {
    let mut ids = Ids::default();
    raw::walk(doc, |element, _, _| ids.add(&ids_of(element)))?;
    Ok(ids)
}

/// What [`xades`] found: the document's IDs, and whether its element already holds a
/// `ds:Signature` child.
pub(crate) struct XadesShape {
    /// Every ID value in the document.
    pub ids: Ids,
    /// A `ds:Signature` is a child of the document element.
    pub signed: bool,
}

/// Checks a document to be signed whole (XAdES, `URI=""`) in one walk: IDs unique,
/// namespaces that c14n can render, and a `ds:Signature` child of the document element.
/// A `ds:Signature` deeper down is payload (a signed attachment), as in a SOAP Body.
pub(crate) fn xades(doc: &Document) -> Result<XadesShape, XmlError> {
    let mut ids = Ids::default();
    let mut signed = false;
    raw::walk(doc, |element, depth, _| {
        canonicalisable(element)?;
        ids.add(&ids_of(element))?;
        signed |= depth == 2 && element.is(DS_NS, "Signature");
        Ok(())
    })?;
    Ok(XadesShape { ids, signed })
}

/// A SOAP envelope's parts, found by [`wss`].
pub(crate) struct SoapShape {
    /// Every ID value in the envelope.
    pub ids: Ids,
    /// The Envelope's namespace URI (SOAP 1.1 or 1.2).
    pub soap_ns: String,
    /// The Header, if any.
    pub header: Option<Path>,
    /// The Body.
    pub body: Path,
    /// The Body's `wsu:Id`, when it has one.
    pub body_id: Option<String>,
    /// The Header's `wsse:Security` for the ultimate receiver (no actor or role), if any.
    pub security: Option<Path>,
    /// Whether that Security holds a `wsu:Timestamp`.
    pub timestamped: bool,
}

/// Where an element is, for the checks of its children.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Envelope,
    /// The Header element itself.
    Header,
    /// Our Security header.
    Security,
    /// Anything else inside the Header.
    InHeader,
    /// The Body element itself.
    Body,
    /// Inside the Body: payload, never refused for its names.
    Payload,
}

fn not_envelope(why: String) -> XmlError {
    XmlError::NotSoapEnvelope(why)
}

/// Checks a SOAP 1.1 / 1.2 envelope in one walk: the Envelope holds at most one Header
/// followed by exactly one Body, both in its namespace; nothing in the Header is named
/// Envelope, Header or Body, or is a `ds:Signature`; IDs are unique, and the Body's is
/// plain and alone.
pub(crate) fn wss(doc: &Document) -> Result<SoapShape, XmlError> {
    let mut shape = SoapShape {
        ids: Ids::default(),
        soap_ns: String::new(),
        header: None,
        body: Vec::new(),
        body_id: None,
        security: None,
        timestamped: false,
    };
    let mut seen_body = false;
    let mut regions: Vec<Region> = Vec::new();
    let mut path: Path = Vec::new();
    raw::walk(doc, |element, depth, index| {
        regions.truncate(depth - 1);
        if depth >= 2 {
            path.truncate(depth - 2);
            path.push(index);
        }
        canonicalisable(element)?;
        let values = ids_of(element);
        shape.ids.add(&values)?;
        let region = match regions.last().copied() {
            None => root(element, &mut shape)?,
            Some(Region::Envelope) => {
                envelope_child(element, &values, &path, &mut shape, &mut seen_body)?
            }
            Some(parent @ (Region::Header | Region::Security | Region::InHeader)) => {
                header_descendant(element, parent, &path, &mut shape)?
            }
            Some(Region::Body | Region::Payload) => Region::Payload,
        };
        regions.push(region);
        Ok(())
    })?;
    if !seen_body {
        return Err(not_envelope("no Body element".into()));
    }
    Ok(shape)
}

fn root(element: &Element<'_>, shape: &mut SoapShape) -> Result<Region, XmlError> {
    let ns = element.namespace().unwrap_or(b"");
    if element.name() != b"Envelope" || !(ns == SOAP11_NS.as_bytes() || ns == SOAP12_NS.as_bytes())
    {
        return Err(not_envelope(format!(
            "the root element is {}, not a SOAP 1.1 or 1.2 Envelope",
            name_of(element)
        )));
    }
    shape.soap_ns = String::from_utf8_lossy(ns).into_owned();
    Ok(Region::Envelope)
}

fn envelope_child(
    element: &Element<'_>,
    values: &[String],
    path: &Path,
    shape: &mut SoapShape,
    seen_body: &mut bool,
) -> Result<Region, XmlError> {
    let line = element.line();
    let ours = element.namespace() == Some(shape.soap_ns.as_bytes());
    match element.name() {
        b"Header" if ours && shape.header.is_none() && !*seen_body => {
            shape.header = Some(path.clone());
            Ok(Region::Header)
        }
        b"Body" if ours && !*seen_body => {
            *seen_body = true;
            shape.body = path.clone();
            shape.body_id = body_id(element, values)?;
            Ok(Region::Body)
        }
        b"Header" if ours => Err(not_envelope(format!(
            "a second Header, or a Header after the Body, at line {line}"
        ))),
        b"Body" if ours => Err(not_envelope(format!("a second Body at line {line}"))),
        _ => Err(not_envelope(format!(
            "element {} at line {line}: the Envelope may hold only a Header and then one Body, in its own namespace",
            name_of(element)
        ))),
    }
}

/// The Body's `wsu:Id`: plain, and the Body's only ID value. An ID attribute of another
/// kind (`ID`, `Id`, `xml:id`, or an `Id` bound to another namespace) with a different
/// value would give a verifier a second way to resolve the reference; on its own it is
/// not what ePUAP resolves, so it is refused rather than signed next to a new wsu:Id.
fn body_id(element: &Element<'_>, values: &[String]) -> Result<Option<String>, XmlError> {
    unambiguous(element, values)?;
    let mut wsu_id = None;
    let mut other = None;
    for attr in element.attributes() {
        if !is_id_attribute(attr.name(), attr.namespace()) {
            continue;
        }
        let value = String::from_utf8_lossy(&attr.value()).into_owned();
        if attr.name() == b"Id" && attr.namespace() == Some(WSU_NS.as_bytes()) {
            wsu_id = Some(value);
        } else {
            other = Some(value);
        }
    }
    match (wsu_id, other) {
        (None, Some(other)) => Err(XmlError::BadId(format!(
            "{} on the Body (line {}) is not a wsu:Id in the WS-Security utility namespace, which ePUAP references the Body by",
            quoted_id(&other),
            element.line()
        ))),
        (Some(id), _) => {
            check_reference_id(&id)?;
            Ok(Some(id))
        }
        (None, None) => Ok(None),
    }
}

fn header_descendant(
    element: &Element<'_>,
    parent: Region,
    path: &Path,
    shape: &mut SoapShape,
) -> Result<Region, XmlError> {
    let line = element.line();
    if matches!(element.name(), b"Envelope" | b"Header" | b"Body") {
        return Err(not_envelope(format!(
            "element {} at line {line} is inside the Header; nothing there may be named Envelope, Header or Body",
            name_of(element)
        )));
    }
    if element.is(DS_NS, "Signature") {
        return Err(XmlError::AlreadySigned(format!(
            "the Header holds a ds:Signature at line {line}"
        )));
    }
    match parent {
        Region::Header
            if shape.security.is_none()
                && element.is(WSSE_NS, "Security")
                && !has_attribute(element, SOAP11_NS, "actor")
                && !has_attribute(element, SOAP12_NS, "role") =>
        {
            shape.security = Some(path.clone());
            Ok(Region::Security)
        }
        Region::Security => {
            if element.is(WSU_NS, "Timestamp") {
                shape.timestamped = true;
            }
            Ok(Region::InHeader)
        }
        _ => Ok(Region::InHeader),
    }
}

fn has_attribute(element: &Element<'_>, ns: &str, name: &str) -> bool {
    element
        .attributes()
        .any(|a| a.name() == name.as_bytes() && a.namespace() == Some(ns.as_bytes()))
}

/// The element a SAML signature will cover, found by [`saml`].
pub(crate) struct SamlShape {
    /// The element to sign.
    pub target: Path,
    /// Its `ID`.
    pub id: String,
    /// Whether it already holds a `ds:Signature` child.
    pub signed: bool,
}

/// Finds the element to sign (the root, or the one whose `ID` is `reference_id`) in one
/// walk that also checks IDs: its `ID` must be plain and its only ID.
pub(crate) fn saml(doc: &Document, reference_id: Option<&str>) -> Result<SamlShape, XmlError> {
    if let Some(wanted) = reference_id {
        check_reference_id(wanted)?;
    }
    let mut ids = Ids::default();
    let mut path: Path = Vec::new();
    // The target's path and depth, its `ID` (if any) and whether a ds:Signature child
    // was seen, filled in as the walk passes.
    let mut target: Option<(Path, usize, Option<String>)> = None;
    let mut signed = false;
    raw::walk(doc, |element, depth, index| {
        if depth >= 2 {
            path.truncate(depth - 2);
            path.push(index);
        }
        canonicalisable(element)?;
        let values = ids_of(element);
        ids.add(&values)?;
        if let Some((_, target_depth, _)) = &target {
            if depth == target_depth + 1 && element.is(DS_NS, "Signature") {
                signed = true;
            }
        }
        let id = no_ns_attribute(element, "ID");
        let is_target = match reference_id {
            None => depth == 1,
            Some(wanted) => target.is_none() && id.as_deref() == Some(wanted),
        };
        if is_target {
            unambiguous(element, &values)?;
            if id.is_none() {
                return Err(XmlError::MissingId(name_of(element)));
            }
            target = Some((path.clone(), depth, id));
        }
        Ok(())
    })?;
    let Some((target, _, Some(id))) = target else {
        let wanted = reference_id.unwrap_or_default();
        return Err(XmlError::ReferenceNotFound(sanitise(wanted, 64)));
    };
    check_reference_id(&id)?;
    Ok(SamlShape { target, id, signed })
}

fn no_ns_attribute(element: &Element<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .find(|a| a.name() == name.as_bytes() && a.namespace().is_none())
        .map(|a| String::from_utf8_lossy(&a.value()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids() {
        for ok in [
            "a",
            "_x",
            "ID-1",
            "5f3a9c2e1b7d4",
            "a.b_c-d",
            &"x".repeat(128),
        ] {
            assert!(is_plain_id(ok), "{ok}");
        }
        for bad in [
            "",
            " a",
            "a ",
            "xpointer(/)",
            "#a",
            "a:b",
            "-a",
            ".a",
            &"x".repeat(129),
            "ż",
        ] {
            assert!(!is_plain_id(bad), "{bad}");
        }
    }
}
