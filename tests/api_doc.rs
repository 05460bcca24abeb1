//! docs/api.md's verification steps run as a reader would paste them: every ```console block
//! after `<!-- run: tests/api_doc.rs -->` runs, in order, in one bash session in an empty
//! directory, against a real daemon whose `epuap` key (RSA-2048, RS256) is on a fresh SoftHSM
//! token. The doc's socket path `/run/hsm-signer/hsm-signer.sock` is replaced by the test
//! daemon's. As in tests/docs.rs: `$ ` starts a command (a trailing `\` continues it), the
//! lines after it are its expected output (standard output and error), `…` matches any text
//! within a line, and every command must exit 0. [`run_doc_steps`] does the same for the
//! blocks another test is handed (tests/jose_daemon.rs: docs/edoreczenia.md, EN and PL).

use crate::common;
use crate::common::daemon::EPUAP;

use std::fmt::Write as _;
use std::process::Command;

use common::daemon::{provision, Daemon};
use common::{Result, TestToken};

const DOC: &str = "docs/api.md";
const MARK: &str = "<!-- run: tests/api_doc.rs -->";
const DOC_SOCKET: &str = "/run/hsm-signer/hsm-signer.sock";

/// One command and the lines the doc shows after it.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The commands of the console blocks after `mark`, in order.
fn steps(text: &str, mark: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != mark || lines.get(i + 1).map(|l| l.trim()) != Some("```console") {
            i += 1;
            continue;
        }
        i += 2;
        let mut continued = false;
        while i < lines.len() && !lines[i].starts_with("```") {
            let line = lines[i];
            if continued {
                if let Some(s) = out.last_mut() {
                    s.command.push('\n');
                    s.command.push_str(line);
                }
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                out.push(Step {
                    line: i + 1,
                    command: cmd.to_string(),
                    expected: Vec::new(),
                });
            } else if let Some(s) = out.last_mut() {
                s.expected.push(line.trim_end().to_string());
            }
            continued = line.ends_with('\\');
            i += 1;
        }
    }
    out
}

/// `…` in `expected` matches any text within the line.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(parts[parts.len() - 1])
}

#[test]
fn api_md_verification_steps_run_against_a_daemon() -> Result {
    let token = TestToken::new()?;
    let keys = [EPUAP];
    provision(&token, &keys)?;
    let daemon = Daemon::start(&token, &keys, "allowed_uids = [0]")?;
    run_doc_steps(DOC, MARK, &daemon, 9)?;
    daemon.stop()?;
    Ok(())
}

/// Runs the console blocks of `doc` after `mark` (at least `min_steps` commands) in one
/// bash session in an empty directory, the doc's socket path replaced by `daemon`'s;
/// fails with every command that exits non-zero or prints what the doc does not show.
pub(crate) fn run_doc_steps(doc: &str, mark: &str, daemon: &Daemon, min_steps: usize) -> Result {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))?;
    let steps = steps(&text, mark);
    assert!(
        steps.len() >= min_steps,
        "{doc}: only {} commands handed to this test",
        steps.len()
    );
    let work = tempfile::tempdir()?;
    let socket = daemon.socket.display().to_string();
    let mut script = String::from("exec 2>&1\n");
    for (n, s) in steps.iter().enumerate() {
        writeln!(
            script,
            "{}\nprintf '\\n@@step {n} %d@@\\n' $?",
            s.command.replace(DOC_SOCKET, &socket)
        )?;
    }
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(work.path())
        .output()?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut problems = Vec::new();
    let mut segment = String::new();
    let mut seen = 0;
    for line in output.split_inclusive('\n') {
        let marker = line
            .trim_end()
            .strip_prefix("@@step ")
            .and_then(|m| m.strip_suffix("@@"))
            .and_then(|m| m.split_once(' '))
            .and_then(|(n, s)| Some((n.parse::<usize>().ok()?, s.parse::<i32>().ok()?)));
        let Some((n, status)) = marker else {
            segment.push_str(line);
            continue;
        };
        seen += 1;
        let printed = std::mem::take(&mut segment);
        let printed = printed.strip_suffix('\n').unwrap_or(&printed);
        let step = &steps[n];
        let actual: Vec<&str> = printed
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        let want: Vec<&str> = step
            .expected
            .iter()
            .map(String::as_str)
            .filter(|l| !l.is_empty())
            .collect();
        let matches =
            want.len() == actual.len() && want.iter().zip(&actual).all(|(w, a)| line_matches(w, a));
        if status != 0 || !matches {
            problems.push(format!(
                "{doc}:{}: `{}` exited {status} and printed:\n{printed}\n--- but the doc shows:\n{}",
                step.line,
                step.command,
                want.join("\n")
            ));
        }
    }
    if seen < steps.len() {
        problems.push(format!(
            "the session stopped after {seen} of {} steps: {segment}",
            steps.len()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}
