//! End-to-end tests of `hsm-signer serve` (issue 3) on real SoftHSM2, one token and one
//! daemon per test, for what guards the key: who may connect and use which key (peer
//! uids checked with curl run as another user), the audit log's hash chain, reload,
//! shutdown and refusals at start, and what another process can read of the daemon.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{
    openssl_verify, provision, raw_to_der, serve_once, sign_body, signature_of, wait_for_lines,
    wait_until, Daemon, KeySetup,
};
use common::fixtures::Leaf;
use common::*;
use serde_json::{json, Value};

/// The unprivileged uid (and gid) the access tests run curl as.
const NOBODY: u32 = 65534;

use crate::common::daemon::EPUAP;

use crate::common::daemon::WK;

const DATA: &[u8] = b"<ds:SignedInfo>GSKO AuthnRequest</ds:SignedInfo>";

fn sign_path(key: &str) -> String {
    format!("/v1/keys/{key}/sign")
}

/// A valid request for `key` (RS256 for the RSA key, ES256 for the EC one).
fn body_for(key: &str) -> String {
    sign_body(if key == "wk" { "ES256" } else { "RS256" }, "data", DATA)
}

/// Checks a 200 signing answer's signature over [`DATA`] with `openssl dgst`.
fn assert_verifies(token: &TestToken, leaf: &Leaf, answer: &Value) -> Result {
    let sig = signature_of(answer)?;
    let sig = if leaf.cert.public_key()?.ec_key().is_ok() {
        raw_to_der(&sig)?
    } else {
        sig
    };
    assert!(
        openssl_verify(token.dir.path(), &leaf.cert, DATA, &sig, &["-sha256"])?,
        "openssl dgst rejects the signature in {answer}"
    );
    Ok(())
}

fn code(answer: &Value) -> &Value {
    &answer["error"]["code"]
}

fn names(list: &Value) -> Vec<String> {
    list["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["name"].as_str().map(str::to_string))
        .collect()
}

fn audit_records(daemon: &Daemon, count: usize) -> Result<Vec<Value>> {
    wait_for_lines(&daemon.audit, count)?
        .iter()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

#[test]
fn a_uid_not_allowed_is_refused_everything_and_nothing_is_signed() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP];
    let leaves = provision(&token, &keys)?;
    // No allowed_uids/gids: only the daemon's own uid (root here).
    let daemon = Daemon::start(&token, &keys, "")?;
    daemon.open_socket_to_everyone()?;

    let (status, answer) = daemon.json_as(
        NOBODY,
        "POST",
        &sign_path("epuap"),
        Some(&body_for("epuap")),
    )?;
    assert_eq!(
        (status, code(&answer)),
        (403, &json!("forbidden")),
        "{answer}"
    );
    assert!(answer.get("signature").is_none());
    for path in [
        "/v1/keys",
        "/v1/keys/epuap",
        "/v1/keys/epuap/certificate",
        "/v1/health",
        "/metrics",
    ] {
        let (status, answer) = daemon.json_as(NOBODY, "GET", path, None)?;
        assert_eq!(
            (status, code(&answer)),
            (403, &json!("forbidden")),
            "{path}: {answer}"
        );
    }
    // The daemon's own uid is served, through the same socket.
    let (status, answer) = daemon.json("POST", &sign_path("epuap"), Some(&body_for("epuap")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[0], &answer)?;

    let records = audit_records(&daemon, 2)?;
    assert_eq!(records.len(), 2);
    let refused = &records[0];
    assert_eq!(refused["uid"], NOBODY);
    assert_eq!(refused["gid"], NOBODY);
    assert_eq!(refused["outcome"], "forbidden");
    assert_eq!(refused["status"], 403);
    assert!(
        refused.get("cert_sha256").is_none(),
        "nothing signed: {refused}"
    );
    assert_eq!(
        (&records[1]["uid"], &records[1]["outcome"]),
        (&json!(0), &json!("ok"))
    );
    Ok(())
}

#[test]
fn allowed_uids_admit_exactly_the_listed_uids() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, &format!("allowed_uids = [{NOBODY}]"))?;
    daemon.open_socket_to_everyone()?;
    for (key, leaf) in [("epuap", &leaves[0]), ("wk", &leaves[1])] {
        let (status, answer) =
            daemon.json_as(NOBODY, "POST", &sign_path(key), Some(&body_for(key)))?;
        assert_eq!(status, 200, "{key}: {answer}");
        assert_verifies(&token, leaf, &answer)?;
    }
    let (status, list) = daemon.json_as(NOBODY, "GET", "/v1/keys", None)?;
    assert_eq!(
        (status, names(&list)),
        (200, vec!["epuap".into(), "wk".into()])
    );
    // The list is the whole rule: the daemon's own uid is not in it, so it is refused.
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(
        (status, code(&answer)),
        (403, &json!("forbidden")),
        "{answer}"
    );
    // A reload that drops the uid takes its access away on the next request.
    std::fs::write(
        &daemon.config,
        Daemon::config_text(&token, &keys, "allowed_uids = [0]"),
    )?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    let (status, answer) =
        daemon.json_as(NOBODY, "POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(
        (status, code(&answer)),
        (403, &json!("forbidden")),
        "{answer}"
    );
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[1], &answer)?;
    Ok(())
}

