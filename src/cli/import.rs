//! `hsm-signer import`: a .p12 (a file or standard input) into the token, proven, with an optional record.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::ImportArgs;
use super::output::{print, shown};
use crate::import::{self, ImportRequest};
use crate::secret::{SecretSource, P12_PASSWORD_ENV};

pub(super) fn run(args: ImportArgs) -> Result<ExitCode> {
    let from_stdin = args.p12.as_os_str() == "-";
    if from_stdin {
        stdin_p12_preconditions(&args)?;
    }
    let target = args.token.resolve()?;
    // Created before the token is touched, removed again if the import fails.
    let record = args
        .record
        .as_deref()
        .map(crate::record::RecordFile::create)
        .transpose()?;
    let stdin_bytes = if from_stdin {
        Some(read_p12_from_stdin()?)
    } else {
        None
    };
    let p12_name = if from_stdin {
        PathBuf::from("standard input")
    } else {
        args.p12.clone()
    };
    // Read once, bounded: the digest in the record is of the very bytes imported.
    let p12_bytes = match stdin_bytes {
        Some(bytes) => bytes,
        None => import::read_p12(&args.p12)?,
    };
    let p12_digest = crate::record::FileDigest::of(&p12_bytes);
    let password = SecretSource::choose(
        args.password_file.as_deref(),
        P12_PASSWORD_ENV,
        &format!("Password for {}: ", args.p12.display()),
        ".p12 password",
        "--password-file",
    )?
    .read(".p12 password")?;
    let request = ImportRequest {
        p12: p12_name.clone(),
        cert: args.cert,
        label: args.label,
        id: args.id.map(|id| id.0),
        replace: args.replace,
        allow_derive: args.allow_derive,
        method: args.method.into(),
    };
    // Everything that needs only the file is checked before the token is touched.
    let prepared = import::prepare_bytes(request, &p12_bytes, &password)?;
    drop(password);
    drop(p12_bytes);
    let token = target.open_logged_in(true)?;
    eprintln!(
        "Importing \"{}\" into token \"{}\" (serial {})...",
        shown(prepared.label()),
        shown(&token.info.label),
        shown(&token.info.serial)
    );
    let imported = import::store(&token, prepared)?;
    if let Some(record) = record {
        let text = crate::record::import_record(&imported, &p12_name, &p12_digest);
        let path = record.path().to_path_buf();
        record.fill(&text).with_context(|| {
            "the key was imported and proven, but the record could not be written; `hsm-signer list` prints the details again"
        })?;
        eprintln!("Record for the security register: {}", path.display());
    }
    print(&imported, args.json, |i| {
        let how = match i.method {
            import::Method::Create => "the key was written with C_CreateObject",
            import::Method::Unwrap => "the key entered the token wrapped, through C_UnwrapKey",
        };
        format!(
            "Imported and proven.\nMethod:       {} ({how})\n{}",
            i.method,
            i.report.to_text()
        )
    })
}

/// `--p12 -` takes standard input for the file, so no secret can be asked there: the
/// password and the PIN must come from files or the environment.
fn stdin_p12_preconditions(args: &ImportArgs) -> Result<()> {
    if std::io::stdin().is_terminal() {
        bail!("--p12 - reads the .p12 from standard input, but standard input is a terminal: redirect the file (--p12 - < FILE) or pipe it in");
    }
    if args.password_file.is_none() && std::env::var_os(P12_PASSWORD_ENV).is_none() {
        bail!("--p12 - reads the .p12 from standard input, so the .p12 password cannot be asked there: pass --password-file FILE or set {P12_PASSWORD_ENV}");
    }
    if !args.token.has_pin_source() {
        bail!("--p12 - reads the .p12 from standard input, so the token PIN cannot be asked there: pass --pin-file FILE, put pin-source in the pkcs11: URI, or set {}", crate::secret::PIN_ENV);
    }
    Ok(())
}

/// Reads the whole `.p12` from standard input, into memory that is wiped when dropped: at
/// most 1 MiB (Sigillum's files are a few kB), complete within 2 s, from a file or a pipe
/// only (see [`crate::secret::bounded`]), so that a writer that never finishes cannot hang
/// the import.
fn read_p12_from_stdin() -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use crate::secret::bounded::{self, ReadError};
    match bounded::read_stdin(bounded::SMALL_FILE) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        Ok(_) | Err(ReadError::NoWriter) => {
            bail!("--p12 -: standard input is empty; redirect the .p12 file (--p12 - < FILE)")
        }
        Err(ReadError::TooLarge(_)) => bail!(
            "--p12 -: standard input holds more than 1 MiB, which is no .p12 from Sigillum (a few kB); check what is piped in"
        ),
        Err(e) => bail!("--p12 -: cannot read the .p12 from standard input: {e}"),
    }
}
