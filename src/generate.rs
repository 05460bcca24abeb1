//! The generate flow: a key pair born on the token → its CSR and/or self-signed
//! certificate, signed by the token → proof → final label.
//!
//! All or nothing, like import. The objects are created under a temporary label; any
//! failure after C_GenerateKeyPair (the CSR, the certificate, clearing CKA_SIGN on a
//! decryption key, the proof, writing the CSR file) destroys every object created, so
//! the token is never left half-changed. Only a proven key takes the real label.
//!
//! CKA_ID follows the import rule ([`crate::cert::CertDer::default_id`]): SHA-1 of the
//! subjectPublicKey bits, set on the private key, the public key and the certificate.

mod error;
pub mod ksef;
mod proof;
pub mod rule;
pub mod subject;
pub mod x509;

use std::path::{Path, PathBuf};

use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use der::Encode;
use serde::Serialize;
use x509_cert::name::Name;

use crate::algorithm::Algorithm;
use crate::cert::{CertDer, CertInfo, Curve, KeyKind};
use crate::import::random_suffix;
use crate::outfile::Existing;
use crate::token::{
    cert_template, check_mechanisms, clear_decrypt, disable_signing, find_objects,
    generate_key_pair, identify, pair_gen_mechanism, read_key_attrs, read_public_key, relabel,
    CertCategory, KeyAttrs, KeyUse, ModuleFamily, OpenToken, TokenError,
};
pub use error::GenerateError;
pub use proof::GenProof;
use proof::{attribute_problems, prove_ecdh, prove_signature};
pub use x509::CsrFormat;
use x509::{csr_text, self_signed, TokenSigner, X509Error};

use crate::config::Operation;
/// What the key is for: the same [`Purpose`] as a `[[keys]]` rule's, so that a key
/// generated for a purpose is the key a rule of that purpose takes.
pub use crate::config::Purpose;

/// The PKCS#11 attributes a key of `purpose` gets: CKA_SIGN, or CKA_DERIVE for ECDH.
fn key_use(purpose: Purpose) -> KeyUse {
    match purpose {
        Purpose::Sign => KeyUse::Sign,
        Purpose::Decrypt => KeyUse::Agree,
    }
}

/// What the officer asked to generate, resolved from the command line.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// CKA_LABEL of the key, public key and certificate.
    pub label: String,
    /// Kind and size.
    pub kind: KeyKind,
    /// Signing or decryption.
    pub purpose: Purpose,
    /// The subject, parsed ([`subject::parse_subject`]).
    pub subject: Name,
    /// Where to write the PKCS#10 request: a new file, never through a symlink.
    pub csr: Option<PathBuf>,
    /// How the request is written there.
    pub csr_format: CsrFormat,
    /// Replace a regular file already at `csr` (by rename).
    pub replace_csr: bool,
    /// Store a self-signed certificate valid this many days.
    pub self_signed_days: Option<u32>,
    /// Keep a decryption key that the token will not stop from signing.
    pub allow_dual_use: bool,
    /// The endpoints the key is for, printed in its `[[keys]]` table
    /// ([`rule::key_rule`]); `None` lets the purpose (and a KSeF subject) choose.
    pub operations: Option<Vec<Operation>>,
    /// The subject came from KSeF's enrollment data (`--subject-json`).
    pub ksef: bool,
}

/// What `generate` stored and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// The token's label.
    pub token: String,
    /// The token's serial.
    pub token_serial: String,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID, hex.
    pub id: String,
    /// Kind and size.
    pub key: KeyKind,
    /// Signing or decryption.
    pub purpose: Purpose,
    /// The subject, one line.
    pub subject: String,
    /// The CSR file written.
    pub csr: Option<PathBuf>,
    /// How it was written.
    pub csr_format: CsrFormat,
    /// The self-signed certificate stored on the token.
    pub certificate: Option<CertInfo>,
    /// The private key's attributes, read back.
    pub attributes: KeyAttrs,
    /// A decryption key that can still sign, because the token refused to clear CKA_SIGN
    /// and `--allow-dual-use` accepted that.
    pub dual_use: bool,
    /// The key can decrypt as well (CKA_DECRYPT true): tpm2-pkcs11 makes every TPM key
    /// so and refuses to clear it. hsm-signer never asks the key to decrypt.
    pub can_decrypt: bool,
    /// The proof.
    pub proof: GenProof,
    /// The `[[keys]]` table to paste into the daemon's configuration.
    pub config: String,
}

