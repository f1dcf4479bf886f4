//! Facts about this host's glibc dynamic loader that decide where it looks for libraries:
//! default directories, per-directory search subdirectories, `$LIB` and `$PLATFORM`. The
//! CPU-dependent part comes from [`LoaderCaps`].
//!
//! Measured on Debian 12 x86_64 (glibc 2.36) with `ld.so --help` and `LD_DEBUG=libs`; the
//! tests compare [`search_subdirs`] with what the running ld.so prints.

use std::path::PathBuf;

use super::loader_caps::LoaderCaps;

/// ld.so's built-in search path, as `ld.so --help` lists it on Debian. (`/lib64` holds only
/// the interpreter's symlink and is not searched.)
pub fn default_dirs() -> Vec<PathBuf> {
    let triple = multiarch_triple();
    vec![
        PathBuf::from(format!("/lib/{triple}")),
        PathBuf::from(format!("/usr/lib/{triple}")),
        PathBuf::from("/lib"),
        PathBuf::from("/usr/lib"),
    ]
}

/// What `$LIB` expands to: Debian builds glibc with the multiarch library directory.
pub fn dst_lib() -> String {
    format!("lib/{}", multiarch_triple())
}

/// What `$PLATFORM` expands to: the loader's platform, which on Intel CPUs is not the
/// kernel's AT_PLATFORM (see [`LoaderCaps::platform`]).
pub fn dst_platform() -> Option<String> {
    LoaderCaps::host().platform()
}

/// Subdirectories this host's ld.so tries inside every search directory, best first,
/// ending with the directory itself (the empty path).
pub fn search_subdirs() -> Vec<PathBuf> {
    LoaderCaps::host().search_subdirs()
}

/// Pure form of [`search_subdirs`]: glibc-hwcaps levels first, then (before glibc 2.37) the
/// legacy subdirectories, built as `_dl_important_hwcaps` builds them: every subset of
/// {`hwcaps` (given in glibc's bit order, lowest first), `platform`, "tls"}, from the full
/// set down to the empty one, each written as a path from the highest member ("tls") down.
pub fn subdirs_for(levels: &[&str], platform: Option<&str>, hwcaps: &[&str], legacy: bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = levels.iter().map(|level| PathBuf::from("glibc-hwcaps").join(level)).collect();
    if legacy {
        // glibc refuses more than this many (it would overflow its size computation); the
        // x86-64 loader has at most four.
        const MAX_PARTS: usize = 16;
        let parts: Vec<&str> = hwcaps.iter().copied().chain(platform).chain(["tls"]).take(MAX_PARTS).collect();
        for subset in (1u32..(1u32 << parts.len())).rev() {
            let dir: PathBuf = (0..parts.len()).rev().filter(|i| subset & (1 << i) != 0).map(|i| parts[i]).collect();
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out.push(PathBuf::new());
    out
}

fn multiarch_triple() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86_64-linux-gnu"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else if cfg!(target_arch = "x86") {
        "i386-linux-gnu"
    } else if cfg!(target_arch = "arm") {
        "arm-linux-gnueabihf"
    } else if cfg!(target_arch = "riscv64") {
        "riscv64-linux-gnu"
    } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
        "powerpc64le-linux-gnu"
    } else if cfg!(target_arch = "s390x") {
        "s390x-linux-gnu"
    } else if cfg!(target_arch = "loongarch64") {
        "loongarch64-linux-gnu"
    } else {
        "unknown-linux-gnu"
    }
}
