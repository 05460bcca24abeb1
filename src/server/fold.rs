//! Folding repeated log events: the first event for a key is logged at once, the ones
//! that follow within the window are only counted, and the count is logged when the
//! window ends. A flood (a refused uid opening thousands of connections, accept failing
//! on EMFILE) then costs one line per key per window instead of one per event.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Counts events per key and says which ones to log.
#[derive(Debug)]
pub struct Fold<K> {
    window: Duration,
    open: HashMap<K, Window>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    folded: u64,
}

impl<K: Eq + Hash + Clone> Fold<K> {
    /// At most one line per key per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
    }

    /// One event for `key` at `now`. `Some(n)`: log this event, saying that `n` more were
    /// folded since the previous line for `key`; `None`: it was counted, log nothing.
    pub fn event(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.open.get_mut(&key) {
            Some(w) if now.duration_since(w.since) < self.window => {
                w.folded += 1;
                None
            }
            Some(w) => {
                let folded = w.folded;
                *w = Window {
                    since: now,
                    folded: 0,
                };
                Some(folded)
            }
            None => {
                self.open.insert(
                    key,
                    Window {
                        since: now,
                        folded: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// The keys whose window has ended at `now` with events folded, and how many; call
    /// it every `window` so that the count of a flood that stopped is still logged. Keys
    /// whose window ended are forgotten, so the map does not grow.
    pub fn ended(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut ended = Vec::new();
        self.open.retain(|key, w| {
            if now.duration_since(w.since) < self.window {
                return true;
            }
            if w.folded > 0 {
                ended.push((key.clone(), w.folded));
            }
            false
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_window_and_every_event_accounted_for() {
        let second = Duration::from_secs(1);
        let mut fold = Fold::new(second);
        let start = Instant::now();
        let mut logged = 0;
        let mut counted = 0;
        // 3,000 events for uid 7 over 2.999 s, 10 for uid 8 at the start.
        for i in 0..3_000u64 {
            if let Some(n) = fold.event(7u32, start + Duration::from_millis(i)) {
                logged += 1;
                counted += 1 + n;
            }
        }
        for _ in 0..10 {
            if let Some(n) = fold.event(8u32, start) {
                counted += 1 + n;
            }
        }
        assert_eq!(logged, 3, "one line per second for uid 7");
        let mut ended = fold.ended(start + Duration::from_secs(10));
        ended.sort();
        assert_eq!(ended, vec![(7, 999), (8, 9)]);
        counted += ended.iter().map(|(_, n)| n).sum::<u64>();
        assert_eq!(counted, 3_010);
        assert!(fold.ended(start + Duration::from_secs(20)).is_empty());
        assert_eq!(fold.event(7, start + Duration::from_secs(20)), Some(0));
    }
}
