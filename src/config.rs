//! The daemon's configuration: one TOML file, loaded and checked by one function that
//! serves both the start and every SIGHUP reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::algorithm::Algorithm;
use crate::token::{TokenSelector, UriError};

/// The whole configuration, resolved and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which token, and how to log in.
    pub token: TokenConfig,
    /// The socket and who may use it.
    #[serde(default)]
    pub server: ServerConfig,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The periodic self-test.
    #[serde(default)]
    pub health: HealthConfig,
    /// The keys callers may use.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// TLS clients, each known by name and the SHA-256 of its certificate.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// `[xml]`: how complex a document the XML endpoints accept.
    #[serde(default)]
    pub xml: crate::xml::XmlLimits,
}

/// One `[[clients]]` entry: a GSKO node on another host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The name policy, metrics and the audit log use.
    pub name: String,
    /// SHA-256 (hex) of the client certificate's DER: only this certificate is admitted,
    /// even if another one with a valid chain carries the same name.
    pub certificate_sha256: String,
}

/// `[server.tls]`: a TCP listener with mutual TLS, beside the Unix socket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address and port, e.g. "10.0.0.5:8443" (port 0: any free port, logged at start).
    pub listen: String,
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1); mode 0600.
    pub key_file: PathBuf,
    /// The CA that issues client certificates, PEM.
    pub client_ca_file: PathBuf,
    /// Time allowed for a TLS handshake, milliseconds.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Connections still in the handshake at most; at the limit the oldest handshake of
    /// the source holding the most is aborted.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Handshakes in progress per source (IPv4 address or IPv6 /64) above which new
    /// connections from it are refused, while more than half of `max_handshakes` are busy.
    #[serde(default = "default_max_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Certificate revocation lists of the client CA (PEM or DER), re-read on reload.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
}

fn default_max_handshakes_per_source() -> usize {
    16
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}

fn default_max_handshakes() -> usize {
    64
}

