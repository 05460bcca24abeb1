//! The audit log's file: appended with one `write(2)` per line, mode 0600, reopened at
//! its path when it is deleted or rotated (a FIFO to a log shipper works too).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain;
use super::error::AuditError;
use super::sink::{Flush, Sink};

/// An append-only audit file.
pub struct FileSink {
    path: PathBuf,
    file: Option<Arc<File>>,
    /// (dev, ino) of the open file, to notice it was deleted, rotated or replaced.
    identity: (u64, u64),
    /// Bytes of whole lines in the file: a partial line left by a failed write is cut.
    len: u64,
}

impl FileSink {
    /// Opens (or creates, mode 0600) `path`. Returns the sink and the head of the chain
    /// already in it (sequence number and hash of its last line).
    pub fn open(path: &Path) -> Result<(Self, u64, String), AuditError> {
        let io = |source| AuditError::Io {
            path: path.into(),
            source,
        };
        let (seq, prev) = chain::head(path)?;
        let mut sink = Self {
            path: path.into(),
            file: None,
            identity: (0, 0),
            len: 0,
        };
        sink.open_at_path().map_err(io)?;
        Ok((sink, seq, prev))
    }

    fn open_at_path(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let meta = file.metadata()?;
        self.identity = (meta.dev(), meta.ino());
        self.len = if meta.file_type().is_file() {
            meta.len()
        } else {
            0
        };
        self.file = Some(Arc::new(file));
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Notices a deleted, renamed or replaced file; cuts a partial line a failed write
    /// left behind.
    fn check(&mut self) -> io::Result<Option<&'static str>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let meta = file.metadata()?;
        let at_path = std::fs::metadata(&self.path);
        let same = matches!(&at_path, Ok(m) if (m.dev(), m.ino()) == self.identity);
        if !same || meta.nlink() == 0 {
            let why = match at_path {
                Err(_) => "the audit file was deleted or moved; recreated at its path",
                Ok(_) => "the audit file was replaced or rotated; continued in the new file",
            };
            tracing::warn!(file = %self.path.display(), "{why}");
            self.file = None;
            return Ok(Some(why));
        }
        if meta.file_type().is_file() && meta.len() != self.len {
            if meta.len() > self.len {
                // Someone else wrote to our file: that is not ours to cut, and the chain
                // would break; refuse until an operator looks.
                return Err(io::Error::other(format!(
                    "the audit file grew by {} bytes that hsm-signer did not write",
                    meta.len() - self.len
                )));
            }
            file.set_len(self.len)?;
        }
        Ok(None)
    }

    fn close(&mut self) {
        self.file = None;
    }

    fn reopen(&mut self, seq: u64, prev: &str) -> io::Result<bool> {
        // A file at the path that is not empty must continue our chain, else it is not
        // ours to append to.
        let mut continues = false;
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if meta.file_type().is_file() && meta.len() > 0 {
                let (at_seq, at_prev) = chain::head(&self.path).map_err(io::Error::other)?;
                if at_prev != prev || at_seq != seq {
                    return Err(io::Error::other(
                        "the file at the audit path holds another chain; move it aside",
                    ));
                }
                continues = true;
            }
        }
        self.open_at_path()?;
        Ok(continues)
    }

    fn moved(&self) -> bool {
        // A reload that rotated nothing leaves the file as it is: reopening would read the
        // whole log again to find its head.
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|m| self.file.is_some() && (m.dev(), m.ino()) == self.identity);
        !same
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Err(io::Error::other("the audit file is not open"));
        };
        match (&**file).write_all(line) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A partial line must not stay: cut back to the last whole line.
                if let Ok(meta) = file.metadata() {
                    if meta.file_type().is_file() && meta.len() != self.len {
                        let _ = file.set_len(self.len);
                    }
                }
                Err(e)
            }
        }
    }

    fn flush(&self) -> Option<Flush> {
        let file = self.file.clone()?;
        Some(Box::new(move || file.sync_data()))
    }
}
