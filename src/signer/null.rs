//! A signer with no token behind it, for the benchmark's floor (`hsm-signer bench floor`)
//! and for handler tests through `app(state)`. **Not for production**: no configuration
//! can select it; only the hidden bench subcommand and tests construct it.
//!
//! Its keys are software keys made at construction, with self-signed certificates, so
//! its answers verify like the token's. Each key remembers the last digest it signed and
//! the signature: the benchmark sends the same input again and again, so after the first
//! request no signature is computed and what is left is the daemon's own cost (HTTP,
//! JSON, XML, hashing, the audit record), which is the point of the floor. Jobs run
//! inline on the caller's thread (there is no token call that could hang), or, with
//! [`NullSigner::handing_off`], on tokio's blocking pool as the token-backed signer runs
//! them, so that the benchmark can show what the hand-off alone costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::x509::{X509NameBuilder, X509};
use zeroize::Zeroizing;

use super::api::{Job, JobFuture, KeyInfo, KeySigner, Signed};
use super::error::SignError;
use super::status::Status;
use super::want::KeyWant;
use crate::algorithm::{Algorithm, Scheme};
use crate::cert::{Curve, KeyKind};
use crate::token::TokenError;

/// The last signature a key made: algorithm, digest, signature.
type LastSignature = Option<(Algorithm, Vec<u8>, Vec<u8>)>;

/// A key of the null signer.
struct NullKey {
    info: Arc<KeyInfo>,
    private: PKey<Private>,
    /// (algorithm, digest, signature) of the last signature made.
    last: Mutex<LastSignature>,
}

/// Signs in software with keys of its own and answers as the token-backed signer does.
/// Clones share the keys and the state.
#[derive(Clone)]
pub struct NullSigner {
    inner: Arc<Inner>,
    hand_off: bool,
}

struct Inner {
    keys: HashMap<String, NullKey>,
    status: Mutex<Status>,
    computed: std::sync::atomic::AtomicU64,
}

/// Why a null key could not be made (OpenSSL failed).
pub type NullError = openssl::error::ErrorStack;

impl NullSigner {
    /// No keys, status up.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: HashMap::new(),
                status: Mutex::new(Status::Up),
                computed: Default::default(),
            }),
            hand_off: false,
        }
    }

    /// Runs jobs on tokio's blocking pool within their deadline, as the token-backed
    /// signer does, instead of inline.
    pub fn handing_off(mut self) -> Self {
        self.hand_off = true;
        self
    }

    /// Adds an RSA-2048 key labelled `label`.
    pub fn with_rsa(self, label: &str) -> Result<Self, NullError> {
        let private = PKey::from_rsa(Rsa::generate(2048)?)?;
        self.with_key(label, private, KeyKind::Rsa { bits: 2048 }, 365)
    }

    /// Adds an EC P-256 key labelled `label`.
    pub fn with_ec(self, label: &str) -> Result<Self, NullError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let private = PKey::from_ec_key(EcKey::generate(&group)?)?;
        self.with_key(label, private, KeyKind::Ec { curve: Curve::P256 }, 365)
    }

    /// Adds an EC P-256 key whose certificate expired yesterday.
    pub fn with_expired_ec(self, label: &str) -> Result<Self, NullError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let private = PKey::from_ec_key(EcKey::generate(&group)?)?;
        self.with_key(label, private, KeyKind::Ec { curve: Curve::P256 }, -1)
    }

    fn with_key(
        mut self,
        label: &str,
        private: PKey<Private>,
        kind: KeyKind,
        days: i64,
    ) -> Result<Self, NullError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let not_after = now + days * 86_400;
        let cert = self_signed(&private, label, now - 30 * 86_400, not_after)?;
        let der = cert.to_der()?;
        let info = Arc::new(KeyInfo {
            label: label.into(),
            kind,
            chain: Vec::new(),
            cert_sha256: hex::encode(openssl::sha::sha256(&der)),
            cert,
            not_after,
        });
        Arc::get_mut(&mut self.inner)
            .expect("keys are added before the signer is shared")
            .keys
            .insert(
                label.into(),
                NullKey {
                    info,
                    private,
                    last: Mutex::new(None),
                },
            );
        Ok(self)
    }

    /// Sets the state the signer reports (a test's token outage or refused PIN).
    pub fn set_status(&self, status: Status) {
        *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Signatures computed so far (not answered from the last one).
    pub fn computed(&self) -> u64 {
        self.inner
            .computed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn up(&self) -> Result<(), SignError> {
        match &*self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) {
            Status::Up => Ok(()),
            Status::Down { reason, .. } => Err(SignError::Unavailable(reason.clone())),
            Status::PinProblem { reason } => Err(SignError::PinProblem(reason.clone())),
            Status::Stopping => Err(SignError::ShuttingDown),
        }
    }

    fn null_key(&self, label: &str) -> Result<&NullKey, SignError> {
        self.up()?;
        self.inner
            .keys
            .get(label)
            .ok_or_else(|| SignError::KeyMissing(label.to_string()))
    }
}

