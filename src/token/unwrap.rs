//! Wrapped import: the private key enters the token only encrypted, for tokens that refuse
//! C_CreateObject of a plaintext private key (FIPS-mode network HSMs, many smart-card
//! HSMs, cloud HSMs).
//!
//! The path the key takes:
//! 1. the token generates a session RSA transport key pair (CKA_TOKEN=false), the private
//!    half allowed to unwrap and nothing else;
//! 2. hsm-signer reads the transport public key (modulus and exponent) and, in software,
//!    wraps the PKCS#8 DER of the key with a fresh random AES-256 key (AES key wrap with
//!    padding, RFC 5649) and encrypts that AES key with RSA-OAEP to the transport key;
//! 3. C_UnwrapKey(CKM_RSA_PKCS_OAEP) turns the encrypted AES key into a session AES key on
//!    the token, and C_UnwrapKey with RFC 5649 turns the wrapped PKCS#8 into the final
//!    private key, with the template the caller gives. RFC 5649 has two mechanism codes:
//!    CKM_AES_KEY_WRAP_PAD (0x210A, PKCS#11 2.40, SoftHSM) and CKM_AES_KEY_WRAP_KWP
//!    (0x210B, PKCS#11 3.0, kryoptic); the first is used when offered, else the second,
//!    through [`super::raw`] since cryptoki does not know it.
//!
//! The transport key pair and the AES key are session objects, destroyed when this module
//! is done with them, whether the unwrap worked or not. The PKCS#8 bytes, the AES key and
//! both wrapped blobs live in `Zeroizing` buffers.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use openssl::bn::BigNum;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::{CipherCtx, CipherCtxFlags};
use openssl::error::ErrorStack;
use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use zeroize::Zeroizing;

use super::error::TokenError;
use super::module::Module;
use super::raw::{self, RawModule};
use crate::cert::{CertDer, KeyKind};

/// Bits of the session transport key. It carries a 256-bit AES key that protects keys of
/// up to RSA-4096 and P-521, so it should not be the weakest link: RSA-3072 is rated at
/// 128-bit strength (NIST SP 800-57 part 1, table 2), RSA-2048 at 112.
const TRANSPORT_BITS: u64 = 3072;

/// The mechanisms a wrapped import needs besides RFC 5649 key wrap, and what each is for.
const NEEDED: [(MechanismType, &str); 2] = [
    (
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        "generating the session transport key pair",
    ),
    (
        MechanismType::RSA_PKCS_OAEP,
        "unwrapping the AES transport key (C_UnwrapKey)",
    ),
];

/// Which code the token offers RFC 5649 (AES key wrap with padding) under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrap {
    /// CKM_AES_KEY_WRAP_PAD, 0x210A (PKCS#11 2.40; SoftHSM 2.6.1), through cryptoki.
    Pad,
    /// CKM_AES_KEY_WRAP_KWP, 0x210B (PKCS#11 3.0; kryoptic), through [`super::raw`].
    Kwp,
}

impl KeyWrap {
    /// The mechanism code.
    pub fn code(self) -> u64 {
        match self {
            KeyWrap::Pad => raw::CKM_AES_KEY_WRAP_PAD,
            KeyWrap::Kwp => raw::CKM_AES_KEY_WRAP_KWP,
        }
    }

    /// The mechanism's name, as PKCS#11 spells it.
    pub fn name(self) -> &'static str {
        match self {
            KeyWrap::Pad => "CKM_AES_KEY_WRAP_PAD",
            KeyWrap::Kwp => "CKM_AES_KEY_WRAP_KWP",
        }
    }

    /// The preferred of the RFC 5649 codes in `offered`: 0x210A, else 0x210B.
    pub fn choose(offered: &[u64]) -> Option<KeyWrap> {
        [KeyWrap::Pad, KeyWrap::Kwp]
            .into_iter()
            .find(|w| offered.contains(&w.code()))
    }
}

impl std::fmt::Display for KeyWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.code())
    }
}

/// Why a wrapped import failed.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// The token refused or failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token takes CKM_RSA_PKCS_OAEP but with none of the parameters tried.
    #[error("the token refused CKM_RSA_PKCS_OAEP with SHA-256 and with SHA-1 parameters (CKR_ARGUMENTS_BAD or CKR_MECHANISM_PARAM_INVALID), so the AES transport key cannot reach it: ask the vendor which OAEP parameters C_UnwrapKey accepts")]
    OaepRefused,
    /// The software half (OpenSSL) failed.
    #[error("{doing} in software (OpenSSL) failed: {source}")]
    Software {
        /// What was being done.
        doing: &'static str,
        /// OpenSSL's errors.
        source: ErrorStack,
    },
}

