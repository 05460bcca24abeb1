//! Token objects: the templates an import creates, and finding and reading keys back.
//!
//! A key, its public key and its certificate share one CKA_ID and one CKA_LABEL; that
//! pair is how every tool (pkcs11-tool, p11tool, OpenSSL's pkcs11 provider) ties them
//! together.

use std::os::raw::c_ulong;

use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use openssl::x509::X509;
use serde::Serialize;
use zeroize::Zeroize;

use super::error::TokenError;
use crate::cert::{key_kind, CertDer, KeyKind};
use crate::p12::KeyMaterial;

/// CKA_CERTIFICATE_CATEGORY (PKCS#11 2.40 §4.6.2); cryptoki has no named variant for it.
const CKA_CERTIFICATE_CATEGORY: c_ulong = 0x87;

/// What a certificate object is to the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertCategory {
    /// The key owner's own certificate (CK_CERTIFICATE_CATEGORY_TOKEN_USER).
    TokenUser,
    /// A CA certificate (CK_CERTIFICATE_CATEGORY_AUTHORITY).
    Authority,
}

/// An attribute template holding private key material, wiped when dropped.
pub struct SensitiveTemplate(pub Vec<Attribute>);

impl Drop for SensitiveTemplate {
    fn drop(&mut self) {
        for attr in &mut self.0 {
            match attr {
                Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v)
                | Attribute::Value(v) => v.zeroize(),
                _ => {}
            }
        }
    }
}

/// The attributes every stored private key gets, whether it is created or unwrapped: on
/// the token, private, sensitive and not extractable, set explicitly because SoftHSM
/// defaults CKA_SENSITIVE to false; for signing only.
pub fn private_key_protection(cert: &CertDer, label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(true),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(cert.subject.clone()),
    ]
}

/// The template for creating the private key: [`private_key_protection`] plus the key's
/// own values.
pub fn private_key_template(
    material: &KeyMaterial,
    cert: &CertDer,
    label: &str,
    id: &[u8],
    allow_derive: bool,
) -> Result<SensitiveTemplate, openssl::error::ErrorStack> {
    let mut attrs = private_key_protection(cert, label, id);
    let mut template = SensitiveTemplate(Vec::new());
    match material.kind {
        KeyKind::Rsa { .. } => {
            let rsa = material.key.rsa()?;
            let part =
                |b: Option<&openssl::bn::BigNumRef>| b.map(|b| b.to_vec()).unwrap_or_default();
            attrs.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::Derive(false),
                Attribute::Modulus(rsa.n().to_vec()),
                Attribute::PublicExponent(rsa.e().to_vec()),
            ]);
            template.0 = attrs;
            template.0.extend([
                Attribute::PrivateExponent(rsa.d().to_vec()),
                Attribute::Prime1(part(rsa.p())),
                Attribute::Prime2(part(rsa.q())),
                Attribute::Exponent1(part(rsa.dmp1())),
                Attribute::Exponent2(part(rsa.dmq1())),
                Attribute::Coefficient(part(rsa.iqmp())),
            ]);
        }
        KeyKind::Ec { curve } => {
            let ec = material.key.ec_key()?;
            attrs.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::Derive(allow_derive),
                Attribute::EcParams(cert.key_params.clone().unwrap_or_default()),
            ]);
            template.0 = attrs;
            template.0.push(Attribute::Value(
                ec.private_key().to_vec_padded(curve.field_bytes() as i32)?,
            ));
        }
    }
    Ok(template)
}

/// The template for the public key beside it.
pub fn public_key_template(
    kind: KeyKind,
    cert: &CertDer,
    label: &str,
    id: &[u8],
) -> Vec<Attribute> {
    let mut attrs = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(cert.subject.clone()),
    ];
    match kind {
        KeyKind::Rsa { .. } => {
            // The subjectPublicKey of an RSA certificate is the DER RSAPublicKey; read n and
            // e through OpenSSL rather than parsing it here.
            if let Ok(rsa) = openssl::rsa::Rsa::public_key_from_der_pkcs1(&cert.public_key_bits) {
                attrs.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Modulus(rsa.n().to_vec()),
                    Attribute::PublicExponent(rsa.e().to_vec()),
                ]);
            }
        }
        KeyKind::Ec { .. } => {
            // CKA_EC_POINT is the DER OCTET STRING around the uncompressed point.
            let point = der::asn1::OctetString::new(cert.public_key_bits.clone())
                .and_then(|o| der::Encode::to_der(&o))
                .unwrap_or_default();
            attrs.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(cert.key_params.clone().unwrap_or_default()),
                Attribute::EcPoint(point),
            ]);
        }
    }
    attrs
}

