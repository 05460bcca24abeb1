//! The audit log: one JSON line per request that reached a key, each carrying the
//! SHA-256 of the line before it, so that a removed, edited or reordered line breaks the
//! chain (`hsm-signer audit verify FILE...`), and signed checkpoints so that a rewrite of
//! the whole chain is caught too ([`checkpoint`]).
//!
//! **Fail closed.** A request is answered only after its record was written: the
//! request's own blocking thread (the one that made the token call) appends the line
//! with one `write(2)` before the answer leaves. When the line cannot be written (full
//! disk, EIO, EPERM, the file deleted or replaced by something that is not ours), the
//! write fails, the request gets 503 `audit_unavailable`, and health says so. The next
//! write that works first appends an `audit_outage` record that says what happened and
//! how many requests were refused meanwhile, so the chain has no silent gap. A deleted
//! or rotated file is reopened at its path, starting with a `log_opened` record whose
//! `prev` is the previous file's head: `audit verify old new` checks across files.
//!
//! Durability is batched: a thread of its own calls `fdatasync` at most every
//! [`SYNC_EVERY`]; a disk flush per request would cost more than the signature.

pub mod checkpoint;
mod record;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use record::{now_rfc3339, Caller, Line, Record, FORMAT_VERSION};

/// The longest a written line waits for `fdatasync`.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// A write that has not returned after this long makes the log "stalled": new requests
/// are refused at once instead of queueing behind it.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The `prev` of the first line of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What to do when a record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse the request (503 `audit_unavailable`): no signature without its record.
    #[default]
    Refuse,
    /// Answer anyway, logging every unrecorded request loudly; for those who put
    /// availability first. The gap is recorded once writing works again.
    Continue,
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

/// A record that could not be written; the request must not be answered as done.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log cannot be written: {0}")]
pub struct Unavailable(pub String);

/// The audit log's state as health shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuditState {
    /// Writing works.
    Ok,
    /// The last write failed; requests are refused (or, with `on_failure = "continue"`,
    /// answered unrecorded) until one works.
    Failing {
        /// The error.
        error: String,
        /// Requests refused or unrecorded since.
        refused: u64,
    },
    /// A write has not returned for more than [`STALLED_AFTER`].
    Stalled {
        /// Milliseconds so far.
        for_ms: u64,
    },
}

/// Where records go. Cloning shares the one file.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    on_failure: OnFailure,
    writer: Mutex<Writer>,
    /// Milliseconds since `epoch` when the write in progress started; 0 when none.
    writing_since: AtomicU64,
    epoch: Instant,
    /// What health shows, readable without waiting for the writer.
    failing: Mutex<Option<(String, u64)>>,
    dirty: AtomicBool,
    /// Requests refused at once because a write was stuck; recorded with the next write.
    refused_while_stalled: AtomicU64,
    stop: AtomicBool,
    sync_wake: Condvar,
    sync_lock: Mutex<()>,
}

struct Writer {
    file: Option<Arc<File>>,
    /// (dev, ino) of the open file, to notice it was deleted, rotated or replaced.
    identity: (u64, u64),
    /// Bytes of whole lines in the file: a partial line left by a failed write is cut.
    len: u64,
    seq: u64,
    prev: String,
    outage: Option<Outage>,
    /// Why the next `log_opened` record is written, if one is due.
    opened: Option<String>,
    /// The line being written, kept between records so that writing one allocates
    /// nothing once it has grown to a line's size.
    line: Vec<u8>,
}

