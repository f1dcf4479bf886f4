//! `FakeFs`: an in-memory model of cgroupfs (v1 and v2 hierarchies), processes and plain files
//! such as `/proc/self/mountinfo`, so the logic above `CgroupFs` is tested without a kernel.
//!
//! The kernel rules live in `fake_kernel`; this façade logs every mutating call, so tests
//! can prove nothing is written outside the subtree, and injects failures.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::controller::Version;
use super::fake_kernel::{State, errno, split};
use super::fs::{CgroupFs, DirLock};

/// A mutating call seen by the fake, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeOp {
    Write(PathBuf, String),
    Mkdir(PathBuf),
    Rmdir(PathBuf),
    OpenDir(PathBuf),
    OpenWrite(PathBuf),
    Kill(u32),
}

#[derive(Debug, Default)]
pub struct FakeFs {
    state: Arc<Mutex<State>>,
}

/// A lock the fake handed out: let go when dropped, unless the directory was removed (and
/// perhaps made and locked again) since.
struct FakeLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    token: u64,
}

impl Drop for FakeLock {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.locks.get(&self.path).is_some_and(|(_, t)| *t == self.token) {
            st.locks.remove(&self.path);
        }
    }
}

impl FakeFs {
    pub fn new(self_pid: u32) -> FakeFs {
        FakeFs { state: Arc::new(Mutex::new(State { self_pid, ..State::default() })) }
    }

    /// Another live process holds the lock of the cgroup directory `path`.
    pub fn hold_lock(&self, path: &str, pid: u32) {
        let mut st = self.lock();
        st.next_lock += 1;
        let token = st.next_lock;
        st.locks.insert(PathBuf::from(path), (pid, token));
    }

    /// Its holder died: the kernel lets the lock go.
    pub fn release_lock(&self, path: &str) {
        self.lock().locks.remove(Path::new(path));
    }

    pub fn lock_holder_of(&self, path: &str) -> Option<u32> {
        self.lock().locks.get(Path::new(path)).map(|(pid, _)| *pid)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a kernel older than 5.14: v2 cgroups created afterwards lack `cgroup.kill`.
    pub fn without_cgroup_kill(self) -> FakeFs {
        self.lock().no_cgroup_kill = true;
        self
    }

    pub fn add_v2(&self, mount: &str, available: &[&str]) {
        self.add_hier(mount, Version::V2, available);
    }

    pub fn add_v1(&self, mount: &str, controllers: &[&str]) {
        self.add_hier(mount, Version::V1, controllers);
    }

    fn add_hier(&self, mount: &str, version: Version, controllers: &[&str]) {
        self.lock().add_hierarchy(Path::new(mount), version, controllers);
    }

    /// Creates cgroups (and missing ancestors) as pre-existing state, without logging.
    pub fn add_cgroup(&self, path: &str) {
        let path = PathBuf::from(path);
        let mut missing = Vec::new();
        let mut p = path.as_path();
        while !self.lock().nodes.contains_key(p) {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => return,
            }
        }
        for dir in missing.into_iter().rev() {
            let _ = self.lock().create(&dir);
        }
    }

    /// Sets a control file of an existing cgroup, or a plain file anywhere else.
    pub fn set_file(&self, path: &str, content: &str) {
        let path = PathBuf::from(path);
        let mut st = self.lock();
        if let Ok((dir, name)) = split(&path)
            && let Some(node) = st.nodes.get_mut(dir)
        {
            node.files.insert(name.to_owned(), content.to_owned());
            return;
        }
        st.plain.insert(path, content.to_owned());
    }

    pub fn remove_file(&self, path: &str) {
        let path = PathBuf::from(path);
        let mut st = self.lock();
        if let Ok((dir, name)) = split(&path)
            && let Some(node) = st.nodes.get_mut(dir)
        {
            node.files.remove(name);
        }
    }

    /// Puts a (new) process into the given cgroups, one per hierarchy.
    pub fn spawn(&self, pid: u32, cgroups: &[&str]) {
        let mut st = self.lock();
        for cg in cgroups {
            let cg = PathBuf::from(cg);
            st.move_pid(pid, &cg);
        }
    }

    /// When `pid` is killed, `child` appears where it was: a fork that raced the kill.
    pub fn fork_on_kill(&self, pid: u32, child: u32) {
        self.lock().fork_on_kill.insert(pid, child);
    }

    /// Makes every mutating call on `path` fail with `errno`.
    pub fn fail_on(&self, path: &str, errno: i32) {
        self.lock().failures.insert(PathBuf::from(path), errno);
    }

    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    pub fn ops(&self) -> Vec<FakeOp> {
        self.lock().ops.clone()
    }

    /// How often `path` was read.
    pub fn reads_of(&self, path: &str) -> usize {
        self.lock().reads.get(Path::new(path)).copied().unwrap_or(0)
    }

