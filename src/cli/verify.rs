//! `hsm-signer verify`: proves a stored key, with an optional record for an auditor.

use std::process::ExitCode;

use anyhow::Result;

use super::output::print;
use super::token_args::TokenTarget;
use crate::inventory;

pub(super) fn run(
    target: TokenTarget,
    label: &str,
    record: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode> {
    let record = record.map(crate::record::RecordFile::create).transpose()?;
    let token = target.open_logged_in(false)?;
    let report = inventory::verify(&token, label)?;
    if let Some(record) = record {
        let path = record.path().to_path_buf();
        record.fill(&crate::record::verify_record(&report))?;
        eprintln!("Record for the security register: {}", path.display());
    }
    print(&report, json, |r| format!("Key works.\n{}", r.to_text()))
}
