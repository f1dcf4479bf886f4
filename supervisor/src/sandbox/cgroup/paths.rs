//! Names and paths of the delegated subtree: `<parent>/<name>/supervisor` and
//! `<parent>/<name>/plugins/<plugin>/<instance>`, one directory per hierarchy in use.

use std::path::{Path, PathBuf};

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};
use super::layout::{HierarchyId, Layout};

pub const DEFAULT_NAME: &str = "plugin-supervisor";
pub const SUPERVISOR_LEAF: &str = "supervisor";
pub const PLUGINS_DIR: &str = "plugins";

/// A name becomes one path component in cgroupfs; anything that could climb out of the
/// subtree, hide as a dot file or collide with a control file is refused.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| Err(CgroupError::InvalidName { what, name: name.to_owned(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if name.starts_with("cgroup.") || Controller::ALL.iter().any(|c| name.starts_with(&format!("{}.", c.name()))) {
        return bad("looks like a control file name");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'+')) {
        return bad("only ASCII letters, digits and -_.@+ are allowed");
    }
    Ok(())
}

/// The configured parent is a cgroup path within each hierarchy (`/system.slice/x.service`):
/// absolute and made of plain names only, so joined to a mount point it stays beneath it.
/// `..` or `.` could walk out of the cgroup filesystem (`/../../../../tmp/x`).
pub fn validate_parent(parent: &Path) -> Result<()> {
    use std::path::Component;
    let bad = |reason| Err(CgroupError::InvalidName { what: "parent", name: parent.display().to_string(), reason });
    if !parent.has_root() {
        return bad("must be an absolute cgroup path, such as /system.slice/x.service");
    }
    if parent.as_os_str().len() > 4096 {
        return bad("longer than 4096 bytes");
    }
    if parent.as_os_str().as_encoded_bytes().contains(&0) {
        return bad("contains a NUL byte");
    }
    if parent.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return bad("must not contain . or .. components");
    }
    Ok(())
}

/// One cgroup, as its directory in each hierarchy the subtree uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSet {
    dirs: Vec<(HierarchyId, PathBuf)>,
}

impl CgroupSet {
    pub fn dirs(&self) -> impl Iterator<Item = (HierarchyId, &Path)> {
        self.dirs.iter().map(|(id, d)| (*id, d.as_path()))
    }

    pub fn dir(&self, id: HierarchyId) -> Option<&Path> {
        self.dirs.iter().find(|(i, _)| *i == id).map(|(_, d)| d.as_path())
    }

    pub fn unified(&self) -> Option<&Path> {
        self.dir(HierarchyId::Unified)
    }

    /// Where `c`'s files are for this cgroup, and which interface they speak.
    pub fn for_controller(&self, layout: &Layout, c: Controller) -> Option<(Version, &Path)> {
        let id = layout.source(c)?;
        let version = layout.hierarchy(id)?.version;
        Some((version, self.dir(id)?))
    }

    pub fn child(&self, name: &str) -> CgroupSet {
        CgroupSet { dirs: self.dirs.iter().map(|(id, d)| (*id, d.join(name))).collect() }
    }
}

/// A cgroup given by its path within each hierarchy (`None`: this process's own cgroups).
pub fn cgroup_set_at(layout: &Layout, cgroup: Option<&Path>) -> Result<CgroupSet> {
    let mut dirs = Vec::new();
    for (id, h) in layout.hierarchies() {
        let cgroup = cgroup.unwrap_or(&h.own_cgroup);
        let dir = h.dir_of(cgroup).ok_or_else(|| CgroupError::MissingParent {
            cgroup: h.mount_point.join(cgroup.strip_prefix("/").unwrap_or(cgroup)),
        })?;
        dirs.push((id, dir));
    }
    Ok(CgroupSet { dirs })
}

