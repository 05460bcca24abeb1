//! `hsm-signer sign`: asks the daemon to sign a file or standard input.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::args::SignArgs;
use super::output::write_out;

pub(super) fn run(args: SignArgs) -> Result<ExitCode> {
    let input = match &args.input {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading standard input")?;
            buf
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signature = runtime.block_on(crate::client::sign(
        &args.daemon.endpoint()?,
        &args.key,
        &args.algorithm,
        &input,
        args.digest,
        args.format.as_deref(),
    ))?;
    let bytes = if args.base64 {
        let mut text =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &signature)
                .into_bytes();
        text.push(b'\n');
        text
    } else {
        signature
    };
    match &args.output {
        Some(path) => write_out(path, &bytes)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}
