//! Broken tier files (TOML, settings, ordering) are refused with a message
//! naming the file and the cause.

use super::super::TierError;
use super::{Fixture, assert_mentions};

#[test]
fn bad_toml_names_the_file_and_line() {
    let f = Fixture::new();
    f.edit("L2.toml", "pids_max = 64", "pids_max = ");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Toml { .. }), "{e:?}");
    assert_mentions(&message, &["L2.toml", "line"]);
}

#[test]
fn unknown_key_is_refused_by_name() {
    let f = Fixture::new();
    f.edit("L3.toml", "tighter_than = \"L2\"", "tighter_than = \"L2\"\non_violation = \"kill\"");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Toml { .. }), "{e:?}");
    assert_mentions(&message, &["L3.toml", "on_violation"]);
}

#[test]
fn missing_key_is_refused_by_name() {
    let f = Fixture::new();
    f.edit("L1.toml", "nofile = 1000", "");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L1.toml", "nofile"]);
}

#[test]
fn bad_quota_value_names_the_value() {
    let f = Fixture::new();
    f.edit("L2.toml", "memory_max = \"256M\"", "memory_max = \"256X\"");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L2.toml", "256X", "unknown unit"]);
}

#[test]
fn memory_high_above_max_is_refused() {
    let f = Fixture::new();
    f.edit("L2.toml", "memory_high = \"224M\"", "memory_high = \"1G\"");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Setting { field: "quota.memory_high", .. }), "{e:?}");
    assert_mentions(&message, &["L2.toml", "1G", "256M"]);
}

#[test]
fn nofile_reaching_the_exec_fd_is_refused() {
    let f = Fixture::new();
    f.edit("L1.toml", "nofile = 1000", "nofile = 1001");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Setting { field: "limits.nofile", .. }), "{e:?}");
    assert_mentions(&message, &["L1.toml", "1001", "fd 1000"]);
}

#[test]
fn name_must_match_the_file() {
    let f = Fixture::new();
    f.edit("L2.toml", "name = \"L2\"", "name = \"hardened\"");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Setting { field: "name", .. }), "{e:?}");
    assert_mentions(&message, &["L2.toml", "hardened"]);
}

#[test]
fn relative_landlock_path_is_refused() {
    let f = Fixture::new();
    f.edit("L1.toml", "\"/etc/hosts\"", "\"etc/hosts\"");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L1.toml", "landlock.read_only", "etc/hosts"]);
}

#[test]
fn seccomp_path_leaving_the_directory_is_refused() {
    let f = Fixture::new();
    f.edit("L3.toml", "seccomp = \"L3.seccomp.json\"", "seccomp = \"../L3.seccomp.json\"");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.toml", "seccomp", "relative path inside"]);
}

#[test]
fn tighter_than_a_missing_tier_is_refused() {
    let f = Fixture::new();
    f.edit("L3.toml", "tighter_than = \"L2\"", "tighter_than = \"L9\"");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::UnknownParent { .. }), "{e:?}");
    assert_mentions(&message, &["L3.toml", "L9"]);
}

#[test]
fn tier_allowing_what_its_parent_denies_is_refused_with_the_call() {
    let f = Fixture::new();
    f.edit("L2.seccomp.json", "{\"syscall\": \"getpid\"}", "{\"syscall\": \"getpid\"}, {\"syscall\": \"mount\"}");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::NotTighter { .. }), "{e:?}");
    assert_mentions(&message, &["L2.toml", "not tighter than L1", "allows mount(", "which L1 denies"]);
}

#[test]
fn tier_equal_to_its_parent_is_not_strictly_tighter() {
    let f = Fixture::new();
    let l2 = std::fs::read_to_string(f.path("L2.seccomp.json")).expect("read");
    f.write("L3.seccomp.json", &l2.replacen("\"L2\"", "\"L3\"", 1));
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::NotTighter { .. }), "{e:?}");
    assert_mentions(&message, &["L3.toml", "allows every call L2's allows"]);
}

#[test]
fn tier_with_a_looser_setting_is_refused() {
    let f = Fixture::new();
    f.edit("L3.toml", "read_only = []", "read_only = [\"/etc/passwd\"]");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.toml", "landlock.read_only", "/etc/passwd"]);

    let f = Fixture::new();
    f.edit("L3.toml", "pids_max = 8", "pids_max = 65");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.toml", "quota.pids_max: 65 is above L2's 64"]);
}

#[test]
fn operator_tier_is_loaded_beside_the_shipped_ones() {
    let f = Fixture::new();
    let l3 = std::fs::read_to_string(f.path("L3.toml")).expect("read");
    f.write(
        "batch.toml",
        &l3.replace("name = \"L3\"", "name = \"batch\"")
            .replace("memory_max = \"64M\"", "memory_max = \"32M\"")
            .replace("memory_high = \"48M\"", "memory_high = \"24M\""),
    );
    // Same filter as L3, so it may not claim to be tighter than L3, only
    // than L2.
    let set = super::super::TierSet::load_dir(f.path("").as_path()).expect("operator tier loads");
    let batch = set.get("batch").expect("batch tier");
    assert_eq!(batch.quota.memory_max.to_string(), "32M");
    assert_eq!(batch.program, set.get("L3").expect("L3").program);
}

