//! What the listeners log about connections they close or refuse, folded so that a flood
//! cannot flood the journal or fill the audit disk (which fails closed): one line per
//! kind (per identity where there is one) per second, with the count of what was folded.
//! Refused peers and refused handshakes are audited the same way. One `Notices` serves
//! both listeners; [`Notices::flush`] runs every second, so the count of a flood that
//! stopped is still logged and audited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fold::Fold;
use super::peer::{IdentityKey, Peer};
use crate::audit::{AuditLog, Caller, Record};

/// The folded notices of both listeners.
pub struct Notices {
    audit: Option<AuditLog>,
    folds: Mutex<Folds>,
}

struct Folds {
    refused: Fold<IdentityKey>,
    identity_full: Fold<IdentityKey>,
    full: Fold<()>,
    accept_failed: Fold<&'static str>,
    no_peer: Fold<()>,
    handshakes: Handshakes,
}

/// Why a TLS handshake did not give a connection.
#[derive(Debug, Clone, Copy)]
pub enum HandshakeEnd {
    /// Refused at accept: the source held too many handshakes while the daemon was busy.
    Refused,
    /// Aborted to make room for a new handshake (its source held the most).
    Aborted,
    /// The TLS library refused it (no certificate, another CA, an old protocol …).
    Failed,
    /// Not finished within `handshake_timeout_ms`.
    TimedOut,
}

/// Handshakes that ended without a connection in the current second, by source.
#[derive(Default)]
struct Handshakes {
    by_source: HashMap<IpAddr, u64>,
    counts: [u64; 4],
}

/// How many sources a handshake notice names.
const TOP_SOURCES: usize = 5;

impl Notices {
    /// Notices that audit refusals to `audit`, if set.
    pub fn new(audit: Option<AuditLog>) -> Self {
        let second = Duration::from_secs(1);
        Self {
            audit,
            folds: Mutex::new(Folds {
                refused: Fold::new(second),
                identity_full: Fold::new(second),
                full: Fold::new(second),
                accept_failed: Fold::new(second),
                no_peer: Fold::new(second),
                handshakes: Handshakes::default(),
            }),
        }
    }

