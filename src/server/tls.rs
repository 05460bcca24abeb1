//! The TCP listener with mutual TLS (`[server.tls]`), for GSKO nodes on other hosts.
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 only, no OpenSSL on this path. A client
//! certificate is required and must chain to `client_ca_file`; then its SHA-256 must be
//! pinned in `[[clients]]`, which gives the caller its name: a valid chain alone admits
//! no one. Handshakes in progress are counted per source ([`super::handshakes`]). After
//! the handshake the connection goes to the [`Admission`] the Unix socket uses too, and
//! every request on it checks the certificate again against the settings in force.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::admission::Admission;
use super::conn::Recheck;
use super::handshakes::{Handshakes, Ticket};
use super::notices::{HandshakeEnd, Notices};
use super::peer::{Peer, Remote};
use crate::config::{ClientConfig, TlsConfig};

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[server.tls] {what}: {detail}")]
pub struct TlsError {
    what: String,
    detail: String,
}

fn tls_error(what: impl Into<String>, detail: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// What a reload may change: the certificates, the client CA, its CRLs and the pins.
pub struct TlsSettings {
    acceptor: TlsAcceptor,
    verifier: Arc<dyn ClientCertVerifier>,
    pins: HashMap<[u8; 32], Arc<str>>,
    handshake_timeout: Duration,
}

impl TlsSettings {
    /// Reads the files named in `config` and the pins of `clients`.
    pub fn load(config: &TlsConfig, clients: &[ClientConfig]) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&config.client_ca_file, "client_ca_file")? {
            roots.add(cert).map_err(|e| {
                tls_error(
                    format!("client_ca_file {}", config.client_ca_file.display()),
                    e,
                )
            })?;
        }
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(path) = &config.crl_file {
            builder = builder.with_crls(read_crls(path)?);
        }
        let verifier = builder.build().map_err(|e| {
            tls_error(
                "client_ca_file and crl_file",
                format!("{e} (a CRL must be X.509 v2 with a CRL Number, signed by a CA of client_ca_file)"),
            )
        })?;
        let chain = read_certs(&config.cert_file, "cert_file")?;
        let key = read_key(&config.key_file)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls_error("protocol versions", e))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain, key)
            .map_err(|e| tls_error("cert_file and key_file", e))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            verifier,
            pins: pins(clients)?,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
        })
    }

    /// These settings with the pins of `clients`: for a reload whose certificate files
    /// cannot be read, so that a client unpinned or re-pinned still loses its old
    /// certificate's connections at once.
    pub fn repinned(&self, clients: &[ClientConfig]) -> Result<Self, TlsError> {
        Ok(Self {
            acceptor: self.acceptor.clone(),
            verifier: self.verifier.clone(),
            pins: pins(clients)?,
            handshake_timeout: self.handshake_timeout,
        })
    }

    /// The peer a verified client certificate stands for: its pinned name, or an
    /// unpinned fingerprint (which no rule admits).
    fn peer(&self, cert: &CertificateDer<'_>) -> Peer {
        let digest = openssl::sha::sha256(cert.as_ref());
        let client = match self.pins.get(&digest) {
            Some(name) => name.clone(),
            None => Arc::from(format!("sha256:{}", &hex::encode(digest)[..16])),
        };
        Peer::Remote(Remote { client })
    }

    /// Does the certificate chain a connection was made with still stand for `peer`
    /// under these settings: within its validity now, chaining to the current client CA,
    /// not revoked by the current CRLs, and pinned under the same name? The reason if not.
    fn still(&self, chain: &[CertificateDer<'static>], peer: &Peer) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| format!("its certificate no longer verifies ({e})"))?;
        match self.peer(leaf) {
            now if now == *peer => Ok(()),
            Peer::Remote(r) if r.client.starts_with("sha256:") => {
                Err("its certificate is no longer pinned in [[clients]]".into())
            }
            now => Err(format!(
                "its certificate is now pinned as {}",
                now.describe()
            )),
        }
    }
}

/// The name each pinned certificate's SHA-256 stands for.
fn pins(clients: &[ClientConfig]) -> Result<HashMap<[u8; 32], Arc<str>>, TlsError> {
    let mut pins = HashMap::new();
    for client in clients {
        let hex_pin = client
            .certificate_sha256
            .to_ascii_lowercase()
            .replace(':', "");
        let mut pin = [0u8; 32];
        hex::decode_to_slice(&hex_pin, &mut pin)
            .map_err(|e| tls_error(format!("[[clients]] {:?}", client.name), e))?;
        pins.insert(pin, Arc::from(client.name.as_str()));
    }
    Ok(pins)
}

