//! Where the audit writer puts its lines. The writer owns the chain (sequence numbers,
//! hashes, the `log_opened` and `audit_outage` records); a sink only stores whole lines
//! and says when what it writes to was lost. A second destination (journald, a remote
//! collector) is one new file implementing [`Sink`].

use std::io;

/// What makes written lines durable, run by the sync thread outside the writer's lock so
/// that requests keep writing while the disk flushes.
pub type Flush = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// A destination for audit lines. Every method is called under the writer's lock.
pub trait Sink: Send {
    /// Names the destination in log lines (the file's path).
    fn name(&self) -> String;

    /// Whether the destination is open.
    fn is_open(&self) -> bool;

    /// Before a line: checks that the destination is still the one written to. `Ok(Some(why))`
    /// when it was lost (deleted, rotated, replaced): the sink has closed it, and the
    /// writer reopens it with a `log_opened` record saying `why`. `Err` when it cannot be
    /// written as it is (a line the writer did not write is in it).
    fn check(&mut self) -> io::Result<Option<&'static str>>;

    /// Closes the destination so that the next line reopens it.
    fn close(&mut self);

    /// Opens the destination again. `seq` and `prev` are the chain's head: `Ok(true)` when
    /// what is there already continues that chain (no `log_opened` record is due), `Err`
    /// when it holds another chain.
    fn reopen(&mut self, seq: u64, prev: &str) -> io::Result<bool>;

    /// Whether the destination's name now leads somewhere else than the one open (a
    /// rotation), so that a reopen is due.
    fn moved(&self) -> bool;

    /// Writes one whole line, newline included, at once. On failure no part of it stays.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;

    /// What makes the lines written so far durable; `None` while nothing is open.
    fn flush(&self) -> Option<Flush>;
}
