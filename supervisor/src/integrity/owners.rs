//! Who may change what the loader opens. A plugin's binary runs from a sealed copy, but
//! its interpreter, libraries and ld.so.cache are opened from disk at every start: one
//! that a plugin's uid could rewrite (or plant, in a directory the loader searches before
//! the one it finds it in) would let that plugin run its code in the next start of any
//! plugin loading it, past the pin and the signature, wherever Landlock is not enforced.
//!
//! Plugins never run as uid or gid 0 (the config refuses it) and run with no
//! supplementary groups, so a path only root (or the supervisor's own ids) can write is
//! out of every plugin's reach. That is the rule here, as OpenSSH's `StrictModes` has it
//! for its key files: each file and each directory on the way to it is owned by a
//! trusted uid and writable by no other group or others (nor by a user or group an
//! access ACL names, or might name where the ACL cannot be read), a sticky directory's
//! group and others may write only above an entry a trusted uid owns, and symlinks are
//! followed and their own directories checked too.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Mode bits: the group's and others' write, and the sticky bit.
const GROUP_WRITE: u32 = 0o020;
const OTHERS_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;
/// Symlinks followed in one path before it is taken for a loop (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The ids trusted beside root: the supervisor's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    uid: u32,
    gid: u32,
}

impl Owners {
    /// Root and this process's effective ids.
    pub fn this_process() -> Self {
        Self { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
    }

    /// Root and `uid`/`gid` (a test's stand-in for the supervisor's ids).
    pub fn with(uid: u32, gid: u32) -> Self {
        Self { uid, gid }
    }

    fn trusts_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid
    }

    fn trusts_gid(&self, gid: u32) -> bool {
        gid == 0 || gid == self.gid
    }

    /// Who besides the trusted could change `meta`'s file or directory (at `path`).
    /// `plant` asks for a directory where a new name would be looked up.
    fn writer(&self, path: &Path, meta: &fs::Metadata, plant: bool) -> Option<Writer> {
        self.writer_given(path, meta, plant, access_acl)
    }

    /// [`Self::writer`], with `acl` telling what `path`'s access ACL is.
    fn writer_given(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        plant: bool,
        acl: impl FnOnce(&Path) -> AccessAcl,
    ) -> Option<Writer> {
        let mode = meta.mode();
        if !self.trusts_uid(meta.uid()) {
            return Some(Writer::Owner(meta.uid()));
        }
        // A symlink's own mode is always 0777 and means nothing; its owner does.
        if meta.file_type().is_symlink() {
            return None;
        }
        // In a sticky directory (/tmp; /nix/store, root:nixbld 1775) only an entry's owner
        // may remove or rename it: the group and others can replace nothing in it. They
        // may still add a name that is not there yet, which is what `plant` asks about.
        let guarded = meta.is_dir() && mode & STICKY != 0 && !plant;
        if mode & GROUP_WRITE != 0 && !guarded {
            if !self.trusts_gid(meta.gid()) {
                return Some(Writer::Group(meta.gid()));
            }
            // With an access ACL the group bits are its mask: a named user or group in it
            // may write.
            match acl(path) {
                AccessAcl::None => {}
                AccessAcl::Present => return Some(Writer::Acl),
                AccessAcl::Unreadable(errno) => return Some(Writer::AclUnreadable(errno)),
            }
        }
        if mode & OTHERS_WRITE != 0 && !guarded {
            return Some(Writer::Others(mode & 0o7777));
        }
        None
    }
}

/// What a file's POSIX access ACL is, as far as its writers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessAcl {
    /// None beyond its mode bits: its group bits are its group's.
    None,
    /// One, whose mask the group bits are: a named user or group may write.
    Present,
    /// It could not be read (the errno): for all the checker knows, one names a writer.
    Unreadable(i32),
}

