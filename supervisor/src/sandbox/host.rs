//! What this kernel offers the sandbox, probed directly: the Landlock ABI,
//! seccomp filters, pidfds, clone3, user namespaces. Used by spawn (to
//! decide what can be enforced) and by `supervisorctl doctor`.

use std::io;

/// The kernel's Landlock ABI version, or 0 without Landlock.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns the ABI version; it touches no memory of ours.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// Whether seccomp filters can be installed (the mode is readable).
pub fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP only reads this thread's mode.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Whether `pidfd_open` works.
pub fn pidfd_available() -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    super::pidfd::open(me).is_ok()
}

/// Whether the kernel has `clone3`: asked with an invalid size it answers
/// EINVAL (present) or ENOSYS (absent), and creates nothing.
pub fn clone3_available() -> bool {
    // SAFETY: a null args pointer with size 0 is rejected before anything
    // is created.
    let r = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Whether unprivileged user namespaces are allowed.
pub fn user_namespaces() -> bool {
    let max =
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let debian_switch =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone").ok().map(|s| s.trim() == "1");
    max.is_some_and(|m| m > 0) && debian_switch.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_answer_without_side_effects() {
        // This machine (and the VM lane) have all of them.
        assert!(landlock_abi() >= 1, "Landlock ABI");
        assert!(seccomp_available());
        assert!(pidfd_available());
        assert!(clone3_available());
    }
}
