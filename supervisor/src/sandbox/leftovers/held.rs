//! Descriptors the supervisor holds for an instance (its socketpair ends and output pipes)
//! and a revision's sealed image, told apart by the file they refer to, so that a teardown
//! can prove they were closed: no descriptor of the daemon refers to them any more.
//!
//! Sockets and pipes are named by their inode in `/proc/self/fd` (`socket:[123]`), which
//! is read with `readlink` alone: nothing here calls `stat` on what another descriptor
//! refers to (a hung network mount would hang the daemon). A memfd's name is not unique,
//! so its inode is compared with `fstat` on memfds only. Anonymous inodes (pidfds, the
//! seccomp listener) are shared by every descriptor of their kind and cannot be told apart:
//! they are not recorded here, and their closing is proven by ownership instead.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// One held descriptor: what it is for, and the file it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub what: &'static str,
    /// Its `/proc/self/fd` link text.
    link: String,
    /// For a memfd, whose link is not unique: its inode.
    ino: Option<u64>,
}

fn is_memfd(link: &str) -> bool {
    link.starts_with("/memfd:")
}

impl Held {
    /// `fd`'s identity; None for kinds that cannot be told apart (anonymous inodes), or
    /// when `/proc` cannot say.
    pub fn of(what: &'static str, fd: impl AsFd) -> Option<Held> {
        let raw = fd.as_fd().as_raw_fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).ok()?.to_string_lossy().into_owned();
        let unique = link.starts_with("socket:[") || link.starts_with("pipe:[");
        if unique {
            return Some(Held { what, link, ino: None });
        }
        if is_memfd(&link) {
            let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
            return Some(Held { what, link, ino: Some(st.st_ino) });
        }
        None
    }
}

/// Those of `held` that a descriptor in `fd_dir` (normally `/proc/self/fd`) still refers
/// to; an error when the directory cannot be read.
pub fn still_open(fd_dir: &Path, held: &[Held]) -> std::io::Result<Vec<Held>> {
    let mut open: Vec<Held> = Vec::new();
    if held.is_empty() {
        return Ok(open);
    }
    for entry in std::fs::read_dir(fd_dir)?.flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else { continue };
        let link = link.to_string_lossy();
        for h in held.iter().filter(|h| h.link == link) {
            let same = match h.ino {
                None => true,
                Some(ino) => nix::sys::stat::stat(&entry.path()).is_ok_and(|st| st.st_ino == ino),
            };
            if same && !open.contains(h) {
                open.push(h.clone());
            }
        }
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<Held>) -> Vec<&'static str> {
        v.sort_by_key(|h| h.what);
        v.into_iter().map(|h| h.what).collect()
    }

    #[test]
    fn a_socket_is_seen_while_open_and_not_once_closed() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let held = [Held::of("plugin socket", &a).unwrap(), Held::of("host socket", &b).unwrap()];
        let fds = Path::new("/proc/self/fd");
        assert_eq!(sorted(still_open(fds, &held).unwrap()), ["host socket", "plugin socket"]);
        drop(a);
        assert_eq!(sorted(still_open(fds, &held).unwrap()), ["host socket"], "only the end still open");
        // A duplicate keeps it open as well as the original.
        let dup = b.try_clone().unwrap();
        drop(b);
        assert_eq!(sorted(still_open(fds, &held).unwrap()), ["host socket"]);
        drop(dup);
        assert!(still_open(fds, &held).unwrap().is_empty());
        assert!(still_open(Path::new("/nonexistent"), &held).is_err(), "an unreadable table is not a proof");
    }

    #[test]
    fn memfds_of_the_same_name_are_told_apart_by_inode() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let make = || {
            // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
            let raw = unsafe { libc::memfd_create(c"image".as_ptr(), libc::MFD_CLOEXEC) };
            assert!(raw >= 0);
            // SAFETY: `raw` is a fresh, open descriptor owned by nothing else.
            unsafe { OwnedFd::from_raw_fd(raw) }
        };
        let (one, two) = (make(), make());
        let held = [Held::of("sealed image", &one).unwrap()];
        let fds = Path::new("/proc/self/fd");
        assert_eq!(still_open(fds, &held).unwrap().len(), 1);
        drop(one);
        assert!(still_open(fds, &held).unwrap().is_empty(), "another memfd of the same name is not it");
        drop(two);
    }

    #[test]
    fn shared_anonymous_inodes_are_not_recorded() {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: eventfd returns a new descriptor (checked below) that nothing else owns.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: `raw` is a fresh, open descriptor owned by nothing else.
        let ev = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(Held::of("eventfd", &ev), None);
    }
}