#[test]
fn a_key_rule_narrows_the_server_rule_for_that_key_only() -> Result {
    let token = TestToken::new()?;
    let keys = [
        KeySetup {
            extra: "allowed_uids = [0]",
            ..EPUAP
        },
        WK,
    ];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, &format!("allowed_uids = [0, {NOBODY}]"))?;
    daemon.open_socket_to_everyone()?;

    let (status, answer) = daemon.json_as(
        NOBODY,
        "POST",
        &sign_path("epuap"),
        Some(&body_for("epuap")),
    )?;
    assert_eq!(
        (status, code(&answer)),
        (403, &json!("forbidden")),
        "{answer}"
    );
    assert!(answer.get("signature").is_none());
    for path in ["/v1/keys/epuap", "/v1/keys/epuap/certificate"] {
        let (status, answer) = daemon.json_as(NOBODY, "GET", path, None)?;
        assert_eq!(
            (status, code(&answer)),
            (403, &json!("forbidden")),
            "{path}: {answer}"
        );
    }
    let (status, answer) =
        daemon.json_as(NOBODY, "POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[1], &answer)?;
    let (status, answer) = daemon.json("POST", &sign_path("epuap"), Some(&body_for("epuap")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[0], &answer)?;

    let (status, list) = daemon.json_as(NOBODY, "GET", "/v1/keys", None)?;
    assert_eq!((status, names(&list)), (200, vec!["wk".to_string()]));
    let (status, list) = daemon.json("GET", "/v1/keys", None)?;
    assert_eq!(
        (status, names(&list)),
        (200, vec!["epuap".into(), "wk".into()])
    );

    let records = audit_records(&daemon, 3)?;
    let refused = &records[0];
    assert_eq!(
        (
            &refused["uid"],
            &refused["key"],
            &refused["outcome"],
            &refused["status"]
        ),
        (
            &json!(NOBODY),
            &json!("epuap"),
            &json!("forbidden"),
            &json!(403)
        ),
        "{refused}"
    );
    assert!(refused.get("cert_sha256").is_none());
    assert_eq!(
        (
            &records[1]["uid"],
            &records[1]["key"],
            &records[1]["outcome"]
        ),
        (&json!(NOBODY), &json!("wk"), &json!("ok"))
    );
    // Refusals are not signatures in the metrics either.
    let (_, metrics) = daemon.curl_with(&[], "GET", "/metrics", None, &[])?;
    let metrics = String::from_utf8(metrics)?;
    assert!(
        metrics.contains(
            "hsm_signer_sign_requests_total{key=\"epuap\",algorithm=\"unknown\",outcome=\"forbidden\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "hsm_signer_sign_requests_total{key=\"epuap\",algorithm=\"RS256\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
    Ok(())
}

/// `hsm-signer audit verify FILE`: exit code and standard output.
fn audit_verify(token: &TestToken, file: &std::path::Path) -> Result<(Option<i32>, String)> {
    let out = token
        .hsm_signer()
        .args(["audit", "verify"])
        .arg(file)
        .output()?;
    Ok((out.status.code(), String::from_utf8(out.stdout)?))
}

#[test]
fn the_audit_chain_holds_across_restarts_and_shows_where_it_was_broken() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    for n in 0..5 {
        let key = if n % 2 == 0 { "epuap" } else { "wk" };
        let data = format!("request {n}");
        let (status, _) = daemon.json(
            "POST",
            &sign_path(key),
            Some(&sign_body(
                if key == "wk" { "ES256" } else { "RS256" },
                "data",
                data.as_bytes(),
            )),
        )?;
        assert_eq!(status, 200);
    }
    let (status, _) = daemon.json("POST", &sign_path("nope"), Some(&body_for("epuap")))?;
    assert_eq!(status, 404);
    assert_eq!(wait_for_lines(&daemon.audit, 6)?.len(), 6);
    let log = daemon.log.clone();
    let stopped = daemon.stop()?;
    assert!(
        stopped.success(),
        "{stopped:?}: {}",
        std::fs::read_to_string(log)?
    );
    // A restarted daemon continues the chain.
    let daemon = Daemon::start_with(&token, token.path("config.toml"))?;
    let (status, _) = daemon.json("POST", &sign_path("epuap"), Some(&body_for("epuap")))?;
    assert_eq!(status, 200);
    // The restart is marked by a log_opened record, then the request.
    let lines = wait_for_lines(&daemon.audit, 8)?;
    assert_eq!(lines.len(), 8);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).map(|v| v["seq"].as_u64().unwrap_or(0)))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    let restart: Value = serde_json::from_str(&lines[6])?;
    assert_eq!(restart["op"], "log_opened", "{restart}");
    assert_eq!(restart["detail"]["reason"], "restart", "{restart}");
    let (code, out) = audit_verify(&token, &daemon.audit)?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK: 8 lines"), "{out}");

    let tampered = token.path("tampered.jsonl");
    let cases: Vec<(&str, Vec<String>, u64)> = vec![
        ("line 3 removed", [&lines[..2], &lines[3..]].concat(), 3),
        ("the first line removed", lines[1..].to_vec(), 1),
        (
            "lines 2 and 3 swapped",
            [&lines[..1], &lines[2..3], &lines[1..2], &lines[3..]].concat(),
            2,
        ),
        (
            "a byte of line 2 edited",
            edited(&lines, 1, "\"status\":200", "\"status\":201"),
            3,
        ),
        (
            "line 4's prev edited",
            edited(&lines, 3, "\"prev\":\"", "\"prev\":\"f"),
            4,
        ),
        ("line 5 no longer JSON", edited(&lines, 4, "{", "["), 5),
    ];
    for (what, text, broken_at) in cases {
        std::fs::write(&tampered, text.join("\n") + "\n")?;
        let (code, out) = audit_verify(&token, &tampered)?;
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(
            out.starts_with(&format!("BROKEN at line {broken_at} ")),
            "{what}: {out}"
        );
    }
    Ok(())
}

/// `lines` with the first `from` in line `index` replaced by `to`.
fn edited(lines: &[String], index: usize, from: &str, to: &str) -> Vec<String> {
    let mut out = lines.to_vec();
    assert!(out[index].contains(from), "{from} not in {}", out[index]);
    out[index] = out[index].replacen(from, to, 1);
    out
}

#[test]
fn sighup_adds_a_key_and_a_bad_reload_keeps_the_running_configuration() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP, WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys[..1], "")?;
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!((status, code(&answer)), (404, &json!("unknown_key")));

    std::fs::write(&daemon.config, Daemon::config_text(&token, &keys, ""))?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the new key to answer", || {
        Ok(daemon
            .json("POST", &sign_path("wk"), Some(&body_for("wk")))?
            .0
            == 200)
    })?;
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200);
    assert_verifies(&token, &leaves[1], &answer)?;
    assert!(daemon.log_text().contains("configuration reloaded"));

    // Not TOML: refused, the old configuration serves.
    std::fs::write(&daemon.config, "[token\nthis is not toml")?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload to be refused", || {
        Ok(daemon.log_text().contains("reload refused"))
    })?;
    for (key, leaf) in [("epuap", &leaves[0]), ("wk", &leaves[1])] {
        let (status, answer) = daemon.json("POST", &sign_path(key), Some(&body_for(key)))?;
        assert_eq!(status, 200, "{key} after a refused reload: {answer}");
        assert_verifies(&token, leaf, &answer)?;
    }
    // A label the token does not have: the access rules apply at once (the keys that are
    // no longer configured are gone), and the new key is pending, not served.
    let ghost = Daemon::config_text(
        &token,
        &[KeySetup {
            name: "ghost",
            label: "not-on-the-token",
            ..WK
        }],
        "",
    );
    std::fs::write(&daemon.config, ghost)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the new key to be pending", || {
        Ok(daemon.log_text().contains("pending"))
    })?;
    let (status, answer) = daemon.json("POST", &sign_path("ghost"), Some(&body_for("wk")))?;
    assert_eq!(
        (status, code(&answer)),
        (503, &json!("key_unavailable")),
        "{answer}"
    );
    for key in ["epuap", "wk"] {
        let (status, answer) = daemon.json("POST", &sign_path(key), Some(&body_for(key)))?;
        assert_eq!(
            (status, code(&answer)),
            (404, &json!("unknown_key")),
            "{key}: {answer}"
        );
    }
    assert!(
        daemon.log_text().contains("not-on-the-token"),
        "{}",
        daemon.log_text()
    );
    // The good configuration back: both keys serve again.
    std::fs::write(&daemon.config, Daemon::config_text(&token, &keys, ""))?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the keys to answer again", || {
        Ok(daemon
            .json("POST", &sign_path("epuap"), Some(&body_for("epuap")))?
            .0
            == 200)
    })?;
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[1], &answer)?;
    assert!(daemon.stop()?.success());
    Ok(())
}