/// `[token]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (may also come from the URI's module-path).
    pub module: Option<PathBuf>,
    /// Token label or `pkcs11:` URI.
    pub token: String,
    /// File holding the user PIN (may also come from the URI's pin-source).
    pub pin_file: Option<PathBuf>,
    /// Signatures under way at once, one session each [default: twice the CPUs].
    pub sessions: Option<usize>,
    /// With SoftHSM: the operator has made a copy of the disk useless to a thief (disk
    /// encryption, backups without the token and the PIN file, the PIN file on another
    /// medium), so `serve` does not warn that the PIN file lies beside the token files.
    #[serde(default)]
    pub allow_softhsm_in_production: bool,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The socket's permission bits, octal text such as "0660".
    pub socket_mode: String,
    /// Group to give the socket (e.g. "www-data"), so a PHP pool can connect.
    pub socket_group: Option<String>,
    /// Peer uids allowed (SO_PEERCRED). With both lists empty: only the daemon's own uid.
    pub allowed_uids: Vec<u32>,
    /// Peer gids allowed (primary gid of the peer process).
    pub allowed_gids: Vec<u32>,
    /// Largest request body accepted by the JSON endpoints (`sign`, …), bytes.
    pub max_body_bytes: usize,
    /// Largest request body accepted by the XML endpoints (`wss/sign`, `saml/sign`,
    /// `saml/decrypt`), bytes: a SOAP envelope can carry a scanned PDF.
    pub max_xml_body_bytes: usize,
    /// XML requests read and processed at once at most; more wait for a place within their
    /// `request_timeout_ms` [default: the number of token sessions].
    pub max_xml_in_flight: Option<usize>,
    /// Signing requests that may wait for a session; more get 503.
    pub queue_depth: usize,
    /// How long a request may wait for the token before it gets 503, milliseconds.
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's headers or body, milliseconds.
    pub read_timeout_ms: u64,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open connections per caller (uid) at most; more are closed at once, so one caller
    /// cannot take every slot.
    pub max_connections_per_identity: usize,
    /// How long a write to a client may make no progress (it reads nothing) before the
    /// connection is closed, milliseconds.
    pub write_timeout_ms: u64,
    /// How long SIGTERM waits for requests in flight, milliseconds.
    pub shutdown_grace_ms: u64,
    /// A TCP listener with mutual TLS for GSKO nodes on other hosts; none by default.
    pub tls: Option<TlsConfig>,
    /// Refuse to start (or reload) while a configured key could leave the token
    /// (CKA_EXTRACTABLE true or CKA_SENSITIVE false). Default false: such a key is
    /// served, with a warning at start and in health.
    pub refuse_extractable_keys: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/hsm-signer/hsm-signer.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_xml_body_bytes: 16 * 1024 * 1024,
            max_xml_in_flight: None,
            queue_depth: 256,
            request_timeout_ms: 5_000,
            read_timeout_ms: 5_000,
            max_connections: 2_048,
            max_connections_per_identity: 64,
            write_timeout_ms: 5_000,
            shutdown_grace_ms: 10_000,
            tls: None,
            refuse_extractable_keys: false,
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines audit file; none means no audit log (a warning at start).
    pub file: Option<PathBuf>,
    /// When a record cannot be written: "refuse" the request (default) or "continue".
    pub on_failure: crate::audit::OnFailure,
    /// CKA_LABEL of an EC P-256 key on the token that signs checkpoints of the chain;
    /// it may not also be a `[[keys]]` label.
    pub checkpoint_key_label: Option<String>,
    /// Seconds between signed checkpoints.
    pub checkpoint_interval_s: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            file: None,
            on_failure: crate::audit::OnFailure::Refuse,
            checkpoint_key_label: None,
            checkpoint_interval_s: 300,
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between self-test signatures with each key.
    pub interval_seconds: u64,
    /// Certificate days left below which health says "warning".
    pub warn_days: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 30,
            warn_days: 30,
        }
    }
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The name callers use in URLs.
    pub name: String,
    /// CKA_LABEL of the key on the token.
    pub label: String,
    /// What the key is for: signing (default) or decrypting WK's assertions.
    #[serde(default)]
    pub purpose: Purpose,
    /// Algorithms this key may sign with (names or XML-DSig URIs); required for a sign
    /// key, absent for a decrypt key.
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// If set, only these uids may use this key (on top of `[server]`).
    #[serde(default)]
    pub allowed_uids: Option<Vec<u32>>,
    /// If set, only these gids may use this key (on top of `[server]`).
    #[serde(default)]
    pub allowed_gids: Option<Vec<u32>>,
    /// The `[[clients]]` that may use this key over TLS; without it no TLS client may.
    /// A key whose rule names only `allowed_clients` serves no local caller.
    #[serde(default)]
    pub allowed_clients: Option<Vec<String>>,
    /// Keep signing after the certificate expired (default: refuse).
    #[serde(default)]
    pub allow_expired: bool,
    /// If set, the only operations (endpoints) this key serves; see
    /// [`KeyConfig::allows_operation`]. Recommended for every new key.
    #[serde(default)]
    pub operations: Option<Vec<Operation>>,
    /// If set, the only audiences (`aud`, absolute https URLs, compared exactly) a client
    /// assertion signed with this key may name.
    #[serde(default)]
    pub jwt_audiences: Option<Vec<String>>,
}

impl KeyConfig {
    /// True when this key serves `op`. A key without `operations` keeps the behaviour of
    /// keys written before the list existed: a sign key serves every signing operation,
    /// a decrypt key only `decrypt`.
    pub fn allows_operation(&self, op: Operation) -> bool {
        match &self.operations {
            Some(ops) => ops.contains(&op),
            None => (op == Operation::Decrypt) == (self.purpose == Purpose::Decrypt),
        }
    }

    /// True when a client assertion signed with this key may name `aud`: any audience
    /// without `jwt_audiences`, otherwise one of them, byte for byte.
    pub fn allows_audience(&self, aud: &str) -> bool {
        match &self.jwt_audiences {
            Some(list) => list.iter().any(|a| a == aud),
            None => true,
        }
    }
}

/// An operation a key may be limited to with `operations = [...]`: one per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `/sign`: a signature over data or a digest.
    Sign,
    /// `/wss/sign`: WS-Security for ePUAP.
    Wss,
    /// `/saml/sign`: WK's SAML messages.
    Saml,
    /// `/saml/decrypt`: WK's encrypted assertions (decrypt keys).
    Decrypt,
    /// `/jws/sign`: a compact JWS over the caller's payload.
    Jws,
    /// `/jwt/client-assertion`: the RFC 7523 client assertion.
    Jwt,
    /// `/xades/sign`: enveloped XAdES-BES.
    Xades,
}

