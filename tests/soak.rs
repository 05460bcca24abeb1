//! Load and exhaustion, bounded in time and count, over the daemon's Unix socket (issue 5):
//! sustained signing from 8 clients with the daemon's memory and file descriptors sampled;
//! 1,000 idle connections and a slowloris client, while another caller's signatures keep
//! their normal latency. Every signature is verified against the certificate in-process.
//!
//! The figures (samples, latencies) go to standard error for the closing note:
//! `cargo test --test tests soak:: -- --nocapture`.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{provision, Daemon};
use common::*;
use hsm_signer::client::ClientError;
use openssl::pkey::{PKey, Public};

use crate::common::daemon::EPUAP;

/// The daemon's resident memory in KiB (VmRSS).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/PID/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad VmRSS line")?
        .parse()?)
}

/// The daemon's open file descriptors. The daemon is not dumpable, so this needs root
/// (CAP_SYS_PTRACE), as scripts/test runs.
fn fd_count(pid: u32) -> Result<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("cannot list /proc/{pid}/fd ({e}): run the tests as root"))?;
    Ok(dir.count())
}

/// One signature of `data`, verified against `public`; the time it took.
async fn sign_once(
    socket: &Path,
    public: &PKey<Public>,
    data: &[u8],
) -> (std::result::Result<bool, ClientError>, Duration) {
    let started = Instant::now();
    let result = hsm_signer::client::sign(
        &hsm_signer::client::Endpoint::Unix(socket.to_path_buf()),
        "epuap",
        "RS256",
        data,
        false,
        None,
    )
    .await;
    let took = started.elapsed();
    let verified = result.map(|signature| {
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), public)
            .and_then(|mut v| v.verify_oneshot(&signature, data))
            .unwrap_or(false)
    });
    (verified, took)
}

/// What the callers saw.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    wrong_signatures: u64,
    /// Non-200 answers by status and code.
    refused: BTreeMap<(u16, String), u64>,
    /// Failures without an HTTP answer.
    transport: Vec<String>,
}

impl Tally {
    fn record(&mut self, result: std::result::Result<bool, ClientError>) {
        match result {
            Ok(true) => self.ok += 1,
            Ok(false) => self.wrong_signatures += 1,
            Err(ClientError::Refused { status, code, .. }) => {
                *self.refused.entry((status, code)).or_default() += 1
            }
            Err(other) => self.transport.push(other.to_string()),
        }
    }

    fn total(&self) -> u64 {
        self.ok
            + self.wrong_signatures
            + self.refused.values().sum::<u64>()
            + self.transport.len() as u64
    }
}

/// One daemon sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
}

#[test]
fn sustained_load_keeps_memory_and_descriptors_flat_and_every_signature_right() -> Result {
    const CLIENTS: usize = 8;
    const RUN: Duration = Duration::from_secs(15);
    // Allocator arenas, session buffers and tokio's task slabs settle in the first seconds.
    const WARM_UP: usize = 3;
    const RSS_BOUND_KIB: u64 = 8 * 1024;

    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    let pid = daemon.pid();
    let public = leaves[0].cert.public_key()?;
    let idle_fds = fd_count(pid)?;
    let idle_rss = rss_kib(pid)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (tally, socket, public) = (tally.clone(), daemon.socket.clone(), public.clone());
        clients.push(runtime.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < RUN {
                n += 1;
                let data = format!("<ds:SignedInfo client=\"{client}\" n=\"{n}\"/>");
                let (result, _) = sign_once(&socket, &public, data.as_bytes()).await;
                tally.lock().expect("tally").record(result);
            }
        }));
    }
    let mut samples = Vec::new();
    for second in 1..=RUN.as_secs() {
        std::thread::sleep(
            (started + Duration::from_secs(second)).saturating_duration_since(Instant::now()),
        );
        samples.push(Sample {
            at: started.elapsed(),
            rss_kib: rss_kib(pid)?,
            fds: fd_count(pid)?,
        });
    }
    for client in clients {
        runtime.block_on(client)?;
    }
    let elapsed = started.elapsed();
    // Connections close as the clients finish; give the daemon a moment to see it.
    let mut after_fds = fd_count(pid)?;
    let settle = Instant::now();
    while after_fds > idle_fds && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        after_fds = fd_count(pid)?;
    }
    let after_rss = rss_kib(pid)?;

    let t = tally.lock().expect("tally");
    eprintln!(
        "soak: {CLIENTS} clients for {elapsed:?}: {} requests, {} ok ({:.0}/s), {} wrong, refused {:?}, transport errors {}",
        t.total(),
        t.ok,
        t.ok as f64 / elapsed.as_secs_f64(),
        t.wrong_signatures,
        t.refused,
        t.transport.len()
    );
    eprintln!("soak: idle before: RSS {idle_rss} KiB, {idle_fds} fds");
    for s in &samples {
        eprintln!(
            "soak: t={:>5.1}s RSS {:>6} KiB  fds {:>3}",
            s.at.as_secs_f64(),
            s.rss_kib,
            s.fds
        );
    }
    eprintln!("soak: after: RSS {after_rss} KiB, {after_fds} fds");

    assert!(t.ok > 100, "hardly any signatures: {t:?}");
    assert_eq!(t.wrong_signatures, 0, "signatures that did not verify");
    assert!(
        t.transport.is_empty(),
        "requests without an answer: {:?}",
        &t.transport[..t.transport.len().min(5)]
    );
    // Overload may shed with 503 (queue full); anything else is a bug. 8 clients against
    // a queue of 256 should not even do that, so allow at most 1 %.
    let refused: u64 = t.refused.values().sum();
    assert!(
        t.refused.keys().all(|(status, _)| *status == 503) && refused * 100 <= t.total(),
        "refusals: {:?}",
        t.refused
    );
    let base = samples[WARM_UP - 1];
    let peak = samples[WARM_UP..]
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(base.rss_kib);
    assert!(
        peak.saturating_sub(base.rss_kib) < RSS_BOUND_KIB,
        "RSS grew from {} KiB after warm-up to {peak} KiB",
        base.rss_kib
    );
    assert!(
        after_rss.saturating_sub(base.rss_kib) < RSS_BOUND_KIB,
        "RSS after the load {after_rss} KiB, after warm-up {} KiB",
        base.rss_kib
    );
    // A client holds one connection at a time, but the daemon may not yet have seen the
    // close of the previous one when the next arrives: at most two per client.
    let most_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    assert!(
        most_fds <= idle_fds + 2 * CLIENTS,
        "{most_fds} fds under load, {idle_fds} idle, {CLIENTS} clients"
    );
    assert!(
        after_fds <= idle_fds,
        "{after_fds} fds 5 s after the load, {idle_fds} idle before"
    );
    drop(t);
    daemon.stop()?;
    Ok(())
}

