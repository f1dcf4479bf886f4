//! Paths to the binaries under test. Tests and benchmarks run from
//! `<target>/<profile>/deps/` (or `<profile>/`), so the workspace's binaries
//! and examples are found relative to the running executable; they are
//! built by `cargo test --workspace` / `cargo build --workspace --examples`.

use std::path::PathBuf;

/// `<target>/<profile>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe has a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir
    }
}

fn must_exist(p: PathBuf) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --workspace --bins --examples` (same profile) first",
        p.display()
    );
    p
}

pub fn supervisor() -> PathBuf {
    must_exist(profile_dir().join("plugin-supervisor"))
}

pub fn supervisorctl() -> PathBuf {
    must_exist(profile_dir().join("supervisorctl"))
}

pub fn zoo() -> PathBuf {
    must_exist(profile_dir().join("zoo"))
}

/// Lists services or checks one's health through a gateway socket (`src/bin/discovery_caller.rs`).
pub fn discovery_caller() -> PathBuf {
    must_exist(profile_dir().join("discovery_caller"))
}

/// Calls the echo service through a gateway socket once (`src/bin/echo_caller.rs`).
pub fn echo_caller() -> PathBuf {
    must_exist(profile_dir().join("echo_caller"))
}

/// An example plugin from plugin-sdk (`echo`, `token_validator`).
pub fn example(name: &str) -> PathBuf {
    must_exist(profile_dir().join("examples").join(name))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}
