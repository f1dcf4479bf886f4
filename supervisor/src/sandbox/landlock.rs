//! The Landlock ruleset of one plugin: read and execute on the files its
//! loader opens, read on the tier's extra paths, read-write on its data
//! directory, nothing else; and no connecting to abstract unix sockets made
//! outside its domain (which are no files, so the filesystem rules cannot
//! see them). Built in the parent with the `landlock` crate; the child only
//! restricts itself with the ruleset's descriptor.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};

/// The rights the ruleset handles: every filesystem right up to this ABI.
/// A kernel below it cannot fully enforce the ruleset.
pub const TARGET_ABI: ABI = ABI::V5;
const TARGET_ABI_NUMBER: i32 = 5;
/// The first ABI that scopes abstract unix sockets (Linux 6.12). Kept apart
/// from [`TARGET_ABI`]: a kernel without it still enforces every filesystem
/// rule, and a network namespace of its own closes the same gap.
pub const ABSTRACT_UNIX_SCOPE_ABI: i32 = 6;

/// What a plugin may touch.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// Read and execute: the interpreter and libraries the loader opens.
    pub exec: Vec<PathBuf>,
    /// Read only (files or directory trees).
    pub read: Vec<PathBuf>,
    /// Read and write (directory trees).
    pub write: Vec<PathBuf>,
}

/// A ruleset ready for the child, and whether the kernel enforces all of it.
#[derive(Debug)]
pub struct Built {
    pub fd: Option<OwnedFd>,
    pub fully_enforced: bool,
    /// Connecting to an abstract unix socket made outside the plugin's
    /// domain fails with EPERM.
    pub abstract_unix_scoped: bool,
}

/// Why a ruleset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error(
        "Landlock cannot be fully enforced here (kernel Landlock ABI {kernel}, full enforcement needs {TARGET_ABI_NUMBER}) and this plugin requires it"
    )]
    NotFullyEnforced { kernel: i32 },
    #[error("Landlock rule for {}: {reason}", path.display())]
    Rule { path: PathBuf, reason: String },
    #[error("Landlock: {0}")]
    Ruleset(String),
}

fn rule(path: &Path, access: BitFlags<AccessFs>) -> Result<PathBeneath<PathFd>, LandlockError> {
    let fd = PathFd::new(path).map_err(|e| LandlockError::Rule { path: path.to_owned(), reason: e.to_string() })?;
    // A regular file takes only the rights that make sense for files.
    let access = if path.is_dir() { access } else { access & AccessFs::from_file(TARGET_ABI) };
    Ok(PathBeneath::new(fd, access))
}

/// Builds the ruleset. With `required`, a kernel that cannot enforce every
/// handled right is an error; otherwise what it can enforce is enforced.
pub fn build(access: &Grants, required: bool) -> Result<Built, LandlockError> {
    let kernel = super::host::landlock_abi();
    if required && kernel < TARGET_ABI_NUMBER {
        return Err(LandlockError::NotFullyEnforced { kernel });
    }
    let level = if required { CompatLevel::HardRequirement } else { CompatLevel::BestEffort };
    let read_exec = AccessFs::Execute | AccessFs::ReadFile;
    let err = |e: landlock::RulesetError| LandlockError::Ruleset(e.to_string());
    // Scoping is best effort even for a plugin that requires Landlock: that
    // requirement is about the filesystem rules, and status reports a kernel
    // that cannot scope.
    let mut rs = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::AbstractUnixSocket)
        .map_err(err)?
        .set_compatibility(level)
        .create()
        .map_err(err)?;
    for p in &access.exec {
        rs = rs.add_rule(rule(p, read_exec)?).map_err(err)?;
    }
    // Extra read-only paths a host may not have (certificates, zoneinfo):
    // what does not exist cannot be read anyway.
    for p in access.read.iter().filter(|p| p.exists()) {
        rs = rs.add_rule(rule(p, AccessFs::from_read(TARGET_ABI))?).map_err(err)?;
    }
    for p in &access.write {
        rs = rs.add_rule(rule(p, AccessFs::from_all(TARGET_ABI))?).map_err(err)?;
    }
    let fd: Option<OwnedFd> = rs.into();
    Ok(Built {
        fully_enforced: fd.is_some() && kernel >= TARGET_ABI_NUMBER,
        abstract_unix_scoped: fd.is_some() && kernel >= ABSTRACT_UNIX_SCOPE_ABI,
        fd,
    })
}
