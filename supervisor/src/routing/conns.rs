//! The gateway's connections: how many may be open at once (checked
//! against the descriptor limit before the daemon starts), and which one
//! goes when a caller arrives at the limit. Refusing newcomers would let an
//! attacker lock real callers out, so a newcomer is always taken: the
//! connection idle longest (no call open) that never carried a call makes
//! room, else the one idle longest, or, when every one has a call open, the
//! one busy longest (its oldest open call began first), which a flood of
//! fresh connections cannot be.
//!
//! Connections that never carried a call go first because a caller's next
//! call is idle here until its connection's task takes it: in a flood of
//! connections, thousands of them, each with its handshake, may be
//! admitted before that task runs, and the caller calling all along would
//! have been closed for idleness with its call on the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::quiet::Quiet;
use crate::config::gateway::GatewaySection;

/// Below this many connections the gateway would be a lock-out waiting to
/// happen; the daemon refuses to start instead.
pub const MIN_CONNECTIONS: usize = 16;
/// How often connections closed to make room are reported.
const EVICTIONS_SAID_EVERY: Duration = Duration::from_secs(10);

/// The descriptor limit less `fd_reserve` leaves too few connections.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "[supervisor.gateway] fd_reserve = {fd_reserve} leaves the gateway {room} of the daemon's {nofile} descriptors \
     (RLIMIT_NOFILE), fewer than the {least} connections it needs (max_connections = {max_connections}): \
     lower fd_reserve or raise the descriptor limit"
)]
pub struct TooFewDescriptors {
    pub fd_reserve: u64,
    pub nofile: u64,
    pub room: u64,
    pub least: usize,
    pub max_connections: usize,
}

/// `max_connections`, or fewer when the descriptor limit `nofile` less the
/// reserve cannot hold that many; an error when that leaves fewer than
/// [`MIN_CONNECTIONS`] (or `max_connections`, if smaller).
pub fn connection_budget(limits: &GatewaySection, nofile: u64) -> Result<usize, TooFewDescriptors> {
    let room = nofile.saturating_sub(limits.fd_reserve);
    let least = MIN_CONNECTIONS.min(limits.max_connections);
    let budget = usize::try_from(room).unwrap_or(usize::MAX).min(limits.max_connections);
    if budget < least {
        return Err(TooFewDescriptors {
            fd_reserve: limits.fd_reserve,
            nofile,
            room,
            least,
            max_connections: limits.max_connections,
        });
    }
    if budget < limits.max_connections {
        tracing::warn!(
            nofile,
            fd_reserve = limits.fd_reserve,
            max_connections = limits.max_connections,
            connections = budget,
            "the descriptor limit less fd_reserve leaves the gateway fewer connections than max_connections"
        );
    }
    Ok(budget)
}

/// Every open connection, by id, the idle ones in the order they became
/// idle, the busy ones in the order their oldest open call began.
pub struct Conns {
    limit: usize,
    state: Mutex<State>,
    said: Quiet,
}

#[derive(Default)]
struct State {
    /// Orders idleness and calls; never reused.
    next: u64,
    open: HashMap<u64, Entry>,
    /// Idle order → connection, for those that never carried a call; the first is the one
    /// idle longest.
    fresh: BTreeMap<u64, u64>,
    /// The same, for those that have.
    idle: BTreeMap<u64, u64>,
    /// Its oldest open call → connection; the first is the one busy longest.
    busy: BTreeMap<u64, u64>,
    /// The most open at once since memory was last given back.
    peak: usize,
    /// Connections closed to make room since that was last said, and how
    /// many of them had a call open.
    evicted: (u64, u64),
}

struct Entry {
    /// Its open calls, in the order they began.
    calls: BTreeSet<u64>,
    /// Its key in `fresh` (before its first call) or `idle`, while it has no call open.
    idle_key: Option<u64>,
    /// It has carried a call.
    used: bool,
    idle_since: Instant,
    close: Arc<Notify>,
}

