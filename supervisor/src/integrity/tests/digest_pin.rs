//! A pinned digest admits exactly the approved bytes, and what is held is what was hashed.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::support::{CODE_EXIT_0, CODE_PAUSE_LOOP, EM_X86_64, small_system_binary, tiny_elf64, write_exe};
use crate::integrity::{FileIdentity, IntegrityError, Policy, Sha256Digest, VerifiedBinary};

#[test]
fn sha256_matches_the_standard_test_vector() {
    assert_eq!(
        Sha256Digest::of_bytes(b"abc").to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn hashing_an_open_file_ignores_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "bin", small_system_binary());
    let mut file = File::open(&path).unwrap();
    file.seek(SeekFrom::Start(1000)).unwrap();
    let digest = Sha256Digest::of_file(&file).unwrap();
    assert_eq!(digest, Sha256Digest::of_bytes(small_system_binary()));
    assert_eq!(file.stream_position().unwrap(), 1000, "pread must not move the position");
}

#[test]
fn bounded_hash_refuses_a_file_that_is_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "bin", &[7u8; 4096]);
    let file = File::open(&path).unwrap();
    let err = Sha256Digest::of_file_bounded(&file, 4095).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
    assert!(Sha256Digest::of_file_bounded(&file, 4096).is_ok());
}

#[test]
fn digest_hex_parses_back_and_rejects_malformed_pins() {
    let d = Sha256Digest::of_bytes(b"x");
    assert_eq!(d.to_hex().parse::<Sha256Digest>().unwrap(), d);
    assert_eq!(d.to_hex().to_uppercase().parse::<Sha256Digest>().unwrap(), d);
    assert!("abcd".parse::<Sha256Digest>().is_err());
    assert!("zz".repeat(32).parse::<Sha256Digest>().is_err());
}

#[test]
fn a_matching_pin_is_accepted_and_the_open_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "echo", small_system_binary());
    let pin = Sha256Digest::of_bytes(small_system_binary());
    let policy = Policy { expected_sha256: Some(pin), ..Policy::default() };
    let verified = VerifiedBinary::open("echo", &path, &policy).unwrap();
    assert_eq!(*verified.digest(), pin);
    let on_disk = fs::metadata(&path).unwrap();
    assert_eq!(verified.identity(), FileIdentity::of(&on_disk));
    assert!(verified.signature().is_none());
}

#[test]
fn one_flipped_byte_fails_the_pin_with_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let original = small_system_binary();
    let pin = Sha256Digest::of_bytes(original);
    let mut tampered = original.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let found = Sha256Digest::of_bytes(&tampered);
    assert_ne!(pin, found, "a flipped byte changes the digest");
    let path = write_exe(dir.path(), "echo", &tampered);

    let policy = Policy { expected_sha256: Some(pin), ..Policy::default() };
    let err = VerifiedBinary::open("echo", &path, &policy).unwrap_err();
    assert!(matches!(err, IntegrityError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("plugin \"echo\": binary {} sha256 mismatch: expected {pin}, found {found}", path.display())
    );
}

#[test]
fn a_directory_or_missing_path_is_refused_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let err = VerifiedBinary::open("echo", dir.path(), &Policy::default()).unwrap_err();
    assert!(matches!(err, IntegrityError::NotRegularFile { kind: "directory", .. }), "{err:?}");

    // A socket cannot even be opened (ENXIO): it is still named for what it is.
    let socket = dir.path().join("socket");
    let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = VerifiedBinary::open("echo", &socket, &Policy::default()).unwrap_err();
    assert!(matches!(err, IntegrityError::NotRegularFile { kind: "socket", .. }), "{err:?}");

    let missing = dir.path().join("nope");
    let err = VerifiedBinary::open("echo", &missing, &Policy::default()).unwrap_err();
    assert!(matches!(err, IntegrityError::Open { .. }), "{err:?}");
    assert!(err.to_string().starts_with("plugin \"echo\": cannot open binary"), "{err}");
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "big", small_system_binary());
    let policy = Policy { max_file_size: 1024, ..Policy::default() };
    let err = VerifiedBinary::open("big", &path, &policy).unwrap_err();
    assert!(matches!(err, IntegrityError::TooLarge { limit: 1024, .. }), "{err:?}");
}

/// The binary is replaced at its path after the check; the process started from the held
/// descriptor is still the checked file (`/proc/<pid>/exe` has the checked inode).
#[cfg(target_arch = "x86_64")]
#[test]
fn a_binary_swapped_after_the_check_is_not_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let approved = tiny_elf64(EM_X86_64, 2, CODE_PAUSE_LOOP, false);
    let path = write_exe(dir.path(), "plugin", &approved);
    let policy = Policy { expected_sha256: Some(Sha256Digest::of_bytes(&approved)), ..Policy::default() };
    let verified = VerifiedBinary::open("swap", &path, &policy).unwrap();

    let impostor = write_exe(dir.path(), "impostor", &tiny_elf64(EM_X86_64, 2, CODE_EXIT_0, false));
    fs::rename(&impostor, &path).unwrap();
    let now_at_path = FileIdentity::of(&fs::metadata(&path).unwrap());
    assert_ne!(now_at_path, verified.identity());

    // What execveat(fd, "", AT_EMPTY_PATH) does, expressed through std: the kernel resolves
    // the descriptor's magic link, which names the held inode, not the path.
    let fd_path = format!("/proc/self/fd/{}", verified.file().as_raw_fd());
    let mut child = spawn_retrying_busy(&fd_path);
    let exe = fs::metadata(format!("/proc/{}/exe", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    let exe = exe.unwrap();
    assert_eq!(
        FileIdentity { dev: exe.dev(), ino: exe.ino() },
        verified.identity(),
        "the running process is the file that was hashed"
    );
    assert_eq!(Sha256Digest::of_file(verified.file()).unwrap(), *verified.digest());
}

/// A parallel test's fork can briefly hold a copy of a descriptor some other test opened
/// for writing, which makes exec fail with ETXTBSY; that is the harness, not the subject.
#[cfg(target_arch = "x86_64")]
fn spawn_retrying_busy(program: &str) -> std::process::Child {
    for _ in 0..50 {
        match Command::new(program).spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{program} stayed busy");
}

/// How `reread`, `update` and a kept rollout tell a binary rebuilt in place: the digest of
/// a regular file, and none for anything else at the path, found without waiting. A FIFO
/// there held the thread that opened it until a writer came: for good, and every reread
/// behind it.
#[test]
fn the_digest_on_disk_is_a_regular_files_and_a_fifo_has_none_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "bin", small_system_binary());
    let hex = Sha256Digest::of_bytes(small_system_binary()).to_hex();
    assert_eq!(crate::integrity::sha256_on_disk(&path), Some(hex));
    assert_eq!(crate::integrity::sha256_on_disk(&dir.path().join("gone")), None);
    assert_eq!(crate::integrity::sha256_on_disk(dir.path()), None, "a directory");
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path in the test's temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let owned = fifo.clone();
    assert_eq!(crate::test_files::within_10s(&fifo, move || crate::integrity::sha256_on_disk(&owned)), None);
}
