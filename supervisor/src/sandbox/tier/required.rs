//! The calls every tier must allow because the spawn sequence makes them
//! after the filter is installed, and the fixed descriptor that makes the
//! exec rule match exactly once.

use super::error::TierError;
use super::filter::CompiledFilter;
use super::policy::SeccompPolicy;
use super::sim::{self, SeccompData};

use super::arch::AUDIT_ARCH_X86_64;

/// The descriptor the child executes the verified binary from. It is
/// close-on-exec and above every tier's `RLIMIT_NOFILE`, so once the plugin
/// runs it can never own fd 1000 again, and the rule "execveat with fd 1000
/// and AT_EMPTY_PATH" matches the exec at spawn and nothing after it.
pub const EXEC_FD: libc::c_int = 1000;

/// `execveat`'s flags at spawn: execute the descriptor itself.
pub const EXEC_FLAGS: libc::c_int = libc::AT_EMPTY_PATH;

/// Stands in for the pointers the child passes; filters must not depend on
/// where its buffers are.
const SOME_POINTER: u64 = 0x7ffd_1234_5000;

/// Checks that `program`, compiled from `policy` for tier `tier`, allows the
/// calls the child makes after installing it: sending the listener fd with
/// `sendmsg`, the exec, and `exit_group` when either fails.
pub fn check_required(tier: &str, policy: &SeccompPolicy, program: &CompiledFilter) -> Result<(), TierError> {
    let exec_fd = EXEC_FD as u64;
    let exec_flags = EXEC_FLAGS as u64;
    let required: [(&str, i64, Vec<[u64; 6]>); 3] = [
        (
            "sendmsg on fds 0-5 and 1001 with flags 0 or MSG_NOSIGNAL: the child sends the seccomp \
             listener to the supervisor on fd 1001 after installing the filter",
            libc::SYS_sendmsg,
            // The child's status descriptor, where the listener goes (a rule on the
            // descriptor that allowed only 0-5 passed this check, and every start then
            // waited 10 s on a child blocked in that sendmsg), and the low ones, for a
            // tier's own rules that name them.
            (0..=5)
                .chain([crate::sandbox::spawn::STATUS_FD as u64])
                .flat_map(|fd| [0, libc::MSG_NOSIGNAL as u64].map(|flags| [fd, SOME_POINTER, flags, 0, 0, 0]))
                .collect(),
        ),
        (
            "execveat(1000, \"\", argv, envp, AT_EMPTY_PATH): the exec at spawn comes after the \
             filter is installed",
            libc::SYS_execveat,
            vec![[exec_fd, SOME_POINTER, SOME_POINTER, SOME_POINTER, exec_flags, 0]],
        ),
        (
            "exit_group: the child exits with it when the exec fails",
            libc::SYS_exit_group,
            vec![[0; 6], [1, 0, 0, 0, 0, 0], [127, 0, 0, 0, 0, 0]],
        ),
    ];
    for (what, nr, vectors) in required {
        for args in vectors {
            let data = SeccompData::new(AUDIT_ARCH_X86_64, nr as i32, args);
            let allowed = sim::allows(program.instructions(), &data)
                .map_err(|e| TierError::UnexpectedProgram { path: policy.path().to_owned(), message: e.to_string() })?;
            if !allowed {
                return Err(TierError::MissingRequired {
                    path: policy.path().to_owned(),
                    tier: tier.to_owned(),
                    what: what.to_owned(),
                });
            }
        }
    }
    Ok(())
}
