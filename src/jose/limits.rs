//! The bounds of a client assertion's lifetime (RFC 7523 leaves them to the server; the
//! issue's 300 s keeps a stolen assertion short-lived).

/// The longest client assertion lifetime, in seconds.
pub const MAX_LIFETIME_SECONDS: u32 = 300;
/// The lifetime when the caller names none, in seconds.
pub const DEFAULT_LIFETIME_SECONDS: u32 = 60;