fn software(doing: &'static str) -> impl FnOnce(ErrorStack) -> UnwrapError {
    move |source| UnwrapError::Software { doing, source }
}

/// Checks, from C_GetMechanismList and C_GetMechanismInfo, that the token offers every
/// mechanism a wrapped import needs, naming the first one missing, and returns the RFC
/// 5649 code to unwrap with. The list is read raw ([`super::raw`]) because cryptoki
/// drops the codes it does not know, 0x210B among them.
pub fn check_unwrap_mechanisms(
    module: &Module,
    slot: Slot,
    token: &str,
) -> Result<KeyWrap, TokenError> {
    let doing_list = || format!("reading the mechanism list of token \"{token}\"");
    let raw = RawModule::of(module).map_err(TokenError::pkcs11(doing_list()))?;
    let offered = raw
        .mechanism_list(slot)
        .map_err(TokenError::pkcs11(doing_list()))?;
    let missing = |mechanism: String, purpose: &str| TokenError::MechanismMissing {
        token: token.into(),
        mechanism,
        purpose: format!("wrapped import ({purpose})"),
    };
    let can_unwrap = |code: u64, name: &str| -> Result<bool, TokenError> {
        let flags = raw
            .mechanism_flags(slot, code)
            .map_err(TokenError::pkcs11(format!("reading what {name} can do")))?;
        Ok(flags & raw::CKF_UNWRAP != 0)
    };
    for (mechanism, purpose) in NEEDED {
        if !offered.contains(&mechanism) {
            return Err(missing(mechanism.to_string(), purpose));
        }
        if mechanism != MechanismType::RSA_PKCS_KEY_PAIR_GEN
            && !can_unwrap(*mechanism, &mechanism.to_string())?
        {
            return Err(missing(format!("{mechanism} with CKF_UNWRAP"), purpose));
        }
    }
    let purpose = "unwrapping the private key (C_UnwrapKey, RFC 5649)";
    let wrap = KeyWrap::choose(&offered).ok_or_else(|| {
        missing(
            "CKM_AES_KEY_WRAP_PAD (0x210A) or CKM_AES_KEY_WRAP_KWP (0x210B)".into(),
            purpose,
        )
    })?;
    if !can_unwrap(wrap.code(), wrap.name())? {
        return Err(missing(format!("{wrap} with CKF_UNWRAP"), purpose));
    }
    tracing::debug!(mechanism = %wrap, "wrapped import: RFC 5649 key wrap");
    Ok(wrap)
}

/// Session objects that are destroyed when this goes out of scope.
struct Temporary<'a> {
    session: &'a Session,
    handles: Vec<ObjectHandle>,
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        for handle in self.handles.drain(..).rev() {
            if let Err(e) = self.session.destroy_object(handle) {
                // Session objects vanish with the session anyway; say so rather than fail.
                tracing::warn!(error = %e, "a temporary session object of the wrapped import could not be destroyed; it goes when the session closes");
            }
        }
    }
}

/// The template for a private key that arrives by C_UnwrapKey: the same protection as
/// [`super::private_key_template`] gives a created key, but no key material and, for EC,
/// no CKA_EC_PARAMS: the token takes both from the PKCS#8, and SoftHSM 2.6.1 refuses
/// CKA_EC_PARAMS in an unwrap template.
pub fn unwrapped_key_template(
    kind: KeyKind,
    cert: &CertDer,
    label: &str,
    id: &[u8],
    allow_derive: bool,
) -> Vec<Attribute> {
    let key_type = match kind {
        KeyKind::Rsa { .. } => KeyType::RSA,
        KeyKind::Ec { .. } => KeyType::EC,
    };
    let mut attrs = super::objects::private_key_protection(cert, label, id);
    attrs.extend([
        Attribute::KeyType(key_type),
        Attribute::Derive(allow_derive && matches!(kind, KeyKind::Ec { .. })),
    ]);
    attrs
}

