//! Why the loader files of a plugin could not be determined.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::elf_error::ElfError;
use super::owners::{Use, Writer};
use super::subject::Subject;

#[derive(Debug, Error)]
pub enum LibraryError {
    #[error(
        "{subject}: {} names a relative program interpreter {}, which would depend on the working directory",
        .subject.path.display(), .interpreter.display()
    )]
    RelativeInterpreter { subject: Subject, interpreter: PathBuf },

    #[error(
        "{subject}: {} needs the program interpreter {}, which cannot be opened: {source}",
        .subject.path.display(), .interpreter.display()
    )]
    InterpreterMissing {
        subject: Subject,
        interpreter: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{subject}: library {} needed by {} was not found (searched {})",
        .name.to_string_lossy(), .required_by.display(), display_dirs(.searched)
    )]
    NotFound { subject: Subject, name: OsString, required_by: PathBuf, searched: Vec<PathBuf> },

    #[error(
        "{subject}: library {} needed by {} is a relative path, which would depend on the working directory",
        .name.to_string_lossy(), .required_by.display()
    )]
    RelativeName { subject: Subject, name: OsString, required_by: PathBuf },

    #[error("{source} (loading {} for {})", .name.to_string_lossy(), .required_by.display())]
    Unusable {
        name: OsString,
        required_by: PathBuf,
        #[source]
        source: Box<ElfError>,
    },

    #[error(
        "{subject}: library {} needed by {} uses $PLATFORM, which the loader cannot expand on this host",
        .name.to_string_lossy(), .required_by.display()
    )]
    Unexpandable { subject: Subject, name: OsString, required_by: PathBuf },

    #[error("{subject}: cannot resolve {}: {source}", .path.display())]
    Io {
        subject: Subject,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{subject}: {} has {entry:?} in its {tag}, but the plugin runs from a sealed copy of the binary, \
         where the loader expands $ORIGIN to \"{}\", not to the binary's directory, and the libraries it \
         finds then are not those it finds beside the binary; use an absolute path instead",
        .subject.path.display(), super::libraries::SEALED_IMAGE_ORIGIN
    )]
    OriginOfSealedImage { subject: Subject, tag: &'static str, entry: String },

    #[error("{subject}: {} pulls in more than {limit} shared objects", .subject.path.display())]
    TooMany { subject: Subject, limit: usize },

    #[error(
        "{subject}: {} can be changed by {}, not only by root or the supervisor: {}; a plugin running as \
         that id could change what this plugin loads, past its pin and signature. {}",
        .what.exposed.display(), .what.writer, how_used(.what), advice(.what.used)
    )]
    Writable { subject: Subject, what: Box<Exposure> },
}

/// What an id other than root's could change, and how the loader uses it.
#[derive(Debug)]
pub struct Exposure {
    /// The file or directory an untrusted id could change.
    pub exposed: PathBuf,
    pub writer: Writer,
    pub used: Use,
    /// The file the loader opens, or the directory it searches first.
    pub path: PathBuf,
    pub name: OsString,
    pub required_by: PathBuf,
}

fn advice(used: Use) -> &'static str {
    match used {
        Use::Opened => "Make it, and each directory above it, root's and writable by no other group nor others",
        Use::SearchedFirst => {
            "Make it root's and writable by no other group nor others, or take that directory out of the \
             RUNPATH or RPATH searched"
        }
    }
}

fn how_used(what: &Exposure) -> String {
    let (path, name, required_by) = (what.path.display(), what.name.to_string_lossy(), what.required_by.display());
    match what.used {
        Use::Opened => format!("the loader opens {path} through it ({name}, needed by {required_by})"),
        Use::SearchedFirst => {
            format!("the loader looks in {path} for {name} (needed by {required_by}) before where it finds it")
        }
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directories".to_owned();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}
