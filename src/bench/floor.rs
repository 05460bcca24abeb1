//! `hsm-signer bench floor` (hidden): the daemon's real router, listener and audit log
//! with the [`NullSigner`] behind them, on a Unix socket. What a request costs here is
//! the daemon's floor: the same HTTP/JSON exchange, hashing, XML work and audit record,
//! with no token call and no hand-off to another thread. `scripts/bench` drives it with
//! `bench daemon`, the same client it drives the daemon with, in the same run.
//!
//! Bench-only: it takes no configuration file, and nothing in `serve` can reach it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditLog, OnFailure};
use crate::server::{admission, app, http_runtime, listener, metrics, AppState, ServeError};
use crate::signer::null::NullSigner;

/// The key names and labels of the floor, as `scripts/bench` configures the daemon.
const KEYS: &str = r#"
[[keys]]
name = "rsa"
label = "bench-rsa"
algorithms = ["RS256"]
[[keys]]
name = "ec"
label = "bench-ec"
algorithms = ["ES256"]
"#;

/// Serves the floor on `socket`, recording to `audit`, until SIGTERM or SIGINT. With
/// `hand_off`, each job runs on tokio's blocking pool as the daemon runs its token calls
/// (the floor plus the hand-off, still with no token).
pub fn run(socket: &Path, audit: &Path, hand_off: bool) -> Result<(), ServeError> {
    let dir = audit
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config_path = dir.join(format!(
        "floor-config-{}.toml",
        socket
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("floor")
    ));
    let text = format!(
        "[token]\nmodule = \"/nonexistent/null-signer.so\"\ntoken = \"null\"\npin_file = \"/nonexistent/pin\"\n[server]\nsocket = {socket:?}\nsocket_mode = \"0600\"\nqueue_depth = 1024\n[audit]\nfile = {audit:?}\n{KEYS}",
        socket = socket.display().to_string(),
        audit = audit.display().to_string(),
    );
    std::fs::write(&config_path, text)
        .map_err(|e| ServeError::Setup(format!("{}: {e}", config_path.display())))?;
    let config = crate::config::load(&config_path)?;
    let signer = NullSigner::new()
        .with_rsa("bench-rsa")
        .and_then(|s| s.with_ec("bench-ec"))
        .map_err(|e| ServeError::Setup(format!("making the null signer's keys: {e}")))?;
    let signer = if hand_off {
        signer.handing_off()
    } else {
        signer
    };
    let runtime = http_runtime().map_err(|e| ServeError::Setup(e.to_string()))?;
    let (log, sync_thread) = AuditLog::open(audit, OnFailure::Refuse)?;
    let signer = Arc::new(signer);
    let state = Arc::new(AppState::new(
        signer.clone(),
        Some(log.clone()),
        metrics::Metrics::default(),
        &config,
    ));
    runtime.block_on(async {
        let listener = listener::bind(socket, config.socket_mode, None)?;
        let policy = state.clone();
        let admission = admission::Admission::new(
            app(state.clone()),
            listener::ConnLimits::of(&config),
            Arc::new(move |peer| policy.policy().admits(peer)),
            state.audit.clone(),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(listener::serve(
            listener,
            admission,
            stop_rx,
            Duration::from_millis(500),
        ));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| ServeError::Setup(format!("signal handler: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| ServeError::Setup(format!("signal handler: {e}")))?;
        eprintln!("floor: serving the null signer on {}", socket.display());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        let _ = serving.await;
        let _ = std::fs::remove_file(socket);
        Ok::<(), ServeError>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(state);
    log.close();
    let _ = sync_thread.join();
    eprintln!(
        "floor: stopped; {} signature(s) computed in software, the rest answered from the last one",
        signer.computed()
    );
    Ok(())
}
