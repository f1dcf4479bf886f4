//! A verified, immutable image of a plugin binary: its bytes are copied once
//! into a sealed memfd, every check runs on that copy, and every spawn
//! executes it. A path swapped or a file rewritten in place afterwards
//! cannot change what runs; a changed file is noticed by its stat stamp and
//! verified afresh on the next start.
//!
//! Verifying once also keeps hashing off the spawn path: a restart costs a
//! `stat`, not a SHA-256 of the whole binary.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use super::stamp::FileStamp;
use super::subject::Subject;
use super::verified::{IntegrityError, Policy, VerifiedBinary, file_kind, open_source};

/// A verified binary held in a sealed memfd.
#[derive(Debug)]
pub struct VerifiedImage {
    verified: VerifiedBinary,
    /// What the binary at `path` was when the image was made from it.
    source: FileStamp,
    path: PathBuf,
}

const MFD_CLOEXEC: libc::c_uint = 0x1;
const MFD_ALLOW_SEALING: libc::c_uint = 0x2;
/// Kernels from 6.3 can make memfds non-executable by default; ask for exec.
const MFD_EXEC: libc::c_uint = 0x10;

fn memfd(name: &str) -> io::Result<File> {
    let name = std::ffi::CString::new(name.replace('\0', "_")).map_err(io::Error::other)?;
    for flags in [MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC, MFD_CLOEXEC | MFD_ALLOW_SEALING] {
        // SAFETY: memfd_create with a NUL-terminated name and flags; returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Err(io::Error::last_os_error())
}

/// Copies `src` into a sealed memfd and returns a read-only descriptor of
/// it: a descriptor open for writing would make `execve` fail with ETXTBSY.
fn sealed_copy(src: &File, name: &str, limit: u64) -> io::Result<File> {
    use std::io::Read;
    let mut rw = memfd(name)?;
    let copied = io::copy(&mut src.take(limit + 1), &mut rw)?;
    if copied > limit {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, "binary grew past the size limit while copying"));
    }
    seal(&rw)?;
    std::fs::OpenOptions::new().read(true).open(format!("/proc/self/fd/{}", rw.as_raw_fd()))
}

/// How long sealing waits out pages the kernel holds for a moment.
const SEAL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Seals `rw` against any change. The write seal is refused (EBUSY) while something
/// still holds a reference to one of its pages: a pipe buffer left from the copy's
/// splice, or compaction migrating the page. Those are let go of within moments, and
/// the kernel itself waits only briefly, so the seal is asked again until it is given
/// (a busy host once refused a reload's image this way).
fn seal(rw: &File) -> io::Result<()> {
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    let deadline = std::time::Instant::now() + SEAL_PATIENCE;
    loop {
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(rw.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

impl VerifiedImage {
    /// Copies the binary at `path` into a sealed image and verifies the copy.
    pub fn load(plugin: &str, path: &Path, policy: &Policy<'_>) -> Result<Self, IntegrityError> {
        let subject = Subject::new(plugin, path);
        let src = open_source(&subject)?;
        let meta = src.metadata().map_err(|source| IntegrityError::Read { subject: subject.clone(), source })?;
        if !meta.is_file() {
            return Err(IntegrityError::NotRegularFile { subject, kind: file_kind(&meta) });
        }
        if meta.len() > policy.max_file_size {
            return Err(IntegrityError::TooLarge { subject, size: meta.len(), limit: policy.max_file_size });
        }
        let image = sealed_copy(&src, plugin, policy.max_file_size)
            .map_err(|source| IntegrityError::Read { subject: subject.clone(), source })?;
        let verified = VerifiedBinary::check_open(plugin, path, image, policy)?;
        Ok(Self { verified, source: FileStamp::of(&meta), path: path.to_path_buf() })
    }

    /// True while `path` still names the unchanged file the image was made from.
    pub fn is_current(&self) -> bool {
        FileStamp::now(&self.path) == Some(self.source)
    }

    /// The checks' results: digest, ELF information, signature.
    pub fn binary(&self) -> &VerifiedBinary {
        &self.verified
    }

    /// A descriptor of the image for one spawn, to `execveat` with AT_EMPTY_PATH.
    pub fn exec_file(&self) -> io::Result<File> {
        self.verified.file().try_clone()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A page of the image held for a while (here by a pipe it was spliced into, as a
    /// copy's splice or the kernel's compaction can): the seal waits for it to be let go.
    #[test]
    fn a_page_held_for_a_moment_delays_the_seal_but_does_not_refuse_it() {
        use std::io::{Read, Write};
        let mut rw = memfd("held").unwrap();
        rw.write_all(&[7u8; 4096]).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it creates.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the kernel just created these descriptors; each is owned once.
        let (mut out, inp) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let mut off: libc::loff_t = 0;
        // SAFETY: splice between two descriptors we own, with a valid offset pointer.
        let n = unsafe { libc::splice(rw.as_raw_fd(), &mut off, inp.as_raw_fd(), std::ptr::null_mut(), 4096, 0) };
        assert_eq!(n, 4096, "{}", io::Error::last_os_error());
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut page = vec![0u8; 4096];
            out.read_exact(&mut page).unwrap();
        });
        let started = std::time::Instant::now();
        seal(&rw).expect("sealed once the page was let go");
        reader.join().unwrap();
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(250),
            "the page was held: {:?}",
            started.elapsed()
        );
        drop(inp);
    }

    fn copy_of_true(dir: &Path) -> PathBuf {
        let p = dir.join("plugin");
        std::fs::copy("/bin/true", &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_image_is_sealed_read_only_and_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_of_true(dir.path());
        let img = VerifiedImage::load("t", &path, &Policy::default()).unwrap();
        let on_disk = crate::integrity::Sha256Digest::of_bytes(&std::fs::read(&path).unwrap());
        assert_eq!(img.binary().digest(), &on_disk);
        let f = img.exec_file().unwrap();
        // SAFETY: F_GET_SEALS on a descriptor we own.
        let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        // Sealed: even a descriptor opened for writing cannot change it.
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        assert_eq!(w.write(b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(img.is_current());
    }

    #[test]
    fn rewriting_or_replacing_the_file_makes_the_image_stale_but_not_different() {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_of_true(dir.path());
        let img = VerifiedImage::load("t", &path, &Policy::default()).unwrap();
        let digest = *img.binary().digest();
        // In place: same inode, new bytes.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!img.is_current());
        let mut held = Vec::new();
        use std::io::Read;
        img.exec_file().unwrap().read_to_end(&mut held).unwrap();
        assert_eq!(crate::integrity::Sha256Digest::of_bytes(&held), digest, "the image kept the verified bytes");
        // Swapped path: a fresh load sees the new file.
        let other = dir.path().join("other");
        std::fs::copy("/bin/false", &other).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let again = VerifiedImage::load("t", &path, &Policy::default()).unwrap();
        assert_ne!(again.binary().digest(), &digest);
    }

    #[test]
    fn a_pin_is_checked_against_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_of_true(dir.path());
        let wrong: crate::integrity::Sha256Digest = "00".repeat(32).parse().unwrap();
        let policy = Policy { expected_sha256: Some(wrong), ..Policy::default() };
        let err = VerifiedImage::load("t", &path, &policy).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch") || err.contains("expected"), "{err}");
    }
}
