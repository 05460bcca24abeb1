//! The printable record of an import, for the municipality's security register: what was
//! imported, where, when and by whom, the key's protection as read back from the token, and
//! lines for the security officer's and a witness's signatures. Polish first, English
//! beside it. It holds no secret: the `.p12` is named by its path and SHA-256 only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::import::Imported;

/// Refuses a record path that already exists or whose directory does not, before anything
/// is done.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.exists() {
        bail!(
            "the record file {} already exists; choose another name (a record is never overwritten)",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "the directory of the record file {} does not exist",
            path.display()
        );
    }
    Ok(())
}

/// The record's text.
pub fn import_record(imported: &Imported, p12: &Path, p12_sha256: Option<&str>) -> String {
    let when = crate::audit::now_rfc3339();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let uid = nix::unistd::getuid();
    let login = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "?".into());
    let mut out = String::new();
    out.push_str("PROTOKÓŁ PRZENIESIENIA KLUCZA DO TOKENA / KEY IMPORT RECORD\n");
    out.push_str(&format!("hsm-signer {}\n\n", env!("CARGO_PKG_VERSION")));
    let field =
        |pl: &str, en: &str, value: &str| format!("{:<44}{value}\n", format!("{pl} / {en}:"));
    out.push_str(&field("Data i godzina (UTC)", "Date and time", &when));
    out.push_str(&field("Serwer", "Host", &host));
    out.push_str(&field(
        "Wykonał",
        "Performed by",
        &format!("{login} (uid {uid})"),
    ));
    out.push_str(&field("Plik .p12", ".p12 file", &p12.display().to_string()));
    out.push_str(&field(
        "SHA-256 pliku .p12",
        ".p12 SHA-256",
        p12_sha256.unwrap_or("(not readable)"),
    ));
    out.push_str(&field(
        "Sposób zapisu klucza",
        "Method",
        &imported.method.to_string(),
    ));
    out.push('\n');
    out.push_str(&imported.report.to_text());
    out.push_str(
        "\nKlucz prywatny zapisano w tokenie jako nieodczytywalny (sensitive, not extractable);\n\
         powyższy dowód to podpis złożony w tokenie i sprawdzony certyfikatem.\n\
         The private key is stored on the token as sensitive and not extractable; the proof\n\
         above is a signature made on the token and verified against the certificate.\n\n\
         Plik .p12 i jego hasło należy teraz zniszczyć (docs/pl/import.md).\n\
         The .p12 file and its password are now to be destroyed (docs/import.md).\n\n",
    );
    out.push_str(
        "Inspektor bezpieczeństwa / Security officer:  ______________________________\n\n",
    );
    out.push_str(
        "Podpis / Signature:                           ______________________________\n\n",
    );
    out.push_str(
        "Świadek / Witness:                            ______________________________\n\n",
    );
    out.push_str("Podpis / Signature:                           ______________________________\n");
    out
}

/// Writes the record, mode 0640, refusing to replace an existing file.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
