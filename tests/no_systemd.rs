//! operations.md 3.1 (EN and PL): the commands that start the daemon without systemd do
//! what the units do. The documented block runs as written, with the test's own paths and
//! accounts put in (`nobody` for `hsm-signer`, this test's directory for /run, /var/log and
//! /etc); then `/proc` must show the unit's user, groups, umask and limits, the socket the
//! unit's mode and group, and a signature asked for as `www-data` must verify. Section 3's
//! quick test then runs as written in a root shell with `umask 077`.

use crate::common;
use crate::common::daemon::EPUAP;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::daemon::{openssl_verify, provision, wait_until};
use common::*;

/// The block with this test's paths and accounts in place of the production ones.
fn localise(block: &str, root: &Path) -> String {
    let r = root.display();
    block
        .replace("/run/hsm-signer", &format!("{r}/run"))
        .replace("/var/log/hsm-signer", &format!("{r}/log"))
        .replace("/etc/hsm-signer", &format!("{r}/etc"))
        .replace("-o hsm-signer -g hsm-signer", "-o nobody -g nogroup")
        .replace("--reuid=hsm-signer", "--reuid=nobody")
        .replace("--regid=hsm-signer", "--regid=nogroup")
        .replace("id -G hsm-signer", "id -G nobody")
}

/// The daemon's shell (its process group is stopped on drop).
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, name: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("/proc/{pid}/status has no {name}").into())
}

fn limit(pid: u32, name: &str) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| format!("no {name} in /proc/{pid}/limits"))?;
    Ok(line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// The pid of the `hsm-signer` process in `shell`'s process group (after `exec`, the
/// shell itself).
fn daemon_pid(shell: u32) -> Result<u32> {
    let exe = std::fs::read_link(format!("/proc/{shell}/exe"))?;
    if exe.file_name().and_then(|n| n.to_str()) != Some("hsm-signer") {
        return Err(format!("pid {shell} runs {}, not hsm-signer", exe.display()).into());
    }
    Ok(shell)
}

fn run_documented_start(doc: &str) -> Result {
    if !nix::unistd::geteuid().is_root() {
        return missing_precondition("needs root, to run the daemon as another account");
    }
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let root = token.dir.path();
    // Readable for the daemon's account: this test's directory, the token's files, the
    // PIN file (as /etc/hsm-signer/pin is for hsm-signer).
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let conf_dir = token.conf.parent().ok_or("conf without a directory")?;
    std::fs::set_permissions(conf_dir, std::fs::Permissions::from_mode(0o755))?;
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg("nobody:nogroup")
            .arg(conf_dir.join("tokens")),
    )?;
    std::fs::set_permissions(&token.conf, std::fs::Permissions::from_mode(0o644))?;
    let etc = root.join("etc");
    std::fs::create_dir(&etc)?;
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755))?;
    let pin = etc.join("pin");
    std::fs::copy(&token.pin_file, &pin)?;
    run_ok(Command::new("chown").arg("nobody:nogroup").arg(&pin))?;
    let socket = root.join("run/hsm-signer.sock");
    let audit = root.join("log/audit.jsonl");
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "[token]\nmodule = \"{}\"\ntoken = \"{}\"\npin_file = \"{}\"\nsessions = 1\n\n\
             [server]\nsocket = \"{}\"\nsocket_mode = \"0660\"\nsocket_group = \"www-data\"\n\
             allowed_uids = [33]\n\n[audit]\nfile = \"{}\"\n\n\
             [[keys]]\nname = \"epuap\"\nlabel = \"gsko-epuap\"\nalgorithms = [\"RS256\"]\n",
            token.module.display(),
            token.label,
            pin.display(),
            socket.display(),
            audit.display()
        ),
    )?;

    let script = localise(&doc_block(doc, "no-systemd")?, root);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hsm-signer"));
    let path = format!(
        "{}:{}",
        bin.parent().ok_or("binary dir")?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = std::fs::File::create(root.join("serve.log"))?;
    let shell = {
        use std::os::unix::process::CommandExt;
        let mut cmd = token.tool("bash");
        cmd.args(["-euo", "pipefail", "-c", &script])
            .env("PATH", &path)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        Started(cmd.spawn()?)
    };
    wait_until(Duration::from_secs(20), "the socket", || {
        Ok(socket.exists() && std::fs::read_to_string(root.join("serve.log"))?.contains("ready"))
    })
    .map_err(|e| {
        format!(
            "{e}; the daemon's log:\n{}",
            std::fs::read_to_string(root.join("serve.log")).unwrap_or_default()
        )
    })?;
    let pid = daemon_pid(shell.0.id())?;

    // What the units would have given it.
    let uid = status_field(pid, "Uid")?;
    assert!(uid.split_whitespace().all(|u| u == "65534"), "Uid: {uid}");
    let groups = status_field(pid, "Groups")?;
    assert!(
        groups.split_whitespace().any(|g| g == "33"),
        "www-data (33) missing from Groups: {groups}"
    );
    assert_eq!(status_field(pid, "Umask")?, "0077");
    assert_eq!(status_field(pid, "NoNewPrivs")?, "1");
    assert_eq!(status_field(pid, "CapBnd")?, "0000000000000000");
    assert_eq!(limit(pid, "Max open files")?, "4096");
    assert_eq!(limit(pid, "Max core file size")?, "0");
    let meta = std::fs::metadata(&socket)?;
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), 33, "socket group");
    assert_eq!(std::fs::metadata(root.join("log"))?.mode() & 0o777, 0o700);

    // GSKO's account signs through it, and the record is written, readable by no one else.
    let data = root.join("data.txt");
    std::fs::write(&data, b"bez systemd")?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644))?;
    let out = run_ok(
        Command::new("runuser")
            .args(["-u", "www-data", "--"])
            .arg(&bin)
            .arg("sign")
            .arg("--socket")
            .arg(&socket)
            .args(["--key", "epuap", "--algorithm", "RS256", "--in"])
            .arg(&data),
    )?;
    assert!(
        openssl_verify(
            root,
            &leaves[0].cert,
            b"bez systemd",
            &out.stdout,
            &["-sha256"]
        )?,
        "the signature made without systemd does not verify against the certificate"
    );
    assert_eq!(
        std::fs::metadata(&audit)?.mode() & 0o777,
        0o600,
        "audit log mode"
    );

    // Section 3's quick test, in the root shell import.md section 2 leaves (umask 077).
    let quick = localise(&doc_block(doc, "quick-test")?, root);
    let out = run_ok(
        token
            .tool("bash")
            .args(["-euo", "pipefail", "-c", &format!("umask 077\n{quick}")])
            .env("PATH", &path),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verified OK"), "{text}");
    drop(shell);
    Ok(())
}

#[test]
fn the_documented_start_without_systemd_does_what_the_units_do() -> Result {
    run_documented_start("docs/operations.md")
}

#[test]
fn the_polish_start_without_systemd_is_the_same() -> Result {
    run_documented_start("docs/pl/operations.md")
}
