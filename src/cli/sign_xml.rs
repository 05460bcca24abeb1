//! `hsm-signer sign-xml`: asks the daemon to sign a SOAP envelope, a SAML message or a
//! document with XAdES-BES.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::{SignXmlArgs, XmlProfileArg};
use super::output::write_out;

pub(super) fn run(args: SignXmlArgs) -> Result<ExitCode> {
    use crate::client::{XmlProfile, XmlSignOptions};
    let profile = match args.profile {
        XmlProfileArg::Wss => XmlProfile::Wss,
        XmlProfileArg::Saml => XmlProfile::Saml,
        XmlProfileArg::Xades => XmlProfile::Xades,
    };
    if profile != XmlProfile::Saml && args.reference_id.is_some() {
        bail!("--reference-id applies to --profile saml only");
    }
    if profile != XmlProfile::Wss && args.timestamp_ttl.is_some() {
        bail!("--timestamp-ttl applies to --profile wss only");
    }
    if profile != XmlProfile::Xades
        && (args.certificate_digest.is_some() || args.signature_id.is_some())
    {
        bail!("--certificate-digest and --signature-id apply to --profile xades only");
    }
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let Ok(xml) = String::from_utf8(bytes) else {
        bail!(
            "xml_encoding_unsupported: {} is not UTF-8; only UTF-8 XML is accepted",
            args.input.display()
        );
    };
    let options = XmlSignOptions {
        algorithm: args.algorithm,
        reference_id: args.reference_id,
        timestamp_ttl_seconds: args.timestamp_ttl,
        certificate_digest: args.certificate_digest,
        signature_id: args.signature_id,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signed = runtime.block_on(crate::client::sign_xml(
        &args.daemon.endpoint()?,
        &args.key,
        profile,
        &xml,
        &options,
    ))?;
    write_out(&args.output, &signed)?;
    Ok(ExitCode::SUCCESS)
}
