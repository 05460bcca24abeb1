//! A write to a SoftHSM token run as root, on a token another account owns (the daemon's),
//! is refused up front: it would leave root-owned files that account cannot read, and the
//! daemon would stop finding its keys. Nothing on the token changes.

use crate::common;
use std::process::Command;

use common::fixtures::*;
use common::*;

#[test]
fn root_may_not_write_to_a_softhsm_token_another_account_owns() -> Result {
    if !nix::unistd::geteuid().is_root() {
        return missing_precondition("needs root, to own the token as another account (chown)");
    }
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path("epuap.p12");
    write_p12(&p12, &leaf, &ca, "gsko-epuap", "hasło")?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let dir = token.token_dir()?;
    let chown = |owner: &str| -> Result {
        run_ok(Command::new("chown").args(["-R", owner]).arg(&dir))?;
        Ok(())
    };
    chown("nobody:nogroup")?;
    let before = token.objects()?;
    let err = run_fails(&mut import_cmd(&token, &p12, &password));
    chown("root:root")?;
    let err = err?;
    assert!(
        err.contains("belongs to \"nobody\"") && err.contains("runuser -u nobody"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("hasło"), "{err}");
    assert_eq!(token.objects()?, before);
    // Owned by root again: root may import.
    run_ok(&mut import_cmd(&token, &p12, &password))?;
    assert_ne!(token.objects()?, before);
    Ok(())
}

/// How many times the daemon's log warns that the PIN file lies beside the token files.
fn beside_warnings(daemon: &common::daemon::Daemon) -> usize {
    daemon
        .log_text()
        .matches("SoftHSM keeps the key in files that the PIN file on the same filesystem unlocks")
        .count()
}

#[test]
fn serve_warns_once_when_the_pin_file_lies_beside_the_softhsm_token() -> Result {
    use common::daemon::{provision, Daemon, KeySetup};
    use std::os::unix::fs::MetadataExt;
    let token = TestToken::new()?;
    let keys = [KeySetup {
        name: "epuap",
        label: "gsko-epuap",
        spec: KeySpec::Rsa(2048),
        algorithms: &["RS256"],
        extra: "",
    }];
    provision(&token, &keys)?;
    // The test's own precondition: its PIN file and its token directory share a filesystem.
    let tokens = token.conf.parent().ok_or("conf")?.join("tokens");
    assert_eq!(
        std::fs::metadata(&token.pin_file)?.dev(),
        std::fs::metadata(&tokens)?.dev(),
        "the PIN file and the token directory are on different filesystems here"
    );
    let daemon = Daemon::start(&token, &keys, "")?;
    let warned = beside_warnings(&daemon);
    let log = daemon.log_text();
    assert!(daemon.stop()?.success());
    assert_eq!(warned, 1, "{log}");
    assert!(log.contains("allow_softhsm_in_production = true"), "{log}");

    let config = token.path("accepted.toml");
    std::fs::write(
        &config,
        Daemon::config_text(&token, &keys, "").replacen(
            "sessions = 2\n",
            "sessions = 2\nallow_softhsm_in_production = true\n",
            1,
        ),
    )?;
    let daemon = Daemon::start_with(&token, config)?;
    let warned = beside_warnings(&daemon);
    let log = daemon.log_text();
    assert!(daemon.stop()?.success());
    assert_eq!(warned, 0, "{log}");
    Ok(())
}