    /// Forgets the operations and the reads so far.
    pub fn clear_ops(&self) {
        let mut st = self.lock();
        st.ops.clear();
        st.reads.clear();
    }

    pub fn is_cgroup(&self, path: &str) -> bool {
        self.lock().nodes.contains_key(Path::new(path))
    }

    pub fn procs_of(&self, path: &str) -> Vec<u32> {
        self.lock().nodes.get(Path::new(path)).map(|n| n.procs.clone()).unwrap_or_default()
    }

    pub fn is_alive(&self, pid: u32) -> bool {
        self.lock().nodes.values().any(|n| n.procs.contains(&pid))
    }

    pub fn cgroups(&self) -> Vec<PathBuf> {
        self.lock().nodes.keys().cloned().collect()
    }
}

impl CgroupFs for FakeFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        let mut st = self.lock();
        *st.reads.entry(path.to_path_buf()).or_default() += 1;
        st.read_file(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.ops.push(FakeOp::Write(path.to_path_buf(), value.to_owned()));
        st.fail(path)?;
        st.write_file(path, value)
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.ops.push(FakeOp::Mkdir(path.to_path_buf()));
        st.fail(path)?;
        st.create(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.ops.push(FakeOp::Rmdir(path.to_path_buf()));
        st.fail(path)?;
        st.remove(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().exists(path)
    }

    fn child_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.node(path)?;
        Ok(st.children(path).iter().filter_map(|c| c.file_name().and_then(|n| n.to_str()).map(str::to_owned)).collect())
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let mut st = self.lock();
        st.ops.push(FakeOp::OpenDir(path.to_path_buf()));
        st.node(path)?;
        Ok(File::open("/dev/null")?.into())
    }

    fn open_write(&self, path: &Path) -> io::Result<OwnedFd> {
        let mut st = self.lock();
        st.ops.push(FakeOp::OpenWrite(path.to_path_buf()));
        if !st.exists(path) || st.nodes.contains_key(path) {
            return Err(errno(libc::ENOENT));
        }
        Ok(OpenOptions::new().write(true).open("/dev/null")?.into())
    }

    fn kill(&self, pid: u32) -> io::Result<()> {
        let mut st = self.lock();
        st.ops.push(FakeOp::Kill(pid));
        assert_ne!(pid, st.self_pid, "FakeFs: the logic tried to SIGKILL its own process");
        st.sigkill(pid);
        Ok(())
    }

    fn self_pid(&self) -> u32 {
        self.lock().self_pid
    }

    fn lock_dir(&self, path: &Path) -> io::Result<DirLock> {
        let mut st = self.lock();
        st.node(path)?;
        if st.locks.contains_key(path) {
            return Err(errno(libc::EWOULDBLOCK));
        }
        st.next_lock += 1;
        let token = st.next_lock;
        let pid = st.self_pid;
        st.locks.insert(path.to_path_buf(), (pid, token));
        Ok(DirLock::new(FakeLock { state: self.state.clone(), path: path.to_path_buf(), token }))
    }

    fn lock_holder(&self, path: &Path) -> Option<u32> {
        self.lock().locks.get(path).map(|(pid, _)| *pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> FakeFs {
        let fs = FakeFs::new(10);
        fs.add_v2("/cg", &["cpu", "memory", "pids"]);
        fs
    }

    #[test]
    fn v2_controllers_follow_subtree_control() {
        let fs = v2();
        fs.mkdir(Path::new("/cg/a")).unwrap();
        assert_eq!(fs.read(Path::new("/cg/a/cgroup.controllers")).unwrap(), "\n");
        assert!(!fs.exists(Path::new("/cg/a/memory.max")));
        fs.write(Path::new("/cg/cgroup.subtree_control"), "+memory +pids").unwrap();
        assert_eq!(fs.read(Path::new("/cg/a/cgroup.controllers")).unwrap(), "memory pids\n");
        assert!(fs.exists(Path::new("/cg/a/memory.max")));
        fs.mkdir(Path::new("/cg/a/b")).unwrap();
        assert!(!fs.exists(Path::new("/cg/a/b/memory.max")));
        let e = fs.write(Path::new("/cg/a/cgroup.subtree_control"), "+cpu").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn v2_no_internal_processes() {
        let fs = v2();
        fs.add_cgroup("/cg/a/b");
        fs.spawn(5, &["/cg/a"]);
        let e = fs.write(Path::new("/cg/a/cgroup.subtree_control"), "+memory").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "memory not offered to /cg/a yet");
        fs.write(Path::new("/cg/cgroup.subtree_control"), "+memory").unwrap();
        let e = fs.write(Path::new("/cg/a/cgroup.subtree_control"), "+memory").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        fs.write(Path::new("/cg/a/b/cgroup.procs"), "5").unwrap();
        fs.write(Path::new("/cg/a/cgroup.subtree_control"), "+memory").unwrap();
        let e = fs.write(Path::new("/cg/a/cgroup.procs"), "5").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = fs.write(Path::new("/cg/cgroup.subtree_control"), "-memory").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn kill_is_recursive_and_rmdir_needs_empty() {
        let fs = v2();
        fs.add_cgroup("/cg/a/b");
        fs.spawn(5, &["/cg/a/b"]);
        assert_eq!(fs.read(Path::new("/cg/a/cgroup.events")).unwrap(), "populated 1\nfrozen 0\n");
        assert_eq!(fs.rmdir(Path::new("/cg/a/b")).unwrap_err().raw_os_error(), Some(libc::EBUSY));
        assert_eq!(fs.rmdir(Path::new("/cg/a")).unwrap_err().raw_os_error(), Some(libc::EBUSY));
        fs.write(Path::new("/cg/a/cgroup.kill"), "1").unwrap();
        assert!(!fs.is_alive(5));
        fs.rmdir(Path::new("/cg/a/b")).unwrap();
        fs.rmdir(Path::new("/cg/a")).unwrap();
        assert_eq!(fs.rmdir(Path::new("/cg")).unwrap_err().raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn v1_memsw_must_stay_above_limit() {
        let fs = FakeFs::new(1);
        fs.add_v1("/m", &["memory"]);
        fs.mkdir(Path::new("/m/a")).unwrap();
        let sw = Path::new("/m/a/memory.memsw.limit_in_bytes");
        let lim = Path::new("/m/a/memory.limit_in_bytes");
        fs.write(lim, "8192").unwrap();
        assert_eq!(fs.write(sw, "4096").unwrap_err().raw_os_error(), Some(libc::EINVAL));
        fs.write(sw, "8192").unwrap();
        assert_eq!(fs.write(lim, "16384").unwrap_err().raw_os_error(), Some(libc::EINVAL));
        fs.write(lim, "-1").unwrap_err();
        assert_eq!(fs.read(lim).unwrap(), "8192\n");
    }

    #[test]
    fn the_kernel_refuses_pids_above_its_maximum_and_v1_memory_below_usage() {
        let fs = FakeFs::new(1);
        fs.add_v1("/m", &["memory"]);
        fs.add_v1("/p", &["pids"]);
        fs.add_v2("/u", &["pids", "memory"]);
        fs.write(Path::new("/u/cgroup.subtree_control"), "+pids +memory").unwrap();
        for dir in ["/m/a", "/p/a", "/u/a"] {
            fs.mkdir(Path::new(dir)).unwrap();
        }
        for pids in ["/p/a/pids.max", "/u/a/pids.max"] {
            let pids = Path::new(pids);
            fs.write(pids, "4194304").unwrap();
            assert_eq!(fs.write(pids, "4194305").unwrap_err().raw_os_error(), Some(libc::EINVAL));
            assert_eq!(fs.read(pids).unwrap(), "4194304\n");
        }
        fs.set_file("/m/a/memory.usage_in_bytes", "8388608\n");
        let lim = Path::new("/m/a/memory.limit_in_bytes");
        assert_eq!(fs.write(lim, "4194304").unwrap_err().raw_os_error(), Some(libc::EBUSY));
        fs.write(lim, "8388608").unwrap();
        // v2 takes a limit below usage (and would reclaim or OOM-kill).
        fs.set_file("/u/a/memory.current", "8388608\n");
        fs.write(Path::new("/u/a/memory.max"), "4194304").unwrap();
    }

    #[test]
    fn v1_frozen_tasks_die_on_thaw() {
        let fs = FakeFs::new(1);
        fs.add_v1("/f", &["freezer"]);
        fs.add_cgroup("/f/a");
        fs.spawn(7, &["/f/a"]);
        fs.write(Path::new("/f/a/freezer.state"), "FROZEN").unwrap();
        fs.kill(7).unwrap();
        assert!(fs.is_alive(7));
        fs.write(Path::new("/f/a/freezer.state"), "THAWED").unwrap();
        assert!(!fs.is_alive(7));
    }

    #[test]
    fn fork_on_kill_and_failure_injection() {
        let fs = v2();
        fs.add_cgroup("/cg/a");
        fs.spawn(5, &["/cg/a"]);
        fs.fork_on_kill(5, 6);
        fs.kill(5).unwrap();
        assert_eq!(fs.procs_of("/cg/a"), vec![6]);
        fs.fail_on("/cg/a/cgroup.freeze", libc::EIO);
        assert_eq!(fs.write(Path::new("/cg/a/cgroup.freeze"), "1").unwrap_err().raw_os_error(), Some(libc::EIO));
        assert!(fs.ops().contains(&FakeOp::Kill(5)));
        assert_eq!(fs.write(Path::new("/cg/a/nope"), "1").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(fs.write(Path::new("/cg/a/cgroup.events"), "1").unwrap_err().raw_os_error(), Some(libc::EACCES));
    }
}