impl Default for NullSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl KeySigner for NullSigner {
    fn key(&self, label: &str) -> Option<Arc<KeyInfo>> {
        self.inner.keys.get(label).map(|k| k.info.clone())
    }

    fn usable_key(&self, label: &str) -> Result<Arc<KeyInfo>, SignError> {
        Ok(self.null_key(label)?.info.clone())
    }

    fn status(&self) -> Status {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn token_label(&self) -> Option<String> {
        Some("null".into())
    }

    fn reload_keys(&self, wants: Vec<KeyWant>) -> Result<(), SignError> {
        match wants
            .iter()
            .find(|w| !self.inner.keys.contains_key(&w.label))
        {
            Some(missing) => Err(SignError::KeyMissing(missing.label.clone())),
            None => Ok(()),
        }
    }

    fn sign_now(
        &self,
        label: &str,
        algorithm: Algorithm,
        digest: &[u8],
    ) -> Result<Signed, SignError> {
        let key = self.null_key(label)?;
        let mut last = key.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((alg, d, signature)) = &*last {
            if *alg == algorithm && d == digest {
                return Ok(Signed {
                    signature: signature.clone(),
                    key: key.info.clone(),
                });
            }
        }
        let signature = software_sign(&key.private, algorithm, digest).map_err(|e| {
            SignError::Failed(TokenError::BadObject {
                label: label.into(),
                token: "null".into(),
                detail: format!("software signature failed: {e}"),
            })
        })?;
        self.inner
            .computed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *last = Some((algorithm, digest.to_vec(), signature.clone()));
        Ok(Signed {
            signature,
            key: key.info.clone(),
        })
    }

    fn derive_now(
        &self,
        label: &str,
        point: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Arc<KeyInfo>), SignError> {
        let key = self.null_key(label)?;
        let derive = || -> Result<Vec<u8>, NullError> {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            let mut ctx = openssl::bn::BigNumContext::new()?;
            let point = openssl::ec::EcPoint::from_bytes(&group, point, &mut ctx)?;
            let peer = PKey::from_ec_key(EcKey::from_public_key(&group, &point)?)?;
            let mut deriver = openssl::derive::Deriver::new(&key.private)?;
            deriver.set_peer(&peer)?;
            deriver.derive_to_vec()
        };
        let z = derive().map_err(|e| {
            SignError::Failed(TokenError::BadObject {
                label: label.into(),
                token: "null".into(),
                detail: format!("software ECDH failed: {e}"),
            })
        })?;
        Ok((Zeroizing::new(z), key.info.clone()))
    }

    /// Inline, on the caller's thread (nothing here can hang), unless handing off.
    fn run_job(&self, timeout: Duration, job: Job) -> JobFuture<'_> {
        Box::pin(async move {
            self.up()?;
            if !self.hand_off {
                job(self);
                return Ok(());
            }
            let me = self.clone();
            let call = tokio::task::spawn_blocking(move || job(&me));
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(panicked)) => Err(SignError::Unavailable(format!(
                    "the signing call failed: {panicked}"
                ))),
                Err(_) => Err(SignError::Timeout(timeout)),
            }
        })
    }
}

/// A signature over `digest` as the token makes it (RSA PKCS#1 v1.5 or PSS over the
/// digest, ECDSA as raw r || s).
fn software_sign(
    key: &PKey<Private>,
    algorithm: Algorithm,
    digest: &[u8],
) -> Result<Vec<u8>, NullError> {
    match algorithm.scheme() {
        Scheme::Ecdsa => {
            let sig = EcdsaSig::sign(digest, &*key.ec_key()?)?;
            let width = (key.bits() as usize).div_ceil(8);
            let mut raw = sig.r().to_vec_padded(width as i32)?;
            raw.extend(sig.s().to_vec_padded(width as i32)?);
            Ok(raw)
        }
        scheme => {
            let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key)?;
            ctx.sign_init()?;
            ctx.set_signature_md(algorithm.hash().md_ref())?;
            if scheme == Scheme::RsaPss {
                ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
                ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::custom(
                    algorithm.hash().output_len() as i32,
                ))?;
                ctx.set_rsa_mgf1_md(algorithm.hash().md_ref())?;
            } else {
                ctx.set_rsa_padding(Padding::PKCS1)?;
            }
            let mut out = Vec::new();
            ctx.sign_to_vec(digest, &mut out)?;
            Ok(out)
        }
    }
}

fn self_signed(
    key: &PKey<Private>,
    label: &str,
    not_before: i64,
    not_after: i64,
) -> Result<X509, NullError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", &format!("null signer {label}"))?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = openssl::bn::BigNum::from_u32(1)?.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    let not_before = openssl::asn1::Asn1Time::from_unix(not_before)?;
    let not_after = openssl::asn1::Asn1Time::from_unix(not_after)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build())
}
