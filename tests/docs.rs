//! The docs tell the truth: every fenced ```console block in README.md and docs/**/*.md
//! (English and Polish, and files this test has never seen) runs here, with bash, against
//! SoftHSM, and prints what the doc shows.
//!
//! How a doc is written for this test:
//! - ```console: lines beginning `$ ` are commands (a trailing `\` continues one), the lines
//!   after them the expected output (standard output and error together). Every command
//!   must exit 0 as bash sees it; a doc that shows a failure writes `cmd || echo "exit $?"`
//!   or `cmd; echo $?` and shows that line.
//! - Placeholders for what varies (serials, dates, fingerprints, signatures, paths): `…`
//!   (U+2026) inside a line matches any run of text within that line; a line holding only
//!   `…` matches any number of lines, none included. Trailing spaces and trailing empty
//!   lines are ignored; everything else must match exactly.
//! - All runnable blocks of one doc share one bash session, in order: files, `cd`,
//!   `export`ed variables and the SoftHSM token directory carry over from block to block,
//!   as for a reader working down the page. Each doc starts in an empty directory of its
//!   own (also `$HOME`) with its own empty SoftHSM token directory (`SOFTHSM2_CONF`), the
//!   built `hsm-signer` first on `PATH`, and no `HSM_SIGNER_*` variables.
//! - `<!-- doc-test: setup=NAME[,NAME] -->` before a block runs a setup there, in the
//!   session's current directory (see [`setup_script`]): `p12` (the three files of
//!   Sigillum's e-mail), `token` (a token `GSKO`, SO PIN and user PIN as in `typed`),
//!   `imported` (`token` with `gsko-epuap` imported, and the e-mail's files), `demo` (what
//!   `scripts/demo` leaves in `demo/`).
//! - `<!-- doc-test: typed=NAME[,NAME] -->` queues what the reader would type at the next
//!   `read -rs` prompts (the session's standard input), by name: `so-pin`, `pin`,
//!   `new-pin`, `p12-password`; see [`typed_value`].
//! - ```console norun: for what cannot run here (systemd, root-owned paths, a real card, a
//!   TPM, a running daemon at /run). Its `$ ` and `# ` lines are not run, but every
//!   `hsm-signer` command line in them, and in ```sh blocks, must be accepted by the
//!   command-line parser (clap), so a flag that does not exist fails this test.
//! - `<!-- run: tests/FILE.rs -->` before a ```console block hands it to that test (which
//!   must exist and name this doc), e.g. blocks that need the example clients and a daemon.

use crate::common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use common::fixtures::*;
use common::Result;

/// What a reader types at the prompts, by name.
fn typed_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "so-pin" => "87654321",
        "pin" => "1234",
        "new-pin" => "Nowy-PIN-2026",
        "p12-password" => POLISH_PASSWORD,
        _ => return None,
    })
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One command of a console block, with the output the doc shows.
#[derive(Debug, Clone)]
struct DocCommand {
    line: usize,
    text: String,
    expected: Vec<String>,
}

/// What a doc asks this test to do, in order.
#[derive(Debug)]
enum Step {
    Setup(usize, String),
    Typed(usize, String),
    Run(DocCommand),
}

/// A fenced block.
struct Block {
    line: usize,
    info: String,
    body: Vec<String>,
    /// The `<!-- run: FILE -->` right before it.
    delegated: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every .md under docs/.
fn doc_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The doc-test directives of a line, as (key, value).
fn directives(line: &str) -> Vec<(String, String)> {
    let Some(inner) = line
        .trim()
        .strip_prefix("<!-- doc-test:")
        .and_then(|l| l.strip_suffix("-->"))
    else {
        return Vec::new();
    };
    inner
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `<!-- doc-test: KEY=VALUE -->`: its line, the number of blocks before it, key, value.
type Mark = (usize, usize, String, String);

/// The fenced blocks of a Markdown text and the directives between them, in order.
fn parse(text: &str) -> (Vec<Block>, Vec<Mark>) {
    let mut blocks = Vec::new();
    let mut marks = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut last_comment: Option<String> = None;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = line.len() - trimmed.len();
            let start = i + 1;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let l = lines[i];
                body.push(
                    l.get(indent.min(l.len() - l.trim_start().len())..)
                        .unwrap_or(l)
                        .to_string(),
                );
                i += 1;
            }
            let delegated = last_comment.take().and_then(|c| {
                c.strip_prefix("<!-- run: ")?
                    .strip_suffix(" -->")
                    .map(str::to_string)
            });
            blocks.push(Block {
                line: start,
                info: info.trim().to_string(),
                body,
                delegated,
            });
            i += 1;
            continue;
        }
        for (k, v) in directives(line) {
            marks.push((i + 1, blocks.len(), k, v));
        }
        if trimmed.starts_with("<!--") {
            last_comment = Some(trimmed.trim_end().to_string());
        } else if !trimmed.is_empty() {
            last_comment = None;
        }
        i += 1;
    }
    (blocks, marks)
}

