//! Which hierarchy gives each controller on this host, and where the unified (v2) hierarchy
//! is, detected from `/proc/self/mountinfo`, `/proc/self/cgroup` and the parent's
//! `cgroup.controllers`.
//!
//! Our own detection rather than cgroups-rs's `hierarchies::auto()`: that one looks only at
//! `/sys/fs/cgroup` (so a hybrid host counts as v1 and `/sys/fs/cgroup/unified` is never
//! seen), and its V1 hierarchy binds every mounted v1 controller, cpuset and devices included.

use std::path::{Path, PathBuf};

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs};
use super::mountinfo::{self, CgroupMount};
use super::parse;
use super::proc_cgroup::{self, Membership};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// Every controller we use comes from the unified hierarchy.
    PureV2,
    /// Unified hierarchy for membership, kill, freeze and events; v1 for some controllers.
    Hybrid,
    V1Only,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HierarchyId {
    Unified,
    V1(usize),
}

/// One mounted hierarchy this layer uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    pub mount_point: PathBuf,
    /// The cgroup path visible at the mount point (`/` unless namespaced or bind-mounted).
    pub mount_root: PathBuf,
    /// This process's cgroup in the hierarchy, as `/proc/self/cgroup` names it.
    pub own_cgroup: PathBuf,
    /// The controllers we take from this hierarchy.
    pub controllers: Vec<Controller>,
}

impl Hierarchy {
    /// The directory of a cgroup given by its path within the hierarchy; `None` when the
    /// path is not visible through this mount.
    pub fn dir_of(&self, cgroup: &Path) -> Option<PathBuf> {
        let rel = cgroup.strip_prefix(&self.mount_root).ok()?;
        // A `..` would lead out of the mount, and out of the cgroup filesystem.
        if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return None;
        }
        Some(self.mount_point.join(rel))
    }

    pub fn own_dir(&self) -> Option<PathBuf> {
        self.dir_of(&self.own_cgroup)
    }
}

#[derive(Clone, Debug)]
pub struct Layout {
    kind: LayoutKind,
    unified: Option<Hierarchy>,
    v1: Vec<Hierarchy>,
    sources: [Option<HierarchyId>; Controller::ALL.len()],
    notes: Vec<String>,
}

impl Layout {
    /// Detects the layout of the running process. `parent` is the configured parent cgroup
    /// (a path within each hierarchy); by default the process's own cgroup.
    pub fn detect(fs: &dyn CgroupFs, parent: Option<&Path>) -> Result<Layout> {
        let read =
            |file: &'static str| fs.read(Path::new(file)).map_err(|source| CgroupError::ProcRead { file, source });
        let mountinfo = read("/proc/self/mountinfo")?;
        let self_cgroup = read("/proc/self/cgroup")?;
        Layout::from_proc(fs, &mountinfo, &self_cgroup, parent)
    }

    /// Detection from the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`; `fs` is
    /// only asked for the parent's `cgroup.controllers` on the unified hierarchy.
    pub fn from_proc(fs: &dyn CgroupFs, mountinfo: &str, self_cgroup: &str, parent: Option<&Path>) -> Result<Layout> {
        let mounts = mountinfo::cgroup_mounts(mountinfo)?;
        let members = proc_cgroup::parse(self_cgroup)?;
        let mut notes = Vec::new();

        let unified = mounts
            .iter()
            .find(|m| m.version == Version::V2)
            .and_then(|m| resolve(m, proc_cgroup::v2_path(&members), &mut notes));

        let offered = match &unified {
            Some(u) => offered_controllers(fs, u, parent)?,
            None => Vec::new(),
        };

        let mut layout =
            Layout { kind: LayoutKind::V1Only, unified, v1: Vec::new(), sources: [None; Controller::ALL.len()], notes };
        for c in Controller::QUOTA {
            if offered.iter().any(|o| o == c.name()) {
                layout.set_source(c, HierarchyId::Unified);
            } else {
                layout.take_from_v1(c, &mounts, &members);
            }
        }
        if layout.unified.is_some() {
            layout.set_source(Controller::Freezer, HierarchyId::Unified);
        } else {
            layout.take_from_v1(Controller::Cpuacct, &mounts, &members);
            layout.take_from_v1(Controller::Freezer, &mounts, &members);
        }
        layout.kind = match (&layout.unified, layout.v1.is_empty()) {
            (Some(_), true) => LayoutKind::PureV2,
            (Some(_), false) => LayoutKind::Hybrid,
            (None, false) => LayoutKind::V1Only,
            (None, true) => return Err(CgroupError::NoHierarchy),
        };
        Ok(layout)
    }

