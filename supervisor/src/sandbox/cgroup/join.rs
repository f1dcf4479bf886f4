//! Joining an instance's cgroups before the child's first instruction: fds opened in the
//! parent, so the child between fork and exec allocates nothing and resolves no path.
//!
//! The v2 leaf is joined by `clone3(CLONE_INTO_CGROUP)` with the leaf's directory fd; each v1
//! leaf by the child writing "0" (itself) into a pre-opened `tasks` fd, and on the fork
//! fallback the v2 leaf through `cgroup.procs`. All fds are close-on-exec: the plugin never
//! sees them.
//!
//! Why `tasks` and not `cgroup.procs` on v1: a `cgroup.procs` write takes the global
//! `cgroup_threadgroup_rwsem` for writing, a per-cpu rwsem whose write side waits out an RCU
//! grace period when it has been idle, which measured 0.5–10 ms per spawn on the hybrid host.
//! Writing "0" to `tasks` moves only the calling thread, which the kernel does without that
//! lock (`cgroup_procs_write_start`: the lock is taken for `pid || threadgroup`), in about
//! 14 µs. The child between clone and exec has exactly one thread, so moving that thread
//! moves the whole process.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::clone3::{self, Forked};
use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs};
use super::layout::HierarchyId;
use super::paths::CgroupSet;

#[derive(Debug)]
pub struct JoinFds {
    unified_dir: Option<OwnedFd>,
    unified_procs: Option<OwnedFd>,
    v1_tasks: Vec<OwnedFd>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForkMode {
    /// clone3 into the v2 leaf, falling back to fork when the kernel cannot.
    #[default]
    Auto,
    /// Always fork and let the child write itself into every leaf.
    Fork,
}

/// Which way the child got into the v2 leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinPath {
    CloneIntoCgroup,
    ForkThenWrite,
}

#[derive(Debug)]
pub enum Spawned {
    /// In the child: call [`JoinFds::join_in_child`] with this token next.
    Child(ChildJoin),
    Parent {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
        path: JoinPath,
    },
}

/// What the child still has to write itself into.
#[derive(Clone, Copy, Debug)]
pub struct ChildJoin {
    in_unified: bool,
}

impl ChildJoin {
    /// True when the child came from clone3 (so it already is in the v2
    /// leaf and in any namespaces asked for).
    pub fn cloned(self) -> bool {
        self.in_unified
    }
}

