//! The audit log fails closed (hardening issue, items 1, 2 and 7): a full disk, a stalled
//! writer, a deleted or rotated file, and a chain rewritten with every `prev`
//! recomputed. Each test checks that the allowed caller's signatures verify against the
//! certificate, and that no 200 answer lacks its record.

use crate::common;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::daemon::*;
use common::fixtures::*;
use common::*;
use serde_json::Value;

use crate::common::daemon::EPUAP;

const CHECKPOINT: KeySetup = KeySetup {
    name: "unused",
    label: "audit-checkpoint",
    spec: KeySpec::P256,
    algorithms: &["ES256"],
    extra: "",
};

/// A configuration for `keys` whose audit file is `audit` and whose `[audit]` section
/// gets `audit_extra`.
fn config_with_audit(
    token: &TestToken,
    keys: &[KeySetup],
    server_extra: &str,
    audit: &Path,
    audit_extra: &str,
) -> Result<PathBuf> {
    let text = Daemon::config_text(token, keys, server_extra).replace(
        &format!("file = \"{}\"", token.path("audit.jsonl").display()),
        &format!("file = \"{}\"\n{audit_extra}", audit.display()),
    );
    let path = token.path("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Signs `data` and checks the answer: `Ok(Some(()))` for a verified 200, `Ok(None)` for
/// 503 `audit_unavailable`; anything else fails the test.
fn sign_checked(daemon: &Daemon, leaf: &Leaf, data: &[u8]) -> Result<Option<()>> {
    let (status, answer) = daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", data)),
    )?;
    match status {
        200 => {
            let signature = signature_of(&answer)?;
            let public = leaf.cert.public_key()?;
            let mut verifier =
                openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public)?;
            assert!(
                verifier.verify_oneshot(&signature, data)?,
                "a 200 whose signature does not verify: {answer}"
            );
            Ok(Some(()))
        }
        503 => {
            assert_eq!(answer["error"]["code"], "audit_unavailable", "{answer}");
            Ok(None)
        }
        other => Err(format!("unexpected {other}: {answer}").into()),
    }
}

fn records(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn verify(token: &TestToken, files: &[&Path], extra: &[&str]) -> Result<(i32, String)> {
    let out = token
        .hsm_signer()
        .args(["audit", "verify"])
        .args(files)
        .args(extra)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)? + &String::from_utf8(out.stderr)?,
    ))
}

/// The daemon under `prlimit --fsize=LIMIT:unlimited` (a soft RLIMIT_FSIZE: no file it
/// writes may grow past LIMIT bytes, and the same uid may lift it), its standard error on
/// a pipe so that the limit never hits its log (copied by a thread into
/// `serve-copy.log`). No mount, no privilege: this runs wherever the tests run.
fn start_with_file_size_limit(token: &TestToken, config: PathBuf, limit: u64) -> Result<Daemon> {
    let fifo = token.path("serve.log");
    run_ok(Command::new("mkfifo").arg(&fifo))?;
    let copy = token.path("serve-copy.log");
    let reader = fifo.clone();
    std::thread::spawn(move || -> std::io::Result<u64> {
        std::io::copy(
            &mut std::fs::File::open(reader)?,
            &mut std::fs::File::create(copy)?,
        )
    });
    let daemon = token.hsm_signer();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--fsize={limit}:unlimited"))
        .arg("--")
        .arg(daemon.get_program());
    for (key, value) in daemon.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    Daemon::start_command(cmd, token.dir.path(), config)
}