/// `systemctl reload` (or logrotate) may send SIGHUP the moment the daemon is up. A
/// shell's built-in `kill`, spinning until the socket appears, is fast enough to land in
/// the window between bind and the signal handler, if there is one (it killed 11 of 40
/// daemons before the handlers were installed ahead of the bind).
#[test]
fn sighup_as_soon_as_the_socket_appears_reloads_instead_of_killing() -> Result {
    const ROUNDS: usize = 10;
    let token = TestToken::new()?;
    let keys = [WK];
    provision(&token, &keys)?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &keys, ""))?;
    let log = token.path("serve.log");
    let script = r#"
        for i in $(seq 1 "$ROUNDS"); do
            "$BIN" -v serve --config "$CONF" 2>>"$LOG" &
            pid=$!
            while [ ! -S "$SOCK" ]; do :; done
            kill -HUP "$pid"
            sleep 0.1
            if ! kill -0 "$pid" 2>/dev/null; then
                wait "$pid"; echo "round $i: SIGHUP killed the daemon (exit $?)"; exit 1
            fi
            kill -TERM "$pid"
            wait "$pid" || { echo "round $i: exit $? after SIGTERM"; exit 1; }
        done
    "#;
    let out = Command::new("bash")
        .args(["-c", script])
        .env("BIN", env!("CARGO_BIN_EXE_hsm-signer"))
        .env("CONF", &config)
        .env("SOCK", token.path("hsm-signer.sock"))
        .env("LOG", &log)
        .env("ROUNDS", ROUNDS.to_string())
        .env("SOFTHSM2_CONF", &token.conf)
        .env_remove("HSM_SIGNER_LOG")
        .output()?;
    let log = std::fs::read_to_string(log)?;
    assert!(
        out.status.success(),
        "{}{log}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        log.matches("configuration reloaded").count(),
        ROUNDS,
        "{log}"
    );
    Ok(())
}