struct Outage {
    since: String,
    error: String,
    refused: u64,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) `path` and continues its chain. Returns the log and
    /// the thread that makes written lines durable.
    pub fn open(
        path: &Path,
        on_failure: OnFailure,
    ) -> Result<(Self, std::thread::JoinHandle<()>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.into(),
            source,
        };
        let (seq, prev) = chain_head(path)?;
        let file = open_append(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if on_failure == OnFailure::Continue {
            tracing::warn!(
                "[audit] on_failure = \"continue\": requests are answered even when the audit log cannot record them"
            );
        }
        let inner = Arc::new(Inner {
            path: path.into(),
            on_failure,
            writer: Mutex::new(Writer {
                identity: (meta.dev(), meta.ino()),
                len: if meta.file_type().is_file() {
                    meta.len()
                } else {
                    0
                },
                file: Some(Arc::new(file)),
                seq,
                prev,
                outage: None,
                // A new chain starts at seq 1 from GENESIS, which says enough; a restart is
                // marked, so that checkpoint gaps across it read right.
                opened: (seq > 0).then(|| "restart".into()),
                line: Vec::with_capacity(1024),
            }),
            writing_since: AtomicU64::new(0),
            epoch: Instant::now(),
            failing: Mutex::new(None),
            dirty: AtomicBool::new(false),
            refused_while_stalled: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sync_wake: Condvar::new(),
            sync_lock: Mutex::new(()),
        });
        let syncer = inner.clone();
        let handle = std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.sync_loop())
            .map_err(io)?;
        Ok((Self { inner }, handle))
    }

    /// Appends `record`, blocking this thread until the write has returned. Call it from
    /// a blocking thread, never from an async worker. `Err` means the request must be
    /// refused (with `on_failure = "continue"` this never fails; the loss is logged).
    pub fn record(&self, record: Record) -> Result<(), Unavailable> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .writing_since
            .store(inner.millis().max(1), Ordering::Release);
        inner.fold_stalled(&mut writer);
        let result = writer.append(&inner.path, record);
        inner.writing_since.store(0, Ordering::Release);
        match result {
            Ok(()) => {
                if writer.outage.is_none() {
                    *inner.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                inner.dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let outage = writer.outage.get_or_insert_with(|| Outage {
                    since: now_rfc3339(),
                    error: e.to_string(),
                    refused: 0,
                });
                outage.refused += 1;
                outage.error = e.to_string();
                let refused = outage.refused;
                *inner.failing.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((e.to_string(), refused));
                // One line per power of two, so a flood of refusals logs a handful.
                if refused.is_power_of_two() {
                    tracing::error!(file = %inner.path.display(), error = %e, refused, on_failure = ?inner.on_failure, "cannot write the audit log");
                }
                match inner.on_failure {
                    OnFailure::Refuse => Err(Unavailable(e.to_string())),
                    OnFailure::Continue => Ok(()),
                }
            }
        }
    }

    /// The log's state, without waiting for a write in progress.
    pub fn state(&self) -> AuditState {
        let since = self.inner.writing_since.load(Ordering::Acquire);
        if since != 0 {
            let for_ms = self.inner.millis().saturating_sub(since);
            if for_ms >= STALLED_AFTER.as_millis() as u64 {
                return AuditState::Stalled { for_ms };
            }
        }
        match &*self.inner.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            None => AuditState::Ok,
            Some((error, refused)) => AuditState::Failing {
                error: error.clone(),
                refused: *refused,
            },
        }
    }

    /// Refuses a request before it touches the token while a write has been stuck for
    /// a while (a hung disk, or a reader that stopped reading a FIFO). The refusal is
    /// counted, not written (the writer is stuck), and goes into the `audit_outage`
    /// record that the next write appends.
    pub fn refuses_now(&self) -> Option<Unavailable> {
        match (self.state(), self.inner.on_failure) {
            (AuditState::Stalled { for_ms }, OnFailure::Refuse) => {
                self.inner
                    .refused_while_stalled
                    .fetch_add(1, Ordering::AcqRel);
                Some(Unavailable(format!(
                    "a write to the audit log has not returned for {for_ms} ms"
                )))
            }
            _ => None,
        }
    }

    /// What `on_failure` says.
    pub fn on_failure(&self) -> OnFailure {
        self.inner.on_failure
    }

    /// Closes the file and opens `path` again (SIGHUP, for logrotate's `create`): the new
    /// file starts with a `log_opened` record linking to the old file's head. Runs on a
    /// blocking thread.
    pub fn reopen(&self) {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        // A reload that rotated nothing leaves the file as it is: reopening would read the
        // whole log again to find its head.
        let same = std::fs::metadata(&self.inner.path)
            .is_ok_and(|m| writer.file.is_some() && (m.dev(), m.ino()) == writer.identity);
        if same {
            return;
        }
        writer.file = None;
        writer.opened = Some("reopened on SIGHUP".into());
    }

    /// The chain's head: the number and hash of the last line written.
    pub fn head(&self) -> (u64, String) {
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        (writer.seq, writer.prev.clone())
    }

    /// Runs `make` with the chain's head and appends the record it returns, with no
    /// other record in between (for checkpoints, whose signature covers the head).
    pub fn record_at_head(
        &self,
        make: impl FnOnce(u64, &str) -> Option<Record>,
    ) -> Result<(), Unavailable> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        // A pending reopen or outage record goes first, so the head signed is final.
        if let Err(e) = writer.prepare(&inner.path) {
            return Err(Unavailable(e.to_string()));
        }
        let Some(record) = make(writer.seq, &writer.prev) else {
            return Ok(());
        };
        writer
            .append(&inner.path, record)
            .map_err(|e| Unavailable(e.to_string()))?;
        inner.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// While writes fail, tries to write the pending records (`audit_outage`,
    /// `log_opened`) without a request, so that health sees the recovery even when no
    /// one signs. Runs on a blocking thread.
    pub fn probe(&self) {
        let inner = &self.inner;
        if inner
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return;
        }
        let mut writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .writing_since
            .store(inner.millis().max(1), Ordering::Release);
        let prepared = writer.prepare(&inner.path);
        inner.writing_since.store(0, Ordering::Release);
        if prepared.is_ok() && writer.outage.is_none() {
            *inner.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
            inner.dirty.store(true, Ordering::Release);
            tracing::warn!(file = %inner.path.display(), "the audit log can be written again");
        }
    }

    /// Stops the sync thread after a last `fdatasync`.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.sync_wake.notify_all();
    }
}

