//! The command line's clap definitions, in one place: their `///` comments are the
//! `--help` text (and the man pages, [`assets`](super::assets)). Each command's body is in a
//! file of its own beside this one.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use super::generate::GenerateArgs;
use super::pin;
use super::token_args::{TokenArgs, TokenSelectArgs};
use crate::import;

/// Keeps the ePUAP / Profil Zaufany key in a PKCS#11 token (HSM, smart card, SoftHSM)
/// and signs for GSKO over a local socket.
///
/// Secrets never go on the command line: PINs and passwords come from a prompt, a file
/// (--pin-file, --password-file) or the environment (HSM_SIGNER_PIN,
/// HSM_SIGNER_P12_PASSWORD).
#[derive(Debug, Parser)]
#[command(name = "hsm-signer", version)]
pub struct Cli {
    /// More detail on standard error (-v: info, -vv: debug). HSM_SIGNER_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the PKCS#11 modules found on this system and the tokens each one sees.
    Tokens {
        /// Only this module.
        #[arg(long, env = "HSM_SIGNER_MODULE")]
        module: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move the key and certificates from a .p12 into the token, then prove it works.
    Import(ImportArgs),
    /// Generate a key pair on the token (it never exists anywhere else), with a CSR for
    /// a CA and/or a self-signed certificate, then prove it works.
    Generate(GenerateArgs),
    /// Put a renewed certificate (same key, new serial and validity) beside a key already
    /// on the token. Refused if it is for another key; the old certificate is removed only
    /// after the new one is stored and the key has signed against it.
    ImportCert(ImportCertArgs),
    /// List the keys on the token with their certificates.
    List {
        /// The token.
        #[command(flatten)]
        token: TokenArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prove a stored key: sign a fresh challenge, verify it against the certificate,
    /// check the key cannot be read out.
    Verify {
        /// The token.
        #[command(flatten)]
        token: TokenArgs,
        /// CKA_LABEL of the key.
        #[arg(long)]
        label: String,
        /// Also write a printable record of this check (Polish and English, with lines to
        /// sign), e.g. for an auditor; refused before anything is done if the file exists.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check certificate expiry for monitoring: exit 0 OK, 1 WARNING, 2 CRITICAL,
    /// 3 UNKNOWN, with one summary line first (Nagios/Icinga/Zabbix plugin convention).
    /// Reads only the token's public certificate objects and never logs in, so a cron
    /// job with a stale PIN file cannot spend a smart card's PIN tries.
    Check {
        /// The token.
        #[command(flatten)]
        token: TokenSelectArgs,
        /// Only this key.
        #[arg(long)]
        label: Option<String>,
        /// WARNING when fewer days than this are left.
        #[arg(long, default_value_t = 30)]
        warn_days: i64,
        /// CRITICAL when fewer days than this are left.
        #[arg(long, default_value_t = 7)]
        crit_days: i64,
    },
    /// Run the signing daemon on a Unix socket (HTTP/JSON); see docs/api.md.
    Serve {
        /// The TOML configuration.
        #[arg(long, default_value = "/etc/hsm-signer/config.toml")]
        config: PathBuf,
    },
    /// Ask a running daemon for a signature (for scripts and tests).
    Sign(SignArgs),
    /// Have a running daemon sign an XML document: a SOAP envelope with WS-Security
    /// (ePUAP) or a SAML message (WK). Writes the signed document's exact bytes.
    SignXml(SignXmlArgs),
    /// Measure signing speed: the token on its own, or the daemon through its socket.
    /// Prints one JSON line (see scripts/bench).
    Bench {
        /// What to measure.
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Work with the audit log.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Remove the key, public key and certificate with this label from the token.
    Remove {
        /// The token.
        #[command(flatten)]
        token: TokenArgs,
        /// CKA_LABEL of the objects to remove.
        #[arg(long)]
        label: String,
        /// Do not ask for confirmation (needed when not run in a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    Assets {
        /// The directory to write `man/` and `completions/` into.
        dir: PathBuf,
    },
    /// Change the user PIN or the SO PIN, or unlock a locked user PIN with the SO PIN.
    Pin {
        /// What to do.
        #[command(subcommand)]
        command: pin::PinCommand,
    },
    /// The old name of `pin change`, kept so that scripts keep working.
    #[command(hide = true)]
    ChangePin(pin::PinChangeArgs),
}

/// `hsm-signer audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log: exits 1 at the first removed, edited or
    /// moved line. Give rotated files oldest first, the current one last. With
    /// `--certificate`, also check every signed checkpoint and flag gaps between them.
    Verify {
        /// The audit log files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The certificate (PEM or DER) of `[audit] checkpoint_key_label`.
        #[arg(long, value_name = "PEM")]
        certificate: Option<PathBuf>,
    },
}

/// `hsm-signer bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Sign directly through PKCS#11 with long-lived sessions (the token's own limit).
    Token {
        /// The token.
        #[command(flatten)]
        token: TokenArgs,
        /// CKA_LABEL of the key.
        #[arg(long)]
        label: String,
        /// Algorithm (RS256, ES256, ...).
        #[arg(long, default_value = "RS256")]
        algorithm: crate::algorithm::Algorithm,
        /// Parallel sessions, one thread each.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// How long to measure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Sign through a running daemon from keep-alive clients.
    Daemon {
        /// Where the daemon answers.
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Key name.
        #[arg(long)]
        key: String,
        /// The endpoint: `sign` (1 KiB SignedInfo), `wss` (a ~4 KiB SOAP envelope to
        /// wss/sign) or `saml` (a ~4 KiB AuthnRequest to saml/sign).
        #[arg(long, value_enum, default_value = "sign")]
        endpoint: crate::bench::Endpoint,
        /// Algorithm (RS256, ES256, ...).
        #[arg(long, default_value = "RS256")]
        algorithm: crate::algorithm::Algorithm,
        /// Send a pre-computed digest instead of the data (`--endpoint sign` only).
        #[arg(long)]
        digest: bool,
        /// Concurrent clients, one connection each.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How long to measure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Write the last answer (the signed document, for wss and saml) here, and the
        /// key's certificate beside it as FILE.cert.pem, for an independent verifier.
        #[arg(long, value_name = "FILE")]
        sample_out: Option<PathBuf>,
    },
    /// Serve the daemon's router with a null signer (no token) until SIGTERM: the floor
    /// that `bench daemon` runs are compared with (scripts/bench).
    #[command(hide = true)]
    Floor {
        /// The socket to serve on.
        #[arg(long)]
        socket: PathBuf,
        /// The audit log to write (every request is recorded, as by the daemon).
        #[arg(long)]
        audit: PathBuf,
        /// Run each job on tokio's blocking pool, as the daemon runs its token calls.
        #[arg(long)]
        hand_off: bool,
    },
}

/// Where a client finds the daemon: its socket, or `--url` with mutual TLS.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The daemon's socket.
    #[arg(
        long,
        env = "HSM_SIGNER_SOCKET",
        default_value = "/run/hsm-signer/hsm-signer.sock"
    )]
    pub(super) socket: PathBuf,
    /// The daemon's TLS listener instead of the socket: https://host:port.
    #[arg(long, env = "HSM_SIGNER_URL")]
    pub(super) url: Option<String>,
    /// PEM file of the CA that issued the daemon's server certificate.
    #[arg(long, requires = "url")]
    pub(super) tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate, as pinned in the daemon's [[clients]].
    #[arg(long, requires = "url")]
    pub(super) tls_cert: Option<PathBuf>,
    /// PEM file of this client's private key (mode 0600).
    #[arg(long, requires = "url")]
    pub(super) tls_key: Option<PathBuf>,
}

