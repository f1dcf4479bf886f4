//! POSIX message queues (`mq_open`) outlive the processes that made them, and the kernel
//! shows them only through an `mqueue` file system: where one is mounted at `/dev/mqueue`
//! (as systemd does), each queue is a file there, owned by its creator, which `unlink`
//! removes ([`super::files`] lists and removes them). Where none is, they cannot be seen,
//! and a teardown says they were not checked.

use std::path::Path;

/// Where the queues are looked for.
pub const DIR: &str = "/dev/mqueue";

/// Whether the mount seen last at `at` in `mountinfo` (the text of
/// `/proc/self/mountinfo`) is an `mqueue` file system: a later mount over the same
/// point hides the earlier ones.
pub fn mounted(mountinfo: &str, at: &Path) -> bool {
    let Some(at) = at.to_str() else { return false };
    mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ...
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let fstype = after.split(' ').next()?;
            (unescape(point) == at).then_some(fstype == "mqueue")
        })
        .unwrap_or(false)
}

/// Whether [`DIR`] is an `mqueue` mount, as this process sees its mounts.
pub fn host_mounted() -> std::io::Result<bool> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounted(&text, Path::new(DIR)))
}

/// A mount point as the kernel writes it: space, tab, newline and backslash as octal
/// escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=100k
30 25 0:26 / /dev/mqueue rw,nosuid,nodev,noexec,relatime shared:14 - mqueue mqueue rw
31 25 0:27 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
40 22 0:40 / /srv/my\\040queues rw - mqueue mqueue rw
";

    #[test]
    fn an_mqueue_mount_is_found_at_its_point_and_only_there() {
        assert!(mounted(MOUNTINFO, Path::new("/dev/mqueue")));
        assert!(!mounted(MOUNTINFO, Path::new("/dev/shm")), "tmpfs");
        assert!(!mounted(MOUNTINFO, Path::new("/dev")));
        assert!(mounted(MOUNTINFO, Path::new("/srv/my queues")), "an escaped point");
        assert!(!mounted("", Path::new("/dev/mqueue")));
        let hidden = format!("{MOUNTINFO}50 30 0:50 / /dev/mqueue rw - tmpfs tmpfs rw\n");
        assert!(!mounted(&hidden, Path::new("/dev/mqueue")), "a later mount hides it");
        assert!(!mounted("garbage\n30 25 0:26 / /dev/mqueue\n", Path::new("/dev/mqueue")));
    }
}
