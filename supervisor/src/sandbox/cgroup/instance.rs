//! One plugin instance's leaf cgroup (`plugins/<plugin>/<instance>` in every hierarchy):
//! live limits, stats, membership, kill and removal.

use std::sync::Arc;

use super::apply;
use super::controller::Controller;
use super::error::Result;
use super::fs::{self, CgroupFs};
use super::join::JoinFds;
use super::kill::{self, KillStrategy};
use super::layout::Layout;
use super::limits::Limits;
use super::paths::CgroupSet;
use super::remove::{self, Removal};
use super::stats::{self, StatFiles, Stats};

#[derive(Debug, Clone)]
pub struct Instance {
    pub(crate) fs: Arc<dyn CgroupFs>,
    pub(crate) layout: Arc<Layout>,
    pub(crate) plugin: String,
    pub(crate) name: String,
    pub(crate) leaf: CgroupSet,
}

impl Instance {
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a process whose `/proc/PID/cgroup` reads `proc_cgroup` is in the leaf or
    /// below it, in some hierarchy the leaf is in.
    pub fn holds(&self, proc_cgroup: &str) -> bool {
        let Ok(entries) = super::proc_cgroup::parse(proc_cgroup) else { return false };
        self.leaf.dirs().any(|(id, dir)| {
            let Some(h) = self.layout.hierarchy(id) else { return false };
            let Ok(rel) = dir.strip_prefix(&h.mount_point) else { return false };
            let path = h.mount_root.join(rel);
            let unified = id == super::layout::HierarchyId::Unified;
            entries.iter().filter(|m| m.is_v2() == unified).any(|m| m.path.starts_with(&path))
        })
    }

    /// The leaf's directory in each hierarchy.
    pub fn cgroups(&self) -> &CgroupSet {
        &self.leaf
    }

    /// Changes the quotas of the running instance at once. A quota whose controller this
    /// host lacks fails with `ControllerUnavailable` before anything is written.
    pub fn set_limits(&self, limits: &Limits) -> Result<()> {
        apply::apply(&*self.fs, &self.layout, &self.leaf, limits)
    }

    /// `limits` without the quotas whose controller this host lacks (what an instance whose
    /// quotas are optional runs with).
    pub fn enforceable(&self, limits: &Limits) -> Limits {
        let has = |c| self.layout.source(c).is_some();
        let mut l = *limits;
        if !has(Controller::Memory) {
            l.memory_max = None;
            l.memory_high = None;
        }
        if !has(Controller::Cpu) {
            l.cpu_max = None;
        }
        if !has(Controller::Pids) {
            l.pids_max = None;
        }
        l
    }

    /// The quotas in force, read back from the kernel.
    pub fn limits(&self) -> Result<Limits> {
        apply::read_back(&*self.fs, &self.layout, &self.leaf)
    }

    pub fn stats(&self) -> Result<Stats> {
        self.stat_files().read()
    }

    /// The files [`Instance::stats`] and [`Instance::procs`] read, found once, for a reader
    /// that reads them again and again (the sampler).
    pub fn stat_files(&self) -> StatFiles {
        StatFiles::new(self.fs.clone(), &self.layout, &self.leaf)
    }

    /// Whether any process is left (from v2 `cgroup.events`, else the v1 `cgroup.procs`).
    pub fn populated(&self) -> Result<bool> {
        stats::populated(&*self.fs, &self.leaf)
    }

    /// Pids in the leaf: the unified hierarchy's view where there is one.
    pub fn procs(&self) -> Result<Vec<u32>> {
        match self.leaf.dirs().next() {
            Some((_, dir)) => fs::procs(&*self.fs, dir),
            None => Ok(Vec::new()),
        }
    }

    /// Moves an already running process into the leaf in every hierarchy (for processes
    /// not started through [`JoinFds::spawn`]).
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for (_, dir) in self.leaf.dirs() {
            fs::add_process(&*self.fs, dir, pid)?;
        }
        Ok(())
    }

    /// Fds a child uses to join this leaf between fork and exec; open them before forking.
    pub fn join_fds(&self) -> Result<JoinFds> {
        JoinFds::open(&*self.fs, &self.leaf)
    }

    /// Kills every process of the instance, including ones that double-forked or called
    /// setsid; `try_remove` then tells when they are gone.
    pub fn kill(&self) -> Result<()> {
        self.kill_with(KillStrategy::Auto)
    }

    pub fn kill_with(&self, strategy: KillStrategy) -> Result<()> {
        kill::kill(&*self.fs, &self.layout, &self.leaf, strategy)
    }

    /// Removes the leaf in every hierarchy once it is empty; `Pending` while processes are
    /// still exiting (poll again, e.g. from a timer, after `kill`). The plugin's directory
    /// stays: `Subtree::remove_plugin` takes it away when the plugin is gone for good.
    pub fn try_remove(&self) -> Result<Removal> {
        remove::try_remove_set(&*self.fs, &self.leaf)
    }
}
