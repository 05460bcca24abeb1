//! `hsm-signer remove`: deletes the objects under a label, after a confirmation.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::token_args::TokenTarget;
use crate::inventory;

pub(super) fn run(target: TokenTarget, label: &str, yes: bool) -> Result<ExitCode> {
    let token = target.open_logged_in(true)?;
    let objects = inventory::objects_labelled(&token, label)?;
    if objects.is_empty() {
        bail!(
            "no objects labelled \"{label}\" on token \"{}\"; nothing removed",
            token.info.label
        );
    }
    if !yes {
        confirm(label, objects.len(), &token.info.label)?;
    }
    let removed = inventory::remove(&token, label, &objects)?;
    println!(
        "Removed {removed} object(s) labelled \"{label}\" from token \"{}\".",
        token.info.label
    );
    Ok(ExitCode::SUCCESS)
}

fn confirm(label: &str, count: usize, token: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to remove {count} object(s) labelled \"{label}\" without confirmation: re-run with --yes");
    }
    eprint!("Remove {count} object(s) labelled \"{label}\" from token \"{token}\"? This cannot be undone. Type the label to confirm: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() != label {
        bail!("not confirmed; nothing removed");
    }
    Ok(())
}
