//! No secret in any argv: the commands of docs/import.md and docs/pl/import.md, section 2.8
//! (handing the `.p12` and the secrets to the daemon's account), run as written, while a
//! watcher reads every process's /proc/PID/cmdline for the PIN and the `.p12` password.
//!
//! The doc's `hsm-signer` account is `nobody` here (group `nogroup`), on a SoftHSM token
//! that account owns, in a token directory of this test's own. The PIN and password reach
//! the shell as 2.3 and 2.5 leave them: exported variables, never on a command line.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::fixtures::*;
use common::*;

/// A PIN and a password of this setup's own: the watcher reads every process on the
/// machine, so two tests (or a test and a control) never share a value.
fn unique(what: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{what}-{}-{}-7f3a9c",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The commands of each ```console block that `doc` hands to this test in the section
/// whose heading starts with `heading`, one string per block (continuation lines kept).
fn delegated_blocks(doc: &str, heading: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))?;
    let start = text
        .find(heading)
        .ok_or_else(|| format!("{doc}: no {heading:?}"))?;
    let rest = &text[start + heading.len()..];
    let section = &rest[..rest.find("\n### ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines().map(str::trim_start);
    while let Some(line) = lines.next() {
        if line != "<!-- run: tests/import_argv.rs -->" {
            continue;
        }
        if lines.next() != Some("```console") {
            return Err(format!("{doc}: a run marker not followed by ```console").into());
        }
        let mut script = String::new();
        let mut continued = false;
        for l in lines.by_ref().take_while(|l| !l.starts_with("```")) {
            if let Some(cmd) = l.strip_prefix("$ ").filter(|_| !continued) {
                script.push_str(cmd);
            } else if continued {
                script.push_str(l);
            } else {
                continue; // output shown in the doc
            }
            script.push('\n');
            continued = l.ends_with('\\');
        }
        blocks.push(script);
    }
    Ok(blocks)
}

/// The doc's account and group, as this machine has them.
fn as_nobody(script: &str) -> String {
    script
        .replace("runuser -u hsm-signer ", "runuser -u nobody ")
        .replace("install -o hsm-signer ", "install -o nobody ")
        .replace("chgrp hsm-signer ", "chgrp nogroup ")
}

/// Every command line seen while it runs that holds the PIN or the password, and
/// whether it saw `hsm-signer import` at all (so that it cannot pass by looking too late).
struct Watcher {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<String>>>,
    saw: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(secrets: &[&str], watch_for: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let saw = Arc::new(AtomicBool::new(false));
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        let thread = {
            let (stop, hits, saw) = (stop.clone(), hits.clone(), saw.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(dir) = std::fs::read_dir("/proc") else {
                        return;
                    };
                    for entry in dir.flatten() {
                        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                            continue;
                        };
                        if cmdline
                            .windows(watch_for.len())
                            .any(|w| w == watch_for.as_bytes())
                        {
                            saw.store(true, Ordering::Relaxed);
                        }
                        for secret in &secrets {
                            if cmdline.windows(secret.len()).any(|w| w == secret) {
                                let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                                hits.lock().expect("hits").push(shown);
                            }
                        }
                    }
                }
            })
        };
        Self {
            stop,
            hits,
            saw,
            thread,
        }
    }

    /// The command lines that held a secret, and whether `watch_for` was seen.
    fn finish(self) -> Result<(Vec<String>, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| "watcher panicked")?;
        let hits = self.hits.lock().map_err(|_| "hits")?.clone();
        Ok((hits, self.saw.load(Ordering::Relaxed)))
    }
}

/// A SoftHSM token "GSKO" that `nobody` owns, in a directory of this test's own, and the
/// `.p12` and `.cer` of Sigillum's e-mail.
struct Setup {
    pin: String,
    password: String,
    dir: tempfile::TempDir,
    conf: PathBuf,
    fixtures: PathBuf,
}

fn setup() -> Result<Setup> {
    let (pin, password) = (unique("Pin"), unique("Hasło-ąę"));
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    run_ok(Command::new("chown").args(["nobody:nogroup"]).arg(&tokens))?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )?;
    // The token is made before any watching: softhsm2-util takes PINs only in argv or at
    // a terminal.
    run_ok(
        Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "softhsm2-util",
                "--init-token",
                "--free",
            ])
            .args(["--label", "GSKO", "--so-pin", SO_PIN, "--pin", &pin])
            .env("SOFTHSM2_CONF", &conf),
    )?;
    let fixtures = dir.path().join("mail");
    std::fs::create_dir(&fixtures)?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    write_p12(
        &fixtures.join("epuap-gmina-przykladowo.p12"),
        &leaf,
        &ca,
        "gsko-epuap",
        &password,
    )?;
    std::fs::write(
        fixtures.join("epuap-gmina-przykladowo.cer"),
        leaf.cert.to_pem()?,
    )?;
    Ok(Setup {
        pin,
        password,
        dir,
        conf,
        fixtures,
    })
}

