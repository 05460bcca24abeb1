//! `hsm-signer pin change` and `hsm-signer pin unlock`: the token's PINs without
//! pkcs11-tool. Each makes one PIN operation and never retries it, shows the token's PIN
//! flags first, takes secrets from files, the environment or a no-echo prompt (never
//! argv), and reminds the operator of the daemon's `pin_file`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use secrecy::{ExposeSecret, SecretString};

use super::token_args::{TokenArgs, TokenSelectArgs};
use crate::secret::{SecretSource, NEW_PIN_ENV, SO_PIN_ENV};
use crate::token::{OpenToken, PinFlags};

/// `hsm-signer pin ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PinCommand {
    /// Change the user PIN (or with --so the SO PIN) with one C_SetPIN, never retried,
    /// then prove the new PIN with a login. The current PIN comes from --pin-file (with
    /// --so: the SO PIN), HSM_SIGNER_PIN (HSM_SIGNER_SO_PIN) or a no-echo prompt; the new
    /// one from --new-pin-file, HSM_SIGNER_NEW_PIN, or a no-echo prompt asked twice.
    Change(PinChangeArgs),
    /// Set a new user PIN with the SO PIN (C_InitPIN) after the user PIN was locked or
    /// forgotten: one SO login, never retried, then a login with the new PIN as proof.
    Unlock(PinUnlockArgs),
}

/// `hsm-signer pin change`.
#[derive(Debug, clap::Args)]
pub struct PinChangeArgs {
    /// The token, and where the current PIN comes from.
    #[command(flatten)]
    token: TokenArgs,
    /// File holding the new PIN (mode 0600).
    #[arg(long)]
    new_pin_file: Option<PathBuf>,
    /// Change the security officer's PIN (on a card: the PUK); --pin-file then holds the
    /// current SO PIN.
    #[arg(long)]
    so: bool,
}

/// `hsm-signer pin unlock`.
#[derive(Debug, clap::Args)]
pub struct PinUnlockArgs {
    /// The token.
    #[command(flatten)]
    token: TokenSelectArgs,
    /// File holding the SO PIN (else HSM_SIGNER_SO_PIN, else a no-echo prompt).
    #[arg(long)]
    so_pin_file: Option<PathBuf>,
    /// File holding the new user PIN (else HSM_SIGNER_NEW_PIN, else asked twice).
    #[arg(long)]
    new_pin_file: Option<PathBuf>,
    /// Log in as SO even though the token says the next wrong SO PIN locks it.
    #[arg(long)]
    pin_final_try: bool,
}

/// Runs `pin change` or `pin unlock`.
pub fn run(command: PinCommand) -> Result<ExitCode> {
    match command {
        PinCommand::Change(args) => change(&args),
        PinCommand::Unlock(args) => unlock(&args),
    }
}

/// `hsm-signer pin change` (and its old name `change-pin`).
pub fn change(args: &PinChangeArgs) -> Result<ExitCode> {
    let (module, selector) = args.token.select().resolve()?;
    let current = if args.so {
        SecretSource::choose(
            args.token.pin_file(),
            SO_PIN_ENV,
            &format!("Current SO PIN for {selector}: "),
            "SO PIN",
            "--pin-file",
        )?
    } else {
        args.token.resolve()?.pin
    };
    let who = if args.so { "SO" } else { "user" };
    let new_source = new_pin_source(args.new_pin_file.as_deref(), who)?;
    let token = open_for_pins(&module, &selector)?;
    let current = current.read(if args.so { "SO PIN" } else { "token PIN" })?;
    let new = read_new_pin(&new_source, who)?;
    if current.expose_secret() == new.expose_secret() {
        bail!("the new PIN is the same as the current one; nothing was changed");
    }
    let final_try = args.token.pin_final_try();
    if args.so {
        token.change_so_pin(&current, &new, final_try)?;
        // Proof: the token takes the new SO PIN (one login, not retried).
        crate::token::so_login(
            token.module.ctx(),
            token.slot,
            &token.info.label,
            &token.session,
            &new,
            false,
        )
        .context("the SO PIN was changed, but a login with the new SO PIN failed")?;
        let _ = token.session.logout();
        println!(
            "SO PIN changed on token \"{}\" (serial {}) and proven: a login as SO with the new PIN succeeded.",
            token.info.label, token.info.serial
        );
        println!("Keep the new SO PIN in the safe; the daemon does not use it.");
        return Ok(ExitCode::SUCCESS);
    }
    token.change_pin(&current, &new, final_try)?;
    token
        .login(&new, false)
        .context("the PIN was changed, but a login with the new PIN failed")?;
    println!(
        "PIN changed on token \"{}\" (serial {}) and proven: a login with the new PIN succeeded.",
        token.info.label, token.info.serial
    );
    remind_daemon();
    Ok(ExitCode::SUCCESS)
}

