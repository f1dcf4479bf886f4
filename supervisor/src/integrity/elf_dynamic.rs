//! The dynamic section of an ELF file: DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME and
//! DF_1_NODEFLIB, with the strings they name read one at a time from DT_STRTAB.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use goblin::elf::dynamic::{
    DF_1_NODEFLIB, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB, Dynamic,
};
use goblin::elf::program_header::{PT_DYNAMIC, PT_LOAD, ProgramHeader};

use super::elf::{ElfHeader, PATH_MAX, corrupted};
use super::elf_error::ElfError;
use super::source::ReadAt;
use super::subject::Subject;

/// A dynamic array is a few hundred bytes in practice; a megabyte is a doctored file.
const MAX_DYNAMIC: usize = 1 << 20;
/// Bounds the reads a doctored file can force (one bounded string read per entry).
const MAX_NEEDED: usize = 4096;

#[derive(Default)]
pub(super) struct DynamicEntries {
    pub(super) needed: Vec<OsString>,
    pub(super) rpath: Option<OsString>,
    pub(super) runpath: Option<OsString>,
    pub(super) soname: Option<OsString>,
    pub(super) nodeflib: bool,
}

impl ElfHeader {
    pub(super) fn read_dynamic<S: ReadAt + ?Sized>(
        &self,
        subject: &Subject,
        source: &S,
        ph: &ProgramHeader,
        phdrs: &[ProgramHeader],
    ) -> Result<DynamicEntries, ElfError> {
        let len = usize::try_from(ph.p_filesz)
            .ok()
            .filter(|len| *len <= MAX_DYNAMIC)
            .ok_or_else(|| corrupted(subject, format!("PT_DYNAMIC size {} is implausibly large", ph.p_filesz)))?;
        // The loader reads the dynamic array where it is loaded (its address, p_vaddr), and
        // this reads it at its file offset (p_offset): the two must be the same bytes, or a
        // decoy at the offset (naming any host file as a library, so that it is granted
        // read and execute) would be checked while the loader read the real one.
        // All of it: past a segment's file bytes the kernel maps zeros (a DT_NULL to the
        // loader) where the file may hold more entries, and a later segment mapped over
        // it replaces what the file holds there.
        if ph.p_filesz > 0 && !loaded_whole(phdrs, ph) {
            return Err(corrupted(
                subject,
                format!(
                    "PT_DYNAMIC at file offset {:#x} ({} bytes) is not where its address {:#x} is loaded from",
                    ph.p_offset, ph.p_filesz, ph.p_vaddr
                ),
            ));
        }
        let bytes = self.read_region(subject, source, "dynamic section (PT_DYNAMIC)", ph.p_offset, len)?;
        // goblin finds PT_DYNAMIC through the program headers it is given; this one describes
        // exactly the buffer just read, so the rest of the file never has to be in memory.
        let mut local = ProgramHeader::new();
        local.p_type = PT_DYNAMIC;
        local.p_filesz = ph.p_filesz;
        let dyns = Dynamic::parse(&bytes, &[local], self.ctx)
            .map_err(|e| corrupted(subject, e.to_string()))?
            .map(|d| d.dyns)
            .unwrap_or_default();

        // Like glibc's get-dynamic-info, the last of a single-valued tag wins.
        let mut refs = StringRefs::default();
        for d in &dyns {
            match d.d_tag {
                DT_NEEDED => refs.needed.push(d.d_val),
                DT_RPATH => refs.rpath = Some(d.d_val),
                DT_RUNPATH => refs.runpath = Some(d.d_val),
                DT_SONAME => refs.soname = Some(d.d_val),
                DT_STRTAB => refs.strtab = Some(d.d_val),
                DT_STRSZ => refs.strsz = d.d_val,
                DT_FLAGS_1 => refs.flags_1 = d.d_val,
                _ => {}
            }
        }
        if refs.needed.len() > MAX_NEEDED {
            return Err(corrupted(
                subject,
                format!("{} DT_NEEDED entries (more than {MAX_NEEDED})", refs.needed.len()),
            ));
        }
        let mut entries = DynamicEntries { nodeflib: refs.flags_1 & DF_1_NODEFLIB != 0, ..DynamicEntries::default() };
        if refs.needed.is_empty() && refs.rpath.is_none() && refs.runpath.is_none() && refs.soname.is_none() {
            return Ok(entries);
        }
        let table = self.string_table(subject, phdrs, &refs)?;
        for offset in &refs.needed {
            entries.needed.push(table.get(self, subject, source, *offset)?);
        }
        entries.rpath = table.get_opt(self, subject, source, refs.rpath)?;
        entries.runpath = table.get_opt(self, subject, source, refs.runpath)?;
        entries.soname = table.get_opt(self, subject, source, refs.soname)?;
        Ok(entries)
    }

