//! Owns process 1's duties when the daemon is started as process 1 (a container's
//! entrypoint): a parent that reaps every orphan and forwards signals to the daemon.
//!
//! This is the thin layer tini (`docker run --init`) would otherwise be, built in so that
//! the shipped image, DaemonSet and Nomad job need none. Orphans are re-parented to the
//! namespace's process 1: the daemon, had it stayed process 1, would keep every process a
//! plugin double-forked as a zombie once the teardown killed it (it reaps only its own
//! children, by pidfd), each holding a pid, and the zombie's uid in `/proc` would keep the
//! teardown from ever clearing that uid's files and IPC objects. So process 1 forks the
//! daemon and from then on only waits for signals: it reaps on SIGCHLD, forwards the rest
//! to the daemon, and exits with the daemon's status once the daemon is gone.
//!
//! Process 1 also leaves its cgroup for a leaf of its own (`plugin-supervisor-init`
//! beside the daemon's subtree): the daemon moves itself out of the container's cgroup so
//! that cgroup can enable controllers for the subtree (cgroup v2's no-internal-processes
//! rule), which a process 1 staying there would prevent.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, read};

/// The leaf, beside the daemon's subtree, process 1 moves into.
pub const LEAF: &str = "plugin-supervisor-init";

/// Signals whose default action the kernel takes on the thread that caused them: blocked,
/// they would not reach process 1's handler-less wait but kill it or hang it.
const SYNCHRONOUS: [Signal; 7] =
    [Signal::SIGSEGV, Signal::SIGBUS, Signal::SIGILL, Signal::SIGFPE, Signal::SIGTRAP, Signal::SIGABRT, Signal::SIGSYS];

/// Why process 1 could not set the daemon up beneath itself (the daemon then does not start:
/// run without its init, its orphans would pile up as zombies again).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("process 1 cannot block the signals it forwards: {0}")]
    Block(#[source] Errno),
    #[error("process 1 cannot open the pipe that holds the daemon until process 1 has left its cgroup: {0}")]
    Pipe(#[source] Errno),
    #[error("process 1 cannot fork the daemon: {0}")]
    Fork(#[source] Errno),
    #[error("the daemon cannot restore its signal mask: {0}")]
    Unblock(#[source] Errno),
}

/// What this process is after [`take_pid1`].
#[derive(Debug)]
pub enum Role {
    /// The daemon: not process 1, or its forked child; runs the daemon as ever, releasing
    /// [`Held`] once its own signal handlers are in.
    Daemon(Held),
    /// Process 1, the daemon forked: [`Init::run`] until the daemon ends.
    Init(Init),
}

/// The signals process 1 blocked, still blocked in the daemon it forked: one forwarded
/// before the daemon has its handlers in then waits for them rather than taking its
/// default action (a SIGTERM would kill the daemon half started, not stop it cleanly).
#[derive(Debug)]
#[must_use = "the daemon's signals stay blocked until released"]
pub struct Held(Option<SigSet>);

impl Held {
    /// Restores the signal mask the process was started with.
    pub fn release(self) -> Result<(), InitError> {
        match self.0 {
            Some(before) => before.thread_set_mask().map_err(InitError::Unblock),
            None => Ok(()),
        }
    }
}

/// Process 1 with the daemon forked and held until [`Init::run`] releases it.
#[derive(Debug)]
pub struct Init {
    daemon: Pid,
    waited: SigSet,
    /// Closed once process 1 has left its cgroup: the daemon reads end of file and goes on.
    release: OwnedFd,
}

/// When this process is process 1, forks the daemon off: in the child, returns
/// [`Role::Daemon`] (its signals still blocked) once the parent is out of the cgroup the
/// daemon will build beneath; in the parent, [`Role::Init`]. Elsewhere returns
/// [`Role::Daemon`] and does nothing.
///
/// # Safety
///
/// Call it before any thread exists: the fork copies only the calling thread (a lock
/// another thread held would stay held in the child for good), and the signal mask set
/// here is the calling thread's, which threads started later inherit.
pub unsafe fn take_pid1() -> Result<Role, InitError> {
    if getpid().as_raw() != 1 {
        return Ok(Role::Daemon(Held(None)));
    }
    let waited = forwarded();
    // An ignored SIGCHLD, inherited through exec, would have the kernel reap every child
    // itself: the daemon's status never seen, process 1 would never end.
    // SAFETY: SIG_DFL installs no handler; one thread, nothing else watches SIGCHLD yet.
    unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }
        .map_err(InitError::Block)?;
    // Blocked before the fork, so that no signal sent between the fork and the wait is
    // lost to the default action (which for process 1 is to ignore it).
    let before = waited.thread_swap_mask(SigmaskHow::SIG_BLOCK).map_err(InitError::Block)?;
    let (held, release) = pipe().map_err(InitError::Pipe)?;
    // SAFETY: the caller guarantees this process has one thread, so the child is a full
    // copy with no lock held by a thread that does not exist in it.
    match unsafe { fork() }.map_err(InitError::Fork)? {
        ForkResult::Child => {
            drop(release);
            // A process group of its own: a terminal's Ctrl-C (or Ctrl-Z) goes to its
            // foreground group, process 1's, and reaches the daemon once, forwarded, not
            // also straight from the terminal (a second stop signal hurries the stop).
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            // Wait for end of file: the parent closes its end once it has left its cgroup
            // (or gave up), and the daemon's cgroup setup must not begin before.
            let mut byte = [0u8; 1];
            while matches!(read(&held, &mut byte), Err(Errno::EINTR) | Ok(1..)) {}
            drop(held);
            Ok(Role::Daemon(Held(Some(before))))
        }
        ForkResult::Parent { child } => {
            drop(held);
            Ok(Role::Init(Init { daemon: child, waited, release }))
        }
    }
}

/// Whether process 1 passes `sig` on: only what the daemon has a handler for.
fn forwards(sig: Signal) -> bool {
    crate::daemon::HANDLED_SIGNALS.contains(&(sig as i32))
}

/// Every signal process 1 waits for: all that can be caught except those only a faulting
/// thread gets; SIGCHLD among them.
fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) && !SYNCHRONOUS.contains(&sig) {
            set.add(sig);
        }
    }
    set
}

