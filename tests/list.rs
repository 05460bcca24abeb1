//! `list` exits 1 when a key on the token shows a PROBLEM, so cron and monitoring notice
//! (it printed PROBLEM and exited 0 before).

use crate::common;
use crate::common::daemon::EPUAP;
use common::daemon::provision;
use common::*;

#[test]
fn list_exits_1_when_a_key_shows_a_problem() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let out = run_ok(&mut token.on_token("list"))?;
    assert!(!String::from_utf8(out.stdout)?.contains("PROBLEM"));
    // A key made by another tool, extractable and without a certificate.
    run_ok(token.pkcs11_tool().args([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "made-elsewhere",
        "--id",
        "0a0b",
        "--extractable",
    ]))?;
    let out = token.on_token("list").output()?;
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("PROBLEM"), "{text}");
    assert!(
        String::from_utf8(out.stderr)?.contains("shows a PROBLEM"),
        "the reason on standard error"
    );
    Ok(())
}
