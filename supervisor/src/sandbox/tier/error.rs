//! The one error type of tier loading: every variant names the file it came from.

use std::io;
use std::path::PathBuf;

/// Why a tier directory, tier file or seccomp policy was refused.
///
/// A tier set is accepted whole or not at all, so the first error stops the
/// load; its message names the file and, for seccomp policies, the rule and
/// syscall involved.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The tier directory could not be listed.
    #[error("cannot list tier directory {dir}: {source}")]
    ReadDir {
        /// The directory given to the loader.
        dir: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },

    /// A tier file or seccomp policy could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },

    /// A tier file or seccomp policy is no regular file (a FIFO, which
    /// would hang the load, a device, a directory, a socket).
    #[error("{path}: cannot read: it is a {kind}, not a regular file")]
    NotRegularFile {
        /// The path, as given or named by the tier file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },

    /// A tier file or seccomp policy is larger than any policy needs to be.
    #[error("{path}: cannot read: larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The largest size read.
        limit: u64,
    },

    /// A tier file is not valid TOML or does not follow the tier schema
    /// (unknown key, missing key, wrong type, bad quota value).
    #[error("{path}: {message}")]
    Toml {
        /// The tier file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },

    /// A tier file parsed but one of its settings is not acceptable.
    #[error("{path}: {field}: {message}")]
    Setting {
        /// The tier file.
        path: PathBuf,
        /// The key that is wrong, e.g. `limits.nofile`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// A seccomp policy is not valid JSON or not in seccompiler's format, at
    /// a place that belongs to no single rule.
    #[error("{path}: {message}")]
    Json {
        /// The seccomp policy file.
        path: PathBuf,
        /// What is wrong, with the JSON position or key when known.
        message: String,
    },

    /// An object in a seccomp policy gives one key twice. JSON readers keep
    /// one of the two silently, so the policy in force would not be the one
    /// a reviewer reads (a second `mismatch_action`, a second `args`
    /// without the first one's conditions).
    #[error("{path}: filter {filter:?}, {place}: key {key:?} is given twice; JSON readers keep only one")]
    DuplicateKey {
        /// The seccomp policy file.
        path: PathBuf,
        /// The filter's name.
        filter: String,
        /// The object that gives the key twice: `top level` (the filter
        /// object), `rule 3 (syscall "execveat")`, `rule 3 (syscall
        /// "execveat"), args[0]`, or a path such as `mismatch_action`.
        place: String,
        /// The key given twice.
        key: String,
    },

    /// One rule of a seccomp policy is wrong.
    #[error("{path}: rule {rule} (syscall {syscall:?}): {message}")]
    Rule {
        /// The seccomp policy file.
        path: PathBuf,
        /// The rule's position in `filter`, counting from 1.
        rule: usize,
        /// The syscall the rule names, or `?` when it names none.
        syscall: String,
        /// What is wrong with the rule.
        message: String,
    },

    /// A rule names a syscall that does not exist on the target.
    #[error("{path}: rule {rule}: unknown syscall name {name:?}")]
    UnknownSyscall {
        /// The seccomp policy file.
        path: PathBuf,
        /// The rule's position in `filter`, counting from 1.
        rule: usize,
        /// The name as written.
        name: String,
    },

    /// seccompiler refused a policy that passed our own checks (for example
    /// a syscall newer than seccompiler's table).
    #[error("{path}: seccompiler rejected the policy: {source}")]
    Seccompiler {
        /// The seccomp policy file.
        path: PathBuf,
        /// seccompiler's error, which names the syscall when it is the cause.
        source: seccompiler::Error,
    },

    /// seccompiler produced a program whose shape the violation reporting
    /// cannot rely on; this means seccompiler's code generation changed.
    #[error("{path}: unexpected BPF program from seccompiler: {message}")]
    UnexpectedProgram {
        /// The seccomp policy file.
        path: PathBuf,
        /// Which assumption failed.
        message: String,
    },

    /// A tier lacks a call the spawn sequence needs, so no plugin could
    /// ever start under it.
    #[error("{path}: tier {tier} must allow {what}")]
    MissingRequired {
        /// The seccomp policy file.
        path: PathBuf,
        /// The tier's name.
        tier: String,
        /// The call that must be allowed, and why.
        what: String,
    },

    /// `tighter_than` names a tier that was not loaded.
    #[error("{path}: tighter_than names tier {parent:?}, which is not in the tier directory")]
    UnknownParent {
        /// The tier file.
        path: PathBuf,
        /// The missing tier's name.
        parent: String,
    },

    /// A tier is not strictly tighter than the tier it says it is tighter
    /// than.
    #[error("{path}: tier {tier} is not tighter than {parent}: {reason}")]
    NotTighter {
        /// The tier file of the tier that should be tighter.
        path: PathBuf,
        /// That tier's name.
        tier: String,
        /// The tier it should be tighter than.
        parent: String,
        /// The first difference found, e.g. a call only it allows.
        reason: String,
    },

    /// Filters are built for the host architecture, which is not supported.
    #[error("seccomp tiers are built for x86_64 only, not {arch}")]
    UnsupportedArch {
        /// The host architecture.
        arch: &'static str,
    },
}
