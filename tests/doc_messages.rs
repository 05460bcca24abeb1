//! The docs' error tables quote what the tool really prints. Every message in backticks in
//! the "Message" column of docs/operations.md §5.2 and docs/import.md §6 (and their Polish
//! twins), every journal line and error code in operations.md §5.1, and every row of
//! docs/api.md's request → status → body table (and docs/pl/api.md's twin, which must list the
//! same codes and answers) is provoked here against a real SoftHSM
//! token and a real daemon, and the doc's text must match what came out:
//! - `...` and `…` in a quote stand for any text within one line, and a lone `N` for a
//!   number; otherwise a quote must appear as it is in one line of the real output
//!   (standard error, the daemon's log) or, for api.md, be the whole HTTP body;
//! - the test's token labels are shown as `GSKO`, as in the docs;
//! - a quote the tool does not print fails the test with the doc, its line and the output.
//!
//! SoftHSM 2.6.1 never reports CKF_USER_PIN_FINAL_TRY, and the daemon's `pin_refused`,
//! `shutting_down` and "key not loaded" answers need a card or a race to provoke: those
//! few quotes (listed in [`SOURCE_ONLY`]) are checked against the literal text in src/.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::{parse_http, provision, raw_http, raw_post, serve_once, Daemon, KeySetup};
use common::fixtures::{secret_file, write_p12, write_pem, Ca, KeySpec};
use common::p11kit::{P11KitServer, CLIENT_MODULE};
use common::{run_ok, Result, TestToken, MODULE};

/// Quotes that cannot be provoked on SoftHSM or without a race, by a text they contain,
/// with where their literal lives. Checked against that source file instead.
const SOURCE_ONLY: &[(&str, &str)] = &[
    ("CKF_USER_PIN_FINAL_TRY", "src/token/error.rs"),
    ("\"pin_refused\"", "src/server/error.rs"),
    ("\"shutting_down\"", "src/server/error.rs"),
    (
        "this key is not loaded from the token",
        "src/server/error.rs",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One quote from a doc table.
#[derive(Debug, Clone)]
struct Quote {
    doc: String,
    line: usize,
    text: String,
}

/// The code spans of a Markdown cell: a run of N backticks up to the next run of exactly
/// N, with one space trimmed at each end when both are there (CommonMark).
fn code_spans(cell: &str) -> Vec<String> {
    let chars: Vec<char> = cell.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let run = |at: usize| chars[at..].iter().take_while(|c| **c == '`').count();
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let n = run(i);
        let start = i + n;
        let mut j = start;
        let mut end = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = run(j);
                if m == n {
                    end = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        let Some(end) = end else { break };
        let text: String = chars[start..end].iter().collect();
        let text = match text.strip_prefix(' ').and_then(|t| t.strip_suffix(' ')) {
            Some(t) if !t.trim().is_empty() => t.to_string(),
            _ => text,
        };
        out.push(text);
        i = end + n;
    }
    out
}

/// The cells of a table row, split at `|` outside code spans.
fn cells(row: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut ticks: Option<usize> = None;
    let chars: Vec<char> = row.trim().trim_start_matches('|').chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            let n = chars[i..].iter().take_while(|c| **c == '`').count();
            ticks = match ticks {
                None => Some(n),
                Some(open) if open == n => None,
                other => other,
            };
            cell.extend(std::iter::repeat_n('`', n));
            i += n;
            continue;
        }
        if c == '|' && ticks.is_none() {
            out.push(std::mem::take(&mut cell).trim().to_string());
        } else {
            cell.push(c);
        }
        i += 1;
    }
    if !cell.trim().is_empty() {
        out.push(cell.trim().to_string());
    }
    out
}

/// A table's header cells, and its rows with their line numbers.
type Table = (Vec<String>, Vec<(usize, Vec<String>)>);

