//! "Tier A is tighter than tier B", decided rather than assumed: the
//! seccomp programs are run side by side in the simulator on every call
//! that can tell them apart, and the other settings are compared key by
//! key.

use std::fmt;

use super::arch::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use super::definition::Tier;
use super::error::TierError;
use super::probe::{MAX_VECTORS, argument_vectors};
use super::sim::{self, SeccompData, SimError};
use super::syscall_name::syscall_name;

/// Syscall numbers compared on every entry point; above every x86_64 and
/// x32 number the kernel has today, so new numbers show up too.
pub const HIGHEST_NR: i32 = 600;

/// An entry point no tier should allow anything from.
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// One call, as a filter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The audit architecture of the entry point.
    pub arch: u32,
    /// The syscall number as the filter sees it.
    pub nr: i32,
    /// The arguments.
    pub args: [u64; 6],
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", syscall_name(self.arch, self.nr))?;
        for (at, arg) in self.args.iter().enumerate() {
            let sep = if at == 0 { "" } else { ", " };
            write!(f, "{sep}{arg:#x}")?;
        }
        write!(f, ")")
    }
}

/// How two tiers' seccomp filters differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompComparison {
    /// The first call the first tier allows and the second denies.
    pub only_first: Option<Call>,
    /// The first call the second tier allows and the first denies.
    pub only_second: Option<Call>,
    /// How many calls were compared.
    pub calls: usize,
}

/// Why two filters could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A program did not run to a return on `call`.
    #[error("tier {tier}'s program failed on {call}: {source}")]
    Sim {
        /// The tier whose program failed.
        tier: String,
        /// The call it failed on.
        call: Call,
        /// How it failed.
        source: SimError,
    },
    /// The policies' conditions on one syscall combine into too many
    /// cases to compare.
    #[error("{syscall}: {count} argument cases, more than the {MAX_VECTORS} compared at load")]
    TooManyCases {
        /// The syscall.
        syscall: String,
        /// The number of cases.
        count: usize,
    },
}

/// Compares the seccomp filters of `first` and `second` on every entry
/// point (x86_64, x32, i386, a foreign one), every syscall number up to
/// [`HIGHEST_NR`] and a few beyond, and the argument vectors that can tell
/// their conditions apart.
pub fn compare_seccomp(first: &Tier, second: &Tier) -> Result<SeccompComparison, CompareError> {
    let policies = [&first.policy, &second.policy];
    let mut result = SeccompComparison { only_first: None, only_second: None, calls: 0 };
    for (arch, nr) in entry_points() {
        // Conditions only apply to native numbers; elsewhere the default
        // vectors still vary every argument.
        let native = if arch == AUDIT_ARCH_X86_64 && nr & X32_SYSCALL_BIT == 0 { nr } else { -1 };
        let vectors = argument_vectors(native, &policies)
            .map_err(|count| CompareError::TooManyCases { syscall: syscall_name(arch, nr), count })?;
        for args in vectors {
            let call = Call { arch, nr, args };
            let data = SeccompData::new(arch, nr, args);
            let allows = |tier: &Tier| {
                sim::allows(tier.program.instructions(), &data).map_err(|source| CompareError::Sim {
                    tier: tier.name.clone(),
                    call,
                    source,
                })
            };
            result.calls += 1;
            match (allows(first)?, allows(second)?) {
                (true, false) if result.only_first.is_none() => result.only_first = Some(call),
                (false, true) if result.only_second.is_none() => result.only_second = Some(call),
                _ => {}
            }
        }
    }
    Ok(result)
}

fn entry_points() -> impl Iterator<Item = (u32, i32)> {
    let numbers = || (0..=HIGHEST_NR).chain([1023, 4095, 0x3fff_ffff, i32::MAX, -1, i32::MIN]);
    let native = numbers().map(|nr| (AUDIT_ARCH_X86_64, nr));
    let x32 = (0..=HIGHEST_NR).map(|nr| (AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT));
    let i386 = numbers().map(|nr| (AUDIT_ARCH_I386, nr));
    let foreign = [0, 1, 63, 64, 221].map(|nr| (AUDIT_ARCH_AARCH64, nr));
    native.chain(x32).chain(i386).chain(foreign)
}

/// Checks that `child` is strictly tighter than `parent`: its filter allows
/// no call the parent's denies and denies at least one the parent's
/// allows, and no other setting is looser.
pub fn check_tighter(child: &Tier, parent: &Tier) -> Result<(), TierError> {
    let refuse = |reason: String| TierError::NotTighter {
        path: child.path.clone(),
        tier: child.name.clone(),
        parent: parent.name.clone(),
        reason,
    };
    let comparison = compare_seccomp(child, parent).map_err(|e| refuse(e.to_string()))?;
    if let Some(call) = comparison.only_first {
        return Err(refuse(format!("it allows {call}, which {} denies", parent.name)));
    }
    if comparison.only_second.is_none() {
        return Err(refuse(format!("its seccomp filter allows every call {}'s allows", parent.name)));
    }
    looser_setting(child, parent).map_or(Ok(()), |reason| Err(refuse(reason)))
}

/// The first setting in which `child` is looser than `parent`.
fn looser_setting(child: &Tier, parent: &Tier) -> Option<String> {
    let p = &parent.name;
    if !child.namespaces.includes(parent.namespaces) {
        return Some(format!("namespaces: it leaves out a namespace {p} asks for"));
    }
    if parent.landlock.required && !child.landlock.required {
        return Some(format!("landlock.required: false where {p} requires Landlock"));
    }
    if let Some(path) = child.landlock.read_only.iter().find(|path| !parent.landlock.read_only.contains(path)) {
        return Some(format!("landlock.read_only: {} is readable here but not in {p}", path.display()));
    }
    let (c, q) = (&child.quota, &parent.quota);
    let larger = [
        ("quota.memory_max", c.memory_max > q.memory_max, c.memory_max.to_string(), q.memory_max.to_string()),
        ("quota.cpu", c.cpu > q.cpu, c.cpu.to_string(), q.cpu.to_string()),
        ("quota.pids_max", c.pids_max > q.pids_max, c.pids_max.to_string(), q.pids_max.to_string()),
        (
            "limits.nofile",
            child.limits.nofile > parent.limits.nofile,
            child.limits.nofile.to_string(),
            parent.limits.nofile.to_string(),
        ),
    ];
    larger
        .into_iter()
        .find(|(_, is_larger, _, _)| *is_larger)
        .map(|(key, _, mine, theirs)| format!("{key}: {mine} is above {p}'s {theirs}"))
}