#[test]
fn sigterm_exits_0_and_removes_the_socket() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let (status, _) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200);
    let socket = daemon.socket.clone();
    let log = daemon.log.clone();
    let status = daemon.stop()?;
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "socket left behind");
    assert!(std::fs::read_to_string(log)?.contains("stopped"));
    Ok(())
}

#[test]
fn a_stale_socket_is_replaced_at_start() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    let leaves = provision(&token, &keys)?;
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(
        token.path("hsm-signer.sock"),
    )?);
    assert!(token.path("hsm-signer.sock").exists());
    let daemon = Daemon::start(&token, &keys, "")?;
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[0], &answer)?;
    assert!(daemon.log_text().contains("removing a stale socket"));
    Ok(())
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    provision(&token, &keys)?;
    let path = token.path("hsm-signer.sock");
    std::fs::write(&path, "not a socket")?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &keys, ""))?;
    let (status, log) = serve_once(&token, &config)?;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&path)?, "not a socket");
    Ok(())
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    let leaves = provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "")?;
    let (status, log) = serve_once(&token, &daemon.config)?;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("in use"), "{log}");
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "the first daemon still serves: {answer}");
    assert_verifies(&token, &leaves[0], &answer)?;
    wait_for_lines(&daemon.audit, 1)?;
    let out = run_ok(
        token
            .hsm_signer()
            .args(["audit", "verify"])
            .arg(&daemon.audit),
    )?;
    assert!(String::from_utf8(out.stdout)?.starts_with("OK: 1 lines"));
    Ok(())
}

