//! Reading an ELF file's identity and loader requests: class, byte order, machine, type,
//! entry point, PT_INTERP, and the DT_NEEDED / DT_RPATH / DT_RUNPATH / DT_SONAME entries.
//!
//! Only the ELF header, the program header table, PT_INTERP, PT_DYNAMIC and the strings
//! those entries point at are read, each with a bound, so a hostile or huge file costs a few
//! small reads. Section headers are never consulted: the kernel and ld.so ignore them, and a
//! stripped or doctored section table must not change the verdict.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::header::{
    EI_CLASS, EI_DATA, EI_VERSION, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ELFMAG, ET_CORE, ET_DYN, ET_EXEC,
    ET_REL, Header, SIZEOF_IDENT,
};
use goblin::elf::program_header::{PF_W, PF_X, PT_DYNAMIC, PT_GNU_STACK, PT_INTERP, PT_LOAD, ProgramHeader};

use super::elf_error::ElfError;
use super::machine::{ElfClass, Endianness, Machine};
use super::source::{ReadAt, read_vec};
use super::subject::Subject;

/// Default refusal size for a plugin binary; far above any real plugin, far below memory.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 512 * 1024 * 1024;

const EHDR_LEN_32: usize = 52;
const EHDR_LEN_64: usize = 64;
const PHDR_LEN_32: u16 = 32;
const PHDR_LEN_64: u16 = 56;
/// The kernel refuses program header tables above 64 KiB (`elf_read_phdrs`).
const MAX_PHDR_TABLE: usize = 65_536;
/// The kernel refuses a PT_INTERP longer than PATH_MAX; no DT_NEEDED name is longer either.
pub(super) const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `ET_EXEC`: a position-dependent executable.
    Executable,
    /// `ET_DYN`: a PIE executable or a shared library; only the entry point tells them apart.
    Dynamic,
    /// `ET_REL`: an object file that still needs linking.
    Relocatable,
    /// `ET_CORE`: a core dump.
    Core,
    Other(u16),
}

