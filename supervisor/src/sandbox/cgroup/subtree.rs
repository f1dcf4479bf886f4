//! The delegated subtree `<parent>/<name>` in every hierarchy in use: building it (with the
//! `supervisor` leaf and the v2 controllers enabled down the path), creating instance leaves
//! under `plugins/`, and tearing it down again.
//!
//! Nothing is written outside the subtree except enabling controllers in the parent's
//! `cgroup.subtree_control` (pure v2 only, when not yet enabled) and moving this process.

use std::path::PathBuf;
use std::sync::Arc;

use super::apply;
use super::controller::Controller;
use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs, DirLock};
use super::instance::Instance;
use super::layout::{HierarchyId, Layout};
use super::limits::Limits;
use super::parse;
use super::paths::{self, CgroupSet, PLUGINS_DIR, SUPERVISOR_LEAF};
use super::remove::{self, Removal};
use super::stale;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtreeConfig {
    /// Directory name of the subtree root.
    pub name: String,
    /// Parent cgroup (a path within each hierarchy, like `/system.slice/x.service`);
    /// `None` means the cgroup this process was started in.
    pub parent: Option<PathBuf>,
    /// Move this process into the `supervisor` leaf. On pure v2 this is what lets the
    /// parent enable controllers (no internal processes); on hybrid hosts it is optional.
    pub move_self: bool,
}

impl Default for SubtreeConfig {
    fn default() -> Self {
        SubtreeConfig { name: paths::DEFAULT_NAME.to_owned(), parent: None, move_self: false }
    }
}

/// Ownership of a subtree by one live supervisor: an `flock` on the root's directory in
/// every hierarchy it uses. The kernel lets them go when the holder dies, so the locks tell
/// a live owner's subtree, which must never be touched, from one a dead supervisor left,
/// which the next start cleans. Every hierarchy, because two supervisors whose unified
/// cgroups differ may still share a v1 cgroup (systemd without per-service accounting),
/// and so a v1 root.
#[derive(Debug)]
pub struct SubtreeLock {
    held: Vec<(PathBuf, DirLock)>,
}

impl SubtreeLock {
    /// The locked directories (the root, in each hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.held.iter().map(|(d, _)| d.clone()).collect()
    }

    fn holds(&self, dir: &std::path::Path) -> bool {
        self.held.iter().any(|(d, _)| d == dir)
    }
}

/// The subtree of one supervisor. It has no `Drop`: removal has to be polled while killed
/// processes exit, and after a crash no destructor runs anyway; `teardown` is the orderly
/// way out and `cleanup_stale` at the next start is the backstop.
#[derive(Debug)]
pub struct Subtree {
    fs: Arc<dyn CgroupFs>,
    layout: Arc<Layout>,
    parent: CgroupSet,
    root: CgroupSet,
    /// Where this process was before `move_self`, to go back on teardown.
    origin: Option<CgroupSet>,
    /// Controllers we enabled in the parent's `cgroup.subtree_control` (and must disable
    /// again before this process can move back there).
    enabled_in_parent: Vec<Controller>,
    /// Held until the subtree is gone (dropped with it).
    lock: SubtreeLock,
}

fn plus(cs: &[Controller]) -> String {
    cs.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ")
}

fn minus(cs: &[Controller]) -> String {
    cs.iter().map(|c| format!("-{c}")).collect::<Vec<_>>().join(" ")
}

