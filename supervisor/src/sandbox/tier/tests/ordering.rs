//! The ordering proof: L3 allows nothing L2 denies, L2 nothing L1 denies,
//! each denies something its parent allows, and the compiled programs mean
//! what the policies say.

use super::super::probe::argument_vectors;
use super::super::sim::{self, SeccompData};
use super::super::{AUDIT_ARCH_X86_64, HIGHEST_NR, compare_seccomp};
use super::{allows, shipped, tier};

const PTR: u64 = 0x7ffd_0000_1000;

#[test]
fn each_tier_allows_nothing_its_parent_denies_and_denies_something_it_allows() {
    for (child, parent) in [("L2", "L1"), ("L3", "L2"), ("L3", "L1")] {
        let comparison = compare_seccomp(tier(child), tier(parent)).expect("comparable");
        assert_eq!(comparison.only_first, None, "{child} allows a call {parent} denies");
        assert!(comparison.only_second.is_some(), "{child} denies nothing {parent} allows");
        // Every number on three entry points, plus the argument cases.
        assert!(comparison.calls > 3 * (HIGHEST_NR as usize), "{comparison:?}");
    }
}

#[test]
fn the_comparison_covers_every_constant_in_the_conditions() {
    // The argument vectors for a syscall include each constant of both
    // policies, its neighbours, and for masks every combination of bits:
    // check on mmap (masks) and execveat (two equalities).
    let (l1, l2) = (&tier("L1").policy, &tier("L2").policy);
    let mmap = argument_vectors(libc::SYS_mmap as i32, &[l1, l2]).expect("few cases");
    let prots: std::collections::BTreeSet<u64> = mmap.iter().map(|a| a[2]).collect();
    for prot in 0..8 {
        assert!(prots.contains(&prot), "prot {prot} is compared");
    }
    let execveat = argument_vectors(libc::SYS_execveat as i32, &[l1, l2]).expect("few cases");
    for (fd, flags) in [(999, 0x1000), (1000, 0x1000), (1001, 0x1000), (1000, 0xfff), (1000, 0x1001)] {
        assert!(execveat.iter().any(|a| a[0] == fd && a[4] == flags), "execveat fd {fd} flags {flags:#x} is compared");
    }
}

#[test]
fn l2_denies_what_l1_allows_socket_execve_and_writable_executable_memory() {
    let (l1, l2) = (tier("L1"), tier("L2"));
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let calls: [(&str, i64, [u64; 6]); 5] = [
        ("socket(AF_UNIX)", libc::SYS_socket, [1, 1, 0, 0, 0, 0]),
        ("socketpair(AF_UNIX)", libc::SYS_socketpair, [1, 1, 0, PTR, 0, 0]),
        ("execve", libc::SYS_execve, [PTR, PTR, PTR, 0, 0, 0]),
        ("mmap(RWX)", libc::SYS_mmap, [0, 4096, rwx, anon, u64::MAX, 0]),
        ("mprotect(RWX)", libc::SYS_mprotect, [PTR, 4096, rwx, 0, 0, 0]),
    ];
    for (what, nr, args) in calls {
        assert!(allows(l1, nr, args), "L1 allows {what}");
        assert!(!allows(l2, nr, args), "L2 denies {what}");
    }
}

#[test]
fn l3_denies_what_l2_allows_writable_opens_threads_and_most_syscalls() {
    let (l2, l3) = (tier("L2"), tier("L3"));
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    let calls: [(&str, i64, [u64; 6]); 6] = [
        ("openat(O_WRONLY)", libc::SYS_openat, [libc::AT_FDCWD as u64, PTR, libc::O_WRONLY as u64, 0, 0, 0]),
        ("openat(O_RDONLY|O_CREAT)", libc::SYS_openat, [libc::AT_FDCWD as u64, PTR, libc::O_CREAT as u64, 0o600, 0, 0]),
        ("clone(thread)", libc::SYS_clone, [thread, PTR, PTR, PTR, PTR, 0]),
        ("ioctl(FIONREAD)", libc::SYS_ioctl, [3, libc::FIONREAD, PTR, 0, 0, 0]),
        ("prlimit64(0, RLIMIT_NOFILE, new)", libc::SYS_prlimit64, [0, libc::RLIMIT_NOFILE as u64, PTR, 0, 0, 0]),
        ("kill", libc::SYS_kill, [1, 9, 0, 0, 0, 0]),
    ];
    for (what, nr, args) in calls {
        assert!(allows(l2, nr, args), "L2 allows {what}");
        assert!(!allows(l3, nr, args), "L3 denies {what}");
    }
    let read_only = libc::O_RDONLY | libc::O_CLOEXEC;
    assert!(allows(l3, libc::SYS_openat, [libc::AT_FDCWD as u64, PTR, read_only as u64, 0, 0, 0]));
}

#[test]
fn the_compiled_programs_mean_what_the_policies_say() {
    for t in shipped().iter() {
        for nr in 0..=HIGHEST_NR {
            for args in argument_vectors(nr, &[&t.policy]).expect("few cases") {
                let data = SeccompData::new(AUDIT_ARCH_X86_64, nr, args);
                let compiled = sim::allows(t.program.instructions(), &data).expect("runs");
                assert_eq!(compiled, t.policy.allows(nr, &args), "tier {} nr {nr} args {args:x?}", t.name);
            }
        }
    }
}
