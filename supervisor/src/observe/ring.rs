//! A bounded history plus a broadcast of what follows: what `events` and
//! `tail` serve. Pushing never waits; the oldest entry goes, and a follower
//! that falls behind misses entries instead of slowing anyone.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use tokio::sync::broadcast;

/// Entries a follower may fall behind by before it misses some.
const FOLLOW: usize = 1024;

#[derive(Debug)]
pub struct Ring<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    /// Made by the first follower: a broadcast channel holds all its slots from the start
    /// (about 150 KiB for log lines), and most plugins' logs are never followed.
    tx: OnceLock<broadcast::Sender<T>>,
}

impl<T: Clone> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self { items: Mutex::new(VecDeque::new()), capacity: capacity.max(1), tx: OnceLock::new() }
    }

    pub fn push(&self, item: T) {
        if let Ok(mut items) = self.items.lock() {
            if items.len() == self.capacity {
                items.pop_front();
            }
            items.push_back(item.clone());
        }
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(item);
        }
    }

    /// Whether anyone has followed (the channel exists).
    #[cfg(test)]
    fn followed(&self) -> bool {
        self.tx.get().is_some()
    }

    /// The last `n` entries, oldest first, and a receiver for what follows.
    pub fn subscribe(&self, n: usize) -> (Vec<T>, broadcast::Receiver<T>) {
        // Subscribe under the lock so nothing falls between the two.
        let items = self.items.lock();
        let rx = self.tx.get_or_init(|| broadcast::channel(FOLLOW).0).subscribe();
        let kept = items.map(|i| i.iter().skip(i.len().saturating_sub(n)).cloned().collect()).unwrap_or_default();
        (kept, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_hands_followers_what_comes_next() {
        let r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert!(!r.followed(), "no follower yet, so no channel held");
        let (kept, mut rx) = r.subscribe(usize::MAX);
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(r.subscribe(2).0, [3, 4]);
        r.push(5);
        assert_eq!(rx.try_recv().unwrap(), 5);
    }
}