impl Init {
    /// Leaves the cgroup, releases the daemon, then reaps and forwards until the daemon
    /// ends; returns the exit code process 1 exits with: the daemon's, or 128 plus the
    /// signal that killed it.
    pub fn run(self) -> u8 {
        let Init { daemon, waited, release } = self;
        let moved = leave_cgroup();
        drop(release);
        let code = loop {
            let sig = match waited.wait() {
                Ok(sig) => sig,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Only an invalid set fails; the set is fixed, so this does not repeat
                    // in practice, but process 1 must not end while the daemon runs.
                    tracing::error!(error = %e, "process 1 cannot wait for signals");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
            };
            if sig == Signal::SIGCHLD {
                if let Some(code) = reap(daemon) {
                    break code;
                }
            } else if !forwards(sig) {
                // What the daemon has no handler for would take its default action there
                // (end it undrained, or stop it), where process 1 is spared it: dropped, as
                // the kernel drops it for a process 1 without a handler.
                tracing::debug!(signal = %sig, "process 1 drops a signal the daemon does not handle");
            } else if let Err(e) = kill(daemon, sig) {
                tracing::warn!(signal = %sig, error = %e, "process 1 could not forward a signal to the daemon");
            }
        };
        if let Some(moved) = moved {
            moved.go_back();
        }
        code
    }
}

/// Reaps every child that has ended, the daemon's orphans and the daemon alike; the
/// daemon's exit code once it is among them.
fn reap(daemon: Pid) -> Option<u8> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if pid == daemon => code = Some(status as u8),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == daemon => code = Some(128u8.wrapping_add(sig as u8)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return code,
            Err(Errno::EINTR) | Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "process 1 cannot reap");
                return code;
            }
        }
    }
}

/// Process 1's move out of the cgroup it was started in.
struct Moved {
    origin: PathBuf,
    leaf: PathBuf,
}

/// Moves process 1 into [`LEAF`] beneath the cgroup (unified hierarchy) it is in. Nothing
/// without a unified hierarchy; a failure is logged and the daemon runs on (it says
/// itself whether its subtree can be built).
fn leave_cgroup() -> Option<Moved> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let origin = crate::sandbox::cgroup::unified_dir(&mountinfo, &cgroup)?;
    let leaf = origin.join(LEAF);
    let moved = match std::fs::create_dir(&leaf) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => std::fs::write(leaf.join("cgroup.procs"), "0"),
    };
    match moved {
        Ok(()) => Some(Moved { origin, leaf }),
        Err(e) => {
            tracing::warn!(
                leaf = %leaf.display(), error = %e,
                "process 1 cannot leave its cgroup; the daemon's cgroup may be unable to enable controllers"
            );
            let _ = std::fs::remove_dir(&leaf);
            None
        }
    }
}

impl Moved {
    /// Back where it was started, its leaf removed: best effort, as the container's cgroup
    /// goes with the container anyway, and another process 1 may share the leaf.
    fn go_back(self) {
        if let Err(e) = std::fs::write(self.origin.join("cgroup.procs"), "0") {
            tracing::debug!(origin = %self.origin.display(), error = %e, "process 1 stays in its leaf");
            return;
        }
        if let Err(e) = std::fs::remove_dir(&self.leaf) {
            tracing::debug!(leaf = %self.leaf.display(), error = %e, "process 1's leaf stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_1_waits_for_sigchld_and_every_stop_signal_but_not_for_faults() {
        let set = forwarded();
        for sig in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGPWR,
        ] {
            assert!(set.contains(sig), "{sig}");
        }
        for sig in SYNCHRONOUS.into_iter().chain([Signal::SIGKILL, Signal::SIGSTOP]) {
            assert!(!set.contains(sig), "{sig}");
        }
    }

    /// Waited for, but passed on only when the daemon acts on it.
    #[test]
    fn process_1_forwards_the_stop_and_reload_signals_and_drops_the_rest() {
        for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            assert!(forwards(sig), "{sig}");
        }
        for sig in [Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGPWR]
        {
            assert!(!forwards(sig), "{sig}");
        }
    }
}