/// A console block's commands: `$ ` (and in norun blocks also `# `) starts one, a trailing
/// `\` continues it, other lines are its output.
fn commands(block: &Block, root_prompt: bool) -> Vec<DocCommand> {
    let mut out: Vec<DocCommand> = Vec::new();
    let mut continued = false;
    for (n, line) in block.body.iter().enumerate() {
        if continued {
            if let Some(c) = out.last_mut() {
                c.text.push('\n');
                c.text.push_str(line);
            }
        } else if let Some(cmd) = line
            .strip_prefix("$ ")
            .or_else(|| root_prompt.then(|| line.strip_prefix("# ")).flatten())
        {
            out.push(DocCommand {
                line: block.line + n,
                text: cmd.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(c) = out.last_mut() {
            c.expected.push(line.clone());
        }
        continued = line.ends_with('\\');
    }
    out
}

/// Does `actual` match `expected`, where `…` matches any text within the line?
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Does `actual` match `expected`, where a line of only `…` matches any lines?
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"…", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((first, rest)) => {
            !actual.is_empty() && line_matches(first, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

fn trimmed_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Shell lines for a setup, run in the session's current directory. Fixture files were
/// made in `$DOCTEST_FIXTURES` beforehand.
fn setup_script(name: &str) -> Option<String> {
    let token = format!(
        "pkcs11-tool --module {MODULE} --init-token --label GSKO --so-pin env:DOCTEST_SO_PIN >/dev/null && \
         pkcs11-tool --module {MODULE} --token-label GSKO --login --login-type so --so-pin env:DOCTEST_SO_PIN \
         --init-pin --new-pin env:DOCTEST_PIN >/dev/null"
    );
    Some(match name {
        "p12" => "cp -p \"$DOCTEST_FIXTURES\"/mail/* .".to_string(),
        "token" => token,
        "imported" => format!(
            "cp -p \"$DOCTEST_FIXTURES\"/mail/* . && {token} && \
             HSM_SIGNER_PIN=\"$DOCTEST_PIN\" HSM_SIGNER_P12_PASSWORD=\"$DOCTEST_P12_PASSWORD\" \
             hsm-signer import --module {MODULE} --token GSKO --p12 epuap-gmina-przykladowo.p12 \
             --cert epuap-gmina-przykladowo.cer --label gsko-epuap >/dev/null"
        ),
        "demo" => format!(
            "mkdir -p demo && cp -p \"$DOCTEST_FIXTURES\"/demo/* demo/ && \
             pkcs11-tool --module {MODULE} --init-token --label GSKO-DEMO --so-pin env:DOCTEST_SO_PIN >/dev/null && \
             pkcs11-tool --module {MODULE} --token-label GSKO-DEMO --login --login-type so --so-pin env:DOCTEST_SO_PIN \
             --init-pin --new-pin env:DOCTEST_PIN >/dev/null && export DEMO_PIN=\"$DOCTEST_PIN\""
        ),
        _ => return None,
    })
}

/// The fixture files: Sigillum's e-mail (a legacy .p12 like the real ones, the .cer in
/// DER, the CA in PEM) and the demo directory.
fn make_fixtures(dir: &Path) -> Result {
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    let pem = write_pem(&work, "leaf", &leaf, &ca)?;
    let password = secret_file(&work, "password", POLISH_PASSWORD)?;
    for sub in ["mail", "demo"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        openssl_export(
            &pem,
            &d.join("epuap-gmina-przykladowo.p12"),
            "gsko-epuap",
            &password,
            &["-legacy"],
        )?;
        std::fs::write(d.join("epuap-gmina-przykladowo.cer"), leaf.cert.to_der()?)?;
        std::fs::write(d.join("sigillum-ca.pem"), ca.cert.to_pem()?)?;
    }
    let demo = dir.join("demo");
    common::write_secret(&demo.join("pin"), typed_value("pin").ok_or("pin")?)?;
    common::write_secret(&demo.join("p12-password"), POLISH_PASSWORD)?;
    std::fs::write(
        demo.join("signedinfo.xml"),
        "<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"></ds:SignedInfo>",
    )?;
    std::fs::write(
        demo.join("certificate-pubkey.pem"),
        leaf.cert.public_key()?.public_key_to_pem()?,
    )?;
    Ok(())
}

/// Runs a doc's steps in one bash session and returns what did not match.
fn run_doc(doc: &str, steps: &[Step]) -> Result<Vec<String>> {
    let dir = tempfile::Builder::new().prefix("doc-test-").tempdir()?;
    let home = dir.path().join("home");
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(home.join("tokens"))?;
    make_fixtures(&fixtures)?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.path().join("tokens").display()
        ),
    )?;
    std::fs::create_dir_all(dir.path().join("tokens"))?;
    let mut script = String::from("exec 2>&1\n");
    let mut stdin = String::new();
    let mut ids = BTreeMap::new();
    let mut problems = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Setup(line, name) => match setup_script(name) {
                Some(s) => {
                    writeln!(script, "{s}\nprintf '\\n@@doc-test {n} %d@@\\n' $?")?;
                    ids.insert(n, (*line, format!("<setup {name}>"), None));
                }
                None => problems.push(format!("{doc}:{line}: unknown setup {name:?}")),
            },
            Step::Typed(line, name) => match typed_value(name) {
                Some(v) => writeln!(stdin, "{v}")?,
                None => problems.push(format!("{doc}:{line}: unknown typed value {name:?}")),
            },
            Step::Run(c) => {
                writeln!(script, "{}\nprintf '\\n@@doc-test {n} %d@@\\n' $?", c.text)?;
                ids.insert(n, (c.line, c.text.clone(), Some(c.expected.clone())));
            }
        }
    }
    let script_path = dir.path().join("session.sh");
    std::fs::write(&script_path, &script)?;
    let stdin_path = dir.path().join("typed");
    std::fs::write(&stdin_path, &stdin)?;
    let bin = Path::new(env!("CARGO_BIN_EXE_hsm-signer"))
        .parent()
        .ok_or("binary dir")?;
    let out = Command::new("timeout")
        .args(["--kill-after=5", "300", "bash"])
        .arg(&script_path)
        .current_dir(&home)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                bin.display()
            ),
        )
        .env("HOME", &home)
        // scripts/test's marker, which finds processes a test left running.
        .envs(std::env::var_os("HSM_SIGNER_TEST_RUN").map(|v| ("HSM_SIGNER_TEST_RUN", v)))
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("SOFTHSM2_CONF", &conf)
        .env("DOCTEST_FIXTURES", &fixtures)
        .env("DOCTEST_SO_PIN", typed_value("so-pin").ok_or("so-pin")?)
        .env("DOCTEST_PIN", typed_value("pin").ok_or("pin")?)
        .env("DOCTEST_P12_PASSWORD", POLISH_PASSWORD)
        .stdin(Stdio::from(std::fs::File::open(&stdin_path)?))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut segment = String::new();
    let mut seen = 0;
    for line in text.split_inclusive('\n') {
        let marker = line
            .trim_end()
            .strip_prefix("@@doc-test ")
            .and_then(|m| m.strip_suffix("@@"))
            .and_then(|m| m.split_once(' '))
            .and_then(|(n, s)| Some((n.parse::<usize>().ok()?, s.parse::<i32>().ok()?)));
        let Some((n, status)) = marker else {
            segment.push_str(line);
            continue;
        };
        seen += 1;
        // The marker's printf began with a newline of its own.
        let output = segment.strip_suffix('\n').unwrap_or(&segment).to_string();
        segment.clear();
        let Some((line, cmd, expected)) = ids.get(&n) else {
            continue;
        };
        if status != 0 {
            problems.push(format!("{doc}:{line}: `{cmd}` exited {status}:\n{output}"));
            continue;
        }
        if let Some(expected) = expected {
            let want: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
            let want = {
                let mut w = want;
                while w.last().is_some_and(|l| l.is_empty()) {
                    w.pop();
                }
                w
            };
            if !lines_match(&want, &trimmed_lines(&output)) {
                problems.push(format!(
                    "{doc}:{line}: `{cmd}` printed:\n{output}\n--- but the doc shows:\n{}",
                    want.join("\n")
                ));
            }
        }
    }
    if seen < ids.len() {
        problems.push(format!(
            "{doc}: the session stopped after {seen} of {} steps ({}); output after the last step:\n{segment}{}",
            ids.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(problems)
}

/// Splits a shell command line into words: quotes kept together, `\`-newlines joined.
fn words(text: &str) -> Vec<String> {
    let text = text.replace("\\\n", " ");
    let mut out = Vec::new();
    let mut word = String::new();
    let mut has = false;
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (None, '$') if chars.peek() == Some(&'(') => {
                depth += 1;
                word.push(c);
                has = true;
            }
            (None, ')') if depth > 0 => {
                depth -= 1;
                word.push(c);
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    has = true;
                }
            }
            (None, c) if c.is_whitespace() && depth == 0 => {
                if has {
                    out.push(std::mem::take(&mut word));
                    has = false;
                }
            }
            (None, '#') if !has && depth == 0 => break,
            (None, c) => {
                word.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(word);
    }
    out
}

/// The argument lists of the `hsm-signer` commands in a shell line.
fn hsm_signer_invocations(text: &str) -> Vec<Vec<String>> {
    let words = words(text);
    let mut found = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if w != "hsm-signer" && !w.ends_with("/hsm-signer") {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| words[p].as_str());
        let command_position = match prev {
            None => true,
            Some(p) => {
                matches!(
                    p,
                    "--" | "|" | "&&" | "||" | ";" | "sudo" | "exec" | "time" | "then" | "do" | "!"
                ) || (p.contains('=') && !p.starts_with('-'))
            }
        };
        if !command_position {
            continue;
        }
        let mut args = Vec::new();
        for a in &words[i + 1..] {
            if matches!(a.as_str(), "|" | "||" | "&&" | "&" | ")")
                || a.starts_with('>')
                || a.starts_with('<')
                || a.starts_with("2>")
                || a.starts_with("&>")
            {
                break;
            }
            if let Some(last) = a.strip_suffix(';') {
                if !last.is_empty() {
                    args.push(last.to_string());
                }
                break;
            }
            if a != "$@" && a != "$*" {
                args.push(a.clone());
            }
        }
        found.push(args);
    }
    found
}

