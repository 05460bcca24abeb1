//! The namespaces and algorithm URIs the XML files share, in one file that uses nothing else,
//! so that the walk of `shape.rs`, the signature of `dsig.rs` and the profiles can all name
//! them without using each other.

/// The XML-DSig namespace.
pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Security 1.0 secext namespace (`wsse`).
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu`).
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// SHA-1 as a DigestMethod (the certificate digest for ePUAP's Doręczyciel only).
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