impl ObjectType {
    fn from_e_type(e_type: u16) -> Self {
        match e_type {
            ET_EXEC => Self::Executable,
            ET_DYN => Self::Dynamic,
            ET_REL => Self::Relocatable,
            ET_CORE => Self::Core,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Executable => f.write_str("executable (ET_EXEC)"),
            Self::Dynamic => f.write_str("position-independent object (ET_DYN)"),
            Self::Relocatable => f.write_str("relocatable object file (ET_REL)"),
            Self::Core => f.write_str("core dump (ET_CORE)"),
            Self::Other(t) => write!(f, "ELF object of unknown type {t:#06x}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No PT_INTERP and no PT_DYNAMIC: the kernel maps it and jumps in.
    Static,
    /// No PT_INTERP but a PT_DYNAMIC: relocates itself at start (`-static-pie`).
    StaticPie,
    /// Has a PT_INTERP: the dynamic loader maps it and its libraries.
    Dynamic,
}

/// The fixed-size part of an ELF file, read before anything else so that a file for another
/// machine is refused before its (differently laid out) tables are parsed.
#[derive(Debug, Clone)]
pub struct ElfHeader {
    pub file_size: u64,
    pub machine: Machine,
    pub object_type: ObjectType,
    pub entry: u64,
    header: Header,
    pub(super) ctx: Ctx,
}

/// What the kernel and the dynamic loader will make of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub file_size: u64,
    pub machine: Machine,
    pub object_type: ObjectType,
    pub entry: u64,
    /// PT_INTERP, the program interpreter the kernel loads first.
    pub interpreter: Option<PathBuf>,
    pub has_dynamic: bool,
    /// DT_NEEDED names, in file order (the loader's breadth-first order starts here).
    pub needed: Vec<OsString>,
    /// DT_RPATH as written (colon-separated, may use `$ORIGIN`).
    pub rpath: Option<OsString>,
    /// DT_RUNPATH as written; when present ld.so ignores DT_RPATH.
    pub runpath: Option<OsString>,
    pub soname: Option<OsString>,
    /// DF_1_NODEFLIB: the default directories are not searched for this object's needs.
    pub nodeflib: bool,
    /// What of the file the kernel maps both writable and executable at exec, if anything:
    /// a PT_LOAD segment with both flags, or an executable stack (PT_GNU_STACK with PF_X,
    /// as an assembly object without `.note.GNU-stack` leaves it). No mmap or mprotect call
    /// makes that memory, so a filter's W^X rules never see it.
    pub writable_and_executable: Option<&'static str>,
}

impl ElfInfo {
    pub fn linkage(&self) -> Linkage {
        match (&self.interpreter, self.has_dynamic) {
            (Some(_), _) => Linkage::Dynamic,
            (None, true) => Linkage::StaticPie,
            (None, false) => Linkage::Static,
        }
    }

    pub fn is_static(&self) -> bool {
        self.interpreter.is_none()
    }
}

/// Fuzz entry: the plugin checks and the plain inspection over arbitrary bytes; either may
/// refuse, neither may panic.
pub fn fuzz_one(data: &[u8]) {
    let subject = Subject::new("fuzz", "/fuzz/input");
    let _ = super::elf_check::inspect_executable_from(&subject, data, DEFAULT_MAX_FILE_SIZE);
    let _ = inspect(&subject, data, DEFAULT_MAX_FILE_SIZE);
}

/// Reads and parses everything [`ElfInfo`] holds, without judging whether it runs here.
pub fn inspect<S: ReadAt + ?Sized>(subject: &Subject, source: &S, max_file_size: u64) -> Result<ElfInfo, ElfError> {
    read_header(subject, source, max_file_size)?.read_details(subject, source)
}

/// Reads the ELF identification and header.
pub fn read_header<S: ReadAt + ?Sized>(
    subject: &Subject,
    source: &S,
    max_file_size: u64,
) -> Result<ElfHeader, ElfError> {
    let file_size = source.size().map_err(|e| io_error(subject, e))?;
    if file_size == 0 {
        return Err(ElfError::Empty { subject: subject.clone() });
    }
    if file_size > max_file_size {
        return Err(ElfError::TooLarge { subject: subject.clone(), size: file_size, limit: max_file_size });
    }
    let head_len = usize::try_from(file_size.min(EHDR_LEN_64 as u64)).unwrap_or(EHDR_LEN_64);
    let head = read_vec(source, 0, head_len).map_err(|e| read_error(subject, e, file_size))?;

    // Scripts are refused: the digest would not cover their interpreter, and execveat on a
    // close-on-exec descriptor of a script fails (the interpreter reopens /dev/fd/N).
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(ElfError::Script {
            subject: subject.clone(),
            shebang: format!("#!{}", String::from_utf8_lossy(line).trim_end()),
        });
    }
    if !head.starts_with(ELFMAG) {
        if ELFMAG.starts_with(&head) {
            return Err(truncated(subject, "ELF identification", SIZEOF_IDENT, file_size));
        }
        return Err(ElfError::NotElf {
            subject: subject.clone(),
            magic: describe_bytes(head.get(..4).unwrap_or(&head)),
        });
    }
    let ident =
        head.get(..SIZEOF_IDENT).ok_or_else(|| truncated(subject, "ELF identification", SIZEOF_IDENT, file_size))?;
    let (class, container, ehdr_len) = match ident.get(EI_CLASS).copied() {
        Some(ELFCLASS32) => (ElfClass::Elf32, Container::Little, EHDR_LEN_32),
        Some(ELFCLASS64) => (ElfClass::Elf64, Container::Big, EHDR_LEN_64),
        other => {
            return Err(corrupted(subject, format!("invalid class byte {} (EI_CLASS)", other.unwrap_or(0))));
        }
    };
    let (endian, le) = match ident.get(EI_DATA).copied() {
        Some(ELFDATA2LSB) => (Endianness::Little, Endian::Little),
        Some(ELFDATA2MSB) => (Endianness::Big, Endian::Big),
        other => {
            return Err(corrupted(subject, format!("invalid byte-order byte {} (EI_DATA)", other.unwrap_or(0))));
        }
    };
    match ident.get(EI_VERSION).copied() {
        Some(1) => {}
        other => {
            return Err(corrupted(subject, format!("unsupported ELF version {} (EI_VERSION)", other.unwrap_or(0))));
        }
    }
    let ehdr = head.get(..ehdr_len).ok_or_else(|| truncated(subject, "ELF header", ehdr_len, file_size))?;
    let header = Elf::parse_header(ehdr).map_err(|e| corrupted(subject, e.to_string()))?;

    Ok(ElfHeader {
        file_size,
        machine: Machine { e_machine: header.e_machine, class, endian },
        object_type: ObjectType::from_e_type(header.e_type),
        entry: header.e_entry,
        header,
        ctx: Ctx::new(container, le),
    })
}

impl ElfHeader {
    /// Reads the program headers and, through them, PT_INTERP and the dynamic section.
    pub fn read_details<S: ReadAt + ?Sized>(&self, subject: &Subject, source: &S) -> Result<ElfInfo, ElfError> {
        let phdrs = self.read_program_headers(subject, source)?;
        let interpreter = match phdrs.iter().find(|ph| ph.p_type == PT_INTERP) {
            Some(ph) => Some(self.read_interpreter(subject, source, ph)?),
            None => None,
        };
        // The loader reads the last PT_DYNAMIC; the kernel none. A second one could show
        // these checks a decoy array (other libraries, other paths) while the loader read
        // the real one.
        let dynamics: Vec<&ProgramHeader> = phdrs.iter().filter(|ph| ph.p_type == PT_DYNAMIC).collect();
        if dynamics.len() > 1 {
            return Err(corrupted(
                subject,
                format!("{} PT_DYNAMIC program headers (the loader reads the last; a file has one)", dynamics.len()),
            ));
        }
        let dynamic = match dynamics.first() {
            Some(ph) => Some(self.read_dynamic(subject, source, ph, &phdrs)?),
            None => None,
        };
        let writable_and_executable = phdrs.iter().find_map(|ph| {
            let (writable, executable) = (ph.p_flags & PF_W != 0, ph.p_flags & PF_X != 0);
            match ph.p_type {
                PT_LOAD if writable && executable => Some("a PT_LOAD segment both writable and executable"),
                PT_GNU_STACK if executable => Some("an executable stack (PT_GNU_STACK with PF_X)"),
                _ => None,
            }
        });
        let has_dynamic = dynamic.is_some();
        let dynamic = dynamic.unwrap_or_default();
        Ok(ElfInfo {
            file_size: self.file_size,
            machine: self.machine,
            object_type: self.object_type,
            entry: self.entry,
            interpreter,
            has_dynamic,
            needed: dynamic.needed,
            rpath: dynamic.rpath,
            runpath: dynamic.runpath,
            soname: dynamic.soname,
            nodeflib: dynamic.nodeflib,
            writable_and_executable,
        })
    }

