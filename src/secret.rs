//! Where PINs and passwords come from: a no-echo prompt, a file or an environment variable.
//!
//! Never from argv: a value on the command line is visible to every local user in
//! `/proc/<pid>/cmdline` and lands in shell history. Every secret is returned as a
//! [`SecretString`], which wipes its buffer on drop and prints as `[REDACTED]`.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub mod bounded;

use secrecy::SecretString;
use zeroize::Zeroizing;

/// The environment variable that may carry the `.p12` password.
pub const P12_PASSWORD_ENV: &str = "HSM_SIGNER_P12_PASSWORD";
/// The environment variable that may carry the token's user PIN.
pub const PIN_ENV: &str = "HSM_SIGNER_PIN";

/// The environment variable for the new PIN of `pin change` and `pin unlock`.
pub const NEW_PIN_ENV: &str = "HSM_SIGNER_NEW_PIN";

/// The environment variable that may carry the token's SO PIN (`pin unlock`, `pin change --so`).
pub const SO_PIN_ENV: &str = "HSM_SIGNER_SO_PIN";

/// Where one secret is to be read from, resolved from the command line before any work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read the whole file; one trailing newline (`\n` or `\r\n`) is removed.
    File(PathBuf),
    /// Read this environment variable.
    Env(&'static str),
    /// Ask at a no-echo prompt on the controlling terminal.
    Prompt(String),
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read, or is no file to read a secret from (a FIFO
    /// with no writer, a device, more than 4 KiB, input not complete within 2 s).
    #[error("cannot read the {what} from {path}: {source}")]
    File {
        /// What the secret is for ("token PIN", ".p12 password").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: bounded::ReadError,
    },
    /// The secret is not valid UTF-8.
    #[error("the {what} from {origin} is not valid UTF-8; save the file as UTF-8 (Polish letters are fine)")]
    NotUtf8 {
        /// What the secret is for.
        what: &'static str,
        /// Where it came from.
        origin: String,
    },
    /// No source was given and there is no terminal to ask on.
    #[error("no {what} given and no terminal to ask on: pass {flag} FILE or set {env}")]
    Missing {
        /// What the secret is for.
        what: &'static str,
        /// The flag that names a file.
        flag: &'static str,
        /// The environment variable.
        env: &'static str,
    },
    /// The daemon's secret file is open to others.
    #[error("the {what} file {path} has mode {mode:04o}: others may read or change it; chmod 0600 (or 0640 with group hsm-signer) and try again")]
    Exposed {
        /// What the secret is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The prompt failed.
    #[error("cannot read the {what} from the terminal: {source}")]
    Prompt {
        /// What the secret is for.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl SecretSource {
    /// Picks the source in the documented order: the file flag, then the environment
    /// variable, then a prompt when standard input is a terminal.
    pub fn choose(
        file: Option<&Path>,
        env: &'static str,
        prompt: &str,
        what: &'static str,
        flag: &'static str,
    ) -> Result<Self, SecretError> {
        if let Some(path) = file {
            return Ok(Self::File(path.to_path_buf()));
        }
        if std::env::var_os(env).is_some() {
            return Ok(Self::Env(env));
        }
        if std::io::stdin().is_terminal() {
            return Ok(Self::Prompt(prompt.to_string()));
        }
        Err(SecretError::Missing { what, flag, env })
    }

    /// Reads the secret. `what` names it in messages ("token PIN"); the value never does.
    pub fn read(&self, what: &'static str) -> Result<SecretString, SecretError> {
        match self {
            Self::File(path) => read_file(path, what),
            Self::Env(var) => match std::env::var(var) {
                Ok(value) => Ok(SecretString::from(value)),
                Err(_) => Err(SecretError::NotUtf8 {
                    what,
                    origin: format!("${var}"),
                }),
            },
            Self::Prompt(text) => rpassword::prompt_password(text)
                .map(SecretString::from)
                .map_err(|source| SecretError::Prompt { what, source }),
        }
    }
}

/// Reads a secret file for the daemon, which is stricter than the interactive commands
/// (as ssh is with key files): a file that others may read or write, or its group may
/// write, is refused. 0640 with a dedicated group stays allowed.
pub fn read_daemon_file(path: &Path, what: &'static str) -> Result<SecretString, SecretError> {
    let (bytes, meta) = read_bounded(path, what)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(SecretError::Exposed {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
    to_secret(bytes, path, what)
}

fn read_file(path: &Path, what: &'static str) -> Result<SecretString, SecretError> {
    let (bytes, meta) = read_bounded(path, what)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "the {what} file can be read by group or others; chmod 600 it"
        );
    }
    to_secret(bytes, path, what)
}

/// At most 4 KiB within 2 s, from a regular file or a pipe only (see [`bounded`]).
fn read_bounded(
    path: &Path,
    what: &'static str,
) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata), SecretError> {
    bounded::read(path, bounded::SECRET).map_err(|source| SecretError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn to_secret(
    mut bytes: Zeroizing<Vec<u8>>,
    path: &Path,
    what: &'static str,
) -> Result<SecretString, SecretError> {
    strip_one_newline(&mut bytes);
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotUtf8 {
        what,
        origin: path.display().to_string(),
    })?;
    Ok(SecretString::from(text.to_string()))
}

/// Editors add a final newline that nobody means as part of a PIN.
fn strip_one_newline(bytes: &mut Zeroizing<Vec<u8>>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_loses_exactly_one_trailing_newline() -> testresult::TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pin");
        std::fs::write(&path, "Zażółć gęślą jaźń \r\n\n")?;
        let secret = SecretSource::File(path).read("token PIN")?;
        assert_eq!(secret.expose_secret(), "Zażółć gęślą jaźń \r\n");
        Ok(())
    }

    #[test]
    fn missing_file_names_the_file_not_the_secret() {
        let err = SecretSource::File("/nonexistent/pin".into())
            .read("token PIN")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pin"), "{err}");
    }
}
