//! What the tool tells the officer about a stored key, as text or JSON.

use std::fmt::Write as _;

use openssl::x509::X509;
use serde::Serialize;

use crate::cert::{CertError, CertInfo, KeyKind};
use crate::proof::Proof;
use crate::text::{printable, WHOLE};
use crate::token::{read_key_attrs, KeyAttrs, StoredKey, TokenError, TokenSummary};
use cryptoki::session::Session;

/// One key on a token, described and proven.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
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
    /// The key's certificate.
    pub certificate: CertInfo,
    /// CA certificates that came with it.
    pub chain: Vec<CertInfo>,
    /// The key's protection attributes, read back.
    pub attributes: KeyAttrs,
    /// The signing proof, when one was made.
    pub proof: Option<Proof>,
}

impl KeyReport {
    /// Builds the report, reading the key's attributes back from the token.
    pub fn new(
        session: &Session,
        token: &TokenSummary,
        key: &StoredKey,
        proof: Option<Proof>,
        chain: &[X509],
    ) -> Result<Self, ReportError> {
        Ok(Self {
            attributes: read_key_attrs(session, key.handle, key.kind)?,
            token: token.label.clone(),
            token_serial: token.serial.clone(),
            label: key.label.clone(),
            id: hex::encode(&key.id),
            key: key.kind,
            certificate: CertInfo::of(&key.cert)?,
            chain: chain
                .iter()
                .map(|c| CertInfo::of(c))
                .collect::<Result<_, _>>()?,
            proof,
        })
    }

    /// The text the officer reads. Names from the token and the certificates are shown
    /// with control, format and bidi characters escaped ([`printable`]), whole.
    pub fn to_text(&self) -> String {
        let shown = |text: &str| printable(text, WHOLE);
        let c = &self.certificate;
        let a = &self.attributes;
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Token:        {} (serial {})",
            shown(&self.token),
            shown(&self.token_serial)
        );
        let _ = writeln!(out, "Label:        {}", shown(&self.label));
        let _ = writeln!(out, "ID:           {}", self.id);
        let _ = writeln!(out, "Key:          {}", self.key);
        let _ = writeln!(out, "Subject:      {}", shown(&c.subject));
        let _ = writeln!(out, "Issuer:       {}", shown(&c.issuer));
        let _ = writeln!(out, "Serial:       {}", c.serial);
        let _ = writeln!(out, "Valid from:   {}", c.not_before);
        let _ = writeln!(
            out,
            "Valid until:  {} ({})",
            c.not_after,
            days_text(c.days_left)
        );
        let _ = writeln!(out, "SHA-256:      {}", c.sha256);
        for ca in &self.chain {
            let _ = writeln!(
                out,
                "CA:           {} (until {})",
                shown(&ca.subject),
                ca.not_after
            );
        }
        let _ = writeln!(out, "Use:          {}", usage(a));
        let _ = writeln!(
            out,
            "Protection:   sensitive={}, extractable={}, private={}, private value readable={}",
            yes(a.sensitive),
            yes(a.extractable),
            yes(a.private),
            yes(a.private_value_readable)
        );
        if let Some(proof) = &self.proof {
            let _ = writeln!(
                out,
                "Proof:        {} signature on a fresh random challenge {}",
                proof.algorithm,
                if proof.signature_verified {
                    "verified against the certificate (OpenSSL, in software)"
                } else {
                    "DID NOT VERIFY against the certificate"
                }
            );
        }
        for problem in crate::proof::problems(a) {
            let _ = writeln!(out, "PROBLEM:      {}", shown(problem));
        }
        out
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The certificate could not be described.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// What the key may do, from CKA_SIGN and CKA_DERIVE.
fn usage(a: &KeyAttrs) -> &'static str {
    match (a.sign, a.derive) {
        (true, false) => "sign",
        (false, true) => "decrypt (ECDH, CKA_DERIVE)",
        (true, true) => "sign AND decrypt (ECDH): DUAL USE, the token would not clear CKA_SIGN on this decryption key",
        (false, false) => "none (CKA_SIGN and CKA_DERIVE are both false)",
    }
}

fn days_text(days: i64) -> String {
    match days {
        d if d < 0 => format!("EXPIRED {} days ago", -d),
        0 => "expires today".into(),
        d => format!("{d} days left"),
    }
}
