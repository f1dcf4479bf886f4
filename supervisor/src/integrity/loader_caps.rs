//! The CPU and kernel facts from which glibc's ld.so derives where it looks for libraries:
//! the glibc-hwcaps levels, the legacy hwcap names and platform, and so `$PLATFORM`. Read
//! once from cpuid, the auxiliary vector and libc's version ([`LoaderCaps::host`]), or given
//! by a test, so the search order of any CPU can be checked on every machine.
//!
//! Modelled on glibc 2.36's `init_cpu_features` (sysdeps/x86/cpu-features.c),
//! `get_isa_level` (sysdeps/x86/get-isa-level.h) and `_dl_important_hwcaps`
//! (elf/dl-hwcaps.c). On x86-64 the loader's platform starts as the kernel's AT_PLATFORM
//! and, on Intel CPUs only, becomes "haswell" or "xeon_phi"; the hwcap bits are `x86_64`
//! and, on Intel AVX-512 CPUs that are not Xeon Phi, `avx512_1`. AMD CPUs with AVX-512 get
//! neither, which is why a test run on one cannot see the Intel rules.

use std::collections::BTreeSet;

/// The CPU maker, as glibc's `cpu_features->basic.kind` sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

/// x86 features glibc's loader looks at. "Usable" as glibc counts it: the CPU has it and,
/// for AVX and AVX-512 ones, the kernel enabled their register state (XCR0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum X86Feature {
    Cmpxchg16b,
    LahfSahf,
    Popcnt,
    Sse3,
    Ssse3,
    Sse41,
    Sse42,
    Avx,
    Avx2,
    Bmi1,
    Bmi2,
    F16c,
    Fma,
    Lzcnt,
    Movbe,
    Avx512F,
    Avx512Bw,
    Avx512Cd,
    Avx512Dq,
    Avx512Vl,
    Avx512Er,
    Avx512Pf,
}

/// An x86-64 CPU as the loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X86Cpu {
    pub vendor: Vendor,
    pub usable: BTreeSet<X86Feature>,
}

impl X86Cpu {
    pub fn new(vendor: Vendor, usable: &[X86Feature]) -> Self {
        Self { vendor, usable: usable.iter().copied().collect() }
    }

    fn has_all(&self, features: &[X86Feature]) -> bool {
        features.iter().all(|f| self.usable.contains(f))
    }
}

/// Everything ld.so's search subdirectories and `$PLATFORM` depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderCaps {
    /// `None` on other architectures, whose hwcaps are not modelled (a known gap: only the
    /// directories themselves and the AT_PLATFORM subdirectories are searched there).
    pub x86_64: Option<X86Cpu>,
    /// The kernel's AT_PLATFORM string.
    pub at_platform: Option<String>,
    /// glibc's (major, minor); `None` for a libc that is not glibc.
    pub glibc: Option<(u32, u32)>,
}

use X86Feature as F;

/// glibc's `get_isa_level`, best level first (the order glibc searches `glibc-hwcaps/`).
const LEVELS: [(&str, &[X86Feature]); 3] = [
    ("x86-64-v4", &[F::Avx512F, F::Avx512Bw, F::Avx512Cd, F::Avx512Dq, F::Avx512Vl]),
    ("x86-64-v3", &[F::Avx, F::Avx2, F::F16c, F::Fma, F::Lzcnt, F::Movbe]),
    ("x86-64-v2", &[F::Cmpxchg16b, F::LahfSahf, F::Popcnt, F::Sse3, F::Ssse3, F::Sse41, F::Sse42]),
];

const HASWELL: &[X86Feature] = &[F::Avx2, F::Fma, F::Bmi1, F::Bmi2, F::Lzcnt, F::Movbe, F::Popcnt];

impl LoaderCaps {
    /// This machine, read afresh (a few cpuid instructions).
    pub fn host() -> Self {
        Self { x86_64: host_x86_64(), at_platform: host_at_platform(), glibc: host_glibc_version() }
    }