/// The template for a certificate object.
pub fn cert_template(
    cert: &CertDer,
    label: &str,
    id: &[u8],
    category: CertCategory,
) -> Vec<Attribute> {
    let category = match category {
        CertCategory::TokenUser => 1 as c_ulong,
        CertCategory::Authority => 2 as c_ulong,
    };
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(cert.subject.clone()),
        Attribute::Issuer(cert.issuer.clone()),
        Attribute::SerialNumber(cert.serial.clone()),
        Attribute::Value(cert.value.clone()),
        Attribute::VendorDefined((
            AttributeType::VendorDefined(CKA_CERTIFICATE_CATEGORY),
            category.to_ne_bytes().to_vec(),
        )),
    ]
}

/// Finds objects of `class` (any, if `None`) with this label and/or ID.
pub fn find_objects(
    session: &Session,
    class: Option<ObjectClass>,
    label: Option<&str>,
    id: Option<&[u8]>,
) -> Result<Vec<ObjectHandle>, TokenError> {
    let mut template = Vec::new();
    if let Some(class) = class {
        template.push(Attribute::Class(class));
    }
    if let Some(label) = label {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    session
        .find_objects(&template)
        .map_err(TokenError::pkcs11("searching the token's objects"))
}

/// Sets a new CKA_LABEL on `objects`.
pub fn relabel(session: &Session, objects: &[ObjectHandle], label: &str) -> Result<(), TokenError> {
    for &object in objects {
        session
            .update_attributes(object, &[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(TokenError::pkcs11(format!("setting the label \"{label}\"")))?;
    }
    Ok(())
}

/// The protection attributes of a private key, read back from the token.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KeyAttrs {
    /// CKA_TOKEN.
    pub token: bool,
    /// CKA_PRIVATE.
    pub private: bool,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_ALWAYS_SENSITIVE (false for imported keys: they existed outside before).
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE (false for imported keys).
    pub never_extractable: bool,
    /// CKA_LOCAL (false for imported keys: not generated on the token).
    pub local: bool,
    /// CKA_SIGN.
    pub sign: bool,
    /// CKA_DERIVE.
    pub derive: bool,
    /// Whether asking for the private value (CKA_PRIVATE_EXPONENT / CKA_VALUE) returned
    /// anything. Must be false.
    pub private_value_readable: bool,
}

/// Reads `key`'s protection attributes, and checks the private value cannot be read.
pub fn read_key_attrs(
    session: &Session,
    key: ObjectHandle,
    kind: KeyKind,
) -> Result<KeyAttrs, TokenError> {
    use AttributeType as T;
    let wanted = [
        T::Token,
        T::Private,
        T::Sensitive,
        T::Extractable,
        T::AlwaysSensitive,
        T::NeverExtractable,
        T::Local,
        T::Sign,
        T::Derive,
    ];
    let attrs = session
        .get_attributes(key, &wanted)
        .map_err(TokenError::pkcs11("reading the key's attributes"))?;
    let mut out = KeyAttrs::default();
    for attr in attrs {
        match attr {
            Attribute::Token(b) => out.token = b,
            Attribute::Private(b) => out.private = b,
            Attribute::Sensitive(b) => out.sensitive = b,
            Attribute::Extractable(b) => out.extractable = b,
            Attribute::AlwaysSensitive(b) => out.always_sensitive = b,
            Attribute::NeverExtractable(b) => out.never_extractable = b,
            Attribute::Local(b) => out.local = b,
            Attribute::Sign(b) => out.sign = b,
            Attribute::Derive(b) => out.derive = b,
            _ => {}
        }
    }
    let secret = match kind {
        KeyKind::Rsa { .. } => T::PrivateExponent,
        KeyKind::Ec { .. } => T::Value,
    };
    // cryptoki leaves out attributes the token refuses (CKR_ATTRIBUTE_SENSITIVE), so an
    // empty answer is the good one.
    let mut leaked = session.get_attributes(key, &[secret]).unwrap_or_default();
    out.private_value_readable = !leaked.is_empty();
    drop(SensitiveTemplate(std::mem::take(&mut leaked)));
    Ok(out)
}

/// A private key found on the token, with its certificate.
pub struct StoredKey {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID.
    pub id: Vec<u8>,
    /// The private key object.
    pub handle: ObjectHandle,
    /// The certificate with the same CKA_ID.
    pub cert: X509,
    /// The kind and size of the key.
    pub kind: KeyKind,
}

impl StoredKey {
    /// Finds the private key labelled `label` and its certificate (same CKA_ID).
    pub fn find(session: &Session, token: &str, label: &str) -> Result<Self, TokenError> {
        let keys = find_objects(session, Some(ObjectClass::PRIVATE_KEY), Some(label), None)?;
        let handle = match keys.as_slice() {
            [one] => *one,
            [] => {
                return Err(TokenError::KeyNotFound {
                    label: label.into(),
                    token: token.into(),
                })
            }
            many => {
                return Err(TokenError::BadObject {
                    label: label.into(),
                    token: token.into(),
                    detail: format!(
                        "{} private keys carry this label; remove the extra ones",
                        many.len()
                    ),
                })
            }
        };
        let id = read_bytes(session, handle, AttributeType::Id)?.unwrap_or_default();
        Self::with_cert(session, token, label, id, handle)
    }

    /// Every private key on the token, each with its certificate where one exists.
    pub fn all(
        session: &Session,
        token: &str,
    ) -> Result<Vec<Result<Self, TokenError>>, TokenError> {
        let keys = find_objects(session, Some(ObjectClass::PRIVATE_KEY), None, None)?;
        let mut out = Vec::new();
        for handle in keys {
            let label = read_bytes(session, handle, AttributeType::Label)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let id = read_bytes(session, handle, AttributeType::Id)?.unwrap_or_default();
            out.push(Self::with_cert(session, token, &label, id, handle));
        }
        Ok(out)
    }

    fn with_cert(
        session: &Session,
        token: &str,
        label: &str,
        id: Vec<u8>,
        handle: ObjectHandle,
    ) -> Result<Self, TokenError> {
        let bad = |detail: String| TokenError::BadObject {
            label: label.into(),
            token: token.into(),
            detail,
        };
        // Prefer the certificate with the key's label as well as its ID: during a replace
        // the old certificate can share the ID for a moment.
        let mut certs = find_objects(
            session,
            Some(ObjectClass::CERTIFICATE),
            Some(label),
            Some(&id),
        )?;
        if certs.is_empty() {
            certs = find_objects(session, Some(ObjectClass::CERTIFICATE), None, Some(&id))?;
        }
        let der = match certs.first() {
            Some(&c) => read_bytes(session, c, AttributeType::Value)?,
            None => None,
        }
        .ok_or_else(|| TokenError::CertificateMissing {
            label: label.into(),
            token: token.into(),
        })?;
        let cert =
            X509::from_der(&der).map_err(|e| bad(format!("certificate does not parse: {e}")))?;
        let kind = key_kind(cert.public_key().map_err(|e| bad(e.to_string()))?.as_ref())
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            label: label.into(),
            id,
            handle,
            cert,
            kind,
        })
    }
}

fn read_bytes(
    session: &Session,
    object: ObjectHandle,
    what: AttributeType,
) -> Result<Option<Vec<u8>>, TokenError> {
    let attrs = session
        .get_attributes(object, &[what])
        .map_err(TokenError::pkcs11(format!("reading {what:?} of an object")))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Id(v) | Attribute::Label(v) | Attribute::Value(v) => Some(v),
        _ => None,
    }))
}
