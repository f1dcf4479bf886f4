//! Scratch copies of plugin binaries for the integrity tests, and
//! `supervisorctl`'s local commands (which need no daemon).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugin_supervisor::integrity::{FileIdentity, Sha256Digest};

use crate::bins;

/// Copies an executable into `dir` under `name`, keeping it executable.
pub fn copy_executable(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
    dst
}

/// Writes an executable file.
pub fn write_executable(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

/// Overwrites `bytes` at `offset`, in place (the inode stays the same).
pub fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read binary");
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("write binary");
}

/// A copy of the ELF executable `src` in `dir` whose PT_GNU_STACK asks for an executable
/// stack: memory the kernel maps writable and executable at exec.
pub fn copy_with_executable_stack(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let copy = copy_executable(src, dir, name);
    let bytes = std::fs::read(&copy).expect("read copy");
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phnum = usize::from(u16::from_le_bytes(bytes[56..58].try_into().unwrap()));
    let stack = (0..phnum)
        .map(|i| phoff + 56 * i)
        .find(|at| u32::from_le_bytes(bytes[*at..at + 4].try_into().unwrap()) == 0x6474_e551)
        .unwrap_or_else(|| panic!("{} has no PT_GNU_STACK header", src.display()));
    // Its flags, read+write, with execute added.
    let flags = u32::from_le_bytes(bytes[stack + 4..stack + 8].try_into().unwrap()) | 1;
    patch(&copy, stack + 4, &flags.to_le_bytes());
    copy
}

/// Inverts one byte in the middle of the file.
pub fn flip_byte(path: &Path) {
    let data = std::fs::read(path).expect("read binary");
    let middle = data.len() / 2;
    patch(path, middle, &[!data[middle]]);
}

pub fn sha256(path: &Path) -> String {
    let file = std::fs::File::open(path).expect("open binary");
    Sha256Digest::of_file(&file).expect("hash binary").to_hex()
}

/// The (device, inode) a path names now; for `/proc/<pid>/exe`, the file
/// the process runs, whatever its path has become since.
pub fn identity(path: &Path) -> FileIdentity {
    FileIdentity::of(&std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())))
}

/// Runs `supervisorctl` with a socket that does not exist: local commands
/// must not need one.
pub fn ctl_local<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg("/nonexistent/control.sock")
        .args(args)
        .output()
        .expect("run supervisorctl")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
