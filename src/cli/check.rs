//! `hsm-signer check`: the certificates' expiry for a monitoring system (Nagios exit codes).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;

use super::token_args::TokenSelectArgs;
use crate::inventory;

pub(super) fn run(
    token: TokenSelectArgs,
    label: Option<&str>,
    warn_days: i64,
    crit_days: i64,
) -> Result<ExitCode> {
    let certificates = token.resolve().and_then(|(module, selector)| {
        let token = crate::token::OpenToken::open(&module, &selector, false)?;
        Ok(inventory::certificates(&token)?)
    });
    let outcome = match certificates {
        Ok(found) => crate::check::judge(&found, label, warn_days, crit_days),
        Err(e) => crate::check::Outcome {
            state: crate::check::State::Unknown,
            lines: vec![format!("UNKNOWN - {}", format!("{e:#}").replace('\n', " "))],
        },
    };
    // A monitoring wrapper may read only the first line (`| head -1`): a closed pipe must
    // not turn the state into a panic's exit 101, so write errors are ignored here.
    let mut out = std::io::stdout().lock();
    for line in &outcome.lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(ExitCode::from(outcome.state as u8))
}