impl Inner {
    /// Moves the count of requests refused during a stall into the outage record due.
    fn fold_stalled(&self, writer: &mut Writer) {
        let stalled = self.refused_while_stalled.swap(0, Ordering::AcqRel);
        if stalled > 0 {
            let outage = writer.outage.get_or_insert_with(|| Outage {
                since: now_rfc3339(),
                error: "a write to the audit log was stuck".into(),
                refused: 0,
            });
            outage.refused += stalled;
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn sync_loop(&self) {
        loop {
            {
                let guard = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
                let _unused = self
                    .sync_wake
                    .wait_timeout(guard, SYNC_EVERY)
                    .unwrap_or_else(|p| p.into_inner());
            }
            let stopping = self.stop.load(Ordering::Acquire);
            if self.dirty.swap(false, Ordering::AcqRel) {
                // The file is taken under the lock only briefly; the sync runs outside it,
                // so requests keep writing while the disk flushes.
                let file = self.writer.try_lock().ok().and_then(|w| w.file.clone());
                match file {
                    Some(file) => {
                        if let Err(e) = file.sync_data() {
                            tracing::error!(file = %self.path.display(), error = %e, "fdatasync of the audit log failed");
                        }
                    }
                    // A write is in progress (or stuck): try again on the next round.
                    None => self.dirty.store(true, Ordering::Release),
                }
            }
            if stopping {
                let head = self.writer.try_lock().ok().map(|w| (w.seq, w.prev.clone()));
                if let Some((lines, head)) = head {
                    tracing::info!(%head, lines, "audit log closed");
                }
                return;
            }
        }
    }
}

impl Writer {
    /// Makes sure the file at `path` is ours and whole, and writes the records that are
    /// due before the next one: `log_opened` after a (re)open, `audit_outage` after a
    /// failure.
    fn prepare(&mut self, path: &Path) -> std::io::Result<()> {
        self.check_identity(path)?;
        if self.file.is_none() {
            self.reopen(path)?;
        }
        if let Some(reason) = self.opened.clone() {
            let record = Record::system("log_opened", "ok").with_detail(serde_json::json!({
                "reason": reason,
                "previous_head": self.prev,
                "previous_seq": self.seq,
                "format": FORMAT_VERSION,
            }));
            self.write_line(record)?;
            self.opened = None;
        }
        if let Some(outage) = &self.outage {
            let record =
                Record::system("audit_outage", "recovered").with_detail(serde_json::json!({
                    "since": outage.since,
                    "error": outage.error,
                    "refused": outage.refused,
                }));
            self.write_line(record)?;
            self.outage = None;
        }
        Ok(())
    }

    fn append(&mut self, path: &Path, record: Record) -> std::io::Result<()> {
        self.prepare(path)?;
        self.write_line(record)
    }

    /// Notices a deleted, renamed or replaced file; cuts a partial line a failed write
    /// left behind.
    fn check_identity(&mut self, path: &Path) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let meta = file.metadata()?;
        let at_path = std::fs::metadata(path);
        let same = matches!(&at_path, Ok(m) if (m.dev(), m.ino()) == self.identity);
        if !same || meta.nlink() == 0 {
            let why = match at_path {
                Err(_) => "the audit file was deleted or moved; recreated at its path",
                Ok(_) => "the audit file was replaced or rotated; continued in the new file",
            };
            tracing::warn!(file = %path.display(), "{why}");
            self.file = None;
            self.opened = Some(why.into());
            return Ok(());
        }
        if meta.file_type().is_file() && meta.len() != self.len {
            if meta.len() > self.len {
                // Someone else wrote to our file: that is not ours to cut, and the chain
                // would break; refuse until an operator looks.
                return Err(std::io::Error::other(format!(
                    "the audit file grew by {} bytes that hsm-signer did not write",
                    meta.len() - self.len
                )));
            }
            file.set_len(self.len)?;
        }
        Ok(())
    }

    fn reopen(&mut self, path: &Path) -> std::io::Result<()> {
        // A file at the path that is not empty must continue our chain, else it is not
        // ours to append to.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.file_type().is_file() && meta.len() > 0 {
                let (seq, prev) = chain_head(path).map_err(std::io::Error::other)?;
                if prev != self.prev || seq != self.seq {
                    return Err(std::io::Error::other(
                        "the file at the audit path holds another chain; move it aside",
                    ));
                }
                self.opened = None;
            }
        }
        let file = open_append(path)?;
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

