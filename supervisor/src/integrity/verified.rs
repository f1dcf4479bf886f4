//! Open once, hash, inspect, check the signature, and keep the descriptor for `execveat`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::digest::Sha256Digest;
use super::elf::{DEFAULT_MAX_FILE_SIZE, ElfInfo};
use super::elf_check::inspect_executable;
use super::elf_error::ElfError;
use super::keys::PublicKey;
use super::libraries::{self, LibraryError, LoaderFiles, SearchConfig};
use super::signature::{VerifiedSignature, verify_beside};
use super::signature_error::SignatureError;
use super::subject::Subject;

/// What a plugin binary must satisfy before it may run.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// The config's `sha256 = "…"` pin; parsed when the config is, so a malformed pin is a
    /// config error and not a spawn failure.
    pub expected_sha256: Option<Sha256Digest>,
    /// When false the signature file is not read at all, so a stale one cannot refuse a
    /// plugin whose config does not ask for signatures.
    pub require_signature: bool,
    pub trusted_keys: &'a [PublicKey],
    /// Checked against the signed version when set.
    pub expected_version: Option<&'a str>,
    /// The name the signature must carry, when not the plugin's own: its binary's
    /// declared name, for a binary configured under several names.
    pub signed_name: Option<&'a str>,
    pub max_file_size: u64,
}

impl Default for Policy<'_> {
    fn default() -> Self {
        Self {
            expected_sha256: None,
            require_signature: false,
            trusted_keys: &[],
            expected_version: None,
            signed_name: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

#[derive(Debug, Error)]
pub enum IntegrityError {
    #[error("{subject}: cannot open binary {}: {source}", .subject.path.display())]
    Open {
        subject: Subject,
        #[source]
        source: io::Error,
    },

    #[error("{subject}: {} is a {kind}, not a regular file", .subject.path.display())]
    NotRegularFile { subject: Subject, kind: &'static str },

    #[error(
        "{subject}: binary {} is {size} bytes, over the {limit}-byte limit for plugin binaries",
        .subject.path.display()
    )]
    TooLarge { subject: Subject, size: u64, limit: u64 },

    #[error("{subject}: cannot read binary {}: {source}", .subject.path.display())]
    Read {
        subject: Subject,
        #[source]
        source: io::Error,
    },

    #[error(
        "{subject}: binary {} sha256 mismatch: expected {expected}, found {found}",
        .subject.path.display()
    )]
    DigestMismatch { subject: Subject, expected: Sha256Digest, found: Sha256Digest },

    #[error(transparent)]
    Elf(#[from] ElfError),

    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl IntegrityError {
    pub fn subject(&self) -> &Subject {
        match self {
            Self::Open { subject, .. }
            | Self::NotRegularFile { subject, .. }
            | Self::TooLarge { subject, .. }
            | Self::Read { subject, .. }
            | Self::DigestMismatch { subject, .. } => subject,
            Self::Elf(e) => e.subject(),
            Self::Signature(e) => e.subject(),
        }
    }
}

/// The inode a [`VerifiedBinary`] holds open. Comparing it with `stat(/proc/<pid>/exe)`
/// proves that the running process is the file that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdentity {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self { dev: meta.dev(), ino: meta.ino() }
    }
}

/// A plugin binary that passed every check, with the descriptor that was checked.
#[derive(Debug)]
pub struct VerifiedBinary {
    subject: Subject,
    file: File,
    identity: FileIdentity,
    digest: Sha256Digest,
    elf: ElfInfo,
    signature: Option<VerifiedSignature>,
}

impl VerifiedBinary {
    /// Opens `path` once (`O_RDONLY|O_CLOEXEC`), hashes that descriptor, checks the pin,
    /// inspects the ELF headers and, when required, the signature beside the binary.
    ///
    /// The pin is checked before the ELF headers, so a replaced binary is reported as a
    /// digest mismatch (the cause) rather than as whatever is wrong with the replacement.
    pub fn open(plugin: &str, path: &Path, policy: &Policy<'_>) -> Result<Self, IntegrityError> {
        let subject = Subject::new(plugin, path);
        let file = open_source(&subject)?;
        Self::check(subject, file, policy)
    }

    /// Runs every check on an already-open `file` (named `path` in messages
    /// and used to find the signature file): the digest of exactly these
    /// bytes, the pin, the ELF headers and, when required, the signature.
    pub fn check_open(plugin: &str, path: &Path, file: File, policy: &Policy<'_>) -> Result<Self, IntegrityError> {
        Self::check(Subject::new(plugin, path), file, policy)
    }

