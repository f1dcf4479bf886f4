//! Fixtures: small hand-built ELF images, copies of real binaries, key pairs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::integrity::{Machine, PublicKey, generate_keypair};

pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const BASE: u64 = 0x40_0000;

/// The test executable itself: a real, dynamically linked PIE for this host.
pub fn host_binary() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read("/proc/self/exe").expect("read /proc/self/exe"))
}

/// The program interpreter (ld.so) of this host, as the test executable names it.
pub fn host_interpreter() -> PathBuf {
    let me = crate::integrity::Subject::new("self", "/proc/self/exe");
    crate::integrity::elf::inspect(&me, host_binary(), crate::integrity::DEFAULT_MAX_FILE_SIZE)
        .expect("inspect the test executable")
        .interpreter
        .expect("the test executable is dynamically linked")
}

/// A small real dynamically linked binary, cheap to copy into many fixtures.
pub fn small_system_binary() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read("/bin/true").expect("read /bin/true"))
}

pub fn write_exe(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write fixture");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod fixture");
    path
}

/// x86-64 code that pauses forever (so a test can inspect the running process).
pub const CODE_PAUSE_LOOP: &[u8] = &[0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
/// x86-64 code that exits with status 0.
pub const CODE_EXIT_0: &[u8] = &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];

/// A minimal static ELF64 little-endian executable: one PT_LOAD segment holding the headers
/// and `code`, optionally a PT_DYNAMIC with an empty dynamic array (a static PIE's shape).
pub fn tiny_elf64(machine: u16, e_type: u16, code: &[u8], with_dynamic: bool) -> Vec<u8> {
    let phnum: u16 = if with_dynamic { 2 } else { 1 };
    let code_off = 64 + 56 * u64::from(phnum);
    let dyn_off = code_off + code.len() as u64;
    let total = dyn_off + if with_dynamic { 16 } else { 0 };

    let mut out = Vec::new();
    ehdr64(&mut out, e_type, machine, BASE + code_off, phnum);
    phdr64(&mut out, PT_LOAD, 5, 0, BASE, total);
    if with_dynamic {
        phdr64(&mut out, PT_DYNAMIC, 4, dyn_off, BASE + dyn_off, 16);
    }
    out.extend_from_slice(code);
    if with_dynamic {
        out.extend_from_slice(&[0; 16]); // DT_NULL
    }
    assert_eq!(out.len() as u64, total);
    out
}

/// An ELF64 little-endian file header: program headers right after it, no sections.
fn ehdr64(out: &mut Vec<u8>, e_type: u16, machine: u16, entry: u64, phnum: u16) {
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&e_type.to_le_bytes());
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&phnum.to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
}

fn phdr64(out: &mut Vec<u8>, p_type: u32, flags: u32, offset: u64, vaddr: u64, size: u64) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&vaddr.to_le_bytes());
    out.extend_from_slice(&vaddr.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&0x1000u64.to_le_bytes());
}

/// A dynamically linked ELF64 little-endian executable for the host: `interpreter` as
/// PT_INTERP, and a dynamic section needing `needed` with `runpath` as DT_RUNPATH. One
/// PT_LOAD maps the whole file, so DT_STRTAB's address maps back into it.
pub fn dynamic_elf64(interpreter: &Path, needed: &str, runpath: &str) -> Vec<u8> {
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: u64 = 1;
    const DT_STRTAB: u64 = 5;
    const DT_STRSZ: u64 = 10;
    const DT_RUNPATH: u64 = 29;
    let phnum: u16 = 3;
    let interp_off = 64 + 56 * u64::from(phnum);
    let mut interp = interpreter.as_os_str().as_encoded_bytes().to_vec();
    interp.push(0);
    let strtab_off = interp_off + interp.len() as u64;
    let strtab = format!("\0{needed}\0{runpath}\0").into_bytes();
    let runpath_at = 1 + needed.len() as u64 + 1;
    let dyn_off = (strtab_off + strtab.len() as u64).next_multiple_of(8);
    let dynamic: [(u64, u64); 5] = [
        (DT_NEEDED, 1),
        (DT_RUNPATH, runpath_at),
        (DT_STRTAB, BASE + strtab_off),
        (DT_STRSZ, strtab.len() as u64),
        (0, 0),
    ];
    let code_off = dyn_off + 16 * dynamic.len() as u64;
    let total = code_off + CODE_EXIT_0.len() as u64;

    let mut out = Vec::new();
    ehdr64(&mut out, 2 /* ET_EXEC */, Machine::host().e_machine, BASE + code_off, phnum);
    phdr64(&mut out, PT_LOAD, 5, 0, BASE, total);
    phdr64(&mut out, PT_INTERP, 4, interp_off, BASE + interp_off, interp.len() as u64);
    phdr64(&mut out, PT_DYNAMIC, 6, dyn_off, BASE + dyn_off, 16 * dynamic.len() as u64);
    out.extend_from_slice(&interp);
    out.extend_from_slice(&strtab);
    out.resize(dyn_off as usize, 0);
    for (tag, value) in dynamic {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(CODE_EXIT_0);
    assert_eq!(out.len() as u64, total);
    out
}

/// A minimal static ELF32 little-endian executable for `machine` (i386 by default use).
pub fn tiny_elf32(machine: u16) -> Vec<u8> {
    let code: &[u8] = &[0xb8, 1, 0, 0, 0, 0x31, 0xdb, 0xcd, 0x80]; // exit(0) via int 0x80
    let code_off: u32 = 52 + 32;
    let total = code_off + code.len() as u32;
    let base: u32 = 0x0804_8000;
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(base + code_off).to_le_bytes());
    out.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&52u16.to_le_bytes()); // e_ehsize
    out.extend_from_slice(&32u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for field in [PT_LOAD, 0, base, base, total, total, 5, 0x1000] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(code);
    out
}

/// The uname-style name of a machine other than the host, and its e_machine.
pub fn foreign_machine() -> (u16, &'static str) {
    if Machine::host().e_machine == EM_AARCH64 { (EM_X86_64, "x86_64") } else { (EM_AARCH64, "aarch64") }
}

pub struct Keys {
    pub secret: PathBuf,
    pub public: PublicKey,
}

pub fn keypair(dir: &Path, stem: &str) -> Keys {
    let secret = dir.join(format!("{stem}.key"));
    let public_path = dir.join(format!("{stem}.pub"));
    let public = generate_keypair(&secret, &public_path).expect("keygen");
    Keys { secret, public }
}