    fn write_line(&mut self, record: Record) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Err(std::io::Error::other("the audit file is not open"));
        };
        let line = record::LineRef {
            v: FORMAT_VERSION,
            seq: self.seq + 1,
            record: &record,
            prev: &self.prev,
        };
        let text = &mut self.line;
        text.clear();
        serde_json::to_writer(&mut *text, &line).map_err(std::io::Error::other)?;
        let mut hash = [0u8; 64];
        hex::encode_to_slice(Sha256::digest(&*text), &mut hash).map_err(std::io::Error::other)?;
        text.push(b'\n');
        match (&**file).write_all(text) {
            Ok(()) => {
                self.len += text.len() as u64;
                self.seq += 1;
                self.prev.clear();
                self.prev
                    .push_str(std::str::from_utf8(&hash).map_err(std::io::Error::other)?);
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
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The sequence number and hash of the last line, or the genesis values for a new file
/// (or one that is not a regular file, such as a FIFO to a log shipper).
fn chain_head(path: &Path) -> Result<(u64, String), AuditError> {
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
    Ok((parsed.seq, hex::encode(Sha256::digest(last.as_bytes()))))
}

/// The result of checking one or more files' chain.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Lines read, over all files.
    pub lines: u64,
    /// Where the chain breaks: file, line (1-based) and why.
    pub broken: Option<Broken>,
    /// SHA-256 of the last line: note it elsewhere to detect truncation later.
    pub head: String,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// Things worth a look that do not break the chain (an unsigned tail, a first file
    /// that continues an earlier one).
    pub notes: Vec<String>,
}

/// Where and why a chain breaks.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The line, 1-based, in that file.
    pub line: u64,
    /// Why.
    pub why: String,
}

