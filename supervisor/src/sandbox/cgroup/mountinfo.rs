//! Parsing `/proc/self/mountinfo` down to the cgroup mounts (v1 `cgroup` and v2 `cgroup2`).
//!
//! Our own parser rather than cgroups-rs's: its `mountinfo_self()` reads the live file and
//! keeps only v1 mounts, and its line parser is private; layout detection needs both versions
//! from a text we can test.

use std::path::PathBuf;

use super::controller::Version;
use super::error::{CgroupError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: Version,
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point: `/` unless a sub-tree was bind-mounted or the
    /// mount was made inside a cgroup namespace.
    pub root: PathBuf,
    /// Super options: for v1 they name the bound controllers (`cpu`, `name=systemd`, ...).
    pub options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Result<Option<CgroupMount>> {
    let bad = |reason| CgroupError::ProcParse { file: "/proc/self/mountinfo", line: line.to_owned(), reason };
    let (head, tail) = line.split_once(" - ").ok_or_else(|| bad("no \" - \" separator"))?;
    let head: Vec<&str> = head.split(' ').collect();
    let tail: Vec<&str> = tail.split(' ').collect();
    if head.len() < 6 || tail.len() < 3 {
        return Err(bad("too few fields"));
    }
    let version = match tail[0] {
        "cgroup" => Version::V1,
        "cgroup2" => Version::V2,
        _ => return Ok(None),
    };
    Ok(Some(CgroupMount {
        version,
        mount_point: PathBuf::from(unescape(head[4])),
        root: PathBuf::from(unescape(head[3])),
        options: tail[2].split(',').map(unescape).collect(),
    }))
}

/// All cgroup mounts, in mount order. A later mount over the same point hides an earlier one,
/// so only the last mount per mount point is kept.
pub fn cgroup_mounts(mountinfo: &str) -> Result<Vec<CgroupMount>> {
    let mut out: Vec<CgroupMount> = Vec::new();
    for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(m) = parse_line(line)? {
            out.retain(|o| o.mount_point != m.mount_point);
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mounts() {
        let m = cgroup_mounts(HYBRID).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].version, Version::V1);
        assert_eq!(m[0].options, vec!["rw", "cpu"]);
        assert_eq!(m[4].version, Version::V2);
        assert_eq!(m[4].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[4].root, PathBuf::from("/"));
    }

    #[test]
    fn optional_fields_escapes_and_namespaced_roots() {
        let text = "29 26 0:26 /kubepods/pod\\0401 /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 master:2 - cgroup cgroup rw,cpu,cpuacct\n\
                    30 1 0:27 / /mnt/with\\040space rw shared:1 - cgroup2 cgroup2 rw,nsdelegate\n\
                    31 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let m = cgroup_mounts(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].root, PathBuf::from("/kubepods/pod 1"));
        assert_eq!(m[0].options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn overmount_hides_earlier_mount() {
        let text = "1 0 0:1 / /sys/fs/cgroup rw - cgroup cgroup rw,memory\n\
                    2 0 0:2 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = cgroup_mounts(text).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].version, Version::V2);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let e = cgroup_mounts("garbage line\n").unwrap_err();
        assert!(e.to_string().contains("garbage line"));
        assert!(cgroup_mounts("1 2 3 - cgroup2 cgroup2 rw\n").is_err());
    }

    #[test]
    fn unescape_leaves_lone_backslashes() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\134x"), "\\x");
        assert_eq!(unescape("\\777"), "\\777");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = cgroup_mounts(&s);
        }
    }
}
