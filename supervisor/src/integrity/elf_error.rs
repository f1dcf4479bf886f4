//! Why an ELF file was refused, worded for the operator who has to fix it.

use std::io;

use thiserror::Error;

use super::machine::{ElfClass, Endianness, Machine};
use super::subject::Subject;

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{subject}: cannot read {}: {source}", .subject.path.display())]
    Io {
        subject: Subject,
        #[source]
        source: io::Error,
    },

    #[error("{subject}: {} is empty (0 bytes), not an ELF executable", .subject.path.display())]
    Empty { subject: Subject },

    #[error(
        "{subject}: {} is {size} bytes, over the {limit}-byte limit for plugin binaries",
        .subject.path.display()
    )]
    TooLarge { subject: Subject, size: u64, limit: u64 },

    #[error(
        "{subject}: {} is a script starting with {shebang:?}, not an ELF executable",
        .subject.path.display()
    )]
    Script { subject: Subject, shebang: String },

    #[error(
        "{subject}: {} is not an ELF file (it starts with bytes {magic})",
        .subject.path.display()
    )]
    NotElf { subject: Subject, magic: String },

    #[error(
        "{subject}: {} is a truncated ELF file: its {what} ends at byte {needed} but the file has {size} bytes",
        .subject.path.display()
    )]
    Truncated { subject: Subject, what: &'static str, needed: u64, size: u64 },

    #[error("{subject}: {} is a corrupted ELF file: {reason}", .subject.path.display())]
    Corrupted { subject: Subject, reason: String },

    #[error(
        "{subject}: {} is a {found} ELF file ({}) built for {machine}, this host runs {} {host} binaries",
        .subject.path.display(), .found.constant(), .host.class
    )]
    ClassMismatch { subject: Subject, found: ElfClass, machine: String, host: Machine },

    #[error("{subject}: built for {found}, this host is {host}")]
    MachineMismatch { subject: Subject, found: String, host: String },

    #[error("{subject}: {} is {found}, this host is {host}", .subject.path.display())]
    EndianMismatch { subject: Subject, found: Endianness, host: Endianness },

    #[error("{subject}: {} is a {kind}, not an executable", .subject.path.display())]
    NotExecutable { subject: Subject, kind: String },

    #[error(
        "{subject}: {} needs {count} shared libraries but names no program interpreter (PT_INTERP) to load them",
        .subject.path.display()
    )]
    MissingInterpreter { subject: Subject, count: usize },
}

impl ElfError {
    pub fn subject(&self) -> &Subject {
        match self {
            Self::Io { subject, .. }
            | Self::Empty { subject }
            | Self::TooLarge { subject, .. }
            | Self::Script { subject, .. }
            | Self::NotElf { subject, .. }
            | Self::Truncated { subject, .. }
            | Self::Corrupted { subject, .. }
            | Self::ClassMismatch { subject, .. }
            | Self::MachineMismatch { subject, .. }
            | Self::EndianMismatch { subject, .. }
            | Self::NotExecutable { subject, .. }
            | Self::MissingInterpreter { subject, .. } => subject,
        }
    }
}