/// Checks `files`, in order, as one chain: every line's `prev` against the hash of the
/// line before, `seq` counting up by one, each later file starting with a `log_opened`
/// record that continues the one before. With `checkpoints`, also every checkpoint's
/// signature and the gaps between them (see [`checkpoint::Checker`]).
pub fn verify(
    files: &[PathBuf],
    mut checkpoints: Option<checkpoint::Checker>,
) -> Result<Verification, AuditError> {
    let mut prev = None::<String>;
    let mut expected_seq = None::<u64>;
    let mut lines = 0;
    let mut notes = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        for (number, text) in BufReader::new(file).lines().enumerate() {
            let text = text.map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
            let number = number as u64 + 1;
            lines += 1;
            let fail = |why: String, prev: &Option<String>| {
                Ok(Verification {
                    lines,
                    broken: Some(Broken {
                        file: path.clone(),
                        line: number,
                        why,
                    }),
                    head: prev.clone().unwrap_or_else(|| GENESIS.into()),
                    checkpoints: 0,
                    notes: Vec::new(),
                })
            };
            let line: Line = match serde_json::from_str(&text) {
                Ok(l) => l,
                Err(e) => return fail(format!("not an audit record: {e}"), &prev),
            };
            let opens = line.record.op == "log_opened";
            if prev.is_none() {
                // The first line read: the chain's start, or a file that continues one
                // not given here.
                let starts = line.seq == 1 && line.prev == GENESIS;
                if !starts && opens && index == 0 && number == 1 {
                    notes.push(format!(
                        "{} continues an earlier file (seq {}, previous head {}); give that file first to check the link",
                        path.display(),
                        line.seq - 1,
                        line.prev
                    ));
                } else if !starts {
                    return fail(
                        "the file does not start the chain (seq 1) nor continue one (log_opened): lines at the start were removed".into(),
                        &prev,
                    );
                }
            } else {
                if number == 1 && !opens {
                    return fail(
                        "a later file must start with the log_opened record that links it to the file before".into(),
                        &prev,
                    );
                }
                if Some(&line.prev) != prev.as_ref() {
                    return fail(
                        "prev does not match the line before: a line was removed, edited or moved"
                            .into(),
                        &prev,
                    );
                }
                if expected_seq.is_some_and(|s| s != line.seq) {
                    return fail(
                        format!(
                            "seq {} where {} was expected",
                            line.seq,
                            expected_seq.unwrap_or_default()
                        ),
                        &prev,
                    );
                }
            }
            if let Some(checker) = checkpoints.as_mut() {
                if let Err(why) = checker.line(&line) {
                    return fail(why, &prev);
                }
            }
            expected_seq = Some(line.seq + 1);
            prev = Some(hex::encode(Sha256::digest(text.as_bytes())));
        }
    }
    let mut checked = 0;
    if let Some(checker) = checkpoints {
        let (count, more) = checker.finish();
        checked = count;
        notes.extend(more);
    }
    Ok(Verification {
        lines,
        broken: None,
        head: prev.unwrap_or_else(|| GENESIS.into()),
        checkpoints: checked,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_a_log_larger_than_the_tail_read_is_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (log, thread) = AuditLog::open(&path, OnFailure::Refuse).unwrap();
        for n in 0..1500 {
            let mut record = Record::system("sign", "ok");
            record.key = format!("key-{n}");
            log.record(record).unwrap();
        }
        let (seq, head) = log.head();
        log.close();
        thread.join().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 2 * 64 * 1024, "{size} bytes: not past the tail read");
        assert_eq!(chain_head(&path).unwrap(), (seq, head.clone()));
        assert_eq!(seq, 1500);
        let verified = verify(&[path], None).unwrap();
        assert_eq!(
            (verified.lines, verified.broken, verified.head),
            (1500, None, head)
        );
    }
}
