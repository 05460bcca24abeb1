//! `hsm-signer generate`: its options, resolved into a [`GenerateRequest`] before the
//! token is opened or the PIN read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::output::print;
use super::token_args::TokenArgs;
use crate::cert::{Curve, KeyKind};
use crate::generate::{self, subject::parse_subject, GenerateRequest, Purpose};

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
    /// Write a '/' inside a value as '\/'.
    #[arg(long)]
    subject: String,
    /// Write a PKCS#10 certificate request (PEM) here, for a CA: a new file (a symlink
    /// is never followed).
    #[arg(long, value_name = "FILE")]
    csr: Option<PathBuf>,
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
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
        subject: parse_subject(&args.subject)?,
        csr: args.csr,
        replace_csr: args.force,
        self_signed_days: args.self_signed_days,
        allow_dual_use: args.allow_dual_use,
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
