//! The audit log: one JSON line per signing request, each carrying the SHA-256 of the
//! line before it, so that a removed, edited or reordered line breaks the chain
//! (`hsm-signer audit verify FILE`).
//!
//! Lines are written by a thread of their own, so a request never waits on the disk;
//! the channel is bounded and a full channel makes requests wait rather than lose lines.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest a written line waits for `fdatasync`.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// Records that may wait for the writer before a request waits.
pub const QUEUE: usize = 16_384;

/// The `prev` of the first line of a new file.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One signing request, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Peer uid (SO_PEERCRED).
    pub uid: u32,
    /// Peer gid.
    pub gid: u32,
    /// Peer pid, when known.
    pub pid: Option<i32>,
    /// The key name asked for.
    pub key: String,
    /// The algorithm asked for, as given or resolved.
    pub algorithm: String,
    /// SHA-256 of the data or digest the caller sent, hex.
    pub input_sha256: String,
    /// "ok" or the error code.
    pub outcome: String,
    /// The HTTP status.
    pub status: u16,
    /// Time spent, microseconds.
    pub duration_us: u64,
    /// SHA-256 of the certificate of the key that signed, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// A record with its place in the chain: what is written as one line.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    seq: u64,
    #[serde(flatten)]
    record: Record,
    prev: String,
}

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening or reading failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file already there is not an audit log.
    #[error("audit log {path}: the last line is not an audit record ({detail}); move the file aside and start a new one")]
    NotAuditLog {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Where records go: a writer thread appending to the file.
#[derive(Clone)]
pub struct AuditLog {
    tx: crossbeam_channel::Sender<Box<Record>>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) `path` and continues its chain.
    pub fn open(path: &Path) -> Result<(Self, std::thread::JoinHandle<()>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.into(),
            source,
        };
        let (seq, prev) = chain_head(path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // Boxed, so the channel's preallocated ring costs 16 bytes a slot, not a whole record.
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let writer = Writer {
            out: BufWriter::new(file),
            seq,
            prev,
            path: path.into(),
        };
        let handle = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok((Self { tx }, handle))
    }

    /// Queues `record`; blocks only if the writer is [`QUEUE`] lines behind.
    pub fn record(&self, record: Record) {
        if self.tx.send(Box::new(record)).is_err() {
            tracing::error!("audit writer has stopped; a record was lost");
        }
    }
}

struct Writer {
    out: BufWriter<File>,
    seq: u64,
    prev: String,
    path: PathBuf,
}

impl Writer {
    /// Writes each batch of waiting records with one `write`, and makes them durable
    /// with `fdatasync` at most every [`SYNC_EVERY`], and always when the queue is idle
    /// for that long or the daemon stops: a disk flush per request would cost more
    /// than the signature.
    fn run(mut self, rx: crossbeam_channel::Receiver<Box<Record>>) {
        let mut last_sync = Instant::now();
        let mut dirty = false;
        loop {
            match rx.recv_timeout(SYNC_EVERY) {
                Ok(first) => {
                    self.write(*first);
                    while let Ok(more) = rx.try_recv() {
                        self.write(*more);
                    }
                    let flushed = self.out.flush();
                    self.report(flushed);
                    dirty = true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if dirty && last_sync.elapsed() >= SYNC_EVERY {
                let synced = self.out.get_ref().sync_data();
                self.report(synced);
                (last_sync, dirty) = (Instant::now(), false);
            }
        }
        let closed = self
            .out
            .flush()
            .and_then(|_| self.out.get_ref().sync_data());
        self.report(closed);
        tracing::info!(head = %self.prev, lines = self.seq, "audit log closed");
    }

    fn report(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            tracing::error!(file = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }

    fn write(&mut self, record: Record) {
        let line = Line {
            seq: self.seq + 1,
            record,
            prev: std::mem::take(&mut self.prev),
        };
        let text = serde_json::to_string(&line).expect("records serialise");
        self.prev = hex::encode(Sha256::digest(text.as_bytes()));
        self.seq += 1;
        if let Err(e) = writeln!(self.out, "{text}") {
            tracing::error!(file = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }
}

/// The sequence number and hash of the last line, or the genesis values for a new file.
fn chain_head(path: &Path) -> Result<(u64, String), AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut last = None;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| AuditError::Io {
            path: path.into(),
            source,
        })?;
        if !line.is_empty() {
            last = Some(line);
        }
    }
    let Some(last) = last else {
        return Ok((0, GENESIS.into()));
    };
    let parsed: Line = serde_json::from_str(&last).map_err(|e| AuditError::NotAuditLog {
        path: path.into(),
        detail: e.to_string(),
    })?;
    Ok((parsed.seq, hex::encode(Sha256::digest(last.as_bytes()))))
}

/// The result of checking a file's chain.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Lines read.
    pub lines: u64,
    /// The first line (1-based) where the chain breaks, and why.
    pub broken: Option<(u64, String)>,
    /// SHA-256 of the last line: note it elsewhere to detect truncation later.
    pub head: String,
}

/// Checks every line's `prev` against the hash of the line before, and that `seq` counts
/// up by one.
pub fn verify(path: &Path) -> Result<Verification, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.into(),
        source,
    })?;
    let mut prev = None::<String>;
    let mut expected_seq = None::<u64>;
    let mut lines = 0;
    for (index, text) in BufReader::new(file).lines().enumerate() {
        let text = text.map_err(|source| AuditError::Io {
            path: path.into(),
            source,
        })?;
        let number = index as u64 + 1;
        lines = number;
        let line: Line = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                return Ok(broken(
                    lines,
                    number,
                    format!("not an audit record: {e}"),
                    prev,
                ))
            }
        };
        let want_prev = prev.clone().unwrap_or_else(|| GENESIS.into());
        if prev.is_none() && line.seq != 1 {
            return Ok(broken(
                lines,
                number,
                "the file does not start the chain (seq 1): lines at the start were removed".into(),
                prev,
            ));
        }
        if line.prev != want_prev {
            return Ok(broken(
                lines,
                number,
                "prev does not match the line before: a line was removed, edited or moved".into(),
                prev,
            ));
        }
        if let Some(seq) = expected_seq {
            if line.seq != seq {
                return Ok(broken(
                    lines,
                    number,
                    format!("seq {} where {seq} was expected", line.seq),
                    prev,
                ));
            }
        }
        expected_seq = Some(line.seq + 1);
        prev = Some(hex::encode(Sha256::digest(text.as_bytes())));
    }
    Ok(Verification {
        lines,
        broken: None,
        head: prev.unwrap_or_else(|| GENESIS.into()),
    })
}

fn broken(lines: u64, at: u64, why: String, prev: Option<String>) -> Verification {
    Verification {
        lines,
        broken: Some((at, why)),
        head: prev.unwrap_or_else(|| GENESIS.into()),
    }
}
