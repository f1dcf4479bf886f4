//! `RealFs`: the `CgroupFs` that talks to the kernel through cgroupfs and kill(2).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use super::fs::{CgroupFs, DirLock};
use super::parse;

/// What most control files hold at most: the buffer is not grown while reading them.
const CONTROL_FILE: usize = 1024;

#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        // Not `fs::read_to_string`, nor `File::read_to_string`: both size their buffer
        // with a statx (and the second an lseek) first, which a control file (size 4096
        // or 0, whatever its text) never answers usefully, and the sampler reads a dozen
        // of these per instance. Through `Take` the read knows no size and asks none.
        let mut text = String::with_capacity(CONTROL_FILE);
        io::Read::take(fs::File::open(path)?, u64::MAX).read_to_string(&mut text)?;
        Ok(text)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT/O_TRUNC: a missing control file must fail, never become a regular file.
        let mut f = OpenOptions::new().write(true).open(path)?;
        let n = f.write(value.as_bytes())?;
        if n == value.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to {}: {n} of {} bytes", path.display(), value.len()),
            ))
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        // Whatever path the logic above computed, no directory is made outside cgroupfs.
        let parent = path.parent().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let kind = statfs(parent).map_err(io::Error::from)?.filesystem_type();
        if kind != CGROUP2_SUPER_MAGIC && kind != CGROUP_SUPER_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not on a cgroup filesystem", parent.display()),
            ));
        }
        DirBuilder::new().mode(0o755).create(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn child_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?;
        Ok(f.into())
    }

    fn open_write(&self, path: &Path) -> io::Result<OwnedFd> {
        // std opens with O_CLOEXEC, so the plugin never inherits these fds past exec.
        let f = OpenOptions::new().write(true).open(path)?;
        Ok(f.into())
    }

    fn kill(&self, pid: u32) -> io::Result<()> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        if pid <= 0 {
            // kill(0) / kill(-1) would hit our own process group or every process.
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "refusing to signal a non-positive pid"));
        }
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 0 names
        // exactly one process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(err) }
    }

    fn self_pid(&self) -> u32 {
        std::process::id()
    }

    fn lock_dir(&self, path: &Path) -> io::Result<DirLock> {
        // A supervisor tearing down removes the directory it held locked; whoever opened
        // that directory just before then gets its lock once the holder exits, on a
        // directory no longer in the tree. Only a lock on what the path still names counts.
        for _ in 0..8 {
            let fd = self.open_dir(path)?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let held = fs::File::from(fd);
            let (locked, named) = (held.metadata()?, fs::metadata(path));
            if named.is_ok_and(|n| n.dev() == locked.dev() && n.ino() == locked.ino()) {
                return Ok(DirLock::new(held));
            }
        }
        Err(io::Error::other(format!("{} keeps being removed and made again", path.display())))
    }

    fn lock_holder(&self, path: &Path) -> Option<u32> {
        let meta = fs::metadata(path).ok()?;
        let locks = fs::read_to_string("/proc/locks").ok()?;
        parse::flock_holder(&locks, libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_never_creates_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.max");
        assert_eq!(RealFs.write(&p, "1").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(!p.exists());
        fs::write(&p, "").unwrap();
        RealFs.write(&p, "123").unwrap();
        assert_eq!(RealFs.read(&p).unwrap(), "123");
    }

    #[test]
    fn no_directory_is_made_outside_a_cgroup_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        let e = RealFs.mkdir(&sub).unwrap_err();
        assert!(e.to_string().contains("is not on a cgroup filesystem"), "{e}");
        assert!(!sub.exists());
    }

    #[test]
    fn dirs_and_fds() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        fs::create_dir(&sub).unwrap();
        fs::write(dir.path().join("file"), "").unwrap();
        assert_eq!(RealFs.child_dirs(dir.path()).unwrap(), vec!["a".to_string()]);
        assert!(RealFs.open_dir(&sub).is_ok());
        assert!(RealFs.open_dir(&dir.path().join("file")).is_err());
        assert!(RealFs.open_write(&dir.path().join("file")).is_ok());
        RealFs.rmdir(&sub).unwrap();
        assert!(!RealFs.exists(&sub));
    }

    #[test]
    fn kill_refuses_group_wide_pids_and_ignores_gone_ones() {
        assert!(RealFs.kill(0).is_err());
        assert!(RealFs.kill(u32::MAX).is_err());
        // pid_max is at most 2^22, so this pid cannot exist.
        RealFs.kill(4_194_305).unwrap();
        assert_eq!(RealFs.self_pid(), std::process::id());
    }

    #[test]
    fn a_locked_directory_refuses_a_second_lock_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RealFs.lock_dir(dir.path()).unwrap();
        let second = RealFs.lock_dir(dir.path()).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock, "{second}");
        assert_eq!(RealFs.lock_holder(dir.path()), Some(std::process::id()));
        drop(first);
        assert!(RealFs.lock_holder(dir.path()).is_none());
        RealFs.lock_dir(dir.path()).unwrap();
    }
}
