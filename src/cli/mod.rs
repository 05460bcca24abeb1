//! The command line: clap's definitions (`args`, whose `///` comments are the `--help`
//! text), resolved into plain settings before any work, then handed to the library. Each
//! command's body is a file of its own; this file only dispatches.

mod args;
mod assets;
mod audit;
mod bench;
mod check;
mod generate;
mod import;
mod import_cert;
mod list;
mod output;
mod pin;
mod remove;
mod sign;
mod sign_xml;
mod token_args;
mod tokens;
mod verify;

use std::process::ExitCode;

use anyhow::Result;

pub use args::{
    AuditCommand, BenchTarget, Cli, Command, DaemonArgs, ImportArgs, ImportCertArgs, SignArgs,
    SignXmlArgs, XmlProfileArg,
};
pub use generate::GenerateArgs;
pub use token_args::{TokenArgs, TokenSelectArgs, TokenTarget};

/// True when `err` is the token refusing the PIN (wrong, locked, or on its final try).
pub fn is_pin_refusal(err: &anyhow::Error) -> bool {
    let token_error = err.chain().find_map(|e| {
        e.downcast_ref::<crate::token::TokenError>().or_else(|| {
            match e.downcast_ref::<crate::server::ServeError>() {
                Some(crate::server::ServeError::Token(t)) => Some(t),
                _ => None,
            }
        })
    });
    matches!(
        token_error,
        Some(
            crate::token::TokenError::PinIncorrect { .. }
                | crate::token::TokenError::PinLocked { .. }
                | crate::token::TokenError::PinFinalTry { .. }
                | crate::token::TokenError::SoPinIncorrect { .. }
                | crate::token::TokenError::SoPinLocked { .. }
                | crate::token::TokenError::SoPinFinalTry { .. }
                | crate::token::TokenError::CurrentPinLength { .. }
        )
    )
}

/// Runs the command line; errors are printed once by the caller.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Tokens { module, json } => tokens::run(module, json),
        Command::Import(args) => import::run(args),
        Command::Generate(args) => generate::run(args),
        Command::ImportCert(args) => import_cert::run(args),
        Command::List { token, json } => list::run(token.resolve()?, json),
        Command::Verify {
            token,
            label,
            record,
            json,
        } => verify::run(token.resolve()?, &label, record.as_deref(), json),
        Command::Remove { token, label, yes } => remove::run(token.resolve()?, &label, yes),
        Command::Pin { command } => pin::run(command),
        Command::ChangePin(args) => pin::change(&args),
        Command::Assets { dir } => assets::write(&dir).map(|()| ExitCode::SUCCESS),
        Command::Serve { config } => {
            crate::server::serve(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign(args) => sign::run(args),
        Command::SignXml(args) => sign_xml::run(args),
        Command::Check {
            token,
            label,
            warn_days,
            crit_days,
        } => check::run(token, label.as_deref(), warn_days, crit_days),
        Command::Bench { target } => bench::run(target),
        Command::Audit {
            command: AuditCommand::Verify { files, certificate },
        } => audit::verify(&files, certificate.as_deref()),
    }
}
