//! The loader's search subdirectories and `$PLATFORM` follow from the CPU's capabilities as
//! glibc derives them, for CPUs this machine is not (Intel with and without AVX-512, Xeon
//! Phi, AMD with AVX-512, pre-AVX), and match what this host's ld.so reports about itself.

use std::fs;
use std::path::{Path, PathBuf};

use super::support::host_binary;
use crate::integrity::loader_caps::{LoaderCaps, Vendor, X86Cpu, X86Feature as F};
use crate::integrity::{DEFAULT_MAX_FILE_SIZE, ElfInfo, Machine, ObjectType, SearchConfig, Subject, libraries};

const V2: &[F] = &[F::Cmpxchg16b, F::LahfSahf, F::Popcnt, F::Sse3, F::Ssse3, F::Sse41, F::Sse42];
const V3_AND_BMI: &[F] = &[F::Avx, F::Avx2, F::Bmi1, F::Bmi2, F::F16c, F::Fma, F::Lzcnt, F::Movbe];
const V4: &[F] = &[F::Avx512F, F::Avx512Bw, F::Avx512Cd, F::Avx512Dq, F::Avx512Vl];

fn cpu(vendor: Vendor, groups: &[&[F]]) -> X86Cpu {
    X86Cpu::new(vendor, &groups.concat())
}

fn caps(cpu: X86Cpu, glibc: (u32, u32)) -> LoaderCaps {
    LoaderCaps { x86_64: Some(cpu), at_platform: Some("x86_64".to_owned()), glibc: Some(glibc) }
}

/// Skylake-SP, Ice Lake, Sapphire Rapids: Intel with AVX-512 F/BW/CD/DQ/VL.
fn intel_avx512() -> X86Cpu {
    cpu(Vendor::Intel, &[V2, V3_AND_BMI, V4])
}

/// Zen 4: the same AVX-512 subset, from AMD.
fn amd_avx512() -> X86Cpu {
    cpu(Vendor::Amd, &[V2, V3_AND_BMI, V4])
}

fn subdirs(caps: &LoaderCaps) -> Vec<String> {
    caps.search_subdirs().iter().map(|d| d.to_str().unwrap().to_owned()).collect()
}

#[test]
fn an_intel_avx512_cpu_searches_the_haswell_and_avx512_1_subdirectories() {
    let caps = caps(intel_avx512(), (2, 36));
    assert_eq!(caps.platform().as_deref(), Some("haswell"));
    assert_eq!(caps.legacy_hwcaps(), ["x86_64", "avx512_1"]);
    // The order LD_DEBUG=libs prints on such a host with glibc 2.36.
    assert_eq!(
        subdirs(&caps),
        [
            "glibc-hwcaps/x86-64-v4",
            "glibc-hwcaps/x86-64-v3",
            "glibc-hwcaps/x86-64-v2",
            "tls/haswell/avx512_1/x86_64",
            "tls/haswell/avx512_1",
            "tls/haswell/x86_64",
            "tls/haswell",
            "tls/avx512_1/x86_64",
            "tls/avx512_1",
            "tls/x86_64",
            "tls",
            "haswell/avx512_1/x86_64",
            "haswell/avx512_1",
            "haswell/x86_64",
            "haswell",
            "avx512_1/x86_64",
            "avx512_1",
            "x86_64",
            "",
        ]
    );
}

#[test]
fn an_amd_avx512_cpu_gets_neither_the_haswell_platform_nor_avx512_1() {
    let caps = caps(amd_avx512(), (2, 36));
    assert_eq!(caps.platform().as_deref(), Some("x86_64"));
    assert_eq!(caps.legacy_hwcaps(), ["x86_64"]);
    assert_eq!(
        subdirs(&caps),
        [
            "glibc-hwcaps/x86-64-v4",
            "glibc-hwcaps/x86-64-v3",
            "glibc-hwcaps/x86-64-v2",
            "tls/x86_64/x86_64",
            "tls/x86_64",
            "tls",
            "x86_64/x86_64",
            "x86_64",
            "",
        ]
    );
}