impl GenerateRequest {
    /// Checks everything that needs neither the token nor the PIN: the key type for the
    /// purpose, that something will be registered, and that the CSR can be written.
    pub fn check(&self) -> Result<(), GenerateError> {
        if self.purpose == Purpose::Decrypt && self.kind != (KeyKind::Ec { curve: Curve::P256 }) {
            return Err(GenerateError::DecryptNeedsP256 { kind: self.kind });
        }
        if self.allow_dual_use && self.purpose == Purpose::Sign {
            return Err(GenerateError::DualUseForSign);
        }
        if self.csr.is_none() && self.self_signed_days.is_none() {
            return Err(GenerateError::NothingToRegister);
        }
        if self.self_signed_days == Some(0) {
            return Err(GenerateError::NoDays);
        }
        if let Some(list) = &self.operations {
            if let Some(bad) = list.iter().find(|o| !rule::fits(self.purpose, **o)) {
                return Err(GenerateError::OperationForPurpose {
                    operation: bad.name(),
                    purpose: self.purpose,
                });
            }
        }
        if let Some(path) = &self.csr {
            let csr_path = |why: String| GenerateError::CsrPath {
                path: path.clone(),
                why,
            };
            crate::outfile::check(path, self.csr_existing())
                .map_err(|e| csr_path(e.to_string()))?;
            check_directory(path).map_err(csr_path)?;
        }
        Ok(())
    }

    fn csr_existing(&self) -> Existing {
        if self.replace_csr {
            Existing::Replace
        } else {
            Existing::Refuse
        }
    }
}

/// The CSR's directory exists and can be written. Nothing is created here, so a later
/// refusal leaves no empty file behind.
fn check_directory(path: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("the directory {} does not exist", dir.display()));
    }
    access(dir, AccessFlags::W_OK)
        .map_err(|e| format!("the directory {} is not writable ({e})", dir.display()))
}

/// The algorithm the key signs its own CSR / certificate with.
fn self_signature_algorithm(kind: KeyKind) -> Algorithm {
    match kind {
        KeyKind::Rsa { .. } => Algorithm::Rs256,
        KeyKind::Ec { curve: Curve::P256 } => Algorithm::Es256,
        KeyKind::Ec { curve: Curve::P384 } => Algorithm::Es384,
        KeyKind::Ec { curve: Curve::P521 } => Algorithm::Es512,
    }
}

/// Generates the key on the logged-in token, makes its CSR and/or certificate, proves
/// it, and gives it its label. See the module docs for the all-or-nothing rule.
pub fn generate(token: &OpenToken, request: &GenerateRequest) -> Result<Generated, GenerateError> {
    request.check()?;
    check_token_mechanisms(token, request)?;
    let session = &token.session;
    let existing = find_objects(session, None, Some(&request.label), None)?;
    if !existing.is_empty() {
        return Err(GenerateError::Exists {
            token: token.info.label.clone(),
            label: request.label.clone(),
            count: existing.len(),
        });
    }
    let temp_label = format!("{}.generating-{}", request.label, random_suffix());
    let mut created = Vec::new();
    // The CSR is written last, once the proven key has its label: a failure to write it
    // still removes the key, and no CSR is left for a key that is not on the token.
    let staged = stage(token, request, &temp_label, &mut created)
        .and_then(|staged| {
            relabel(session, &created, &request.label)?;
            if let (Some(path), Some(pem)) = (&request.csr, &staged.csr) {
                write_csr(path, pem, request.csr_existing())?;
            }
            Ok(staged)
        })
        .map_err(|cause| roll_back(session, &created, cause, &temp_label))?;
    Ok(Generated {
        token: token.info.label.clone(),
        token_serial: token.info.serial.clone(),
        label: request.label.clone(),
        id: hex::encode(&staged.id),
        key: request.kind,
        purpose: request.purpose,
        subject: staged.subject,
        csr: request.csr.clone(),
        csr_format: request.csr_format,
        certificate: staged.cert.as_ref().map(|c| CertInfo::of(c)).transpose()?,
        attributes: read_key_attrs(session, staged.private, request.kind)?,
        dual_use: staged.dual_use,
        can_decrypt: staged.can_decrypt,
        proof: staged.proof,
        config: rule::key_rule(
            &request.label,
            request.kind,
            request.purpose,
            request.operations.as_deref(),
            request.ksef,
        ),
    })
}

