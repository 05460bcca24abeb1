//! Parses untrusted XML with libxml2, refusing what a signer has no business reading.
//!
//! Checks run before libxml2 sees the bytes where that matters:
//! - the encoding (UTF-8 only: no UTF-16/32 byte order mark, no NUL, no other declared
//!   encoding, valid UTF-8), so that what is signed is what the caller meant;
//! - the prolog, for a `<!DOCTYPE`: a DTD can only appear there, so refusing it before
//!   parsing means no entity (billion laughs, XXE `SYSTEM`) is ever declared or expanded;
//! - the depth and the `[xml]` limits ([`super::limits`]), which keep libxml2's own work
//!   linear.
//!
//! libxml2 then parses without recovery, network, DTD loading or entity substitution,
//! with XML_PARSE_HUGE: that lifts its 10,000,000-byte cap on one text node (a scanned
//! PDF in base64 is larger) and its own nesting limit, which the scan above replaces.
//! After parsing, as a second line, the absence of any DTD node. IDs and the document's
//! shape are checked by the one walk in [`super::shape`].
//!
//! Processing instructions other than the XML declaration are kept as they are: libxml2
//! acts on none of them, and exclusive c14n covers those inside a signed element.

use libxml::error::XmlErrorLevel;
use libxml::tree::{Document, Node, NodeType};

use super::error::{sanitise, without_quoted, XmlError};
use super::limits::{self, XmlLimits};
use super::raw;

/// How deep elements may nest, unless the caller says otherwise.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// A parsed, checked document and the prolog bytes to write back in front of it.
pub(crate) struct Parsed {
    /// The libxml2 tree.
    pub doc: Document,
    /// The byte order mark, XML declaration and the whitespace after it, verbatim
    /// (empty when the input had none).
    pub declaration: String,
}

/// Parses and checks `input`.
pub(crate) fn parse(
    input: &[u8],
    max_depth: usize,
    limits: &XmlLimits,
) -> Result<Parsed, XmlError> {
    raw::route_errors_to_tracing();
    let text = check_encoding(input)?;
    let declaration = declaration(text)?;
    refuse_doctype(&text[declaration.len()..])?;
    limits::check(text, limits, max_depth)?;
    let doc = parse_tree(text)?;
    refuse_dtd_nodes(&doc)?;
    Ok(Parsed {
        doc,
        declaration: declaration.to_owned(),
    })
}