/// The first table under the heading that starts with `heading` (`### 5.2`), as its
/// header cells and its rows with their line numbers.
fn table(doc: &str, heading: &str) -> Result<Table> {
    let text = std::fs::read_to_string(repo().join(doc))?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(heading))
        .ok_or_else(|| format!("{doc}: no heading {heading:?}"))?;
    let mut i = start + 1;
    while i < lines.len() && !lines[i].starts_with('|') {
        if lines[i].starts_with('#') {
            return Err(format!("{doc}: no table under {heading:?}").into());
        }
        i += 1;
    }
    let header = cells(lines.get(i).ok_or("no table")?);
    let mut rows = Vec::new();
    i += 2;
    while i < lines.len() && lines[i].starts_with('|') {
        rows.push((i + 1, cells(lines[i])));
        i += 1;
    }
    Ok((header, rows))
}

/// The code spans of the column whose header starts with one of `columns`.
fn column_quotes(doc: &str, heading: &str, columns: &[&str]) -> Result<Vec<Quote>> {
    let (header, rows) = table(doc, heading)?;
    let col = header
        .iter()
        .position(|h| columns.iter().any(|c| h.starts_with(c)))
        .ok_or_else(|| format!("{doc} {heading}: no column {columns:?} in {header:?}"))?;
    let mut out = Vec::new();
    for (line, row) in rows {
        for text in code_spans(row.get(col).map(String::as_str).unwrap_or("")) {
            out.push(Quote {
                doc: doc.to_string(),
                line,
                text,
            });
        }
    }
    Ok(out)
}

/// The pieces of a quote between its wildcards (`...`, `…`, a lone `N`).
fn pieces(pattern: &str) -> Vec<String> {
    let marked = pattern.replace("...", "\u{1}").replace('…', "\u{1}");
    let mut out = String::new();
    let chars: Vec<char> = marked.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let alnum = |j: Option<&char>| j.is_some_and(|c| c.is_alphanumeric());
        let lone_n = *c == 'N'
            && !alnum(i.checked_sub(1).and_then(|p| chars.get(p)))
            && !alnum(chars.get(i + 1));
        out.push(if lone_n { '\u{1}' } else { *c });
    }
    out.split('\u{1}').map(str::to_string).collect()
}

