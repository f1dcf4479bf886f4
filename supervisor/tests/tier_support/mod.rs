//! Support for the tests that run filters in the kernel: a child started
//! like the supervisor starts plugins, a stand-in supervisor for its
//! notifications, and the report the supervisor would give.

#![allow(dead_code)] // each test binary uses its own part

pub mod child;
pub mod notify;

use std::path::PathBuf;

use plugin_supervisor::sandbox::tier::{ARCH_KILL_REPORT, Verdict, Violation};

use child::Ended;

/// What the supervisor would report for an instance that ended as `ended`
/// after the violations `seen`: the syscall's name, never a bare signal.
pub fn report(ended: Ended, seen: &[Violation]) -> String {
    if let Some(kill) = seen.iter().find(|v| v.verdict == Verdict::Kill) {
        return kill.to_string();
    }
    match ended {
        Ended::Signaled(libc::SIGSYS) => ARCH_KILL_REPORT.to_owned(),
        Ended::Signaled(signal) => format!("killed by signal {signal}"),
        Ended::Exited(code) => format!("exited with code {code}"),
    }
}

/// The shipped policies, beside the manifest or at the repository's top.
pub fn policies_dir() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("policies"))
        .find(|dir| dir.join("L1.toml").is_file())
        .unwrap_or_else(|| manifest.join("policies"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