    fn read_program_headers<S: ReadAt + ?Sized>(
        &self,
        subject: &Subject,
        source: &S,
    ) -> Result<Vec<ProgramHeader>, ElfError> {
        let expected = match self.machine.class {
            ElfClass::Elf32 => PHDR_LEN_32,
            ElfClass::Elf64 => PHDR_LEN_64,
        };
        let h = &self.header;
        if h.e_phnum == 0 {
            return Err(corrupted(subject, "no program headers".to_owned()));
        }
        if h.e_phentsize != expected {
            return Err(corrupted(
                subject,
                format!(
                    "program header entry size {} (expected {expected} for a {} file)",
                    h.e_phentsize, self.machine.class
                ),
            ));
        }
        let count = usize::from(h.e_phnum);
        let table_len = count * usize::from(expected);
        if table_len > MAX_PHDR_TABLE {
            return Err(corrupted(subject, format!("{count} program headers exceed the kernel's 64 KiB table limit")));
        }
        let bytes = self.read_region(subject, source, "program header table", h.e_phoff, table_len)?;
        ProgramHeader::parse(&bytes, 0, count, self.ctx).map_err(|e| corrupted(subject, e.to_string()))
    }

    fn read_interpreter<S: ReadAt + ?Sized>(
        &self,
        subject: &Subject,
        source: &S,
        ph: &ProgramHeader,
    ) -> Result<PathBuf, ElfError> {
        let len = usize::try_from(ph.p_filesz)
            .ok()
            .filter(|len| (2..=PATH_MAX).contains(len))
            .ok_or_else(|| corrupted(subject, format!("PT_INTERP size {} is out of range", ph.p_filesz)))?;
        let bytes = self.read_region(subject, source, "interpreter path (PT_INTERP)", ph.p_offset, len)?;
        // The kernel insists on the terminator; a path without one is not what it would run.
        let Some((0, path)) = bytes.split_last() else {
            return Err(corrupted(subject, "PT_INTERP path is not NUL-terminated".to_owned()));
        };
        let path = path.split(|&b| b == 0).next().unwrap_or_default();
        if path.is_empty() {
            return Err(corrupted(subject, "PT_INTERP path is empty".to_owned()));
        }
        Ok(PathBuf::from(OsString::from_vec(path.to_vec())))
    }

    pub(super) fn read_region<S: ReadAt + ?Sized>(
        &self,
        subject: &Subject,
        source: &S,
        what: &'static str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, ElfError> {
        let end = offset.saturating_add(len as u64);
        if end > self.file_size {
            return Err(ElfError::Truncated { subject: subject.clone(), what, needed: end, size: self.file_size });
        }
        read_vec(source, offset, len).map_err(|e| read_error(subject, e, self.file_size))
    }
}

fn describe_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn io_error(subject: &Subject, source: io::Error) -> ElfError {
    ElfError::Io { subject: subject.clone(), source }
}

/// A short read on a region already checked against the size means the file shrank under
/// us; call that what it is rather than an I/O failure.
fn read_error(subject: &Subject, source: io::Error, size: u64) -> ElfError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        corrupted(subject, format!("file changed size while being read (was {size} bytes)"))
    } else {
        io_error(subject, source)
    }
}

fn truncated(subject: &Subject, what: &'static str, needed: usize, size: u64) -> ElfError {
    ElfError::Truncated { subject: subject.clone(), what, needed: needed as u64, size }
}

pub(super) fn corrupted(subject: &Subject, reason: String) -> ElfError {
    ElfError::Corrupted { subject: subject.clone(), reason }
}