/// Sequential signatures from one caller for `window`; their latencies, sorted.
fn latencies(
    runtime: &tokio::runtime::Runtime,
    socket: &Path,
    public: &PKey<Public>,
    window: Duration,
    tally: &mut Tally,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut took = Vec::new();
    while started.elapsed() < window {
        let data = format!("<ds:SignedInfo n=\"{}\"/>", took.len());
        let (result, elapsed) = runtime.block_on(sign_once(socket, public, data.as_bytes()));
        tally.record(result);
        took.push(elapsed);
    }
    took.sort();
    took
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::MAX;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The bound on a caller's latency while the daemon is under attack, given its p50
/// beforehand. The host is a shared 2-core machine and other tests run in parallel, so a
/// tight multiple of a ~3 ms p50 would flake on scheduling noise alone (a run with four
/// builds beside it saw a p99 of 249 ms); 600 ms is still well below what an attack that
/// worked would cause (a caller stuck behind 1,000 idle connections or a held lock waits
/// for the read timeout, 1 s, or for ever).
fn latency_bound(p50_before: Duration) -> Duration {
    (p50_before * 10).max(Duration::from_millis(600))
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit); the
/// daemon, started afterwards, inherits it.
fn raise_nofile(want: u64) -> Result {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < want {
        if hard < want {
            return Err(
                format!("RLIMIT_NOFILE hard limit {hard} < {want}: raise it (ulimit -Hn)").into(),
            );
        }
        setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    }
    Ok(())
}

fn single_thread_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn a_thousand_idle_connections_neither_slow_others_nor_outlive_the_read_timeout() -> Result {
    const IDLE: usize = 1000;
    raise_nofile(IDLE as u64 + 512)?;
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    // Room for every idle connection and the measuring caller; idle ones go after 1 s.
    let daemon = Daemon::start(
        &token,
        &[EPUAP],
        "read_timeout_ms = 1000\nmax_connections = 1100\nmax_connections_per_identity = 1100",
    )?;
    let pid = daemon.pid();
    let public = leaves[0].cert.public_key()?;
    let runtime = single_thread_runtime()?;
    let mut tally = Tally::default();
    latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_millis(300),
        &mut tally,
    );
    let before = latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_secs(1),
        &mut tally,
    );
    let idle_fds = fd_count(pid)?;

    let opening = Instant::now();
    let mut idle: Vec<UnixStream> = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(UnixStream::connect(&daemon.socket)?);
    }
    let opened_in = opening.elapsed();
    // The idle connections live for the read timeout (1 s) from their accept: measure the
    // other caller inside that window, and check that the daemon did hold them meanwhile.
    let during = latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_millis(500),
        &mut tally,
    );
    let held_fds = fd_count(pid)?;
    let measured_by = opening.elapsed();

    let deadline = opening + Duration::from_secs(4);
    let mut closed = 0;
    for stream in &mut idle {
        if closed_by_peer(stream, deadline)? {
            closed += 1;
        }
    }
    let closed_by = opening.elapsed();
    drop(idle);
    let mut after_fds = fd_count(pid)?;
    while after_fds > idle_fds && opening.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(50));
        after_fds = fd_count(pid)?;
    }
    let after = latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_millis(300),
        &mut tally,
    );

    let (p50_before, p99_before) = (percentile(&before, 50), percentile(&before, 99));
    let (p50_during, p99_during) = (percentile(&during, 50), percentile(&during, 99));
    eprintln!(
        "idle: before: {} signatures, p50 {p50_before:?} p99 {p99_before:?}; {IDLE} idle connections opened in {opened_in:?}; during: {} signatures, p50 {p50_during:?} p99 {p99_during:?} max {:?}; daemon fds idle {idle_fds}, with the idle connections {held_fds} (at {measured_by:?}), after {after_fds}; {closed}/{IDLE} closed by the daemon by {closed_by:?}; after: p50 {:?}",
        before.len(),
        during.len(),
        during.last().copied().unwrap_or_default(),
        percentile(&after, 50),
    );
    assert_eq!(tally.wrong_signatures, 0, "{tally:?}");
    assert!(
        tally.refused.is_empty() && tally.transport.is_empty(),
        "the measuring caller was refused: {tally:?}"
    );
    assert!(
        held_fds >= idle_fds + IDLE * 9 / 10,
        "the daemon held {held_fds} fds with {IDLE} idle connections open (idle: {idle_fds}): were they accepted, and measured within the read timeout?"
    );
    assert!(
        during.len() >= 10,
        "only {} signatures during",
        during.len()
    );
    let bound = latency_bound(p50_before);
    assert!(
        p99_during < bound,
        "p99 {p99_during:?} with {IDLE} idle connections, bound {bound:?} (p50 before {p50_before:?})"
    );
    assert_eq!(closed, IDLE, "idle connections the daemon did not close");
    assert!(
        after_fds <= idle_fds,
        "daemon fds {after_fds} after the idle connections went, {idle_fds} before"
    );
    daemon.stop()?;
    Ok(())
}