/// `path`'s (not followed) access ACL.
fn access_acl(path: &Path) -> AccessAcl {
    // A path with a NUL cannot be asked about; it cannot be opened either.
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else { return AccessAcl::Unreadable(libc::EINVAL) };
    // SAFETY: both strings are NUL-terminated and outlive the call; a size of zero asks
    // for the value's length only, so nothing is written through the null buffer.
    let len = unsafe { libc::lgetxattr(c_path.as_ptr(), c"system.posix_acl_access".as_ptr(), std::ptr::null_mut(), 0) };
    match len {
        1.. => AccessAcl::Present,
        0 => AccessAcl::None,
        _ => acl_error(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// What reading an access ACL failing with `errno` says. Only "it has none" and "its
/// filesystem keeps none" mean no ACL; any other failure (an I/O error, a filesystem
/// refusing) leaves a writer possible, and a check that passed on it would let a file a
/// plugin's uid may rewrite be loaded into every plugin.
fn acl_error(errno: i32) -> AccessAcl {
    match errno {
        libc::ENODATA | libc::EOPNOTSUPP => AccessAcl::None,
        errno => AccessAcl::Unreadable(errno),
    }
}

/// Who, besides root and the supervisor, could write a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Its owner, not a trusted uid.
    Owner(u32),
    /// Its group, not a trusted gid, has write permission.
    Group(u32),
    /// Everyone may write it (its mode).
    Others(u32),
    /// A user or group named in its access ACL may write it.
    Acl,
    /// Its group bits allow writing and its access ACL could not be read (the errno),
    /// so whether a user or group named there may write is unknown.
    AclUnreadable(i32),
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner(uid) => write!(f, "its owner, uid {uid}"),
            Self::Group(gid) => write!(f, "its group, gid {gid}"),
            Self::Others(mode) => write!(f, "everyone (mode {mode:04o})"),
            Self::Acl => write!(f, "whoever its access ACL lets write (its group bits are the ACL's mask)"),
            Self::AclUnreadable(errno) => write!(
                f,
                "possibly a user or group its access ACL names (its group bits allow writing, and the ACL cannot be \
                 read: {})",
                io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// A path some untrusted id could change, and why that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The file or directory that could be changed.
    pub path: PathBuf,
    pub writer: Writer,
}

/// Why a path was checked, for the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The loader opens this file (or the path to it runs through here).
    Opened,
    /// The loader looks for a name here before the place it finds it: a file planted
    /// here would be loaded instead.
    SearchedFirst,
}

/// Checks paths against [`Owners`], remembering those found safe so that the libraries of
/// one binary, which share their directories, cost a few `lstat`s each.
#[derive(Debug)]
pub struct Checker {
    owners: Owners,
    /// Whole paths found safe, as opened (false) or searched (true).
    safe: HashSet<(PathBuf, bool)>,
    /// Directories (not symlinks) found safe on the way to something: most libraries
    /// share all but their last component.
    safe_dirs: HashSet<PathBuf>,
}

impl Checker {
    pub fn new(owners: Owners) -> Self {
        Self { owners, safe: HashSet::new(), safe_dirs: HashSet::new() }
    }

    /// The first thing on the way to the file at `path` (absolute) an untrusted id could
    /// change: a directory above it, a symlink's directory or target, or the file.
    pub fn opened(&mut self, path: &Path) -> io::Result<Option<Exposed>> {
        self.walk(path, false, MAX_LINKS)
    }

    /// For a directory where the loader looks for a name it does not find: the first
    /// thing that would let an untrusted id put a file there. A directory that does not
    /// exist (or a symlink to one) is judged by the nearest one above it that does, where
    /// it could be made.
    pub fn searched(&mut self, dir: &Path) -> io::Result<Option<Exposed>> {
        self.walk(dir, true, MAX_LINKS)
    }

    /// Each prefix of `path` in turn, following symlinks; `plant` applies to the last
    /// component (the directory a name would be created in).
    fn walk(&mut self, path: &Path, plant: bool, links: usize) -> io::Result<Option<Exposed>> {
        if !path.is_absolute() {
            return Err(io::Error::other(format!("{} is not an absolute path", path.display())));
        }
        if self.safe.contains(&(path.to_path_buf(), plant)) {
            return Ok(None);
        }
        let components: Vec<Component<'_>> = path.components().collect();
        let mut at = PathBuf::from("/");
        for (i, component) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    at.pop();
                }
                Component::Normal(name) => at.push(name),
                Component::Prefix(_) => return Err(io::Error::other("a path prefix on Unix")),
            }
            let plant_here = plant && last;
            if !plant_here && self.safe_dirs.contains(&at) {
                continue;
            }
            let meta = match fs::symlink_metadata(&at) {
                Ok(meta) => meta,
                // Where a name would be made: judged by the directory it would be made in
                // (walked already, and not a symlink), as one that could take a new name.
                Err(e) if plant && matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    at.pop();
                    let meta = fs::symlink_metadata(&at)?;
                    return Ok(self.owners.writer(&at, &meta, true).map(|writer| Exposed { path: at, writer }));
                }
                Err(e) => return Err(e),
            };
            if let Some(writer) = self.owners.writer(&at, &meta, plant_here) {
                return Ok(Some(Exposed { path: at, writer }));
            }
            if meta.file_type().is_symlink() {
                let Some(links) = links.checked_sub(1) else {
                    return Err(io::Error::other(format!("too many symlinks resolving {}", path.display())));
                };
                let target = fs::read_link(&at)?;
                let base = at.parent().unwrap_or(Path::new("/"));
                let resolved = base.join(target);
                // The target is checked as a path of its own (its directories included),
                // then the rest of `path` is walked from where it points.
                let rest: PathBuf = components[i + 1..].iter().collect();
                let whole = if rest.as_os_str().is_empty() { resolved } else { resolved.join(rest) };
                return self.walk(&whole, plant, links);
            }
            if !plant_here && meta.is_dir() {
                self.safe_dirs.insert(at.clone());
            }
        }
        self.safe.insert((path.to_path_buf(), plant));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    /// Someone not trusted: neither root nor this test's stand-in for the supervisor.
    const PLUGIN_UID: u32 = 61_999;
    const TRUSTED: Owners = Owners { uid: 4242, gid: 4242 };

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }

    /// A root-owned tree for one test: `root/lib/libx.so` (0644, directories 0755).
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        chown(&root, 0, 0);
        chmod(&root, 0o755);
        let lib = root.join("lib");
        fs::create_dir(&lib).unwrap();
        chmod(&lib, 0o755);
        let file = lib.join("libx.so");
        fs::write(&file, b"x").unwrap();
        chmod(&file, 0o644);
        (dir, lib, file)
    }

    fn opened(path: &Path) -> Option<Exposed> {
        Checker::new(TRUSTED).opened(path).unwrap()
    }

    fn searched(path: &Path) -> Option<Exposed> {
        Checker::new(TRUSTED).searched(path).unwrap()
    }

    fn exposed(path: &Path, writer: Writer) -> Option<Exposed> {
        Some(Exposed { path: path.to_path_buf(), writer })
    }

    /// Giving files to other ids needs root, as every test run here has.
    fn as_root() {
        assert!(nix::unistd::geteuid().is_root(), "these tests chown files and need root");
    }

    #[test]
    fn files_only_root_and_the_supervisor_can_write_are_safe() {
        as_root();
        let (_dir, lib, file) = tree();
        assert_eq!(opened(&file), None);
        assert_eq!(searched(&lib), None);
        chown(&file, TRUSTED.uid, TRUSTED.gid);
        chmod(&file, 0o664);
        assert_eq!(opened(&file), None, "the supervisor's own group may write");
    }

    #[test]
    fn a_file_or_directory_an_untrusted_id_can_write_is_named_with_who() {
        as_root();
        let (_dir, lib, file) = tree();
        chown(&file, PLUGIN_UID, 0);
        assert_eq!(opened(&file), exposed(&file, Writer::Owner(PLUGIN_UID)), "owned by a plugin's uid");
        chown(&file, 0, PLUGIN_UID);
        assert_eq!(opened(&file), None, "a group that may not write");
        chmod(&file, 0o664);
        assert_eq!(opened(&file), exposed(&file, Writer::Group(PLUGIN_UID)), "group-writable");
        chown(&file, 0, 0);
        chmod(&file, 0o646);
        assert_eq!(opened(&file), exposed(&file, Writer::Others(0o646)), "writable by others");
        chmod(&file, 0o644);
        chmod(&lib, 0o777);
        assert_eq!(
            opened(&file),
            exposed(&lib, Writer::Others(0o777)),
            "a directory above it: the file can be replaced"
        );
    }

    #[test]
    fn a_sticky_directory_protects_what_is_in_it_but_not_a_name_not_there_yet() {
        as_root();
        let (_dir, lib, file) = tree();
        chmod(&lib, 0o1777);
        assert_eq!(opened(&file), None, "in /tmp's mode only its owner may replace a root-owned file");
        assert_eq!(searched(&lib), exposed(&lib, Writer::Others(0o1777)), "anyone may create a name there");
        assert_eq!(
            searched(&lib.join("glibc-hwcaps/x86-64-v3")),
            exposed(&lib, Writer::Others(0o1777)),
            "a missing directory is judged where it could be made"
        );
        chmod(&lib, 0o755);
        assert_eq!(searched(&lib.join("glibc-hwcaps/x86-64-v3")), None);
    }

    #[test]
    fn symlinks_are_followed_and_judged_by_their_owner_and_their_targets_path() {
        as_root();
        let (dir, lib, file) = tree();
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        chmod(&other, 0o755);
        let link = other.join("libx.so.1");
        symlink("../lib/libx.so", &link).unwrap();
        assert_eq!(opened(&link), None);
        std::os::unix::fs::lchown(&link, Some(PLUGIN_UID), None).unwrap();
        // Its owner could replace it only in a sticky directory; refused anyway: a link a
        // plugin's uid owns is not one root made.
        assert_eq!(opened(&link), exposed(&link, Writer::Owner(PLUGIN_UID)), "a link a plugin's uid owns");
        std::os::unix::fs::lchown(&link, Some(0), None).unwrap();
        chmod(&lib, 0o775);
        chown(&lib, 0, PLUGIN_UID);
        assert_eq!(opened(&link), exposed(&lib, Writer::Group(PLUGIN_UID)), "the target's directory");
        // A directory reached through a symlinked directory.
        chmod(&lib, 0o755);
        let libs = dir.path().join("libs");
        symlink("lib", &libs).unwrap();
        assert_eq!(opened(&libs.join("libx.so")), None);
        chown(&file, PLUGIN_UID, 0);
        assert_eq!(opened(&libs.join("libx.so")), exposed(&file, Writer::Owner(PLUGIN_UID)));
    }

    /// /nix/store is root:nixbld 1775 (Guix's /gnu/store root:guixbuild 1775): its group
    /// may add names but replace none of root's entries.
    #[test]
    fn a_sticky_directory_its_group_may_write_guards_what_root_owns_in_it() {
        as_root();
        let (_dir, lib, file) = tree();
        chown(&lib, 0, PLUGIN_UID);
        chmod(&lib, 0o1775);
        assert_eq!(opened(&file), None);
        assert_eq!(searched(&lib), exposed(&lib, Writer::Group(PLUGIN_UID)), "a name may be added");
        chmod(&lib, 0o775);
        assert_eq!(opened(&file), exposed(&lib, Writer::Group(PLUGIN_UID)), "not sticky: the file can be replaced");
    }

    /// The loader skips a search directory that is a symlink to nothing; a plugin able to
    /// make its target would have one there.
    #[test]
    fn a_searched_directory_that_is_a_symlink_to_nothing_is_judged_where_its_target_would_be_made() {
        as_root();
        let (dir, lib, _) = tree();
        let link = dir.path().join("dangling");
        symlink(lib.join("gone/lib"), &link).unwrap();
        assert_eq!(searched(&link), None, "root's lib/ is where gone/ would be made");
        chmod(&lib, 0o777);
        assert_eq!(searched(&link), exposed(&lib, Writer::Others(0o777)));
        assert_eq!(searched(&lib.join("x/y/z")), exposed(&lib, Writer::Others(0o777)), "a missing directory too");
    }

    /// With an access ACL the group bits are the ACL's mask: here uid PLUGIN_UID may write
    /// a file whose owner and group are root's.
    #[test]
    fn a_file_an_access_acl_lets_another_user_write_is_exposed() {
        as_root();
        let (_dir, _, file) = tree();
        chmod(&file, 0o664);
        assert_eq!(opened(&file), None, "root's group may write, and no ACL");
        // The kernel's posix_acl_xattr layout: a version, then (tag, permissions, id) entries.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 6, PLUGIN_UID),
            (0x04, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let c_path = CString::new(file.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a buffer of `acl.len()` bytes, all live across the call.
        let set = unsafe {
            libc::lsetxattr(c_path.as_ptr(), c"system.posix_acl_access".as_ptr(), acl.as_ptr().cast(), acl.len(), 0)
        };
        assert_eq!(set, 0, "setting an ACL: {}", io::Error::last_os_error());
        assert_eq!(opened(&file), exposed(&file, Writer::Acl));
        chmod(&file, 0o644);
        assert_eq!(opened(&file), None, "a mask without write lets no one named in the ACL write");
    }

    /// A group-writable file is safe while no ACL names a writer; an ACL that cannot be
    /// read might, so the check fails closed and says why.
    #[test]
    fn a_group_writable_file_whose_acl_cannot_be_read_is_exposed_with_the_error() {
        as_root();
        let (_dir, _lib, file) = tree();
        chmod(&file, 0o664);
        assert_eq!(access_acl(&file), AccessAcl::None, "a file without an ACL, read for real");
        let failing = |errno| {
            let meta = fs::symlink_metadata(&file).unwrap();
            TRUSTED.writer_given(&file, &meta, false, |_| acl_error(errno))
        };
        assert_eq!(failing(libc::EIO), Some(Writer::AclUnreadable(libc::EIO)));
        assert_eq!(failing(libc::EACCES), Some(Writer::AclUnreadable(libc::EACCES)));
        assert_eq!(failing(libc::ENODATA), None, "it has none");
        assert_eq!(failing(libc::EOPNOTSUPP), None, "its filesystem keeps none");
        let said = Writer::AclUnreadable(libc::EIO).to_string();
        assert!(said.contains("the ACL cannot be read: Input/output error"), "{said}");
        chmod(&file, 0o644);
        assert_eq!(failing(libc::EIO), None, "without group write an ACL's mask lets no one write");
    }

    /// One checker serves all of a binary's libraries: what it remembers as safe to open
    /// through is not taken as safe to add a name to.
    #[test]
    fn what_one_checker_remembers_for_opening_does_not_answer_for_planting() {
        as_root();
        let (_dir, lib, file) = tree();
        chmod(&lib, 0o1777);
        let mut checker = Checker::new(TRUSTED);
        assert_eq!(checker.opened(&file).unwrap(), None);
        assert_eq!(checker.searched(&lib).unwrap(), exposed(&lib, Writer::Others(0o1777)));
        assert_eq!(checker.searched(&lib.join("missing")).unwrap(), exposed(&lib, Writer::Others(0o1777)));
        assert_eq!(checker.opened(&file).unwrap(), None, "and the other way round");
    }

    #[test]
    fn a_relative_path_is_an_error_not_taken_from_the_root() {
        let err = Checker::new(TRUSTED).opened(Path::new("lib/libx.so")).unwrap_err();
        assert!(err.to_string().contains("lib/libx.so is not an absolute path"), "{err}");
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        symlink("b", &a).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let err = Checker::new(Owners::this_process()).opened(&a.join("libx.so")).unwrap_err();
        assert!(err.to_string().contains("too many symlinks"), "{err}");
    }
}
