//! The command line: clap's definitions (their `///` comments are the `--help` text),
//! resolved into plain settings before any work, then handed to the library.

mod assets;
mod generate;
mod pin;
mod token_args;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::import::{self, ImportRequest};
use crate::inventory::{self, Listed};
use crate::secret::{SecretSource, P12_PASSWORD_ENV};
use crate::token::{discover_modules, probe_module};
pub use generate::GenerateArgs;
pub use token_args::{TokenArgs, TokenSelectArgs, TokenTarget};

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
    socket: PathBuf,
    /// The daemon's TLS listener instead of the socket: https://host:port.
    #[arg(long, env = "HSM_SIGNER_URL")]
    url: Option<String>,
    /// PEM file of the CA that issued the daemon's server certificate.
    #[arg(long, requires = "url")]
    tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate, as pinned in the daemon's [[clients]].
    #[arg(long, requires = "url")]
    tls_cert: Option<PathBuf>,
    /// PEM file of this client's private key (mode 0600).
    #[arg(long, requires = "url")]
    tls_key: Option<PathBuf>,
}

impl DaemonArgs {
    fn endpoint(&self) -> Result<crate::client::Endpoint> {
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
    daemon: DaemonArgs,
    /// The key name (from the daemon's configuration).
    #[arg(long)]
    key: String,
    /// RS256, ES256, ... or an XML-DSig algorithm URI.
    #[arg(long)]
    algorithm: String,
    /// The input is already a digest (binary), not data to hash.
    #[arg(long)]
    digest: bool,
    /// Read the input from this file [default: standard input].
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// Write the signature to this file [default: standard output].
    #[arg(long = "out")]
    output: Option<PathBuf>,
    /// ECDSA signature format: raw (r||s, XML-DSig) or der (OpenSSL).
    #[arg(long)]
    format: Option<String>,
    /// Write the signature base64-encoded instead of binary.
    #[arg(long)]
    base64: bool,
}

/// `hsm-signer sign-xml`.
#[derive(Debug, clap::Args)]
pub struct SignXmlArgs {
    /// Where the daemon answers.
    #[command(flatten)]
    daemon: DaemonArgs,
    /// The key name (from the daemon's configuration).
    #[arg(long)]
    key: String,
    /// wss: WS-Security over a SOAP 1.1 / 1.2 envelope; saml: an enveloped signature
    /// over a SAML message (or the element --reference-id names).
    #[arg(long)]
    profile: XmlProfileArg,
    /// RS256, ES256, ... [default: the key's first configured algorithm that fits it].
    #[arg(long)]
    algorithm: Option<String>,
    /// saml: the ID of the element to sign [default: the root].
    #[arg(long)]
    reference_id: Option<String>,
    /// wss: add a signed wsu:Timestamp valid this many seconds.
    #[arg(long = "timestamp-ttl", value_name = "SECONDS")]
    timestamp_ttl: Option<u32>,
    /// The unsigned document (UTF-8).
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the signed document, byte for byte as the daemon made it.
    #[arg(long = "out")]
    output: PathBuf,
}

/// `--profile` of `sign-xml`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum XmlProfileArg {
    /// WS-Security (ePUAP SOAP calls).
    Wss,
    /// SAML (WK AuthnRequest, ArtifactResolve, LogoutRequest).
    Saml,
}