impl Operation {
    /// Every operation, in the configuration's order.
    pub const ALL: [Operation; 7] = [
        Operation::Sign,
        Operation::Wss,
        Operation::Saml,
        Operation::Decrypt,
        Operation::Jws,
        Operation::Jwt,
        Operation::Xades,
    ];

    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Sign => "sign",
            Operation::Wss => "wss",
            Operation::Saml => "saml",
            Operation::Decrypt => "decrypt",
            Operation::Jws => "jws",
            Operation::Jwt => "jwt",
            Operation::Xades => "xades",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key is for. A key does one job: a decrypt key never signs and a sign key
/// never decrypts, so a caller cannot turn one operation into the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Signatures (`/sign`, `/wss/sign`, `/saml/sign`).
    #[default]
    Sign,
    /// ECDH-ES decryption of WK's encrypted assertions (`/saml/decrypt`); EC P-256
    /// with CKA_DERIVE.
    Decrypt,
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Purpose::Sign => "sign",
            Purpose::Decrypt => "decrypt",
        })
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or wrong fields.
    #[error("configuration {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// The token selector is bad.
    #[error("configuration {path}: [token] token: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: UriError,
    },
    /// A semantic problem.
    #[error("configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The configuration with the token selector parsed and the derived values computed.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file as written.
    pub config: Config,
    /// The file it came from.
    pub path: PathBuf,
    /// The module to load.
    pub module: PathBuf,
    /// The token.
    pub selector: TokenSelector,
    /// The PIN file.
    pub pin_file: PathBuf,
    /// The socket mode bits.
    pub socket_mode: u32,
    /// Signing sessions.
    pub sessions: usize,
}

impl Resolved {
    /// How long a request may wait for the token.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.request_timeout_ms)
    }

    /// How long a client may take to send a request.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.read_timeout_ms)
    }

    /// XML requests in work at once: `[server] max_xml_in_flight`, or one per session.
    pub fn xml_in_flight(&self) -> usize {
        self.config
            .server
            .max_xml_in_flight
            .unwrap_or(self.sessions)
    }
}

/// The settings that differ between `running` and `new` but only take effect at start:
/// the token, the socket, the pool and the audit file. A reload applies the rest (keys,
/// access lists, body limit, request timeout, health) and names these in a warning.
pub fn needs_restart(running: &Resolved, new: &Resolved) -> Vec<&'static str> {
    let (a, b) = (&running.config.server, &new.config.server);
    [
        ("[token] module", running.module != new.module),
        ("[token] token", running.selector != new.selector),
        ("[token] pin_file", running.pin_file != new.pin_file),
        ("[token] sessions", running.sessions != new.sessions),
        ("[server] socket", a.socket != b.socket),
        (
            "[server] socket_mode",
            running.socket_mode != new.socket_mode,
        ),
        ("[server] socket_group", a.socket_group != b.socket_group),
        ("[server] queue_depth", a.queue_depth != b.queue_depth),
        (
            "[server] max_xml_in_flight",
            a.max_xml_in_flight != b.max_xml_in_flight,
        ),
        (
            "[server] max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "[server] max_connections_per_identity",
            a.max_connections_per_identity != b.max_connections_per_identity,
        ),
        (
            "[server] write_timeout_ms",
            a.write_timeout_ms != b.write_timeout_ms,
        ),
        (
            "[server] read_timeout_ms (header part)",
            a.read_timeout_ms != b.read_timeout_ms,
        ),
        (
            "[server] shutdown_grace_ms",
            a.shutdown_grace_ms != b.shutdown_grace_ms,
        ),
        (
            "[server.tls] listen (or adding or removing [server.tls])",
            a.tls.as_ref().map(|t| &t.listen) != b.tls.as_ref().map(|t| &t.listen),
        ),
        (
            "[server.tls] max_handshakes, max_handshakes_per_source",
            a.tls
                .as_ref()
                .map(|t| (t.max_handshakes, t.max_handshakes_per_source))
                != b.tls
                    .as_ref()
                    .map(|t| (t.max_handshakes, t.max_handshakes_per_source)),
        ),
        (
            "[audit] file",
            running.config.audit.file != new.config.audit.file,
        ),
        (
            "[audit] on_failure",
            running.config.audit.on_failure != new.config.audit.on_failure,
        ),
        (
            "[audit] checkpoint_key_label",
            running.config.audit.checkpoint_key_label != new.config.audit.checkpoint_key_label,
        ),
        (
            "[audit] checkpoint_interval_s",
            running.config.audit.checkpoint_interval_s != new.config.audit.checkpoint_interval_s,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Loads and checks `path`. Used at start and on every reload.
pub fn load(path: &Path) -> Result<Resolved, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!("the file has mode {mode:04o}: every local user may change who can sign; chmod 0640 (owner root) and try again"),
            });
        }
        if mode & 0o020 != 0 {
            tracing::warn!(file = %path.display(), "the configuration is writable by its group; members can change who may sign");
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    resolve(config, path)
}

