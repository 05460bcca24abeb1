//! `hsm-signer generate`: its options, resolved into a [`GenerateRequest`] before the
//! token is opened or the PIN read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::output::print;
use super::token_args::TokenArgs;
use crate::cert::{Curve, KeyKind};
use crate::config::Operation;
use crate::generate::{
    self, ksef::parse_subject_json, subject::parse_subject, CsrFormat, GenerateRequest, Purpose,
};

/// `hsm-signer generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// CKA_LABEL for the new key, its public key and its certificate.
    #[arg(long)]
    label: String,
    /// The kind of key: ec-p256 for login.gov.pl (WK), rsa-2048 and up for others.
    #[arg(long, value_enum)]
    key_type: KeyTypeArg,
    /// sign: a signing key. decrypt: an ECDH key (ec-p256 only) for the assertion WK
    /// encrypts to the municipality.
    #[arg(long, value_enum)]
    purpose: PurposeArg,
    /// The subject in OpenSSL's form, most general attribute first:
    /// "/C=PL/O=Gmina Przykładowo/CN=gsko.przykladowo.pl". RFC 4514 strings
    /// ("CN=...,O=...,C=PL") are refused, since they list the attributes in reverse.
    /// Write a '/' inside a value as '\/'. Also: givenName, surname, uniqueIdentifier,
    /// organizationIdentifier, and the OIDs 2.5.4.5, 2.5.4.97, 2.5.4.45.
    #[arg(long, required_unless_present = "subject_json")]
    subject: Option<String>,
    /// For a KSeF certificate: the subject from this file, the JSON answer of KSeF's
    /// GET /certificates/enrollments/data, saved unchanged. Its attributes go into the
    /// CSR in the order and string types of KSeF's C# client.
    #[arg(long, value_name = "FILE", conflicts_with = "subject")]
    subject_json: Option<PathBuf>,
    /// Write a PKCS#10 certificate request here, for a CA: a new file (a symlink is
    /// never followed).
    #[arg(long, value_name = "FILE")]
    csr: Option<PathBuf>,
    /// How to write --csr: pem, or der-base64 (base64 of the DER on one line, without a
    /// line break: the `csr` field of KSeF's POST /certificates/enrollments).
    #[arg(long, value_enum, default_value = "pem", requires = "csr")]
    csr_format: CsrFormatArg,
    /// Replace a regular file already at --csr.
    #[arg(long, requires = "csr")]
    force: bool,
    /// Store a self-signed certificate valid this many days on the token, under the same
    /// label and ID (enough for login.gov.pl metadata; a CA-issued certificate can
    /// replace it later with `import-cert`).
    #[arg(long, value_name = "N")]
    self_signed_days: Option<u32>,
    /// For --purpose decrypt: keep the key even if the token refuses to clear CKA_SIGN
    /// after the key has signed its own CSR/certificate (the key could then sign too).
    #[arg(long)]
    allow_dual_use: bool,
    /// What the key is for, comma-separated, of: sign, wss, saml, decrypt, jws, jwt,
    /// xades. Printed as the `operations` line of the [[keys]] table to paste (the narrow
    /// list docs/operations.md recommends); the token is not told.
    #[arg(long, value_delimiter = ',', value_parser = parse_operation)]
    operations: Option<Vec<Operation>>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One `--operations` name.
fn parse_operation(text: &str) -> Result<Operation, String> {
    Operation::ALL
        .into_iter()
        .find(|o| o.name() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
            format!("unknown operation {text:?}: use {}", names.join(", "))
        })
}

/// `--key-type`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyTypeArg {
    /// EC on NIST P-256 (what login.gov.pl uses).
    #[value(name = "ec-p256")]
    EcP256,
    /// EC on NIST P-384.
    #[value(name = "ec-p384")]
    EcP384,
    /// RSA, 2048-bit modulus.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA, 3072-bit modulus.
    #[value(name = "rsa-3072")]
    Rsa3072,
    /// RSA, 4096-bit modulus.
    #[value(name = "rsa-4096")]
    Rsa4096,
}

impl From<KeyTypeArg> for KeyKind {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::EcP256 => KeyKind::Ec { curve: Curve::P256 },
            KeyTypeArg::EcP384 => KeyKind::Ec { curve: Curve::P384 },
            KeyTypeArg::Rsa2048 => KeyKind::Rsa { bits: 2048 },
            KeyTypeArg::Rsa3072 => KeyKind::Rsa { bits: 3072 },
            KeyTypeArg::Rsa4096 => KeyKind::Rsa { bits: 4096 },
        }
    }
}

/// `--csr-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CsrFormatArg {
    /// PEM.
    Pem,
    /// Base64 of the DER, one line (KSeF).
    #[value(name = "der-base64")]
    DerBase64,
}

/// `--purpose`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PurposeArg {
    /// Signing.
    Sign,
    /// Decryption by ECDH.
    Decrypt,
}

/// Runs `generate`: everything that needs neither token nor PIN is checked first.
pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let request = GenerateRequest {
        label: args.label,
        kind: args.key_type.into(),
        purpose: match args.purpose {
            PurposeArg::Sign => Purpose::Sign,
            PurposeArg::Decrypt => Purpose::Decrypt,
        },
        subject: subject(args.subject.as_deref(), args.subject_json.as_deref())?,
        csr: args.csr,
        csr_format: match args.csr_format {
            CsrFormatArg::Pem => CsrFormat::Pem,
            CsrFormatArg::DerBase64 => CsrFormat::DerBase64,
        },
        replace_csr: args.force,
        self_signed_days: args.self_signed_days,
        allow_dual_use: args.allow_dual_use,
        operations: args.operations,
        ksef: args.subject_json.is_some(),
    };
    request.check()?;
    let target = args.token.resolve()?;
    let token = target.open_logged_in(true)?;
    eprintln!(
        "Generating {} key \"{}\" on token \"{}\" (serial {})...",
        request.kind, request.label, token.info.label, token.info.serial
    );
    let generated = generate::generate(&token, &request)?;
    print(&generated, args.json, |g| g.to_text())
}

/// The subject from `--subject` or `--subject-json` (clap makes sure exactly one is given).
fn subject(text: Option<&str>, json: Option<&Path>) -> Result<x509_cert::name::Name> {
    match (text, json) {
        (Some(text), _) => Ok(parse_subject(text)?),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "--subject-json: cannot read {} as UTF-8 text",
                    path.display()
                )
            })?;
            Ok(parse_subject_json(&json)?)
        }
        (None, None) => anyhow::bail!("give --subject or --subject-json"),
    }
}