    /// The `glibc-hwcaps/` subdirectory names, best first. Each level needs the one below.
    pub fn glibc_hwcaps_levels(&self) -> Vec<&'static str> {
        let Some(cpu) = &self.x86_64 else {
            return Vec::new();
        };
        let mut supported: Vec<&'static str> = Vec::new();
        for (name, needs) in LEVELS.iter().rev() {
            if !cpu.has_all(needs) {
                break;
            }
            supported.insert(0, name);
        }
        supported
    }

    /// The loader's platform (`GLRO(dl_platform)`): what `$PLATFORM` expands to and the
    /// platform component of the legacy subdirectories.
    pub fn platform(&self) -> Option<String> {
        let intel = self.x86_64.as_ref().filter(|cpu| cpu.vendor == Vendor::Intel);
        let Some(cpu) = intel else {
            return self.at_platform.clone();
        };
        if cpu.has_all(&[F::Avx512Cd, F::Avx512Er, F::Avx512Pf]) {
            return Some("xeon_phi".to_owned());
        }
        if cpu.has_all(HASWELL) {
            return Some("haswell".to_owned());
        }
        self.at_platform.clone()
    }

    /// The important legacy hwcap names this CPU has, in glibc's bit order (lowest first).
    pub fn legacy_hwcaps(&self) -> Vec<&'static str> {
        let Some(cpu) = &self.x86_64 else {
            return Vec::new();
        };
        let mut names = vec!["x86_64"];
        let avx512_1 = cpu.vendor == Vendor::Intel
            && cpu.has_all(&[F::Avx512Cd, F::Avx512Bw, F::Avx512Dq, F::Avx512Vl])
            && !cpu.usable.contains(&F::Avx512Er);
        if avx512_1 {
            names.push("avx512_1");
        }
        names
    }

    /// glibc 2.37 dropped the legacy subdirectories.
    pub fn searches_legacy_subdirs(&self) -> bool {
        self.glibc.is_some_and(|version| version < (2, 37))
    }

    /// Subdirectories ld.so tries inside every search directory, best first, ending with
    /// the directory itself (the empty path).
    pub fn search_subdirs(&self) -> Vec<std::path::PathBuf> {
        let platform = self.platform();
        super::loader_host::subdirs_for(
            &self.glibc_hwcaps_levels(),
            platform.as_deref(),
            &self.legacy_hwcaps(),
            self.searches_legacy_subdirs(),
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn host_x86_64() -> Option<X86Cpu> {
    use std::arch::is_x86_feature_detected as has;
    use std::arch::x86_64::{__cpuid, __cpuid_count};

    let leaf0 = __cpuid(0);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let vendor = match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Other,
    };
    // std's detection checks XCR0 as glibc does, so these are "usable" in glibc's sense.
    let detected = [
        (has!("cmpxchg16b"), F::Cmpxchg16b),
        (has!("popcnt"), F::Popcnt),
        (has!("sse3"), F::Sse3),
        (has!("ssse3"), F::Ssse3),
        (has!("sse4.1"), F::Sse41),
        (has!("sse4.2"), F::Sse42),
        (has!("avx"), F::Avx),
        (has!("avx2"), F::Avx2),
        (has!("bmi1"), F::Bmi1),
        (has!("bmi2"), F::Bmi2),
        (has!("f16c"), F::F16c),
        (has!("fma"), F::Fma),
        (has!("lzcnt"), F::Lzcnt),
        (has!("movbe"), F::Movbe),
        (has!("avx512f"), F::Avx512F),
        (has!("avx512bw"), F::Avx512Bw),
        (has!("avx512cd"), F::Avx512Cd),
        (has!("avx512dq"), F::Avx512Dq),
        (has!("avx512vl"), F::Avx512Vl),
    ];
    let mut usable: BTreeSet<X86Feature> = detected.into_iter().filter_map(|(ok, f)| ok.then_some(f)).collect();
    // std does not detect these three (LLVM dropped AVX512ER/PF), so read cpuid's bits;
    // glibc counts ER and PF usable exactly when AVX512F is.
    if __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 != 0 {
        usable.insert(F::LahfSahf);
    }
    if leaf0.eax >= 7 && usable.contains(&F::Avx512F) {
        let leaf7 = __cpuid_count(7, 0);
        if leaf7.ebx & (1 << 27) != 0 {
            usable.insert(F::Avx512Er);
        }
        if leaf7.ebx & (1 << 26) != 0 {
            usable.insert(F::Avx512Pf);
        }
    }
    Some(X86Cpu { vendor, usable })
}

#[cfg(not(target_arch = "x86_64"))]
fn host_x86_64() -> Option<X86Cpu> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_at_platform() -> Option<String> {
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
fn host_at_platform() -> Option<String> {
    None
}

/// The loader that will run the plugin is the same system glibc this process runs on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_version() -> Option<(u32, u32)> {
    // SAFETY: gnu_get_libc_version takes no arguments and returns a pointer to a static
    // NUL-terminated string inside libc.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let version = version.to_string_lossy();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Some((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_version() -> Option<(u32, u32)> {
    None
}