    fn check(subject: Subject, file: File, policy: &Policy<'_>) -> Result<Self, IntegrityError> {
        let meta = file.metadata().map_err(|source| IntegrityError::Read { subject: subject.clone(), source })?;
        if !meta.is_file() {
            return Err(IntegrityError::NotRegularFile { subject, kind: file_kind(&meta) });
        }
        if meta.len() > policy.max_file_size {
            return Err(IntegrityError::TooLarge { subject, size: meta.len(), limit: policy.max_file_size });
        }
        let digest = Sha256Digest::of_file_bounded(&file, policy.max_file_size).map_err(|source| {
            if source.kind() == io::ErrorKind::FileTooLarge {
                IntegrityError::TooLarge { subject: subject.clone(), size: meta.len(), limit: policy.max_file_size }
            } else {
                IntegrityError::Read { subject: subject.clone(), source }
            }
        })?;
        if let Some(expected) = policy.expected_sha256
            && expected != digest
        {
            return Err(IntegrityError::DigestMismatch { subject, expected, found: digest });
        }
        let elf = inspect_executable(&subject, &file, policy.max_file_size)?;
        let signature = if policy.require_signature {
            let signed_name = policy.signed_name.unwrap_or(&subject.plugin);
            let expected = super::signature::Expected { name: signed_name, version: policy.expected_version };
            Some(verify_beside(&subject.plugin, &subject.path, &digest, policy.trusted_keys, expected)?)
        } else {
            None
        };
        Ok(Self { identity: FileIdentity::of(&meta), subject, file, digest, elf, signature })
    }

    /// The checked descriptor; execute it with `execveat(fd, "", AT_EMPTY_PATH)`.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn into_file(self) -> File {
        self.file
    }

    pub fn plugin(&self) -> &str {
        &self.subject.plugin
    }

    pub fn path(&self) -> &Path {
        &self.subject.path
    }

    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    pub fn digest(&self) -> &Sha256Digest {
        &self.digest
    }

    pub fn elf(&self) -> &ElfInfo {
        &self.elf
    }

    pub fn signature(&self) -> Option<&VerifiedSignature> {
        self.signature.as_ref()
    }

    /// The interpreter and libraries the loader will open for this binary: the files the
    /// sandbox grants read+execute on (plus the binary itself, which the caller adds).
    ///
    /// Resolved as the loader finds them when the binary runs from its sealed image, as
    /// every plugin does (also when this check reads the file itself, as `check-config`
    /// does, so the check refuses what a start would).
    pub fn loader_files(&self, config: &SearchConfig) -> Result<LoaderFiles, LibraryError> {
        libraries::resolve_sealed(&self.subject, &self.elf, config)
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Canonical path of the checked file as it is named now (for Landlock rules).
    pub fn canonical_path(&self) -> io::Result<PathBuf> {
        std::fs::canonicalize(&self.subject.path)
    }
}

/// Opens a plugin binary for reading once.
pub(crate) fn open_source(subject: &Subject) -> Result<File, IntegrityError> {
    open_path(&subject.path).map_err(|source| match kind_of(&subject.path) {
        Some(kind) => IntegrityError::NotRegularFile { subject: subject.clone(), kind },
        None => IntegrityError::Open { subject: subject.clone(), source },
    })
}

/// Why a path that must hold a regular file was not opened as one.
#[derive(Debug)]
pub(crate) enum NotOpened {
    /// It is something else: a FIFO, a device, a directory, a socket.
    Kind(&'static str),
    Io(io::Error),
}

/// Opens `path`, which must be a regular file, for reading without waiting on it, with its
/// metadata. Anything else is named by its kind, a socket too (which cannot be opened at
/// all: ENXIO would say nothing of what it is).
pub(crate) fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), NotOpened> {
    let file = open_path(path).map_err(|e| kind_of(path).map_or(NotOpened::Io(e), NotOpened::Kind))?;
    let meta = file.metadata().map_err(NotOpened::Io)?;
    if !meta.is_file() {
        return Err(NotOpened::Kind(file_kind(&meta)));
    }
    Ok((file, meta))
}

/// The SHA-256 (hex) of the regular file at `path` as it is now, if it can be read: how
/// `reread`, `update` and a kept rollout tell a binary rebuilt in place. Opened as every
/// binary is, without waiting: a FIFO planted at the path held the thread that hashed it
/// for good (and every reread after it).
pub(crate) fn sha256_on_disk(path: &Path) -> Option<String> {
    let (file, _) = open_regular(path).ok()?;
    super::Sha256Digest::of_file_bounded(&file, super::DEFAULT_MAX_FILE_SIZE).ok().map(|d| d.to_hex())
}

/// The kind of what is at `path` when it is there and not a regular file.
fn kind_of(path: &Path) -> Option<&'static str> {
    std::fs::metadata(path).ok().filter(|m| !m.is_file()).map(|m| file_kind(&m))
}

/// Opens a file that should be a plugin binary for reading, without waiting on it.
/// O_NONBLOCK: opening a FIFO planted at the path must not hang the supervisor (or
/// `plugin sign`). It does not affect reads of a regular file or the later execveat.
pub(crate) fn open_path(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC).open(path)
}

pub(crate) fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}