impl DaemonArgs {
    /// Where the daemon answers.
    pub(super) fn endpoint(&self) -> Result<crate::client::Endpoint> {
        Ok(crate::client::Endpoint::new(
            &self.socket,
            self.url.as_deref(),
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?)
    }
}

/// `hsm-signer sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Where the daemon answers.
    #[command(flatten)]
    pub(super) daemon: DaemonArgs,
    /// The key name (from the daemon's configuration).
    #[arg(long)]
    pub(super) key: String,
    /// RS256, ES256, ... or an XML-DSig algorithm URI.
    #[arg(long)]
    pub(super) algorithm: String,
    /// The input is already a digest (binary), not data to hash.
    #[arg(long)]
    pub(super) digest: bool,
    /// Read the input from this file [default: standard input].
    #[arg(long = "in")]
    pub(super) input: Option<PathBuf>,
    /// Write the signature to this file [default: standard output].
    #[arg(long = "out")]
    pub(super) output: Option<PathBuf>,
    /// ECDSA signature format: raw (r||s, XML-DSig) or der (OpenSSL).
    #[arg(long)]
    pub(super) format: Option<String>,
    /// Write the signature base64-encoded instead of binary.
    #[arg(long)]
    pub(super) base64: bool,
}

/// `hsm-signer sign-xml`.
#[derive(Debug, clap::Args)]
pub struct SignXmlArgs {
    /// Where the daemon answers.
    #[command(flatten)]
    pub(super) daemon: DaemonArgs,
    /// The key name (from the daemon's configuration).
    #[arg(long)]
    pub(super) key: String,
    /// wss: WS-Security over a SOAP 1.1 / 1.2 envelope; saml: an enveloped signature
    /// over a SAML message (or the element --reference-id names); xades: enveloped
    /// XAdES-BES over the whole document (KSeF's AuthTokenRequest).
    #[arg(long)]
    pub(super) profile: XmlProfileArg,
    /// RS256, ES256, ... [default: the key's first configured algorithm that fits it].
    #[arg(long)]
    pub(super) algorithm: Option<String>,
    /// saml: the ID of the element to sign [default: the root].
    #[arg(long)]
    pub(super) reference_id: Option<String>,
    /// wss: add a signed wsu:Timestamp valid this many seconds.
    #[arg(long = "timestamp-ttl", value_name = "SECONDS")]
    pub(super) timestamp_ttl: Option<u32>,
    /// xades: the SigningCertificate's digest (sha1 for ePUAP's Doręczyciel) [default:
    /// sha256].
    #[arg(long, value_parser = ["sha256", "sha1"])]
    pub(super) certificate_digest: Option<String>,
    /// xades: the ds:Signature's Id [default: a fresh Signature-<random>].
    #[arg(long)]
    pub(super) signature_id: Option<String>,
    /// The unsigned document (UTF-8).
    #[arg(long = "in")]
    pub(super) input: PathBuf,
    /// Where to write the signed document, byte for byte as the daemon made it.
    #[arg(long = "out")]
    pub(super) output: PathBuf,
}

