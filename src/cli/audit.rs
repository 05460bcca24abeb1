//! `hsm-signer audit verify`: checks audit files' chain (and signed checkpoints) and says where it breaks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

pub(super) fn verify(files: &[PathBuf], certificate: Option<&std::path::Path>) -> Result<ExitCode> {
    let checker = match certificate {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the certificate {}", path.display()))?;
            let cert = crate::cert::load_cert_bytes(&bytes)
                .with_context(|| format!("{} is not a certificate (PEM or DER)", path.display()))?;
            Some(crate::audit::checkpoint::Checker::new(cert.public_key()?))
        }
    };
    let result = crate::audit::verify(files, checker)?;
    for note in &result.notes {
        println!("{note}");
    }
    if let Some(broken) = &result.broken {
        println!(
            "BROKEN at line {} of {}: {}",
            broken.line,
            broken.file.display(),
            broken.why
        );
        return Ok(ExitCode::FAILURE);
    }
    let signed = if certificate.is_some() {
        format!(", {} signed checkpoints verified", result.checkpoints)
    } else {
        String::new()
    };
    println!(
        "OK: {} lines in {} file(s), chain intact{signed}; head {}",
        result.lines,
        files.len(),
        result.head
    );
    if result
        .notes
        .iter()
        .any(|n| crate::audit::checkpoint::is_gap(n))
    {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
