//! The architecture facts the filters and reports depend on: audit tokens,
//! the x32 syscall bit, and the one target the tiers are built for.

use seccompiler::TargetArch;

use super::error::TierError;

/// `AUDIT_ARCH_X86_64`: what `seccomp_data.arch` holds for 64-bit and x32
/// entries.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// `AUDIT_ARCH_I386`: what `seccomp_data.arch` holds for `int 0x80` and
/// other 32-bit entries.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// `__X32_SYSCALL_BIT`: x32 syscalls arrive with the x86_64 audit token and
/// this bit set in the number, so only the number tells them apart.
pub const X32_SYSCALL_BIT: i32 = 0x4000_0000;

/// The target the shipped policies are written for. Their syscall names and
/// the x32 handling are x86_64 facts, so other hosts are refused rather
/// than given a filter nobody reviewed.
pub(super) fn target() -> Result<TargetArch, TierError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(TierError::UnsupportedArch { arch: std::env::consts::ARCH })
    }
}
