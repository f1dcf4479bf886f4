//! The seam between cgroup logic and the kernel: the `CgroupFs` trait and error-mapping helpers.
//!
//! Everything above this trait (path computation, limit formatting, stats parsing, the
//! create/apply/kill/remove logic) is plain code tested against `FakeFs`; `RealFs` is the
//! only thing that touches cgroupfs. Two calls are not file operations (SIGKILL and the own
//! pid) but live here too, so the kill fallback and "never kill ourselves" are testable.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::error::{CgroupError, Result};

pub trait CgroupFs: fmt::Debug + Send + Sync {
    /// Reads a whole file (cgroup control files are small and produced in one go).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` with a single write(2): cgroupfs parses each write on its own.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Creates one directory level; an existing one is `ErrorKind::AlreadyExists`.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Names of the child directories (child cgroups).
    fn child_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// An fd of a cgroup directory, for `clone3(CLONE_INTO_CGROUP)`.
    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd>;
    /// A close-on-exec write fd, so a child can join with one write(2) and no path lookup.
    fn open_write(&self, path: &Path) -> io::Result<OwnedFd>;
    /// SIGKILL; a pid that is already gone is success.
    fn kill(&self, pid: u32) -> io::Result<()>;
    fn self_pid(&self) -> u32;
    /// An exclusive lock on a cgroup directory, taken without waiting and held as long as
    /// the returned guard lives; the kernel drops it when its holder dies. Held by someone
    /// else: `ErrorKind::WouldBlock`. The lock is on the directory the path names when the
    /// call returns (one removed in between is never what was locked).
    fn lock_dir(&self, path: &Path) -> io::Result<DirLock>;
    /// The pid holding `path`'s lock, when the kernel tells.
    fn lock_holder(&self, path: &Path) -> Option<u32>;
}

/// A held directory lock; dropping it lets go.
pub struct DirLock {
    _held: Box<dyn Send + Sync>,
}

impl DirLock {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self { _held: Box::new(held) }
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirLock")
    }
}

pub(crate) fn read(fs: &dyn CgroupFs, dir: &Path, file: &str) -> Result<String> {
    fs.read(&dir.join(file)).map_err(|source| CgroupError::Read {
        cgroup: dir.to_path_buf(),
        file: file.to_owned(),
        source,
    })
}

pub(crate) fn parsed<T>(
    fs: &dyn CgroupFs,
    dir: &Path,
    file: &str,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
) -> Result<T> {
    let text = read(fs, dir, file)?;
    with_context(dir, file, &text, parse(&text))
}

pub(crate) fn with_context<T>(dir: &Path, file: &str, text: &str, parsed: Result<T, &'static str>) -> Result<T> {
    parsed.map_err(|reason| parse_error(dir, file, text, reason))
}

/// `file` of the cgroup at `dir` read `text`, which does not parse for `reason`.
pub(crate) fn parse_error(dir: &Path, file: &str, text: &str, reason: &'static str) -> CgroupError {
    CgroupError::Parse {
        cgroup: dir.to_path_buf(),
        file: file.to_owned(),
        content: text.chars().take(256).collect(),
        reason,
    }
}

pub(crate) fn write(fs: &dyn CgroupFs, dir: &Path, file: &str, value: &str) -> Result<()> {
    fs.write(&dir.join(file), value).map_err(|source| CgroupError::Write {
        cgroup: dir.to_path_buf(),
        file: file.to_owned(),
        value: value.to_owned(),
        source,
    })
}

pub(crate) fn mkdir(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    fs.mkdir(dir).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CgroupError::AlreadyExists { cgroup: dir.to_path_buf() }
        } else {
            CgroupError::Mkdir { cgroup: dir.to_path_buf(), source }
        }
    })
}

pub(crate) fn child_dirs(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<String>> {
    fs.child_dirs(dir).map_err(|source| CgroupError::List { cgroup: dir.to_path_buf(), source })
}

pub(crate) fn open_write(fs: &dyn CgroupFs, dir: &Path, file: &str) -> Result<OwnedFd> {
    fs.open_write(&dir.join(file)).map_err(|source| CgroupError::Open {
        cgroup: dir.to_path_buf(),
        file: file.to_owned(),
        source,
    })
}

pub(crate) fn open_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<OwnedFd> {
    fs.open_dir(dir).map_err(|source| CgroupError::Open { cgroup: dir.to_path_buf(), file: ".".to_owned(), source })
}

pub(crate) fn procs(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<u32>> {
    parsed(fs, dir, "cgroup.procs", super::parse::pids)
}

/// Moves a whole process (all its threads) into the cgroup at `dir`.
pub(crate) fn add_process(fs: &dyn CgroupFs, dir: &Path, pid: u32) -> Result<()> {
    write(fs, dir, "cgroup.procs", &pid.to_string())
}
