//! Which file a path named when something was made from it, so that a later look can
//! tell whether it still does: a sealed image's source binary, the loader's files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A file's identity and when it last changed, as `stat` reports it. Any write, and any
/// change of owner, mode or links, changes `ctime`, which user space cannot set back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// What `path` names now (symlinks followed); `None` where nothing is there.
    pub fn now(path: &Path) -> Option<Self> {
        fs::metadata(path).ok().map(|m| Self::of(&m))
    }

    /// Whether the file may have changed again after this stamp without the stamp
    /// telling: its last change is dated within `since..=until`, the time the stamp was
    /// taken in. The kernel dates changes by a clock that moves once a tick (1-10 ms;
    /// finer only from Linux 6.13 on some filesystems), and a directory's size need not
    /// grow with an entry, so a change later within the tick of the stamp leaves every
    /// field equal (git's "racily clean" index entries). Only `ctime` is looked at: every
    /// change the kernel makes sets it, and user space cannot date it, as it can `mtime`
    /// (an archive's files keep the archive's times, possibly in the future). One dated
    /// past `until` was made under a clock set back since, and a later change dates anew.
    /// A filesystem that dates changes by the whole second (ext4's small inodes, FAT's
    /// two) is judged by the second.
    pub fn racy(&self, since: SystemTime, until: SystemTime) -> bool {
        let at = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos())),
            Err(_) => (0, 0),
        };
        let (mut since, until) = (at(since), at(until));
        if self.ctime.1 == 0 {
            since.1 = 0;
        }
        (since..=until).contains(&self.ctime)
    }
}

/// What a look at a path saw, for a later look to compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing there, or nothing the path leads to.
    Nothing,
    File(FileStamp),
    /// Something that changed too close to the look for its stamp to tell a later change
    /// (see [`FileStamp::racy`]): never taken to be still the same.
    Untrusted,
}

impl Seen {
    /// What `path` names now (symlinks followed).
    pub fn now(path: &Path) -> Self {
        FileStamp::now(path).map_or(Self::Nothing, Self::File)
    }

    /// Whether `path` shows what was seen.
    pub fn still(&self, path: &Path) -> bool {
        *self != Self::Untrusted && Self::now(path) == *self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An archive's files keep the archive's times, some in the future: dated by `mtime`,
    /// such a library was racy at every look, and every start resolved it again.
    #[test]
    fn a_file_dated_in_the_future_is_racy_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libx.so");
        fs::write(&path, "x").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        let before = SystemTime::now();
        file.set_modified(before + Duration::from_secs(3600)).unwrap();
        let after = SystemTime::now();
        let stamp = FileStamp::now(&path).unwrap();
        let margin = Duration::from_millis(50);
        assert!(stamp.racy(before - margin, after + margin), "looked at as it changed");
        let later = after + Duration::from_secs(1);
        assert!(!stamp.racy(later - margin, later + margin), "looked at after its change, whatever its mtime says");
    }

    /// A filesystem dating changes by the second: a change late in a second is dated at
    /// its start, and a look just after it must still distrust the stamp.
    #[test]
    fn a_change_dated_by_the_whole_second_is_racy_through_that_second() {
        let mut stamp = FileStamp::now(Path::new("/")).unwrap();
        stamp.ctime = (1_000, 0);
        let look = UNIX_EPOCH + Duration::from_millis(1_000_990);
        let margin = Duration::from_millis(50);
        assert!(stamp.racy(look - margin, look + margin));
        stamp.ctime = (1_000, 5);
        assert!(!stamp.racy(look - margin, look + margin), "a fine-grained date is judged as it is");
    }
}
