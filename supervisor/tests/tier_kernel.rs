//! The compiled tiers in the kernel: a forked child installs one (after
//! no-new-privs, with a listener sent back over a socket, as at spawn),
//! makes one call, and the stand-in supervisor reports how it ended.

#[path = "tier_support/mod.rs"]
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use plugin_supervisor::sandbox::tier::{
    ARCH_KILL_REPORT, CompiledFilter, Delivery, Tier, TierSet, Verdict, X32_SYSCALL_BIT,
};
use support::child::{Ended, Plan, Work, spawn};
use support::notify::Supervisor;
use support::{policies_dir, report};

const TIMEOUT: Duration = Duration::from_secs(20);

fn tier(name: &str) -> &'static Tier {
    static SET: OnceLock<TierSet> = OnceLock::new();
    SET.get_or_init(|| TierSet::load_dir(&policies_dir()).expect("shipped policies load"))
        .get(name)
        .expect("shipped tier")
}

/// Runs `call` in a child under `tier`'s notifying filter; returns how it
/// ended, what the supervisor decided, and the report.
fn run_notified(tier: &Tier, call: fn() -> i32) -> (Ended, Vec<plugin_supervisor::sandbox::tier::Violation>, String) {
    let plan = Plan {
        filter: &tier.program,
        listener: true,
        nofile: tier.limits.nofile,
        unshare: 0,
        fds: Vec::new(),
        work: Work::Call(call),
    };
    let (mut child, listener) = spawn(plan).expect("child starts");
    let supervisor = Supervisor::start(listener.expect("listener sent"), child.pid, tier.violation);
    let ended = child.wait(TIMEOUT).expect("child ends");
    let seen = supervisor.finish();
    let words = report(ended, &seen);
    (ended, seen, words)
}

/// Runs `call` in a child under `filter` alone, without a listener.
fn run_direct(filter: &CompiledFilter, call: fn() -> i32) -> Ended {
    let plan = Plan { filter, listener: false, nofile: 64, unshare: 0, fds: Vec::new(), work: Work::Call(call) };
    let (mut child, _) = spawn(plan).expect("child starts");
    child.wait(TIMEOUT).expect("child ends")
}

/// Exit code 0 when the last call failed with `errno`, else 1.
fn failed_with(rc: libc::c_long, errno: i32) -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    let actual = unsafe { *libc::__errno_location() };
    i32::from(!(rc < 0 && actual == errno))
}

fn socket_unix() -> i32 {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    i32::from(fd < 0)
}

fn unshare_user_namespace() -> i32 {
    // SAFETY: unshare(2) takes no pointers.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    failed_with(rc.into(), libc::EPERM)
}

fn x32_getpid() -> i32 {
    // SAFETY: getpid takes no arguments, whatever the entry point.
    let rc = unsafe { libc::syscall(libc::c_long::from(X32_SYSCALL_BIT) | libc::SYS_getpid) };
    failed_with(rc, libc::EPERM)
}

fn clone3_null() -> i32 {
    // SAFETY: with a NULL struct clone3 creates nothing; unfiltered it
    // would fail with EFAULT or EINVAL, filtered with ENOSYS.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    failed_with(rc, libc::ENOSYS)
}

fn int80_getpid() -> i32 {
    let mut eax: u32 = 20; // getpid in the i386 table
    // SAFETY: a 32-bit getpid through int 0x80 reads no memory; the
    // architecture check kills the process before it runs.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("eax") eax,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        )
    };
    i32::from(eax > 0x7fff_ffff)
}

fn mmap_rwx() -> i32 {
    // SAFETY: an anonymous mapping with no address hint.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    i32::from(addr == libc::MAP_FAILED)
}

#[test]
fn l2_socket_kills_the_instance_and_names_the_syscall() {
    let (ended, seen, words) = run_notified(tier("L2"), socket_unix);
    assert_eq!(ended, Ended::Signaled(libc::SIGKILL));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(words, "killed: seccomp violation (syscall socket)");
}