/// Does clap accept `args`? Help, and a missing `--token` (which may come from
/// HSM_SIGNER_TOKEN), count as accepted.
fn parse_check(args: &[String]) -> std::result::Result<(), String> {
    use clap::error::ErrorKind;
    let argv = std::iter::once("hsm-signer".to_string()).chain(args.iter().cloned());
    match hsm_signer::cli::Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(()),
            ErrorKind::MissingRequiredArgument
                if e.to_string()
                    .lines()
                    .filter(|l| l.starts_with("  "))
                    .all(|l| l.trim() == "--token <TOKEN>") =>
            {
                Ok(())
            }
            _ => Err(e.to_string()),
        },
    }
}

/// A doc's runnable steps, and the parse problems of its other command lines.
fn read_doc(path: &Path) -> Result<(Vec<Step>, Vec<String>)> {
    let doc = rel(path);
    let text = std::fs::read_to_string(path)?;
    let (blocks, marks) = parse(&text);
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    let mut marks = marks.into_iter().peekable();
    for (index, block) in blocks.iter().enumerate() {
        while let Some((line, _, k, v)) = marks.next_if(|m| m.1 <= index) {
            for name in v.split(',') {
                match k.as_str() {
                    "setup" => steps.push(Step::Setup(line, name.to_string())),
                    "typed" => steps.push(Step::Typed(line, name.to_string())),
                    _ => problems.push(format!("{doc}:{line}: unknown doc-test directive {k:?}")),
                }
            }
        }
        let lines: Vec<DocCommand> = match block.info.as_str() {
            "console" if block.delegated.is_some() => {
                let file = block.delegated.as_deref().unwrap_or_default();
                let runner = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
                if !runner.contains(&doc) {
                    problems.push(format!(
                        "{doc}:{}: handed to {file}, which does not run this doc",
                        block.line
                    ));
                }
                commands(block, false)
            }
            "console" => {
                let cmds = commands(block, false);
                if cmds.is_empty() || !block.body.first().is_some_and(|l| l.starts_with("$ ")) {
                    problems.push(format!(
                        "{doc}:{}: a console block must start with a `$ ` command",
                        block.line
                    ));
                }
                steps.extend(cmds.iter().cloned().map(Step::Run));
                cmds
            }
            "console norun" => commands(block, true),
            "sh" | "bash" | "shell" => {
                let fake = Block {
                    line: block.line,
                    info: String::new(),
                    body: {
                        let mut continued = false;
                        block
                            .body
                            .iter()
                            .map(|l| {
                                let line = if continued {
                                    l.clone()
                                } else {
                                    format!("$ {l}")
                                };
                                continued = l.ends_with('\\');
                                line
                            })
                            .collect()
                    },
                    delegated: None,
                };
                commands(&fake, false)
            }
            info if info.starts_with("console") => {
                problems.push(format!(
                    "{doc}:{}: unknown block kind ```{info} (console or console norun)",
                    block.line
                ));
                Vec::new()
            }
            _ => Vec::new(),
        };
        for c in &lines {
            for args in hsm_signer_invocations(&c.text) {
                if let Err(e) = parse_check(&args) {
                    problems.push(format!(
                        "{doc}:{}: `hsm-signer {}` is not accepted:\n{e}",
                        c.line,
                        args.join(" ")
                    ));
                }
            }
        }
    }
    for (line, _, k, v) in marks {
        for name in v.split(',') {
            match k.as_str() {
                "setup" => steps.push(Step::Setup(line, name.to_string())),
                "typed" => steps.push(Step::Typed(line, name.to_string())),
                _ => problems.push(format!("{doc}:{line}: unknown doc-test directive {k:?}")),
            }
        }
    }
    Ok((steps, problems))
}