#[test]
fn a_full_disk_refuses_signing_with_503_and_the_chain_records_the_outage() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let audit = token.path("audit.jsonl");
    let config = config_with_audit(&token, &[EPUAP], "", &audit, "")?;
    // The audit file may not grow past 64 KiB: to the daemon, a full disk (EFBIG where a
    // disk gives ENOSPC; SIGXFSZ is caught, so the write fails instead of killing it).
    let daemon = start_with_file_size_limit(&token, config, 64 * 1024)?;
    let (mut ok, mut refused) = (0u64, 0u64);
    for n in 0..700 {
        match sign_checked(&daemon, &leaves[0], format!("request {n}").as_bytes())? {
            Some(()) => ok += 1,
            None => refused += 1,
        }
    }
    eprintln!(
        "audit file limited to 64 KiB: {ok} answered 200, {refused} refused with 503 audit_unavailable"
    );
    assert!(refused > 0, "the disk never filled: {ok} answered");
    let written = records(&audit)?;
    let signed = written.iter().filter(|r| r["outcome"] == "ok").count() as u64;
    assert_eq!(signed, ok, "as many records as 200 answers");
    // Health says why, and that the daemon does not sign.
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["audit"]["state"], "failing", "{health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("audit log cannot be written"),
        "{health}"
    );
    // Space again (the limit lifted on the running daemon): signing resumes by itself,
    // after a record of the outage.
    run_ok(Command::new("prlimit").args([
        "--pid",
        &daemon.pid().to_string(),
        "--fsize=unlimited",
    ]))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sign_checked(&daemon, &leaves[0], b"after the outage")?.is_none() {
        assert!(Instant::now() < deadline, "signing did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every refusal is accounted for in the audit_outage records (a full disk can let a
    // short outage record through before the next request's line fails again, so there
    // may be several).
    let written = records(&audit)?;
    let outages: Vec<&Value> = written
        .iter()
        .filter(|r| r["op"] == "audit_outage")
        .collect();
    assert!(!outages.is_empty(), "no audit_outage record");
    let accounted: u64 = outages
        .iter()
        .map(|r| r["detail"]["refused"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(accounted, refused, "{} outage records", outages.len());
    assert_eq!(written.last().ok_or("empty")?["outcome"], "ok");
    let (code, out) = verify(&token, &[&audit], &[])?;
    assert_eq!(code, 0, "the chain holds across the outage: {out}");
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{health}");
    Ok(())
}

#[test]
fn a_stalled_audit_writer_gets_503_at_once_and_health_and_sigterm_still_answer() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let fifo = token.path("audit.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    // Held open for reading and writing, so the daemon's open does not wait; never read
    // until the end, so its writes stop once the pipe's buffer is full.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    let config = config_with_audit(&token, &[EPUAP], "request_timeout_ms = 1000", &fifo, "")?;
    let daemon = Daemon::start_with(&token, config)?;
    let mut n = 0;
    let stalled_at = loop {
        n += 1;
        assert!(n < 2_000, "the FIFO never filled");
        let started = Instant::now();
        let (status, answer) = daemon.json(
            "POST",
            "/v1/keys/epuap/sign",
            Some(&sign_body("RS256", "data", format!("r{n}").as_bytes())),
        )?;
        if status != 200 {
            assert_eq!(status, 503, "{answer}");
            break started.elapsed();
        }
    };
    eprintln!(
        "the pipe filled after {n} requests; that request was answered 503 after {stalled_at:?}"
    );
    assert!(stalled_at < Duration::from_secs(3), "{stalled_at:?}");
    // Now the log counts as stalled: requests are refused at once, health answers.
    std::thread::sleep(Duration::from_millis(1_100));
    let started = Instant::now();
    let (status, answer) = daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", b"while stalled")),
    )?;
    let took = started.elapsed();
    assert_eq!(
        (status, &answer["error"]["code"]),
        (503, &Value::from("audit_unavailable")),
        "{answer}"
    );
    assert!(took < Duration::from_millis(500), "refused in {took:?}");
    let (status, health) = daemon.json("GET", "/v1/health", None)?;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["audit"]["state"], "stalled", "{health}");
    // Drain the pipe: the stuck write returns and signing resumes by itself.
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if reader.read(&mut buf).unwrap_or(0) == 0 {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while sign_checked(&daemon, &leaves[0], b"after the stall")?.is_none() {
        assert!(Instant::now() < deadline, "signing did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let status = daemon.stop()?;
    eprintln!("SIGTERM after the stall: exit in {:?}", started.elapsed());
    assert!(status.success(), "{status:?}");
    drop(drain);
    Ok(())
}

#[test]
fn sigterm_stops_the_daemon_while_an_audit_write_is_stuck() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let fifo = token.path("audit.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status()?.success());
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    let config = config_with_audit(&token, &[EPUAP], "request_timeout_ms = 1000", &fifo, "")?;
    let daemon = Daemon::start_with(&token, config)?;
    for n in 0..2_000 {
        let (status, _) = daemon.json(
            "POST",
            "/v1/keys/epuap/sign",
            Some(&sign_body("RS256", "data", format!("r{n}").as_bytes())),
        )?;
        if status != 200 {
            break;
        }
    }
    let started = Instant::now();
    daemon.signal("TERM")?;
    let status = daemon.wait_exit(Duration::from_secs(15))?;
    let took = started.elapsed();
    eprintln!("SIGTERM with a stuck audit write: exit {status:?} in {took:?}");
    assert!(took < Duration::from_secs(15));
    Ok(())
}

#[test]
fn a_deleted_audit_file_is_recreated_and_linked_and_a_rotated_one_continues_after_sighup() -> Result
{
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    for n in 0..3 {
        sign_checked(&daemon, &leaves[0], format!("a{n}").as_bytes())?.ok_or("refused")?;
    }
    // Deleted under the daemon: the next record recreates the file at its path.
    let first = token.path("audit.first.jsonl");
    std::fs::copy(&daemon.audit, &first)?;
    std::fs::remove_file(&daemon.audit)?;
    sign_checked(&daemon, &leaves[0], b"after the delete")?.ok_or("refused")?;
    let second = records(&daemon.audit)?;
    assert_eq!(second[0]["op"], "log_opened", "{}", second[0]);
    assert!(second[0]["detail"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("deleted"));
    assert_eq!(second[1]["outcome"], "ok");
    let (code, out) = verify(&token, &[&first, &daemon.audit], &[])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 5 lines in 2 file(s)"), "{out}");
    // Alone, the new file verifies and says what it continues.
    let (code, out) = verify(&token, &[&daemon.audit], &[])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("continues an earlier file"), "{out}");
    // Rotated as logrotate does (rename, then SIGHUP): the new file links to the old.
    let rotated = token.path("audit.jsonl.1");
    std::fs::rename(&daemon.audit, &rotated)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    sign_checked(&daemon, &leaves[0], b"after the rotation")?.ok_or("refused")?;
    let (code, out) = verify(&token, &[&first, &rotated, &daemon.audit], &[])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in 3 file(s)"), "{out}");
    // Out of order, the link does not hold.
    let (code, out) = verify(&token, &[&first, &daemon.audit, &rotated], &[])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN"), "{out}");
    Ok(())
}

/// Rewrites line `index` of the audit file and recomputes every `prev` after it, as an
/// attacker with write access to the file would (the Python of the issue's report).
fn rewrite_chain(
    path: &Path,
    index: usize,
    from: &str,
    to: &str,
    drop_checkpoints: bool,
) -> Result {
    let script = r#"
import hashlib, json, sys
path, index, old, new, drop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
lines = [l for l in open(path, encoding="utf-8").read().split("\n") if l]
lines[index] = lines[index].replace(old, new, 1)
out, prev, seq = [], None, 0
for line in lines:
    record = json.loads(line)
    if drop and record.get("op") == "checkpoint":
        continue
    seq += 1
    record["seq"] = seq
    if prev is not None:
        record["prev"] = prev
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    prev = hashlib.sha256(text.encode()).hexdigest()
    out.append(text)
open(path, "w", encoding="utf-8").write("\n".join(out) + "\n")
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(index.to_string())
        .args([from, to, if drop_checkpoints { "1" } else { "0" }])
        .status()?;
    assert!(status.success());
    Ok(())
}

#[test]
fn signed_checkpoints_catch_a_chain_rewritten_with_every_prev_recomputed() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP, CHECKPOINT])?;
    let audit = token.path("audit.jsonl");
    let config = config_with_audit(
        &token,
        &[EPUAP],
        "",
        &audit,
        "checkpoint_key_label = \"audit-checkpoint\"\ncheckpoint_interval_s = 1",
    )?;
    let daemon = Daemon::start_with(&token, config)?;
    for n in 0..4 {
        sign_checked(&daemon, &leaves[0], format!("c{n}").as_bytes())?.ok_or("refused")?;
    }
    wait_until(Duration::from_secs(5), "a checkpoint", || {
        Ok(records(&audit)?.iter().any(|r| r["op"] == "checkpoint"))
    })?;
    for n in 0..3 {
        sign_checked(&daemon, &leaves[0], format!("d{n}").as_bytes())?.ok_or("refused")?;
    }
    // The checkpoint key is not a [[keys]] entry: no caller can reach it.
    let (status, answer) = daemon.json(
        "POST",
        "/v1/keys/audit-checkpoint/sign",
        Some(&sign_body("ES256", "data", b"forge")),
    )?;
    assert_eq!(status, 404, "{answer}");
    let log = daemon.log.clone();
    assert!(daemon.stop()?.success());
    // Each checkpoint's head went to the journal (standard error).
    assert!(std::fs::read_to_string(&log)?.contains("audit checkpoint"));
    let written = records(&audit)?;
    let last = written.last().ok_or("empty")?;
    assert_eq!(
        last["op"], "checkpoint",
        "a shutdown checkpoint ends the log"
    );
    assert_eq!(last["detail"]["reason"], "shutdown");
    let cert = token.path("checkpoint.pem");
    std::fs::write(&cert, leaves[1].cert.to_pem()?)?;
    let cert_arg = cert.display().to_string();
    let (code, out) = verify(&token, &[&audit], &["--certificate", &cert_arg])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed checkpoints verified"), "{out}");
    // A checkpoint's signature also verifies with the openssl CLI over the documented
    // message, against the certificate.
    let checkpoint = written
        .iter()
        .find(|r| r["op"] == "checkpoint")
        .ok_or("no checkpoint")?;
    let message = format!(
        "hsm-signer audit checkpoint v1\nseq {}\ntime {}\nprev {}\n",
        checkpoint["seq"],
        checkpoint["time"].as_str().unwrap_or(""),
        checkpoint["prev"].as_str().unwrap_or("")
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(checkpoint["detail"]["signature"].as_str().unwrap_or(""))?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[1].cert,
        message.as_bytes(),
        &raw_to_der(&raw)?,
        &["-sha256"]
    )?);

    // Rewritten: a 200 becomes a 403, every prev recomputed. The plain chain check is
    // fooled, the checkpoints are not.
    let copy = token.path("rewritten.jsonl");
    std::fs::copy(&audit, &copy)?;
    rewrite_chain(&copy, 1, "\"status\":200", "\"status\":403", false)?;
    let (code, out) = verify(&token, &[&copy], &[])?;
    assert_eq!(code, 0, "without checkpoints the rewrite passes: {out}");
    let (code, out) = verify(&token, &[&copy], &["--certificate", &cert_arg])?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN") && out.contains("does not verify"),
        "{out}"
    );
    // Rewritten with every checkpoint removed: reported as a log with nothing signed.
    let copy = token.path("stripped.jsonl");
    std::fs::copy(&audit, &copy)?;
    rewrite_chain(&copy, 1, "\"status\":200", "\"status\":403", true)?;
    let (code, out) = verify(&token, &[&copy], &["--certificate", &cert_arg])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GAP"), "{out}");
    Ok(())
}

#[test]
fn a_checkpoint_label_that_is_also_a_key_is_refused_at_start() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let config = config_with_audit(
        &token,
        &[EPUAP],
        "",
        &token.path("audit.jsonl"),
        "checkpoint_key_label = \"gsko-epuap\"",
    )?;
    let out = token
        .hsm_signer()
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("checkpoint_key_label") && err.contains("epuap"),
        "{err}"
    );
    Ok(())
}
