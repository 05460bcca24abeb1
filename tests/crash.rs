//! A crash inside the PKCS#11 module (a vendor library bug) must not take the service
//! down for good (issue 5). With systemd socket activation the listening socket belongs
//! to systemd, not to the daemon: when the daemon dies, callers' connections wait in the
//! socket's accept backlog and are served by the restarted daemon.
//!
//! The test stands in for systemd without `unsafe`: `systemd-socket-activate` (Debian
//! package systemd) binds the socket and passes it as fd 3 with LISTEN_FDS/LISTEN_PID to
//! a shell loop that restarts the daemon whenever it exits, as `Restart=always` does.
//! Under load from 4 clients the daemon is killed with SIGSEGV, three times; every
//! request that started once the old daemon was dead must succeed, signing must be back
//! within 1 s of each crash, and no signature may be wrong.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{provision, Daemon};
use common::*;
use hsm_signer::client::ClientError;

use crate::common::daemon::EPUAP;

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// systemd's part: `Restart=always` with `RestartSec=100ms`, and
/// `RestartPreventExitStatus=78` (a refused PIN must not be retried). The inner shell
/// sets LISTEN_PID to its own pid, which `exec` hands on to the daemon.
const SUPERVISOR: &str = r#"bin=$1; config=$2
while :; do
    sh -c 'LISTEN_PID=$$ exec "$0" -v serve --config "$1"' "$bin" "$config"
    status=$?
    echo "supervisor: hsm-signer exited with status $status" >&2
    [ "$status" -eq 78 ] && exit 78
    sleep 0.1
done"#;

/// `systemd-socket-activate` and the restart loop, in a process group of their own.
struct Supervisor {
    child: Child,
    log: PathBuf,
}

impl Supervisor {
    fn start(token: &TestToken, socket: &Path, config: &Path) -> Result<Self> {
        let log = token.path("supervisor.log");
        let _ = std::fs::remove_file(socket);
        let child = Command::new(ACTIVATE)
            .arg("--listen")
            .arg(socket)
            // systemd-socket-activate passes on only the variables named here.
            .arg(format!("--setenv=SOFTHSM2_CONF={}", token.conf.display()))
            .args(["--setenv=PATH", "sh", "-c", SUPERVISOR, "supervisor"])
            .arg(env!("CARGO_BIN_EXE_hsm-signer"))
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .process_group(0)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(format!("{ACTIVATE} did not create the socket").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self { child, log })
    }

    /// The running daemon's pid: the supervisor's child that is hsm-signer.
    fn daemon_pid(&self) -> Option<u32> {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .find(|c: &u32| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|comm| comm.trim() == "hsm-signer")
            })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// True once `pid` has exited: gone, or a zombie (its threads and descriptors are gone).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Kills `pid` with SIGSEGV as a fault in the PKCS#11 module would. Rust's runtime
