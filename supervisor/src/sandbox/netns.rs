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

fn make_spares(shared: &Shared) {
    loop {
        let (retired, wanted) = {
            let st = shared.lock();
            let (mut st, waited) = shared
                .wake
                .wait_timeout_while(st, QUIET, |st| !st.closed && st.spare.len() >= SPARES)
                .unwrap_or_else(|e| e.into_inner());
            if st.closed {
                return;
            }
            let retired = if waited.timed_out() || st.retired.len() >= MAX_RETIRED {
                std::mem::take(&mut st.retired)
            } else {
                Vec::new()
            };
            (retired, st.spare.len() < SPARES)
        };
        // Closed without the lock, all at once.
        drop(retired);
        if !wanted {
            continue;
        }
        // Made without the lock: a spawn never waits for the kernel here.
        let made = make_one();
        let mut st = shared.lock();
        match made {
            Ok(fd) => st.spare.push(fd),
            Err(e) => {
                tracing::debug!(error = %e, "cannot make network namespaces ahead of need; spawns make their own");
                st.disabled = true;
                shared.wake.notify_all();
                return;
            }
        }
        shared.wake.notify_all();
    }
}

/// Moves this thread into a new network namespace and returns a handle to it.
fn make_one() -> io::Result<OwnedFd> {
    // SAFETY: unshare affects only the calling thread, the maker, which
    // holds no other namespace-dependent state.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: opening a proc file with a static, NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The namespace's identity (its inode), as `/proc/PID/ns/net` shows it.
pub fn inode(fd: &OwnedFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes into the buffer we pass for a descriptor we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the structure.
    Ok(unsafe { st.assume_init() }.st_ino)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    fn own_netns() -> u64 {
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        let text = link.to_string_lossy();
        text.trim_start_matches("net:[").trim_end_matches(']').parse().unwrap()
    }

    #[test]
    fn every_namespace_is_new_and_handed_out_once() {
        let pool = NetnsPool::default();
        let _ = pool.take(); // starts the maker
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)), "the maker fills the pool (needs root)");
        let mut seen = HashSet::new();
        for _ in 0..5 {
            assert!(pool.wait_ready(1, Duration::from_secs(10)));
            let fd = pool.take().expect("a spare is ready");
            let ino = inode(&fd).unwrap();
            assert_ne!(ino, own_netns(), "not the supervisor's namespace");
            assert!(seen.insert(ino), "namespace {ino} handed out twice");
        }
        assert_eq!(own_netns(), own_netns(), "this thread never moved");
    }

    #[test]
    fn retired_namespaces_are_let_go_once_spawning_is_quiet() {
        let pool = NetnsPool::default();
        let _ = pool.take();
        assert!(pool.wait_ready(1, Duration::from_secs(10)));
        let fd = pool.take().expect("a spare is ready");
        let probe = fd.try_clone().unwrap();
        pool.retire(fd);
        assert_eq!(pool.shared.lock().retired.len(), 1, "held while spawns may follow");
        let deadline = std::time::Instant::now() + QUIET * 5;
        while !pool.shared.lock().retired.is_empty() {
            assert!(std::time::Instant::now() < deadline, "still held after a quiet {QUIET:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pool.shared.lock().spare.len() <= SPARES, "quiet time makes no extra spares");
        // Our own copy still names the namespace: letting go only closed the pool's.
        assert!(inode(&probe).is_ok());
    }

    #[test]
    fn a_dropped_pool_stops_its_maker() {
        let pool = NetnsPool::default();
        let _ = pool.take();
        assert!(pool.wait_ready(SPARES, Duration::from_secs(10)));
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(std::time::Instant::now() < deadline, "the maker thread still holds the pool");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