/// Puts `key` on the token through C_UnwrapKey, with `template` (see
/// [`unwrapped_key_template`]) and `wrap`, the RFC 5649 code that
/// [`check_unwrap_mechanisms`] chose for `module`. Returns the new key's handle.
pub fn unwrap_private_key(
    module: &Module,
    session: &Session,
    wrap: KeyWrap,
    key: &PKeyRef<Private>,
    template: &[Attribute],
) -> Result<ObjectHandle, UnwrapError> {
    let pkcs8 = Zeroizing::new(
        key.private_key_to_pkcs8()
            .map_err(software("encoding the private key as PKCS#8"))?,
    );
    let mut temporary = Temporary {
        session,
        handles: Vec::new(),
    };
    let (public, private) = generate_transport_pair(session)?;
    temporary.handles.extend([public, private]);
    let transport = read_rsa_public(session, public)?;

    let mut aes_key = Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(aes_key.as_mut()).map_err(software("making the AES key"))?;
    let wrapped_key = aes_wrap_pad(aes_key.as_ref(), &pkcs8)?;
    drop(pkcs8);
    let kek = unwrap_aes_key(session, private, &transport, aes_key.as_ref())?;
    drop(aes_key);
    temporary.handles.push(kek);

    let doing = format!(
        "unwrapping the private key into the token ({})",
        wrap.name()
    );
    let key = match wrap {
        KeyWrap::Pad => session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, &wrapped_key, template),
        KeyWrap::Kwp => RawModule::of(module)
            .and_then(|raw| raw.unwrap_key(session, wrap.code(), kek, &wrapped_key, template)),
    }
    .map_err(TokenError::pkcs11(doing))?;
    Ok(key)
}

fn generate_transport_pair(session: &Session) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
    let label = b"hsm-signer transport (temporary)".to_vec();
    let public = [
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::ModulusBits(TRANSPORT_BITS.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Verify(false),
        Attribute::Label(label.clone()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Label(label),
    ];
    session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(TokenError::pkcs11(format!(
            "generating the session RSA-{TRANSPORT_BITS} transport key pair"
        )))
}

fn read_rsa_public(session: &Session, public: ObjectHandle) -> Result<PKey<Public>, UnwrapError> {
    let attrs = session
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(TokenError::pkcs11("reading the transport public key"))?;
    let (mut n, mut e) = (None, None);
    for attr in attrs {
        match attr {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let (Some(n), Some(e)) = (n, e) else {
        return Err(UnwrapError::Software {
            doing: "reading the transport public key (the token gave no modulus or exponent)",
            source: ErrorStack::get(),
        });
    };
    let build = || -> Result<PKey<Public>, ErrorStack> {
        let rsa = Rsa::from_public_components(BigNum::from_slice(&n)?, BigNum::from_slice(&e)?)?;
        PKey::from_rsa(rsa)
    };
    build().map_err(software("loading the transport public key"))
}

/// RFC 5649 AES key wrap with padding, default IV, as CKM_AES_KEY_WRAP_PAD with a NULL
/// parameter expects. (`openssl::aes::wrap_key` is RFC 3394, without padding.)
fn aes_wrap_pad(key: &[u8], plain: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let wrap = || -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
        let mut ctx = CipherCtx::new()?;
        // EVP refuses wrap ciphers unless the caller says it knows what they are.
        ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
        ctx.encrypt_init(Some(Cipher::aes_256_wrap_pad()), Some(key), None)?;
        let mut out = Zeroizing::new(Vec::with_capacity(plain.len() + 16));
        ctx.cipher_update_vec(plain, &mut out)?;
        ctx.cipher_final_vec(&mut out)?;
        Ok(out)
    };
    wrap().map_err(software(
        "wrapping the private key with AES key wrap (RFC 5649)",
    ))
}

/// The OAEP variants tried, best first. SoftHSM 2.6.1 accepts only SHA-1 with MGF1-SHA1
/// (its MechParamCheckRSAPKCSOAEP answers CKR_ARGUMENTS_BAD to anything else); OAEP's
/// security does not rest on the hash's collision resistance, so SHA-1 is sound here.
#[allow(clippy::type_complexity)]
const OAEP: [(MechanismType, PkcsMgfType, fn() -> &'static MdRef, &str); 2] = [
    (
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        Md::sha256,
        "SHA-256",
    ),
    (
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        Md::sha1,
        "SHA-1",
    ),
];

/// Encrypts `aes_key` with RSA-OAEP to `transport` and unwraps it on the token with the
/// private half, as a session AES key that can only unwrap.
fn unwrap_aes_key(
    session: &Session,
    private: ObjectHandle,
    transport: &PKey<Public>,
    aes_key: &[u8],
) -> Result<ObjectHandle, UnwrapError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ];
    for (hash, mgf, md, name) in OAEP {
        let encrypted = oaep_encrypt(transport, md(), aes_key)?;
        let mechanism =
            Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
        match session.unwrap_key(&mechanism, private, &encrypted, &template) {
            Ok(handle) => {
                tracing::debug!(oaep = name, "AES transport key unwrapped");
                return Ok(handle);
            }
            Err(cryptoki::error::Error::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismParamInvalid,
                _,
            )) => {
                tracing::debug!(oaep = name, "token refuses these OAEP parameters");
            }
            Err(e) => {
                return Err(TokenError::pkcs11(format!(
                    "unwrapping the AES transport key (CKM_RSA_PKCS_OAEP with {name})"
                ))(e)
                .into())
            }
        }
    }
    Err(UnwrapError::OaepRefused)
}