/// Does `pattern` match within `line` (anywhere in it, or all of it when `whole`)?
fn matches(pattern: &str, line: &str, whole: bool) -> bool {
    let parts = pieces(pattern);
    let mut rest = line;
    for (n, part) in parts.iter().enumerate() {
        let last = n + 1 == parts.len();
        if n == 0 && whole {
            match rest.strip_prefix(part.as_str()) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if last && whole && n > 0 {
            return rest.ends_with(part.as_str());
        } else {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    !whole || rest.is_empty()
}

/// The source file whose literal text stands in for `quote`, if it is one of those.
fn source_only(quote: &str) -> Option<&'static str> {
    SOURCE_ONLY
        .iter()
        .find(|(marker, _)| quote.contains(marker) || marker.trim_matches('"') == quote)
        .map(|(_, file)| *file)
}

/// Does `quote` match a line of `file` in src/ (its `\"` unescaped)?
fn in_source(quote: &str, file: &str) -> Result<bool> {
    let text = std::fs::read_to_string(repo().join(file))?.replace("\\\"", "\"");
    Ok(text.lines().any(|l| matches(quote, l, false)))
}

/// The quotes that no line of `outputs` matches, as problems to print.
fn unmatched(quotes: &[Quote], outputs: &[String]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for q in quotes {
        let found = match source_only(&q.text) {
            Some(file) => in_source(&q.text, file)?,
            None => outputs
                .iter()
                .flat_map(|o| o.lines())
                .any(|l| matches(&q.text, l, false)),
        };
        if !found {
            problems.push(format!(
                "{}:{}: `{}` is not what the tool prints",
                q.doc, q.line, q.text
            ));
        }
    }
    Ok(problems)
}

fn report(problems: &[String], outputs: &[String]) {
    assert!(
        problems.is_empty(),
        "{}\n\n--- what the tool printed:\n{}",
        problems.join("\n"),
        outputs.join("\n---\n")
    );
}

/// The test token labels shown as the docs' `GSKO`.
fn as_gsko(text: &str, tokens: &[&TestToken]) -> String {
    let mut out = text.to_string();
    for t in tokens {
        out = out.replace(&t.label, "GSKO");
    }
    out
}

/// Standard error of a command expected to fail.
fn stderr_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if out.status.success() {
        return Err(format!("{cmd:?} succeeded").into());
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write_config(token: &TestToken, name: &str, text: &str) -> Result<PathBuf> {
    let path = token.path(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

use crate::common::daemon::EPUAP;

/// What `serve` prints for each start-up fault of operations.md §5.2.
fn serve_faults() -> Result<Vec<String>> {
    let token = TestToken::new()?;
    let empty = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let base = Daemon::config_text(&token, &[EPUAP], "");
    let socket = token.path("hsm-signer.sock").display().to_string();
    let audit = token.path("audit.jsonl").display().to_string();
    let mut outputs = Vec::new();
    let mut once = |t: &TestToken, name: &str, text: String| -> Result {
        let (status, log) = serve_once(t, &write_config(t, name, &text)?)?;
        assert!(!status.success(), "{name}: serve exited 0: {log}");
        outputs.push(as_gsko(&log, &[&token, &empty]));
        Ok(())
    };

    // Another daemon on the socket.
    let daemon = Daemon::start(&token, &[EPUAP], "")?;
    once(
        &token,
        "second.toml",
        base.replace(&audit, &token.path("second.jsonl").display().to_string()),
    )?;
    daemon.stop()?;
    // A file in the way.
    let in_the_way = token.path("in-the-way");
    std::fs::write(&in_the_way, "")?;
    once(
        &token,
        "file.toml",
        base.replace(&socket, &in_the_way.display().to_string()),
    )?;
    // A wrong PIN.
    let wrong = secret_file(token.dir.path(), "wrong-pin", "9999")?;
    once(
        &token,
        "pin.toml",
        base.replace(
            &token.pin_file.display().to_string(),
            &wrong.display().to_string(),
        ),
    )?;
    // No key with that label on the token.
    once(
        &empty,
        "nokey.toml",
        Daemon::config_text(&empty, &[EPUAP], ""),
    )?;
    // No such module.
    once(
        &token,
        "module.toml",
        base.replace(MODULE, "/usr/lib/x86_64-linux-gnu/pkcs11/libnone.so"),
    )?;
    // A misspelt setting.
    once(
        &token,
        "typo.toml",
        base.replace("sessions = 2", "sesions = 2"),
    )?;
    // An audit log whose last line is broken.
    std::fs::write(token.path("broken.jsonl"), "{\"seq\":1,\"cut off")?;
    once(
        &token,
        "audit.toml",
        base.replace(&audit, &token.path("broken.jsonl").display().to_string()),
    )?;
    // A token that is not there yet: the daemon keeps running and says so.
    let absent = base.replace(
        &format!("token = \"{}\"", token.label),
        "token = \"GSKO-not-yet\"",
    );
    let daemon = Daemon::start_with(&token, write_config(&token, "absent.toml", &absent)?)?;
    std::thread::sleep(Duration::from_millis(300));
    outputs.push(as_gsko(&daemon.log_text(), &[&token]));
    daemon.stop()?;
    Ok(outputs)
}

#[test]
fn operations_5_2_quotes_what_serve_prints_when_it_does_not_start() -> Result {
    let outputs = serve_faults()?;
    let mut quotes = Vec::new();
    for doc in ["docs/operations.md", "docs/pl/operations.md"] {
        quotes.extend(column_quotes(doc, "### 5.2", &["Message", "Komunikat"])?);
    }
    assert!(quotes.len() >= 18, "too few quotes found: {quotes:?}");
    report(&unmatched(&quotes, &outputs)?, &outputs);
    Ok(())
}

/// What `import` prints for each fault of import.md §6.
fn import_faults() -> Result<Vec<String>> {
    let token = TestToken::new()?;
    let dir = token.dir.path();
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", "hasło")?;
    let password = secret_file(dir, "password", "hasło")?;
    let import_with = |p12: &Path, pin: &Path, password: &Path, extra: &[&str]| -> Command {
        let mut cmd = token.hsm_signer();
        cmd.args(["import", "--module", MODULE, "--token", &token.label])
            .arg("--pin-file")
            .arg(pin)
            .arg("--p12")
            .arg(p12)
            .arg("--password-file")
            .arg(password)
            .args(["--label", "gsko-epuap"])
            .args(extra);
        cmd
    };
    let import = |p12: &Path, extra: &[&str]| import_with(p12, &token.pin_file, &password, extra);
    let mut outputs = Vec::new();
    let mut push = |text: String| outputs.push(as_gsko(&text, &[&token]));

    let wrong = secret_file(dir, "wrong", "haslo")?;
    push(stderr_of(&mut import_with(
        &p12,
        &token.pin_file,
        &wrong,
        &[],
    ))?);
    let truncated = token.path("truncated.p12");
    std::fs::write(&truncated, &std::fs::read(&p12)?[..500])?;
    push(stderr_of(&mut import(&truncated, &[]))?);
    let pem = write_pem(dir, "leaf", &leaf, &ca)?;
    let nokey = token.path("nokey.p12");
    run_ok(
        Command::new("openssl")
            .args([
                "pkcs12",
                "-export",
                "-nokeys",
                "-passout",
                "pass:hasło",
                "-in",
            ])
            .arg(&pem.cert)
            .arg("-out")
            .arg(&nokey),
    )?;
    push(stderr_of(&mut import(&nokey, &[]))?);
    let other = ca.leaf(KeySpec::Rsa(2048))?;
    let other_cert = token.path("other.cer");
    std::fs::write(&other_cert, other.cert.to_der()?)?;
    push(stderr_of(import(&p12, &["--cert"]).arg(&other_cert))?);
    let ed = ca.leaf(KeySpec::Ed25519)?;
    let ed_p12 = token.path("ed25519.p12");
    write_p12(&ed_p12, &ed, &ca, "ed", "hasło")?;
    push(stderr_of(&mut import(&ed_p12, &[]))?);
    push(stderr_of(
        token
            .hsm_signer()
            .args(["import", "--module", "/usr/lib/nothing/libnone.so"])
            .args(["--token", &token.label, "--label", "x", "--p12"])
            .arg(&p12)
            .arg("--pin-file")
            .arg(&token.pin_file)
            .arg("--password-file")
            .arg(&password),
    )?);
    push(stderr_of(
        token
            .hsm_signer()
            .args(["import", "--module", MODULE, "--token", "GSKO"])
            .args(["--label", "x", "--p12"])
            .arg(&p12)
            .arg("--pin-file")
            .arg(&token.pin_file)
            .arg("--password-file")
            .arg(&password),
    )?);
    let bad_pin = secret_file(dir, "bad-pin", "9999")?;
    push(stderr_of(&mut import_with(&p12, &bad_pin, &password, &[]))?);
    // Imported once; the second time the label is taken. The password file readable by
    // others draws a warning on the way.
    let out = run_ok(&mut import(&p12, &[]))?;
    push(String::from_utf8_lossy(&out.stderr).into_owned());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644))?;
    }
    push(stderr_of(&mut import(&p12, &[]))?);
    Ok(outputs)
}

#[test]
fn import_troubleshooting_quotes_what_import_prints() -> Result {
    let outputs = import_faults()?;
    let mut quotes = Vec::new();
    for doc in ["docs/import.md", "docs/pl/import.md"] {
        let heading = if doc.contains("/pl/") {
            "## 6."
        } else {
            "## 6. Troubleshooting"
        };
        quotes.extend(column_quotes(doc, heading, &["Message", "Komunikat"])?);
    }
    assert!(quotes.len() >= 20, "too few quotes found: {quotes:?}");
    report(&unmatched(&quotes, &outputs)?, &outputs);
    Ok(())
}

/// One answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<String>,
    body: String,
}

fn answer(raw: &[u8]) -> Result<Answer> {
    let (status, body) = parse_http(raw)?;
    let head = String::from_utf8_lossy(raw);
    let headers = head
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
            None => l.to_string(),
        })
        .collect();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8(body)?,
    })
}