/// Writes the document back: the original declaration, then libxml2's serialisation
/// (UTF-8, no declaration of its own, no reformatting), as bytes all the way, into one
/// buffer of about `size_hint` bytes (the input's size plus what signing adds).
pub(crate) fn serialize(parsed: &Parsed, size_hint: usize) -> Result<String, XmlError> {
    let start = parsed.declaration.len();
    let mut out = Vec::with_capacity(start + size_hint);
    out.extend_from_slice(parsed.declaration.as_bytes());
    raw::serialize(&parsed.doc, &mut out)?;
    let skip = if start == 0 {
        out.iter().take_while(|&&b| b == b'\n').count()
    } else {
        out[start..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count()
    };
    out.drain(start..start + skip);
    // libxml2 writes UTF-8 from a UTF-8 tree; anything else is refused, never repaired.
    String::from_utf8(out).map_err(|e| {
        XmlError::internal(format!(
            "libxml2's output is not UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Every element under (and including) `root`, in document order.
pub(crate) fn elements(root: &Node) -> Vec<Node> {
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        let mut children = node.get_child_elements();
        children.reverse();
        stack.extend(children);
        out.push(node);
    }
    out
}

fn check_encoding(input: &[u8]) -> Result<&str, XmlError> {
    let refuse = |why: &str| Err(XmlError::EncodingUnsupported(why.to_owned()));
    if input.starts_with(&[0xFE, 0xFF]) || input.starts_with(&[0xFF, 0xFE]) {
        return refuse("UTF-16 or UTF-32 byte order mark");
    }
    if input.starts_with(&[0x00, 0x00, 0xFE, 0xFF]) {
        return refuse("UTF-32 byte order mark");
    }
    // `contains` on bytes searches with memchr; the position only when there is one.
    if let Some(at) = input
        .contains(&0)
        .then(|| input.iter().position(|&b| b == 0))
        .flatten()
    {
        return Err(XmlError::EncodingUnsupported(format!(
            "NUL byte at offset {at} (UTF-16 or UTF-32 without a byte order mark?)"
        )));
    }
    std::str::from_utf8(input).map_err(|e| {
        XmlError::EncodingUnsupported(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })
}

const BOM: &str = "\u{FEFF}";

/// The BOM and XML declaration with the whitespace after them; refuses a declared
/// encoding other than UTF-8.
fn declaration(text: &str) -> Result<&str, XmlError> {
    let start = if text.starts_with(BOM) { BOM.len() } else { 0 };
    let rest = &text[start..];
    let is_decl = rest.starts_with("<?xml")
        && rest[5..].starts_with(|c: char| c.is_ascii_whitespace() || c == '?');
    if !is_decl {
        return Ok(&text[..start]);
    }
    // An unterminated declaration is left for libxml2 to report with its position.
    let Some(end) = rest.find("?>") else {
        return Ok(&text[..start]);
    };
    if let Some(encoding) = pseudo_attribute(&rest[5..end], "encoding") {
        if !encoding.eq_ignore_ascii_case("UTF-8") {
            return Err(XmlError::EncodingUnsupported(format!(
                "declared encoding {}",
                sanitise(encoding, 30)
            )));
        }
    }
    let after = &rest[end + 2..];
    let ws = after.len() - after.trim_start_matches(is_xml_space).len();
    Ok(&text[..start + end + 2 + ws])
}

/// The value of `name="…"` (or `'…'`) in an XML declaration's body.
fn pseudo_attribute<'a>(decl: &'a str, name: &str) -> Option<&'a str> {
    let at = decl.find(name)?;
    let rest = decl[at + name.len()..].trim_start_matches(is_xml_space);
    let rest = rest.strip_prefix('=')?.trim_start_matches(is_xml_space);
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = &rest[1..];
    value.find(quote).map(|end| &value[..end])
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Walks the prolog (comments, processing instructions, whitespace) up to the first
/// other markup; a DTD can only appear there.
fn refuse_doctype(mut rest: &str) -> Result<(), XmlError> {
    loop {
        rest = rest.trim_start_matches(is_xml_space);
        let skip_to = |end: &str, from: usize| rest[from..].find(end).map(|i| from + i + end.len());
        let next = if rest.starts_with("<!--") {
            skip_to("-->", 4)
        } else if rest.starts_with("<?") {
            skip_to("?>", 2)
        } else {
            let doctype = rest
                .get(..9)
                .is_some_and(|s| s.eq_ignore_ascii_case("<!DOCTYPE"));
            return if doctype {
                Err(XmlError::DoctypeForbidden)
            } else {
                Ok(())
            };
        };
        match next {
            Some(at) => rest = &rest[at..],
            None => return Ok(()),
        }
    }
}

fn parse_tree(text: &str) -> Result<Document, XmlError> {
    use libxml::bindings::{
        xmlParserOption_XML_PARSE_HUGE as HUGE, xmlParserOption_XML_PARSE_IGNORE_ENC as IGNORE_ENC,
        xmlParserOption_XML_PARSE_NOERROR as NOERROR, xmlParserOption_XML_PARSE_NONET as NONET,
        xmlParserOption_XML_PARSE_NOWARNING as NOWARNING,
    };
    // No recovery, no network, no DTD loading, no entity substitution. The bytes are
    // UTF-8 already (checked above, as is any declared encoding), so libxml2 reads them
    // as they are (IGNORE_ENC, no encoding given): given one, it would copy the whole
    // input through its UTF-8 to UTF-8 converter into a buffer of twice its size. Its own
    // detection from the first bytes can only find UTF-8 here (no NUL, no UTF-16/32
    // mark, valid UTF-8).
    let options = (NOERROR | NOWARNING | NONET | HUGE | IGNORE_ENC) as std::ffi::c_int;
    match raw::parse(text.as_bytes(), options) {
        (Some(doc), diagnostics) => match first_error(&diagnostics) {
            Some(error) => Err(error),
            None => Ok(doc),
        },
        (None, diagnostics) => Err(first_error(&diagnostics)
            .unwrap_or_else(|| bad_xml(0, 0, "libxml2 returned no document"))),
    }
}

/// The first error (not warning) libxml2 reported. Namespace errors such as an
/// undeclared prefix are not fatal to libxml2, but are to us.
fn first_error(diagnostics: &[libxml::error::StructuredError]) -> Option<XmlError> {
    let error = diagnostics
        .iter()
        .find(|d| matches!(d.level, XmlErrorLevel::Error | XmlErrorLevel::Fatal))?;
    let message = error.message.as_deref().unwrap_or("unknown error");
    // libxml2 checks `xml:id` values itself ("ID x already defined"): the same refusal as
    // for the other ID attributes, with the same code.
    if error.code == libxml::bindings::xmlParserErrors_XML_DTD_ID_REDEFINED as i32 {
        let id = message
            .trim()
            .strip_prefix("ID ")
            .and_then(|m| m.strip_suffix("already defined"))
            .unwrap_or("");
        return Some(XmlError::DuplicateId(sanitise(id, 64)));
    }
    let line = error.line.unwrap_or(0).max(0) as u32;
    let column = error.col.unwrap_or(0).max(0) as u32;
    Some(bad_xml(line, column, message))
}

/// libxml2 quotes values (a namespace URI, an encoding) between apostrophes: those are
/// content, so they are dropped; element names, which it does not quote, stay.
fn bad_xml(line: u32, column: u32, reason: &str) -> XmlError {
    XmlError::BadXml {
        line,
        column,
        reason: without_quoted(reason),
    }
}

/// In case a DTD slipped past the prolog check.
fn refuse_dtd_nodes(doc: &Document) -> Result<(), XmlError> {
    let mut top = doc.as_node().get_first_child();
    while let Some(node) = top {
        if matches!(
            node.get_type(),
            Some(NodeType::DTDNode | NodeType::DocumentTypeNode | NodeType::EntityDecl)
        ) {
            return Err(XmlError::DoctypeForbidden);
        }
        top = node.get_next_sibling();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(input: &str) -> XmlError {
        match parse(input.as_bytes(), DEFAULT_MAX_DEPTH, &XmlLimits::default()) {
            Ok(_) => panic!("accepted: {input}"),
            Err(e) => e,
        }
    }

    #[test]
    fn doctype_is_refused_before_parsing() {
        assert_eq!(refuse("<!DOCTYPE a><a/>"), XmlError::DoctypeForbidden);
        assert_eq!(
            refuse("<?xml version=\"1.0\"?>\n<!-- c -->\n<?pi x?>\n<!doctype a><a/>"),
            XmlError::DoctypeForbidden
        );
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            doc += &format!("<!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10));
        }
        doc += "]>\n<lolz>&lol9;</lolz>";
        let e = refuse(&doc);
        assert_eq!(e, XmlError::DoctypeForbidden);
        assert_eq!(e.code(), "xml_doctype_forbidden");
    }

    #[test]
    fn xxe_system_entity_is_refused() {
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>";
        assert_eq!(refuse(doc), XmlError::DoctypeForbidden);
    }

    #[test]
    fn a_doctype_text_inside_a_comment_is_only_text() -> Result<(), XmlError> {
        let parsed = parse(
            b"<a><!-- <!DOCTYPE a> --></a>",
            DEFAULT_MAX_DEPTH,
            &XmlLimits::default(),
        )?;
        assert!(serialize(&parsed, 64)?.contains("<!-- <!DOCTYPE a> -->"));
        Ok(())
    }

    #[test]
    fn utf16_is_refused() {
        let mut bom = vec![0xFF, 0xFE];
        for unit in "<a/>".encode_utf16() {
            bom.extend(unit.to_le_bytes());
        }
        let e = parse(&bom, DEFAULT_MAX_DEPTH, &XmlLimits::default())
            .err()
            .expect("refused");
        assert_eq!(e.code(), "xml_encoding_unsupported", "{e}");
        // Without a byte order mark: libxml2 would sniff it, so NUL bytes are refused.
        let e = parse(&bom[2..], DEFAULT_MAX_DEPTH, &XmlLimits::default())
            .err()
            .expect("refused");
        assert_eq!(e.code(), "xml_encoding_unsupported", "{e}");
    }

    #[test]
    fn other_declared_encodings_are_refused() {
        let e = refuse("<?xml version=\"1.0\" encoding=\"ISO-8859-2\"?><a/>");
        assert_eq!(
            e,
            XmlError::EncodingUnsupported("declared encoding ISO-8859-2".into())
        );
        assert!(parse(
            b"<?xml version='1.0' encoding='utf-8'?><a/>",
            8,
            &XmlLimits::default()
        )
        .is_ok());
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let e = parse(b"<a>\xB1</a>", DEFAULT_MAX_DEPTH, &XmlLimits::default())
            .err()
            .expect("refused");
        assert_eq!(
            e,
            XmlError::EncodingUnsupported("invalid UTF-8 at byte 3".into())
        );
    }

    fn nested(depth: usize) -> String {
        "<a>".repeat(depth) + &"</a>".repeat(depth)
    }

    #[test]
    fn depth_is_bounded() {
        assert!(parse(nested(64).as_bytes(), 64, &XmlLimits::default()).is_ok());
        assert_eq!(refuse(&nested(65)), XmlError::TooDeep(64));
        assert_eq!(
            parse(nested(10).as_bytes(), 9, &XmlLimits::default()).err(),
            Some(XmlError::TooDeep(9))
        );
    }

    #[test]
    fn a_depth_bomb_is_too_deep_not_a_crash() {
        let e = refuse(&nested(100_000));
        assert_eq!(e.code(), "xml_too_deep", "{e}");
    }

    #[test]
    fn malformed_xml_names_line_and_column() {
        let e = refuse("<a>\n  <b>text</c>\n</a>");
        let XmlError::BadXml { line, column, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*line, 2);
        assert!(*column > 0);
        assert_eq!(e.code(), "bad_xml");
        assert!(!e.to_string().contains("text"), "{e}");
    }

    #[test]
    fn quoted_content_stays_out_of_messages() {
        let e = refuse("<a xmlns:x=\"secret value\"/>");
        assert_eq!(e.code(), "bad_xml");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn an_undeclared_prefix_is_malformed() {
        assert_eq!(refuse("<x:a/>").code(), "bad_xml");
    }

    #[test]
    fn comments_processing_instructions_and_the_declaration_survive() -> Result<(), XmlError> {
        let input = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- przed -->\n<a><?keep me?><!-- w -->Zażółć &amp; <![CDATA[<x>]]></a>";
        let out = serialize(&parse(input.as_bytes(), 8, &XmlLimits::default())?, 0)?;
        assert_eq!(out, input.to_owned() + "\n");
        let out = serialize(&parse(b"<a>  <b/>\n</a>", 8, &XmlLimits::default())?, 0)?;
        assert_eq!(out, "<a>  <b/>\n</a>\n");
        Ok(())
    }
}
