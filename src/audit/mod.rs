//! The audit log: one JSON line per request that reached a key, each carrying the
//! SHA-256 of the line before it, so that a removed, edited or reordered line breaks the
//! chain (`hsm-signer audit verify FILE...`), and signed checkpoints so that a rewrite of
//! the whole chain is caught too ([`checkpoint`]).
//!
//! One job per file:
//! - [`record`]: the line format;
//! - `writer`: [`AuditLog`], which chains records and writes them, fail closed, to a
//!   [`Sink`];
//! - `sink`: the [`Sink`] trait, the seam for a second destination (journald, a remote
//!   collector is one new file implementing it);
//! - `file`: [`FileSink`], the append-only file (the only sink today);
//! - `chain`: the hash that links lines, and the head of an existing file;
//! - `verify`: `hsm-signer audit verify`, which reads the chain line by line;
//! - [`checkpoint`]: signed checkpoints, written by the daemon and checked by `verify`;
//! - `error`: why the log cannot be opened or written.

mod chain;
pub mod checkpoint;
mod error;
mod file;
mod record;
mod sink;
mod verify;
mod writer;

pub use chain::GENESIS;
pub use error::{AuditError, Unavailable};
pub use file::FileSink;
pub use record::{now_rfc3339, Caller, Line, Record, FORMAT_VERSION};
pub use sink::Sink;
pub use verify::{verify, Broken, Verification};
pub use writer::{AuditLog, AuditState, OnFailure, STALLED_AFTER, SYNC_EVERY};
