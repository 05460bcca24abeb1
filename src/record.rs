//! The printable records for the municipality's security register: of an import
//! ("protokół przeniesienia klucza") and of a later check in front of an auditor
//! ("protokół sprawdzenia klucza"). Each says what, where, when and by whom, the key's
//! protection as read back from the token, the proof, and has lines for the security
//! officer's and a witness's signatures; Polish first, English beside it. No secret is in
//! it: the `.p12` is named by its path, size and SHA-256 only.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::import::Imported;
use crate::report::KeyReport;
use crate::text::{printable, WHOLE};

/// A record file created before the work it records, so that a record that cannot be
/// written stops the work before the token is touched. [`RecordFile::fill`] writes the
/// text; a record dropped unfilled (the work failed) is removed again.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    file: Option<File>,
}

impl RecordFile {
    /// Creates `path`, mode 0640: a new file only (a record is never overwritten), and
    /// never through a symlink.
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o640)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => anyhow!(
                    "the record file {} already exists; choose another name (a record is never overwritten)",
                    path.display()
                ),
                _ => anyhow!(
                    "cannot create the record file {}: {e}; nothing was done. Choose a directory you can write to",
                    path.display()
                ),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    /// The path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the record and keeps the file.
    pub fn fill(mut self, text: &str) -> Result<()> {
        let mut file = self.file.take().context("record already written")?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", self.path.display()));
        if written.is_err() {
            self.remove(&file);
        }
        written
    }

    /// Removes the file this created, and only that one: not a file put in its place.
    fn remove(&self, file: &File) {
        let ours = |m: &std::fs::Metadata| (m.dev(), m.ino());
        match (file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) if ours(&a) == ours(&b) => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot remove the unfilled record file");
                }
            }
            _ => {}
        }
    }
}

impl Drop for RecordFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.remove(&file);
        }
    }
}

/// The size and SHA-256 of a `.p12`, so that every copy of it can be found later with
/// `find / -xdev -type f -size <size>c -exec sha256sum {} +`.
#[derive(Debug, Clone)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: usize,
    /// SHA-256, hex.
    pub sha256: String,
}

impl FileDigest {
    /// Of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len(),
            sha256: hex::encode(openssl::sha::sha256(bytes)),
        }
    }
}

/// One line `Polish / English:   value`. Values that came from outside are escaped by
/// the caller ([`printable`]), so that none can add a line.
fn field(pl: &str, en: &str, value: &str) -> String {
    format!("{:<44}{value}\n", format!("{pl} / {en}:"))
}

/// Date, host and operator: the login user behind sudo or runuser where the kernel or
/// sudo tell it, and the uid the command ran as.
fn header(title: &str) -> String {
    let when = crate::audit::now_rfc3339();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let uid = nix::unistd::getuid();
    let name_of = |uid: nix::unistd::Uid| {
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {uid}"))
    };
    // /proc/self/loginuid survives sudo, su and runuser; 4294967295 means "not set".
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&id| id != u32::MAX)
        .map(|id| name_of(nix::unistd::Uid::from_raw(id)))
        .or_else(|| std::env::var("SUDO_USER").ok())
        .unwrap_or_else(|| name_of(uid));
    let mut out = format!("{title}\nhsm-signer {}\n\n", env!("CARGO_PKG_VERSION"));
    out.push_str(&field("Data i godzina (UTC)", "Date and time", &when));
    out.push_str(&field("Serwer", "Host", &host));
    out.push_str(&field(
        "Wykonał",
        "Performed by",
        &format!(
            "{login} (polecenie jako / ran as {}, uid {uid})",
            name_of(uid)
        ),
    ));
    out
}

const SIGNATURES: &str = "\
Inspektor bezpieczeństwa / Security officer:  ______________________________\n\n\
Podpis / Signature:                           ______________________________\n\n\
Świadek / Witness:                            ______________________________\n\n\
Podpis / Signature:                           ______________________________\n";

/// The import record's text.
pub fn import_record(imported: &Imported, p12: &Path, p12_digest: Option<&FileDigest>) -> String {
    let mut out = header("PROTOKÓŁ PRZENIESIENIA KLUCZA DO TOKENA / KEY IMPORT RECORD");
    out.push_str(&field(
        "Plik .p12",
        ".p12 file",
        &printable(&p12.display().to_string(), WHOLE),
    ));
    match p12_digest {
        Some(d) => {
            out.push_str(&field(
                "Rozmiar pliku .p12",
                ".p12 size",
                &format!("{} B", d.size),
            ));
            out.push_str(&field("SHA-256 pliku .p12", ".p12 SHA-256", &d.sha256));
        }
        None => out.push_str(&field(
            "SHA-256 pliku .p12",
            ".p12 SHA-256",
            "(not readable)",
        )),
    }
    out.push_str(&field(
        "Sposób zapisu klucza",
        "Method",
        &imported.method.to_string(),
    ));
    out.push('\n');
    out.push_str(&imported.report.to_text());
    out.push_str(
        "\nKlucz prywatny zapisano w tokenie jako klucz nieeksportowalny z atrybutem sensitive;\n\
         powyższy dowód to podpis złożony w tokenie i sprawdzony certyfikatem.\n\
         The private key is stored on the token as sensitive and not extractable; the proof\n\
         above is a signature made on the token and verified against the certificate.\n\n",
    );
    if let Some(d) = p12_digest {
        out.push_str(&format!(
            "Pozostałe kopie pliku .p12 znajdzie / Other copies of the .p12 are found by:\n  \
             find / -xdev -type f -size {}c -exec sha256sum {{}} + | grep {}\n\n",
            d.size, d.sha256
        ));
    }
    out.push_str(
        "Plik .p12 i jego hasło należy teraz zniszczyć (docs/pl/import.md).\n\
         The .p12 file and its password are now to be destroyed (docs/import.md).\n\n",
    );
    out.push_str(SIGNATURES);
    out
}

/// The record of a later check (`verify --record`), e.g. in front of an auditor.
pub fn verify_record(report: &KeyReport) -> String {
    let mut out = header("PROTOKÓŁ SPRAWDZENIA KLUCZA W TOKENIE / KEY VERIFICATION RECORD");
    out.push('\n');
    out.push_str(&report.to_text());
    let protected = crate::proof::problems(&report.attributes).is_empty();
    out.push_str(if protected {
        "\nKlucz jest w tokenie jako klucz nieeksportowalny z atrybutem sensitive (odczytano z tokena);\n\
         powyższy dowód to podpis złożony teraz w tokenie i sprawdzony certyfikatem.\n\
         The key is on the token, sensitive and not extractable (read back from the token); the\n\
         proof above is a signature made on the token now and verified against the certificate.\n\n"
    } else {
        "\nUWAGA: ochrona klucza odczytana z tokena jest NIEPRAWIDŁOWA (patrz Protection powyżej).\n\
         WARNING: the key's protection read back from the token is WRONG (see Protection above).\n\n"
    });
    out.push_str(SIGNATURES);
    out
}
