//! Parsing `/proc/<pid>/cgroup`: which cgroup a process is in, per hierarchy.

use std::path::{Path, PathBuf};

use super::error::{CgroupError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy_id: u32,
    /// Controllers of a v1 hierarchy (`name=systemd` included); empty for the v2 line.
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl Membership {
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }
}

pub fn parse(text: &str) -> Result<Vec<Membership>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |reason| CgroupError::ProcParse { file: "/proc/self/cgroup", line: line.to_owned(), reason };
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected id:controllers:path"));
        };
        let hierarchy_id = id.parse().map_err(|_| bad("hierarchy id is not a number"))?;
        // A cgroup removed while we sit in it is shown with this suffix; it is still our path.
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(bad("path is not absolute"));
        }
        out.push(Membership {
            hierarchy_id,
            controllers: controllers.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

/// The v2 path (the `0::` line).
pub fn v2_path(entries: &[Membership]) -> Option<&Path> {
    entries.iter().find(|m| m.is_v2()).map(|m| m.path.as_path())
}

/// The path in the v1 hierarchy whose mount carries `mount_options`: the line whose
/// controller list is wholly among them (`cpu,cpuacct` matches a mount `rw,cpu,cpuacct`).
pub fn v1_path<'a>(entries: &'a [Membership], mount_options: &[String]) -> Option<&'a Path> {
    entries
        .iter()
        .filter(|m| !m.is_v2())
        .find(|m| m.controllers.iter().all(|c| mount_options.contains(c)))
        .map(|m| m.path.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/01ad\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    fn opts(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn hybrid_lines() {
        let e = parse(HYBRID).unwrap();
        assert_eq!(e.len(), 6);
        assert_eq!(v2_path(&e), Some(Path::new("/")));
        assert_eq!(v1_path(&e, &opts("rw,memory")), Some(Path::new("/process_api/01ad")));
        assert_eq!(v1_path(&e, &opts("rw,cpu")), Some(Path::new("/")));
        assert_eq!(v1_path(&e, &opts("rw,freezer")), None);
    }

    #[test]
    fn comounted_and_pure_v2() {
        let e = parse("3:cpu,cpuacct:/a\n").unwrap();
        assert_eq!(v1_path(&e, &opts("rw,cpu,cpuacct")), Some(Path::new("/a")));
        assert_eq!(v1_path(&e, &opts("rw,cpu")), None);
        let e = parse("0::/system.slice/sup.service (deleted)\n").unwrap();
        assert_eq!(v2_path(&e), Some(Path::new("/system.slice/sup.service")));
    }

    #[test]
    fn paths_may_contain_colons() {
        let e = parse("0::/a:b\n").unwrap();
        assert_eq!(v2_path(&e), Some(Path::new("/a:b")));
    }

    #[test]
    fn malformed() {
        assert!(parse("x::/\n").is_err());
        assert!(parse("0:/\n").is_err());
        assert!(parse("0::relative\n").is_err());
    }
}
