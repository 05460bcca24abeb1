//! Strangers against the TLS listener: refused connections folded and all audited,
//! stalled handshakes from one source, and a thousand idle connections, while a pinned
//! client keeps signing.

use super::*;

/// Refusals on the TLS listener are folded and flushed like the socket's: 40 connections
/// of an unpinned certificate within a second give a few `refused_peer` records that
/// count all 40 (before both listeners shared one admission, only the first was).
#[test]
fn every_refused_tls_connection_is_audited_folded() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let script = r#"
import socket, ssl, sys
port, cert, key, ca, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
    s.sendall(b"GET /v1/keys HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.recv(12) == b"HTTP/1.1 403"
    s.close()
"#;
    run_ok(
        Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(&pki.unpinned.cert)
            .arg(&pki.unpinned.key)
            .arg(&pki.server_ca)
            .arg("40"),
    )?;
    let mut audited = 0;
    let mut records = 0;
    wait_until(Duration::from_secs(5), "40 refusals audited", || {
        let refused: Vec<Value> = std::fs::read_to_string(&daemon.audit)?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["op"] == "refused_peer")
            .collect();
        records = refused.len();
        audited = refused
            .iter()
            .map(|r| r["detail"]["connections"].as_u64().unwrap_or(0))
            .sum::<u64>();
        Ok(audited >= 40)
    })?;
    eprintln!("40 refused TLS connections: {records} refused_peer records counting {audited}");
    assert_eq!(audited, 40);
    Ok(())
}

/// A child process killed when the test ends, whatever its outcome.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Holds `n` TCP connections from `source` to the TLS port that send a TLS record header
/// and never finish the handshake; each one the daemon closes (refused, aborted or timed
/// out) is opened again, at most 200 a second, for `seconds`. Prints "ready" once all `n`
/// were opened, then a JSON summary.
const STALLERS: &str = r#"
import json, selectors, socket, sys, time
port, n, seconds, source = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sel = selectors.DefaultSelector()
opened = closed = failed = 0
def stall():
    global opened, failed
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
        s.send(b"\x16\x03\x01")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        opened += 1
    except OSError:
        failed += 1
for _ in range(n):
    stall()
print("ready", flush=True)
end = time.time() + seconds
while time.time() < end:
    for key, _ in sel.select(timeout=0.1):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            closed += 1
            time.sleep(0.005)
            stall()
print(json.dumps({"opened": opened, "closed_by_daemon": closed, "connect_failed": failed}), flush=True)
"#;