fn request(socket: &Path, method: &str, path: &str, body: &str) -> Result<Answer> {
    let raw = if method == "POST" {
        raw_post(path, body)
    } else {
        format!("{method} {path} HTTP/1.1\r\nHost: hsm-signer\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    answer(&raw_http(socket, &raw, Duration::from_secs(20))?)
}

/// `n` signing requests at once; their answers.
fn at_once(socket: &Path, n: usize, body: &str) -> Result<Vec<Answer>> {
    let raws: Vec<std::result::Result<Vec<u8>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    raw_http(
                        socket,
                        &raw_post("/v1/keys/epuap/sign", body),
                        Duration::from_secs(20),
                    )
                    .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    raws.into_iter().map(|r| answer(&r?)).collect()
}

/// `curl -i` as `uid` (gid the same, no other groups); the answer.
fn as_uid(daemon: &Daemon, uid: u32, path: &str) -> Result<Answer> {
    let out = run_ok(
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "20",
                "--unix-socket",
            ])
            .arg(&daemon.socket)
            .arg(format!("http://localhost{path}")),
    )?;
    answer(&out.stdout)
}

/// Repeats `f` (at most 50 times, 100 ms apart) until an answer has `code`; all answers.
fn until_code(code: &str, mut f: impl FnMut() -> Result<Vec<Answer>>) -> Result<Vec<Answer>> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let answers = f()?;
        let hit = answers
            .iter()
            .any(|a| a.body.contains(&format!("\"code\":\"{code}\"")));
        seen.extend(answers);
        if hit {
            return Ok(seen);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut got: Vec<String> = seen
        .iter()
        .map(|a| format!("{} {}", a.status, a.body))
        .collect();
    got.dedup();
    Err(format!("no {code} in 50 tries: {got:?}").into())
}