#[test]
fn l1_socket_is_allowed() {
    let (ended, seen, _) = run_notified(tier("L1"), socket_unix);
    assert_eq!(ended, Ended::Exited(0));
    assert!(seen.is_empty(), "{seen:?}");
}

#[test]
fn l1_denies_namespace_creation_with_eperm_and_reports_an_event() {
    let (ended, seen, _) = run_notified(tier("L1"), unshare_user_namespace);
    assert_eq!(ended, Ended::Exited(0), "unshare failed with EPERM and the plugin went on");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].verdict, Verdict::Deny { errno: libc::EPERM });
    assert_eq!(seen[0].to_string(), "seccomp: denied syscall unshare (EPERM)");
}

#[test]
fn x32_calls_reach_the_supervisor_and_are_named_as_x32() {
    let (ended, seen, words) = run_notified(tier("L2"), x32_getpid);
    assert_eq!(ended, Ended::Signaled(libc::SIGKILL));
    assert_eq!(words, "killed: seccomp violation (x32 syscall 39)");
    assert_eq!(seen.len(), 1);

    let (ended, seen, _) = run_notified(tier("L1"), x32_getpid);
    assert_eq!(ended, Ended::Exited(0), "EPERM came back");
    assert_eq!(seen[0].to_string(), "seccomp: denied x32 syscall 39 (EPERM)");
}

#[test]
fn clone3_fails_with_enosys_without_a_violation() {
    for name in ["L1", "L2", "L3"] {
        let (ended, seen, _) = run_notified(tier(name), clone3_null);
        assert_eq!(ended, Ended::Exited(0), "tier {name}: clone3 gave ENOSYS");
        assert!(seen.is_empty(), "tier {name}: {seen:?}");
    }
}

#[test]
fn a_32_bit_entry_is_killed_by_the_architecture_check() {
    let (ended, seen, words) = run_notified(tier("L1"), int80_getpid);
    assert_eq!(ended, Ended::Signaled(libc::SIGSYS));
    assert!(seen.is_empty(), "nothing is notified: {seen:?}");
    assert_eq!(words, ARCH_KILL_REPORT);
}

#[test]
fn l3_writable_executable_memory_kills_and_names_mmap() {
    let (ended, _, words) = run_notified(tier("L3"), mmap_rwx);
    assert_eq!(ended, Ended::Signaled(libc::SIGKILL));
    assert_eq!(words, "killed: seccomp violation (syscall mmap)");
}

#[test]
fn direct_delivery_needs_no_listener() {
    let l1 = tier("L1").compile(Delivery::Direct).expect("compiles");
    assert_eq!(run_direct(&l1, unshare_user_namespace), Ended::Exited(0), "EPERM from the kernel");
    assert_eq!(run_direct(&l1, socket_unix), Ended::Exited(0));
    let l2 = tier("L2").compile(Delivery::Direct).expect("compiles");
    assert_eq!(run_direct(&l2, socket_unix), Ended::Signaled(libc::SIGSYS));
}

#[test]
fn install_reports_kernel_refusal_as_an_error() {
    // Without no-new-privs and without CAP_SYS_ADMIN the kernel refuses;
    // as root it accepts. Either way install returns, never panics, and a
    // listener fd comes back only when asked for.
    fn install_without_listener() -> i32 {
        let filter = &tier_for_child().program;
        match filter.install(0) {
            Ok(0) => 0,
            Ok(_) => 2,
            Err(_) => 3,
        }
    }
    let (ended, seen, _) = run_notified(tier("L1"), install_without_listener);
    // Installing a second filter is allowed only where seccomp is; L1 does
    // not allow seccomp, so the attempt is a denied violation.
    assert_eq!(ended, Ended::Exited(3));
    assert_eq!(seen[0].to_string(), "seccomp: denied syscall seccomp (EPERM)");
}

/// The tier set, already loaded before fork so the child only reads it.
fn tier_for_child() -> &'static Tier {
    tier("L3")
}
