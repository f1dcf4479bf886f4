//! CPU architecture of an ELF file and of this host, named the way `uname -m` names them.

use std::fmt;

use goblin::elf::header::{
    EM_68K, EM_386, EM_AARCH64, EM_ARM, EM_IA_64, EM_LOONGARCH, EM_MIPS, EM_PARISC, EM_PPC, EM_PPC64, EM_RISCV,
    EM_S390, EM_SH, EM_SPARC, EM_SPARCV9, EM_X86_64,
};

/// Alpha never got an official number; Linux and binutils use this one.
const EM_ALPHA: u16 = 0x9026;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    pub fn bits(self) -> u32 {
        match self {
            Self::Elf32 => 32,
            Self::Elf64 => 64,
        }
    }

    /// The constant's name in `<elf.h>`, which is what `readelf -h` prints.
    pub fn constant(self) -> &'static str {
        match self {
            Self::Elf32 => "ELFCLASS32",
            Self::Elf64 => "ELFCLASS64",
        }
    }
}

impl fmt::Display for ElfClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endianness {
    Little,
    Big,
}

impl fmt::Display for Endianness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Little => "little-endian",
            Self::Big => "big-endian",
        })
    }
}

/// What an ELF file was built for: `e_machine` plus the class and byte order, because
/// `uname` tells ppc64 from ppc64le and riscv32 from riscv64 by those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub e_machine: u16,
    pub class: ElfClass,
    pub endian: Endianness,
}

#[cfg(target_arch = "x86_64")]
const HOST_E_MACHINE: u16 = EM_X86_64;
#[cfg(target_arch = "x86")]
const HOST_E_MACHINE: u16 = EM_386;
#[cfg(target_arch = "aarch64")]
const HOST_E_MACHINE: u16 = EM_AARCH64;
#[cfg(target_arch = "arm")]
const HOST_E_MACHINE: u16 = EM_ARM;
#[cfg(any(target_arch = "riscv64", target_arch = "riscv32"))]
const HOST_E_MACHINE: u16 = EM_RISCV;
#[cfg(target_arch = "powerpc64")]
const HOST_E_MACHINE: u16 = EM_PPC64;
#[cfg(target_arch = "powerpc")]
const HOST_E_MACHINE: u16 = EM_PPC;
#[cfg(target_arch = "s390x")]
const HOST_E_MACHINE: u16 = EM_S390;
#[cfg(target_arch = "loongarch64")]
const HOST_E_MACHINE: u16 = EM_LOONGARCH;
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const HOST_E_MACHINE: u16 = EM_MIPS;
#[cfg(target_arch = "sparc64")]
const HOST_E_MACHINE: u16 = EM_SPARCV9;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "powerpc64",
    target_arch = "powerpc",
    target_arch = "s390x",
    target_arch = "loongarch64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc64",
)))]
compile_error!("integrity::machine does not know this architecture's ELF e_machine");

#[cfg(target_pointer_width = "64")]
const HOST_CLASS: ElfClass = ElfClass::Elf64;
#[cfg(not(target_pointer_width = "64"))]
const HOST_CLASS: ElfClass = ElfClass::Elf32;

#[cfg(target_endian = "little")]
const HOST_ENDIAN: Endianness = Endianness::Little;
#[cfg(target_endian = "big")]
const HOST_ENDIAN: Endianness = Endianness::Big;

impl Machine {
    /// The machine this supervisor was compiled for, which is the one its seccomp filters
    /// and syscall numbers are written for.
    pub const fn host() -> Self {
        Self { e_machine: HOST_E_MACHINE, class: HOST_CLASS, endian: HOST_ENDIAN }
    }

    pub fn name(&self) -> String {
        use ElfClass::{Elf32, Elf64};
        use Endianness::{Big, Little};
        let known = match (self.e_machine, self.class, self.endian) {
            (EM_X86_64, _, _) => "x86_64",
            (EM_386, _, _) => "i386",
            (EM_AARCH64, _, Little) => "aarch64",
            (EM_AARCH64, _, Big) => "aarch64_be",
            (EM_ARM, _, Little) => "arm",
            (EM_ARM, _, Big) => "armeb",
            (EM_RISCV, Elf64, _) => "riscv64",
            (EM_RISCV, Elf32, _) => "riscv32",
            (EM_PPC64, _, Little) => "ppc64le",
            (EM_PPC64, _, Big) => "ppc64",
            (EM_PPC, _, Little) => "ppcle",
            (EM_PPC, _, Big) => "ppc",
            (EM_S390, Elf64, _) => "s390x",
            (EM_S390, Elf32, _) => "s390",
            (EM_LOONGARCH, Elf64, _) => "loongarch64",
            (EM_LOONGARCH, Elf32, _) => "loongarch32",
            (EM_MIPS, Elf64, Little) => "mips64el",
            (EM_MIPS, Elf64, Big) => "mips64",
            (EM_MIPS, Elf32, Little) => "mipsel",
            (EM_MIPS, Elf32, Big) => "mips",
            (EM_SPARCV9, _, _) => "sparc64",
            (EM_SPARC, _, _) => "sparc",
            (EM_IA_64, _, _) => "ia64",
            (EM_ALPHA, _, _) => "alpha",
            (EM_68K, _, _) => "m68k",
            (EM_SH, _, _) => "sh",
            (EM_PARISC, Elf64, _) => "parisc64",
            (EM_PARISC, Elf32, _) => "parisc",
            (other, _, _) => return format!("machine {other:#04x}"),
        };
        known.to_owned()
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
