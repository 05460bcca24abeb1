//! TLS handshakes in progress, counted per source (an IPv4 address, or an IPv6 /64), so
//! that strangers who open connections and never finish the handshake cannot keep a
//! pinned client out. At `max_handshakes` in progress, the oldest handshake of the source
//! holding the most is aborted to make room (rustls has no such call: the daemon aborts
//! its own handshake task). A source already holding `max_handshakes_per_source` is
//! refused at accept, but only while more than half of `max_handshakes` are busy: a burst
//! from one PHP-FPM node, or from behind a NAT, still gets through on a quiet daemon.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The handshakes in progress.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    per_source: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    total: usize,
    /// Per source, its handshakes oldest first; dropping one's sender aborts it.
    by_source: HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<()>)>>,
}

/// One handshake in progress; uncounted when dropped.
#[derive(Debug)]
pub struct Ticket {
    handshakes: Arc<Handshakes>,
    source: IpAddr,
    id: u64,
    /// Resolves (with an error) when the handshake is aborted to make room.
    pub aborted: oneshot::Receiver<()>,
}

/// The source a peer address counts under: an IPv4 address (also when mapped into
/// IPv6), or the /64 of an IPv6 address, which one host or site usually holds whole.
pub fn source(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

impl Handshakes {
    /// At most `max` in progress, `per_source` per source while busy.
    pub fn new(max: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Counts a new handshake from `source`, aborting the oldest handshake of the source
    /// holding the most if `max` are in progress; `None` when the source is refused.
    pub fn begin(self: &Arc<Self>, source: IpAddr) -> Option<Ticket> {
        let mut inner = self.inner.lock().expect("handshakes lock");
        let held = inner.by_source.get(&source).map_or(0, VecDeque::len);
        if held >= self.per_source && inner.total > self.max / 2 {
            return None;
        }
        if inner.total >= self.max {
            inner.abort_oldest_of_busiest();
        }
        let (abort, aborted) = oneshot::channel();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.total += 1;
        inner
            .by_source
            .entry(source)
            .or_default()
            .push_back((id, abort));
        Some(Ticket {
            handshakes: self.clone(),
            source,
            id,
            aborted,
        })
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.inner.lock().expect("handshakes lock").total
    }
}

impl Inner {
    /// Drops the oldest handshake's sender of the source holding the most (ties: the one
    /// whose oldest handshake is oldest), which aborts that handshake's task.
    fn abort_oldest_of_busiest(&mut self) {
        let busiest = self
            .by_source
            .iter()
            .max_by_key(|(_, queue)| {
                let oldest = queue.front().map_or(u64::MAX, |(id, _)| *id);
                (queue.len(), std::cmp::Reverse(oldest))
            })
            .map(|(source, _)| *source);
        let Some(busiest) = busiest else {
            return;
        };
        if let Some(queue) = self.by_source.get_mut(&busiest) {
            if queue.pop_front().is_some() {
                self.total -= 1;
            }
            if queue.is_empty() {
                self.by_source.remove(&busiest);
            }
        }
    }
}

impl Ticket {
    /// The source this handshake counts under.
    pub fn source(&self) -> IpAddr {
        self.source
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.handshakes.inner.lock().expect("handshakes lock");
        let Some(queue) = inner.by_source.get_mut(&self.source) else {
            return;
        };
        let before = queue.len();
        queue.retain(|(id, _)| *id != self.id);
        let removed = before - queue.len();
        if queue.is_empty() {
            inner.by_source.remove(&self.source);
        }
        inner.total -= removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source(ip("127.0.0.2")), ip("127.0.0.2"));
        assert_eq!(source(ip("::ffff:10.0.0.5")), ip("10.0.0.5"));
        assert_eq!(source(ip("2001:db8:1:2:aa:bb:cc:dd")), ip("2001:db8:1:2::"));
        assert_ne!(source(ip("2001:db8:1:3::1")), source(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn a_flooding_source_is_refused_only_while_busy_and_loses_its_oldest_at_the_limit() {
        let handshakes = Handshakes::new(8, 2);
        let flood = ip("127.0.0.2");
        // A quiet daemon lets one source past its share: up to half of max, then 2 more
        // would be over its share while busy.
        let mut held: Vec<Ticket> = Vec::new();
        while let Some(ticket) = handshakes.begin(flood) {
            held.push(ticket);
        }
        assert_eq!(held.len(), 5, "refused once above half of 8 and over 2");
        // Other sources within their share are never refused for the flood's sake …
        let client = ip("127.0.0.1");
        let mut others: Vec<Ticket> = ["127.0.0.1", "127.0.0.3", "127.0.0.3"]
            .into_iter()
            .map(|source| handshakes.begin(ip(source)).expect("admitted"))
            .collect();
        assert_eq!(handshakes.total(), 8);
        // … and at the limit the flood's oldest handshake is aborted to make room.
        let mut oldest = held.remove(0);
        assert_eq!(
            oldest.aborted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        others.push(handshakes.begin(client).expect("room made"));
        assert_eq!(
            oldest.aborted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(handshakes.total(), 8);
        // Dropping an aborted ticket does not count it twice; the others count down.
        drop(oldest);
        assert_eq!(handshakes.total(), 8);
        drop(held);
        drop(others);
        assert_eq!(handshakes.total(), 0);
        assert!(handshakes.begin(flood).is_some());
    }
}
