//! Killing a whole instance on the real kernel: a child that double-forked and called setsid
//! leaves nothing behind, with `cgroup.kill` and with the freeze-and-signal fallback; and the
//! start-up sweep cleans what a "crashed" run left.

#[path = "cgroup_common/mod.rs"]
mod common;

use std::os::fd::RawFd;
use std::time::Duration;

use common::{
    Guard, is_dead, pause_forever, pipe, poll_until, raw_fork, read_byte_bounded, spawn_into, wait, write_byte,
};
use plugin_supervisor::sandbox::cgroup::{ForkMode, KillStrategy, Limits};

/// Spawns a child whose grandchild calls setsid and forks again, then both exit: only the
/// great-grandchild remains, reparented away from us, found only through the cgroup.
fn escapee(inst: &plugin_supervisor::sandbox::cgroup::Instance, close: &[RawFd]) -> u32 {
    let (ready_r, ready_w) = pipe();
    let child = spawn_into(inst, ForkMode::Auto, || {
        close_fds(close);
        if raw_fork() == 0 {
            // SAFETY: setsid(2) takes no arguments; async-signal-safe.
            unsafe { libc::setsid() };
            if raw_fork() == 0 {
                write_byte(&ready_w, b'e');
                pause_forever();
            }
        }
    });
    drop(ready_w);
    assert_eq!(read_byte_bounded(&ready_r), Some(b'e'), "the escapee is running");
    assert_eq!(libc::WEXITSTATUS(wait(child.pid)), 0);
    let mut left = Vec::new();
    poll_until("only the escapee left", Duration::from_secs(5), || {
        left = inst.procs().unwrap();
        left.len() == 1
    });
    let pid = left[0];
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // SAFETY: getsid(0) only queries this process.
    let our_session = unsafe { libc::getsid(0) };
    assert_ne!(fields[3], our_session.to_string(), "escapee left our session (setsid)");
    assert_ne!(fields[1], std::process::id().to_string(), "escapee is not our child");
    pid
}

fn kill_escapee(strategy: KillStrategy) {
    let guard = Guard::new(false);
    let inst = guard.subtree().create_instance("escape", "0", &Limits::default()).unwrap();
    let pid = escapee(&inst, &[]);
    inst.kill_with(strategy).unwrap();
    poll_until("cgroup empty", Duration::from_secs(5), || !inst.populated().unwrap());
    assert!(inst.procs().unwrap().is_empty());
    poll_until("escapee dead", Duration::from_secs(5), || is_dead(pid));
    common::remove_instance(&inst);
}

#[test]
fn cgroup_kill_leaves_nothing_behind() {
    kill_escapee(KillStrategy::Auto);
}

#[test]
fn freeze_and_signal_leaves_nothing_behind() {
    kill_escapee(KillStrategy::FreezeAndSignal);
}

/// Closes `fds` in a forked child (async-signal-safe).
fn close_fds(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: closing a descriptor number in a forked child; close is async-signal-safe.
        unsafe { libc::close(fd) };
    }
}

/// The descriptors of this process that hold the subtree's locks (open on its roots).
fn lock_fds(guard: &Guard) -> Vec<RawFd> {
    let roots = guard.roots();
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| roots.contains(&t)))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(fds.len(), roots.len(), "one lock per root");
    fds
}

#[test]
fn start_up_sweep_cleans_a_crashed_run() {
    let mut guard = Guard::new(false);
    let inst =
        guard.subtree().create_instance("crash", "0", &Limits { pids_max: Some(8), ..Limits::default() }).unwrap();
    // Plugins never hold the supervisor's descriptors (they exec with all but 0-4 closed);
    // these stand-ins, forked without exec, let go of the subtree's locks the same way, so
    // that the crash below leaves them to the next start.
    let locks = lock_fds(&guard);
    let escaped = escapee(&inst, &locks);
    let child = spawn_into(&inst, ForkMode::Auto, || {
        close_fds(&locks);
        pause_forever()
    });
    let roots = guard.roots();
    // The crash: the handles vanish without teardown.
    drop(guard.subtree.take());
    common::remove_stale(&guard.layout, &guard.config).expect("the sweep");
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    poll_until("escapee dead", Duration::from_secs(5), || is_dead(escaped));
    for r in roots {
        assert!(!r.exists(), "{} left behind", r.display());
    }
}
