//! The `[xml]` limits on a document's shape, and the scan of its bytes that enforces
//! them (with the depth limit) before libxml2 parses it.
//!
//! Why before: libxml2 2.9 spends quadratic time inside a single start tag. It checks
//! each attribute against all earlier ones (100,000 attributes on one element: 50 s of
//! CPU) and each namespace declaration against those in scope (31,000 on the root: 4 s),
//! all before any callback could stop it; and with XML_PARSE_HUGE it no longer bounds
//! nesting. This scan is linear, reads only markup (text is skipped a byte search at a
//! time), and refuses such a document in microseconds. It is not a parser: it only needs
//! to count right for well-formed input, since libxml2 refuses the rest.

use serde::Deserialize;

use super::error::XmlError;

/// `[xml]`: how complex a document the XML endpoints accept. Each bound keeps one of
/// libxml2's costs linear in the document's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmlLimits {
    /// Namespace declarations in scope at any element (its own and its ancestors').
    pub max_namespaces_in_scope: usize,
    /// Namespace declarations in the whole document.
    pub max_namespace_declarations: usize,
    /// Attributes on one element, namespace declarations not counted.
    pub max_attributes_per_element: usize,
    /// Elements in the whole document.
    pub max_elements: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_namespaces_in_scope: 64,
            max_namespace_declarations: 4096,
            max_attributes_per_element: 256,
            max_elements: 1_000_000,
        }
    }
}

impl XmlLimits {
    /// These limits with room for what signing adds (a Security header, a Signature and
    /// their namespaces), for parsing a document this crate signed.
    pub(crate) fn with_room_for_signature(self) -> Self {
        XmlLimits {
            max_namespaces_in_scope: self.max_namespaces_in_scope + 8,
            max_namespace_declarations: self.max_namespace_declarations + 8,
            max_attributes_per_element: self.max_attributes_per_element + 4,
            max_elements: self.max_elements + 32,
        }
    }
}

/// Counts elements, attributes and namespace declarations in `text` and refuses it when
/// one passes `limits` or elements nest deeper than `max_depth`.
pub(crate) fn check(text: &str, limits: &XmlLimits, max_depth: usize) -> Result<(), XmlError> {
    let too_complex =
        |limit: &'static str, value: usize| Err(XmlError::TooComplex { limit, value });
    // Namespace declarations on each open element, innermost last.
    let mut open: Vec<usize> = Vec::new();
    let mut in_scope = 0usize;
    let mut declarations = 0usize;
    let mut elements = 0usize;
    let mut at = 0usize;
    let bytes = text.as_bytes();
    while let Some(lt) = find(text, "<", at) {
        let rest = &bytes[lt..];
        at = if rest.starts_with(b"<!--") {
            skip_past(text, "-->", lt + 4)
        } else if rest.starts_with(b"<![CDATA[") {
            skip_past(text, "]]>", lt + 9)
        } else if rest.starts_with(b"<?") {
            skip_past(text, "?>", lt + 2)
        } else if rest.starts_with(b"</") {
            if let Some(own) = open.pop() {
                in_scope -= own;
            }
            skip_past(text, ">", lt + 2)
        } else if rest.starts_with(b"<!") {
            lt + 2
        } else {
            let tag = start_tag(bytes, lt + 1);
            elements += 1;
            if elements > limits.max_elements {
                return too_complex("max_elements", limits.max_elements);
            }
            if open.len() + 1 > max_depth {
                return Err(XmlError::TooDeep(max_depth));
            }
            if tag.attributes > limits.max_attributes_per_element {
                return too_complex(
                    "max_attributes_per_element",
                    limits.max_attributes_per_element,
                );
            }
            declarations += tag.declarations;
            if declarations > limits.max_namespace_declarations {
                return too_complex(
                    "max_namespace_declarations",
                    limits.max_namespace_declarations,
                );
            }
            if in_scope + tag.declarations > limits.max_namespaces_in_scope {
                return too_complex("max_namespaces_in_scope", limits.max_namespaces_in_scope);
            }
            if !tag.empty {
                open.push(tag.declarations);
                in_scope += tag.declarations;
            }
            tag.end
        };
    }
    Ok(())
}

/// What a start tag holds.
struct StartTag {
    attributes: usize,
    declarations: usize,
    /// `<a/>`: no end tag follows.
    empty: bool,
    /// Where scanning goes on.
    end: usize,
}