    fn folds(&self) -> std::sync::MutexGuard<'_, Folds> {
        self.folds.lock().expect("notices lock")
    }

    /// A connection from a peer no rule admits (it gets one 403).
    pub fn refused(&self, peer: &Peer) {
        let folded = self.folds().refused.event(peer.key(), Instant::now());
        if let Some(folded) = folded {
            tracing::warn!(peer = %peer.describe(), folded, "refused a connection from a peer no rule admits");
            self.audit_refusal(peer.caller(), 1 + folded);
        }
    }

    /// A `refused_peer` record: `count` connections refused (this one, plus those folded
    /// since the last record for the identity). Written on a blocking thread, not
    /// awaited: the listeners never wait on the disk, and the fold bounds the rate.
    fn audit_refusal(&self, caller: Caller, count: u64) {
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let mut record = Record::system("refused_peer", "forbidden")
            .with_detail(serde_json::json!({ "connections": count }));
        record.status = 403;
        record.caller = caller;
        tokio::task::spawn_blocking(move || audit.record(record));
    }

    /// A request refused on an open TLS connection whose certificate no longer stands
    /// for `peer` (`reason`); the connection closes after it. Not folded: each
    /// connection is refused this way once, and only a connection once admitted can be.
    pub fn refused_on_open_connection(&self, peer: &Peer, address: SocketAddr, reason: &str) {
        tracing::warn!(peer = %peer.describe(), %address, %reason, "refused a request on an open TLS connection; closing it");
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let mut record = Record::system("refused_peer", "forbidden").with_detail(
            serde_json::json!({ "connections": 1, "address": address.to_string(), "reason": reason }),
        );
        record.status = 403;
        record.caller = peer.caller();
        tokio::task::spawn_blocking(move || audit.record(record));
    }

    /// A connection closed because its identity had `max` open and none was idle.
    pub fn identity_full(&self, key: IdentityKey, max: usize) {
        let folded = self
            .folds()
            .identity_full
            .event(key.clone(), Instant::now());
        if let Some(folded) = folded {
            tracing::warn!(
                identity = %key,
                max,
                folded,
                "max_connections_per_identity reached and no connection of it is idle; closing a new connection"
            );
        }
    }

    /// A connection closed because `max_connections` were open.
    pub fn full(&self, max: usize) {
        if let Some(folded) = self.folds().full.event((), Instant::now()) {
            tracing::warn!(
                max,
                folded,
                "connection limit reached; closing a new connection"
            );
        }
    }

    /// `accept` failed on `listener` ("socket" or "TLS").
    pub fn accept_failed(&self, listener: &'static str, e: &std::io::Error) {
        if let Some(folded) = self.folds().accept_failed.event(listener, Instant::now()) {
            tracing::warn!(listener, error = %e, folded, "accept failed (EMFILE: raise LimitNOFILE); retrying in 100 ms");
        }
    }

    /// A Unix connection whose credentials could not be read.
    pub fn no_peer(&self, e: &std::io::Error) {
        if let Some(folded) = self.folds().no_peer.event((), Instant::now()) {
            tracing::warn!(error = %e, folded, "no peer credentials; closing the connection");
        }
    }

    /// A TLS handshake from `source` that gave no connection. Counted only: the next
    /// [`Notices::flush`] logs and audits the second's handshakes in one line and one
    /// record, naming the sources that had the most.
    pub fn handshake(&self, source: IpAddr, end: HandshakeEnd) {
        let mut folds = self.folds();
        *folds.handshakes.by_source.entry(source).or_default() += 1;
        folds.handshakes.counts[end as usize] += 1;
    }

    /// Logs the counts of the windows that ended, and the handshakes of the last second.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut folds = self.folds();
        for (key, n) in folds.refused.ended(now) {
            tracing::warn!(
                identity = %key,
                folded = n,
                "refused {n} more from {key} in the last second"
            );
            self.audit_refusal(caller_of(key), n);
        }
        for (key, n) in folds.identity_full.ended(now) {
            tracing::warn!(
                identity = %key,
                folded = n,
                "max_connections_per_identity: closed {n} more from {key} in the last second"
            );
        }
        for ((), n) in folds.full.ended(now) {
            tracing::warn!(
                folded = n,
                "connection limit: closed {n} more in the last second"
            );
        }
        for (listener, n) in folds.accept_failed.ended(now) {
            tracing::warn!(
                listener,
                folded = n,
                "accept failed {n} more times in the last second"
            );
        }
        for ((), n) in folds.no_peer.ended(now) {
            tracing::warn!(
                folded = n,
                "no peer credentials: closed {n} more in the last second"
            );
        }
        let handshakes = std::mem::take(&mut folds.handshakes);
        drop(folds);
        self.flush_handshakes(handshakes);
    }

    /// One line and one `refused_handshakes` record for the second's handshakes.
    fn flush_handshakes(&self, handshakes: Handshakes) {
        if handshakes.by_source.is_empty() {
            return;
        }
        let [refused, aborted, failed, timed_out] = handshakes.counts;
        let sources = handshakes.by_source.len();
        let mut top: Vec<(IpAddr, u64)> = handshakes.by_source.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(TOP_SOURCES);
        let named: Vec<String> = top.iter().map(|(ip, n)| format!("{ip} ({n})")).collect();
        tracing::warn!(
            refused,
            aborted,
            failed,
            timed_out,
            sources,
            top = %named.join(", "),
            "TLS handshakes that gave no connection in the last second"
        );
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let top: Vec<serde_json::Value> = top
            .iter()
            .map(|(ip, n)| serde_json::json!({ "source": ip.to_string(), "handshakes": n }))
            .collect();
        let record =
            Record::system("refused_handshakes", "refused").with_detail(serde_json::json!({
                "refused": refused,
                "aborted": aborted,
                "failed": failed,
                "timed_out": timed_out,
                "sources": sources,
                "top": top,
            }));
        tokio::task::spawn_blocking(move || audit.record(record));
    }
}

/// The audit caller for an identity whose peer is no longer at hand.
fn caller_of(key: IdentityKey) -> Caller {
    match key {
        IdentityKey::Uid(uid) => Caller {
            uid: Some(uid),
            ..Default::default()
        },
        IdentityKey::Client(name) => Caller {
            client: Some(name.to_string()),
            ..Default::default()
        },
    }
}