impl State {
    fn key(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Takes the connection idle longest (one that never carried a call first), or else the
    /// one busy longest, out.
    fn evict(&mut self) -> Option<(Entry, bool)> {
        let (id, busy) = match self.fresh.pop_first().or_else(|| self.idle.pop_first()) {
            Some((_, id)) => (id, false),
            None => (self.busy.pop_first()?.1, true),
        };
        self.open.remove(&id).map(|e| (e, busy))
    }

    /// The idle connections `e` is (or would be) among.
    fn idle_of(&mut self, used: bool) -> &mut BTreeMap<u64, u64> {
        if used { &mut self.idle } else { &mut self.fresh }
    }
}

impl Conns {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, state: Mutex::new(State::default()), said: Quiet::new(EVICTIONS_SAID_EVERY) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a new connection. At the limit, the connection idle longest,
    /// or with none idle the one busy longest, is told to close and stops
    /// counting at once.
    pub fn admit(self: &Arc<Self>) -> Conn {
        let mut st = self.lock();
        let mut evicted = None;
        if st.open.len() >= self.limit
            && let Some((e, busy)) = st.evict()
        {
            e.close.notify_one();
            st.evicted.0 += 1;
            st.evicted.1 += u64::from(busy);
            evicted = Some(busy);
        }
        let (id, key) = (st.key(), st.key());
        let close = Arc::new(Notify::new());
        st.open.insert(
            id,
            Entry {
                calls: BTreeSet::new(),
                idle_key: Some(key),
                used: false,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        st.fresh.insert(key, id);
        st.peak = st.peak.max(st.open.len());
        if evicted.is_some() && self.said.due().is_some() {
            let (closed, busy) = std::mem::take(&mut st.evicted);
            drop(st);
            tracing::warn!(
                max_connections = self.limit,
                closed,
                busy,
                "the gateway is at max_connections: closed the connections idle longest (with none idle, busy \
                 longest) to make room for new callers"
            );
        }
        Conn { id, conns: self.clone(), close }
    }

    /// Whether the next connection takes an open one's place.
    pub fn full(&self) -> bool {
        self.lock().open.len() >= self.limit
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn call_started(&self, id: u64) -> u64 {
        let mut st = self.lock();
        let key = st.key();
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return key };
        e.calls.insert(key);
        if let Some(idle) = e.idle_key.take() {
            let used = std::mem::replace(&mut e.used, true);
            st.idle_of(used).remove(&idle);
            st.busy.insert(key, id);
        }
        key
    }

    fn call_ended(&self, id: u64, call: u64) {
        let mut st = self.lock();
        let idle = st.key();
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        let was_oldest = e.calls.first() == Some(&call);
        e.calls.remove(&call);
        if !was_oldest {
            return;
        }
        st.busy.remove(&call);
        match e.calls.first() {
            Some(&oldest) => {
                st.busy.insert(oldest, id);
            }
            None => {
                e.idle_key = Some(idle);
                e.idle_since = Instant::now();
                st.idle.insert(idle, id);
            }
        }
    }

    fn idle_since(&self, id: u64) -> Option<Instant> {
        let st = self.lock();
        st.open.get(&id).filter(|e| e.calls.is_empty()).map(|e| e.idle_since)
    }

    fn closed(&self, id: u64) {
        let mut st = self.lock();
        if let Some(e) = st.open.remove(&id) {
            if let Some(key) = e.idle_key {
                st.idle_of(e.used).remove(&key);
            }
            if let Some(oldest) = e.calls.first() {
                st.busy.remove(oldest);
            }
        }
        // A crowd of connections has gone: give their memory back.
        if st.peak >= 64 && st.open.len() <= st.peak / 4 {
            st.peak = st.open.len();
            drop(st);
            super::trim::crowd_gone();
        }
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
        let call = self.conns.call_started(self.id);
        CallGuard { id: self.id, call, conns: self.conns.clone() }
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
    call: u64,
    conns: Arc<Conns>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.conns.call_ended(self.id, self.call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn told_to_close(c: &Conn) -> bool {
        tokio::time::timeout(Duration::from_millis(100), c.evicted()).await.is_ok()
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_makes_room() {
        let conns = Conns::new(3);
        let a = conns.admit();
        let b = conns.admit();
        let c = conns.admit();
        // `a` was idle first but has just been used: `b` is now idle longest.
        drop(a.call());
        let d = conns.admit();
        assert_eq!(conns.open(), 3);
        assert!(told_to_close(&b).await, "b is told to close");
        // While one is idle, no busy connection is taken.
        let _busy = (a.call(), d.call());
        let _e = conns.admit();
        assert!(told_to_close(&c).await, "c, idle, makes room");
        assert!(!told_to_close(&a).await && !told_to_close(&d).await);
        drop(b);
        assert_eq!(conns.open(), 3, "b stopped counting when it was evicted");
    }

    #[tokio::test]
    async fn a_connection_that_never_carried_a_call_makes_room_before_one_that_has() {
        // `a` has carried calls and is between two of them, idle since before `b` and `c`
        // came: a flood of fresh connections takes each other's places, not the caller's.
        let conns = Conns::new(3);
        let a = conns.admit();
        drop(a.call());
        let (b, c) = (conns.admit(), conns.admit());
        let _d = conns.admit();
        assert!(told_to_close(&b).await, "b, fresh and idle longest among the fresh, makes room");
        assert!(!told_to_close(&a).await);
        let _e = conns.admit();
        assert!(told_to_close(&c).await);
        assert!(!told_to_close(&a).await, "a goes only once no fresh connection is left");
        drop((b, c));
    }

    #[tokio::test]
    async fn with_every_connection_busy_the_one_busy_longest_makes_room() {
        let conns = Conns::new(3);
        let (a, b, c) = (conns.admit(), conns.admit(), conns.admit());
        let b1 = b.call();
        let a1 = a.call();
        let c1 = c.call();
        // b's first call ends, but a later one is still open: b is now busy
        // since after a.
        let b2 = b.call();
        drop(b1);
        let d = conns.admit();
        assert!(told_to_close(&a).await, "a's open call began first");
        assert!(!told_to_close(&b).await && !told_to_close(&c).await);
        assert_eq!(conns.open(), 3, "a newcomer is never refused");
        let _d1 = d.call();
        let _e = conns.admit();
        assert!(told_to_close(&c).await, "c's call began before b's open one");
        assert!(!told_to_close(&b).await);
        drop((a1, c1, b2));
    }

    #[tokio::test]
    async fn idle_means_no_call_open() {
        let conns = Conns::new(8);
        let a = conns.admit();
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

    fn section(max_connections: usize, fd_reserve: u64) -> GatewaySection {
        GatewaySection { max_connections, fd_reserve, ..GatewaySection::default() }
    }

    #[test]
    fn the_descriptor_limit_less_the_reserve_bounds_connections_and_too_little_refuses() {
        assert_eq!(connection_budget(&section(1024, 1024), 1 << 20), Ok(1024));
        assert_eq!(connection_budget(&section(1024, 1024), 2048), Ok(1024));
        assert_eq!(connection_budget(&section(1024, 1024), 1500), Ok(476));
        assert_eq!(connection_budget(&section(8, 1024), 1030), Err(too_few(8)));
        let err = connection_budget(&section(1024, 1090), 1100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[supervisor.gateway] fd_reserve = 1090 leaves the gateway 10 of the daemon's 1100 descriptors \
             (RLIMIT_NOFILE), fewer than the 16 connections it needs (max_connections = 1024): lower fd_reserve or \
             raise the descriptor limit"
        );
        assert_eq!(connection_budget(&section(1024, 4096), 1024).unwrap_err().room, 0);
        // A small max_connections is the operator's word, if the descriptors hold it.
        assert_eq!(connection_budget(&section(4, 1024), 1030), Ok(4));
    }

    fn too_few(max_connections: usize) -> TooFewDescriptors {
        TooFewDescriptors { fd_reserve: 1024, nofile: 1030, room: 6, least: 8, max_connections }
    }
}
