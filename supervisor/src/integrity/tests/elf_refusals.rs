//! Every kind of file that cannot run as a plugin here is refused with its own cause.

use std::ffi::OsStr;
use std::path::Path;

use super::support::{
    CODE_EXIT_0, EM_386, EM_X86_64, dynamic_elf64, foreign_machine, host_binary, small_system_binary, tiny_elf32,
    tiny_elf64, write_exe,
};
use crate::integrity::{
    DEFAULT_MAX_FILE_SIZE, ElfClass, ElfError, IntegrityError, Linkage, Machine, ObjectType, Policy, Subject,
    VerifiedBinary, elf, inspect_executable_from,
};

fn inspect(bytes: &[u8]) -> Result<crate::integrity::ElfInfo, ElfError> {
    inspect_executable_from(&Subject::new("auth", "/plugins/auth"), bytes, DEFAULT_MAX_FILE_SIZE)
}

fn refusal(bytes: &[u8]) -> String {
    inspect(bytes).unwrap_err().to_string()
}

#[test]
fn the_host_binary_is_accepted_with_its_loader_requests() {
    let info = inspect(host_binary()).unwrap();
    assert_eq!(info.machine, Machine::host());
    assert_eq!(info.linkage(), Linkage::Dynamic);
    assert!(info.interpreter.as_deref().is_some_and(Path::is_absolute));
    assert!(info.needed.iter().any(|n| n == OsStr::new("libc.so.6")), "{:?}", info.needed);
}

#[test]
fn a_static_executable_is_accepted_as_static() {
    let info = inspect(&tiny_elf64(Machine::host().e_machine, 2, CODE_EXIT_0, false)).unwrap();
    assert_eq!(info.object_type, ObjectType::Executable);
    assert_eq!(info.linkage(), Linkage::Static);
    assert!(info.needed.is_empty() && info.interpreter.is_none());
}

#[test]
fn a_static_pie_is_accepted_as_static_pie() {
    let info = inspect(&tiny_elf64(Machine::host().e_machine, 3, CODE_EXIT_0, true)).unwrap();
    assert_eq!(info.object_type, ObjectType::Dynamic);
    assert_eq!(info.linkage(), Linkage::StaticPie);
}

