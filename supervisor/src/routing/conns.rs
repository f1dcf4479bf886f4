//! The gateway's connections: how many may be open at once, which one goes
//! when a caller arrives at the limit (the one idle longest: refusing
//! newcomers would let idle connections lock real callers out), and when a
//! connection counts as idle (no call open).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Every open connection, by id, and the idle ones in the order they became
/// idle.
pub struct Conns {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    open: HashMap<u64, Entry>,
    /// Idle order → connection id; the first is the one idle longest.
    idle: BTreeMap<u64, u64>,
    /// The most open at once since memory was last given back.
    peak: usize,
}

struct Entry {
    calls: usize,
    /// Its key in `idle`, while it has no call open.
    idle_key: Option<u64>,
    idle_since: Instant,
    close: Arc<Notify>,
}

/// Why a new connection was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every connection has a call open.
    AllBusy,
}

impl Conns {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a new connection. At the limit, the connection idle longest is
    /// told to close and stops counting at once.
    pub fn admit(self: &Arc<Self>) -> Result<Conn, Refused> {
        let mut st = self.lock();
        if st.open.len() >= self.limit {
            let Some((_, oldest)) = st.idle.pop_first() else {
                return Err(Refused::AllBusy);
            };
            if let Some(e) = st.open.remove(&oldest) {
                e.close.notify_one();
            }
        }
        let (id, key) = (st.next, st.next + 1);
        st.next += 2;
        let close = Arc::new(Notify::new());
        st.open.insert(id, Entry { calls: 0, idle_key: Some(key), idle_since: Instant::now(), close: close.clone() });
        st.idle.insert(key, id);
        st.peak = st.peak.max(st.open.len());
        Ok(Conn { id, conns: self.clone(), close })
    }

    /// Whether the next connection takes an open one's place.
    pub fn full(&self) -> bool {
        self.lock().open.len() >= self.limit
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn call_started(&self, id: u64) {
        let mut st = self.lock();
        let Some(e) = st.open.get_mut(&id) else { return };
        e.calls += 1;
        if let Some(key) = e.idle_key.take() {
            st.idle.remove(&key);
        }
    }

    fn call_ended(&self, id: u64) {
        let mut st = self.lock();
        let key = st.next;
        let Some(e) = st.open.get_mut(&id) else { return };
        e.calls = e.calls.saturating_sub(1);
        if e.calls == 0 {
            e.idle_key = Some(key);
            e.idle_since = Instant::now();
            st.idle.insert(key, id);
            st.next += 1;
        }
    }

    fn idle_since(&self, id: u64) -> Option<Instant> {
        let st = self.lock();
        st.open.get(&id).filter(|e| e.calls == 0).map(|e| e.idle_since)
    }

    fn closed(&self, id: u64) {
        let mut st = self.lock();
        if let Some(e) = st.open.remove(&id)
            && let Some(key) = e.idle_key
        {
            st.idle.remove(&key);
        }
        // A crowd of connections has gone: give their memory back.
        if st.peak >= 64 && st.open.len() <= st.peak / 4 {
            st.peak = st.open.len();
            drop(st);
            trim_heap();
        }
    }
}

/// Returns freed heap memory to the system. glibc keeps what thousands of
/// connections' buffers used in its arenas otherwise, and the daemon's RSS
/// would stay at its peak long after they closed.
pub(super) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One open connection; dropping it (when the connection ends) stops it
/// counting.
pub struct Conn {
    id: u64,
    conns: Arc<Conns>,
    close: Arc<Notify>,
}

impl Conn {
    /// Resolves when a newcomer has taken this connection's place.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }

    /// Marks a call open until the guard is dropped.
    pub fn call(&self) -> CallGuard {
        self.conns.call_started(self.id);
        CallGuard { id: self.id, conns: self.conns.clone() }
    }

    /// Since when the connection has had no call open; `None` while it has.
    pub fn idle_since(&self) -> Option<Instant> {
        self.conns.idle_since(self.id)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.closed(self.id);
    }
}

pub struct CallGuard {
    id: u64,
    conns: Arc<Conns>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.conns.call_ended(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_makes_room() {
        let conns = Conns::new(3);
        let a = conns.admit().unwrap();
        let b = conns.admit().unwrap();
        let c = conns.admit().unwrap();
        // `a` was idle first but has just been used: `b` is now idle longest.
        drop(a.call());
        let d = conns.admit().unwrap();
        assert_eq!(conns.open(), 3);
        tokio::time::timeout(std::time::Duration::from_secs(1), b.evicted()).await.expect("b is told to close");
        // A connection in a call is never taken.
        let _busy = (a.call(), c.call(), d.call());
        assert_eq!(conns.admit().err(), Some(Refused::AllBusy));
        drop(b);
        assert_eq!(conns.open(), 3, "b stopped counting when it was evicted");
    }

    #[tokio::test]
    async fn idle_means_no_call_open() {
        let conns = Conns::new(8);
        let a = conns.admit().unwrap();
        assert!(a.idle_since().is_some(), "a new connection is idle until its first call");
        let one = a.call();
        let two = a.call();
        assert_eq!(a.idle_since(), None);
        drop(one);
        assert_eq!(a.idle_since(), None, "one call is still open");
        drop(two);
        assert!(a.idle_since().is_some());
        drop(a);
        assert_eq!(conns.open(), 0);
    }
}
