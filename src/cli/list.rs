//! `hsm-signer list`: the keys on the token, with their certificates and problems.

use std::process::ExitCode;

use anyhow::Result;

use super::output::{print, shown};
use super::token_args::TokenTarget;
use crate::inventory::{self, Listed};

/// Lists the keys; exits 1 when one of them shows a problem (an unreadable entry, or a key
/// that is readable, extractable or cannot do its job), so a cron job or a monitoring
/// check notices.
pub(super) fn run(target: TokenTarget, json: bool) -> Result<ExitCode> {
    let token = target.open_logged_in(false)?;
    let keys = inventory::list(&token)?;
    let troubled = keys.iter().any(|k| match k {
        Listed::Key(r) => !crate::proof::problems(&r.attributes).is_empty(),
        Listed::Problem { .. } => true,
    });
    let printed = print(&keys, json, |keys| {
        if keys.is_empty() {
            return format!(
                "Token \"{}\" holds no private keys.\n",
                shown(&token.info.label)
            );
        }
        keys.iter()
            .map(|k| match k {
                Listed::Key(r) => r.to_text(),
                Listed::Problem { problem } => format!("PROBLEM: {}\n", shown(problem)),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    if troubled {
        eprintln!("hsm-signer: a key on the token shows a PROBLEM (above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(printed)
}