fn check_token_mechanisms(token: &OpenToken, request: &GenerateRequest) -> Result<(), TokenError> {
    let ctx = token.module.ctx();
    let algorithm = self_signature_algorithm(request.kind);
    check_mechanisms(
        ctx,
        token.slot,
        &token.info.label,
        "the signature on the CSR / certificate",
        &[algorithm],
    )?;
    let offered = ctx
        .get_mechanism_list(token.slot)
        .map_err(TokenError::pkcs11(format!(
            "reading the mechanism list of token \"{}\"",
            token.info.label
        )))?;
    let mut needed = vec![(pair_gen_mechanism(request.kind), "generating the key")];
    if request.purpose == Purpose::Decrypt {
        needed.push((MechanismType::ECDH1_DERIVE, "a decryption key"));
    }
    for (mechanism, purpose) in needed {
        if !offered.contains(&mechanism) {
            return Err(TokenError::MechanismMissing {
                token: token.info.label.clone(),
                mechanism: mechanism.to_string(),
                purpose: purpose.into(),
            });
        }
    }
    Ok(())
}

/// What the staging made, before the label switch.
struct Staged {
    private: ObjectHandle,
    csr: Option<String>,
    id: Vec<u8>,
    subject: String,
    cert: Option<openssl::x509::X509>,
    dual_use: bool,
    can_decrypt: bool,
    proof: GenProof,
}

/// Generates, identifies, certifies and proves the key under `temp_label`, recording
/// every object in `created` as soon as it exists.
fn stage(
    token: &OpenToken,
    request: &GenerateRequest,
    temp_label: &str,
    created: &mut Vec<ObjectHandle>,
) -> Result<Staged, GenerateError> {
    let session = &token.session;
    let key_use = key_use(request.purpose);
    let family = ModuleFamily::of(token.module.ctx());
    let (public, private) = generate_key_pair(session, family, request.kind, key_use, temp_label)?;
    created.extend([public, private]);
    // Only a key made without CKA_DECRYPT = false in its template can decrypt.
    let can_decrypt =
        family.decrypt_attribute_breaks_generate() && clear_decrypt(session, private)?;
    let public_key = read_public_key(session, public, request.kind)?;
    let spki = public_key
        .public_key_to_der()
        .map_err(|e| TokenError::GeneratedKey {
            detail: e.to_string(),
        })?;
    let id = spki_key_id(&spki)?;
    let clash = find_objects(session, None, None, Some(&id))?;
    if clash.iter().any(|h| !created.contains(h)) {
        return Err(GenerateError::IdExists {
            token: token.info.label.clone(),
            id: hex::encode(&id),
        });
    }
    let subject_der = request.subject.to_der().map_err(|e| X509Error::Build {
        what: "subject",
        detail: e.to_string(),
    })?;
    identify(session, &[public, private], &id, &subject_der)?;

    let algorithm = self_signature_algorithm(request.kind);
    let signer = TokenSigner::new(session, private, algorithm, spki);
    let csr = match &request.csr {
        Some(_) => Some(csr_text(
            &signer,
            request.subject.clone(),
            key_use,
            request.csr_format,
        )?),
        None => None,
    };
    let cert = match request.self_signed_days {
        Some(days) => {
            let cert = self_signed(&signer, request.subject.clone(), days, key_use, &id)?;
            let der = CertDer::of(&cert)?;
            let template = cert_template(&der, temp_label, &id, CertCategory::TokenUser);
            created.push(
                session
                    .create_object(&template)
                    .map_err(TokenError::pkcs11("storing the self-signed certificate"))?,
            );
            Some(cert)
        }
        None => None,
    };

    let dual_use = match request.purpose {
        Purpose::Sign => false,
        Purpose::Decrypt => {
            let cleared = disable_signing(session, private)?;
            if !cleared && !request.allow_dual_use {
                return Err(GenerateError::SignNotCleared {
                    token: token.info.label.clone(),
                });
            }
            !cleared
        }
    };
    let proof = match request.purpose {
        Purpose::Sign => prove_signature(session, private, algorithm, &public_key)?,
        Purpose::Decrypt => prove_ecdh(session, private, &public_key)?,
    };
    let attributes = read_key_attrs(session, private, request.kind)?;
    let mut why = attribute_problems(&attributes, request.purpose, dual_use);
    if !proof.verified {
        why.insert(0, "the token's result does not match OpenSSL's".into());
    }
    if !why.is_empty() {
        return Err(GenerateError::ProofFailed {
            why: why.join(", "),
        });
    }
    Ok(Staged {
        private,
        csr,
        id,
        subject: subject_line(&request.subject),
        cert,
        dual_use,
        can_decrypt,
        proof,
    })
}

/// The import rule for CKA_ID: SHA-1 of the subjectPublicKey bits
/// ([`CertDer::default_id`]), so a CA-issued certificate imported later gets the same ID.
fn spki_key_id(spki: &[u8]) -> Result<Vec<u8>, TokenError> {
    use der::Decode;
    let parsed = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki).map_err(|e| {
        TokenError::GeneratedKey {
            detail: e.to_string(),
        }
    })?;
    openssl::hash::hash(
        openssl::hash::MessageDigest::sha1(),
        parsed.subject_public_key.raw_bytes(),
    )
    .map(|d| d.to_vec())
    .map_err(|e| TokenError::GeneratedKey {
        detail: e.to_string(),
    })
}

