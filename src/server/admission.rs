//! Everything after the accept, shared by the Unix socket and the TLS listener: a
//! listener yields `(io, Peer)` and hands it here, where one set of connection slots,
//! one per-identity limit and one [`Notices`] decide and record whether it is served
//! ([`super::conn::serve`]). Two listeners cannot drift apart on what they admit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::conn::{self, ConnLimits, Recheck};
use super::conn_io::Activity;
use super::notices::Notices;
use super::peer::{IdentityKey, Peer};

/// The policy's answer for a peer at accept: true if some rule admits it. Cheap, and
/// silent: refusals are logged folded, by [`Notices`].
pub type PeerFilter = Arc<dyn Fn(&Peer) -> bool + Send + Sync>;

/// The admission both listeners share.
pub struct Admission {
    app: Router,
    limits: ConnLimits,
    admits: PeerFilter,
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
        admits: PeerFilter,
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
        let activity = Activity::new();
        let Some(counted) = self.identities.enter(peer.key(), activity.clone()) else {
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
            activity,
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

/// Open connections per identity, each with its `Activity`.
#[derive(Debug)]
pub struct Identities {
    max: usize,
    open: Mutex<HashMap<IdentityKey, Vec<Arc<Activity>>>>,
}

/// One open connection counted for its identity; uncounted when dropped.
#[derive(Debug)]
pub struct Counted {
    identities: Arc<Identities>,
    key: IdentityKey,
    activity: Arc<Activity>,
}

impl Identities {
    /// At most `max` open connections per identity.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts the connection of `activity` for `key`. At `max`, the identity's oldest
    /// connection idle for at least `IDLE_AFTER` (1 s) is told to close and
    /// uncounted to make room (as nginx and Apache close idle keep-alive connections
    /// under pressure); a connection with a request in flight never is. `None` when all
    /// of them are busy.
    pub fn enter(self: &Arc<Self>, key: IdentityKey, activity: Arc<Activity>) -> Option<Counted> {
        self.enter_at(key, activity, Instant::now())
    }

    fn enter_at(
        self: &Arc<Self>,
        key: IdentityKey,
        activity: Arc<Activity>,
        now: Instant,
    ) -> Option<Counted> {
        let mut open = self.open.lock().expect("identities lock");
        let connections = open.entry(key.clone()).or_default();
        if connections.len() >= self.max {
            let oldest_idle = connections
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.idle_since(now).map(|since| (since, i)))
                .min()
                .map(|(_, i)| i)?;
            connections.swap_remove(oldest_idle).close();
        }
        connections.push(activity.clone());
        Some(Counted {
            identities: self.clone(),
            key,
            activity,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.identities.open.lock().expect("identities lock");
        if let Some(connections) = open.get_mut(&self.key) {
            connections.retain(|c| !Arc::ptr_eq(c, &self.activity));
            if connections.is_empty() {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True once the connection of `activity` was told to close.
    fn told_to_close(activity: &Activity) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(10), activity.closing())
                .await
                .is_ok()
        })
    }

    #[test]
    fn the_oldest_idle_connection_gives_way_and_a_busy_one_never_does() {
        let identities = Identities::new(2);
        let uid = || IdentityKey::Uid(33);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let first = Activity::new();
        let second = Activity::new();
        let _a = identities.enter_at(uid(), first.clone(), at(0));
        let _b = identities.enter_at(uid(), second.clone(), at(0));
        // Neither has been idle for a second yet.
        assert!(identities
            .enter_at(uid(), Activity::new(), at(500))
            .is_none());
        // `second` answered a request just now, `first` has idled since its accept:
        // at 1.1 s both count as idle, and the oldest idle one gives way.
        second.responded();
        let third = Activity::new();
        third.read_a_request_byte();
        let _c = identities.enter_at(uid(), third.clone(), at(1100));
        assert!(_c.is_some(), "an idle connection gave way");
        assert!(told_to_close(&first));
        assert!(!told_to_close(&second));
        // `third` has a request in flight: `second` goes, never `third`.
        let fourth = Activity::new();
        fourth.read_a_request_byte();
        let _d = identities.enter_at(uid(), fourth, at(2200));
        assert!(_d.is_some(), "room made");
        assert!(told_to_close(&second));
        assert!(!told_to_close(&third));
        // Only connections with requests in flight left: refused. Another uid is not
        // affected.
        assert!(identities
            .enter_at(uid(), Activity::new(), at(9000))
            .is_none());
        assert!(identities
            .enter_at(IdentityKey::Uid(0), Activity::new(), at(9000))
            .is_some());
        // Once a response is written and a second has passed, that one gives way too.
        third.responded();
        assert!(identities
            .enter_at(
                uid(),
                Activity::new(),
                Instant::now() + Duration::from_millis(1100)
            )
            .is_some());
        assert!(told_to_close(&third));
    }
}