/// `hsm-signer import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// The .p12 / .pfx file from Sigillum; "-" reads it from standard input (the
    /// password and PIN must then come from files or the environment).
    #[arg(long)]
    p12: PathBuf,
    /// File holding the .p12 password (else HSM_SIGNER_P12_PASSWORD, else a prompt).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The separate certificate from Sigillum's e-mail (DER .cer or PEM); the import is
    /// refused if it does not belong to the key.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// CKA_LABEL for the key, public key and certificate [default: the friendlyName].
    #[arg(long)]
    label: Option<String>,
    /// CKA_ID in hex [default: SHA-1 of the certificate's public key bits, RFC 5280
    /// 4.2.1.2 method 1, usually equal to its Subject Key Identifier].
    #[arg(long, value_parser = parse_hex)]
    id: Option<HexId>,
    /// Replace objects that already carry this label or ID; the old key stays until the
    /// new one has proven itself.
    #[arg(long)]
    replace: bool,
    /// Allow ECDH with an EC key (sets CKA_DERIVE); off by default.
    #[arg(long)]
    allow_derive: bool,
    /// How the private key enters the token: "create" (C_CreateObject), "unwrap" (wrapped
    /// with a one-time AES key that only the token can unwrap, for HSMs that refuse
    /// plaintext private keys), or "auto" (create, and unwrap if the token refuses).
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// Also write a printable record of the import for the security register (Polish and
    /// English, with lines to sign); refused before anything is done if the file exists.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `hsm-signer import-cert`.
#[derive(Debug, clap::Args)]
pub struct ImportCertArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// CKA_LABEL of the key on the token.
    #[arg(long)]
    label: String,
    /// The renewed certificate (DER .cer or PEM).
    #[arg(long)]
    cert: PathBuf,
    /// CA certificate file(s) to add when the token lacks them (DER, or PEM with one or
    /// more certificates).
    #[arg(long, num_args = 1..)]
    chain: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `--method` of `import`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
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
struct HexId(Vec<u8>);

fn parse_hex(text: &str) -> Result<HexId, String> {
    let clean = text.trim_start_matches("0x").replace(':', "");
    match hex::decode(&clean) {
        Ok(bytes) if !bytes.is_empty() => Ok(HexId(bytes)),
        _ => Err(format!(
            "{text:?} is not a hex ID such as 01a2b3 or 01:a2:b3"
        )),
    }
}

/// True when `err` is the token refusing the PIN (wrong, locked, or on its final try).
pub fn is_pin_refusal(err: &anyhow::Error) -> bool {
    let token_error = err.chain().find_map(|e| {
        e.downcast_ref::<crate::token::TokenError>().or_else(|| {
            match e.downcast_ref::<crate::server::ServeError>() {
                Some(crate::server::ServeError::Token(t)) => Some(t),
                _ => None,
            }
        })
    });
    matches!(
        token_error,
        Some(
            crate::token::TokenError::PinIncorrect { .. }
                | crate::token::TokenError::PinLocked { .. }
                | crate::token::TokenError::PinFinalTry { .. }
                | crate::token::TokenError::SoPinIncorrect { .. }
                | crate::token::TokenError::SoPinLocked { .. }
                | crate::token::TokenError::SoPinFinalTry { .. }
                | crate::token::TokenError::CurrentPinLength { .. }
        )
    )
}