const DATA: &str = r#"{"algorithm":"RS256","data":"PGE+"}"#;

/// Every answer of api.md's error table, provoked on real daemons, and their logs.
fn api_answers() -> Result<(Vec<Answer>, Vec<String>)> {
    let token = TestToken::new()?;
    let wk = KeySetup {
        name: "wk",
        label: "gsko-wk",
        spec: KeySpec::P256,
        algorithms: &["ES256"],
        extra: "allowed_uids = [33]",
    };
    let spare = KeySetup::rs256("spare", "spare");
    provision(&token, &[EPUAP, wk, spare])?;
    // A key whose certificate expired on 2025-12-31.
    let ca = Ca::sigillum()?;
    let key = KeySpec::Rsa(2048).generate()?;
    let until = openssl::asn1::Asn1Time::from_str("20251231000000Z")?;
    let leaf = common::fixtures::Leaf {
        cert: ca.issue_until(&key, "gsko.przykladowo.pl", until)?,
        key,
    };
    let p12 = token.path("old.p12");
    write_p12(&p12, &leaf, &ca, "old", "hasło")?;
    let password = secret_file(token.dir.path(), "old-password", "hasło")?;
    run_ok(common::fixtures::import_cmd(&token, &p12, &password).args(["--label", "old"]))?;

    let keys = [
        EPUAP,
        KeySetup {
            name: "wk",
            label: "gsko-wk",
            spec: KeySpec::P256,
            algorithms: &["ES256"],
            extra: "allowed_uids = [33]",
        },
        KeySetup::rs256("spare", "spare"),
        KeySetup::rs256("old", "old"),
    ];
    let mut answers = Vec::new();
    let mut logs = Vec::new();
    let daemon = Daemon::start(&token, &keys, "allowed_uids = [0, 33]")?;
    daemon.open_socket_to_everyone()?;
    let socket = daemon.socket.clone();
    let sign =
        |key: &str, body: &str| request(&socket, "POST", &format!("/v1/keys/{key}/sign"), body);
    for body in [
        r#"{"algorithm":"RS256"}"#,
        r#"{"algorithm":"RS256","data":"!!!"}"#,
        r#"{"algorithm":"RS256","data":"PGE+","format":"der"}"#,
        r#"{"algorithm":"RS256","data":"PGE+","extra":1}"#,
        "not json",
        r#"{"algorithm":"RS256","data":"PGE+","digest":"PGE+"}"#,
        r#"{"algorithm":"HS256","data":"PGE+"}"#,
        r#"{"algorithm":"RS512","data":"PGE+"}"#,
        r#"{"algorithm":"RS256","digest":"PGE+"}"#,
    ] {
        answers.push(sign("epuap", body)?);
    }
    answers.push(sign("wk", r#"{"algorithm":"ES256","data":"PGE+"}"#)?);
    answers.push(sign("nope", DATA)?);
    answers.push(sign("old", DATA)?);
    answers.push(request(&socket, "GET", "/v2/whatever", "")?);
    answers.push(request(&socket, "GET", "/v1/keys/epuap/sign", "")?);
    answers.push(sign(
        "epuap",
        &format!(
            r#"{{"algorithm":"RS256","data":"{}"}}"#,
            "A".repeat(2_000_000)
        ),
    )?);
    answers.push(answer(&raw_http(
        &socket,
        b"POST /v1/keys/epuap/sign HTTP/1.1\r\nHost: hsm-signer\r\nContent-Length: 100\r\n\r\n{\"algorithm\"",
        Duration::from_secs(20),
    )?)?);
    answers.push(as_uid(&daemon, 65534, "/v1/keys")?);
    // A refused uid, several times within a second: one journal line, then a count.
    for _ in 0..4 {
        answers.push(as_uid(&daemon, 1001, "/v1/keys")?);
    }
    // The count is logged at the first tick (1 s) after the window (1 s) ends.
    std::thread::sleep(Duration::from_millis(2500));
    // A key deleted under the running daemon.
    run_ok(
        token
            .pkcs11_tool()
            .args(["--delete-object", "--type", "privkey", "--label", "spare"]),
    )?;
    answers.extend(until_code("key_unavailable", || {
        Ok(vec![sign("spare", DATA)?])
    })?);
    logs.push(daemon.log_text());
    daemon.stop()?;

    // One session, a queue of one.
    let busy = Daemon::config_text(&token, &[EPUAP], "queue_depth = 1")
        .replace("sessions = 2", "sessions = 1");
    let daemon = Daemon::start_with(&token, write_config(&token, "busy.toml", &busy)?)?;
    answers.extend(until_code("overloaded", || {
        at_once(&daemon.socket, 60, DATA)
    })?);
    daemon.stop()?;
    let slow = busy.replace("queue_depth = 1", "queue_depth = 1\nrequest_timeout_ms = 1");
    let daemon = Daemon::start_with(&token, write_config(&token, "slow.toml", &slow)?)?;
    answers.extend(until_code("token_timeout", || {
        at_once(&daemon.socket, 60, DATA)
    })?);
    daemon.stop()?;

    // The token's link cut: p11-kit server killed.
    let p11_socket = token.path("p11kit.sock");
    let server = P11KitServer::start(&token, &p11_socket)?;
    let address = format!("unix:path={}", p11_socket.display());
    let remote = Daemon::config_text(&token, &[EPUAP], "")
        .replace(
            &format!("module = \"{MODULE}\""),
            &format!("module = \"{CLIENT_MODULE}\""),
        )
        .replace("interval_seconds = 1", "interval_seconds = 3600");
    let daemon = Daemon::start_with_env(
        &token,
        write_config(&token, "remote.toml", &remote)?,
        &[("P11_KIT_SERVER_ADDRESS", &address)],
    )?;
    answers.push(request(
        &daemon.socket,
        "POST",
        "/v1/keys/epuap/sign",
        DATA,
    )?);
    server.kill()?;
    answers.extend(until_code("token_unavailable", || {
        Ok(vec![request(
            &daemon.socket,
            "POST",
            "/v1/keys/epuap/sign",
            DATA,
        )?])
    })?);
    logs.push(daemon.log_text());
    daemon.stop()?;
    Ok((answers, logs))
}

/// A row of api.md's table: line, status, headers, body.
type ApiRow = (usize, u16, Vec<String>, String);

/// The request -> status -> body table under `heading` ("## Errors" in docs/api.md, "## Błędy"
/// in docs/pl/api.md): request, status (with headers in backticks), body.
fn api_rows(doc: &str, heading: &str) -> Result<Vec<ApiRow>> {
    let mut out = Vec::new();
    let text = std::fs::read_to_string(repo().join(doc))?;
    let errors = text
        .lines()
        .position(|l| l == heading)
        .ok_or_else(|| format!("{doc}: no {heading}"))?;
    let start = errors
        + text
            .lines()
            .skip(errors)
            .position(|l| l.starts_with("| Request | Status | Body |"))
            .ok_or_else(|| {
                format!("{doc}: no | Request | Status | Body | table under {heading}")
            })?;
    for (n, line) in text.lines().enumerate().skip(start + 2) {
        if !line.starts_with('|') {
            break;
        }
        let row = cells(line);
        let status: u16 = row
            .get(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .ok_or("no status")?
            .parse()?;
        let headers = code_spans(row.get(1).map(String::as_str).unwrap_or(""));
        let body = code_spans(row.get(2).map(String::as_str).unwrap_or(""))
            .into_iter()
            .next()
            .ok_or_else(|| format!("{doc}:{}: no body", n + 1))?;
        out.push((n + 1, status, headers, body));
    }
    Ok(out)
}

/// The API docs whose error tables are checked: the English reference and its Polish twin.
const API_DOCS: &[(&str, &str)] = &[("docs/api.md", "## Errors"), ("docs/pl/api.md", "## Błędy")];

#[test]
fn api_error_table_and_operations_5_1_quote_what_the_daemon_answers_and_logs() -> Result {
    let (answers, logs) = api_answers()?;
    let mut problems = Vec::new();
    for (doc, heading) in API_DOCS {
        let rows = api_rows(doc, heading)?;
        assert!(rows.len() >= 20, "{doc}: only {} rows", rows.len());
        for (line, status, headers, body) in &rows {
            let hit = answers.iter().any(|a| {
                a.status == *status
                    && matches(body, &a.body, true)
                    && headers
                        .iter()
                        .all(|h| a.headers.iter().any(|x| x.eq_ignore_ascii_case(h)))
            });
            if !hit {
                problems.push(format!(
                    "{doc}:{line}: {status} {headers:?} `{body}` is not an answer the daemon gave"
                ));
            }
        }
        // The bodies the doc gives in prose after the table.
        let text = std::fs::read_to_string(repo().join(doc))?;
        for (n, l) in text.lines().enumerate() {
            if let Some(body) = l
                .strip_prefix('`')
                .and_then(|l| l.trim_end_matches([',', '.']).strip_suffix('`'))
            {
                if body.starts_with("{\"error\"") {
                    let ok = match source_only(body) {
                        Some(file) => {
                            let message = body
                                .split("\"message\":\"")
                                .nth(1)
                                .and_then(|m| m.strip_suffix("\"}}"))
                                .unwrap_or(body);
                            in_source(message, file)?
                        }
                        None => answers.iter().any(|a| matches(body, &a.body, true)),
                    };
                    if !ok {
                        problems.push(format!(
                            "{doc}:{}: `{body}` is not an answer the daemon gives",
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    // operations.md §5.1: the error codes, and the journal lines quoted.
    let codes: Vec<String> = answers
        .iter()
        .filter_map(|a| {
            let v: serde_json::Value = serde_json::from_str(&a.body).ok()?;
            Some(v["error"]["code"].as_str()?.to_string())
        })
        .collect();
    let mut journal = Vec::new();
    for doc in ["docs/operations.md", "docs/pl/operations.md"] {
        let (_, rows) = table(doc, "### 5.1")?;
        for (line, row) in rows {
            for (col, cell) in row.iter().enumerate() {
                for span in code_spans(cell) {
                    let snake = !span.is_empty()
                        && span.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                    if col == 0 && snake {
                        let known = codes.contains(&span)
                            || source_only(&format!("\"{span}\""))
                                .map(|f| in_source(&format!("\"{span}\""), f))
                                .transpose()?
                                .unwrap_or(false);
                        if !known {
                            problems.push(format!("{doc}:{line}: the daemon answered no `{span}`"));
                        }
                    } else if span.split_whitespace().count() >= 5
                        && !["hsm-signer", "systemctl", "ls", "srw"]
                            .iter()
                            .any(|c| span.starts_with(c))
                    {
                        journal.push(Quote {
                            doc: doc.to_string(),
                            line,
                            text: span,
                        });
                    }
                }
            }
        }
    }
    assert!(
        journal.len() >= 6,
        "too few journal lines found in 5.1: {journal:?}"
    );
    let logs: Vec<String> = logs.iter().map(|l| as_gsko(l, &[])).collect();
    problems.extend(unmatched(&journal, &logs)?);
    let mut shown: Vec<String> = answers
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| {
            let headers: Vec<&String> = a
                .headers
                .iter()
                .filter(|h| !h.starts_with("date:"))
                .collect();
            format!(
                "{} {headers:?} {}",
                a.status,
                a.body.chars().take(300).collect::<String>()
            )
        })
        .collect();
    shown.sort();
    shown.dedup();
    shown.extend(logs.iter().cloned());
    report(&problems, &shown);
    Ok(())
}

#[test]
fn quotes_match_only_what_they_say() {
    assert!(matches(
        "... is in use by a running process (another hsm-signer?)",
        "error: /run/x.sock is in use by a running process (another hsm-signer?); stop it",
        false
    ));
    assert!(!matches(
        "... is in use by a running daemon",
        "error: /run/x.sock is in use by a running process",
        false
    ));
    assert!(matches(
        "configuration ... is not valid: ... line N",
        "configuration /etc/c.toml is not valid: unknown field at line 12, column 1",
        false
    ));
    assert!(matches(
        "refused N more from uid 1001",
        "refused 3 more from uid 1001",
        false
    ));
    assert!(!matches(
        "refused N more from uid 1001",
        "refused 3 more from uid 1002",
        false
    ));
    assert!(matches(r#"{"a":1}"#, r#"{"a":1}"#, true));
    assert!(!matches(r#"{"a":1}"#, r#"{"a":1} "#, true));
    assert!(!matches(r#"{"a":1}"#, r#" {"a":1}"#, true));
    assert_eq!(code_spans("``a `b` c`` and `d`"), vec!["a `b` c", "d"]);
    assert_eq!(cells("| `a|b` | c |"), vec!["`a|b`", "c"]);
}

/// The (status, code) rows of the code table after `heading` in `doc`.
fn code_rows(doc: &str, heading: &str) -> Result<Vec<(String, String)>> {
    let (header, rows) = table(doc, heading)?;
    let col = header
        .iter()
        .position(|h| h == "`code`")
        .ok_or_else(|| format!("{doc} {heading}: no `code` column in {header:?}"))?;
    let mut out: Vec<(String, String)> = rows
        .iter()
        .map(|(_, row)| {
            (
                row.first().cloned().unwrap_or_default(),
                row.get(col).cloned().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn the_polish_api_md_lists_the_same_codes_and_answers_as_the_english_one() -> Result {
    let pairs = [
        (("docs/api.md", "## Errors"), ("docs/pl/api.md", "## Błędy")),
        (
            ("docs/api.md", "Errors (besides those of `/sign`"),
            ("docs/pl/api.md", "### Błędy punktów końcowych XML"),
        ),
        (
            ("docs/api.md", "### Errors of the JOSE endpoints"),
            ("docs/pl/api.md", "### Błędy punktów końcowych JOSE"),
        ),
    ];
    for ((en, en_heading), (pl, pl_heading)) in pairs {
        let (en_codes, pl_codes) = (code_rows(en, en_heading)?, code_rows(pl, pl_heading)?);
        assert!(en_codes.len() >= 10, "{en} {en_heading}: {en_codes:?}");
        assert_eq!(
            en_codes, pl_codes,
            "{pl} ({pl_heading}) must list the codes of {en} ({en_heading})"
        );
    }
    let answers = |doc: &str, heading: &str| -> Result<Vec<(u16, Vec<String>, String)>> {
        let mut rows: Vec<_> = api_rows(doc, heading)?
            .into_iter()
            .map(|(_, status, headers, body)| (status, headers, body))
            .collect();
        rows.sort();
        Ok(rows)
    };
    assert_eq!(
        answers("docs/api.md", "## Errors")?,
        answers("docs/pl/api.md", "## Błędy")?,
        "docs/pl/api.md's request table must quote the answers of docs/api.md's"
    );
    Ok(())
}
