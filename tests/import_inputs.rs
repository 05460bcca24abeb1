//! Inputs the tools must not trust: secret files and `.p12` files that are FIFOs with no
//! writer, devices that never end, writers that never finish, and more than a secret can
//! hold. Each is refused with its reason, at once (or when the 2 s bound passes), and the
//! token is left as it was (checked with pkcs11-tool).

use crate::common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

/// Runs `cmd`, prints how long it took, and returns its output (which must be a failure).
fn timed_failure(what: &str, cmd: &mut Command) -> Result<(String, Duration)> {
    let started = Instant::now();
    let out: Output = cmd.output()?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!(
        "{what}: exit {:?} after {took:?}: {stderr}",
        out.status.code()
    );
    if out.status.code() != Some(1) {
        return Err(format!("{what}: expected exit 1, got {:?}: {stderr}", out.status).into());
    }
    Ok((stderr, took))
}

fn mkfifo(path: &Path) -> Result {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    Ok(())
}

/// A token with an imported key, its objects, and a `.p12` with its password file.
fn token_with_key() -> Result<(TestToken, Vec<String>)> {
    let token = TestToken::new()?;
    let objects = baseline(&token, "gsko-epuap")?;
    Ok((token, objects))
}

#[test]
fn a_fifo_and_dev_zero_as_pin_files_are_refused_at_once() -> Result {
    let (token, before) = token_with_key()?;
    let fifo = token.path("pin.fifo");
    mkfifo(&fifo)?;
    let list = |pin: &Path| {
        let mut cmd = token.hsm_signer();
        cmd.args([
            "list",
            "--module",
            MODULE,
            "--token",
            &token.label,
            "--pin-file",
        ])
        .arg(pin);
        cmd
    };
    let (err, _) = timed_failure("--pin-file FIFO", &mut list(&fifo))?;
    assert!(
        err.contains("cannot read the token PIN from")
            && err.contains("pipe (FIFO) with no writer"),
        "{err}"
    );
    let (err, _) = timed_failure("--pin-file /dev/zero", &mut list(Path::new("/dev/zero")))?;
    assert!(
        err.contains("/dev/zero: it is a character device, not a file or a pipe"),
        "{err}"
    );
    let big = token.path("big-pin");
    write_secret(&big, &"1".repeat(5000))?;
    let (err, _) = timed_failure("--pin-file 5000 bytes", &mut list(&big))?;
    assert!(err.contains("it holds more than 4 KiB"), "{err}");
    let (err, _) = timed_failure("--pin-file a directory", &mut list(token.dir.path()))?;
    assert!(err.contains("it is a directory"), "{err}");
    assert_eq!(token.objects()?, before);
    Ok(())
}

#[test]
fn a_pipe_with_a_writer_still_works_as_a_pin_file() -> Result {
    let (token, _) = token_with_key()?;
    let mut child = token
        .hsm_signer()
        .args(["list", "--module", MODULE, "--token", &token.label])
        .args(["--pin-file", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(format!("{PIN}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Label:        gsko-epuap"), "{stdout}");
    Ok(())
}

#[test]
fn a_writer_that_never_finishes_is_refused_after_2_s() -> Result {
    let (token, before) = token_with_key()?;
    let fifo = token.path("pin.fifo");
    mkfifo(&fifo)?;
    // This test holds the FIFO's write end open (O_RDWR never blocks on Linux) and writes
    // part of a PIN, never the end of file.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    writer.write_all(b"12")?;
    let result = timed_failure(
        "--pin-file FIFO whose writer never closes",
        token
            .hsm_signer()
            .args([
                "list",
                "--module",
                MODULE,
                "--token",
                &token.label,
                "--pin-file",
            ])
            .arg(&fifo),
    );
    drop(writer);
    let (err, _) = result?;
    assert!(err.contains("not complete within 2 s"), "{err}");
    assert_eq!(token.objects()?, before);
    Ok(())
}

#[test]
fn a_fifo_and_dev_zero_as_p12_or_password_are_refused_and_nothing_is_imported() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", POLISH_PASSWORD)?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let fifo = token.path("p12.fifo");
    mkfifo(&fifo)?;

    let (err, _) = timed_failure("--p12 FIFO", &mut import_cmd(&token, &fifo, &password))?;
    assert!(err.contains("pipe (FIFO) with no writer"), "{err}");
    let (err, _) = timed_failure(
        "--p12 /dev/zero",
        &mut import_cmd(&token, Path::new("/dev/zero"), &password),
    )?;
    assert!(err.contains("it is a character device"), "{err}");
    let (err, _) = timed_failure("--password-file FIFO", &mut import_cmd(&token, &p12, &fifo))?;
    assert!(
        err.contains("cannot read the .p12 password from") && err.contains("no writer"),
        "{err}"
    );
    let (err, _) = timed_failure(
        "--password-file /dev/zero",
        &mut import_cmd(&token, &p12, Path::new("/dev/zero")),
    )?;
    assert!(err.contains("it is a character device"), "{err}");
    assert_eq!(token.objects()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn a_p12_on_standard_input_that_never_ends_is_refused_after_2_s() -> Result {
    let token = TestToken::new()?;
    let password = secret_file(token.dir.path(), "p12-password", POLISH_PASSWORD)?;
    let fifo = token.path("p12.fifo");
    mkfifo(&fifo)?;
    // Standard input is a pipe whose write end this test holds open and never closes.
    let stdin = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    let (err, _) = timed_failure(
        "--p12 - from a writer that never finishes",
        import_cmd(&token, Path::new("-"), &password).stdin(stdin),
    )?;
    assert!(
        err.contains("--p12 -: cannot read the .p12 from standard input")
            && err.contains("not complete within 2 s"),
        "{err}"
    );
    assert_eq!(token.objects()?, Vec::<String>::new());
    Ok(())
}