/// Runs the command line; errors are printed once by the caller.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Tokens { module, json } => tokens(module, json),
        Command::Import(args) => run_import(args),
        Command::Generate(args) => generate::run(args),
        Command::ImportCert(args) => run_import_cert(args),
        Command::List { token, json } => list(token.resolve()?, json),
        Command::Verify {
            token,
            label,
            record,
            json,
        } => verify(token.resolve()?, &label, record.as_deref(), json),
        Command::Remove { token, label, yes } => remove(token.resolve()?, &label, yes),
        Command::Pin { command } => pin::run(command),
        Command::ChangePin(args) => pin::change(&args),
        Command::Assets { dir } => assets::write(&dir).map(|()| ExitCode::SUCCESS),
        Command::Serve { config } => {
            crate::server::serve(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign(args) => sign(args),
        Command::SignXml(args) => sign_xml(args),
        Command::Check {
            token,
            label,
            warn_days,
            crit_days,
        } => check(token, label.as_deref(), warn_days, crit_days),
        Command::Bench { target } => bench(target),
        Command::Audit {
            command: AuditCommand::Verify { files, certificate },
        } => audit_verify(&files, certificate.as_deref()),
    }
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let input = match &args.input {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading standard input")?;
            buf
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signature = runtime.block_on(crate::client::sign(
        &args.daemon.endpoint()?,
        &args.key,
        &args.algorithm,
        &input,
        args.digest,
        args.format.as_deref(),
    ))?;
    let bytes = if args.base64 {
        let mut text =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &signature)
                .into_bytes();
        text.push(b'\n');
        text
    } else {
        signature
    };
    match &args.output {
        Some(path) => write_out(path, &bytes)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--out FILE`: a regular file is replaced by rename; a device or pipe is written to.
fn write_out(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    crate::outfile::write(path, bytes, 0o644, crate::outfile::Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}

fn sign_xml(args: SignXmlArgs) -> Result<ExitCode> {
    use crate::client::{XmlProfile, XmlSignOptions};
    let profile = match args.profile {
        XmlProfileArg::Wss => XmlProfile::Wss,
        XmlProfileArg::Saml => XmlProfile::Saml,
    };
    if profile == XmlProfile::Wss && args.reference_id.is_some() {
        bail!("--reference-id applies to --profile saml only");
    }
    if profile == XmlProfile::Saml && args.timestamp_ttl.is_some() {
        bail!("--timestamp-ttl applies to --profile wss only");
    }
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let Ok(xml) = String::from_utf8(bytes) else {
        bail!(
            "xml_encoding_unsupported: {} is not UTF-8; only UTF-8 XML is accepted",
            args.input.display()
        );
    };
    let options = XmlSignOptions {
        algorithm: args.algorithm,
        reference_id: args.reference_id,
        timestamp_ttl_seconds: args.timestamp_ttl,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signed = runtime.block_on(crate::client::sign_xml(
        &args.daemon.endpoint()?,
        &args.key,
        profile,
        &xml,
        &options,
    ))?;
    write_out(&args.output, &signed)?;
    Ok(ExitCode::SUCCESS)
}

fn check(
    token: TokenSelectArgs,
    label: Option<&str>,
    warn_days: i64,
    crit_days: i64,
) -> Result<ExitCode> {
    let certificates = token.resolve().and_then(|(module, selector)| {
        let token = crate::token::OpenToken::open(&module, &selector, false)?;
        Ok(inventory::certificates(&token)?)
    });
    let outcome = match certificates {
        Ok(found) => crate::check::judge(&found, label, warn_days, crit_days),
        Err(e) => crate::check::Outcome {
            state: crate::check::State::Unknown,
            lines: vec![format!("UNKNOWN - {}", format!("{e:#}").replace('\n', " "))],
        },
    };
    // A monitoring wrapper may read only the first line (`| head -1`): a closed pipe must
    // not turn the state into a panic's exit 101, so write errors are ignored here.
    let mut out = std::io::stdout().lock();
    for line in &outcome.lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(ExitCode::from(outcome.state as u8))
}

fn bench(target: BenchTarget) -> Result<ExitCode> {
    let result = match target {
        BenchTarget::Floor {
            socket,
            audit,
            hand_off,
        } => {
            crate::server::floor::run(&socket, &audit, hand_off)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchTarget::Token {
            token,
            label,
            algorithm,
            parallel,
            seconds,
        } => {
            let target = token.resolve()?;
            let pin = target.pin.read("token PIN")?;
            crate::bench::token(
                &target.module,
                &target.selector,
                &pin,
                &label,
                algorithm,
                parallel.max(1),
                std::time::Duration::from_secs_f64(seconds),
            )?
        }
        BenchTarget::Daemon {
            daemon,
            key,
            endpoint,
            algorithm,
            digest,
            clients,
            seconds,
            sample_out,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench::daemon(
                &daemon.endpoint()?,
                endpoint,
                &key,
                algorithm,
                digest,
                clients.max(1),
                std::time::Duration::from_secs_f64(seconds),
                sample_out.as_deref(),
            ))?
        }
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(files: &[PathBuf], certificate: Option<&std::path::Path>) -> Result<ExitCode> {
    let checker = match certificate {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the certificate {}", path.display()))?;
            let cert = crate::cert::load_cert_bytes(&bytes)
                .with_context(|| format!("{} is not a certificate (PEM or DER)", path.display()))?;
            Some(crate::audit::checkpoint::Checker::new(cert.public_key()?))
        }
    };
    let result = crate::audit::verify(files, checker)?;
    for note in &result.notes {
        println!("{note}");
    }
    if let Some(broken) = &result.broken {
        println!(
            "BROKEN at line {} of {}: {}",
            broken.line,
            broken.file.display(),
            broken.why
        );
        return Ok(ExitCode::FAILURE);
    }
    let signed = if certificate.is_some() {
        format!(", {} signed checkpoints verified", result.checkpoints)
    } else {
        String::new()
    };
    println!(
        "OK: {} lines in {} file(s), chain intact{signed}; head {}",
        result.lines,
        files.len(),
        result.head
    );
    if result
        .notes
        .iter()
        .any(|n| crate::audit::checkpoint::is_gap(n))
    {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_import(args: ImportArgs) -> Result<ExitCode> {
    let from_stdin = args.p12.as_os_str() == "-";
    if from_stdin {
        stdin_p12_preconditions(&args)?;
    }
    let target = args.token.resolve()?;
    // Created before the token is touched, removed again if the import fails.
    let record = args
        .record
        .as_deref()
        .map(crate::record::RecordFile::create)
        .transpose()?;
    let stdin_bytes = if from_stdin {
        Some(read_p12_from_stdin()?)
    } else {
        None
    };
    let p12_name = if from_stdin {
        PathBuf::from("standard input")
    } else {
        args.p12.clone()
    };
    // Read once, bounded: the digest in the record is of the very bytes imported.
    let p12_bytes = match stdin_bytes {
        Some(bytes) => bytes,
        None => import::read_p12(&args.p12)?,
    };
    let p12_digest = crate::record::FileDigest::of(&p12_bytes);
    let password = SecretSource::choose(
        args.password_file.as_deref(),
        P12_PASSWORD_ENV,
        &format!("Password for {}: ", args.p12.display()),
        ".p12 password",
        "--password-file",
    )?
    .read(".p12 password")?;
    let request = ImportRequest {
        p12: p12_name.clone(),
        cert: args.cert,
        label: args.label,
        id: args.id.map(|id| id.0),
        replace: args.replace,
        allow_derive: args.allow_derive,
        method: args.method.into(),
    };
    // Everything that needs only the file is checked before the token is touched.
    let prepared = import::prepare_bytes(request, &p12_bytes, &password)?;
    drop(password);
    drop(p12_bytes);
    let token = target.open_logged_in(true)?;
    eprintln!(
        "Importing \"{}\" into token \"{}\" (serial {})...",
        shown(prepared.label()),
        shown(&token.info.label),
        shown(&token.info.serial)
    );
    let imported = import::store(&token, prepared)?;
    if let Some(record) = record {
        let text = crate::record::import_record(&imported, &p12_name, &p12_digest);
        let path = record.path().to_path_buf();
        record.fill(&text).with_context(|| {
            "the key was imported and proven, but the record could not be written; `hsm-signer list` prints the details again"
        })?;
        eprintln!("Record for the security register: {}", path.display());
    }
    print(&imported, args.json, |i| {
        let how = match i.method {
            import::Method::Create => "the key was written with C_CreateObject",
            import::Method::Unwrap => "the key entered the token wrapped, through C_UnwrapKey",
        };
        format!(
            "Imported and proven.\nMethod:       {} ({how})\n{}",
            i.method,
            i.report.to_text()
        )
    })
}

/// `--p12 -` takes standard input for the file, so no secret can be asked there: the
/// password and the PIN must come from files or the environment.
fn stdin_p12_preconditions(args: &ImportArgs) -> Result<()> {
    if std::io::stdin().is_terminal() {
        bail!("--p12 - reads the .p12 from standard input, but standard input is a terminal: redirect the file (--p12 - < FILE) or pipe it in");
    }
    if args.password_file.is_none() && std::env::var_os(P12_PASSWORD_ENV).is_none() {
        bail!("--p12 - reads the .p12 from standard input, so the .p12 password cannot be asked there: pass --password-file FILE or set {P12_PASSWORD_ENV}");
    }
    if !args.token.has_pin_source() {
        bail!("--p12 - reads the .p12 from standard input, so the token PIN cannot be asked there: pass --pin-file FILE, put pin-source in the pkcs11: URI, or set {}", crate::secret::PIN_ENV);
    }
    Ok(())
}

/// Reads the whole `.p12` from standard input, into memory that is wiped when dropped: at
/// most 1 MiB (Sigillum's files are a few kB), complete within 2 s, from a file or a pipe
/// only (see [`crate::secret::bounded`]), so that a writer that never finishes cannot hang
/// the import.
fn read_p12_from_stdin() -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use crate::secret::bounded::{self, ReadError};
    match bounded::read_stdin(bounded::SMALL_FILE) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        Ok(_) | Err(ReadError::NoWriter) => {
            bail!("--p12 -: standard input is empty; redirect the .p12 file (--p12 - < FILE)")
        }
        Err(ReadError::TooLarge(_)) => bail!(
            "--p12 -: standard input holds more than 1 MiB, which is no .p12 from Sigillum (a few kB); check what is piped in"
        ),
        Err(e) => bail!("--p12 -: cannot read the .p12 from standard input: {e}"),
    }
}

fn run_import_cert(args: ImportCertArgs) -> Result<ExitCode> {
    let target = args.token.resolve()?;
    let request = import::certificate::CertRequest {
        label: args.label,
        cert: args.cert,
        chain: args.chain,
    };
    let token = target.open_logged_in(true)?;
    let outcome = import::certificate::import_cert(&token, &request)?;
    print(&outcome, args.json, import_cert_text)
}

fn import_cert_text(o: &import::certificate::CertImported) -> String {
    use import::certificate::{CertOutcome, ExtractableChange};
    let mut head = match (o.outcome, &o.replaced) {
        (CertOutcome::Replaced, Some(old)) => format!(
            "Certificate replaced and proven (old serial {}, valid until {}).",
            old.serial, old.not_after
        ),
        (CertOutcome::Replaced, None) => "Certificate replaced and proven.".to_string(),
        (CertOutcome::Added, _) => {
            "Certificate added beside the key (it had none) and proven.".to_string()
        }
        (CertOutcome::Unchanged, _) => {
            "The token already holds this certificate; nothing added. Key proven.".to_string()
        }
    };
    match &o.extractable {
        ExtractableChange::AlreadyFalse => {}
        ExtractableChange::Cleared => head.push_str(
            "\nCKA_EXTRACTABLE was true on the key; set to false now (C_SetAttributeValue), and it reads back false.",
        ),
        ExtractableChange::Refused(why) => head.push_str(&format!(
            "\nWARNING: the key stays CKA_EXTRACTABLE true: the token would not change it ({why}). `hsm-signer serve` warns about such a key at start and refuses it with refuse_extractable_keys = true; see docs/tpm.md."
        )),
    }
    format!("{head}\n{}", o.report.to_text())
}

/// Lists the keys; exits 1 when one of them shows a problem (an unreadable entry, or a key
/// that is readable, extractable or cannot do its job), so a cron job or a monitoring
/// check notices.
fn list(target: TokenTarget, json: bool) -> Result<ExitCode> {
    let token = target.open_logged_in(false)?;
    let keys = inventory::list(&token)?;
    let troubled = keys.iter().any(|k| match k {
        Listed::Key(r) => !crate::proof::problems(&r.attributes).is_empty(),
        Listed::Problem { .. } => true,
    });
    let printed = print(&keys, json, |keys| {
        if keys.is_empty() {
            return format!(
                "Token \"{}\" holds no private keys.\n",
                shown(&token.info.label)
            );
        }
        keys.iter()
            .map(|k| match k {
                Listed::Key(r) => r.to_text(),
                Listed::Problem { problem } => format!("PROBLEM: {}\n", shown(problem)),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    if troubled {
        eprintln!("hsm-signer: a key on the token shows a PROBLEM (above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(printed)
}

fn verify(
    target: TokenTarget,
    label: &str,
    record: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode> {
    let record = record.map(crate::record::RecordFile::create).transpose()?;
    let token = target.open_logged_in(false)?;
    let report = inventory::verify(&token, label)?;
    if let Some(record) = record {
        let path = record.path().to_path_buf();
        record.fill(&crate::record::verify_record(&report))?;
        eprintln!("Record for the security register: {}", path.display());
    }
    print(&report, json, |r| format!("Key works.\n{}", r.to_text()))
}

fn remove(target: TokenTarget, label: &str, yes: bool) -> Result<ExitCode> {
    let token = target.open_logged_in(true)?;
    let objects = inventory::objects_labelled(&token, label)?;
    if objects.is_empty() {
        bail!(
            "no objects labelled \"{label}\" on token \"{}\"; nothing removed",
            token.info.label
        );
    }
    if !yes {
        confirm(label, objects.len(), &token.info.label)?;
    }
    let removed = inventory::remove(&token, label, &objects)?;
    println!(
        "Removed {removed} object(s) labelled \"{label}\" from token \"{}\".",
        token.info.label
    );
    Ok(ExitCode::SUCCESS)
}

fn confirm(label: &str, count: usize, token: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to remove {count} object(s) labelled \"{label}\" without confirmation: re-run with --yes");
    }
    eprint!("Remove {count} object(s) labelled \"{label}\" from token \"{token}\"? This cannot be undone. Type the label to confirm: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() != label {
        bail!("not confirmed; nothing removed");
    }
    Ok(())
}

fn tokens(module: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let modules = match module {
        Some(m) => vec![m],
        None => discover_modules(),
    };
    let mut found = Vec::new();
    for path in modules {
        let probe = probe_module(&path);
        let mut entry = match probe.result {
            Ok(tokens) => serde_json::json!({"module": path, "tokens": tokens}),
            Err(e) => serde_json::json!({"module": path, "error": e.to_string()}),
        };
        if !probe.chatter.is_empty() {
            entry["module_stderr_lines"] = probe.chatter.len().into();
        }
        found.push(entry);
    }
    print(&found, json, |found| {
        let mut text = String::new();
        for m in found {
            text.push_str(&format!("{}\n", m["module"].as_str().unwrap_or("?")));
            if let Some(err) = m["error"].as_str() {
                text.push_str(&format!(
                    "  cannot use it: {}\n",
                    err.lines().next().unwrap_or(err)
                ));
            }
            if let Some(lines) = m["module_stderr_lines"].as_u64() {
                text.push_str(&format!(
                    "  (the module printed {lines} line(s) of its own diagnostics; -v shows them)\n"
                ));
            }
            for t in m["tokens"].as_array().into_iter().flatten() {
                let field = |name: &str| shown(t[name].as_str().unwrap_or(""));
                text.push_str(&format!(
                    "  token \"{}\"  serial {}  ({} {})\n",
                    field("label"),
                    field("serial"),
                    field("manufacturer"),
                    field("model")
                ));
            }
        }
        if text.is_empty() {
            text = "No PKCS#11 modules found.\n".into();
        }
        text
    })
}

/// A value from a token, a certificate or a `.p12`, for text output: whole, with control,
/// format and bidi characters escaped (`--json` keeps the exact value).
fn shown(text: &str) -> String {
    crate::text::printable(text, crate::text::WHOLE)
}

fn print<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}
