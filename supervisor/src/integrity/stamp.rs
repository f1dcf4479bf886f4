//! Which file a path named when something was made from it, so that a later look can
//! tell whether it still does: a sealed image's source binary, the loader's files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
    /// telling: it last changed at or after `since`. The kernel dates changes by a clock
    /// that moves once a tick (1-10 ms; finer only from Linux 6.13 on some filesystems),
    /// and a directory's size need not grow with an entry, so a change later within the
    /// tick of the stamp leaves every field equal (git's "racily clean" index entries).
    pub fn racy(&self, since: std::time::SystemTime) -> bool {
        let since = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or((0, 0), |d| (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos())));
        self.mtime >= since || self.ctime >= since
    }
}