    fn string_table(
        &self,
        subject: &Subject,
        phdrs: &[ProgramHeader],
        refs: &StringRefs,
    ) -> Result<StringTable, ElfError> {
        let address = refs
            .strtab
            .ok_or_else(|| corrupted(subject, "dynamic section names strings but has no DT_STRTAB".to_owned()))?;
        let offset = file_offset(phdrs, address).ok_or_else(|| {
            corrupted(subject, format!("DT_STRTAB address {address:#x} is not inside any loaded segment"))
        })?;
        let end = offset.saturating_add(refs.strsz);
        if end > self.file_size {
            return Err(ElfError::Truncated {
                subject: subject.clone(),
                what: "dynamic string table",
                needed: end,
                size: self.file_size,
            });
        }
        Ok(StringTable { offset, size: refs.strsz })
    }
}

#[derive(Default)]
struct StringRefs {
    needed: Vec<u64>,
    rpath: Option<u64>,
    runpath: Option<u64>,
    soname: Option<u64>,
    strtab: Option<u64>,
    strsz: u64,
    flags_1: u64,
}

/// DT_STRTAB located in the file; strings are read one at a time, because the table of a
/// large C++ library runs to megabytes while the loader needs a handful of names.
struct StringTable {
    offset: u64,
    size: u64,
}

impl StringTable {
    fn get<S: ReadAt + ?Sized>(
        &self,
        header: &ElfHeader,
        subject: &Subject,
        source: &S,
        index: u64,
    ) -> Result<OsString, ElfError> {
        if index >= self.size {
            return Err(corrupted(
                subject,
                format!("string offset {index} is outside the {}-byte dynamic string table", self.size),
            ));
        }
        let available = self.size - index;
        let len = usize::try_from(available.min(PATH_MAX as u64 + 1)).unwrap_or(PATH_MAX + 1);
        let bytes =
            header.read_region(subject, source, "dynamic string table", self.offset.saturating_add(index), len)?;
        let Some(nul) = bytes.iter().position(|&b| b == 0) else {
            return Err(corrupted(
                subject,
                format!("dynamic string at offset {index} has no terminator within {PATH_MAX} bytes"),
            ));
        };
        let text = bytes.get(..nul).unwrap_or_default();
        Ok(OsString::from_vec(text.to_vec()))
    }

    fn get_opt<S: ReadAt + ?Sized>(
        &self,
        header: &ElfHeader,
        subject: &Subject,
        source: &S,
        index: Option<u64>,
    ) -> Result<Option<OsString>, ElfError> {
        index.map(|i| self.get(header, subject, source, i)).transpose()
    }
}

/// Whether the loader reads `dynamic`'s bytes where this reads them: the whole array lies
/// within the file bytes of one PT_LOAD, at the file offset its address maps to, and no
/// other PT_LOAD is mapped over any of it.
fn loaded_whole(phdrs: &[ProgramHeader], dynamic: &ProgramHeader) -> bool {
    let (start, Some(end)) = (dynamic.p_vaddr, dynamic.p_vaddr.checked_add(dynamic.p_filesz)) else { return false };
    let loads: Vec<&ProgramHeader> = phdrs.iter().filter(|ph| ph.p_type == PT_LOAD).collect();
    let within = |ph: &&ProgramHeader| {
        ph.p_vaddr <= start
            && ph.p_vaddr.checked_add(ph.p_filesz).is_some_and(|file_end| end <= file_end)
            && ph.p_offset.checked_add(start - ph.p_vaddr) == Some(dynamic.p_offset)
    };
    let Some(home) = loads.iter().position(within) else { return false };
    let overlaps = |ph: &&ProgramHeader| {
        let mem_end = ph.p_vaddr.saturating_add(ph.p_memsz);
        ph.p_vaddr < end && start < mem_end
    };
    loads.iter().enumerate().all(|(i, ph)| i == home || !overlaps(ph))
}

/// Maps a virtual address to its file offset through the PT_LOAD segments, as ld.so sees
/// the string table only through the mapped image. Only file-backed bytes count.
fn file_offset(phdrs: &[ProgramHeader], address: u64) -> Option<u64> {
    phdrs.iter().filter(|ph| ph.p_type == PT_LOAD).find_map(|ph| {
        let delta = address.checked_sub(ph.p_vaddr)?;
        if delta < ph.p_filesz { ph.p_offset.checked_add(delta) } else { None }
    })
}
