//! What a notified violation leads to, and the words for it.

use super::super::{ARCH_KILL_REPORT, AUDIT_ARCH_X86_64, Verdict, ViolationAction, X32_SYSCALL_BIT};
use super::tier;

fn data(nr: i32) -> libc::seccomp_data {
    libc::seccomp_data { nr, arch: AUDIT_ARCH_X86_64, instruction_pointer: 0x1000, args: [2, 1, 0, 0, 0, 0] }
}

#[test]
fn kill_reports_the_syscall_by_name() {
    let v = ViolationAction::KillProcess.decide(&data(libc::SYS_socket as i32));
    assert_eq!(v.verdict, Verdict::Kill);
    assert_eq!(v.to_string(), "killed: seccomp violation (syscall socket)");
    assert!(v.response(7).is_none());
    assert_eq!(v.args, [2, 1, 0, 0, 0, 0]);
}

#[test]
fn errno_denies_and_reports_an_event() {
    let v = tier("L1").violation.decide(&data(libc::SYS_unshare as i32));
    assert_eq!(v.verdict, Verdict::Deny { errno: libc::EPERM });
    assert_eq!(v.to_string(), "seccomp: denied syscall unshare (EPERM)");
    let resp = v.response(42).expect("a denial is answered");
    assert_eq!((resp.id, resp.val, resp.error, resp.flags), (42, 0, -libc::EPERM, 0));
}

#[test]
fn x32_and_unknown_calls_are_reported_by_entry_and_number() {
    let v = ViolationAction::KillProcess.decide(&data(X32_SYSCALL_BIT | 39));
    assert_eq!(v.to_string(), "killed: seccomp violation (x32 syscall 39)");
    let v = ViolationAction::Errno(38).decide(&data(999));
    assert_eq!(v.to_string(), "seccomp: denied syscall 999 (ENOSYS)");
    let v = ViolationAction::Errno(4000).decide(&data(999));
    assert_eq!(v.to_string(), "seccomp: denied syscall 999 (errno 4000)");
}

#[test]
fn a_sigsys_death_under_notification_is_the_architecture_check() {
    assert_eq!(ARCH_KILL_REPORT, "killed: seccomp violation (32-bit syscall entry)");
}