fn resolve(config: Config, path: &Path) -> Result<Resolved, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.into(),
        message,
    };
    let selector =
        TokenSelector::parse(&config.token.token).map_err(|source| ConfigError::Token {
            path: path.into(),
            source,
        })?;
    let module = config
        .token
        .module
        .clone()
        .or_else(|| selector.module_path.clone())
        .ok_or_else(|| invalid("[token] needs module = \"/path/to/pkcs11-module.so\" (or module-path in the pkcs11: URI)".into()))?;
    let pin_file = config
        .token
        .pin_file
        .clone()
        .or_else(|| selector.pin_source.clone())
        .ok_or_else(|| invalid("[token] needs pin_file = \"/etc/hsm-signer/pin\" (the daemon never takes a PIN from argv or the environment)".into()))?;
    let socket_mode = u32::from_str_radix(config.server.socket_mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(format!(
                "[server] socket_mode {:?} is not octal permission bits such as \"0660\"",
                config.server.socket_mode
            ))
        })?;
    if socket_mode & 0o007 != 0 {
        return Err(invalid(format!("[server] socket_mode {:o} lets every local user connect; use 0660 with socket_group, or 0600", socket_mode)));
    }
    check_keys(&config.keys).map_err(invalid)?;
    if let Some(label) = &config.audit.checkpoint_key_label {
        if config.audit.file.is_none() {
            return Err(invalid(
                "[audit] checkpoint_key_label needs [audit] file".into(),
            ));
        }
        if let Some(key) = config.keys.iter().find(|k| &k.label == label) {
            return Err(invalid(format!("[audit] checkpoint_key_label {label:?} is also the label of [[keys]] {:?}: a caller could then sign checkpoints; give checkpoints a key of their own", key.name)));
        }
        if config.audit.checkpoint_interval_s == 0 {
            return Err(invalid(
                "[audit] checkpoint_interval_s must be above 0".into(),
            ));
        }
    }
    check_connections(&config.server).map_err(invalid)?;
    check_clients(&config).map_err(invalid)?;
    if config.server.max_body_bytes == 0 || config.server.queue_depth == 0 {
        return Err(invalid(
            "[server] max_body_bytes and queue_depth must be above 0".into(),
        ));
    }
    if config.server.max_xml_body_bytes == 0 || config.server.max_xml_in_flight == Some(0) {
        return Err(invalid(
            "[server] max_xml_body_bytes and max_xml_in_flight must be above 0".into(),
        ));
    }
    // Twice the CPUs: while one signature's result travels back to its caller, the
    // next is already on the token, so no core idles between them (docs/performance.md:
    // on 2 cores, 4 sessions gave RS256 +18 % and ES256 +27 % over 2).
    let sessions = config.token.sessions.unwrap_or_else(|| {
        2 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if sessions == 0 || sessions > 256 {
        return Err(invalid(format!(
            "[token] sessions = {sessions}: use 1 to 256"
        )));
    }
    Ok(Resolved {
        config,
        path: path.into(),
        module,
        selector,
        pin_file,
        socket_mode,
        sessions,
    })
}

fn check_connections(server: &ServerConfig) -> Result<(), String> {
    if server.max_connections == 0 || server.max_connections_per_identity == 0 {
        return Err(
            "[server] max_connections and max_connections_per_identity must be above 0".into(),
        );
    }
    if server.write_timeout_ms == 0 {
        return Err("[server] write_timeout_ms must be above 0 (default 5000)".into());
    }
    Ok(())
}

/// `^[a-z0-9][a-z0-9._-]{0,62}$`: a name that cannot pass for another identity (an
/// unpinned certificate's `sha256:…`, a uid) nor carry control characters into the logs.
fn is_client_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
    matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.len() <= 63
        && bytes.iter().all(inner)
}