/// `hsm-signer pin unlock`.
fn unlock(args: &PinUnlockArgs) -> Result<ExitCode> {
    let (module, selector) = args.token.resolve()?;
    let so_source = SecretSource::choose(
        args.so_pin_file.as_deref(),
        SO_PIN_ENV,
        &format!("SO PIN for {selector}: "),
        "SO PIN",
        "--so-pin-file",
    )?;
    let new_source = new_pin_source(args.new_pin_file.as_deref(), "user")?;
    let token = open_for_pins(&module, &selector)?;
    let so_pin = so_source.read("SO PIN")?;
    let new = read_new_pin(&new_source, "user")?;
    token.unlock_user_pin(&so_pin, &new, args.pin_final_try)?;
    drop(so_pin);
    token
        .login(&new, false)
        .context("the user PIN was set with the SO PIN, but a login with it failed")?;
    let (user, _) = token.pin_flags();
    println!(
        "User PIN of token \"{}\" (serial {}) set with the SO PIN and proven: a login with it succeeded.",
        token.info.label, token.info.serial
    );
    println!("User PIN status now: {user}");
    remind_daemon();
    Ok(ExitCode::SUCCESS)
}

/// Opens the token read-write (SoftHSM: as the account that owns it) and shows its PIN
/// flags before any PIN is spent.
fn open_for_pins(module: &Path, selector: &crate::token::TokenSelector) -> Result<OpenToken> {
    let token = OpenToken::open(module, selector, true)?;
    crate::token::softhsm::check_writer(module, &token.info.serial).map_err(anyhow::Error::msg)?;
    let (user, so) = token.pin_flags();
    eprintln!(
        "Token \"{}\" (serial {}): user PIN: {}; SO PIN: {}",
        token.info.label,
        token.info.serial,
        user,
        so_text(so)
    );
    Ok(token)
}

fn so_text(flags: PinFlags) -> String {
    if flags.locked {
        "LOCKED".into()
    } else if flags.final_try {
        "FINAL TRY: the next wrong SO PIN locks it".into()
    } else if flags.count_low {
        "retry count low: wrong SO PINs have been entered".into()
    } else {
        "no retry warnings".into()
    }
}

fn new_pin_source(file: Option<&Path>, who: &str) -> Result<SecretSource> {
    Ok(SecretSource::choose(
        file,
        NEW_PIN_ENV,
        &format!("New {who} PIN: "),
        "new PIN",
        "--new-pin-file",
    )?)
}

/// Reads the new PIN; a prompt asks twice and both must agree.
fn read_new_pin(source: &SecretSource, who: &str) -> Result<SecretString> {
    let new = source.read("new PIN")?;
    if matches!(source, SecretSource::Prompt(_)) {
        let again = SecretSource::Prompt(format!("New {who} PIN again: ")).read("new PIN")?;
        if again.expose_secret() != new.expose_secret() {
            bail!("the two new PINs differ; nothing was changed");
        }
    }
    Ok(new)
}

fn remind_daemon() {
    println!(
        "Now write the new PIN to the daemon's pin_file (e.g. /etc/hsm-signer/pin) before the daemon next starts, \
         and restart it (systemctl restart hsm-signer): a daemon that logs in with the old PIN spends a try."
    );
}