impl Subtree {
    /// Becomes the owner of the subtree: makes its root directory in each hierarchy when
    /// missing, and locks them all. A live supervisor holding any of them is `InUse`, naming
    /// its pid, and nothing of its subtree is touched (the directories this call made are
    /// taken away again).
    pub fn lock(fs: &dyn CgroupFs, layout: &Layout, config: &SubtreeConfig) -> Result<SubtreeLock> {
        let (parent, root) = paths::subtree_root(layout, config.parent.as_deref(), &config.name)?;
        for (_, p) in parent.dirs() {
            if !fs.exists(p) {
                return Err(CgroupError::MissingParent { cgroup: p.to_path_buf() });
            }
        }
        let mut lock = SubtreeLock { held: Vec::new() };
        let mut made = Vec::new();
        let outcome = root.dirs().try_for_each(|(_, dir)| {
            match fs::mkdir(fs, dir) {
                Ok(()) => made.push(dir.to_path_buf()),
                Err(CgroupError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match fs.lock_dir(dir) {
                Ok(held) => {
                    lock.held.push((dir.to_path_buf(), held));
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    Err(CgroupError::InUse { pid: fs.lock_holder(dir), cgroup: dir.to_path_buf() })
                }
                Err(source) => Err(CgroupError::Lock { cgroup: dir.to_path_buf(), source }),
            }
        });
        match outcome {
            Ok(()) => Ok(lock),
            Err(e) => {
                drop(lock);
                for dir in made.iter().rev() {
                    let _ = fs.rmdir(dir);
                }
                Err(e)
            }
        }
    }

    /// Kills and removes what a previous (dead) run left at the subtree root; call after
    /// `lock` and before `create`, and again while it returns `Pending`. The lock is what
    /// keeps this from ever touching a live supervisor's plugins.
    pub fn cleanup_stale(
        fs: &dyn CgroupFs,
        layout: &Layout,
        config: &SubtreeConfig,
        lock: &SubtreeLock,
    ) -> Result<Removal> {
        let (_, root) = paths::subtree_root(layout, config.parent.as_deref(), &config.name)?;
        stale::cleanup_stale_keeping(fs, &root, &lock.dirs())
    }

    /// Builds the subtree under `lock`. Fails with `AlreadyExists` if anything is there
    /// beneath the locked roots (run `cleanup_stale` first); on any failure, what was built
    /// is taken down again, the roots included.
    pub fn create(
        fs: Arc<dyn CgroupFs>,
        layout: Arc<Layout>,
        config: &SubtreeConfig,
        lock: SubtreeLock,
    ) -> Result<Subtree> {
        let (parent, root) = paths::subtree_root(&layout, config.parent.as_deref(), &config.name)?;
        for (_, dir) in parent.dirs() {
            if !fs.exists(dir) {
                return Err(CgroupError::MissingParent { cgroup: dir.to_path_buf() });
            }
        }
        for (_, dir) in root.dirs() {
            let leftover = if lock.holds(dir) { !fs::child_dirs(&*fs, dir)?.is_empty() } else { fs.exists(dir) };
            if leftover {
                // The locked roots are ours to take away again where they are empty.
                for locked in lock.dirs() {
                    let _ = fs.rmdir(&locked);
                }
                return Err(CgroupError::AlreadyExists { cgroup: dir.to_path_buf() });
            }
        }
        let mut st = Subtree { fs, layout, parent, root, origin: None, enabled_in_parent: Vec::new(), lock };
        match st.build(config.move_self) {
            Ok(()) => Ok(st),
            Err(e) => {
                // Best effort: the build error is what the caller needs to see.
                let _ = st.teardown();
                Err(e)
            }
        }
    }

    fn build(&mut self, move_self: bool) -> Result<()> {
        let fs = &*self.fs;
        for set in [self.root.clone(), self.supervisor_leaf(), self.plugins()] {
            for (_, dir) in set.dirs() {
                if !self.lock.holds(dir) {
                    fs::mkdir(fs, dir)?;
                }
            }
        }
        if move_self {
            self.origin = Some(paths::cgroup_set_at(&self.layout, None)?);
            let me = fs.self_pid();
            for (_, dir) in self.supervisor_leaf().dirs() {
                fs::add_process(fs, dir, me)?;
            }
        }
        let wanted = self.v2_controllers();
        if let (Some(parent), false) = (self.parent.unified(), wanted.is_empty()) {
            let enabled = fs::read(fs, parent, "cgroup.subtree_control")?;
            let enabled = parse::names(&enabled);
            let missing: Vec<Controller> = wanted.iter().copied().filter(|c| !enabled.contains(&c.name())).collect();
            if !missing.is_empty() {
                let pids = fs::procs(fs, parent)?;
                let is_hierarchy_root = self.layout.unified().is_some_and(|u| u.mount_point == parent);
                if !pids.is_empty() && !is_hierarchy_root {
                    return Err(CgroupError::InternalProcesses { cgroup: parent.to_path_buf(), pids });
                }
                fs::write(fs, parent, "cgroup.subtree_control", &plus(&missing))?;
                self.enabled_in_parent = missing;
            }
            for set in [&self.root, &self.plugins()] {
                if let Some(dir) = set.unified() {
                    fs::write(fs, dir, "cgroup.subtree_control", &plus(&wanted))?;
                }
            }
        }
        Ok(())
    }

    /// Quota controllers the unified hierarchy gives, to enable down the v2 path.
    fn v2_controllers(&self) -> Vec<Controller> {
        Controller::QUOTA.into_iter().filter(|c| self.layout.source(*c) == Some(HierarchyId::Unified)).collect()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn root(&self) -> &CgroupSet {
        &self.root
    }

    pub fn supervisor_leaf(&self) -> CgroupSet {
        self.root.child(SUPERVISOR_LEAF)
    }

    fn plugins(&self) -> CgroupSet {
        self.root.child(PLUGINS_DIR)
    }

    /// `plugins/cgroup.kill` in the unified hierarchy, when this kernel has it: one write
    /// kills every plugin process, whatever it forked.
    pub fn plugins_kill_file(&self) -> Option<PathBuf> {
        let file = self.plugins().unified()?.join("cgroup.kill");
        self.fs.exists(&file).then_some(file)
    }

    /// Creates `plugins/<plugin>/<instance>` and applies `limits` to it. Quotas this host
    /// cannot enforce fail with `ControllerUnavailable` before anything is created; the
    /// caller decides whether to retry without an optional quota.
    pub fn create_instance(&self, plugin: &str, instance: &str, limits: &Limits) -> Result<Instance> {
        paths::validate_name("plugin", plugin)?;
        paths::validate_name("instance", instance)?;
        limits.validate()?;
        apply::check_available(&self.layout, limits)?;
        let fs = &*self.fs;
        let plugin_set = self.plugins().child(plugin);
        for (_, dir) in plugin_set.dirs() {
            match fs::mkdir(fs, dir) {
                Ok(()) | Err(CgroupError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let wanted = self.v2_controllers();
        if let (Some(dir), false) = (plugin_set.unified(), wanted.is_empty()) {
            let enabled = fs::read(fs, dir, "cgroup.subtree_control")?;
            if wanted.iter().any(|c| !parse::names(&enabled).contains(&c.name())) {
                fs::write(fs, dir, "cgroup.subtree_control", &plus(&wanted))?;
            }
        }
        let leaf = plugin_set.child(instance);
        for (_, dir) in leaf.dirs() {
            if let Err(e) = fs::mkdir(fs, dir) {
                let _ = remove::try_remove_set(fs, &leaf);
                return Err(e);
            }
        }
        let inst = Instance {
            fs: self.fs.clone(),
            layout: self.layout.clone(),
            plugin: plugin.to_owned(),
            name: instance.to_owned(),
            leaf,
        };
        if let Err(e) = inst.set_limits(limits) {
            let _ = inst.try_remove();
            return Err(e);
        }
        Ok(inst)
    }

    /// Removes `plugins/<plugin>` once it has no instances left.
    pub fn remove_plugin(&self, plugin: &str) -> Result<Removal> {
        paths::validate_name("plugin", plugin)?;
        remove::try_remove_set(&*self.fs, &self.plugins().child(plugin))
    }

    /// Kills and removes one instance's leaf, e.g. one left by an instance
    /// whose removal was still pending. Poll until `Removed`.
    pub fn remove_instance(&self, plugin: &str, instance: &str) -> Result<Removal> {
        paths::validate_name("plugin", plugin)?;
        paths::validate_name("instance", instance)?;
        stale::cleanup_stale(&*self.fs, &self.plugins().child(plugin).child(instance))
    }

    /// Kills every instance left, moves this process back where it started (if it moved),
    /// and removes the subtree. Returns `Pending` while killed processes are still exiting:
    /// call again until `Removed`. Each step is idempotent.
    pub fn teardown(&mut self) -> Result<Removal> {
        let fs = &*self.fs;
        if let pending @ Removal::Pending { .. } = stale::cleanup_stale(fs, &self.plugins())? {
            return Ok(pending);
        }
        // v2 only lets a process into a cgroup whose subtree_control is empty (unless it is
        // the root), so the controllers go off bottom-up before moving back.
        if let Some(dir) = self.root.unified().filter(|d| fs.exists(d)) {
            let on = fs::read(fs, dir, "cgroup.subtree_control")?;
            let on: Vec<Controller> = parse::names(&on).into_iter().filter_map(Controller::from_name).collect();
            if !on.is_empty() {
                fs::write(fs, dir, "cgroup.subtree_control", &minus(&on))?;
            }
        }
        if let (Some(dir), false) = (self.parent.unified(), self.enabled_in_parent.is_empty()) {
            // Only undone when it blocks our way back: disabling strips the controllers from
            // every sibling too, which may have started using them since.
            let returning_here = self.origin.as_ref().and_then(CgroupSet::unified) == Some(dir);
            let is_hierarchy_root = self.layout.unified().is_some_and(|u| u.mount_point == dir);
            if returning_here && !is_hierarchy_root {
                fs::write(fs, dir, "cgroup.subtree_control", &minus(&self.enabled_in_parent))?;
            }
            self.enabled_in_parent.clear();
        }
        if let Some(origin) = &self.origin {
            let me = fs.self_pid();
            for (_, dir) in origin.dirs() {
                fs::add_process(fs, dir, me)?;
            }
            self.origin = None;
        }
        let mut outcome = Removal::Removed;
        for (_, dir) in self.root.dirs() {
            if let pending @ Removal::Pending { .. } = remove::try_remove_tree(fs, dir)? {
                outcome = pending;
            }
        }
        Ok(outcome)
    }
}
