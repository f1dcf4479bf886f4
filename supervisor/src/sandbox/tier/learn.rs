//! The learning filter of the onboarding check: instead of an allowlist, it
//! reports every call through a user notification, which the supervisor
//! records and lets continue, so a plugin's calls can be compared with each
//! tier's allowlist. It is no tier: no config can name it; only the
//! onboarding check installs it (`Supervisor::start_learning`).

use super::arch::AUDIT_ARCH_X86_64;
use super::bpf::{BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, insn};
use super::filter::CompiledFilter;
use super::required::EXEC_FD;

const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ARG0_HIGH: u32 = 20;

/// The learning program for a child whose status descriptor (where it sends
/// the listener) is `status_fd`.
///
/// Answered in the kernel, without a round trip: 32-bit entries (killed, as
/// by every tier); `clone3` (ENOSYS, as by every tier, so glibc falls back
/// to `clone` exactly as it does under a tier); and the calls of the spawn
/// sequence after the filter is installed, which run before the supervisor
/// holds the listener and every tier must allow anyway: `sendmsg` on the
/// status descriptor, `execveat` of [`EXEC_FD`] and `exit_group`. Every
/// other call is notified.
pub fn learning_program(status_fd: i32) -> CompiledFilter {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let allow = libc::SECCOMP_RET_ALLOW;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    // Jump offsets count from the next instruction; the layout is fixed, so
    // they are written out (ALLOW at 18, NOTIFY at 19).
    CompiledFilter::new(vec![
        /* 0 */ insn(BPF_LD_W_ABS, 0, 0, ARCH),
        /* 1 */ insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        /* 2 */ insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        /* 3 */ insn(BPF_LD_W_ABS, 0, 0, NR),
        /* 4 */ insn(BPF_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        /* 5 */ insn(BPF_RET_K, 0, 0, enosys),
        /* 6 */ insn(BPF_JEQ_K, 0, 1, libc::SYS_exit_group as u32),
        /* 7 */ insn(BPF_RET_K, 0, 0, allow),
        /* 8 */ insn(BPF_JEQ_K, 0, 4, libc::SYS_sendmsg as u32),
        /* 9 */ insn(BPF_LD_W_ABS, 0, 0, ARG0_HIGH),
        /* 10 */ insn(BPF_JEQ_K, 0, 8, 0),
        /* 11 */ insn(BPF_LD_W_ABS, 0, 0, ARG0_LOW),
        /* 12 */ insn(BPF_JEQ_K, 5, 6, status_fd as u32),
        /* 13 */ insn(BPF_JEQ_K, 0, 5, libc::SYS_execveat as u32),
        /* 14 */ insn(BPF_LD_W_ABS, 0, 0, ARG0_HIGH),
        /* 15 */ insn(BPF_JEQ_K, 0, 3, 0),
        /* 16 */ insn(BPF_LD_W_ABS, 0, 0, ARG0_LOW),
        /* 17 */ insn(BPF_JEQ_K, 0, 1, EXEC_FD as u32),
        /* 18 */ insn(BPF_RET_K, 0, 0, allow),
        /* 19 */ insn(BPF_RET_K, 0, 0, notify),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::arch::AUDIT_ARCH_I386;
    use super::super::sim::{SeccompData, run};
    use super::*;

    const STATUS_FD: i32 = 1001;

    fn ret(arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        run(learning_program(STATUS_FD).instructions(), &SeccompData::new(arch, nr as i32, args)).unwrap()
    }

    #[test]
    fn every_call_of_the_plugin_is_notified() {
        for nr in [libc::SYS_read, libc::SYS_socket, libc::SYS_mmap, libc::SYS_execve, libc::SYS_openat] {
            assert_eq!(ret(AUDIT_ARCH_X86_64, nr, [3, 0, 0, 0, 0, 0]), libc::SECCOMP_RET_USER_NOTIF, "{nr}");
        }
        // The spawn's calls are let through only on the spawn's descriptors.
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_sendmsg, [3, 0, 0, 0, 0, 0]), libc::SECCOMP_RET_USER_NOTIF);
        let exec_fd_high = [EXEC_FD as u64 | 1 << 32, 0, 0, 0, 0, 0];
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_execveat, exec_fd_high), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_execveat, [3, 0, 0, 0, 0, 0]), libc::SECCOMP_RET_USER_NOTIF);
    }

    #[test]
    fn the_spawn_sequence_runs_without_the_supervisor() {
        let allow = libc::SECCOMP_RET_ALLOW;
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_sendmsg, [STATUS_FD as u64, 1, 0, 0, 0, 0]), allow);
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_execveat, [EXEC_FD as u64, 1, 2, 3, 0x1000, 0]), allow);
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]), allow);
    }

    #[test]
    fn clone3_and_32_bit_entries_are_answered_as_every_tier_answers_them() {
        assert_eq!(ret(AUDIT_ARCH_X86_64, libc::SYS_clone3, [0; 6]), libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(ret(AUDIT_ARCH_I386, 3, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }
}
