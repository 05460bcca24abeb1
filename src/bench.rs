//! `hsm-signer bench`: how fast the token signs on its own, and how fast the daemon
//! signs through its socket, measured the same way so the two can be compared.
//!
//! Both loops sign the same input (a 1 KiB stand-in for a SAML SignedInfo, or its
//! digest), record every latency, and report operations per second and percentiles.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use secrecy::SecretString;
use serde::Serialize;

use crate::algorithm::Algorithm;
use crate::token::{sign_digest, OpenToken, StoredKey, TokenError, TokenSelector};

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// What was measured ("token", "daemon").
    pub path: &'static str,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Whether a digest (not data) was sent.
    pub digest: bool,
    /// Parallel sessions (token) or clients (daemon).
    pub parallel: usize,
    /// Signatures made.
    pub ops: u64,
    /// Failures.
    pub errors: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Signatures per second.
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// CPU time this benchmark process used (user + system), seconds: the signing itself
    /// for `token`, the client's share for `daemon`.
    pub cpu_seconds: f64,
}

/// The input every benchmark signs: 1 KiB, like an exclusive-c14n SignedInfo.
pub fn sample_input() -> Vec<u8> {
    let mut text = String::from("<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">");
    while text.len() < 1000 {
        text.push_str("<ds:Reference URI=\"#_a1b2c3\"><ds:DigestValue>q1w2e3r4t5y6</ds:DigestValue></ds:Reference>");
    }
    text.push_str("</ds:SignedInfo>");
    text.into_bytes()
}

fn summarise(
    path: &'static str,
    algorithm: Algorithm,
    digest: bool,
    parallel: usize,
    mut micros: Vec<u32>,
    errors: u64,
    elapsed: Duration,
) -> BenchResult {
    micros.sort_unstable();
    let pick = |q: f64| -> f64 {
        if micros.is_empty() {
            return 0.0;
        }
        let index = ((micros.len() as f64 - 1.0) * q).round() as usize;
        f64::from(micros[index]) / 1000.0
    };
    let seconds = elapsed.as_secs_f64();
    BenchResult {
        path,
        algorithm,
        digest,
        parallel,
        ops: micros.len() as u64,
        errors,
        seconds,
        per_second: micros.len() as f64 / seconds,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        cpu_seconds: process_cpu_seconds(),
    }
}

/// User plus system CPU time of this process so far.
fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Signs directly through PKCS#11 from `parallel` threads, each with its own long-lived
/// session, for `duration`.
pub fn token(
    module: &Path,
    selector: &TokenSelector,
    pin: &SecretString,
    label: &str,
    algorithm: Algorithm,
    parallel: usize,
    duration: Duration,
) -> Result<BenchResult, TokenError> {
    let open = OpenToken::open(module, selector, false)?;
    open.login(pin, false)?;
    let key = StoredKey::find(&open.session, &open.info.label, label)?;
    let input = Arc::new(sample_input());
    let started = Instant::now();
    let deadline = started + duration;
    let mut threads = Vec::new();
    for _ in 0..parallel {
        let session = open
            .module
            .ctx()
            .open_ro_session(open.slot)
            .map_err(TokenError::pkcs11("opening a session"))?;
        let (input, handle) = (input.clone(), key.handle);
        threads.push(std::thread::spawn(move || {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let digest = algorithm.hash().digest(&input);
                match sign_digest(&session, handle, algorithm, &digest) {
                    Ok(_) => micros.push(t0.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (micros, errors)
        }));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (m, e) = t.join().expect("bench thread");
        micros.extend(m);
        errors += e;
    }
    Ok(summarise(
        "token",
        algorithm,
        false,
        parallel,
        micros,
        errors,
        started.elapsed(),
    ))
}

/// Asks the daemon at `socket` for signatures from `clients` keep-alive connections at
/// once, for `duration`.
pub async fn daemon(
    socket: &Path,
    key: &str,
    algorithm: Algorithm,
    digest: bool,
    clients: usize,
    duration: Duration,
) -> Result<BenchResult, crate::client::ClientError> {
    let input = sample_input();
    let field = if digest { "digest" } else { "data" };
    let payload = if digest {
        algorithm.hash().digest(&input)
    } else {
        input
    };
    let body = Bytes::from(
        serde_json::json!({ "algorithm": algorithm.name(), field: base64::engine::general_purpose::STANDARD.encode(payload) })
            .to_string(),
    );
    let uri = format!("/v1/keys/{key}/sign");
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut sender = crate::client::connect(socket).await?;
        let (body, uri) = (body.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let request = hyper::Request::post(uri.as_str())
                    .header("host", "hsm-signer")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                if ok {
                    micros.push(t0.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
            }
            (micros, errors)
        }));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (m, e) = task.await.unwrap_or_default();
        micros.extend(m);
        errors += e;
    }
    Ok(summarise(
        "daemon",
        algorithm,
        digest,
        clients,
        micros,
        errors,
        started.elapsed(),
    ))
}