#[test]
fn a_shell_script_is_refused_as_a_script() {
    let err = inspect(b"#!/bin/sh\necho hello\n").unwrap_err();
    assert!(matches!(err, ElfError::Script { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin \"auth\": /plugins/auth is a script starting with \"#!/bin/sh\", not an ELF executable"
    );
}

#[test]
fn an_empty_file_is_refused_as_empty() {
    assert_eq!(refusal(b""), "plugin \"auth\": /plugins/auth is empty (0 bytes), not an ELF executable");
}

#[test]
fn a_non_elf_file_is_refused_with_its_first_bytes() {
    assert_eq!(
        refusal(b"MZ\x90\x00 this is a PE file"),
        "plugin \"auth\": /plugins/auth is not an ELF file (it starts with bytes 4d 5a 90 00)"
    );
}

#[test]
fn the_first_100_bytes_of_a_real_binary_are_refused_as_truncated() {
    let err = inspect(&small_system_binary()[..100]).unwrap_err();
    match &err {
        ElfError::Truncated { what, size, .. } => {
            assert_eq!(*what, "program header table");
            assert_eq!(*size, 100);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(
            "plugin \"auth\": /plugins/auth is a truncated ELF file: its program header table ends at byte"
        )
    );
}

#[test]
fn a_file_cut_inside_the_elf_identification_is_truncated_not_foreign() {
    let err = inspect(b"\x7fEL").unwrap_err();
    assert!(matches!(err, ElfError::Truncated { what: "ELF identification", .. }), "{err:?}");
    let err = inspect(&small_system_binary()[..40]).unwrap_err();
    assert!(matches!(err, ElfError::Truncated { what: "ELF header", .. }), "{err:?}");
}

#[test]
fn an_elf_patched_to_another_machine_names_both_machines() {
    let (machine, name) = foreign_machine();
    let mut bytes = small_system_binary().to_vec();
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    assert_eq!(refusal(&bytes), format!("plugin \"auth\": built for {name}, this host is {}", Machine::host()));
}

#[test]
fn an_elf32_binary_is_refused_for_its_class() {
    let err = inspect(&tiny_elf32(EM_386)).unwrap_err();
    assert!(matches!(err, ElfError::ClassMismatch { found: ElfClass::Elf32, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin \"auth\": /plugins/auth is a 32-bit ELF file (ELFCLASS32) built for i386, this host runs 64-bit {} binaries",
            Machine::host()
        )
    );
}

#[test]
fn a_corrupted_identification_is_refused_as_corrupted() {
    let mut bytes = small_system_binary().to_vec();
    bytes[4] = 7;
    assert_eq!(
        refusal(&bytes),
        "plugin \"auth\": /plugins/auth is a corrupted ELF file: invalid class byte 7 (EI_CLASS)"
    );
}

#[test]
fn a_shared_library_without_entry_point_is_not_an_executable() {
    let mut bytes = host_binary().to_vec();
    bytes[24..32].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        refusal(&bytes),
        "plugin \"auth\": /plugins/auth is a shared library (ET_DYN without an entry point), not an executable"
    );
}

#[test]
fn an_object_file_is_not_an_executable() {
    let bytes = tiny_elf64(Machine::host().e_machine, 1, CODE_EXIT_0, false);
    assert_eq!(
        refusal(&bytes),
        "plugin \"auth\": /plugins/auth is a relocatable object file (ET_REL), not an executable"
    );
}

#[test]
fn libraries_without_an_interpreter_to_load_them_are_refused() {
    let mut bytes = host_binary().to_vec();
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    let interp = (0..phnum)
        .map(|i| phoff + i * 56)
        .find(|&at| bytes[at..at + 4] == 3u32.to_le_bytes())
        .expect("the host binary has a PT_INTERP");
    bytes[interp..interp + 4].copy_from_slice(&0u32.to_le_bytes()); // PT_NULL
    let err = inspect(&bytes).unwrap_err();
    assert!(matches!(err, ElfError::MissingInterpreter { .. }), "{err:?}");
    assert!(err.to_string().ends_with("but names no program interpreter (PT_INTERP) to load them"), "{err}");
}

#[test]
fn a_file_over_the_limit_is_refused_before_parsing() {
    let subject = Subject::new("auth", "/plugins/auth");
    let err = inspect_executable_from(&subject, host_binary(), 4096).unwrap_err();
    assert!(matches!(err, ElfError::TooLarge { limit: 4096, .. }), "{err:?}");
}

#[test]
fn an_unknown_machine_is_named_by_number() {
    let bytes = tiny_elf64(0x1234, 2, CODE_EXIT_0, false);
    assert_eq!(refusal(&bytes), format!("plugin \"auth\": built for machine 0x1234, this host is {}", Machine::host()));
}

#[test]
fn dynamic_entries_of_a_library_are_read() {
    let subject = Subject::new("probe", "/usr/lib/x86_64-linux-gnu/libm.so.6");
    let libm = std::fs::File::open("/usr/lib/x86_64-linux-gnu/libm.so.6")
        .or_else(|_| std::fs::File::open("/lib/x86_64-linux-gnu/libm.so.6"));
    let Ok(libm) = libm else {
        // Only meaningful on the Debian x86_64 hosts this module is built for.
        assert_ne!(Machine::host().e_machine, EM_X86_64, "libm.so.6 missing on x86_64");
        return;
    };
    let info = elf::inspect(&subject, &libm, DEFAULT_MAX_FILE_SIZE).unwrap();
    assert_eq!(info.soname.as_deref(), Some(OsStr::new("libm.so.6")));
    assert!(info.needed.iter().any(|n| n == OsStr::new("libc.so.6")));
}

#[test]
fn verified_binary_reports_elf_refusals_with_plugin_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "auth", b"#!/bin/sh\nexit 0\n");
    let err = VerifiedBinary::open("auth", &path, &Policy::default()).unwrap_err();
    assert!(matches!(err, IntegrityError::Elf(ElfError::Script { .. })), "{err:?}");
    assert_eq!(err.subject().plugin, "auth");
    assert_eq!(err.subject().path, path);
}

/// The loader reads the dynamic array at its address, and the checks read it at its file
/// offset: a file where the two differ (a decoy array naming a host program as a library,
/// to have it granted read and execute) or with a second PT_DYNAMIC (the loader reads the
/// last) is refused. Both were read from the decoy, and the decoy's library taken.
#[test]
fn a_dynamic_array_the_loader_would_not_read_is_refused() {
    let file = dynamic_elf64(Path::new("/lib64/ld-linux-x86-64.so.2"), "libc.so.6", "/bin/busybox");
    let info = inspect(&file).unwrap();
    assert_eq!(info.needed, ["libc.so.6"]);
    // Program headers: PT_LOAD, PT_INTERP, PT_DYNAMIC, 56 bytes each from byte 64.
    let dynamic = 64 + 2 * 56;
    let offset = |f: &[u8]| u64::from_le_bytes(f[dynamic + 8..dynamic + 16].try_into().unwrap()) as usize;
    // The decoy: the real array, its DT_NEEDED naming the other string ("/bin/busybox", at
    // 11 in the string table) and its DT_RUNPATH made a tag the loader ignores (DT_DEBUG),
    // appended to the file, and PT_DYNAMIC's offset moved to it; its address is unchanged.
    let mut entries = file[offset(&file)..offset(&file) + 5 * 16].to_vec();
    entries[8..16].copy_from_slice(&11u64.to_le_bytes());
    entries[16..24].copy_from_slice(&21u64.to_le_bytes());
    let mut decoy = file.clone();
    let at = decoy.len() as u64;
    decoy.extend_from_slice(&entries);
    decoy[dynamic + 8..dynamic + 16].copy_from_slice(&at.to_le_bytes());
    let err = refusal(&decoy);
    assert!(err.contains("PT_DYNAMIC at file offset") && err.contains("is not where its address"), "{err}");
    // The array running past its segment's file bytes, where the kernel maps zeros (a
    // DT_NULL to the loader) and the file may hold more entries: the PT_LOAD's p_filesz
    // (at byte 64 + 32) cut to end inside the array.
    let mut past = file.clone();
    let cut = (offset(&file) + 3 * 16) as u64;
    past[64 + 32..64 + 40].copy_from_slice(&cut.to_le_bytes());
    let err = refusal(&past);
    assert!(err.contains("is not where its address"), "{err}");
    let mut two = file;
    two[64 + 56..64 + 60].copy_from_slice(&2u32.to_le_bytes());
    let err = refusal(&two);
    assert!(err.contains("2 PT_DYNAMIC program headers"), "{err}");
}

/// Memory the kernel maps both writable and executable at exec is told, for the tiers that
/// forbid such memory to refuse the binary: no mmap or mprotect call makes it.
#[test]
fn memory_writable_and_executable_from_exec_is_told() {
    let plain = tiny_elf64(Machine::host().e_machine, 2, CODE_EXIT_0, true);
    assert_eq!(inspect(&plain).unwrap().writable_and_executable, None);
    assert_eq!(inspect(host_binary()).unwrap().writable_and_executable, None);
    // The PT_LOAD's flags (at byte 64 + 4): R+W+X.
    let mut rwx = plain.clone();
    rwx[68..72].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(inspect(&rwx).unwrap().writable_and_executable, Some("a PT_LOAD segment both writable and executable"));
    // The second header made PT_GNU_STACK with R+X: an executable stack.
    let mut stack = plain;
    stack[120..124].copy_from_slice(&0x6474_e551u32.to_le_bytes());
    stack[124..128].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(inspect(&stack).unwrap().writable_and_executable, Some("an executable stack (PT_GNU_STACK with PF_X)"));
}