/// Loads `dir` on a thread of its own, failing the test if it hangs.
fn load_within_10s(dir: &std::path::Path) -> Result<super::super::TierSet, TierError> {
    let owned = dir.to_owned();
    crate::test_files::within_10s(dir, move || super::super::TierSet::load_dir(&owned))
}

#[test]
fn a_seccomp_policy_that_is_no_regular_file_is_refused_at_once() {
    // A FIFO waited for a writer for ever; /dev/zero was read until memory ran out.
    for (target, kind) in [(None, "FIFO"), (Some("/dev/zero"), "character device")] {
        let f = Fixture::new();
        f.remove("L2.seccomp.json");
        let policy = f.path("L2.seccomp.json");
        match target {
            Some(t) => std::os::unix::fs::symlink(t, &policy).unwrap(),
            None => {
                let c = std::ffi::CString::new(policy.to_str().unwrap()).unwrap();
                // SAFETY: mkfifo with a NUL-terminated path in the fixture's directory.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
        }
        match load_within_10s(&f.path("")) {
            Err(e @ TierError::NotRegularFile { .. }) => assert_eq!(
                e.to_string(),
                format!("{}: cannot read: it is a {kind}, not a regular file", policy.display())
            ),
            other => panic!("{kind}: expected NotRegularFile, got {other:?}"),
        }
    }
}

#[test]
fn a_tier_file_that_is_no_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, _listening) = crate::test_files::not_regular(dir.path());
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, kind) in paths.into_iter().chain([(zero, "character device")]) {
        let owned = path.clone();
        match crate::test_files::within_10s(&path, move || super::super::file::TierFile::read(&owned)) {
            Err(e @ TierError::NotRegularFile { .. }) => assert_eq!(
                e.to_string(),
                format!("{}: cannot read: it is a {kind}, not a regular file", path.display())
            ),
            other => panic!("{path:?}: expected NotRegularFile, got {other:?}"),
        }
    }
}

#[test]
fn a_tier_file_in_the_directory_that_is_no_regular_file_refuses_the_directory() {
    // Such an L1.toml was skipped: tier L1 vanished, and only L2's
    // tighter_than (or a config naming L1) failed, later and elsewhere.
    for kind in ["FIFO", "character device", "directory", "socket"] {
        let f = Fixture::new();
        f.remove("L1.toml");
        let tier_file = f.path("L1.toml");
        let _listening = match kind {
            "FIFO" => {
                let c = std::ffi::CString::new(tier_file.to_str().unwrap()).unwrap();
                // SAFETY: mkfifo with a NUL-terminated path in the fixture's directory.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                None
            }
            "character device" => {
                std::os::unix::fs::symlink("/dev/zero", &tier_file).unwrap();
                None
            }
            "directory" => {
                std::fs::create_dir(&tier_file).unwrap();
                None
            }
            _ => Some(std::os::unix::net::UnixListener::bind(&tier_file).unwrap()),
        };
        match load_within_10s(&f.path("")) {
            Err(e @ TierError::NotRegularFile { .. }) => assert_eq!(
                e.to_string(),
                format!("{}: cannot read: it is a {kind}, not a regular file", tier_file.display())
            ),
            other => panic!("{kind}: expected NotRegularFile, got {other:?}"),
        }
    }
}

#[test]
fn a_policy_file_over_1_mib_is_refused_by_size() {
    let f = Fixture::new();
    let limit = super::super::file::MAX_POLICY_FILE;
    // Valid JSON that only its size makes wrong: spaces before the document.
    let text = std::fs::read_to_string(f.path("L2.seccomp.json")).unwrap();
    f.write("L2.seccomp.json", &format!("{}{text}", " ".repeat(limit as usize)));
    match load_within_10s(&f.path("")) {
        Err(e @ TierError::TooLarge { .. }) => assert_eq!(
            e.to_string(),
            format!("{}: cannot read: larger than 1048576 bytes", f.path("L2.seccomp.json").display())
        ),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let f = Fixture::new();
    let text = std::fs::read_to_string(f.path("L2.toml")).unwrap();
    f.write("L2.toml", &format!("{}{text}", "\n".repeat(limit as usize)));
    match super::super::file::TierFile::read(&f.path("L2.toml")) {
        Err(e @ TierError::TooLarge { .. }) => assert_eq!(
            e.to_string(),
            format!("{}: cannot read: larger than 1048576 bytes", f.path("L2.toml").display())
        ),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
