//! Everything after the accept, shared by the Unix socket and the TLS listener: a
//! listener yields `(io, Peer)` and hands it here, where one set of connection slots,
//! one per-identity limit and one [`Notices`] decide and record whether it is served
//! ([`super::conn::serve`]). Two listeners cannot drift apart on what they admit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::conn::{self, ConnLimits, Recheck};
use super::notices::Notices;
use super::peer::{IdentityKey, Peer};

/// The policy's answer for a peer at accept: true if some rule admits it. Cheap, and
/// silent: refusals are logged folded, by [`Notices`].
pub type Admits = Arc<dyn Fn(&Peer) -> bool + Send + Sync>;

/// The admission both listeners share.
pub struct Admission {
    app: Router,
    limits: ConnLimits,
    admits: Admits,
    slots: Arc<Semaphore>,
    identities: Arc<Identities>,
    notices: Notices,
}

impl Admission {
    /// Admission to `app` under `limits`, asking `admits` for each peer and auditing
    /// refusals to `audit`. Starts the task that flushes the folded notices every second
    /// for as long as the admission lives.
    pub fn new(
        app: Router,
        limits: ConnLimits,
        admits: Admits,
        audit: Option<crate::audit::AuditLog>,
    ) -> Arc<Self> {
        let admission = Arc::new(Self {
            app,
            limits,
            admits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            identities: Identities::new(limits.max_per_identity),
            notices: Notices::new(audit),
        });
        tokio::spawn(flush_every_second(Arc::downgrade(&admission)));
        admission
    }

    /// The notices, for what a listener sees before a peer is known.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// The limits connections are served with.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Serves `io` from `peer`, which a listener accepted: within the connection limit
    /// and the peer's per-identity limit, else closed at once. A peer no rule admits gets
    /// one 403. `recheck` runs before each request (a TLS certificate's pin, CA, CRL and
    /// validity); `graceful` is the listener's shutdown.
    pub fn serve<S>(&self, io: S, peer: Peer, recheck: Option<Recheck>, graceful: Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.notices.full(self.limits.max_connections);
            return;
        };
        let admitted = (self.admits)(&peer);
        if !admitted {
            self.notices.refused(&peer);
        }
        let Some(counted) = self.identities.enter(peer.key()) else {
            self.notices
                .identity_full(peer.key(), self.limits.max_per_identity);
            return;
        };
        tokio::spawn(conn::serve(
            io,
            peer,
            admitted,
            recheck,
            self.app.clone(),
            &self.limits,
            graceful,
            (slot, counted),
        ));
    }
}

/// Flushes the folded notices every second until the admission is dropped, then once
/// more.
async fn flush_every_second(admission: Weak<Admission>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(admission) = admission.upgrade() else {
            return;
        };
        admission.notices.flush();
    }
}

/// Open connections per identity.
#[derive(Debug)]
pub struct Identities {
    max: usize,
    open: Mutex<HashMap<IdentityKey, usize>>,
}

/// One open connection counted for its identity; uncounted when dropped.
#[derive(Debug)]
pub struct Counted {
    identities: Arc<Identities>,
    key: IdentityKey,
}

impl Identities {
    /// At most `max` open connections per identity.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection for `key`, or `None` if `key` already has `max` open.
    pub fn enter(self: &Arc<Self>, key: IdentityKey) -> Option<Counted> {
        let mut open = self.open.lock().expect("identities lock");
        let count = open.entry(key.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Counted {
            identities: self.clone(),
            key,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.identities.open.lock().expect("identities lock");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}
