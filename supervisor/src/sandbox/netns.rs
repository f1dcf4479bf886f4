//! Network namespaces made ahead of need. Creating one costs about 360 µs
//! on the reference host (the loopback device, the per-namespace sysctls),
//! a third of what a tier with its own network namespace adds to a spawn.
//! A maker thread keeps a few fresh, unused namespaces ready; a spawn takes
//! one and the child joins it with `setns` (microseconds), and the maker
//! replaces it in the background. Each namespace is given to exactly one
//! instance, so plugins stay as isolated from each other as with
//! `CLONE_NEWNET`; when none is ready, the spawn creates its own as before.
//!
//! Tearing a namespace down is dear too (the kernel's `cleanup_net`), and
//! when it runs during the next spawn, as in a restart loop, that spawn
//! pays about 150 µs of it. So the supervisor keeps its handle on each
//! namespace it handed out, which keeps the namespace alive after its
//! plugin exits, and lets go of them together once spawning has been quiet
//! for a second: one teardown pass for all, while nothing waits.
//!
//! The maker thread lives in the supervisor's process but only ever calls
//! `unshare(CLONE_NEWNET)` on itself and opens `/proc/thread-self/ns/net`:
//! namespaces are per thread, so the rest of the process is unaffected.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How many spare namespaces are kept: enough for the replicas of a plugin
/// starting together.
const SPARES: usize = 2;

#[derive(Debug, Default)]
struct State {
    spare: Vec<OwnedFd>,
    /// Handed out; closed together once spawning is quiet.
    retired: Vec<OwnedFd>,
    /// The maker thread runs (started with the first request).
    started: bool,
    /// Making namespaces failed (no privilege, no kernel support): spawns
    /// create their own, as they would without the pool.
    disabled: bool,
    /// The pool is dropped: the maker thread exits.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Spare network namespaces, each handed out once.
#[derive(Debug, Default)]
pub struct NetnsPool {
    shared: Arc<Shared>,
}

impl NetnsPool {
    /// A fresh namespace to join, if one is ready; asking also starts (or
    /// wakes) the maker, so the next spawn finds one.
    pub fn take(&self) -> Option<OwnedFd> {
        let mut st = self.shared.lock();
        if st.disabled {
            return None;
        }
        if !st.started {
            st.started = true;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new().name("netns-maker".into()).spawn(move || make_spares(&shared));
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "no thread to make network namespaces ahead of need");
                st.disabled = true;
            }
        }
        let fd = st.spare.pop();
        self.shared.wake.notify_all();
        fd
    }

    /// Gives back a namespace from [`NetnsPool::take`] once its plugin
    /// process has been started in it.
    pub fn retire(&self, fd: OwnedFd) {
        self.shared.lock().retired.push(fd);
        // The maker may be asleep with nothing to let go (its spares full):
        // it must learn of this one, or the namespace stays held until the
        // next spawn, however long that takes.
        self.shared.wake.notify_all();
    }

    /// Waits up to `timeout` until `n` spares are ready.
    #[cfg(test)]
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .wake
            .wait_timeout_while(st, timeout, |st| st.spare.len() < n.min(SPARES) && !st.disabled)
            .unwrap_or_else(|e| e.into_inner());
        st.spare.len() >= n.min(SPARES)
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// How long spawning must be quiet before retired namespaces are let go.
const QUIET: Duration = Duration::from_secs(1);

/// Retired namespaces are let go at the latest when this many are held,
/// so steady restarts cannot pile them up.
const MAX_RETIRED: usize = 32;

/// How long the maker waits after a failure it may recover from.
const RETRY: Duration = Duration::from_secs(5);

fn make_spares(shared: &Shared) {
    // The thread returns here after making each namespace, so no thread of
    // the supervisor stays inside one a plugin will be given.
    let home = match own_netns() {
        Ok(fd) => fd,
        Err(e) => return give_up(shared, &e),
    };
    let mut failures = 0u32;
    loop {
        let (retired, wanted) = {
            let st = shared.lock();
            let full = |st: &mut State| !st.closed && st.spare.len() >= SPARES;
            // Asleep until a spare is taken or one is retired; with
            // namespaces to let go, at most until spawning has been quiet
            // for QUIET.
            let (mut st, quiet) = if st.retired.is_empty() {
                let idle = |st: &mut State| full(st) && st.retired.is_empty();
                (shared.wake.wait_while(st, idle).unwrap_or_else(|e| e.into_inner()), false)
            } else {
                let (st, waited) = shared.wake.wait_timeout_while(st, QUIET, full).unwrap_or_else(|e| e.into_inner());
                (st, waited.timed_out())
            };
            if st.closed {
                return;
            }
            let retired =
                if quiet || st.retired.len() >= MAX_RETIRED { std::mem::take(&mut st.retired) } else { Vec::new() };
            (retired, st.spare.len() < SPARES)
        };
        // Closed without the lock, all at once.
        drop(retired);
        if !wanted {
            continue;
        }
        // Made without the lock: a spawn never waits for the kernel here.
        match make_one(&home) {
            Ok(fd) => {
                failures = 0;
                shared.lock().spare.push(fd);
                shared.wake.notify_all();
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::EINVAL | libc::ENOSYS)) => {
                return give_up(shared, &e);
            }
            Err(e) => {
                // Out of namespaces (`user.max_net_namespaces`), memory or
                // descriptors for now: what the pool holds counts against
                // those limits, so it goes, and spawns make their own until
                // a retry succeeds.
                let held = {
                    let mut st = shared.lock();
                    (std::mem::take(&mut st.spare), std::mem::take(&mut st.retired))
                };
                drop(held);
                if failures == 0 {
                    tracing::warn!(error = %e, retry_in = ?RETRY, "cannot make network namespaces ahead of need");
                }
                failures = failures.saturating_add(1);
                let st = shared.lock();
                let (st, _) =
                    shared.wake.wait_timeout_while(st, RETRY, |st| !st.closed).unwrap_or_else(|e| e.into_inner());
                if st.closed {
                    return;
                }
            }
        }
    }
}

