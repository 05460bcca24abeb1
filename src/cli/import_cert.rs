//! `hsm-signer import-cert`: a renewed certificate beside a key already on the token.

use std::process::ExitCode;

use anyhow::Result;

use super::args::ImportCertArgs;
use super::output::print;
use crate::import;

pub(super) fn run(args: ImportCertArgs) -> Result<ExitCode> {
    let target = args.token.resolve()?;
    let request = import::certificate::CertRequest {
        label: args.label,
        cert: args.cert,
        chain: args.chain,
    };
    let token = target.open_logged_in(true)?;
    let outcome = import::certificate::import_cert(&token, &request)?;
    print(&outcome, args.json, import_cert_text)
}

fn import_cert_text(o: &import::certificate::CertImported) -> String {
    use import::certificate::{CertOutcome, ExtractableChange};
    let mut head = match (o.outcome, &o.replaced) {
        (CertOutcome::Replaced, Some(old)) => format!(
            "Certificate replaced and proven (old serial {}, valid until {}).",
            old.serial, old.not_after
        ),
        (CertOutcome::Replaced, None) => "Certificate replaced and proven.".to_string(),
        (CertOutcome::Added, _) => {
            "Certificate added beside the key (it had none) and proven.".to_string()
        }
        (CertOutcome::Unchanged, _) => {
            "The token already holds this certificate; nothing added. Key proven.".to_string()
        }
    };
    match &o.extractable {
        ExtractableChange::AlreadyFalse => {}
        ExtractableChange::Cleared => head.push_str(
            "\nCKA_EXTRACTABLE was true on the key; set to false now (C_SetAttributeValue), and it reads back false.",
        ),
        ExtractableChange::Refused(why) => head.push_str(&format!(
            "\nWARNING: the key stays CKA_EXTRACTABLE true: the token would not change it ({why}). `hsm-signer serve` warns about such a key at start and refuses it with refuse_extractable_keys = true; see docs/tpm.md."
        )),
    }
    format!("{head}\n{}", o.report.to_text())
}