/// Runs `commands` as the reader would after 2.1 to 2.5: `umask 077`, a fresh `$WORK` in
/// /dev/shm holding the e-mail's files, the PIN and the password exported. Returns the
/// record's text (if written) and the command lines that held a secret.
fn run_as_documented(s: &Setup, commands: &str) -> Result<(Option<String>, Vec<String>)> {
    run_typed(s, commands, None).map(|(record, hits, _)| (record, hits))
}

/// [`run_as_documented`], on a terminal (script(1)) where the reader types `typed`, one
/// answer after each prompt ending in "PIN: ", when given; also returns what the commands
/// printed.
fn run_typed(
    s: &Setup,
    commands: &str,
    typed: Option<&[&str]>,
) -> Result<(Option<String>, Vec<String>, String)> {
    let bin = Path::new(env!("CARGO_BIN_EXE_hsm-signer"))
        .parent()
        .ok_or("binary dir")?;
    let work_file = s.dir.path().join("work-path");
    let secrets = s.dir.path().join("secrets.sh");
    // Sourced by the script: `export` is a shell builtin, so no command line holds them,
    // as with `read -rs` in 2.3 and 2.5.
    std::fs::write(
        &secrets,
        format!(
            "export HSM_SIGNER_PIN='{}' HSM_SIGNER_P12_PASSWORD='{}'\n",
            s.pin, s.password
        ),
    )?;
    let script = format!(
        "set -euo pipefail\n\
         umask 077\n\
         WORK=$(mktemp -d /dev/shm/epuap.XXXXXX) && cd \"$WORK\"\n\
         echo \"$WORK\" > '{work}'\n\
         cp '{mail}'/* \"$WORK\"/\n\
         . '{secrets}'\n\
         export SOFTHSM2_CONF='{conf}' PATH='{bin}':\"$PATH\" SUDO_USER=jan-kowalski\n\
         {commands}",
        work = work_file.display(),
        mail = s.fixtures.display(),
        secrets = secrets.display(),
        conf = s.conf.display(),
        bin = bin.display(),
    );
    let script_file = s.dir.path().join("session.sh");
    std::fs::write(&script_file, &script)?;
    let watcher = Watcher::start(&[&s.pin, &s.password], "hsm-signer\0import");
    let out = match typed {
        None => Command::new("bash")
            .arg(&script_file)
            .env_remove("HSM_SIGNER_PIN")
            .env_remove("HSM_SIGNER_P12_PASSWORD")
            .stdin(std::process::Stdio::null())
            .output(),
        Some(answers) => type_at_prompts(&script_file, answers),
    };
    let (hits, saw_import) = watcher.finish()?;
    let work = PathBuf::from(std::fs::read_to_string(&work_file)?.trim());
    let record = std::fs::read_to_string(work.join("protokol-importu.txt")).ok();
    let left: Vec<String> = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    std::fs::remove_dir_all(&work)?;
    let out = out?;
    if !out.status.success() {
        return Err(format!(
            "the documented commands failed ({}):\n{commands}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    assert!(saw_import, "the watcher never saw `hsm-signer import` run");
    for secret_file in [
        "pin",
        "p12-password",
        "import.p12",
        "proba.key",
        "proba.p12",
    ] {
        assert!(
            !left.iter().any(|f| f == secret_file),
            "{secret_file} left in $WORK: {left:?}"
        );
    }
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((record, hits, printed))
}

/// Runs `bash script` on a terminal and types each answer once its prompt ("... PIN: ") is
/// on the screen, as a person would: softhsm2-util discards what was typed before it asks.
fn type_at_prompts(script: &Path, answers: &[&str]) -> std::io::Result<std::process::Output> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let mut child = Command::new("script")
        .args(["-qec", &format!("bash {}", script.display()), "/dev/null"])
        .env_remove("HSM_SIGNER_PIN")
        .env_remove("HSM_SIGNER_P12_PASSWORD")
        .env("SHELL", "/bin/bash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        let mut stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        })
    };
    let prompts = |screen: &Mutex<Vec<u8>>| {
        let screen = screen.lock().expect("screen");
        screen.windows(5).filter(|w| w == b"PIN: ").count()
    };
    let mut stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    for (asked, answer) in answers.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while prompts(&screen) <= asked && Instant::now() < deadline && child.try_wait()?.is_none()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The prompt is printed just before the terminal's echo is turned off.
        std::thread::sleep(Duration::from_millis(200));
        stdin.write_all(format!("{answer}\n").as_bytes())?;
    }
    drop(stdin);
    let status = child.wait()?;
    reader
        .join()
        .map_err(|_| std::io::Error::other("screen reader panicked"))?;
    let mut stderr = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    let stdout = screen.lock().expect("screen").clone();
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// The name the record gives: the login session's user when /proc/self/loginuid is set,
/// else SUDO_USER, which `runuser -u` passes on.
fn expected_operator() -> Result<String> {
    let id: u32 = std::fs::read_to_string("/proc/self/loginuid")?
        .trim()
        .parse()?;
    if id == u32::MAX {
        return Ok("jan-kowalski (wg zmiennej / from the variable SUDO_USER;".into());
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))?
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {id}"));
    Ok(format!("{name} (wg sesji logowania"))
}

#[test]
fn the_documented_handover_puts_no_secret_in_any_command_line() -> Result {
    if !nix::unistd::geteuid().is_root() {
        return missing_precondition(
            "needs root, for runuser and install -o as in docs/import.md 2.8",
        );
    }
    // The watcher does catch the old form, `env VAR="$VAR"` on runuser's command line: here
    // an import that waits 2 s for its `.p12` on standard input, then finds none.
    let s = setup()?;
    let (_, hits) = run_as_documented(
        &s,
        "sleep 2 | runuser -u nobody -- env HSM_SIGNER_PIN=\"$HSM_SIGNER_PIN\" \\\n\
         hsm-signer import --module /usr/lib/softhsm/libsofthsm2.so --token GSKO --p12 - 2>/dev/null || true\n",
    )?;
    assert!(
        hits.iter().any(|h| h.contains("env HSM_SIGNER_PIN=")),
        "the watcher missed the PIN in argv: {hits:?}"
    );

    for doc in ["docs/import.md", "docs/pl/import.md"] {
        let blocks = delegated_blocks(doc, "### 2.8 ")?;
        let [prepare, from_stdin, from_files] = blocks.as_slice() else {
            return Err(format!(
                "{doc} 2.8: expected 3 blocks for this test, found {}",
                blocks.len()
            )
            .into());
        };
        for (way, import) in [("standard input", from_stdin), ("files", from_files)] {
            let s = setup()?;
            let commands = as_nobody(&format!("{prepare}{import}"));
            let (record, hits) = run_as_documented(&s, &commands)?;
            assert!(
                hits.is_empty(),
                "{doc} 2.8, {way}: a secret in argv: {hits:#?}"
            );
            let record = record.ok_or_else(|| format!("{doc} 2.8, {way}: no record"))?;
            assert!(
                record.contains("Label:        gsko-epuap") && record.contains("Proof:"),
                "{doc} 2.8, {way}:\n{record}"
            );
            let operator = expected_operator()?;
            let performed_by = record
                .lines()
                .find(|l| l.starts_with("Wykonał / Performed by:"))
                .unwrap_or_default();
            assert!(
                performed_by.contains(&operator) && performed_by.contains("ran as nobody"),
                "{doc} 2.8, {way}: {operator:?} not in:\n{record}"
            );
            println!("{doc} 2.8, {way}: imported, no secret in any command line");
        }
    }
    Ok(())
}

#[test]
fn the_rehearsal_runs_through_the_same_runuser_command() -> Result {
    if !nix::unistd::geteuid().is_root() {
        return missing_precondition("needs root, for runuser as in docs/import.md 2.7");
    }
    for doc in ["docs/import.md", "docs/pl/import.md"] {
        let blocks = delegated_blocks(doc, "### 2.7 ")?;
        let [rehearsal] = blocks.as_slice() else {
            return Err(format!(
                "{doc} 2.7: expected 1 block for this test, found {}",
                blocks.len()
            )
            .into());
        };
        let s = setup()?;
        // softhsm2-util's prompts: the rehearsal token's SO PIN and user PIN, twice each;
        // the user PIN is the one exported for the import.
        let typed = [SO_PIN, SO_PIN, &s.pin, &s.pin];
        let (_, hits, printed) = run_typed(&s, &as_nobody(rehearsal), Some(&typed))?;
        assert!(hits.is_empty(), "{doc} 2.7: a secret in argv: {hits:#?}");
        for shown in [
            "The token has been initialized",
            "Importing \"gsko-proba\" into token \"GSKO-PROBA\"",
            "Imported and proven.",
            "Key works.",
            "has been deleted.",
        ] {
            assert!(
                printed.contains(shown),
                "{doc} 2.7: no {shown:?} in:\n{printed}"
            );
        }
        println!("{doc} 2.7: the rehearsal ran as nobody through runuser");
    }
    Ok(())
}
