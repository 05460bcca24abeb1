//! Smoke test of the token helper: two tokens in one process stay apart.

use crate::common;
use common::*;

#[test]
fn two_tokens_in_one_process_are_separate() -> Result {
    let a = TestToken::new()?;
    let b = TestToken::new()?;
    assert_ne!(a.label, b.label);
    assert_ne!(a.serial, b.serial);
    assert!(a.objects()?.is_empty());
    let out = run_ok(
        a.hsm_signer()
            .args(["tokens", "--module", MODULE, "--json"]),
    )?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains(&a.label) && text.contains(&b.label), "{text}");
    Ok(())
}
