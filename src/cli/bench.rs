//! `hsm-signer bench`: runs a benchmark and prints its result as JSON.

use std::process::ExitCode;

use anyhow::Result;

use super::args::BenchTarget;

pub(super) fn run(target: BenchTarget) -> Result<ExitCode> {
    let result = match target {
        BenchTarget::Floor {
            socket,
            audit,
            hand_off,
        } => {
            crate::bench::floor::run(&socket, &audit, hand_off)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchTarget::Token {
            token,
            label,
            algorithm,
            parallel,
            seconds,
        } => {
            let target = token.resolve()?;
            let pin = target.pin.read("token PIN")?;
            crate::bench::token(
                &target.module,
                &target.selector,
                &pin,
                &label,
                algorithm,
                parallel.max(1),
                std::time::Duration::from_secs_f64(seconds),
            )?
        }
        BenchTarget::Daemon {
            daemon,
            key,
            endpoint,
            algorithm,
            digest,
            clients,
            seconds,
            sample_out,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench::daemon(
                &daemon.endpoint()?,
                endpoint,
                &key,
                algorithm,
                digest,
                clients.max(1),
                std::time::Duration::from_secs_f64(seconds),
                sample_out.as_deref(),
            ))?
        }
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}