fn check_clients(config: &Config) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut pins = HashSet::new();
    for client in &config.clients {
        if !is_client_name(&client.name) {
            return Err(format!(
                "[[clients]] name {:?}: use 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (the daemon names unpinned certificates \"sha256:…\", which no [[clients]] name may look like)",
                client.name
            ));
        }
        if !names.insert(client.name.as_str()) {
            return Err(format!("[[clients]] name {:?} appears twice", client.name));
        }
        let pin = client
            .certificate_sha256
            .to_ascii_lowercase()
            .replace(':', "");
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "[[clients]] {:?}: certificate_sha256 must be the 64 hex digits of the SHA-256 of the certificate's DER (openssl x509 -in client.pem -outform DER | sha256sum)",
                client.name
            ));
        }
        if !pins.insert(pin) {
            return Err(format!(
                "[[clients]] {:?}: this certificate is pinned for another client too",
                client.name
            ));
        }
    }
    for key in &config.keys {
        for name in key.allowed_clients.iter().flatten() {
            if !names.contains(name.as_str()) {
                return Err(format!(
                    "[[keys]] {:?}: allowed_clients names {name:?}, which is not in [[clients]]",
                    key.name
                ));
            }
        }
    }
    if config.server.tls.is_some() && config.clients.is_empty() {
        return Err(
            "[server.tls] is set but no [[clients]] are pinned: no one could connect".into(),
        );
    }
    if let Some(tls) = &config.server.tls {
        if tls.handshake_timeout_ms == 0
            || tls.max_handshakes == 0
            || tls.max_handshakes_per_source == 0
        {
            return Err(
                "[server.tls] handshake_timeout_ms, max_handshakes and max_handshakes_per_source must be above 0".into(),
            );
        }
    }
    Ok(())
}

/// A `[[keys]] name`: 1-64 letters, digits, '-', '_' or '.', not starting with '.'.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

fn check_keys(keys: &[KeyConfig]) -> Result<(), String> {
    if keys.is_empty() {
        return Err("no [[keys]]: add at least one with name, label and algorithms".into());
    }
    let mut names = HashSet::new();
    for key in keys {
        if !is_key_name(&key.name) {
            return Err(format!(
                "key name {:?}: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')",
                key.name
            ));
        }
        if !names.insert(key.name.as_str()) {
            return Err(format!("key name {:?} appears twice", key.name));
        }
        match key.purpose {
            Purpose::Sign if key.algorithms.is_empty() => {
                return Err(format!(
                    "key {:?} has no algorithms: add e.g. algorithms = [\"RS256\"] (or purpose = \"decrypt\" for WK's encryption key)",
                    key.name
                ));
            }
            Purpose::Decrypt if !key.algorithms.is_empty() => {
                return Err(format!(
                    "key {:?} has purpose = \"decrypt\" and algorithms: a decrypt key never signs; remove algorithms, or use a separate key for signing",
                    key.name
                ));
            }
            _ => {}
        }
        check_operations(key)?;
    }
    Ok(())
}

/// `operations` must name something, and fit the key's purpose; `jwt_audiences` must be
/// absolute https URLs, on a key that may sign client assertions.
fn check_operations(key: &KeyConfig) -> Result<(), String> {
    if let Some(ops) = &key.operations {
        if ops.is_empty() {
            return Err(format!(
                "key {:?} has operations = []: it would serve nothing; name what it is for, e.g. operations = [\"jwt\"], or remove the line",
                key.name
            ));
        }
        let decrypt = key.purpose == Purpose::Decrypt;
        if let Some(op) = ops
            .iter()
            .find(|op| (**op == Operation::Decrypt) != decrypt)
        {
            return Err(format!(
                "key {:?} has purpose = \"{}\" and operation {:?}: a {} key cannot do that; use operations = [{}]",
                key.name,
                key.purpose,
                op.name(),
                key.purpose,
                if decrypt { "\"decrypt\"" } else { "\"sign\", \"wss\", \"saml\", \"jws\", \"jwt\" or \"xades\"" },
            ));
        }
    }
    if let Some(audiences) = &key.jwt_audiences {
        if !key.allows_operation(Operation::Jwt) {
            return Err(format!(
                "key {:?} has jwt_audiences but does not serve \"jwt\": add \"jwt\" to its operations, or remove jwt_audiences",
                key.name
            ));
        }
        if audiences.is_empty() {
            return Err(format!(
                "key {:?} has jwt_audiences = []: no client assertion could be signed; list the token endpoints, or remove the line",
                key.name
            ));
        }
        if let Some(bad) = audiences.iter().find(|a| !is_https_url(a)) {
            return Err(format!(
                "key {:?}: jwt_audiences entry {bad:?} is not an absolute https URL (such as \"https://host/path\", without user info or fragment)",
                key.name
            ));
        }
    }
    Ok(())
}

