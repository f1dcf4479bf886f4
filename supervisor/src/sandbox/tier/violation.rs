//! What a seccomp violation does and how it is reported. Every tier's
//! filter turns a violation into a user notification; the supervisor reads
//! it, and this module decides, from the tier's `mismatch_action`, whether
//! the instance dies or the call fails, and writes the words the operator
//! sees.

use std::fmt;

use super::syscall_name::SyscallId;

/// The report for an instance that died of `SIGSYS` under a notifying
/// filter: only the architecture check kills in the kernel, so the call was
/// a 32-bit (`int 0x80`) entry, which the kernel does not let us name.
pub const ARCH_KILL_REPORT: &str = "killed: seccomp violation (32-bit syscall entry)";

/// What a tier does with a call its allowlist does not cover, taken from
/// the policy's `mismatch_action`, the only place that says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationAction {
    /// `"kill_process"`: the instance is killed and its state says why.
    KillProcess,
    /// `{"errno": E}`: the call fails with `E` (1 to 4095), an event says
    /// which call, and the instance goes on.
    Errno(u16),
}

impl ViolationAction {
    /// The seccomp return value that carries the action out in the kernel,
    /// without the supervisor (see `Delivery::Direct`).
    pub fn seccomp_ret(self) -> u32 {
        match self {
            Self::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Self::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
        }
    }

    /// Decides what to do about the notified call `data`.
    pub fn decide(self, data: &libc::seccomp_data) -> Violation {
        Violation {
            syscall: SyscallId::new(data.arch, data.nr),
            args: data.args,
            verdict: match self {
                Self::KillProcess => Verdict::Kill,
                Self::Errno(errno) => Verdict::Deny { errno: i32::from(errno) },
            },
        }
    }
}

/// What the supervisor must do about one notified call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Kill the instance (its cgroup) and set its state to the report.
    Kill,
    /// Answer the notification with `-errno` and emit the report as an
    /// event.
    Deny {
        /// The errno the call fails with.
        errno: i32,
    },
}

/// One call a tier forbade, with the decision and the words for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The call, by name and entry point.
    pub syscall: SyscallId,
    /// Its arguments, for logs.
    pub args: [u64; 6],
    /// What to do.
    pub verdict: Verdict,
}

impl Violation {
    /// The answer to write with `SECCOMP_IOCTL_NOTIF_SEND` for notification
    /// `id`; `None` when the instance is to be killed instead, which also
    /// ends the pending call.
    pub fn response(&self, id: u64) -> Option<libc::seccomp_notif_resp> {
        match self.verdict {
            Verdict::Kill => None,
            Verdict::Deny { errno } => Some(libc::seccomp_notif_resp { id, val: 0, error: -errno, flags: 0 }),
        }
    }
}

/// The report: `killed: seccomp violation (syscall socket)` for a kill, the
/// instance's state; `seccomp: denied syscall unshare (EPERM)` for a
/// denial, an event.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Kill => write!(f, "killed: seccomp violation ({})", self.syscall),
            Verdict::Deny { errno } => {
                write!(f, "seccomp: denied {} (", self.syscall)?;
                match syscalls::Errno::new(errno).name() {
                    Some(name) => write!(f, "{name})"),
                    None => write!(f, "errno {errno})"),
                }
            }
        }
    }
}
