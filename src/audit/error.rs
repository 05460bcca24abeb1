//! Why the audit log cannot be opened, or a record cannot be written.

use std::path::PathBuf;

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
