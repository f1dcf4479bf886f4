//! Names for the syscalls a filter reports, so a violation reads
//! `syscall socket` or `x32 syscall 39`, never a bare number.

use std::fmt;

use syscalls::x86::Sysno as I386Sysno;
use syscalls::x86_64::Sysno as X86_64Sysno;

use super::arch::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

/// A syscall as the kernel presented it to the filter: the entry point
/// matters as much as the number, because x32 and i386 numbers mean
/// different calls than x86_64 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallId {
    /// A known x86_64 syscall.
    Native(&'static str),
    /// An x86_64 syscall number this build has no name for.
    NativeUnknown(i32),
    /// An x32 syscall, with the x32 bit removed from the number.
    X32(i32),
    /// A 32-bit (`int 0x80`) syscall, named from the i386 table when known.
    I386(i32, Option<&'static str>),
    /// An entry from another architecture altogether.
    Foreign {
        /// The audit architecture token.
        arch: u32,
        /// The syscall number.
        nr: i32,
    },
}

impl SyscallId {
    /// Identifies syscall `nr` entered through audit architecture `arch`.
    pub fn new(arch: u32, nr: i32) -> Self {
        match arch {
            // Negative numbers (-1 is what ptrace-skipped calls show) have the
            // bit too, but are not x32 calls.
            AUDIT_ARCH_X86_64 if nr > 0 && nr & X32_SYSCALL_BIT != 0 => Self::X32(nr & !X32_SYSCALL_BIT),
            AUDIT_ARCH_X86_64 => match usize::try_from(nr).ok().and_then(X86_64Sysno::new) {
                Some(sysno) => Self::Native(sysno.name()),
                None => Self::NativeUnknown(nr),
            },
            AUDIT_ARCH_I386 => Self::I386(nr, usize::try_from(nr).ok().and_then(I386Sysno::new).map(|s| s.name())),
            _ => Self::Foreign { arch, nr },
        }
    }
}

/// Reads as it should appear after "violation (" in a report.
impl fmt::Display for SyscallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Native(name) => write!(f, "syscall {name}"),
            Self::NativeUnknown(nr) => write!(f, "syscall {nr}"),
            Self::X32(nr) => write!(f, "x32 syscall {nr}"),
            Self::I386(nr, Some(name)) => write!(f, "i386 syscall {nr} ({name})"),
            Self::I386(nr, None) => write!(f, "i386 syscall {nr}"),
            Self::Foreign { arch, nr } => write!(f, "syscall {nr} of audit arch {arch:#010x}"),
        }
    }
}

/// The name of syscall `nr` entered through audit architecture `arch`:
/// `socket` for a known x86_64 call; otherwise a description that says how
/// it was entered, e.g. `x32 syscall 39` or `syscall 999`.
pub fn syscall_name(arch: u32, nr: i32) -> String {
    match SyscallId::new(arch, nr) {
        SyscallId::Native(name) => name.to_owned(),
        other => other.to_string(),
    }
}

/// The x86_64 number of syscall `name`, from the same table that names
/// reported violations.
pub(super) fn syscall_number(name: &str) -> Option<i32> {
    name.parse::<X86_64Sysno>().ok().map(|s| s.id())
}
