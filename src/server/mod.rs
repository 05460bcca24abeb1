//! `hsm-signer serve`: the daemon. The request path follows the modules:
//! [`listener`] (socket, peer credentials) or [`tls`] (handshake, pinned name) →
//! [`admission`] (limits, shared by both) → [`conn`] (one connection) → [`routes`] (HTTP,
//! JSON) → [`policy`] (who may use which key) → [`crate::signer`] (queue, session,
//! signature) → [`error`] (statuses), with [`crate::audit`], [`metrics`] and [`health`]
//! beside it.

pub mod admission;
mod audited;
mod body;
pub mod checkpoints;
pub mod conn;
mod conn_io;
mod decrypt_route;
pub mod error;
#[doc(hidden)]
pub mod fold;
pub mod handshakes;
pub mod health;
pub mod health_report;
mod jwk_route;
mod jws_route;
mod jwt_route;
mod keys_route;
pub mod listener;
pub mod metrics;
mod metrics_route;
pub mod notices;
pub mod peer;
pub mod policy;
pub mod protection;
pub mod request;
pub mod routes;
pub mod sign_route;
pub mod state;
pub mod tls;
mod token_call;
mod xades_route;
mod xml_form;
mod xml_routes;
mod xml_threads;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{AuditError, AuditLog};
use crate::config::{self, ConfigError, Resolved};
use crate::secret::SecretError;
use crate::signer::{KeyWant, Signer, SignerSettings};
use crate::token::TokenError;
pub use routes::app;
pub use state::AppState;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The PIN file.
    #[error(transparent)]
    Pin(#[from] SecretError),
    /// The token: module, token, PIN (tried once), keys.
    #[error("cannot start: {0}")]
    Token(#[from] TokenError),
    /// The socket.
    #[error(transparent)]
    Socket(#[from] listener::SocketError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Process set-up.
    #[error("cannot start: {0}")]
    Setup(String),
    /// The TLS listener.
    #[error("cannot start: {0}")]
    Tls(#[from] tls::TlsError),
    /// A configured key could leave the token, and the configuration refuses that.
    #[error("cannot start: {0}")]
    ExtractableKeys(String),
}

fn wants(config: &Resolved) -> Vec<KeyWant> {
    let keys = config.config.keys.iter().map(|k| KeyWant {
        label: k.label.clone(),
        algorithms: k.algorithms.clone(),
        purpose: k.purpose,
    });
    // The checkpoint key is loaded like the others but no [[keys]] name reaches it.
    let checkpoint = config
        .config
        .audit
        .checkpoint_key_label
        .iter()
        .map(|label| KeyWant {
            label: label.clone(),
            algorithms: vec![crate::audit::checkpoint::ALGORITHM],
            purpose: crate::config::Purpose::Sign,
        });
    keys.chain(checkpoint).collect()
}

/// Reads the protection of the configured keys ([`protection`]) and warns about each
/// that could leave the token; an error when `refuse_extractable_keys` refuses one.
/// `None` when the token cannot be read now (health reads it once it can).
fn read_protections(config: &Resolved) -> Result<Option<protection::Protections>, ServeError> {
    let labels: Vec<String> = config.config.keys.iter().map(|k| k.label.clone()).collect();
    let found = match protection::inspect(&config.module, &config.selector, &labels) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read CKA_EXTRACTABLE of the keys now; health shows it once the token answers");
            return Ok(None);
        }
    };
    let leaving = protection::leaving(
        config
            .config
            .keys
            .iter()
            .map(|k| (k.name.as_str(), k.label.as_str())),
        &found,
    );
    if !leaving.is_empty() && config.config.server.refuse_extractable_keys {
        return Err(ServeError::ExtractableKeys(protection::refusal(&leaving)));
    }
    for key in &leaving {
        tracing::warn!("{key}: the key could leave the token (verify refuses it); serving it because refuse_extractable_keys is false. See docs/tpm.md");
    }
    Ok(Some(found))
}

/// The runtime that serves HTTP: half the CPUs (at least one) as workers, the other half
/// left to the token calls on the blocking pool. A worker woken by a finished token call
/// then rarely wakes an idle sibling to look for work it will not find: on 2 cores, one
/// worker instead of two cut the context switches of an ES256 request from about 6.5 to
/// 4.7 and its hand-off cost by a fifth (docs/architecture.md, "Cutting the cost").
pub(crate) fn http_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cpus / 2).max(1))
        .enable_all()
        .thread_name("http")
        .build()
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(config_path: &Path) -> Result<(), ServeError> {
    let started = Instant::now();
    let config = config::load(config_path)?;
    crate::hardening::apply().map_err(ServeError::Setup)?;
    let runtime = http_runtime().map_err(|e| ServeError::Setup(e.to_string()))?;
    // Before the token login and the socket: a SIGHUP (systemctl reload, logrotate) sent
    // at any moment of the start must reload, not kill the daemon (SIGHUP's default).
    let signals = {
        let _inside = runtime.enter();
        Signals::install()
            .map_err(|e| ServeError::Setup(format!("cannot install signal handlers: {e}")))?
    };
    let pin = crate::secret::read_daemon_file(&config.pin_file, "token PIN")?;
    crate::token::softhsm::warn_if_pin_beside_tokens(
        &config.module,
        &config.pin_file,
        config.config.token.allow_softhsm_in_production,
    );
    let metrics = metrics::Metrics::default();
    let signer = Signer::start(SignerSettings {
        module: config.module.clone(),
        selector: config.selector.clone(),
        pin,
        wants: wants(&config),
        sessions: config.sessions,
        queue_depth: config.config.server.queue_depth,
        counters: metrics.token_calls.clone(),
    })?;
    let protections = read_protections(&config)?;
    let (audit, audit_thread) = match &config.config.audit.file {
        Some(path) => {
            let (log, thread) = AuditLog::open(path, config.config.audit.on_failure)?;
            (Some(log), Some(thread))
        }
        None => {
            tracing::warn!("no [audit] file configured: signing requests are not recorded");
            (None, None)
        }
    };
    let checkpoints = match (&audit, &config.config.audit.checkpoint_key_label) {
        (Some(log), Some(label)) => Some(checkpoints::Checkpoints::start(
            log.clone(),
            signer.clone(),
            label.clone(),
            Duration::from_secs(config.config.audit.checkpoint_interval_s),
        )),
        _ => None,
    };
    let state = Arc::new(AppState::new(
        Arc::new(signer.clone()),
        audit.clone(),
        metrics,
        &config,
    ));
    if let Some(found) = protections {
        state.set_protections(found);
    }
    runtime.block_on(run(config, state.clone(), signals, started))?;
    // The last checkpoint covers every request answered, before the token goes away.
    if let Some(checkpoints) = checkpoints {
        checkpoints.stop();
    }
    signer.stop();
    // A token call that never returned must not hold the exit for ever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(state);
    if let (Some(log), Some(thread)) = (audit, audit_thread) {
        log.close();
        // Bounded: a sync stuck on a hung disk must not hold the exit.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run(
    config: Resolved,
    state: Arc<AppState>,
    signals: Signals,
    started: Instant,
) -> Result<(), ServeError> {
    let server = &config.config.server;
    let (listener, activated) = match listener::inherited()? {
        Some(inherited) => (inherited, true),
        None => (
            listener::bind(
                &server.socket,
                config.socket_mode,
                server.socket_group.as_deref(),
            )?,
            false,
        ),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let policy = state.clone();
    let admission = admission::Admission::new(
        app(state.clone()),
        listener::ConnLimits::of(&config),
        Arc::new(move |peer| policy.policy().admits(peer)),
        state.audit.clone(),
    );
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    let (tls_settings, tls_serving) = match &server.tls {
        None => (None, None),
        Some(tls_config) => {
            let settings: tls::Shared = Arc::new(std::sync::RwLock::new(Arc::new(
                tls::TlsSettings::load(tls_config, &config.config.clients)?,
            )));
            let tcp = tls::bind(tls_config).await?;
            let address = tcp
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| tls_config.listen.clone());
            tracing::info!(%address, clients = config.config.clients.len(), "TLS listener ready (mutual TLS, pinned clients)");
            let serving = tokio::spawn(tls::serve(
                tcp,
                settings.clone(),
                tls::HandshakeLimits::of(tls_config),
                admission.clone(),
                stop_rx.clone(),
                grace,
            ));
            (Some(settings), Some(serving))
        }
    };
    tracing::info!(
        socket = %server.socket.display(),
        activated,
        sessions = config.sessions,
        keys = config.config.keys.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let serving = tokio::spawn(listener::serve(listener, admission, stop_rx, grace));
    let health = tokio::spawn(health::run_periodic(state.clone()));
    signals.wait(&config, &state, tls_settings.as_ref()).await;
    health.abort();
    let _ = stop_tx.send(true);
    let _ = serving.await;
    if let Some(tls_serving) = tls_serving {
        let _ = tls_serving.await;
    }
    // An inherited socket is systemd's: it outlives us so callers wait for the restart.
    if !activated {
        if let Err(e) = std::fs::remove_file(&server.socket) {
            tracing::warn!(error = %e, "could not remove the socket");
        }
    }
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP, caught from before the socket is bound; and SIGXFSZ,
/// caught and never acted on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// A write past RLIMIT_FSIZE (`LimitFSIZE=`, `prlimit --fsize`) raises SIGXFSZ, whose
    /// default action kills the daemon. Caught, the write fails with EFBIG instead, and
    /// the audit log fails closed (503 `audit_unavailable`) as on a full disk, until the
    /// limit is lifted. Kept only so that the handler is installed; never read.
    _xfsz: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            _xfsz: signal(SignalKind::from_raw(nix::libc::SIGXFSZ))?,
        })
    }

    /// Waits for SIGTERM/SIGINT, reloading on every SIGHUP meanwhile.
    async fn wait(mut self, config: &Resolved, state: &Arc<AppState>, tls: Option<&tls::Shared>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => reload(config, state, tls).await,
            }
        }
        tracing::info!("stopping: finishing requests in flight");
    }
}

