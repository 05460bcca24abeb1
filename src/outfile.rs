//! Writing a file the operator named on the command line: a new file is created without
//! following a symlink, a replaced file is replaced whole by rename (never written through
//! a link, never left half-written), and a character device such as `/dev/null` or
//! `/dev/stdout` is written as it is.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What may already be at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: the file must be new, and a symlink is never followed.
    Refuse,
    /// A regular file is replaced (by rename); a character device or a pipe, or a symlink
    /// to one, is written to.
    Replace,
}

/// Why the file was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    /// Something is at the path and may not be replaced.
    #[error(
        "it already exists ({0}); choose a new name, or pass --force to replace a regular file"
    )]
    Exists(&'static str),
    /// Something is at the path that is never replaced.
    #[error("it is a {0}, which is never written through or replaced")]
    NotReplaceable(&'static str),
    /// The write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What is at `path` now (not following a symlink), or `None`.
fn kind_at(path: &Path) -> Result<Option<std::fs::FileType>, std::io::Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn word(kind: std::fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_file() {
        "regular file"
    } else if kind.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Where the bytes will go.
enum Target {
    /// A new file.
    New,
    /// A regular file, replaced by rename.
    File,
    /// A character device or a pipe (`/dev/null`, `/dev/stdout`, `>(…)`), written to.
    Stream,
}

fn target(path: &Path, existing: Existing) -> Result<Target, OutError> {
    let Some(kind) = kind_at(path)? else {
        return Ok(Target::New);
    };
    if kind.is_file() {
        return match existing {
            Existing::Refuse => Err(OutError::Exists(word(kind))),
            Existing::Replace => Ok(Target::File),
        };
    }
    // /dev/stdout and /dev/fd/N are symlinks to a device or a pipe: followed for those.
    if existing == Existing::Replace {
        if let Ok(meta) = std::fs::metadata(path) {
            let followed = meta.file_type();
            if followed.is_char_device() || followed.is_fifo() {
                return Ok(Target::Stream);
            }
        }
    }
    Err(OutError::NotReplaceable(word(kind)))
}

/// Checks, before any work, that [`write`] with `existing` would not be refused for what
/// is at `path` now.
pub fn check(path: &Path, existing: Existing) -> Result<(), OutError> {
    target(path, existing).map(|_| ())
}

/// Writes `bytes` to `path`, new files with `mode` (less the umask).
pub fn write(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> Result<(), OutError> {
    match target(path, existing)? {
        Target::Stream => {
            let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
            Ok(file.write_all(bytes)?)
        }
        Target::File => replace(path, bytes, mode),
        Target::New => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(mode)
                .open(path)
                .map_err(|e| match e.kind() {
                    // Created by someone else since the check.
                    std::io::ErrorKind::AlreadyExists => OutError::Exists("created meanwhile"),
                    _ => OutError::Io(e),
                })?;
            fill(file, bytes).inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })
        }
    }
}

/// Writes a new file beside `path` and renames it over `path`: a reader sees the old file
/// or the new one, and a symlink put at `path` is replaced, not followed.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), OutError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&temp)?;
    let done = fill(file, bytes).and_then(|()| Ok(std::fs::rename(&temp, path)?));
    if done.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    done
}

fn fill(mut file: File, bytes: &[u8]) -> Result<(), OutError> {
    file.write_all(bytes)?;
    Ok(file.sync_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_only_unless_replacing_and_never_through_a_link() -> testresult::TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out");
        write(&path, b"one", 0o644, Existing::Refuse)?;
        let err = write(&path, b"two", 0o644, Existing::Refuse).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        write(&path, b"two", 0o644, Existing::Replace)?;
        assert_eq!(std::fs::read(&path)?, b"two");

        let target = dir.path().join("target");
        std::fs::write(&target, b"keep")?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link)?;
        for existing in [Existing::Refuse, Existing::Replace] {
            let err = write(&link, b"x", 0o644, existing).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        assert_eq!(std::fs::read(&target)?, b"keep");
        write(Path::new("/dev/null"), b"x", 0o644, Existing::Replace)?;
        let err = write(Path::new("/dev/null"), b"x", 0o644, Existing::Refuse).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        Ok(())
    }
}
