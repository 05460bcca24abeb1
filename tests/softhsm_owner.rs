//! A write to a SoftHSM token run as root, on a token another account owns (the daemon's),
//! is refused up front: it would leave root-owned files that account cannot read, and the
//! daemon would stop finding its keys. Nothing on the token changes.

mod common;
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
