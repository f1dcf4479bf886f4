//! Whether an inspected ELF file can run as a plugin on this host.
//!
//! The supervisor's seccomp filters, syscall numbers and Landlock rules are written for the
//! host's own ABI, so a binary for another class, byte order or machine is refused even where
//! the kernel could run it (an i386 binary on x86_64, say).

use std::fs::File;

use super::elf::{self, ElfHeader, ElfInfo, ObjectType};
use super::elf_error::ElfError;
use super::machine::Machine;
use super::source::ReadAt;
use super::subject::Subject;

/// Inspects an open plugin binary and refuses it unless this host can run it as a plugin.
pub fn inspect_executable(subject: &Subject, file: &File, max_file_size: u64) -> Result<ElfInfo, ElfError> {
    inspect_executable_from(subject, file, max_file_size)
}

/// [`inspect_executable`] over any positioned source (an in-memory image for fuzzing).
pub fn inspect_executable_from<S: ReadAt + ?Sized>(
    subject: &Subject,
    source: &S,
    max_file_size: u64,
) -> Result<ElfInfo, ElfError> {
    let header = elf::read_header(subject, source, max_file_size)?;
    check_machine(subject, &header, Machine::host())?;
    check_object_type(subject, &header)?;
    let info = header.read_details(subject, source)?;
    check_loadable(subject, &info)?;
    Ok(info)
}

/// Class first: a 32-bit file's header fields sit at other offsets, and "32-bit" is the
/// clearer diagnosis for a build made with the wrong target.
pub fn check_machine(subject: &Subject, header: &ElfHeader, host: Machine) -> Result<(), ElfError> {
    let found = header.machine;
    if found.class != host.class {
        return Err(ElfError::ClassMismatch {
            subject: subject.clone(),
            found: found.class,
            machine: found.name(),
            host,
        });
    }
    if found.name() != host.name() {
        return Err(ElfError::MachineMismatch { subject: subject.clone(), found: found.name(), host: host.name() });
    }
    if found.endian != host.endian {
        return Err(ElfError::EndianMismatch { subject: subject.clone(), found: found.endian, host: host.endian });
    }
    Ok(())
}

fn check_object_type(subject: &Subject, header: &ElfHeader) -> Result<(), ElfError> {
    match header.object_type {
        ObjectType::Executable => Ok(()),
        // A PIE and a shared library are both ET_DYN; a library has no entry point to run.
        ObjectType::Dynamic if header.entry != 0 => Ok(()),
        ObjectType::Dynamic => Err(ElfError::NotExecutable {
            subject: subject.clone(),
            kind: "shared library (ET_DYN without an entry point)".to_owned(),
        }),
        other => Err(ElfError::NotExecutable { subject: subject.clone(), kind: other.to_string() }),
    }
}

/// Without PT_INTERP the kernel jumps straight to the entry point and nothing maps the
/// DT_NEEDED libraries, so the plugin would crash on its first library call.
fn check_loadable(subject: &Subject, info: &ElfInfo) -> Result<(), ElfError> {
    if info.interpreter.is_none() && !info.needed.is_empty() {
        return Err(ElfError::MissingInterpreter { subject: subject.clone(), count: info.needed.len() });
    }
    Ok(())
}