#[test]
fn an_intel_cpu_without_avx512_is_haswell_without_avx512_1() {
    let caps = caps(cpu(Vendor::Intel, &[V2, V3_AND_BMI]), (2, 36));
    assert_eq!(
        subdirs(&caps),
        [
            "glibc-hwcaps/x86-64-v3",
            "glibc-hwcaps/x86-64-v2",
            "tls/haswell/x86_64",
            "tls/haswell",
            "tls/x86_64",
            "tls",
            "haswell/x86_64",
            "haswell",
            "x86_64",
            "",
        ]
    );
}

#[test]
fn a_xeon_phi_is_its_own_platform_and_not_avx512_1() {
    // Knights Landing: AVX-512 F/CD/ER/PF but not BW/DQ/VL.
    let knl = cpu(Vendor::Intel, &[V2, V3_AND_BMI, &[F::Avx512F, F::Avx512Cd, F::Avx512Er, F::Avx512Pf]]);
    let caps = caps(knl, (2, 36));
    assert_eq!(caps.platform().as_deref(), Some("xeon_phi"));
    assert_eq!(caps.legacy_hwcaps(), ["x86_64"]);
    assert_eq!(caps.glibc_hwcaps_levels(), ["x86-64-v3", "x86-64-v2"]);
    assert_eq!(subdirs(&caps)[2..4], ["tls/xeon_phi/x86_64", "tls/xeon_phi"]);
}

#[test]
fn avx512er_without_avx512pf_falls_back_to_haswell_and_still_blocks_avx512_1() {
    let odd = cpu(Vendor::Intel, &[V2, V3_AND_BMI, V4, &[F::Avx512Er]]);
    let caps = caps(odd, (2, 36));
    assert_eq!(caps.platform().as_deref(), Some("haswell"));
    assert_eq!(caps.legacy_hwcaps(), ["x86_64"]);
}

#[test]
fn a_cpu_without_avx_searches_only_the_v2_level_and_the_kernels_platform() {
    // Sandy Bridge has AVX but not AVX2; an Intel part short of Haswell keeps AT_PLATFORM.
    let caps = caps(cpu(Vendor::Intel, &[V2, &[F::Avx]]), (2, 36));
    assert_eq!(caps.glibc_hwcaps_levels(), ["x86-64-v2"]);
    assert_eq!(caps.platform().as_deref(), Some("x86_64"));
    assert_eq!(subdirs(&caps)[1..3], ["tls/x86_64/x86_64", "tls/x86_64"]);
}

#[test]
fn each_glibc_hwcaps_level_needs_the_one_below_it() {
    let caps = caps(cpu(Vendor::Amd, &[V3_AND_BMI, V4]), (2, 36));
    assert!(caps.glibc_hwcaps_levels().is_empty(), "{:?}", caps.glibc_hwcaps_levels());
}