/// Reloads the configuration with the same loader as at start. Access rules (who may
/// use the daemon and each key, algorithms) take effect at once, whether or not the
/// token answers: revoking access must not wait for the HSM. Keys are then looked up on
/// the token, all or none: when one cannot be found, the new keys stay pending (503
/// `key_unavailable`) and nothing looks for them again until the next reload (the
/// supervisor rechecks only keys a connection marked missing); when the token was down,
/// the reconnect loads them. The audit file is reopened (logrotate's `create`).
async fn reload(running: &Resolved, state: &Arc<AppState>, tls: Option<&tls::Shared>) {
    let new = match config::load(&running.path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
            return;
        }
    };
    let read = {
        let new = new.clone();
        tokio::task::spawn_blocking(move || read_protections(&new))
    };
    match tokio::time::timeout(KEYS_WAIT, read).await {
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
            return;
        }
        Ok(Ok(Ok(Some(found)))) => state.set_protections(found),
        _ => {}
    }
    let ignored = config::needs_restart(running, &new);
    if !ignored.is_empty() {
        tracing::warn!(settings = ?ignored, "these changes need a restart and are not applied; applying the rest");
    }
    // The TLS side first: a pin removed must not outlive the rule that named it.
    if let (Some(shared), Some(tls_config)) = (tls, &new.config.server.tls) {
        let loaded = tls::TlsSettings::load(tls_config, &new.config.clients).or_else(|e| {
            tracing::error!(error = %e, "TLS certificates, client CA or CRLs not reloaded; new connections use the previous ones, under the new [[clients]] pins and rules");
            let running = shared.read().expect("tls settings lock").clone();
            running.repinned(&new.config.clients)
        });
        match loaded {
            Ok(settings) => *shared.write().expect("tls settings lock") = Arc::new(settings),
            Err(e) => tracing::error!(error = %e, "[[clients]] pins not reloaded"),
        }
    }
    // The keys first, so that a request under the new rules finds its key loaded; but
    // access rules never wait long for the token: after KEYS_WAIT (or at once while it is
    // down) they apply, and keys that are not found stay pending (503 key_unavailable)
    // until the next reload, or the reconnect when the token was down.
    let signer = state.signer.clone();
    let wants = wants(&new);
    let loading = tokio::task::spawn_blocking(move || signer.reload_keys(wants));
    match tokio::time::timeout(KEYS_WAIT, loading).await {
        Ok(Ok(Ok(()))) => tracing::info!("keys loaded from the token"),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "keys of the new configuration are pending: requests for them get 503 key_unavailable until they are found on the token")
        }
        Ok(Err(e)) => tracing::error!(error = %e, "loading the keys failed"),
        Err(_) => tracing::error!(
            "the token did not answer within {KEYS_WAIT:?}; applying the access rules now, keys stay pending"
        ),
    }
    state.apply(&new);
    tracing::info!(
        keys = new.config.keys.len(),
        "configuration reloaded: access rules in force"
    );
    if let Some(audit) = state.audit.clone() {
        let reopened = tokio::task::spawn_blocking(move || audit.reopen());
        if tokio::time::timeout(Duration::from_secs(2), reopened)
            .await
            .is_err()
        {
            tracing::error!("the audit log could not be reopened in time (a write is stuck)");
        }
    }
}

/// The longest a reload waits for the token before it applies the new access rules.
const KEYS_WAIT: Duration = Duration::from_secs(2);
