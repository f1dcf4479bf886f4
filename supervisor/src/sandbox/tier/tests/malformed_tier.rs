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
