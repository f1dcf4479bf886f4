//! A bounded history plus a broadcast of what follows: what `events` and
//! `tail` serve. Pushing never waits; the oldest entry goes, and a follower
//! that falls behind misses entries instead of slowing anyone. The history is
//! bounded by its count of entries and, where entries differ much in size (a
//! plugin's log lines), by their bytes too.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use tokio::sync::broadcast;

/// Entries a follower may fall behind by before it misses some.
const FOLLOW: usize = 1024;

#[derive(Debug)]
pub struct Ring<T> {
    items: Mutex<Held<T>>,
    capacity: usize,
    /// The most bytes the history holds, and how an entry's are counted.
    bytes: Option<(usize, Size<T>)>,
    /// Made by the first follower: a broadcast channel holds all its slots from the start
    /// (about 150 KiB for log lines), and most plugins' logs are never followed.
    tx: OnceLock<broadcast::Sender<T>>,
}

/// How many bytes an entry holds.
type Size<T> = fn(&T) -> usize;

/// The history: each entry with its bytes as counted when it came, and their sum.
#[derive(Debug)]
struct Held<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
}

impl<T: Clone> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(Held { items: VecDeque::new(), bytes: 0 }),
            capacity: capacity.max(1),
            bytes: None,
            tx: OnceLock::new(),
        }
    }

    /// At most `capacity` entries and `max_bytes` of them as `size` counts them: the
    /// oldest go until both hold. The newest entry is kept whatever its size, so that
    /// `tail -n 1` always has the last one.
    pub fn bounded(capacity: usize, max_bytes: usize, size: Size<T>) -> Self {
        Self { bytes: Some((max_bytes, size)), ..Self::new(capacity) }
    }

    pub fn push(&self, item: T) {
        if let Ok(mut held) = self.items.lock() {
            let (max_bytes, size) = self.bytes.map_or((usize::MAX, 0), |(max, size)| (max, size(&item)));
            let Held { items, bytes } = &mut *held;
            while items.len() >= self.capacity || (!items.is_empty() && bytes.saturating_add(size) > max_bytes) {
                let Some((_, gone)) = items.pop_front() else { break };
                *bytes -= gone;
            }
            *bytes += size;
            items.push_back((item.clone(), size));
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
        let kept = items
            .map(|h| h.items.iter().skip(h.items.len().saturating_sub(n)).map(|(item, _)| item.clone()).collect())
            .unwrap_or_default();
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

    fn len(s: &&str) -> usize {
        s.len()
    }

    fn held_bytes<T>(r: &Ring<T>) -> usize {
        let held = r.items.lock().unwrap();
        assert_eq!(held.bytes, held.items.iter().map(|(_, b)| b).sum::<usize>(), "the sum follows what is held");
        held.bytes
    }

    #[test]
    fn a_byte_bound_lets_the_oldest_go_until_the_newest_fit() {
        let r = Ring::bounded(100, 10, len);
        for s in ["aaaa", "bbbb", "cccc"] {
            r.push(s);
        }
        assert_eq!(r.subscribe(usize::MAX).0, ["bbbb", "cccc"], "12 bytes are more than 10");
        assert_eq!(held_bytes(&r), 8);
        let large: &str = "twenty-five bytes, alone.";
        assert_eq!(large.len(), 25);
        r.push(large);
        assert_eq!(r.subscribe(usize::MAX).0, [large], "the newest is kept alone, however large");
        r.push("d");
        assert_eq!(r.subscribe(usize::MAX).0, ["d"]);
        assert_eq!(held_bytes(&r), 1);
    }

    #[test]
    fn under_the_byte_bound_the_count_still_bounds() {
        let r = Ring::bounded(3, 1000, len);
        for s in ["a", "b", "c", "d"] {
            r.push(s);
        }
        assert_eq!(r.subscribe(usize::MAX).0, ["b", "c", "d"]);
        assert_eq!(held_bytes(&r), 3);
    }
}