/// The issue's target: 200 stalled handshakes from 127.0.0.2, re-opened as the daemon
/// closes them, while a pinned client on 127.0.0.1 signs 20 times with the default
/// max_handshakes (64): at least 19 of 20 succeed, each within 1 s. Before handshakes
/// were counted per source, the stallers held all 64 slots and the client got 0 of 21.
#[test]
fn two_hundred_stalled_handshakes_from_one_source_do_not_lock_out_a_pinned_client() -> Result {
    use std::io::BufRead;
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "handshake_timeout_ms = 2000")?;
    let mut flood = Reaped(
        Command::new("python3")
            .args(["-c", STALLERS, &port.to_string(), "200", "10", "127.0.0.2"])
            .stdout(std::process::Stdio::piped())
            .spawn()?,
    );
    let mut out = std::io::BufReader::new(flood.0.stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(500));
    let body = sign_body_data();
    let mut latencies = Vec::new();
    let mut succeeded = 0;
    for _ in 0..20 {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{time_total}",
        ])
        .arg("--cacert")
        .arg(&pki.server_ca)
        .arg("--cert")
        .arg(&pki.web1.cert)
        .arg("--key")
        .arg(&pki.web1.key)
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!("https://localhost:{port}/v1/keys/epuap/sign"));
        let done = cmd.output()?;
        let text = String::from_utf8_lossy(&done.stdout).to_string();
        let (answer, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut fields = last.split_whitespace();
        let status: u16 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let seconds: f64 = fields
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::MAX);
        latencies.push(format!("{status}/{:.0}ms", seconds * 1000.0));
        if status == 200 && seconds <= 1.0 {
            let signed: Value = serde_json::from_str(answer)?;
            assert!(openssl_verify(
                token.dir.path(),
                &leaves[0].cert,
                DATA,
                &signature_of(&signed)?,
                &["-sha256"]
            )?);
            succeeded += 1;
        }
    }
    let mut summary = String::new();
    out.read_line(&mut summary)?;
    eprintln!(
        "stallers from 127.0.0.2: {}; pinned client: {succeeded} of 20 signed within 1 s; status/latency: {}",
        summary.trim(),
        latencies.join(" ")
    );
    assert!(succeeded >= 19, "{succeeded} of 20: {latencies:?}");
    // The stallers were closed and re-opened (the flood was real) …
    let summary: Value = serde_json::from_str(&summary)?;
    assert!(
        summary["closed_by_daemon"].as_u64().unwrap_or(0) > 200,
        "{summary}"
    );
    // … and cost one folded audit record per second, naming 127.0.0.2 first.
    std::thread::sleep(Duration::from_millis(1500));
    let records: Vec<Value> = std::fs::read_to_string(&daemon.audit)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["op"] == "refused_handshakes")
        .collect();
    let lines = daemon
        .log_text()
        .matches("TLS handshakes that gave no connection")
        .count();
    eprintln!(
        "{} refused_handshakes records, {lines} log lines",
        records.len()
    );
    assert!(
        !records.is_empty() && records.len() <= 14,
        "{}",
        records.len()
    );
    assert_eq!(lines, records.len());
    assert!(records
        .iter()
        .all(|r| r["detail"]["top"][0]["source"] == "127.0.0.2"));
    Ok(())
}

#[test]
fn slowloris_handshakes_and_a_thousand_idle_tls_connections_do_not_starve_a_pinned_client() -> Result
{
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(
        &token,
        &pki,
        "handshake_timeout_ms = 2000\nmax_handshakes = 256",
    )?;
    let body = sign_body_data();
    // 100 TCP connections from 127.0.0.2 (Linux routes all of 127/8 to lo) that send a TLS
    // record header and then nothing (a slowloris in
    // the handshake), and 1,000 TLS connections of an unpinned certificate left idle.
    let script = r#"
import socket, ssl, sys, time
port, cert, key, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
slow = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
    s.send(b"\x16\x03\x01")
    slow.append(s)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
idle, failed = [], 0
for _ in range(1000):
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
        idle.append(s)
    except Exception:
        failed += 1
print(len(slow), len(idle), failed, flush=True)
time.sleep(float(sys.argv[5]))
"#;
    let flood = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(&pki.unpinned.cert)
        .arg(&pki.unpinned.key)
        .arg(&pki.server_ca)
        .arg("6")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Measure the pinned client while the flood holds its connections.
    std::thread::sleep(Duration::from_millis(1500));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let out = curl_tls(
            &pki,
            port,
            Some(&pki.web1),
            "/v1/keys/epuap/sign",
            Some(&body),
        )?;
        worst = worst.max(started.elapsed());
        let (status, signed) = answer(&out)?;
        assert_eq!(status, 200, "{signed}");
        assert!(openssl_verify(
            token.dir.path(),
            &leaves[0].cert,
            DATA,
            &signature_of(&signed)?,
            &["-sha256"]
        )?);
    }
    let out = flood.wait_with_output()?;
    eprintln!(
        "flood (slow, idle TLS, failed): {}; pinned client's slowest of 10 signatures: {worst:?}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // No bound on `worst`: timing is printed, not asserted (a loaded CI machine is no
    // fault of the daemon). The behaviour is asserted above: each of the pinned client's
    // ten requests was served and its signature verifies.
    // The local socket was never affected either.
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    Ok(())
}