fn write_csr(path: &Path, pem: &str, existing: Existing) -> Result<(), GenerateError> {
    crate::outfile::write(path, pem.as_bytes(), 0o644, existing).map_err(|e| {
        GenerateError::CsrWrite {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

/// The subject on one line as OpenSSL prints it (`CN=..., O=..., C=PL`).
fn subject_line(name: &Name) -> String {
    name.to_der()
        .ok()
        .and_then(|der| openssl::x509::X509Name::from_der(&der).ok())
        .map(|n| crate::cert::dn_line(&n))
        .unwrap_or_else(|| name.to_string())
}

fn roll_back(
    session: &Session,
    created: &[ObjectHandle],
    cause: GenerateError,
    temp_label: &str,
) -> GenerateError {
    let failures: Vec<String> = created
        .iter()
        .rev()
        .filter_map(|h| session.destroy_object(*h).err().map(|e| e.to_string()))
        .collect();
    if failures.is_empty() {
        tracing::info!("generate rolled back; no object left on the token");
        GenerateError::RolledBack(Box::new(cause))
    } else {
        GenerateError::CleanupFailed {
            cause: Box::new(cause),
            left: failures.len(),
            cleanup: failures.join("; "),
            temp_label: temp_label.to_string(),
        }
    }
}

impl Generated {
    /// The text the officer reads.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let a = &self.attributes;
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut out = String::from("Generated on the token and proven.\n");
        let _ = writeln!(
            out,
            "Token:        {} (serial {})",
            self.token, self.token_serial
        );
        let _ = writeln!(out, "Label:        {}", self.label);
        let _ = writeln!(out, "ID:           {}", self.id);
        let _ = writeln!(out, "Key:          {}", self.key);
        let purpose = match (self.purpose, self.dual_use) {
            (Purpose::Sign, _) if self.can_decrypt => {
                "sign (CKA_SIGN; no CKA_DERIVE); CKA_DECRYPT is true too, because tpm2-pkcs11 makes every TPM key so and keeps it: hsm-signer never asks the key to decrypt"
            }
            (Purpose::Sign, _) => "sign (CKA_SIGN; no CKA_DERIVE, no decryption)",
            (Purpose::Decrypt, false) => {
                "decrypt (ECDH: CKA_DERIVE; CKA_SIGN cleared after the key signed its own CSR/certificate)"
            }
            (Purpose::Decrypt, true) => {
                "decrypt (ECDH: CKA_DERIVE) AND sign: DUAL USE, the token refused to clear CKA_SIGN (--allow-dual-use)"
            }
        };
        let _ = writeln!(out, "Purpose:      {purpose}");
        let _ = writeln!(out, "Subject:      {}", self.subject);
        if let Some(path) = &self.csr {
            let _ = writeln!(
                out,
                "CSR:          {} (PKCS#10, {}): send it to the CA, then put the certificate beside the key with `hsm-signer import-cert --label {}`",
                path.display(),
                match self.csr_format {
                    CsrFormat::Pem => "PEM",
                    CsrFormat::DerBase64 => "base64 of the DER, for KSeF's POST /certificates/enrollments",
                },
                self.label
            );
        }
        if let Some(c) = &self.certificate {
            let _ = writeln!(
                out,
                "Certificate:  self-signed, serial {}, valid until {}, SHA-256 {}; stored on the token with the same label and ID",
                c.serial, c.not_after, c.sha256
            );
        }
        let _ = writeln!(
            out,
            "Protection:   sensitive={}, extractable={}, private={}, private value readable={}, generated on the token={}, never extractable={}",
            yes(a.sensitive),
            yes(a.extractable),
            yes(a.private),
            yes(a.private_value_readable),
            yes(a.local),
            yes(a.never_extractable)
        );
        let proof = match (self.proof.method, self.proof.algorithm) {
            ("signature", Some(alg)) => format!(
                "{alg} signature on a fresh random challenge verified against the public key (OpenSSL, in software)"
            ),
            _ => "ECDH with a fresh software P-256 key: the token's shared secret equals OpenSSL's".into(),
        };
        let _ = writeln!(out, "Proof:        {proof}");
        let _ = writeln!(
            out,
            "Configure:    for the daemon, this [[keys]] table in /etc/hsm-signer/config.toml (docs/operations.md 2), then `systemctl reload hsm-signer`:"
        );
        for line in self.config.lines() {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}
