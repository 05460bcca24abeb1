//! Counters of the token calls that must not happen per request (`/metrics`).

use prometheus_client::metrics::counter::Counter;

/// Counters of the token calls that must not happen per request.
#[derive(Clone, Default)]
pub struct TokenCounters {
    /// C_OpenSession calls.
    pub sessions_opened: Counter,
    /// C_Login calls.
    pub logins: Counter,
}