fn write_zero(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: writes one byte from a static buffer to an fd we own; write(2) is
    // async-signal-safe and allocates nothing, so it is fine between fork and exec.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
    match n {
        1 => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

impl JoinFds {
    pub(crate) fn open(fs: &dyn CgroupFs, leaf: &CgroupSet) -> Result<JoinFds> {
        let mut out = JoinFds { unified_dir: None, unified_procs: None, v1_tasks: Vec::new() };
        for (id, dir) in leaf.dirs() {
            if id == HierarchyId::Unified {
                out.unified_procs = Some(fs::open_write(fs, dir, "cgroup.procs")?);
                out.unified_dir = Some(fs::open_dir(fs, dir)?);
            } else {
                out.v1_tasks.push(fs::open_write(fs, dir, "tasks")?);
            }
        }
        Ok(out)
    }

    /// The v2 leaf directory, for callers that build their own `clone3` arguments.
    pub fn cgroup_dir(&self) -> Option<BorrowedFd<'_>> {
        self.unified_dir.as_ref().map(AsFd::as_fd)
    }

    /// Forks a child that is in the v2 leaf from its first instruction when the kernel has
    /// `CLONE_INTO_CGROUP`; the child must then call [`JoinFds::join_in_child`] before exec.
    ///
    /// # Safety
    /// As for fork(2) in a multi-threaded process: in the `Child` branch only
    /// async-signal-safe operations (such as `join_in_child`, write, execve, _exit) are
    /// allowed until exec or exit. See [`clone3::clone_into_cgroup`].
    pub unsafe fn spawn(&self, mode: ForkMode) -> Result<Spawned> {
        // SAFETY: forwarded from this function's own contract.
        unsafe { self.spawn_with(mode, 0) }
    }

    /// [`JoinFds::spawn`] that also starts the child in new namespaces
    /// (`CLONE_NEW*` flags) when it can use clone3; on the fork fallback the
    /// child gets none, and [`ChildJoin::cloned`] says so.
    ///
    /// # Safety
    /// As for [`JoinFds::spawn`].
    pub unsafe fn spawn_with(&self, mode: ForkMode, namespaces: u64) -> Result<Spawned> {
        if let (ForkMode::Auto, Some(dir)) = (mode, self.cgroup_dir()) {
            // SAFETY: forwarded from this function's own contract.
            match unsafe { clone3::clone_into_cgroup_with(dir, namespaces) } {
                Ok(Forked::Child) => return Ok(Spawned::Child(ChildJoin { in_unified: true })),
                Ok(Forked::Parent { pid, pidfd }) => {
                    return Ok(Spawned::Parent { pid, pidfd, path: JoinPath::CloneIntoCgroup });
                }
                Err(e) if clone3::is_unsupported(&e) => {}
                Err(source) => {
                    return Err(CgroupError::Spawn { call: "clone3", source });
                }
            }
        }
        // SAFETY: forwarded from this function's own contract.
        match unsafe { clone3::fork_with_pidfd() } {
            Ok(Forked::Child) => Ok(Spawned::Child(ChildJoin { in_unified: false })),
            Ok(Forked::Parent { pid, pidfd }) => Ok(Spawned::Parent { pid, pidfd, path: JoinPath::ForkThenWrite }),
            Err(source) => Err(CgroupError::Spawn { call: "fork", source }),
        }
    }

    /// Writes the calling process into every leaf it is not in yet. Async-signal-safe: only
    /// write(2) on pre-opened fds; errors carry the raw errno and allocate nothing.
    pub fn join_in_child(&self, token: ChildJoin) -> io::Result<()> {
        for fd in &self.v1_tasks {
            write_zero(fd.as_fd())?;
        }
        if !token.in_unified
            && let Some(fd) = &self.unified_procs
        {
            write_zero(fd.as_fd())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake_fs::{FakeFs, FakeOp};
    use super::super::layout::Layout;
    use super::super::paths::subtree_root;
    use super::super::test_hosts;
    use super::*;

    #[test]
    fn opens_the_v2_dir_and_procs_and_each_v1_tasks_file() {
        let (fs, layout) = test_hosts::hybrid();
        fs.add_cgroup("/sys/fs/cgroup/unified/s/plugins/p/i");
        fs.add_cgroup("/sys/fs/cgroup/memory/process_api/h/s/plugins/p/i");
        fs.add_cgroup("/sys/fs/cgroup/cpu/s/plugins/p/i");
        fs.add_cgroup("/sys/fs/cgroup/pids/s/plugins/p/i");
        let (_, root) = subtree_root(&layout, None, "s").unwrap();
        let leaf = root.child("plugins").child("p").child("i");
        let j = JoinFds::open(&*fs, &leaf).unwrap();
        assert!(j.cgroup_dir().is_some());
        assert_eq!(j.v1_tasks.len(), 3);
        let opened: Vec<FakeOp> = fs.ops();
        assert!(opened.contains(&FakeOp::OpenDir("/sys/fs/cgroup/unified/s/plugins/p/i".into())));
        for p in [
            "/sys/fs/cgroup/unified/s/plugins/p/i/cgroup.procs",
            "/sys/fs/cgroup/memory/process_api/h/s/plugins/p/i/tasks",
            "/sys/fs/cgroup/cpu/s/plugins/p/i/tasks",
            "/sys/fs/cgroup/pids/s/plugins/p/i/tasks",
        ] {
            assert!(opened.contains(&FakeOp::OpenWrite(p.into())), "{p}");
        }
    }

    #[test]
    fn missing_leaf_names_the_cgroup() {
        let fs = FakeFs::new(1);
        fs.add_v2("/u", &[]);
        let l = Layout::from_proc(&fs, "1 0 0:1 / /u rw - cgroup2 cgroup2 rw\n", "0::/\n", None).unwrap();
        let (_, root) = subtree_root(&l, None, "s").unwrap();
        let e = JoinFds::open(&fs, &root).unwrap_err();
        assert!(e.to_string().contains("/u/s"), "{e}");
        assert!(e.to_string().contains("cgroup.procs"), "{e}");
    }

    #[test]
    fn child_join_writes_to_each_fd() {
        // Real pipes stand in for cgroup.procs and tasks so the bytes can be checked.
        let mut fds = [0; 2];
        let mut pipes = Vec::new();
        for _ in 0..3 {
            // SAFETY: pipe2 writes two fds into the array we pass.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both fds are fresh from pipe2 and owned by nobody else.
            pipes.push(unsafe {
                (
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
                )
            });
        }
        let (r_u, w_u) = pipes.remove(0);
        let (r_a, w_a) = pipes.remove(0);
        let (r_b, w_b) = pipes.remove(0);
        let j = JoinFds { unified_dir: None, unified_procs: Some(w_u), v1_tasks: vec![w_a, w_b] };
        j.join_in_child(ChildJoin { in_unified: true }).unwrap();
        j.join_in_child(ChildJoin { in_unified: false }).unwrap();
        let read = |fd: &OwnedFd| {
            let mut buf = [0u8; 8];
            // SAFETY: reads into a live local buffer of the length given.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            buf[..usize::try_from(n).unwrap()].to_vec()
        };
        assert_eq!(read(&r_a), b"00");
        assert_eq!(read(&r_b), b"00");
        assert_eq!(read(&r_u), b"0", "the unified leaf is written only on the fork path");
    }
}
