//! Facts about this host's glibc dynamic loader that decide where it looks for libraries:
//! default directories, per-directory search subdirectories, `$LIB` and `$PLATFORM`.
//!
//! Measured on Debian 12 x86_64 (glibc 2.36) with `ld.so --help` and `LD_DEBUG=libs`; the
//! tests compare [`search_subdirs`] with what the running ld.so prints.

use std::path::PathBuf;

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

/// What `$PLATFORM` expands to: the kernel's AT_PLATFORM string.
pub fn dst_platform() -> Option<String> {
    platform()
}

/// Subdirectories ld.so tries inside every search directory, best first, ending with the
/// directory itself (the empty path).
pub fn search_subdirs() -> Vec<PathBuf> {
    let platform = platform();
    subdirs_for(&glibc_hwcaps_levels(), platform.as_deref(), legacy_hwcap_names(), glibc_searches_legacy_subdirs())
}

/// Pure form of [`search_subdirs`]: glibc-hwcaps levels first, then (before glibc 2.37) the
/// legacy `tls` × platform × hwcap combinations from most to least specific.
pub fn subdirs_for(levels: &[&str], platform: Option<&str>, hwcaps: &[&str], legacy: bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = levels.iter().map(|level| PathBuf::from("glibc-hwcaps").join(level)).collect();
    if legacy {
        let mut combos: Vec<PathBuf> = Vec::new();
        for prefix in ["tls", ""] {
            for p in platform.into_iter().map(Some).chain([None]) {
                for h in hwcaps.iter().copied().map(Some).chain([None]) {
                    let mut dir = PathBuf::from(prefix);
                    dir.extend(p);
                    dir.extend(h);
                    combos.push(dir);
                }
            }
        }
        for dir in combos {
            if !dir.as_os_str().is_empty() && !out.contains(&dir) {
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

/// The x86-64 micro-architecture levels (psABI) this CPU supports, best first, which is the
/// order glibc searches `glibc-hwcaps/x86-64-vN`.
#[cfg(target_arch = "x86_64")]
fn glibc_hwcaps_levels() -> Vec<&'static str> {
    use std::arch::is_x86_feature_detected as has;
    let v2 = has!("cmpxchg16b") && has!("popcnt") && has!("sse3") && has!("sse4.1") && has!("sse4.2") && has!("ssse3");
    let v3 = v2
        && has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    let v4 = v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
    [(v4, "x86-64-v4"), (v3, "x86-64-v3"), (v2, "x86-64-v2")]
        .into_iter()
        .filter_map(|(ok, name)| ok.then_some(name))
        .collect()
}

/// Other architectures' levels are not modelled: only the directory itself and the legacy
/// subdirectories are searched. Recorded as a known gap rather than guessed.
#[cfg(not(target_arch = "x86_64"))]
fn glibc_hwcaps_levels() -> Vec<&'static str> {
    Vec::new()
}

/// glibc 2.26–2.36 on x86_64 treats "x86_64" as an important hwcap name.
fn legacy_hwcap_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") { &["x86_64"] } else { &[] }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn platform() -> Option<String> {
    // SAFETY: getauxval has no preconditions; it returns 0 when the entry is absent.
    let ptr = unsafe { libc::getauxval(libc::AT_PLATFORM) } as *const libc::c_char;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-zero AT_PLATFORM is the address of a NUL-terminated string the kernel
    // placed on the initial stack, which lives, unmodified, for the whole process.
    let text = unsafe { std::ffi::CStr::from_ptr(ptr) };
    Some(text.to_string_lossy().into_owned())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn platform() -> Option<String> {
    None
}

/// glibc 2.37 dropped the legacy hwcap subdirectories; the loader that will run the plugin
/// is the same system glibc this process runs on, so its version decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_searches_legacy_subdirs() -> bool {
    // SAFETY: gnu_get_libc_version takes no arguments and returns a pointer to a static
    // NUL-terminated string inside libc.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let version = version.to_string_lossy();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) < (2, 37)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_searches_legacy_subdirs() -> bool {
    false
}