#[test]
fn glibc_2_37_drops_the_legacy_subdirectories_but_keeps_the_platform_for_dst() {
    let caps = caps(intel_avx512(), (2, 37));
    assert_eq!(subdirs(&caps), ["glibc-hwcaps/x86-64-v4", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2", ""]);
    assert_eq!(caps.platform().as_deref(), Some("haswell"));
}

#[test]
fn other_architectures_search_the_kernels_platform_only() {
    let caps = LoaderCaps { x86_64: None, at_platform: Some("aarch64".to_owned()), glibc: Some((2, 36)) };
    assert_eq!(subdirs(&caps), ["tls/aarch64", "tls", "aarch64", ""]);
}

/// An exe whose RUNPATH is `runpath` and which needs libc.so.6, placed in a temp tree.
fn resolve_libc(runpath: &str, caps: &LoaderCaps, tree: &Path) -> PathBuf {
    let host =
        crate::integrity::elf::inspect(&Subject::new("self", "/proc/self/exe"), host_binary(), DEFAULT_MAX_FILE_SIZE)
            .unwrap();
    let info = ElfInfo {
        file_size: 0,
        machine: Machine::host(),
        object_type: ObjectType::Dynamic,
        entry: 0x1000,
        interpreter: host.interpreter,
        has_dynamic: true,
        needed: vec!["libc.so.6".into()],
        rpath: None,
        runpath: Some(runpath.into()),
        soname: None,
        nodeflib: false,
        writable_and_executable: None,
    };
    let exe = tree.join("bin/app");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(&exe, b"placeholder: only its location matters").unwrap();
    let files = libraries::resolve(&Subject::new("app", &exe), &info, &SearchConfig::for_loader(caps)).unwrap();
    files.libraries.iter().find(|l| l.name == "libc.so.6").unwrap().canonical.clone()
}

fn libc_copy_at(dir: &Path) -> PathBuf {
    let system = crate::integrity::loader_host::default_dirs()
        .into_iter()
        .map(|d| d.join("libc.so.6"))
        .find(|p| p.is_file())
        .expect("libc.so.6 in the default directories");
    fs::create_dir_all(dir).unwrap();
    let to = dir.join("libc.so.6");
    fs::copy(system, &to).unwrap();
    fs::canonicalize(to).unwrap()
}

/// The files granted are the ones this CPU's loader lands on, not another CPU's.
#[test]
fn the_granted_library_is_the_one_the_cpus_loader_finds_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let lib = root.join("lib");
    let plain = libc_copy_at(&lib);
    let avx512 = libc_copy_at(&lib.join("haswell/avx512_1"));
    let runpath = lib.to_str().unwrap();

    assert_eq!(resolve_libc(runpath, &caps(intel_avx512(), (2, 36)), &root), avx512);
    assert_eq!(resolve_libc(runpath, &caps(amd_avx512(), (2, 36)), &root), plain);
    assert_eq!(resolve_libc(runpath, &caps(intel_avx512(), (2, 37)), &root), plain);
}

#[test]
fn platform_in_a_runpath_expands_to_the_loaders_platform_not_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let haswell = libc_copy_at(&root.join("lib/haswell"));
    let x86_64 = libc_copy_at(&root.join("lib/x86_64"));
    let runpath = "$ORIGIN/../lib/$PLATFORM";
    assert_eq!(resolve_libc(runpath, &caps(intel_avx512(), (2, 37)), &root), haswell);
    assert_eq!(resolve_libc(runpath, &caps(amd_avx512(), (2, 37)), &root), x86_64);
}

/// Checked against the ld.so of whatever machine runs the tests.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
mod host {
    use std::process::Command;

    use super::*;

    /// One `key=value` line of `ld.so --list-diagnostics`.
    fn diagnostic(text: &str, key: &str) -> String {
        let prefix = format!("{key}=");
        let line = text.lines().find_map(|l| l.strip_prefix(&prefix));
        line.unwrap_or_else(|| panic!("no {key} in ld.so --list-diagnostics")).trim_matches('"').to_owned()
    }

    fn hex(value: &str) -> u64 {
        u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
    }

    /// What this host's CPU is, read by us, agrees with what its ld.so derived from the same CPU.
    #[test]
    fn the_host_capabilities_match_what_the_host_ld_so_derived() {
        let interp = super::super::support::host_interpreter();
        let out = Command::new(&interp).arg("--list-diagnostics").env_clear().output().unwrap();
        assert!(out.status.success(), "{interp:?} --list-diagnostics: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let caps = LoaderCaps::host();

        assert_eq!(caps.platform(), Some(diagnostic(&text, "dl_platform")));

        // glibc's x86-64 hwcap bits: 1 << 1 is "x86_64", 1 << 2 is "avx512_1".
        let important = hex(&diagnostic(&text, "dl_hwcap")) & hex(&diagnostic(&text, "dl_hwcap_important"));
        let theirs: Vec<&str> = [(1u64 << 1, "x86_64"), (1 << 2, "avx512_1")]
            .into_iter()
            .filter_map(|(bit, name)| (important & bit != 0).then_some(name))
            .collect();
        assert_eq!(caps.legacy_hwcaps(), theirs);

        let active = hex(&diagnostic(&text, "dl_hwcaps_subdirs_active"));
        let all = diagnostic(&text, "dl_hwcaps_subdirs");
        let theirs: Vec<&str> =
            all.split(':').enumerate().filter(|(i, _)| active & (1 << i) != 0).map(|(_, name)| name).collect();
        assert_eq!(caps.glibc_hwcaps_levels(), theirs);
    }
}
