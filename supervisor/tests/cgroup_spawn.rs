//! A child is in every leaf of its instance before it executes anything: spawned through
//! clone3(CLONE_INTO_CGROUP) (and through the fork fallback), it blocks on a pipe before
//! exec while the parent reads `/proc/<pid>/cgroup`, then is released to exec /bin/sleep.

#[path = "cgroup_common/mod.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{
    Guard, cgroup_path_of_dir, cgroup_paths_of, cstring, pipe, poll_until, read_byte, spawn_into, wait, write_byte,
};
use plugin_supervisor::sandbox::cgroup::{ForkMode, JoinPath, Limits};

fn joins_before_exec(mode: ForkMode) -> JoinPath {
    let guard = Guard::new(false);
    let inst =
        guard.subtree().create_instance("spawn", "0", &Limits { pids_max: Some(16), ..Limits::default() }).unwrap();
    let expected: Vec<_> = inst.cgroups().dirs().map(|(_, d)| cgroup_path_of_dir(&guard.layout, d)).collect();

    let sleep = cstring("/bin/sleep");
    let arg = cstring("30");
    let argv = [sleep.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let (gate_r, gate_w) = pipe();
    let child = spawn_into(&inst, mode, || {
        if read_byte(&gate_r) == Some(b'x') {
            // SAFETY: argv is a NULL-terminated array of C strings built before the fork;
            // execv is async-signal-safe.
            unsafe { libc::execv(argv[0], argv.as_ptr()) };
        }
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(127) };
    });
    drop(gate_r);

    let me = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(std::fs::read_link(format!("/proc/{}/exe", child.pid)).unwrap(), me, "not exec'd yet");
    assert_eq!(cgroup_paths_of(child.pid, &guard.layout), expected, "in every leaf before exec");
    assert_eq!(inst.procs().unwrap(), vec![u32::try_from(child.pid).unwrap()]);
    assert!(inst.populated().unwrap());

    write_byte(&gate_w, b'x');
    poll_until("exec of /bin/sleep", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/comm", child.pid)).is_ok_and(|c| c.trim() == "sleep")
    });
    assert_eq!(cgroup_paths_of(child.pid, &guard.layout), expected, "still there after exec");
    assert!(child.pidfd.as_ref().is_some_and(|fd| fd.as_raw_fd() >= 0), "pidfd on kernels since 5.3");

    inst.kill().unwrap();
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    common::remove_instance(&inst);
    child.path
}

#[test]
fn clone3_into_cgroup_joins_before_exec() {
    let path = joins_before_exec(ForkMode::Auto);
    assert_eq!(path, JoinPath::CloneIntoCgroup, "kernel 5.7+ with a unified hierarchy");
}

#[test]
fn fork_fallback_joins_before_exec() {
    assert_eq!(joins_before_exec(ForkMode::Fork), JoinPath::ForkThenWrite);
}

#[test]
fn raw_clone3_wrapper_returns_pid_and_pidfd() {
    let guard = Guard::new(false);
    let inst = guard.subtree().create_instance("raw", "0", &Limits::default()).unwrap();
    let join = inst.join_fds().unwrap();
    let dir = join.cgroup_dir().expect("unified leaf");
    // SAFETY: the child only calls _exit.
    match unsafe { plugin_supervisor::sandbox::cgroup::clone_into_cgroup(dir) }.unwrap() {
        plugin_supervisor::sandbox::cgroup::Forked::Child => {
            // SAFETY: async-signal-safe exit with a recognisable code.
            unsafe { libc::_exit(42) }
        }
        plugin_supervisor::sandbox::cgroup::Forked::Parent { pid, pidfd } => {
            let pidfd = pidfd.expect("CLONE_PIDFD fills the pidfd");
            let mut info: libc::siginfo_t = unsafe_zeroed();
            // SAFETY: waitid writes into a live siginfo_t; P_PIDFD takes the pidfd as id.
            let rc = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            // SAFETY: WEXITED filled si_pid and si_status of a CLD_EXITED siginfo.
            let (si_pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            assert_eq!((si_pid, status), (pid, 42));
        }
    }
    common::remove_instance(&inst);
}

fn unsafe_zeroed() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}