#[test]
fn a_wrong_pin_stops_serve_after_one_login_attempt() -> Result {
    let token = TestToken::new()?;
    let keys = [WK];
    provision(&token, &keys)?;
    write_secret(&token.pin_file, "0000")?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &keys, ""))?;
    let (status, log) = serve_once(&token, &config)?;
    assert_eq!(
        status.code(),
        Some(78),
        "EX_CONFIG, so systemd stops retrying the PIN: {log}"
    );
    assert!(
        log.contains("wrong PIN") && log.contains("CKR_PIN_INCORRECT"),
        "{log}"
    );
    assert!(log.contains("not retried"), "{log}");
    assert_eq!(
        log.matches("CKR_PIN_INCORRECT").count(),
        1,
        "one attempt: {log}"
    );
    assert!(!token.path("hsm-signer.sock").exists());
    // The right PIN still works: nothing was locked.
    write_secret(&token.pin_file, PIN)?;
    let daemon = Daemon::start_with(&token, config)?;
    let (status, _) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_label_not_on_the_token_stops_serve_naming_it() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[WK])?;
    let keys = [
        WK,
        KeySetup {
            name: "ghost",
            label: "not-on-the-token",
            ..EPUAP
        },
    ];
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &keys, ""))?;
    let (status, log) = serve_once(&token, &config)?;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("\"not-on-the-token\""), "{log}");
    assert!(!token.path("hsm-signer.sock").exists());
    Ok(())
}

/// `cat FILE` as uid 0 without any capability: the daemon's own uid, but no
/// CAP_SYS_PTRACE to override a process being not dumpable.
fn read_without_caps(file: &str) -> Result<std::process::Output> {
    Ok(Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "cat", file])
        .output()?)
}

/// Run as root without capabilities, the daemon is reachable through /proc only by its
/// dumpable flag: a capability-less root reader can read an ordinary process's environ
/// (the control) but not the daemon's.
#[test]
fn the_daemon_is_not_dumpable_and_its_pin_is_nowhere_to_read() -> Result {
    const SECRET_PIN: &str = "Qx7-pin-9Kz";
    let token = TestToken::new()?;
    let keys = [WK];
    let leaves = provision(&token, &keys)?;
    run_ok(
        token
            .pkcs11_tool()
            .args(["--change-pin", "--new-pin", SECRET_PIN]),
    )?;
    write_secret(&token.pin_file, SECRET_PIN)?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &keys, ""))?;
    let no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"];
    let daemon = Daemon::start_wrapped(&token, config, &no_caps, &["-vv"])?;
    let (status, answer) = daemon.json("POST", &sign_path("wk"), Some(&body_for("wk")))?;
    assert_eq!(status, 200, "{answer}");
    assert_verifies(&token, &leaves[0], &answer)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    let proc = format!("/proc/{}", daemon.pid());

    let limits = std::fs::read_to_string(format!("{proc}/limits"))?;
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .ok_or("no core limit")?;
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );

    let mut control = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "sleep", "30"])
        .spawn()?;
    // Once setpriv has exec'd sleep, the control runs without capabilities.
    let control_proc = format!("/proc/{}", control.id());
    wait_until(Duration::from_secs(5), "the control to exec", || {
        Ok(std::fs::read_to_string(format!("{control_proc}/comm"))?.trim() == "sleep")
    })?;
    let control_read = read_without_caps(&format!("{control_proc}/environ"));
    control.kill()?;
    control.wait()?;
    assert!(
        control_read?.status.success(),
        "the reader can read an ordinary process"
    );
    for file in ["environ", "maps", "mem"] {
        let out = read_without_caps(&format!("{proc}/{file}"))?;
        assert!(
            !out.status.success(),
            "{file} readable without CAP_SYS_PTRACE"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{file}: {out:?}"
        );
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "cat",
            ])
            .arg(format!("{proc}/{file}"))
            .output()?;
        assert!(!out.status.success(), "{file} readable by uid {NOBODY}");
    }

    // The PIN is in none of what is left to read: argv, environment, log, audit.
    let cmdline = std::fs::read(format!("{proc}/cmdline"))?;
    let environ = std::fs::read(format!("{proc}/environ"))?;
    assert!(
        String::from_utf8_lossy(&cmdline).contains("serve"),
        "read the right process"
    );
    assert!(!environ.is_empty());
    let audit = wait_for_lines(&daemon.audit, 1)?.join("\n");
    let log = daemon.log_text();
    assert!(
        log.contains("ready") && log.contains("configuration reloaded"),
        "{log}"
    );
    for (what, text) in [
        ("cmdline", String::from_utf8_lossy(&cmdline).into_owned()),
        ("environ", String::from_utf8_lossy(&environ).into_owned()),
        ("log", log),
        ("audit", audit),
    ] {
        assert!(
            !text.contains(SECRET_PIN),
            "the PIN is in the daemon's {what}"
        );
    }
    assert!(daemon.stop()?.success());
    Ok(())
}