/// `--profile` of `sign-xml`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum XmlProfileArg {
    /// WS-Security (ePUAP SOAP calls).
    Wss,
    /// SAML (WK AuthnRequest, ArtifactResolve, LogoutRequest).
    Saml,
    /// XAdES-BES (KSeF AuthTokenRequest, ePUAP Doręczyciel).
    Xades,
}

/// `hsm-signer import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub(super) token: TokenArgs,
    /// The .p12 / .pfx file from Sigillum; "-" reads it from standard input (the
    /// password and PIN must then come from files or the environment).
    #[arg(long)]
    pub(super) p12: PathBuf,
    /// File holding the .p12 password (else HSM_SIGNER_P12_PASSWORD, else a prompt).
    #[arg(long)]
    pub(super) password_file: Option<PathBuf>,
    /// The separate certificate from Sigillum's e-mail (DER .cer or PEM); the import is
    /// refused if it does not belong to the key.
    #[arg(long)]
    pub(super) cert: Option<PathBuf>,
    /// CKA_LABEL for the key, public key and certificate [default: the friendlyName].
    #[arg(long)]
    pub(super) label: Option<String>,
    /// CKA_ID in hex [default: SHA-1 of the certificate's public key bits, RFC 5280
    /// 4.2.1.2 method 1, usually equal to its Subject Key Identifier].
    #[arg(long, value_parser = parse_hex)]
    pub(super) id: Option<HexId>,
    /// Replace objects that already carry this label or ID; the old key stays until the
    /// new one has proven itself.
    #[arg(long)]
    pub(super) replace: bool,
    /// Allow ECDH with an EC key (sets CKA_DERIVE); off by default.
    #[arg(long)]
    pub(super) allow_derive: bool,
    /// How the private key enters the token: "create" (C_CreateObject), "unwrap" (wrapped
    /// with a one-time AES key that only the token can unwrap, for HSMs that refuse
    /// plaintext private keys), or "auto" (create, and unwrap if the token refuses).
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    pub(super) method: MethodArg,
    /// Also write a printable record of the import for the security register (Polish and
    /// English, with lines to sign); refused before anything is done if the file exists.
    #[arg(long, value_name = "FILE")]
    pub(super) record: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

/// `hsm-signer import-cert`.
#[derive(Debug, clap::Args)]
pub struct ImportCertArgs {
    #[command(flatten)]
    pub(super) token: TokenArgs,
    /// CKA_LABEL of the key on the token.
    #[arg(long)]
    pub(super) label: String,
    /// The renewed certificate (DER .cer or PEM).
    #[arg(long)]
    pub(super) cert: PathBuf,
    /// CA certificate file(s) to add when the token lacks them (DER, or PEM with one or
    /// more certificates).
    #[arg(long, num_args = 1..)]
    pub(super) chain: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

/// `--method` of `import`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum MethodArg {
    /// C_CreateObject with the key in the template.
    Create,
    /// Wrapped import: C_UnwrapKey of the key wrapped to a token-generated session key.
    Unwrap,
    /// Create; if the token refuses plaintext private keys, unwrap.
    Auto,
}

impl From<MethodArg> for import::MethodChoice {
    fn from(arg: MethodArg) -> Self {
        match arg {
            MethodArg::Create => Self::Create,
            MethodArg::Unwrap => Self::Unwrap,
            MethodArg::Auto => Self::Auto,
        }
    }
}

/// A CKA_ID given in hex. A type of its own because clap's derive reads a literal
/// `Option<Vec<u8>>` as "any number of u8 values" and panics when `--id` is used.
#[derive(Debug, Clone)]
pub(super) struct HexId(pub(super) Vec<u8>);

fn parse_hex(text: &str) -> Result<HexId, String> {
    let clean = text.trim_start_matches("0x").replace(':', "");
    match hex::decode(&clean) {
        Ok(bytes) if !bytes.is_empty() => Ok(HexId(bytes)),
        _ => Err(format!(
            "{text:?} is not a hex ID such as 01a2b3 or 01:a2:b3"
        )),
    }
}
