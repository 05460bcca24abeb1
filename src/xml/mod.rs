//! XML signing: WS-Security for ePUAP's SOAP services and enveloped XML-DSig for WK's
//! SAML messages. Each entry point is a pure function that parses, signs through a
//! closure (the token) and returns the final bytes, all on the calling thread: libxml2
//! documents are not thread-safe, so the daemon calls these inside `spawn_blocking`.
//!
//! **Why libxml2, through the `libxml` crate.** Canonicalisation is where XML signatures
//! break, so it comes from the implementation the verifiers use: xmlsec1, zeep (via
//! python-xmlsec) and lxml all run libxml2's `xmlC14NExecute`. The crate exposes exclusive
//! c14n of a node *in its document context* (a visibility callback, as xmlsec does, so
//! inherited namespaces come out right), an editable tree, and parser diagnostics with
//! line and column. The alternatives: `xml_c14n` wraps the same libxml2 but only
//! canonicalises whole documents from strings, with no tree to edit; `bergshamra`
//! re-implements xmlsec in Rust with its own key providers, young and much larger than
//! what we need (and its ECDH-ES follows the spec where WK does not); `quick-xml` would
//! mean writing c14n by hand, which we refuse to do. The cost: the system libxml2 (Debian
//! `libxml2-dev`, `pkg-config`, and `libclang-dev` for the crate's bindgen) at build time.
//!
//! The path: [`parse`] (refusals before and after libxml2 parses, with the [`limits`]
//! scan) → [`shape`] (one walk: IDs, the envelope's structure, what is to be referenced)
//! → [`wss`] / [`saml`] (where the signature goes) → [`dsig`] (c14n, digests, SignedInfo,
//! the closure, and a re-parse of the output to prove it canonicalises to what was
//! signed). Every byte digested, signed or returned comes from libxml2's own output
//! buffers through `raw`, never through a lossy string.
//!
//! [`xades`] signs a whole document (KSeF's `AuthTokenRequest`, ePUAP's Doręczyciel)
//! with XAdES-BES on the same parse, walk, c14n and re-check.
//!
//! Decryption of WK's encrypted assertion: [`enc`] (read the EncryptedAssertion, safely
//! parsed) → [`ecdh_es`] (point check, Z through a closure (the token), ConcatKDF, key
//! unwrap, AES-GCM).

pub mod dsig;
pub mod ecdh_es;
pub mod enc;
pub mod error;
pub mod limits;
mod ns;
pub mod options;
pub mod parse;
mod raw;
pub mod saml;
pub mod shape;
pub mod wss;
pub mod xades;

pub use error::{XmlError, XmlSignError};
pub use limits::XmlLimits;
pub use options::{
    CertificateDigest, SamlOptions, SamlSigned, WssOptions, WssSigned, XadesOptions, XadesSigned,
};
pub use parse::DEFAULT_MAX_DEPTH;

/// Signs a SOAP 1.1 / 1.2 envelope with WS-Security (X.509 token profile).
///
/// The envelope is taken by value (a `&[u8]` works too): an owned one is freed as soon as
/// libxml2 has parsed it, so a large document is not held while the answer is built.
///
/// `sign` receives the exclusive-c14n bytes of SignedInfo and returns the signature
/// value (RSA: PKCS#1 v1.5 or PSS bytes; ECDSA: raw r‖s); it is called at most once, and
/// its answer is checked against `cert_der`'s public key before it is used.
pub fn sign_wss<B, F, E>(
    envelope: B,
    opts: &WssOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<WssSigned, XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    wss::sign(envelope, opts, cert_der, sign)
}

/// Signs a SAML message (or the element with `opts.reference_id` inside any document)
/// with an enveloped XML-DSig signature placed after its `saml:Issuer`.
///
/// `sign`, and the document taken by value, are as for [`sign_wss`].
pub fn sign_saml<B, F, E>(
    xml: B,
    opts: &SamlOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<SamlSigned, XmlSignError<E>>
where
    B: AsRef<[u8]>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    saml::sign(xml, opts, cert_der, sign)
}

/// Signs a whole document with enveloped XAdES-BES: the `ds:Signature` becomes the last
/// child of the document element (see [`xades`] for its contents). A document element
/// that already holds a `ds:Signature` child is refused (`already_signed`).
///
/// `sign` is as for [`sign_wss`]: it gets SignedInfo's exclusive-c14n bytes and returns
/// the signature value (ECDSA as raw r‖s), checked against `cert_der` before use.
pub fn sign_xades<F, E>(
    xml: &[u8],
    opts: &XadesOptions,
    cert_der: &[u8],
    sign: F,
) -> Result<XadesSigned, XmlSignError<E>>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    xades::sign(xml, opts, cert_der, sign)
}

/// The checks of [`sign_wss`] that need only the envelope and `opts`, not the key: the
/// parse, the `[xml]` limits, the SOAP structure and an existing Timestamp. For a caller
/// that reports a malformed document before a refusal of the algorithm or the key
/// (the daemon's order of checks, docs/api.md).
pub fn check_wss(envelope: &[u8], opts: &WssOptions) -> Result<(), XmlError> {
    let parsed = parse::parse(envelope, opts.max_depth, &opts.limits)?;
    let shape = shape::wss(&parsed.doc)?;
    if opts.timestamp_ttl_seconds.is_some() && shape.timestamped {
        return Err(XmlError::AlreadyTimestamped);
    }
    Ok(())
}

/// As [`check_wss`], for [`sign_saml`]: the parse, the limits, the IDs and the element
/// to sign.
pub fn check_saml(xml: &[u8], opts: &SamlOptions) -> Result<(), XmlError> {
    let parsed = parse::parse(xml, opts.max_depth, &opts.limits)?;
    shape::saml(&parsed.doc, opts.reference_id.as_deref())?;
    Ok(())
}

/// As [`check_wss`], for [`sign_xades`]: the parse, the limits, the IDs, no
/// `ds:Signature` child of the document element yet, and `opts.signature_id`.
pub fn check_xades(xml: &[u8], opts: &XadesOptions) -> Result<(), XmlError> {
    xades::check(xml, opts)
}

#[cfg(test)]
mod tests;
