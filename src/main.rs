//! The `hsm-signer` binary: parse arguments, set up logging, run, report the error once.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use hsm_signer::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hsm-signer: error: {}", message(&err));
            exit_code(&err)
        }
    }
}

/// The error and its causes, each cause added only when the message does not already
/// say it (most of hsm-signer's errors quote their cause themselves).
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// 78 (EX_CONFIG) when the token refused the PIN, so that systemd's
/// `RestartPreventExitStatus=78` stops restarting, and spending PIN tries; else 1.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    if hsm_signer::cli::is_pin_refusal(err) {
        ExitCode::from(78)
    } else {
        ExitCode::FAILURE
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // cryptoki logs at ERROR every vendor mechanism it has no name for and every failed
    // C_CloseSession on a lost token; hsm-signer reports what matters itself.
    let default = if verbose >= 2 {
        default.to_string()
    } else {
        format!("{default},cryptoki=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HSM_SIGNER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
