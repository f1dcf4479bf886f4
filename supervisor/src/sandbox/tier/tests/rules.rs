//! The rules every tier's safety rests on: the architecture check, the
//! exec rule, W^X, no namespaces, none of the dangerous calls.

use super::super::probe::argument_vectors;
use super::super::sim::{self, SeccompData};
use super::super::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, EXEC_FD, EXEC_FLAGS, HIGHEST_NR, Tier, X32_SYSCALL_BIT};
use super::{allows, ret, tier};

const PTR: u64 = 0x7ffd_0000_1000;

fn tiers() -> [&'static Tier; 3] {
    [tier("L1"), tier("L2"), tier("L3")]
}

#[test]
fn the_architecture_check_kills_every_32_bit_entry() {
    for t in tiers() {
        for nr in (0..=HIGHEST_NR).chain([-1, i32::MAX]) {
            for args in [[0; 6], [u64::MAX; 6]] {
                let data = SeccompData::new(AUDIT_ARCH_I386, nr, args);
                let ret = sim::run(t.program.instructions(), &data).expect("runs");
                assert_eq!(ret, libc::SECCOMP_RET_KILL_PROCESS, "tier {} i386 nr {nr}", t.name);
            }
        }
    }
}

#[test]
fn x32_calls_are_never_allowed_and_reach_the_supervisor() {
    for t in tiers() {
        for nr in 0..=HIGHEST_NR {
            let data = SeccompData::new(AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, [0; 6]);
            let ret = sim::run(t.program.instructions(), &data).expect("runs");
            assert_eq!(ret, libc::SECCOMP_RET_USER_NOTIF, "tier {} x32 nr {nr}", t.name);
        }
    }
}

#[test]
fn the_exec_at_spawn_is_allowed_in_every_tier() {
    let exec = [EXEC_FD as u64, PTR, PTR, PTR, EXEC_FLAGS as u64, 0];
    for t in tiers() {
        assert!(allows(t, libc::SYS_execveat, exec), "tier {}", t.name);
        // The kernel reads the fd as an int: high bits change nothing.
        let mut high = exec;
        high[0] |= 0xffff_ffff_0000_0000;
        assert!(allows(t, libc::SYS_execveat, high), "tier {}", t.name);
    }
}

#[test]
fn no_other_exec_is_allowed_in_l2_and_l3() {
    for t in [tier("L2"), tier("L3")] {
        for fd in (0..=1100u64).filter(|&fd| fd != EXEC_FD as u64).chain([libc::AT_FDCWD as u64]) {
            let args = [fd, PTR, PTR, PTR, EXEC_FLAGS as u64, 0];
            assert!(!allows(t, libc::SYS_execveat, args), "tier {} fd {fd}", t.name);
        }
        for flags in [0, libc::AT_SYMLINK_NOFOLLOW, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW] {
            let args = [EXEC_FD as u64, PTR, PTR, PTR, flags as u64, 0];
            assert!(!allows(t, libc::SYS_execveat, args), "tier {} flags {flags:#x}", t.name);
        }
        assert!(!allows(t, libc::SYS_execve, [PTR, PTR, PTR, 0, 0, 0]), "tier {}", t.name);
    }
}

#[test]
fn writable_executable_memory_is_denied_in_l2_and_l3_and_nothing_else_is() {
    let extra = [0, libc::PROT_GROWSDOWN as u64, 0xffff_fff0, 0xffff_ffff_0000_0000];
    for t in [tier("L2"), tier("L3")] {
        for prot in 0..8u64 {
            for bits in extra {
                let prot = prot | bits;
                let both = prot & 6 == 6;
                let mmap = [0, 4096, prot, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
                assert_eq!(allows(t, libc::SYS_mmap, mmap), !both, "tier {} mmap prot {prot:#x}", t.name);
                let mprotect = [PTR, 4096, prot, 0, 0, 0];
                assert_eq!(allows(t, libc::SYS_mprotect, mprotect), !both, "tier {} mprotect prot {prot:#x}", t.name);
            }
        }
    }
    let l2 = tier("L2");
    for prot in 0..8u64 {
        let args = [PTR, 4096, prot, 0, 0, 0];
        assert_eq!(allows(l2, libc::SYS_pkey_mprotect, args), prot & 6 != 6, "L2 pkey_mprotect {prot}");
    }
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    assert!(allows(tier("L3"), libc::SYS_mmap, [0, 4096, rw, 0x22, u64::MAX, 0]));
}

#[test]
fn no_tier_creates_namespaces_and_clone3_is_answered_enosys() {
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
    ];
    let fork = libc::SIGCHLD as u64;
    for t in tiers() {
        for flag in namespaces {
            let args = [fork | flag as u64, 0, 0, 0, 0, 0];
            assert!(!allows(t, libc::SYS_clone, args), "tier {} clone {flag:#x}", t.name);
            assert!(!allows(t, libc::SYS_unshare, [flag as u64, 0, 0, 0, 0, 0]), "tier {} unshare", t.name);
        }
        assert!(!allows(t, libc::SYS_setns, [3, 0, 0, 0, 0, 0]), "tier {} setns", t.name);
        assert_eq!(
            ret(t, libc::SYS_clone3, [PTR, 88, 0, 0, 0, 0]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            "tier {} clone3",
            t.name
        );
    }
    assert!(allows(tier("L1"), libc::SYS_clone, [fork, 0, 0, 0, 0, 0]));
    assert!(allows(tier("L2"), libc::SYS_clone, [fork, 0, 0, 0, 0, 0]));
}

#[test]
fn the_dangerous_calls_are_denied_everywhere() {
    let names = [
        "mount",
        "umount2",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "kexec_load",
        "kexec_file_load",
        "bpf",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "keyctl",
        "add_key",
        "request_key",
        "settimeofday",
        "clock_settime",
        "adjtimex",
        "clock_adjtime",
        "iopl",
        "ioperm",
        "unshare",
        "setns",
        "personality",
        "userfaultfd",
        "perf_event_open",
        "io_uring_setup",
        "io_uring_enter",
        "pivot_root",
        "chroot",
        "open_by_handle_at",
        "fanotify_init",
        "seccomp",
        "mknod",
        "setuid",
        "capset",
    ];
    for t in tiers() {
        for name in names {
            let nr = super::super::syscall_name::syscall_number(name).expect("known syscall");
            let vectors = argument_vectors(nr, &[&t.policy]).expect("few cases");
            for args in vectors {
                assert!(!allows(t, i64::from(nr), args), "tier {} allows {name}{args:?}", t.name);
            }
        }
    }
}

#[test]
fn unmatched_calls_are_notified_not_killed_in_the_kernel() {
    for t in tiers() {
        assert_eq!(ret(t, libc::SYS_mount, [0; 6]), libc::SECCOMP_RET_USER_NOTIF, "tier {}", t.name);
        // A known syscall with failing conditions also notifies.
        let bad_exec = [0, PTR, PTR, PTR, 0, 0];
        let r = ret(t, libc::SYS_execveat, bad_exec);
        assert!(r == libc::SECCOMP_RET_ALLOW || r == libc::SECCOMP_RET_USER_NOTIF, "tier {}", t.name);
    }
}
