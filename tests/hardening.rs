//! Hardening issue, items 5, 8 and 9: a bounded metric label set, access rules that a
//! reload applies while the token is down, escaped Unicode format characters in the
//! audit log, and secret and configuration files open to others refused by the daemon.

use crate::common;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::daemon::*;
use common::*;
use serde_json::{json, Value};

use crate::common::daemon::EPUAP;

/// Sends `count` requests with made-up algorithm names over one keep-alive connection
/// (Python's http.client), returning the statuses seen.
fn flood_unknown_algorithms(socket: &std::path::Path, count: usize) -> Result<String> {
    let script = r#"
import http.client, json, socket, sys, collections
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
conn = Unix(sys.argv[1])
seen = collections.Counter()
for n in range(int(sys.argv[2])):
    body = json.dumps({"algorithm": "made-up-%d" % n, "data": "AAAA"})
    conn.request("POST", "/v1/keys/epuap/sign", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    seen[answer.status] += 1
print(json.dumps(seen))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(count.to_string())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn made_up_algorithm_names_do_not_grow_the_metrics() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    let seen = flood_unknown_algorithms(&daemon.socket, 2_000)?;
    assert!(seen.contains("\"422\": 2000"), "{seen}");
    let (status, metrics) = daemon.curl("GET", "/metrics", None)?;
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("made-up"),
        "a caller's text became a label"
    );
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("hsm_signer_sign_requests_total{"))
        .count();
    eprintln!(
        "2,000 made-up algorithm names: {series} request series, /metrics {} bytes",
        metrics.len()
    );
    assert_eq!(series, 1, "{metrics}");
    assert!(metrics.contains(
        "hsm_signer_sign_requests_total{key=\"epuap\",algorithm=\"unknown\",outcome=\"unsupported_algorithm\"} 2000"
    ));
    Ok(())
}

#[test]
fn a_reload_that_revokes_access_applies_while_the_token_is_down() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    let body = sign_body("RS256", "data", b"x");
    let (status, _) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
    assert_eq!(status, 200);
    // The token goes away, and stays away during the reload.
    let dir = token.token_dir()?;
    let aside = token.path("token-moved-away");
    std::fs::rename(&dir, &aside)?;
    wait_until(Duration::from_secs(10), "the token to be seen down", || {
        let (status, answer) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
        Ok(status == 503 && answer["error"]["code"] == "token_unavailable")
    })?;
    // Only uid 65534 may use the key now: root (this test) is revoked.
    let revoked = KeySetup {
        extra: "allowed_uids = [65534]",
        ..EPUAP
    };
    std::fs::write(&daemon.config, Daemon::config_text(&token, &[revoked], ""))?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the access rules to apply", || {
        let (status, _) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
        Ok(status == 403)
    })?;
    assert!(daemon.log_text().contains("access rules in force"));
    // Token back: still refused, the revocation held.
    std::fs::rename(&aside, &dir)?;
    wait_until(Duration::from_secs(10), "the token to be back", || {
        let (status, health) = daemon.json("GET", "/v1/health", None)?;
        Ok(status == 200 && health["token_state"]["state"] == "up")
    })?;
    let (status, answer) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden")),
        "{answer}"
    );
    Ok(())
}

#[test]
fn unicode_format_and_separator_characters_are_escaped_in_the_audit_log() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    // U+202E (right-to-left override) in the key name, U+2028 in the algorithm.
    let (status, _) = daemon.json(
        "POST",
        "/v1/keys/epuap%E2%80%AEtxt.exe/sign",
        Some(&sign_body("RS256", "data", b"x")),
    )?;
    assert_eq!(status, 404);
    let body = json!({"algorithm": "RS256\u{2028}forged", "data": "AAAA"}).to_string();
    let (status, _) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
    assert_eq!(status, 422);
    let lines = wait_for_lines(&daemon.audit, 2)?;
    let text = lines.join("\n");
    assert!(
        !text.contains('\u{202e}') && !text.contains('\u{2028}'),
        "{text}"
    );
    let first: Value = serde_json::from_str(&lines[0])?;
    let second: Value = serde_json::from_str(&lines[1])?;
    assert_eq!(first["key"], "epuap\\u{202e}txt.exe");
    assert_eq!(second["algorithm"], "RS256\\u{2028}forged");
    Ok(())
}

#[test]
fn the_daemon_refuses_a_pin_file_or_configuration_open_to_others() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let config = token.path("config.toml");
    std::fs::write(&config, Daemon::config_text(&token, &[EPUAP], ""))?;
    let serve = || -> Result<(Option<i32>, String)> {
        let out = token
            .hsm_signer()
            .args(["serve", "--config"])
            .arg(&config)
            .output()?;
        Ok((out.status.code(), String::from_utf8(out.stderr)?))
    };
    for mode in [0o644, 0o604, 0o660] {
        std::fs::set_permissions(&token.pin_file, std::fs::Permissions::from_mode(mode))?;
        let (code, err) = serve()?;
        assert_eq!(code, Some(1), "mode {mode:o}: {err}");
        assert!(
            err.contains(&format!("mode {mode:04o}")) && err.contains("chmod"),
            "{err}"
        );
        assert!(!err.contains(PIN), "{err}");
    }
    // 0640, as docs/operations.md sets it up (root:hsm-signer), is accepted.
    std::fs::set_permissions(&token.pin_file, std::fs::Permissions::from_mode(0o640))?;
    let daemon = Daemon::start_with(&token, config.clone())?;
    let (status, _) = daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", b"x")),
    )?;
    assert_eq!(status, 200);
    daemon.stop()?;
    // A configuration every local user may change is refused.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666))?;
    let (code, err) = serve()?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("mode 0666"), "{err}");
    Ok(())
}
