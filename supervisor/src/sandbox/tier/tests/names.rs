//! Syscall names in reports.

use super::super::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, SyscallId, X32_SYSCALL_BIT, syscall_name};

#[test]
fn native_calls_are_named() {
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 41), "socket");
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 0), "read");
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 435), "clone3");
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 462), "mseal");
}

#[test]
fn x32_calls_say_so() {
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39), "x32 syscall 39");
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 520), "x32 syscall 520");
}

#[test]
fn unknown_numbers_are_given_as_numbers() {
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 999), "syscall 999");
    assert_eq!(syscall_name(AUDIT_ARCH_X86_64, -1), "syscall -1");
    assert_eq!(SyscallId::new(AUDIT_ARCH_X86_64, 999), SyscallId::NativeUnknown(999));
}

#[test]
fn other_entry_points_say_which() {
    assert_eq!(syscall_name(AUDIT_ARCH_I386, 20), "i386 syscall 20 (getpid)");
    assert_eq!(syscall_name(AUDIT_ARCH_I386, 9999), "i386 syscall 9999");
    assert_eq!(syscall_name(0xC000_00B7, 63), "syscall 63 of audit arch 0xc00000b7");
}

#[test]
fn every_number_gets_a_name_without_panicking() {
    for nr in (-5..=1100).chain([i32::MIN, i32::MAX]) {
        for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0] {
            assert!(!syscall_name(arch, nr).is_empty());
            assert!(!syscall_name(arch, nr | X32_SYSCALL_BIT).is_empty());
        }
    }
}
