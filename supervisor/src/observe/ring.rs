//! A bounded history that its followers read from: what `events` and `tail`
//! serve. Pushing never waits; the oldest entry goes, and a follower that
//! falls behind misses entries instead of slowing anyone. The history is
//! bounded by its count of entries and, where entries differ much in size (a
//! plugin's log lines), by their bytes too.
//!
//! Followers read the history itself, each with its own place in it, rather
//! than a broadcast channel beside it: a broadcast keeps its last slots' worth
//! of entries (1024 of them, up to ~96 KiB each for log lines) for as long as
//! it exists, whatever the history's bounds, so a plugin whose log was followed
//! once held ~96 MiB more than its `log_lines` allow. A follower now falls
//! behind exactly when the history forgets what it had not read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::watch;

#[derive(Debug)]
pub struct Ring<T> {
    held: Arc<Mutex<Held<T>>>,
    capacity: usize,
    /// The most bytes the history holds, and how an entry's are counted.
    bytes: Option<(usize, Size<T>)>,
    /// How many entries were ever pushed, for followers to wait on. Made by the first
    /// follower (most plugins' logs are never followed); its going tells them the
    /// history is gone.
    pushed: OnceLock<watch::Sender<u64>>,
}

/// How many bytes an entry holds.
type Size<T> = fn(&T) -> usize;

/// The history: each entry with its bytes as counted when it came, their sum, and the
/// number of the oldest (entries are numbered from 0 as they are pushed).
#[derive(Debug)]
struct Held<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    first: u64,
}

impl<T> Held<T> {
    /// The number the next entry pushed gets.
    fn end(&self) -> u64 {
        self.first + self.items.len() as u64
    }
}

impl<T: Clone> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            held: Arc::new(Mutex::new(Held { items: VecDeque::new(), bytes: 0, first: 0 })),
            capacity: capacity.max(1),
            bytes: None,
            pushed: OnceLock::new(),
        }
    }

    /// At most `capacity` entries and `max_bytes` of them as `size` counts them: the
    /// oldest go until both hold. The newest entry is kept whatever its size, so that
    /// `tail -n 1` always has the last one.
    pub fn bounded(capacity: usize, max_bytes: usize, size: Size<T>) -> Self {
        Self { bytes: Some((max_bytes, size)), ..Self::new(capacity) }
    }

    pub fn push(&self, item: T) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (max_bytes, size) = self.bytes.map_or((usize::MAX, 0), |(max, size)| (max, size(&item)));
        let Held { items, bytes, first } = &mut *held;
        while items.len() >= self.capacity || (!items.is_empty() && bytes.saturating_add(size) > max_bytes) {
            let Some((_, gone)) = items.pop_front() else { break };
            *bytes -= gone;
            *first += 1;
        }
        *bytes += size;
        items.push_back((item, size));
        let end = held.end();
        drop(held);
        if let Some(pushed) = self.pushed.get() {
            pushed.send_replace(end);
        }
    }

    /// Whether anyone has followed (the channel exists).
    #[cfg(test)]
    fn followed(&self) -> bool {
        self.pushed.get().is_some()
    }

    /// The last `n` entries, oldest first, and a follower that reads on from after them.
    pub fn subscribe(&self, n: usize) -> (Vec<T>, Follower<T>) {
        let pushed = self.pushed.get_or_init(|| watch::channel(0).0);
        // Read the entries and the follower's place under one lock, so nothing falls
        // between the two.
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = held.items.iter().skip(held.items.len().saturating_sub(n)).map(|(item, _)| item.clone()).collect();
        let end = held.end();
        let follower = Follower { held: self.held.clone(), next: end, backlog_end: end, pushed: pushed.subscribe() };
        (kept, follower)
    }

    /// A follower placed `n` entries back: it reads the last `n` entries (its backlog, see
    /// [`Follower::in_backlog`]) in place as it goes, then on. Copied out, as
    /// [`Ring::subscribe`] does, a backlog is held whole for as long as its reader takes
    /// to read it: a control stream whose client reads nothing held a plugin's whole log
    /// (4 MiB by default), and a thousand of them 4 GiB.
    pub fn read_back(&self, n: usize) -> Follower<T> {
        let pushed = self.pushed.get_or_init(|| watch::channel(0).0);
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let end = held.end();
        let next = end - (held.items.len().min(n) as u64);
        Follower { held: self.held.clone(), next, backlog_end: end, pushed: pushed.subscribe() }
    }
}

/// What a follower reads next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    Entry(T),
    /// The history forgot this many entries before the follower read them.
    Missed(u64),
    /// The history is gone (its plugin was removed).
    Closed,
}

