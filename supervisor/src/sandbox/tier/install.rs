//! Installing a compiled filter in the calling thread: one raw `seccomp(2)`
//! call, safe between fork and exec (no allocation, no lock).

use std::io;

use super::filter::CompiledFilter;

impl CompiledFilter {
    /// Installs the filter in the calling thread with seccomp `flags`
    /// (e.g. `SECCOMP_FILTER_FLAG_NEW_LISTENER`) and returns what the
    /// kernel returned: the listener fd with `NEW_LISTENER`, else 0.
    ///
    /// Async-signal-safe. The caller must already have set no-new-privs
    /// (or hold `CAP_SYS_ADMIN`); the listener fd is close-on-exec.
    pub fn install(&self, flags: libc::c_ulong) -> io::Result<libc::c_int> {
        let fprog = self.as_sock_fprog();
        // SAFETY: seccomp(SET_MODE_FILTER) reads `len` instructions from a
        // pointer that `fprog` borrows from `self`, alive for the call; it
        // writes nothing to our memory.
        let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, fprog.as_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel returns 0 or an fd, both within c_int.
        Ok(libc::c_int::try_from(rc).unwrap_or(libc::c_int::MAX))
    }
}
