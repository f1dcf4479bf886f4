//! Sandbox tiers: the seccomp, Landlock, namespace and quota policy of each
//! tier, read from the files in `policies/` and compiled once at start-up.
//!
//! A tier is a TOML file (`<TIER>.toml`) naming a seccompiler JSON allowlist
//! (`<TIER>.seccomp.json`); `policies/README.md` describes both. Loading
//! compiles each allowlist with seccompiler, lays the syscalls out as a
//! search tree over their numbers, and rewrites "no rule matched" into a
//! user notification, so the supervisor can name the call before it
//! kills the instance or fails the call, as the policy's `mismatch_action`
//! says. Tiers that declare `tighter_than` are proven tighter by running
//! both programs in a BPF simulator on every call that can tell them apart.

#![deny(clippy::undocumented_unsafe_blocks)]

mod arch;
mod bpf;
mod compile;
mod definition;
mod dispatch;
mod error;
mod file;
mod filter;
mod install;
mod json;
mod learn;
mod order;
mod policy;
mod probe;
mod quota;
mod required;
mod set;
mod settings;
pub mod sim;
mod syscall_name;
mod violation;

#[cfg(test)]
mod tests;

pub use arch::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
pub use compile::Delivery;
pub use definition::Tier;
pub use error::TierError;
pub use filter::{CompiledFilter, SockFprog};
pub(crate) use learn::learning_program;
pub use order::{Call, CompareError, HIGHEST_NR, SeccompComparison, compare_seccomp};
pub use policy::{ArgLen, CmpOp, Condition, Rule, SeccompPolicy};
pub use quota::{ByteSize, CpuShare, Quota};
pub use required::{EXEC_FD, EXEC_FLAGS};
pub use set::TierSet;
pub use settings::{Landlock, Limits, Namespaces};
pub use syscall_name::{SyscallId, syscall_name};
pub use violation::{ARCH_KILL_REPORT, Verdict, Violation, ViolationAction};
