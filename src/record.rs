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

/// Who ran the command, as far as the system tells, and how that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The person's account name (or `uid N` when it has none).
    pub name: String,
    /// Where the name came from.
    pub source: OperatorSource,
}

/// Where [`Operator::name`] came from, most trustworthy first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorSource {
    /// `/proc/self/loginuid`: set by pam_loginuid at login, kept across sudo, su and
    /// runuser, and not changeable by the process.
    LoginUid,
    /// `SUDO_USER`, which sudo sets and `runuser -u` passes on (an environment
    /// variable: what the invoking shell says).
    SudoUser,
    /// The owner of the controlling terminal (sshd and login give it to the user who
    /// logged in; it stays theirs behind sudo -i and runuser).
    Terminal(PathBuf),
    /// None of these: only the account the command ran as is known.
    Unknown,
}

impl Operator {
    /// Looks at the login session, then `SUDO_USER`, then the controlling terminal.
    pub fn find() -> Self {
        let login = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        let sudo_user = std::env::var("SUDO_USER").ok();
        Self::pick(
            login,
            sudo_user,
            controlling_terminal_owner(),
            current_uid(),
        )
    }

    /// The first of `login` (4294967295 is "not set"), `sudo_user` and `terminal` that
    /// names someone; else the account the command runs as (`uid`).
    pub fn pick(
        login: Option<u32>,
        sudo_user: Option<String>,
        terminal: Option<(u32, PathBuf)>,
        uid: u32,
    ) -> Self {
        if let Some(id) = login.filter(|&id| id != u32::MAX) {
            return Self {
                name: name_of(id),
                source: OperatorSource::LoginUid,
            };
        }
        if let Some(name) = sudo_user.filter(|n| !n.is_empty()) {
            return Self {
                name,
                source: OperatorSource::SudoUser,
            };
        }
        if let Some((owner, path)) = terminal {
            return Self {
                name: name_of(owner),
                source: OperatorSource::Terminal(path),
            };
        }
        Self {
            name: name_of(uid),
            source: OperatorSource::Unknown,
        }
    }

    /// The record's "Performed by" value: the person, how that was found, and the
    /// account the command ran as.
    pub fn to_field(&self, ran_as: u32) -> String {
        let how = match &self.source {
            OperatorSource::LoginUid => {
                "wg sesji logowania / from the login session, /proc/self/loginuid".to_string()
            }
            OperatorSource::SudoUser => "wg zmiennej / from the variable SUDO_USER".to_string(),
            OperatorSource::Terminal(path) => format!(
                "właściciel terminala / owner of the terminal {}",
                path.display()
            ),
            OperatorSource::Unknown => {
                "osoby nie ustalono: brak loginuid, SUDO_USER i terminala / person not known: no loginuid, SUDO_USER or terminal"
                    .to_string()
            }
        };
        format!(
            "{} ({how}; polecenie jako / ran as {}, uid {ran_as})",
            printable(&self.name, WHOLE),
            printable(&name_of(ran_as), WHOLE)
        )
    }
}

fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn name_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The controlling terminal (field 7 of /proc/self/stat, `tty_nr`) and its owner. Only
/// pseudo-terminals (/dev/pts/N) and virtual consoles (/dev/ttyN) are looked up.
fn controlling_terminal_owner() -> Option<(u32, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, field 2, is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let tty_nr: u64 = after_name.split_whitespace().nth(4)?.parse().ok()?;
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    let path = match major {
        136..=143 => PathBuf::from(format!("/dev/pts/{}", (major - 136) * 256 + minor)),
        4 if minor < 64 => PathBuf::from(format!("/dev/tty{minor}")),
        _ => return None,
    };
    let meta = std::fs::metadata(&path).ok()?;
    // Only if it is the very device (a stale /dev entry would name someone else).
    (meta.rdev() == nix::sys::stat::makedev(major, minor)).then(|| (meta.uid(), path))
}

/// Date, host and operator (see [`Operator`]), and the uid the command ran as.
fn header(title: &str) -> String {
    let when = crate::audit::now_rfc3339();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let mut out = format!("{title}\nhsm-signer {}\n\n", env!("CARGO_PKG_VERSION"));
    out.push_str(&field("Data i godzina (UTC)", "Date and time", &when));
    out.push_str(&field("Serwer", "Host", &printable(&host, WHOLE)));
    out.push_str(&field(
        "Wykonał",
        "Performed by",
        &Operator::find().to_field(current_uid()),
    ));
    out
}

// The security officer is "pełnomocnik ds. bezpieczeństwa informacji" (docs/pl/slownik.md).
const SIGNATURES: &str = "\
Pełnomocnik ds. bezpieczeństwa informacji / Security officer:  ______________________________\n\n\
Podpis / Signature:                                            ______________________________\n\n\
Świadek / Witness:                                             ______________________________\n\n\
Podpis / Signature:                                            ______________________________\n";

/// The import record's text.
pub fn import_record(imported: &Imported, p12: &Path, p12_digest: &FileDigest) -> String {
    let mut out = header("PROTOKÓŁ PRZENIESIENIA KLUCZA DO TOKENA / KEY IMPORT RECORD");
    out.push_str(&field(
        "Plik .p12",
        ".p12 file",
        &printable(&p12.display().to_string(), WHOLE),
    ));
    out.push_str(&field(
        "Rozmiar pliku .p12",
        ".p12 size",
        &format!("{} B", p12_digest.size),
    ));
    out.push_str(&field(
        "SHA-256 pliku .p12",
        ".p12 SHA-256",
        &p12_digest.sha256,
    ));
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
    let d = p12_digest;
    out.push_str(&format!(
        "Pozostałe kopie pliku .p12 znajdzie / Other copies of the .p12 are found by:\n  \
         find / -xdev -type f -size {}c -exec sha256sum {{}} + | grep {}\n\n",
        d.size, d.sha256
    ));
    // As import.md 5.1 and 5.3 say: the copies on servers go; one offline copy in the
    // safe may stay, if the security policy keeps one for the recovery plan.
    out.push_str(
        "Pliki .p12 i hasło do nich należy teraz usunąć z serwerów (docs/pl/import.md, 5.3).\n\
         Jedną kopię offline w sejfie, z hasłem przechowywanym osobno, zostawia się tylko,\n\
         jeśli przewiduje to polityka bezpieczeństwa urzędu (5.1).\n\
         The .p12 files and their password are now to be removed from the servers\n\
         (docs/import.md, 5.3). One offline copy in the safe, its password kept apart, stays\n\
         only if the security policy keeps one (5.1).\n\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_session_comes_first_then_sudo_then_the_terminal() {
        let tty = Some((0, PathBuf::from("/dev/pts/3")));
        let sudo = || Some("jan".to_string());
        let root = Operator::pick(Some(0), sudo(), tty.clone(), 103);
        assert_eq!(root.source, OperatorSource::LoginUid);
        assert_eq!(root.name, "root");
        let by_sudo = Operator::pick(Some(u32::MAX), sudo(), tty.clone(), 103);
        assert_eq!(
            (by_sudo.name.as_str(), by_sudo.source),
            ("jan", OperatorSource::SudoUser)
        );
        let by_tty = Operator::pick(None, None, tty, 103);
        assert_eq!(by_tty.source, OperatorSource::Terminal("/dev/pts/3".into()));
        let unknown = Operator::pick(None, Some(String::new()), None, 0);
        assert_eq!(unknown.source, OperatorSource::Unknown);
        assert!(unknown.to_field(0).starts_with("root (osoby nie ustalono"));
    }
}
