//! Files outlive the processes that made them where every uid may write: POSIX shared
//! memory and named semaphores are files in `/dev/shm`, POSIX message queues files in
//! `/dev/mqueue` (see [`super::mqueue`]), and `/tmp` and `/var/tmp` hold whatever a plugin
//! wrote there. A teardown finds the entries of a plugin's uid at the top of those
//! directories (what a plugin makes below one of its own goes with it) and removes them.
//! The listing and the removal are a thin layer over `lstat`, `unlink` and `rmdir`; the
//! directories are parameters, so the tests stand a temporary directory in for them.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a directory's entries are, as a verdict names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// `/dev/shm`: `shm_open` and `sem_open` objects.
    Shm,
    /// `/tmp`, `/var/tmp`.
    Tmp,
    /// `/dev/mqueue`: `mq_open` queues.
    Mqueue,
}

/// The directories every uid may write to, searched whenever the uid is.
pub const SHARED: [(&str, Place); 3] = [("/dev/shm", Place::Shm), ("/tmp", Place::Tmp), ("/var/tmp", Place::Tmp)];

/// One entry of the uid at the top of a shared directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub place: Place,
    pub path: PathBuf,
    pub dir: bool,
    /// Device and inode when listed: removal checks the path still names it.
    dev: u64,
    ino: u64,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.place, self.dir) {
            (_, true) => "directory",
            (Place::Shm, false) => "POSIX shared memory",
            (Place::Tmp, false) => "file",
            (Place::Mqueue, false) => "POSIX message queue",
        };
        // The plugin chose the name: escaped, it cannot forge a line of the events, the
        // log or `status`, nor move the operator's terminal.
        let path = crate::observe::forward::clean(&self.path.to_string_lossy());
        write!(f, "{what} {path}")
    }
}

/// The entries directly in `dir` whose owner is `uid` (a symbolic link by its own owner,
/// never its target's). A missing `dir` has none.
pub fn of_uid(dir: &Path, place: Place, uid: u32) -> io::Result<Vec<Entry>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        // lstat: an entry removed meanwhile is no longer there to find.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if meta.uid() == uid {
            let (dev, ino) = (meta.dev(), meta.ino());
            found.push(Entry { place, path: entry.path(), dir: meta.is_dir(), dev, ino });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Removes `entry` (a directory with all it holds, its links not followed) if its path
/// still names what was listed; one already gone counts as removed.
pub fn remove(entry: &Entry, uid: u32) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(&entry.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if (meta.dev(), meta.ino(), meta.uid()) != (entry.dev, entry.ino, uid) {
        // Another file under the name now: not the one listed, so not the plugin's to lose.
        return Ok(());
    }
    let removed = if meta.is_dir() { std::fs::remove_dir_all(&entry.path) } else { std::fs::remove_file(&entry.path) };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The test's own uid, and one that is not it.
    pub(crate) fn uids() -> (u32, u32) {
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        (me, if me == 61234 { 61235 } else { 61234 })
    }

    /// Gives `path` (not what it links to) to `uid`; false where the test may not (not root).
    pub(crate) fn give(path: &Path, uid: u32) -> bool {
        std::os::unix::fs::lchown(path, Some(uid), None).is_ok()
    }

    #[test]
    fn entries_of_the_uid_are_found_and_removed_and_others_left_alone() {
        let (me, other) = uids();
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("shm");
        std::fs::create_dir(&shm).unwrap();
        std::fs::write(shm.join("seg"), b"x").unwrap();
        std::fs::create_dir_all(shm.join("tree/inner")).unwrap();
        std::fs::write(shm.join("tree/inner/f"), b"x").unwrap();
        // A link of the uid to a file of the uid's: the link goes, the file is looked at
        // on its own.
        std::fs::write(shm.join("target"), b"x").unwrap();
        symlink(shm.join("target"), shm.join("link")).unwrap();
        let theirs = shm.join("theirs");
        std::fs::write(&theirs, b"x").unwrap();
        let given = give(&theirs, other);

        let found = of_uid(&shm, Place::Shm, me).unwrap();
        let names: Vec<String> = found.iter().map(|e| e.path.file_name().unwrap().to_string_lossy().into()).collect();
        let mut expected = vec!["link", "seg", "target", "tree"];
        if !given {
            // Not root: it could not be given away, so it is the test's too.
            expected.insert(3, "theirs");
        }
        assert_eq!(names, expected);
        assert!(found.iter().find(|e| e.path.ends_with("tree")).unwrap().dir);
        assert!(of_uid(&shm, Place::Shm, other).unwrap().iter().map(|e| &e.path).eq(given.then_some(&theirs)));
        for e in found.iter().filter(|e| !e.path.ends_with("theirs")) {
            remove(e, me).unwrap();
            assert!(std::fs::symlink_metadata(&e.path).is_err(), "{} removed", e.path.display());
        }
        assert!(theirs.exists(), "another uid's file is left alone");
        remove(&found[0], me).unwrap();
        assert_eq!(of_uid(&dir.path().join("absent"), Place::Tmp, me).unwrap(), []);
    }

    #[test]
    fn an_entry_replaced_since_it_was_listed_is_not_removed() {
        let (me, other) = uids();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        std::fs::write(&path, b"x").unwrap();
        let listed = of_uid(dir.path(), Place::Mqueue, me).unwrap().remove(0);
        let replaced = Entry { ino: listed.ino + 1, ..listed.clone() };
        remove(&replaced, me).unwrap();
        remove(&listed, other).unwrap();
        assert!(path.exists(), "another inode, or another owner, under the name");
        remove(&listed, me).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_verdict_names_each_kind_with_its_path_escaped() {
        let entry = |place, path: &str, dir| Entry { place, path: path.into(), dir, dev: 0, ino: 0 };
        assert_eq!(entry(Place::Shm, "/dev/shm/seg", false).to_string(), "POSIX shared memory /dev/shm/seg");
        assert_eq!(entry(Place::Shm, "/dev/shm/d", true).to_string(), "directory /dev/shm/d");
        assert_eq!(entry(Place::Tmp, "/tmp/x", false).to_string(), "file /tmp/x");
        assert_eq!(entry(Place::Mqueue, "/dev/mqueue/q", false).to_string(), "POSIX message queue /dev/mqueue/q");
        let forged = entry(Place::Tmp, "/tmp/a\n\x1b]0;x\x07", false).to_string();
        assert!(!forged.contains(['\n', '\x1b', '\x07']), "{forged:?}");
    }
}