/// Reads `crl_file`: PEM (one or more `X509 CRL` blocks) or a single DER CRL.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let context = || format!("crl_file {}", path.display());
    let bytes = std::fs::read(path).map_err(|e| tls_error(context(), e))?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_error(context(), e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(tls_error(context(), "no PEM CRL in the file"));
    }
    Ok(crls)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let context = || format!("{what} {}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(context(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(context(), e))?;
    if certs.is_empty() {
        return Err(tls_error(context(), "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let context = || format!("key_file {}", path.display());
    let mode = std::fs::metadata(path)
        .map_err(|e| tls_error(context(), e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o027 != 0 {
        return Err(tls_error(
            context(),
            format!("mode {mode:04o}: others may read or change the server's key; chmod 0600"),
        ));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(context(), e))
}

/// The TLS settings in force, swapped whole on reload.
pub type Shared = Arc<RwLock<Arc<TlsSettings>>>;

/// Binds `config.listen`.
pub async fn bind(config: &TlsConfig) -> Result<TcpListener, TlsError> {
    TcpListener::bind(&config.listen)
        .await
        .map_err(|e| tls_error(format!("listen {}", config.listen), e))
}

/// How many handshakes may be in progress (`[server.tls]`).
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// `max_handshakes`.
    pub max: usize,
    /// `max_handshakes_per_source`.
    pub per_source: usize,
}

impl HandshakeLimits {
    /// The limits `config` sets.
    pub fn of(config: &TlsConfig) -> Self {
        Self {
            max: config.max_handshakes,
            per_source: config.max_handshakes_per_source,
        }
    }
}

/// Accepts TCP connections until `stop` fires, each through a handshake counted for its
/// source ([`Handshakes`]) and cut off after its timeout; then the client's pinned name
/// is its peer, and the connection goes to `admission`, shared with the Unix socket.
pub async fn serve(
    listener: TcpListener,
    settings: Shared,
    limits: HandshakeLimits,
    admission: Arc<Admission>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let handshakes = Handshakes::new(limits.max, limits.per_source);
    loop {
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    admission.notices().accept_failed("TLS", &e);
                    tokio::time::sleep(super::listener::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let source = super::handshakes::source(address.ip());
        let Some(ticket) = handshakes.begin(source) else {
            admission.notices().handshake(source, HandshakeEnd::Refused);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let current = settings.read().expect("tls settings lock").clone();
        let watcher = graceful.watcher();
        let (settings, admission) = (settings.clone(), admission.clone());
        tokio::spawn(async move {
            let Some(stream) = handshake(tcp, &current, ticket, admission.notices()).await else {
                return;
            };
            let chain: Vec<CertificateDer<'static>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let Some(cert) = chain.first() else {
                return;
            };
            let peer = current.peer(cert);
            let recheck = recheck(settings, chain, peer.clone(), admission.clone(), address);
            admission.serve(stream, peer, Some(recheck), watcher);
        });
    }
    admission.notices().flush();
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "TLS requests still running after the grace period; stopping anyway"
        );
    }
}

/// The handshake of `tcp` under `settings`, within its timeout and until `ticket` is
/// aborted to make room; an end without a connection is counted in `notices`.
async fn handshake(
    tcp: tokio::net::TcpStream,
    settings: &TlsSettings,
    mut ticket: Ticket,
    notices: &Notices,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(settings.handshake_timeout, settings.acceptor.accept(tcp)) => accepted,
        _ = &mut ticket.aborted => {
            notices.handshake(ticket.source(), HandshakeEnd::Aborted);
            return None;
        }
    };
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(source = %ticket.source(), error = %e, "TLS handshake refused");
            notices.handshake(ticket.source(), HandshakeEnd::Failed);
            None
        }
        Err(_) => {
            notices.handshake(ticket.source(), HandshakeEnd::TimedOut);
            None
        }
    }
}

/// The check before each request on a TLS connection: the certificate it was made with
/// must still stand for `peer` under the settings in force now (a reload may have
/// unpinned or re-pinned it, a CRL revoked it, or it may have expired). A refusal is
/// logged and audited as `refused_peer`; the connection closes after the 403, so each
/// connection is refused this way at most once.
fn recheck(
    settings: Shared,
    chain: Vec<CertificateDer<'static>>,
    peer: Peer,
    admission: Arc<Admission>,
    address: std::net::SocketAddr,
) -> Recheck {
    Arc::new(move || {
        let current = settings.read().expect("tls settings lock").clone();
        let Err(reason) = current.still(&chain, &peer) else {
            return Ok(());
        };
        admission
            .notices()
            .refused_on_open_connection(&peer, address, &reason);
        Err(super::error::ApiError::forbidden(format!(
            "{} may no longer use this daemon: {reason}; the connection closes",
            peer.describe()
        )))
    })
}