/// The parent cgroup and the subtree root, in every hierarchy the layout uses.
pub fn subtree_root(layout: &Layout, parent: Option<&Path>, name: &str) -> Result<(CgroupSet, CgroupSet)> {
    validate_name("subtree", name)?;
    if let Some(p) = parent {
        validate_parent(p)?;
    }
    let parent = cgroup_set_at(layout, parent)?;
    let root = parent.child(name);
    Ok((parent, root))
}

#[cfg(test)]
mod tests {
    use super::super::fake_fs::FakeFs;
    use super::*;
    use proptest::prelude::*;

    fn hybrid() -> Layout {
        let fs = FakeFs::new(1);
        fs.add_v2("/u", &[]);
        Layout::from_proc(
            &fs,
            "1 0 0:1 / /u rw - cgroup2 cgroup2 rw\n2 0 0:2 / /m rw - cgroup cgroup rw,memory\n",
            "0::/\n3:memory:/process_api/h\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn names() {
        for ok in ["plugin-supervisor", "echo", "i0", "a.b", "x@1", "pstest-12-3"] {
            validate_name("plugin", ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "cgroup.procs", "memory.max", "pids.x", "a\n"] {
            assert!(validate_name("plugin", bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("plugin", &"a".repeat(201)).is_err());
    }

    #[test]
    fn root_lands_under_own_cgroup_in_each_hierarchy() {
        let l = hybrid();
        let (parent, root) = subtree_root(&l, None, "sup").unwrap();
        assert_eq!(parent.unified(), Some(Path::new("/u")));
        assert_eq!(root.unified(), Some(Path::new("/u/sup")));
        let (v, mem) = root.for_controller(&l, Controller::Memory).unwrap();
        assert_eq!(v, Version::V1);
        assert_eq!(mem, Path::new("/m/process_api/h/sup"));
        assert!(root.for_controller(&l, Controller::Pids).is_none());
        let leaf = root.child(PLUGINS_DIR).child("echo").child("0");
        assert_eq!(leaf.dirs().count(), 2);
        assert_eq!(leaf.unified(), Some(Path::new("/u/sup/plugins/echo/0")));
    }

    #[test]
    fn configured_parent_applies_to_every_hierarchy() {
        let l = hybrid();
        let (parent, root) = subtree_root(&l, Some(Path::new("/svc")), "sup").unwrap();
        assert_eq!(parent.unified(), Some(Path::new("/u/svc")));
        assert_eq!(root.dir(HierarchyId::V1(0)), Some(Path::new("/m/svc/sup")));
        assert!(subtree_root(&l, None, "../x").is_err());
    }

    #[test]
    fn a_parent_cannot_walk_out_of_the_cgroup_filesystem() {
        let l = hybrid();
        for ok in ["/", "/svc", "/system.slice/x.service", "/user.slice/user@0.service/app.slice"] {
            validate_parent(Path::new(ok)).unwrap();
        }
        for (bad, why) in [
            ("/../../../../tmp/x", "must not contain . or .. components"),
            ("/svc/../../x", "must not contain . or .. components"),
            ("svc", "must be an absolute cgroup path"),
            ("", "must be an absolute cgroup path"),
            ("/a\0b", "contains a NUL byte"),
        ] {
            let e = subtree_root(&l, Some(Path::new(bad)), "sup").unwrap_err();
            assert!(matches!(&e, CgroupError::InvalidName { what: "parent", .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        // Beneath the check, no hierarchy maps a climbing path to a directory either.
        let e = cgroup_set_at(&l, Some(Path::new("/../../tmp/x"))).unwrap_err();
        assert!(matches!(e, CgroupError::MissingParent { .. }), "{e}");
    }

    proptest! {
        #[test]
        fn valid_names_stay_one_component(name in "[A-Za-z0-9._@+-]{1,40}") {
            if validate_name("plugin", &name).is_ok() {
                let p = Path::new("/base").join(&name);
                prop_assert_eq!(p.parent(), Some(Path::new("/base")));
                prop_assert!(name != "." && name != "..");
            }
        }
    }
}