    fn set_source(&mut self, c: Controller, id: HierarchyId) {
        self.sources[c.index()] = Some(id);
        let h = match id {
            HierarchyId::Unified => self.unified.as_mut(),
            HierarchyId::V1(i) => self.v1.get_mut(i),
        };
        if let Some(h) = h {
            h.controllers.push(c);
        }
    }

    fn take_from_v1(&mut self, c: Controller, mounts: &[CgroupMount], members: &[Membership]) {
        let Some(m) = mounts.iter().find(|m| m.version == Version::V1 && m.options.iter().any(|o| o == c.name()))
        else {
            return;
        };
        let id = match self.v1.iter().position(|h| h.mount_point == m.mount_point) {
            Some(i) => i,
            None => {
                let own = proc_cgroup::v1_path(members, &m.options);
                let Some(h) = resolve(m, own, &mut self.notes) else {
                    return;
                };
                self.v1.push(h);
                self.v1.len() - 1
            }
        };
        self.set_source(c, HierarchyId::V1(id));
    }

    pub fn kind(&self) -> LayoutKind {
        self.kind
    }

    pub fn unified(&self) -> Option<&Hierarchy> {
        self.unified.as_ref()
    }

    /// The hierarchy that gives `c`, if this host has it.
    pub fn source(&self, c: Controller) -> Option<HierarchyId> {
        self.sources[c.index()]
    }

    pub fn hierarchy(&self, id: HierarchyId) -> Option<&Hierarchy> {
        match id {
            HierarchyId::Unified => self.unified.as_ref(),
            HierarchyId::V1(i) => self.v1.get(i),
        }
    }

    /// Every hierarchy the subtree lives in: the unified one first, then the v1 ones that
    /// give a controller we use. No other hierarchy is ever written.
    pub fn hierarchies(&self) -> impl Iterator<Item = (HierarchyId, &Hierarchy)> {
        self.unified
            .iter()
            .map(|h| (HierarchyId::Unified, h))
            .chain(self.v1.iter().enumerate().map(|(i, h)| (HierarchyId::V1(i), h)))
    }