/// An absolute `https://` URL with a host, no user info, no fragment, no whitespace.
fn is_https_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    !host.is_empty()
        && !authority.contains('@')
        && !text.contains('#')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && text.parse::<hyper::Uri>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Resolved, ConfigError> {
        resolve(
            toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: "t".into(),
                message: e.to_string(),
            })?,
            Path::new("t"),
        )
    }

    const GOOD: &str = r#"
        [token]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token = "GSKO"
        pin_file = "/etc/hsm-signer/pin"
        [server]
        socket = "/run/hsm-signer/hsm-signer.sock"
        allowed_uids = [33]
        [[keys]]
        name = "epuap"
        label = "gsko-epuap"
        algorithms = ["RS256", "http://www.w3.org/2000/09/xmldsig#rsa-sha1"]
    "#;

    #[test]
    fn the_documented_example_loads() -> Result<(), ConfigError> {
        let r = parse(GOOD)?;
        assert_eq!(r.socket_mode, 0o660);
        assert_eq!(
            r.config.keys[0].algorithms,
            vec![Algorithm::Rs256, Algorithm::Rs1]
        );
        assert_eq!(r.config.server.max_body_bytes, 1024 * 1024);
        assert_eq!(r.config.server.max_xml_body_bytes, 16 * 1024 * 1024);
        assert_eq!(r.xml_in_flight(), r.sessions);
        Ok(())
    }

    #[test]
    fn a_decrypt_key_needs_no_algorithms() -> Result<(), ConfigError> {
        let text = format!(
            "{GOOD}\n[[keys]]\nname = \"wk-enc\"\nlabel = \"gsko-wk-enc\"\npurpose = \"decrypt\"\n"
        );
        let r = parse(&text)?;
        assert_eq!(r.config.keys[0].purpose, Purpose::Sign);
        assert_eq!(r.config.keys[1].purpose, Purpose::Decrypt);
        assert!(r.config.keys[1].algorithms.is_empty());
        Ok(())
    }

    #[test]
    fn reload_names_what_needs_a_restart() -> Result<(), ConfigError> {
        let running = parse(GOOD)?;
        let same = parse(&GOOD.replace("allowed_uids = [33]", "allowed_uids = [33, 0]"))?;
        assert!(needs_restart(&running, &same).is_empty());
        let moved = parse(
            &GOOD
                .replace("hsm-signer.sock", "other.sock")
                .replace("[server]", "[server]\nsocket_mode = \"0600\""),
        )?;
        assert_eq!(
            needs_restart(&running, &moved),
            vec!["[server] socket", "[server] socket_mode"]
        );
        Ok(())
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                GOOD.replace("algorithms = [\"RS256\", ", "algorithms = [\"HS256\", "),
                "unknown algorithm",
            ),
            (GOOD.replace("allowed_uids", "alowed_uids"), "alowed_uids"),
            (
                GOOD.replace("name = \"epuap\"", "name = \"../x\""),
                "key name",
            ),
            (
                GOOD.replace("[server]", "[server]\nsocket_mode = \"0666\""),
                "every local user",
            ),
            (
                GOOD.replace("pin_file = \"/etc/hsm-signer/pin\"", ""),
                "pin_file",
            ),
            (
                GOOD.replace("[server]", "[server]\nmax_connections_per_identity = 0"),
                "max_connections_per_identity",
            ),
            (
                GOOD.replace("[server]", "[server]\nwrite_timeout_ms = 0"),
                "write_timeout_ms",
            ),
            (
                GOOD.replace("[server]", "[server]\nmax_xml_in_flight = 0"),
                "max_xml_in_flight",
            ),
            (
                GOOD.replace(
                    "label = \"gsko-epuap\"",
                    "label = \"gsko-epuap\"\npurpose = \"decrypt\"",
                ),
                "a decrypt key never signs",
            ),
            (
                GOOD.replace(
                    "algorithms = [\"RS256\", \"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"]",
                    "",
                ),
                "has no algorithms",
            ),
            (
                GOOD.replace(
                    "label = \"gsko-epuap\"",
                    "label = \"gsko-epuap\"\npurpose = \"encrypt\"",
                ),
                "purpose",
            ),
        ];
        let decrypt = "label = \"gsko-epuap\"\npurpose = \"decrypt\"";
        let no_algs = "algorithms = [\"RS256\", \"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"]";
        let with_key = |extra: &str| GOOD.replace(no_algs, &format!("{no_algs}\n{extra}"));
        let cases = cases.into_iter().chain([
            (
                with_key("operations = [\"jwt\", \"oauth\"]"),
                "unknown variant `oauth`",
            ),
            (with_key("operations = []"), "operations = []"),
            (
                with_key("operations = [\"decrypt\"]"),
                "operation \"decrypt\"",
            ),
            (
                GOOD.replace(no_algs, "").replace(
                    "label = \"gsko-epuap\"",
                    &format!("{decrypt}\noperations = [\"jws\"]"),
                ),
                "operation \"jws\"",
            ),
            (
                with_key("operations = [\"jws\"]\njwt_audiences = [\"https://a.example/token\"]"),
                "does not serve \"jwt\"",
            ),
            (with_key("jwt_audiences = []"), "jwt_audiences = []"),
            (
                with_key("jwt_audiences = [\"http://a.example/token\"]"),
                "not an absolute https URL",
            ),
            (
                with_key("jwt_audiences = [\"https://\"]"),
                "not an absolute https URL",
            ),
            (
                with_key("jwt_audiences = [\"https://u@a.example/\"]"),
                "not an absolute https URL",
            ),
            (
                with_key("jwt_audiences = [\"https://a.example/#x\"]"),
                "not an absolute https URL",
            ),
            (
                with_key("jwt_audiences = [\"https://a.example/ x\"]"),
                "not an absolute https URL",
            ),
            (
                with_key("jwt_audiences = [\"/token\"]"),
                "not an absolute https URL",
            ),
        ]);
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn operations_and_audiences_limit_a_key() -> Result<(), ConfigError> {
        let text = format!(
            "{GOOD}\n[[keys]]\nname = \"ed\"\nlabel = \"gsko-ed\"\nalgorithms = [\"RS256\"]\noperations = [\"jwt\", \"jws\"]\njwt_audiences = [\"https://edoreczenia.example:8443/oauth2/token?x=1\"]\n[[keys]]\nname = \"wk-enc\"\nlabel = \"gsko-wk-enc\"\npurpose = \"decrypt\"\n"
        );
        let r = parse(&text)?;
        let (old, ed, enc) = (&r.config.keys[0], &r.config.keys[1], &r.config.keys[2]);
        use Operation::*;
        for op in [Sign, Wss, Saml, Jws, Jwt, Xades] {
            assert!(old.allows_operation(op), "{op}");
            assert!(!enc.allows_operation(op), "{op}");
        }
        assert!(!old.allows_operation(Decrypt));
        assert!(enc.allows_operation(Decrypt));
        assert!(old.allows_audience("https://anything.example/"));
        for op in [Sign, Wss, Saml, Xades, Decrypt] {
            assert!(!ed.allows_operation(op), "{op}");
        }
        assert!(ed.allows_operation(Jwt) && ed.allows_operation(Jws));
        assert!(ed.allows_audience("https://edoreczenia.example:8443/oauth2/token?x=1"));
        assert!(!ed.allows_audience("https://edoreczenia.example:8443/oauth2/token"));
        assert!(!ed.allows_audience("https://evil.example/"));
        Ok(())
    }

    #[test]
    fn a_client_name_cannot_pass_for_another_identity() {
        let pin = "ab".repeat(32);
        let with_client = |name: &str| {
            let name = toml::Value::String(name.into());
            format!("{GOOD}\n[[clients]]\nname = {name}\ncertificate_sha256 = \"{pin}\"\n")
        };
        for good in ["gsko-web1", "0", "web.1_a-b", &"a".repeat(63)] {
            assert!(parse(&with_client(good)).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "sha256:0011223344556677",
            "",
            "GSKO-web1",
            "-web1",
            ".web1",
            "web 1",
            "web1\n",
            "uid 0",
            "gsko\u{202e}1",
            &long,
        ] {
            let err = parse(&with_client(bad)).expect_err(bad).to_string();
            assert!(err.contains("use 1 to 63 of a-z"), "{bad:?}: {err}");
        }
    }
}