#[test]
fn every_hsm_signer_command_line_in_the_docs_is_accepted_by_the_parser() -> Result {
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in doc_files()? {
        let (_, p) = read_doc(&path)?;
        problems.extend(p);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} docs found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}

#[test]
fn every_console_block_in_the_docs_runs_as_shown() -> Result {
    let mut runnable = Vec::new();
    for path in doc_files()? {
        let (steps, _) = read_doc(&path)?;
        if steps.iter().any(|s| matches!(s, Step::Run(_))) {
            runnable.push((rel(&path), steps));
        }
    }
    assert!(
        runnable.iter().any(|(d, _)| d == "docs/pl/import.md")
            && runnable.iter().any(|(d, _)| d == "docs/import.md")
            && runnable.iter().any(|(d, _)| d == "README.md"),
        "the import runbooks and the README have no runnable blocks: {:?}",
        runnable.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    // One thread per doc; errors as text, since the test's error type is not Send.
    let results: Vec<std::result::Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runnable
            .iter()
            .map(|(doc, steps)| {
                scope.spawn(move || run_doc(doc, steps).map_err(|e| format!("{doc}: {e}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a doc's thread panicked".into()))
            })
            .collect()
    });
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(p) => problems.extend(p),
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}

#[test]
fn placeholders_match_what_varies_and_nothing_else() {
    assert!(line_matches("Serial:       …", "Serial:       7e2b19"));
    assert!(line_matches("a … b … c", "a 1 b 2 c"));
    assert!(!line_matches("a … b … c", "a 1 c"));
    assert!(!line_matches("Key works.", "Key works!"));
    assert!(lines_match(&["x", "…", "z"], &["x", "1", "2", "z"]));
    assert!(lines_match(&["x", "…", "z"], &["x", "z"]));
    assert!(!lines_match(&["x", "…", "z"], &["x", "1"]));
    assert!(!lines_match(&["x"], &["x", "extra"]));
    assert_eq!(
        hsm_signer_invocations("runuser -u hsm-signer -- hsm-signer check --token GSKO; echo $?"),
        vec![vec!["check".to_string(), "--token".into(), "GSKO".into()]]
    );
    assert!(parse_check(&[
        "check".into(),
        "--token".into(),
        "G".into(),
        "--pin-file".into(),
        "p".into()
    ])
    .is_err());
    assert!(parse_check(&["list".into(), "--module".into(), "m".into()]).is_ok());
}
