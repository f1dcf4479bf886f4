//! The Landlock ruleset of one plugin: read and execute on the files its
//! loader opens, read on the tier's extra paths, read-write on its data
//! directory, nothing else; and no connecting to abstract unix sockets made
//! outside its domain (which are no files, so the filesystem rules cannot
//! see them). Built in the parent with the `landlock` crate; the child only
//! restricts itself with the ruleset's descriptor.
//!
//! Execute is granted on the loader's files alone. The L2 and L3 seccomp rule
//! that allows only the exec at spawn compares `execveat`'s descriptor and
//! flags, but the kernel ignores the descriptor of an absolute path: a plugin
//! could execute a program it wrote into its data directory, and only
//! Landlock stops that.

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

/// The rights on the loader's files: the only ones a plugin may execute.
pub fn exec_access() -> BitFlags<AccessFs> {
    AccessFs::Execute | AccessFs::ReadFile
}

/// The rights on the tier's read-only paths: the crate's "read" includes
/// Execute, which none of them is for.
pub fn read_access() -> BitFlags<AccessFs> {
    AccessFs::from_read(TARGET_ABI) & !AccessFs::Execute
}

/// The rights on writable paths (the data directory): all but Execute, so
/// no program the plugin writes can be executed directly.
pub fn write_access() -> BitFlags<AccessFs> {
    AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute
}

/// Builds the ruleset. With `required`, a kernel that cannot enforce every
/// handled right is an error; otherwise what it can enforce is enforced.
pub fn build(access: &Grants, required: bool) -> Result<Built, LandlockError> {
    let kernel = super::host::landlock_abi();
    if required && kernel < TARGET_ABI_NUMBER {
        return Err(LandlockError::NotFullyEnforced { kernel });
    }
    let level = if required { CompatLevel::HardRequirement } else { CompatLevel::BestEffort };
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
        rs = rs.add_rule(rule(p, exec_access())?).map_err(err)?;
    }
    // Extra read-only paths a host may not have (certificates, zoneinfo):
    // what does not exist cannot be read anyway.
    for p in access.read.iter().filter(|p| p.exists()) {
        rs = rs.add_rule(rule(p, read_access())?).map_err(err)?;
    }
    for p in &access.write {
        rs = rs.add_rule(rule(p, write_access())?).map_err(err)?;
    }
    let fd: Option<OwnedFd> = rs.into();
    Ok(Built {
        fully_enforced: fd.is_some() && kernel >= TARGET_ABI_NUMBER,
        abstract_unix_scoped: fd.is_some() && kernel >= ABSTRACT_UNIX_SCOPE_ABI,
        fd,
    })
}

/// The exit code of a forked child that restricts itself by the ruleset `fd`, then runs
/// `child` and exits with what it returns (100 is kept for a child that could not restrict
/// itself, which fails the test). The parent reaps it at once.
///
/// # Safety
///
/// `child` runs between fork and exit in a copy of a multithreaded process: it may make
/// only async-signal-safe calls, on data prepared before the fork.
#[cfg(test)]
pub(crate) unsafe fn exit_code_under(fd: std::os::fd::RawFd, child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the caller's contract covers the child; the rest are raw syscalls.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0
                {
                    libc::_exit(100);
                }
                libc::_exit(child())
            }
            pid => {
                let mut status = 0;
                assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                assert!(libc::WIFEXITED(status), "the child ended by a signal: {status:#x}");
                let code = libc::WEXITSTATUS(status);
                assert_ne!(code, 100, "the child could not restrict itself");
                code
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    /// What a child restricted by `built` gets from `execve(program)`: 0 when the program
    /// ran (and exited 0), else the errno of the refused exec.
    fn exec_under(built: &Built, program: &Path) -> i32 {
        let fd = built.fd.as_ref().expect("a ruleset on a kernel with Landlock").as_raw_fd();
        let path = CString::new(program.as_os_str().as_bytes()).unwrap();
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: the child makes only raw, async-signal-safe syscalls on data prepared
        // before the fork, and ends in exec (or the errno, as its exit code).
        unsafe {
            exit_code_under(fd, || {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                *libc::__errno_location()
            })
        }
    }

    #[test]
    fn writable_and_read_only_paths_are_granted_every_right_they_need_but_execute() {
        assert_eq!(write_access(), AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute);
        assert!(!write_access().contains(AccessFs::Execute), "{:?}", write_access());
        assert!(write_access().contains(AccessFs::WriteFile | AccessFs::MakeReg | AccessFs::Truncate));
        assert_eq!(read_access(), AccessFs::ReadFile | AccessFs::ReadDir);
        assert_eq!(exec_access(), AccessFs::Execute | AccessFs::ReadFile);
    }

    #[test]
    fn no_path_but_the_loaders_files_is_granted_execute() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("true");
        std::fs::copy("/bin/true", &program).unwrap();
        // The copy's loader and libraries: executable, as the loader's files are.
        let libs: Vec<PathBuf> = ["/lib64", "/lib", "/usr/lib64", "/usr/lib"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        let writable = Grants { exec: libs.clone(), read: Vec::new(), write: vec![dir.path().to_owned()] };
        let readable = Grants { exec: libs.clone(), read: vec![dir.path().to_owned()], write: Vec::new() };
        let runnable = Grants { exec: [libs, vec![program.clone()]].concat(), ..Grants::default() };
        if super::super::host::landlock_abi() < 1 {
            for g in [writable, readable, runnable] {
                assert!(build(&g, false).unwrap().fd.is_none(), "no Landlock here: no ruleset");
            }
            return;
        }
        let run = |g: &Grants| exec_under(&build(g, false).unwrap_or_else(|e| panic!("{e}")), &program);
        assert_eq!(run(&runnable), 0, "the program runs where it is granted execute: the test can tell");
        assert_eq!(run(&writable), libc::EACCES, "a program written into a writable path does not run");
        assert_eq!(run(&readable), libc::EACCES, "nor one in a read-only path");
    }
}
