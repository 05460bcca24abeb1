//! operations.md 4.2 (EN and PL): the Nagios plugin that runs `hsm-signer check` through
//! sudo, installed as the doc writes it. Run by root (whom sudo lets through), it passes
//! on check's own answer and exit code; run by an account sudo refuses, it answers UNKNOWN
//! (3) with sudo's reason, where a bare `sudo -n` would have exited 1, which Nagios shows
//! as WARNING.

use crate::common;
use crate::common::daemon::EPUAP;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::daemon::provision;
use common::*;

fn plugin_answers(doc: &str) -> Result {
    if !nix::unistd::geteuid().is_root() {
        return missing_precondition("needs root, to sudo to another account");
    }
    if Command::new("sudo").arg("-V").output().is_err() {
        return missing_precondition("sudo is not installed");
    }
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let root = token.dir.path();
    // The account check runs as must read the token's files (as hsm-signer does).
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let conf_dir = token.conf.parent().ok_or("conf without a directory")?;
    std::fs::set_permissions(conf_dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&token.conf, std::fs::Permissions::from_mode(0o644))?;
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg("nobody:nogroup")
            .arg(conf_dir.join("tokens")),
    )?;

    let plugins = root.join("plugins");
    let script = doc_block(doc, "nagios-plugin")?
        .replace(
            "/usr/local/lib/nagios/plugins",
            &plugins.display().to_string(),
        )
        .replace(
            "sudo -n -u hsm-signer",
            "sudo -n --preserve-env=SOFTHSM2_CONF -u nobody",
        )
        .replace("/usr/bin/hsm-signer", env!("CARGO_BIN_EXE_hsm-signer"))
        .replace("--token GSKO", &format!("--token {}", token.label))
        .replace(
            "/usr/lib/softhsm/libsofthsm2.so",
            &token.module.display().to_string(),
        );
    run_ok(token.tool("bash").args(["-euo", "pipefail", "-c", &script]))?;
    let plugin = plugins.join("check_hsm_signer");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755))?;

    // Let through: check's own line and exit code.
    let out = token.tool(&plugin.display().to_string()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("OK - gsko-epuap: "), "{text}");

    // Refused by sudo: UNKNOWN, with sudo's reason.
    let out = token
        .tool("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&plugin)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.starts_with("UNKNOWN - hsm-signer check did not run: ")
            && (text.contains("is not in the sudoers file")
                || text.contains("a password is required"))
            && text.ends_with("(through sudo, the sudoers line must match the command exactly)\n"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_nagios_plugin_tells_a_sudo_refusal_from_a_certificate_warning() -> Result {
    plugin_answers("docs/operations.md")
}

#[test]
fn the_polish_nagios_plugin_is_the_same() -> Result {
    plugin_answers("docs/pl/operations.md")
}
