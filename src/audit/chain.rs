//! The hash chain: what links a line to the one before it, and where an existing file's
//! chain stands (its head), so that a restart continues it.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::AuditError;
use super::record::Line;

/// The `prev` of the first line of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash the next line carries as its `prev`: the hex SHA-256 of `line`, without its
/// newline.
pub fn hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The sequence number and hash of the last line, or the genesis values for a new file
/// (or one that is not a regular file, such as a FIFO to a log shipper).
pub fn head(path: &Path) -> Result<(u64, String), AuditError> {
    let io = |source| AuditError::Io {
        path: path.into(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(e) => return Err(io(e)),
        Ok(meta) if !meta.file_type().is_file() => {
            if meta.file_type().is_fifo() || meta.file_type().is_char_device() {
                return Ok((0, GENESIS.into()));
            }
            return Err(io(std::io::Error::other(
                "not a regular file, FIFO or character device",
            )));
        }
        Ok(_) => {}
    }
    // Only the end of the file is read: a year of audit lines is large, and the head is
    // the last line. A record is far shorter than TAIL.
    const TAIL: u64 = 64 * 1024;
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let start = size.saturating_sub(TAIL);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut tail).map_err(io)?;
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if start > 0 && !lines.is_empty() {
        // The first piece may be the end of a line cut by the seek.
        lines.remove(0);
    }
    let last = lines
        .into_iter()
        .rev()
        .find(|l| !l.is_empty())
        .map(str::to_owned);
    let Some(last) = last else {
        return Ok((0, GENESIS.into()));
    };
    let parsed: Line = serde_json::from_str(&last).map_err(|e| AuditError::NotAuditLog {
        path: path.into(),
        detail: e.to_string(),
    })?;
    Ok((parsed.seq, hash(last.as_bytes())))
}