/// Reads `stream` until the daemon closes it (true) or `deadline` passes (false). A 408
/// answer before the close is fine.
fn closed_by_peer(stream: &mut UnixStream, deadline: Instant) -> Result<bool> {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

/// Sends `request` one byte every `pause` until the daemon closes the connection; returns
/// how many bytes went out, how long it took, and what the daemon answered.
fn slowloris(socket: &Path, request: &[u8], pause: Duration) -> Result<(usize, Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(pause))?;
    let mut sent = 0;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for byte in request {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        sent += 1;
        // Waits `pause` for the daemon: data or EOF means it is done with us.
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    Ok((sent, started.elapsed(), answer))
}

#[test]
fn slowloris_clients_are_cut_off_by_the_header_timeout_while_others_are_served() -> Result {
    const SLOW: usize = 20;
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "read_timeout_ms = 1000")?;
    let public = leaves[0].cert.public_key()?;
    let runtime = single_thread_runtime()?;
    let mut tally = Tally::default();
    latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_millis(300),
        &mut tally,
    );
    let before = latencies(
        &runtime,
        &daemon.socket,
        &public,
        Duration::from_secs(1),
        &mut tally,
    );

    let request = b"POST /v1/keys/epuap/sign HTTP/1.1\r\nHost: hsm-signer\r\nContent-Type: application/json\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (slow, during) = std::thread::scope(|scope| {
        let slow: Vec<_> = (0..SLOW)
            .map(|_| {
                scope.spawn(|| {
                    slowloris(&daemon.socket, request, Duration::from_millis(200))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let during = latencies(
            &runtime,
            &daemon.socket,
            &public,
            Duration::from_millis(800),
            &mut tally,
        );
        let slow: Vec<_> = slow.into_iter().map(|h| h.join()).collect();
        (slow, during)
    });
    let (p50_before, p99_during) = (percentile(&before, 50), percentile(&during, 99));
    let mut cut_after = Vec::new();
    for joined in slow {
        let (sent, after, answer) = joined.map_err(|_| "slow client panicked")??;
        assert!(
            sent < request.len(),
            "a slow client sent its whole header ({sent} bytes over {after:?}) without being cut off"
        );
        assert!(
            after >= Duration::from_millis(800) && after < Duration::from_secs(3),
            "a slow client was cut off after {after:?} ({sent} bytes), not about 1 s"
        );
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
        cut_after.push((sent, after));
    }
    eprintln!(
        "slowloris: {SLOW} clients at one byte per 200 ms cut off after {:?} (bytes sent, time); other caller: p50 before {p50_before:?}, during {} signatures p50 {:?} p99 {p99_during:?}",
        cut_after.first(),
        during.len(),
        percentile(&during, 50)
    );
    assert_eq!(tally.wrong_signatures, 0, "{tally:?}");
    assert!(
        tally.refused.is_empty() && tally.transport.is_empty(),
        "the measuring caller was refused: {tally:?}"
    );
    let bound = latency_bound(p50_before);
    assert!(
        during.len() >= 10,
        "only {} signatures during",
        during.len()
    );
    assert!(
        p99_during < bound,
        "p99 {p99_during:?} during the slowloris, bound {bound:?} (p50 before {p50_before:?})"
    );
    daemon.stop()?;
    Ok(())
}
