//! Reads a small input file (a PIN, a password, a `.p12`) so that it can neither hang nor
//! flood: what the path names is looked at on the open descriptor before any byte is read,
//! and the read stops at a size and a time limit.
//!
//! A plain `std::fs::read` of a FIFO with no writer blocks for ever in `open`, and of
//! `/dev/zero` until memory runs out. Here the file is opened with `O_NONBLOCK` (an open
//! that cannot block), `fstat` on that descriptor says what it is (symlinks followed, so
//! `/dev/stdin` and bash's `<(pass …)`, links to a pipe, keep working), and only a regular
//! file or a pipe is read.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use zeroize::Zeroizing;

/// How much may be read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The most bytes the input may hold.
    pub max_bytes: usize,
    /// The input must be complete (end of file) within this time.
    pub within: Duration,
}

/// PINs and passwords: 4 KiB, within 2 s.
pub const SECRET: Bound = Bound {
    max_bytes: 4 << 10,
    within: Duration::from_secs(2),
};

/// A `.p12` or a certificate: 1 MiB (Sigillum's files are a few kB), within 2 s.
pub const SMALL_FILE: Bound = Bound {
    max_bytes: 1 << 20,
    within: Duration::from_secs(2),
};

/// Why the input was refused. Each says what the path turned out to be.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `open` or `read` failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A pipe whose writer is missing or sent nothing.
    #[error("it is a pipe (FIFO) with no writer, or its writer sent nothing; put the value in a file of mode 0600 instead, or start the writer first")]
    NoWriter,
    /// A device, socket or directory.
    #[error("it is a {0}, not a file or a pipe; name a regular file")]
    NotAFile(&'static str),
    /// More than the bound.
    #[error(
        "it holds more than {0}, far more than it should; check that the path names the right file"
    )]
    TooLarge(String),
    /// The writer did not finish in time.
    #[error("its input was not complete within {0} s (a writer that keeps the pipe open without finishing); write the value and close the pipe")]
    TooSlow(u64),
}

/// Reads `path` within `bound`; returns the bytes, in memory wiped on drop, and the
/// descriptor's metadata (its mode, for callers that check permissions).
pub fn read(path: &Path, bound: Bound) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // open(2) of a Unix socket's path.
            Some(libc::ENXIO) => ReadError::NotAFile("socket"),
            _ => ReadError::Io(e),
        })?;
    read_open(file, bound, true)
}

/// Reads standard input within `bound`, through the descriptor the process was given: not
/// by opening /dev/stdin again, which would check the file's permissions against this
/// account (`runuser -u hsm-signer -- hsm-signer import --p12 - < root-only.p12` must work).
pub fn read_stdin(bound: Bound) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    read_open(File::from(fd), bound, false).map(|(bytes, _)| bytes)
}

/// `nonblocking`: the descriptor was opened with O_NONBLOCK (else it is standard input,
/// whose mode this process does not change: it is shared with the shell).
fn read_open(
    file: File,
    bound: Bound,
    nonblocking: bool,
) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let bytes = if kind.is_file() {
        if meta.len() > bound.max_bytes as u64 {
            return Err(too_large(bound));
        }
        read_until_end(file, bound, Pipe::No)?
    } else if kind.is_fifo() {
        let pipe = if nonblocking {
            Pipe::NonBlocking
        } else {
            Pipe::Blocking
        };
        read_until_end(file, bound, pipe)?
    } else if kind.is_dir() {
        return Err(ReadError::NotAFile("directory"));
    } else if kind.is_char_device() {
        return Err(ReadError::NotAFile("character device"));
    } else if kind.is_block_device() {
        return Err(ReadError::NotAFile("block device"));
    } else if kind.is_socket() {
        return Err(ReadError::NotAFile("socket"));
    } else {
        return Err(ReadError::NotAFile("special file"));
    };
    Ok((bytes, meta))
}

fn too_large(bound: Bound) -> ReadError {
    let size = if bound.max_bytes >= 1 << 20 {
        format!("{} MiB", bound.max_bytes >> 20)
    } else {
        format!("{} KiB", bound.max_bytes >> 10)
    };
    ReadError::TooLarge(size)
}

/// How a descriptor is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipe {
    /// A regular file: never waits.
    No,
    /// A pipe opened with O_NONBLOCK: `read` says at once whether there is data, none yet
    /// (then `poll` waits for it), or no writer at all (end of file).
    NonBlocking,
    /// A blocking pipe (standard input): `read` only once `poll` says it will not block.
    Blocking,
}

/// Reads to end of file, at most `bound.max_bytes`, and no read waits past the deadline.
fn read_until_end(
    mut file: File,
    bound: Bound,
    pipe: Pipe,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let deadline = Instant::now() + bound.within;
    let mut bytes = Zeroizing::new(Vec::with_capacity(256));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        if pipe == Pipe::Blocking {
            wait_readable(&file, deadline, bound)?;
        }
        match file.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => {
                if bytes.len() + n > bound.max_bytes {
                    return Err(too_large(bound));
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait_readable(&file, deadline, bound)?,
            Err(e) => return Err(e.into()),
        }
    }
    // A FIFO opened while no process holds its write end reads as end of file at once.
    if pipe != Pipe::No && bytes.is_empty() {
        return Err(ReadError::NoWriter);
    }
    Ok(bytes)
}

fn wait_readable(file: &File, deadline: Instant, bound: Bound) -> Result<(), ReadError> {
    let slow = || ReadError::TooSlow(bound.within.as_secs());
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(slow());
    }
    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) => Err(slow()),
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(ReadError::Io(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_is_read_and_too_large_refused() -> testresult::TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234")?;
        assert_eq!(&read(&path, SECRET)?.0[..], b"1234");
        std::fs::write(&path, vec![b'1'; 4097])?;
        let err = read(&path, SECRET).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("4 KiB"), "{err}");
        Ok(())
    }

    #[test]
    fn devices_and_directories_are_refused() -> testresult::TestResult {
        let err = read(Path::new("/dev/zero"), SECRET).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let dir = tempfile::tempdir()?;
        let err = read(dir.path(), SECRET).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        Ok(())
    }

    #[test]
    fn fifo_without_writer_is_refused_and_with_one_is_read() -> testresult::TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )?;
        let err = read(&path, SECRET).unwrap_err();
        assert!(matches!(err, ReadError::NoWriter), "{err}");

        // An anonymous pipe whose writer finished, as /dev/stdin or <(…) would be.
        let (reader, writer) = nix::unistd::pipe()?;
        std::io::Write::write_all(&mut File::from(writer), b"4321\n")?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
        let via = format!("/proc/self/fd/{fd}");
        assert_eq!(&read(Path::new(&via), SECRET)?.0[..], b"4321\n");
        Ok(())
    }

    #[test]
    fn a_writer_that_never_finishes_is_refused_in_time() -> testresult::TestResult {
        let (reader, writer) = nix::unistd::pipe()?;
        let mut writer = File::from(writer);
        std::io::Write::write_all(&mut writer, b"12")?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
        let quick = Bound {
            max_bytes: 4096,
            within: Duration::from_millis(200),
        };
        let err = read(Path::new(&format!("/proc/self/fd/{fd}")), quick).unwrap_err();
        assert!(matches!(err, ReadError::TooSlow(_)), "{err}");
        drop(writer);
        Ok(())
    }
}