/// Stops making namespaces for good (no privilege or no kernel support):
/// spawns create their own, as they would without the pool.
fn give_up(shared: &Shared, e: &io::Error) {
    tracing::warn!(error = %e, "not making network namespaces ahead of need; each spawn makes its own");
    let held = {
        let mut st = shared.lock();
        st.disabled = true;
        (std::mem::take(&mut st.spare), std::mem::take(&mut st.retired))
    };
    drop(held);
    shared.wake.notify_all();
}

/// A handle to this thread's network namespace.
fn own_netns() -> io::Result<OwnedFd> {
    // SAFETY: opening a proc file with a static, NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new network namespace; the calling thread ends where it started, `home`.
fn make_one(home: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: unshare affects only the calling thread, the maker, which
    // holds no other namespace-dependent state.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let made = own_netns();
    // SAFETY: setns on the calling thread with a namespace fd we own.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    made
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use super::*;

    /// The namespace `fd` names, as `/proc/PID/ns/net` shows it: `net:[INODE]`.
    fn name_of(fd: &OwnedFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().display().to_string()
    }

    /// The network namespaces this process's threads are in.
    fn threads_namespaces() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_link(t.ok()?.path().join("ns/net")).ok())
            .map(|l| l.display().to_string())
            .collect()
    }

    /// How many of this process's descriptors hold namespace `name`.
    fn holders(name: &str) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
            .filter(|l| l.display().to_string() == name)
            .count()
    }

    #[test]
    fn every_namespace_is_new_handed_out_once_and_no_thread_stays_in_it() {
        let home = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
        let pool = NetnsPool::default();
        let _ = pool.take(); // starts the maker
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)), "the maker fills the pool (needs root)");
        let mut seen = HashSet::new();
        for _ in 0..5 {
            assert!(pool.wait_ready(1, Duration::from_secs(10)));
            let fd = pool.take().expect("a spare is ready");
            let name = name_of(&fd);
            assert_ne!(name, home, "not the supervisor's namespace");
            assert!(seen.insert(name.clone()), "{name} handed out twice");
            assert!(!threads_namespaces().contains(&name), "a supervisor thread is inside {name}");
        }
    }

    #[test]
    fn retired_namespaces_are_let_go_once_spawning_is_quiet() {
        let pool = NetnsPool::default();
        let _ = pool.take();
        assert!(pool.wait_ready(1, Duration::from_secs(10)));
        let fd = pool.take().expect("a spare is ready");
        let name = name_of(&fd);
        let probe = fd.try_clone().unwrap();
        pool.retire(fd);
        assert_eq!(holders(&name), 2, "the pool holds it while spawns may follow");
        let deadline = Instant::now() + QUIET * 5;
        while holders(&name) > 1 {
            assert!(Instant::now() < deadline, "still held after a quiet {QUIET:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pool.shared.lock().retired.is_empty());
        assert_eq!(pool.shared.lock().spare.len(), SPARES, "quiet time makes no extra spares");
        drop(probe);
    }

    #[test]
    fn a_namespace_retired_while_the_maker_sleeps_with_full_spares_is_let_go() {
        // A spawn takes a spare and retires it only once its child has
        // joined; by then the maker has refilled and gone to sleep. Before
        // the fix, it slept until the next spawn and held the namespace.
        let pool = NetnsPool::default();
        let _ = pool.take();
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)));
        let fd = pool.take().expect("a spare is ready");
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)), "the maker refills");
        std::thread::sleep(Duration::from_millis(50)); // and goes back to sleep
        let name = name_of(&fd);
        let probe = fd.try_clone().unwrap();
        pool.retire(fd);
        let deadline = Instant::now() + QUIET * 5;
        while holders(&name) > 1 {
            assert!(Instant::now() < deadline, "{name} still held {:?} after its retirement", QUIET * 5);
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(probe);
    }

    #[test]
    fn a_dropped_pool_stops_its_maker() {
        let pool = NetnsPool::default();
        let _ = pool.take();
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)));
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the maker thread still holds the pool");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