fn oaep_encrypt(
    transport: &PKey<Public>,
    md: &MdRef,
    plain: &[u8],
) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let encrypt = || -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
        let mut ctx = PkeyCtx::new(transport)?;
        ctx.encrypt_init()?;
        ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
        ctx.set_rsa_oaep_md(md)?;
        ctx.set_rsa_mgf1_md(md)?;
        let mut out = Zeroizing::new(Vec::new());
        ctx.encrypt_to_vec(plain, &mut out)?;
        Ok(out)
    };
    encrypt().map_err(software("encrypting the AES key with RSA-OAEP"))
}

/// True when a failed C_CreateObject of a private key means "this token does not take
/// plaintext private keys", so that a wrapped import is worth trying. What tokens answer
/// varies: the spec's CKR_TEMPLATE_INCONSISTENT / CKR_ATTRIBUTE_VALUE_INVALID, or
/// CKR_FUNCTION_NOT_SUPPORTED, CKR_ACTION_PROHIBITED, CKR_ATTRIBUTE_READ_ONLY, and on
/// some vendors' FIPS modes a bare CKR_GENERAL_ERROR or CKR_FUNCTION_FAILED.
pub fn refuses_plaintext_keys(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::TemplateInconsistent
            | RvError::AttributeValueInvalid
            | RvError::AttributeReadOnly
            | RvError::FunctionNotSupported
            | RvError::ActionProhibited
            | RvError::GeneralError
            | RvError::FunctionFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_wrap_pad_matches_rfc_5649_test_vector() {
        // RFC 5649 section 6, second example: 7 octets of key data, 192-bit KEK. The
        // 256-bit path is the same code with a longer key; this pins padding and IV.
        let kek = hex::decode("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8").unwrap();
        let plain = hex::decode("466f7250617369").unwrap();
        let mut ctx = CipherCtx::new().unwrap();
        ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
        ctx.encrypt_init(Some(Cipher::aes_192_wrap_pad()), Some(&kek), None)
            .unwrap();
        let mut out = Vec::new();
        ctx.cipher_update_vec(&plain, &mut out).unwrap();
        ctx.cipher_final_vec(&mut out).unwrap();
        assert_eq!(hex::encode(out), "afbeb0f07dfbf5419200f2ccb50bb24f");
    }

    #[test]
    fn aes_wrap_pad_round_trips_and_pads() {
        let key = [7u8; 32];
        let plain = b"a PKCS#8 of an odd length".to_vec();
        let wrapped = aes_wrap_pad(&key, &plain).unwrap();
        assert_eq!(wrapped.len(), plain.len().div_ceil(8) * 8 + 8);
        let mut ctx = CipherCtx::new().unwrap();
        ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
        ctx.decrypt_init(Some(Cipher::aes_256_wrap_pad()), Some(&key), None)
            .unwrap();
        let mut out = Vec::new();
        ctx.cipher_update_vec(&wrapped, &mut out).unwrap();
        ctx.cipher_final_vec(&mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn key_wrap_prefers_the_2_40_code_and_falls_back_to_kwp() {
        assert_eq!(KeyWrap::choose(&[0x210B, 0x210A]), Some(KeyWrap::Pad));
        assert_eq!(KeyWrap::choose(&[0x1, 0x210B]), Some(KeyWrap::Kwp));
        assert_eq!(KeyWrap::choose(&[0x1, 0x2109]), None);
        assert_eq!(KeyWrap::Kwp.to_string(), "CKM_AES_KEY_WRAP_KWP (0x210B)");
    }

    #[test]
    fn refusals_that_lead_to_unwrap() {
        assert!(refuses_plaintext_keys(RvError::TemplateInconsistent));
        assert!(refuses_plaintext_keys(RvError::AttributeValueInvalid));
        assert!(refuses_plaintext_keys(RvError::ActionProhibited));
        assert!(refuses_plaintext_keys(RvError::FunctionNotSupported));
        // A wrong PIN state or a lost token is not a reason to try another method.
        assert!(!refuses_plaintext_keys(RvError::UserNotLoggedIn));
        assert!(!refuses_plaintext_keys(RvError::DeviceError));
        assert!(!refuses_plaintext_keys(RvError::SessionReadOnly));
    }
}