/// handles SIGSEGV to report stack overflows: for any other SIGSEGV its handler restores
/// the default action and returns, so a real fault re-faults at once and the process
/// dies, while a SIGSEGV from kill(2) is swallowed once. Hence a second one, if needed.
fn segfault(pid: u32) -> Result {
    run_ok(Command::new("kill").args(["-SEGV", &pid.to_string()]))?;
    let sent = Instant::now();
    while sent.elapsed() < Duration::from_millis(20) {
        if is_dead(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    run_ok(Command::new("kill").args(["-SEGV", &pid.to_string()]))?;
    Ok(())
}

/// One request as a caller saw it.
#[derive(Debug)]
struct Call {
    started: Instant,
    took: Duration,
    /// Ok(verified) or what went wrong.
    outcome: std::result::Result<bool, String>,
}

#[test]
fn a_crashed_daemon_is_restarted_on_the_same_socket_and_callers_wait_instead_of_failing() -> Result
{
    const CLIENTS: usize = 4;
    const CRASHES: usize = 3;
    if !Path::new(ACTIVATE).exists() {
        return Err(format!("{ACTIVATE} missing: apt-get install systemd").into());
    }
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let socket = token.path("hsm-signer.sock");
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &[EPUAP], ""))?;
    let supervisor = Supervisor::start(&token, &socket, &config)?;
    let public = leaves[0].cert.public_key()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The first connection makes systemd-socket-activate start the daemon.
    runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(15),
                hsm_signer::client::sign(
                    &hsm_signer::client::Endpoint::Unix(socket.to_path_buf()),
                    "epuap",
                    "RS256",
                    b"first",
                    false,
                    None,
                ),
            )
            .await
        })
        .map_err(|_| format!("no first signature: {}", supervisor.log_text()))??;

    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (stop, calls, socket, public) =
            (stop.clone(), calls.clone(), socket.clone(), public.clone());
        clients.push(runtime.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let data = format!("<ds:SignedInfo client=\"{client}\" n=\"{n}\"/>");
                let started = Instant::now();
                let result = tokio::time::timeout(
                    Duration::from_secs(10),
                    hsm_signer::client::sign(
                        &hsm_signer::client::Endpoint::Unix(socket.to_path_buf()),
                        "epuap",
                        "RS256",
                        data.as_bytes(),
                        false,
                        None,
                    ),
                )
                .await;
                let outcome = match result {
                    Err(_) => Err("no answer within 10 s".to_string()),
                    Ok(Err(ClientError::Refused { status, code, .. })) => {
                        Err(format!("{status} {code}"))
                    }
                    Ok(Err(other)) => Err(other.to_string()),
                    Ok(Ok(signature)) => Ok(openssl::sign::Verifier::new(
                        openssl::hash::MessageDigest::sha256(),
                        &public,
                    )
                    .and_then(|mut v| v.verify_oneshot(&signature, data.as_bytes()))
                    .unwrap_or(false)),
                };
                let failed = outcome.is_err();
                calls.lock().expect("calls").push(Call {
                    started,
                    took: started.elapsed(),
                    outcome,
                });
                if failed {
                    // A caller's retry, as GSKO's HTTP client would after a reset.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }

    // (when SIGSEGV was sent, when the old daemon was seen dead, its pid)
    let mut crashes = Vec::new();
    for _ in 0..CRASHES {
        std::thread::sleep(Duration::from_millis(1000));
        let pid = supervisor
            .daemon_pid()
            .ok_or_else(|| format!("no daemon running: {}", supervisor.log_text()))?;
        let killed_at = Instant::now();
        segfault(pid)?;
        while !is_dead(pid) {
            if killed_at.elapsed() > Duration::from_secs(5) {
                return Err(format!("daemon {pid} still alive 5 s after SIGSEGV").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        crashes.push((killed_at, Instant::now(), pid));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        runtime.block_on(client)?;
    }

    let calls = calls.lock().expect("calls");
    let ok = calls.iter().filter(|c| c.outcome == Ok(true)).count();
    let wrong: Vec<&Call> = calls.iter().filter(|c| c.outcome == Ok(false)).collect();
    let failed: Vec<&Call> = calls.iter().filter(|c| c.outcome.is_err()).collect();
    let longest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    let mut report = Vec::new();
    for (i, (killed_at, dead_at, pid)) in crashes.iter().enumerate() {
        let next = crashes.get(i + 1).map(|c| c.0);
        let in_window = |c: &&Call| c.started >= *dead_at && next.is_none_or(|n| c.started < n);
        // Requests started once the old daemon was dead: queued in the backlog, or later.
        let after: Vec<&Call> = calls.iter().filter(in_window).collect();
        let first_ok = after
            .iter()
            .filter(|c| c.outcome == Ok(true))
            .map(|c| c.started + c.took)
            .min()
            .ok_or_else(|| {
                format!(
                    "no signature after crash {}: {}",
                    i + 1,
                    supervisor.log_text()
                )
            })?;
        let back_in = first_ok - *killed_at;
        let queued = after.iter().filter(|c| c.started < first_ok).count();
        let failed_after: Vec<&&Call> = after.iter().filter(|c| c.outcome.is_err()).collect();
        let failed_at_crash = failed
            .iter()
            .filter(|c| c.started < *dead_at && c.started + c.took >= *killed_at)
            .count();
        report.push(format!(
            "crash {} (pid {pid}): dead {:?} after SIGSEGV, signing again {back_in:?} after it; {queued} requests waited in the backlog and were served; {failed_at_crash} in flight at the crash failed; {} failed afterwards",
            i + 1,
            *dead_at - *killed_at,
            failed_after.len(),
        ));
        assert!(
            failed_after.is_empty(),
            "requests started after crash {} failed: {:?}",
            i + 1,
            failed_after
        );
        assert!(
            back_in < Duration::from_secs(1),
            "signing came back {back_in:?} after crash {}, not within 1 s",
            i + 1
        );
        assert!(
            queued > 0,
            "no request waited through crash {}: did the restart really leave a gap?",
            i + 1
        );
    }
    let failures: Vec<&str> = failed
        .iter()
        .filter_map(|c| c.outcome.as_ref().err().map(String::as_str))
        .collect();
    eprintln!(
        "crash: {} requests from {CLIENTS} clients through {CRASHES} SIGSEGVs: {ok} succeeded, {} failed, {} wrong; longest wait {longest:?}",
        calls.len(),
        failed.len(),
        wrong.len()
    );
    for line in &report {
        eprintln!("crash: {line}");
    }
    eprintln!("crash: failures: {failures:?}");
    assert!(wrong.is_empty(), "signatures that did not verify");
    // Only the request a client had in flight at a crash can fail: its connection dies
    // with the daemon.
    assert!(
        failed.len() <= CLIENTS * CRASHES,
        "{} failures for {CRASHES} crashes of {CLIENTS} clients: {failures:?}",
        failed.len()
    );
    assert!(
        failures
            .iter()
            .all(|f| !f.starts_with('5') && !f.starts_with('4')),
        "the daemon answered with an error status: {failures:?}"
    );
    let restarts = supervisor
        .log_text()
        .lines()
        .filter(|l| l.starts_with("supervisor: hsm-signer exited with status 139"))
        .count();
    assert_eq!(
        restarts,
        CRASHES,
        "the supervisor saw {restarts} exits: {}",
        supervisor.log_text()
    );
    Ok(())
}