/// One reader's place in a [`Ring`]'s history. What it has not read yet stays only as
/// long as the history keeps it; once the ring is gone (its plugin removed), the history
/// stays, within its bounds, until the follower has read the rest of it.
#[derive(Debug)]
pub struct Follower<T> {
    held: Arc<Mutex<Held<T>>>,
    /// The number of the entry it reads next.
    next: u64,
    /// The number after the last entry of its backlog: what the history had when it began.
    backlog_end: u64,
    pushed: watch::Receiver<u64>,
}

impl<T: Clone> Follower<T> {
    /// Whether what it reads next was in the history when it began (or would have been,
    /// had the history not forgotten it since).
    pub fn in_backlog(&self) -> bool {
        self.next < self.backlog_end
    }

    /// The next entry, as soon as there is one.
    pub async fn next(&mut self) -> Next<T> {
        loop {
            match self.now() {
                Some(next) => return next,
                None => {
                    if self.pushed.changed().await.is_err() {
                        // The ring is gone, and with it anything more: what it pushed
                        // before going is read first.
                        return self.now().unwrap_or(Next::Closed);
                    }
                }
            }
        }
    }

    /// The next entry if there is one already: `None` when the follower has read all.
    fn now(&mut self) -> Option<Next<T>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if self.next < held.first {
            let missed = held.first - self.next;
            self.next = held.first;
            return Some(Next::Missed(missed));
        }
        let at = usize::try_from(self.next - held.first).ok()?;
        let (item, _) = held.items.get(at)?;
        self.next += 1;
        Some(Next::Entry(item.clone()))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_reader_placed_back_reads_the_last_entries_in_place_then_on() {
        let r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        let mut back = r.read_back(2);
        assert!(back.in_backlog());
        assert_eq!(back.next().now_or_never(), Some(Next::Entry(3)));
        assert_eq!(back.next().now_or_never(), Some(Next::Entry(4)));
        assert!(!back.in_backlog(), "the backlog is read");
        assert_eq!(back.next().now_or_never(), None, "nothing new yet");
        r.push(5);
        assert_eq!(back.next().now_or_never(), Some(Next::Entry(5)));
        // More asked for than there is: what there is. The history moving on under a slow
        // reader of its backlog: told how much it missed, as a follower is.
        let mut all = r.read_back(usize::MAX);
        assert_eq!(all.next().now_or_never(), Some(Next::Entry(3)));
        for i in 6..9 {
            r.push(i);
        }
        assert_eq!(all.next().now_or_never(), Some(Next::Missed(2)));
        assert!(!all.in_backlog());
        assert_eq!(all.next().now_or_never(), Some(Next::Entry(6)));
    }

    #[test]
    fn keeps_the_newest_and_hands_followers_what_comes_next() {
        let r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert!(!r.followed(), "no follower yet, so no channel held");
        let (kept, mut follower) = r.subscribe(usize::MAX);
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(r.subscribe(2).0, [3, 4]);
        assert_eq!(follower.next().now_or_never(), None, "nothing new yet");
        r.push(5);
        assert_eq!(follower.next().now_or_never(), Some(Next::Entry(5)));
    }

    #[test]
    fn a_follower_falls_behind_when_the_history_forgets_what_it_had_not_read() {
        // Bounded by bytes: what a follower has not read is held by the history alone,
        // never beside it.
        let r = Ring::bounded(100, 10, len);
        let (_, mut follower) = r.subscribe(0);
        for s in ["aaaa", "bbbb", "cccc"] {
            r.push(s);
        }
        assert_eq!(follower.next().now_or_never(), Some(Next::Missed(1)), "12 bytes are more than 10");
        assert_eq!(follower.next().now_or_never(), Some(Next::Entry("bbbb")));
        assert_eq!(follower.next().now_or_never(), Some(Next::Entry("cccc")));
        assert_eq!(follower.next().now_or_never(), None);
        for i in 0..25 {
            r.push(["x", "y"][i % 2]);
        }
        assert_eq!(follower.next().now_or_never(), Some(Next::Missed(15)), "ten one-byte entries are kept");
        assert_eq!(follower.next().now_or_never(), Some(Next::Entry("y")));
    }

    #[tokio::test]
    async fn a_waiting_follower_wakes_for_the_next_entry_and_ends_with_the_history() {
        let r = Arc::new(Ring::new(4));
        let (_, mut follower) = r.subscribe(0);
        let reading = tokio::spawn(async move {
            let first = follower.next().await;
            (first, follower.next().await, follower.next().await, follower.next().await)
        });
        tokio::task::yield_now().await;
        r.push(7);
        tokio::task::yield_now().await;
        // Its last words, then the plugin is removed before the follower reads them.
        r.push(8);
        r.push(9);
        drop(r);
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), reading).await.unwrap().unwrap();
        assert_eq!(read, (Next::Entry(7), Next::Entry(8), Next::Entry(9), Next::Closed), "then the history went");
    }

    fn len(s: &&str) -> usize {
        s.len()
    }

    fn held_bytes<T>(r: &Ring<T>) -> usize {
        let held = r.held.lock().unwrap();
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