    /// Why a mounted hierarchy was left out (for `doctor`).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

fn resolve(m: &CgroupMount, own: Option<&Path>, notes: &mut Vec<String>) -> Option<Hierarchy> {
    let Some(own) = own else {
        notes.push(format!("{}: /proc/self/cgroup has no line for this hierarchy", m.mount_point.display()));
        return None;
    };
    let h = Hierarchy {
        version: m.version,
        mount_point: m.mount_point.clone(),
        mount_root: m.root.clone(),
        own_cgroup: own.to_path_buf(),
        controllers: Vec::new(),
    };
    if h.own_dir().is_none() {
        notes.push(format!(
            "{}: our cgroup {} is outside the mounted part {}",
            m.mount_point.display(),
            own.display(),
            m.root.display()
        ));
        return None;
    }
    Some(h)
}

/// The directory of the unified-hierarchy cgroup a `/proc/<pid>/cgroup` text
/// (`proc_cgroup`) names, through the cgroup2 mount `/proc/self/mountinfo`
/// (`mountinfo`) lists: `None` without either, or when that cgroup lies outside the
/// mounted part. What [`Layout::unified`]'s `own_dir` is, for any process and without
/// the controllers a layout asks the kernel for.
pub fn unified_dir(mountinfo: &str, proc_cgroup: &str) -> Option<PathBuf> {
    let mount = mountinfo::cgroup_mounts(mountinfo).ok()?.into_iter().find(|m| m.version == Version::V2)?;
    let members = proc_cgroup::parse(proc_cgroup).ok()?;
    resolve(&mount, proc_cgroup::v2_path(&members), &mut Vec::new())?.own_dir()
}

fn offered_controllers(fs: &dyn CgroupFs, unified: &Hierarchy, parent: Option<&Path>) -> Result<Vec<String>> {
    let parent = parent.unwrap_or(&unified.own_cgroup);
    let dir = unified.dir_of(parent).filter(|d| fs.exists(d)).ok_or_else(|| CgroupError::MissingParent {
        cgroup: unified.mount_point.join(parent.strip_prefix("/").unwrap_or(parent)),
    })?;
    let text = fs::read(fs, &dir, "cgroup.controllers")?;
    Ok(parse::names(&text).into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::super::fake_fs::FakeFs;
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n5:devices:/\n\
        4:memory:/process_api/01ad\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    const V2_MOUNTS: &str =
        "25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    const V2_SELF: &str = "0::/system.slice/sup.service\n";

    const V1_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";
    const V1_SELF: &str = "5:freezer:/\n4:pids:/user.slice\n3:memory:/user.slice\n2:cpu,cpuacct:/user.slice\n";

    #[test]
    fn the_unified_cgroup_is_found_through_its_mount() {
        let cgroup = "4:memory:/a\n0::/\n";
        assert_eq!(unified_dir(HYBRID_MOUNTS, cgroup), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let ns = "1320 1300 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(unified_dir(ns, "0::/\n"), Some(PathBuf::from("/sys/fs/cgroup")));
        let bound = "1320 1300 0:27 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(unified_dir(bound, "0::/kubepods/pod1/c1\n"), Some(PathBuf::from("/sys/fs/cgroup/c1")));
    }

    #[test]
    fn without_a_unified_hierarchy_there_is_no_unified_cgroup() {
        assert_eq!(unified_dir(HYBRID_MOUNTS, "4:memory:/a\n"), None);
        let v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(unified_dir(v1, "0::/\n"), None);
    }

    fn hybrid_fs() -> FakeFs {
        let fs = FakeFs::new(1);
        fs.add_v2("/sys/fs/cgroup/unified", &["hugetlb"]);
        fs
    }

    #[test]
    fn hybrid_like_this_machine() {
        let fs = hybrid_fs();
        let l = Layout::from_proc(&fs, HYBRID_MOUNTS, HYBRID_SELF, None).unwrap();
        assert_eq!(l.kind(), LayoutKind::Hybrid);
        let u = l.unified().unwrap();
        assert_eq!(u.own_dir(), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let mem = l.hierarchy(l.source(Controller::Memory).unwrap()).unwrap();
        assert_eq!(mem.version, Version::V1);
        assert_eq!(mem.own_dir(), Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/01ad")));
        let cpu = l.hierarchy(l.source(Controller::Cpu).unwrap()).unwrap();
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(l.source(Controller::Pids).is_some());
        assert_eq!(l.source(Controller::Freezer), Some(HierarchyId::Unified));
        assert_eq!(l.source(Controller::Cpuacct), None, "usage comes from unified cpu.stat");
        let mounts: Vec<_> = l.hierarchies().map(|(_, h)| h.mount_point.clone()).collect();
        assert_eq!(mounts.len(), 4, "unified + memory + cpu + pids, never cpuset/devices: {mounts:?}");
        assert!(!mounts.iter().any(|m| m.ends_with("cpuset") || m.ends_with("devices")));
    }

    #[test]
    fn pure_v2_with_delegated_controllers() {
        let fs = FakeFs::new(1);
        fs.add_v2("/sys/fs/cgroup", &["cpu", "io", "memory", "pids"]);
        fs.add_cgroup("/sys/fs/cgroup/system.slice/sup.service");
        fs.write(Path::new("/sys/fs/cgroup/cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
        fs.write(Path::new("/sys/fs/cgroup/system.slice/cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
        let l = Layout::from_proc(&fs, V2_MOUNTS, V2_SELF, None).unwrap();
        assert_eq!(l.kind(), LayoutKind::PureV2);
        for c in Controller::QUOTA {
            assert_eq!(l.source(c), Some(HierarchyId::Unified), "{c}");
        }
        assert_eq!(l.hierarchies().count(), 1);
        assert_eq!(l.unified().unwrap().own_dir(), Some(PathBuf::from("/sys/fs/cgroup/system.slice/sup.service")));
    }

    #[test]
    fn pure_v2_without_memory_delegated() {
        let fs = FakeFs::new(1);
        fs.add_v2("/sys/fs/cgroup", &["cpu", "memory", "pids"]);
        fs.add_cgroup("/sys/fs/cgroup/system.slice/sup.service");
        fs.write(Path::new("/sys/fs/cgroup/cgroup.subtree_control"), "+cpu +pids").unwrap();
        fs.write(Path::new("/sys/fs/cgroup/system.slice/cgroup.subtree_control"), "+pids").unwrap();
        let l = Layout::from_proc(&fs, V2_MOUNTS, V2_SELF, None).unwrap();
        assert_eq!(l.source(Controller::Memory), None);
        assert_eq!(l.source(Controller::Cpu), None);
        assert_eq!(l.source(Controller::Pids), Some(HierarchyId::Unified));
    }

    #[test]
    fn configured_parent_must_exist() {
        let fs = FakeFs::new(1);
        fs.add_v2("/sys/fs/cgroup", &["cpu", "memory", "pids"]);
        fs.add_cgroup("/sys/fs/cgroup/plugins.slice");
        let l = Layout::from_proc(&fs, V2_MOUNTS, "0::/\n", Some(Path::new("/plugins.slice"))).unwrap();
        assert_eq!(l.source(Controller::Memory), None, "root did not enable memory for it");
        let e = Layout::from_proc(&fs, V2_MOUNTS, "0::/\n", Some(Path::new("/nope"))).unwrap_err();
        assert!(matches!(e, CgroupError::MissingParent { .. }), "{e}");
        assert!(e.to_string().contains("/sys/fs/cgroup/nope"));
    }

    #[test]
    fn v1_only_with_comounted_cpu() {
        let fs = FakeFs::new(1);
        let l = Layout::from_proc(&fs, V1_MOUNTS, V1_SELF, None).unwrap();
        assert_eq!(l.kind(), LayoutKind::V1Only);
        assert!(l.unified().is_none());
        assert_eq!(l.source(Controller::Cpu), l.source(Controller::Cpuacct));
        let cpu = l.hierarchy(l.source(Controller::Cpu).unwrap()).unwrap();
        assert_eq!(cpu.controllers, vec![Controller::Cpu, Controller::Cpuacct]);
        assert_eq!(cpu.own_dir(), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice")));
        let fr = l.hierarchy(l.source(Controller::Freezer).unwrap()).unwrap();
        assert_eq!(fr.own_dir(), Some(PathBuf::from("/sys/fs/cgroup/freezer")));
        assert_eq!(l.hierarchies().count(), 4);
    }

    #[test]
    fn unreachable_hierarchies_are_noted_not_used() {
        let fs = FakeFs::new(1);
        let mounts = "1 0 0:1 /other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      2 0 0:2 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                      3 0 0:3 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let l = Layout::from_proc(&fs, mounts, "2:memory:/mine\n1:cpu:/\n", None).unwrap();
        assert_eq!(l.source(Controller::Memory), None);
        assert_eq!(l.source(Controller::Pids), None);
        assert_eq!(l.source(Controller::Cpu), Some(HierarchyId::V1(0)));
        assert_eq!(l.notes().len(), 2, "{:?}", l.notes());
        assert!(l.notes()[0].contains("outside the mounted part"), "{:?}", l.notes());
        let only_unreachable = "1 0 0:1 /other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let e = Layout::from_proc(&fs, only_unreachable, "2:memory:/mine\n", None).unwrap_err();
        assert!(matches!(e, CgroupError::NoHierarchy));
        let e = Layout::from_proc(&fs, "", "", None).unwrap_err();
        assert!(matches!(e, CgroupError::NoHierarchy));
    }

    #[test]
    fn detect_reads_proc_files_through_the_fs() {
        let fs = hybrid_fs();
        fs.set_file("/proc/self/mountinfo", HYBRID_MOUNTS);
        fs.set_file("/proc/self/cgroup", HYBRID_SELF);
        let l = Layout::detect(&fs, None).unwrap();
        assert_eq!(l.kind(), LayoutKind::Hybrid);
        let e = Layout::detect(&FakeFs::new(1), None).unwrap_err();
        assert!(e.to_string().contains("/proc/self/mountinfo"), "{e}");
    }
}
