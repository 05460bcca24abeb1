//! [`AuditLog`]: chains records and writes them to a [`Sink`], fail closed.
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

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::{AuditError, Unavailable};
use super::file::FileSink;
use super::record::{self, now_rfc3339, Record, FORMAT_VERSION};
use super::sink::Sink;

/// The longest a written line waits for `fdatasync`.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// A write that has not returned after this long makes the log "stalled": new requests
/// are refused at once instead of queueing behind it.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// What to do when a record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse the request (503 `audit_unavailable`): no signature without its record.
    #[default]
    Refuse,
    /// Answer anyway; for those who put availability first. The unrecorded requests are
    /// logged at the first one and then at each power of two (1, 2, 4, 8, ...), so a
    /// flood logs a handful of lines, and their count is recorded once writing works
    /// again.
    Continue,
}

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

/// Where records go. Cloning shares the one sink.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// The sink's name, for log lines.
    name: String,
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

/// The chain's state and the sink it is written to.
struct Writer {
    sink: Box<dyn Sink>,
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
    /// Opens (or creates, mode 0600) the file `path` and continues its chain. Returns
    /// the log and the thread that makes written lines durable.
    pub fn open(
        path: &Path,
        on_failure: OnFailure,
    ) -> Result<(Self, std::thread::JoinHandle<()>), AuditError> {
        let (sink, seq, prev) = FileSink::open(path)?;
        Self::with_sink(Box::new(sink), seq, prev, on_failure).map_err(|source| AuditError::Io {
            path: path.into(),
            source,
        })
    }

    /// Writes to `sink`, continuing the chain whose last line is `seq` with hash `prev`
    /// (0 and [`GENESIS`](super::GENESIS) for a new chain). Returns the log and the thread
    /// that makes written lines durable.
    pub fn with_sink(
        sink: Box<dyn Sink>,
        seq: u64,
        prev: String,
        on_failure: OnFailure,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        if on_failure == OnFailure::Continue {
            tracing::warn!(
                "[audit] on_failure = \"continue\": requests are answered even when the audit log cannot record them"
            );
        }
        let inner = Arc::new(Inner {
            name: sink.name(),
            on_failure,
            writer: Mutex::new(Writer {
                sink,
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
            .spawn(move || syncer.sync_loop())?;
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
        let result = writer.append(record);
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
                    tracing::error!(file = %inner.name, error = %e, refused, on_failure = ?inner.on_failure, "cannot write the audit log");
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

    /// Closes the sink and opens it again (SIGHUP, for logrotate's `create`) if it was
    /// moved: the new file starts with a `log_opened` record linking to the old file's
    /// head. Runs on a blocking thread.
    pub fn reopen(&self) {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if !writer.sink.moved() {
            return;
        }
        writer.sink.close();
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
        if let Err(e) = writer.prepare() {
            return Err(Unavailable(e.to_string()));
        }
        let Some(record) = make(writer.seq, &writer.prev) else {
            return Ok(());
        };
        writer
            .append(record)
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
        let prepared = writer.prepare();
        inner.writing_since.store(0, Ordering::Release);
        if prepared.is_ok() && writer.outage.is_none() {
            *inner.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
            inner.dirty.store(true, Ordering::Release);
            tracing::warn!(file = %inner.name, "the audit log can be written again");
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
                // The flush is taken under the lock only briefly and runs outside it, so
                // requests keep writing while the disk flushes.
                let flush = self.writer.try_lock().ok().and_then(|w| w.sink.flush());
                match flush {
                    Some(flush) => {
                        if let Err(e) = flush() {
                            tracing::error!(file = %self.name, error = %e, "fdatasync of the audit log failed");
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
    /// Makes sure the sink is ours and whole, and writes the records that are due before
    /// the next one: `log_opened` after a (re)open, `audit_outage` after a failure.
    fn prepare(&mut self) -> std::io::Result<()> {
        if let Some(why) = self.sink.check()? {
            self.opened = Some(why.into());
        }
        if !self.sink.is_open() && self.sink.reopen(self.seq, &self.prev)? {
            self.opened = None;
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

    fn append(&mut self, record: Record) -> std::io::Result<()> {
        self.prepare()?;
        self.write_line(record)
    }

    fn write_line(&mut self, record: Record) -> std::io::Result<()> {
        if !self.sink.is_open() {
            return Err(std::io::Error::other("the audit file is not open"));
        }
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
        self.sink.write_line(text)?;
        self.seq += 1;
        self.prev.clear();
        self.prev
            .push_str(std::str::from_utf8(&hash).map_err(std::io::Error::other)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::chain;
    use super::super::verify::verify;
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
        assert_eq!(chain::head(&path).unwrap(), (seq, head.clone()));
        assert_eq!(seq, 1500);
        let verified = verify(&[path], None).unwrap();
        assert_eq!(
            (verified.lines, verified.broken, verified.head),
            (1500, None, head)
        );
    }
}