/// Reads the start tag whose name begins at `from`, up to its `>` outside quotes.
fn start_tag(text: &[u8], from: usize) -> StartTag {
    let mut tag = StartTag {
        attributes: 0,
        declarations: 0,
        empty: false,
        end: text.len(),
    };
    let mut quote = None;
    let mut name_start = from;
    let mut last = 0u8;
    let mut i = from;
    while i < text.len() {
        let b = text[i];
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b' ' | b'\t' | b'\r' | b'\n' => name_start = i + 1,
                b'=' => {
                    let name = trim_end(&text[name_start..i]);
                    if name == b"xmlns" || name.starts_with(b"xmlns:") {
                        tag.declarations += 1;
                    } else {
                        tag.attributes += 1;
                    }
                }
                b'>' => {
                    tag.empty = last == b'/';
                    tag.end = i + 1;
                    return tag;
                }
                _ => {}
            },
        }
        if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            last = b;
        }
        i += 1;
    }
    tag
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Where `needle` next starts at or after `from`. Every `from` here follows an ASCII
/// byte of the markup, so it is a character boundary; were it not one, the search goes
/// on from the next boundary. A one-byte needle (`<`, `>`) is searched as a `char`,
/// which `str::find` does with memchr: a `&str` needle goes through the two-way
/// substring search, which took a tenth of an 8 MB envelope's signing time (`perf`).
fn find(text: &str, needle: &str, from: usize) -> Option<usize> {
    let mut from = from;
    while from < text.len() && !text.is_char_boundary(from) {
        from += 1;
    }
    let rest = text.get(from..)?;
    let at = match needle.as_bytes() {
        [byte] if byte.is_ascii() => rest.find(char::from(*byte)),
        _ => rest.find(needle),
    };
    at.map(|i| from + i)
}

/// The index just past the next `needle` at or after `from`, or the end of `text`.
fn skip_past(text: &str, needle: &str, from: usize) -> usize {
    find(text, needle, from).map_or(text.len(), |i| i + needle.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> XmlLimits {
        XmlLimits {
            max_namespaces_in_scope: 3,
            max_namespace_declarations: 5,
            max_attributes_per_element: 2,
            max_elements: 6,
        }
    }

    fn scan(text: &str) -> Result<(), XmlError> {
        check(text, &limits(), 4)
    }

    fn refused(text: &str) -> &'static str {
        match scan(text) {
            Err(XmlError::TooComplex { limit, .. }) => limit,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn each_limit_at_and_past_it() {
        assert!(scan("<a x='1' y=\"2>\"/>").is_ok());
        assert_eq!(
            refused("<a x='1' y='2' z='3'/>"),
            "max_attributes_per_element"
        );
        assert!(scan("<a/><a/><a/><a/><a/><a/>").is_ok());
        assert_eq!(refused("<r><a/><a/><a/><a/><a/><a/></r>"), "max_elements");
        let three = "<a xmlns='u' xmlns:b='v'><b xmlns:c='w'/></a>";
        assert!(scan(three).is_ok());
        let four = "<a xmlns='u' xmlns:b='v'><b xmlns:c='w'><c xmlns:d='x'/></b></a>";
        assert_eq!(refused(four), "max_namespaces_in_scope");
        // Declarations go out of scope with their element, but still count for the document.
        let siblings =
            "<r><a xmlns:a='1' xmlns:b='2'/><a xmlns:a='1' xmlns:b='2'/><a xmlns:a='1'/></r>";
        assert!(scan(siblings).is_ok());
        let six = "<r><a xmlns:a='1' xmlns:b='2'/><a xmlns:a='1' xmlns:b='2'/><a xmlns:a='1' xmlns:b='2'/></r>";
        assert_eq!(refused(six), "max_namespace_declarations");
    }

    #[test]
    fn the_xml_section_takes_each_key_and_refuses_unknown_ones() {
        let limits: XmlLimits = toml::from_str("max_elements = 10").expect("parses");
        assert_eq!(
            limits,
            XmlLimits {
                max_elements: 10,
                ..XmlLimits::default()
            }
        );
        assert_eq!(XmlLimits::default().max_namespaces_in_scope, 64);
        assert!(toml::from_str::<XmlLimits>("max_depth = 3").is_err());
    }

    #[test]
    fn depth_counts_open_elements_only() {
        assert!(scan("<a><b><c><d/></c></b></a>").is_ok());
        assert_eq!(
            scan("<a><b><c><d><e/></d></c></b></a>"),
            Err(XmlError::TooDeep(4))
        );
        assert!(scan("<a><b/><b/><b><c/></b></a>").is_ok());
    }

    #[test]
    fn markup_inside_comments_cdata_and_values_is_not_counted() {
        let text = "<r><!-- <a x='1' y='2' z='3'> --><![CDATA[<a><a><a><a><a>]]><?pi <a><a>?><a t='<b>'/></r>";
        assert!(scan(text).is_ok(), "{:?}", scan(text));
    }
}
